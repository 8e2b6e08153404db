//! `pressure`: objects totalling three times VRAM, used in random order. VRAM fills up, so
//! migrating evicts the least recently used objects; every byte must still verify.

use alloc::vec;
use alloc::vec::Vec;

use pvgpu_abi::crc32c::crc32c;
use pvgpu_abi::layout::PAGE_SIZE;

use super::args::Rng;
use super::workload::{check_view, fill_view, word};
use super::{EXIT_FAILED, EXIT_OK};
use crate::user::objects::{self as obj, Handle, ObjError, Placement};

/// Runs the workload on task 0.
pub fn run() -> u8 {
    match pressure() {
        Ok(()) => EXIT_OK,
        Err(e) => {
            crate::println!("pressure: FAIL: {e}");
            EXIT_FAILED
        }
    }
}

fn pressure() -> Result<(), &'static str> {
    let task = 0;
    let vram = crate::user::boot_info().vram_size;
    let size = (vram / 16).max(PAGE_SIZE) / PAGE_SIZE * PAGE_SIZE;
    let n = 3 * vram / size;
    crate::println!(
        "pressure: {n} objects of {} KiB = 3x VRAM ({} MiB)",
        size >> 10,
        vram >> 20
    );
    let mut objs: Vec<(Handle, u64, u32)> = Vec::new();
    for i in 0..n {
        let h = obj::create(task, size).map_err(|_| "create")?;
        let va = obj::map(task, h).map_err(|_| "map")?;
        fill_view(va, size, i);
        // SAFETY: the view is present (SYSTEM) and `size` bytes long.
        let crc = crc32c(unsafe { core::slice::from_raw_parts(va as *const u8, size as usize) });
        objs.push((h, va, crc));
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let rounds = 4 * n;
    let (mut migrated, mut cleaned, mut touched) = (0, 0, 0);
    for _ in 0..rounds {
        let i = (rng.next_u64() % n) as usize;
        let (h, va, crc) = objs[i];
        match rng.next_u64() % 3 {
            0 => match obj::placement(task, h).map_err(|_| "placement")? {
                Placement::System => {
                    obj::migrate(task, h).map_err(|_| "migrate under pressure")?;
                    if obj::checksum(task, h, 0, size) != Ok(crc) {
                        return Err("checksum after migrate");
                    }
                    migrated += 1;
                }
                Placement::Vram => {
                    obj::clean(task, h).map_err(|_| "clean")?;
                    cleaned += 1;
                }
                Placement::Cleaned => {}
            },
            1 => {
                if check_view(va, size, i as u64).is_some() {
                    return Err("data through the view");
                }
                touched += 1;
            }
            _ => {
                let k = rng.next_u64() % (size / 8);
                let mut b = [0u8; 8];
                obj::read_at(task, h, k * 8, &mut b).map_err(|_| "read_at")?;
                if u64::from_le_bytes(b) != word(i as u64, k) {
                    return Err("read_at word");
                }
            }
        }
    }
    let lru = obj::counters().lru_evictions;
    let mut buf = vec![0u8; size as usize];
    for (i, (h, _, crc)) in objs.iter().enumerate() {
        obj::read_at(task, *h, 0, &mut buf).map_err(|_| "final read_at")?;
        if crc32c(&buf) != *crc || obj::checksum(task, *h, 0, size) != Ok(*crc) {
            crate::println!("pressure: object {i} differs");
            return Err("final verification");
        }
    }
    for (h, _, _) in &objs {
        obj::close(task, *h).map_err(|_: ObjError| "close")?;
    }
    crate::println!("pressure: {rounds} rounds: {migrated} migrations, {cleaned} cleans, {touched} view touches, {lru} LRU evictions");
    if lru == 0 {
        return Err("VRAM never filled: no LRU eviction happened");
    }
    crate::println!("pressure: PASS: every byte of {n} objects verified");
    Ok(())
}
