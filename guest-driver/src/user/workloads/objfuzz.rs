//! `objfuzz [--ops N] [--seed S]`: random operations on a few objects, every byte checked
//! against a shadow copy kept in ordinary memory. It drives every placement transition, views
//! that fault objects back, device FILL and CHECKSUM, and (with a small `--vram`) LRU eviction.

use alloc::vec;
use alloc::vec::Vec;

use pvgpu_abi::crc32c::crc32c;
use pvgpu_abi::layout::PAGE_SIZE;

use super::args::{flag, Rng};
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::user::objects::{self as obj, Handle, ObjError, Placement};

/// Objects alive at once.
const SLOTS: usize = 6;
/// Largest object, in pages.
const MAX_PAGES: u64 = 256;

struct Slot {
    h: Handle,
    shadow: Vec<u8>,
    view: Option<u64>,
}

/// Runs the workload on task 0.
pub fn run(args: &[&str]) -> u8 {
    let (Some(ops), Some(seed)) = (flag(args, "--ops", 3000), flag(args, "--seed", 1)) else {
        crate::println!("usage: objfuzz [--ops N] [--seed S]");
        return EXIT_USAGE;
    };
    match fuzz(ops, seed.max(1)) {
        Ok(counts) => {
            crate::println!(
                "objfuzz: PASS: {ops} operations (seed {seed}): {} migrations, {} cleans, {} evictions, {} view faults, {} LRU evictions",
                counts[0],
                counts[1],
                counts[2],
                obj::counters().faults,
                obj::counters().lru_evictions
            );
            EXIT_OK
        }
        Err((op, what)) => {
            crate::println!("objfuzz: FAIL at operation {op} (seed {seed}): {what}");
            EXIT_FAILED
        }
    }
}

fn new_slot(rng: &mut Rng) -> Result<Slot, &'static str> {
    let size = (1 + rng.below(MAX_PAGES)) * PAGE_SIZE;
    let h = obj::create(0, size).map_err(|_| "create")?;
    Ok(Slot {
        h,
        shadow: vec![0; size as usize],
        view: None,
    })
}

fn fuzz(ops: u64, seed: u64) -> Result<[u64; 3], (u64, &'static str)> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut slots: Vec<Slot> = Vec::new();
    for _ in 0..SLOTS {
        slots.push(new_slot(&mut rng).map_err(|e| (0, e))?);
    }
    let mut counts = [0u64; 3];
    for op in 0..ops {
        let i = rng.below(SLOTS as u64) as usize;
        let s = &mut slots[i];
        let size = s.shadow.len() as u64;
        let placement = obj::placement(0, s.h).map_err(|_| (op, "placement"))?;
        let fail = |what| (op, what);
        match rng.below(11) {
            0 => {
                let off = rng.below(size);
                let len = 1 + rng.below(size - off);
                let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                obj::write_at(0, s.h, off, &data).map_err(|_| fail("write_at"))?;
                s.shadow[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            1 => {
                let off = rng.below(size);
                let len = 1 + rng.below(size - off);
                let mut buf = vec![0u8; len as usize];
                obj::read_at(0, s.h, off, &mut buf).map_err(|_| fail("read_at"))?;
                if buf[..] != s.shadow[off as usize..(off + len) as usize] {
                    return Err(fail("read_at returned wrong data"));
                }
            }
            2 => s.view = Some(obj::map(0, s.h).map_err(|_| fail("map"))?),
            3 => {
                if let Some(va) = s.view {
                    let k = rng.below(size) as usize;
                    // SAFETY: `va` is this object's view of `size` bytes; an absent page faults
                    // and is brought back by the object layer.
                    let got = unsafe { ((va as *const u8).add(k)).read_volatile() };
                    if got != s.shadow[k] {
                        return Err(fail("view read returned wrong data"));
                    }
                    let v = rng.next_u64() as u8;
                    // SAFETY: as above; the view is writable.
                    unsafe { ((va as *mut u8).add(k)).write_volatile(v) };
                    s.shadow[k] = v;
                }
            }
            4 => {
                obj::unmap(0, s.h).map_err(|_| fail("unmap"))?;
                s.view = None;
            }
            5 => match obj::migrate(0, s.h) {
                Ok(()) => counts[0] += 1,
                Err(ObjError::WrongPlacement(p)) if p == placement && p != Placement::System => {}
                Err(_) => return Err(fail("migrate")),
            },
            6 => match obj::clean(0, s.h) {
                Ok(()) => counts[1] += 1,
                Err(ObjError::WrongPlacement(p)) if p == placement && p != Placement::Vram => {}
                Err(_) => return Err(fail("clean")),
            },
            7 => match obj::evict(0, s.h) {
                Ok(()) => counts[2] += 1,
                Err(ObjError::WrongPlacement(Placement::System))
                    if placement == Placement::System => {}
                Err(_) => return Err(fail("evict")),
            },
            8 => {
                let off = rng.below(size);
                let len = rng.below(size - off + 1);
                let crc = obj::checksum(0, s.h, off, len).map_err(|_| fail("checksum"))?;
                if crc != crc32c(&s.shadow[off as usize..(off + len) as usize]) {
                    return Err(fail("device checksum differs from the shadow"));
                }
            }
            9 => {
                if placement != Placement::System {
                    let off = rng.below(size);
                    let len = 1 + rng.below(size - off);
                    let v = rng.next_u64() as u8;
                    obj::fill(0, s.h, off, len, v).map_err(|_| fail("fill"))?;
                    s.shadow[off as usize..(off + len) as usize].fill(v);
                }
            }
            _ => {
                obj::close(0, s.h).map_err(|_| fail("close"))?;
                if obj::placement(0, s.h) != Err(ObjError::BadHandle) {
                    return Err(fail("closed object still answers"));
                }
                *s = new_slot(&mut rng).map_err(fail)?;
            }
        }
    }
    for s in &slots {
        let mut buf = vec![0u8; s.shadow.len()];
        obj::read_at(0, s.h, 0, &mut buf).map_err(|_| (ops, "final read_at"))?;
        if buf != s.shadow || obj::checksum(0, s.h, 0, buf.len() as u64) != Ok(crc32c(&s.shadow)) {
            return Err((ops, "final verification"));
        }
        obj::close(0, s.h).map_err(|_| (ops, "final close"))?;
    }
    Ok(counts)
}
