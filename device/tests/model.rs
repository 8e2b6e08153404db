//! Property test: random command sequences against a simple model of object states and data.
//! Every response type must be the one the model predicts, data must agree (CHECKSUM and
//! guest memory after EVICT), and nothing may panic. The device works in one-page slices.

use proptest::prelude::*;

use pvgpu_abi::protocol as p;
use pvgpu_abi::protocol::{MemEntry, Wire};
use pvgpu_device::sim_driver::SimGuest;
use pvgpu_device::{MemoryBackend, ZeroCopy};
use vm_memory::{Bytes, GuestAddress};

const PAGE: u64 = 4096;
const MAX_PAGES: u64 = 4;

#[derive(Debug, Clone)]
enum Op {
    Create {
        id: u32,
        pages: u64,
    },
    Destroy {
        id: u32,
    },
    Attach {
        id: u32,
        seed: u8,
    },
    GuestWrite {
        id: u32,
        seed: u8,
    },
    Migrate {
        id: u32,
    },
    Clean {
        id: u32,
    },
    MigrateClean {
        id: u32,
    },
    Evict {
        id: u32,
        fresh: bool,
    },
    Fill {
        id: u32,
        off: u64,
        len: u64,
        val: u8,
    },
    Copy {
        dst: u32,
        doff: u64,
        src: u32,
        soff: u64,
        len: u64,
    },
    Checksum {
        id: u32,
        off: u64,
        len: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u32..6;
    let off = 0u64..(MAX_PAGES + 1) * PAGE;
    prop_oneof![
        (id.clone(), 1..=MAX_PAGES).prop_map(|(id, pages)| Op::Create { id, pages }),
        id.clone().prop_map(|id| Op::Destroy { id }),
        (id.clone(), any::<u8>()).prop_map(|(id, seed)| Op::Attach { id, seed }),
        (id.clone(), any::<u8>()).prop_map(|(id, seed)| Op::GuestWrite { id, seed }),
        id.clone().prop_map(|id| Op::Migrate { id }),
        id.clone().prop_map(|id| Op::Clean { id }),
        id.clone().prop_map(|id| Op::MigrateClean { id }),
        (id.clone(), any::<bool>()).prop_map(|(id, fresh)| Op::Evict { id, fresh }),
        (id.clone(), off.clone(), 0u64..2 * PAGE, any::<u8>())
            .prop_map(|(id, off, len, val)| Op::Fill { id, off, len, val }),
        (
            id.clone(),
            off.clone(),
            id.clone(),
            off.clone(),
            0u64..2 * PAGE
        )
            .prop_map(|(dst, doff, src, soff, len)| Op::Copy {
                dst,
                doff,
                src,
                soff,
                len
            }),
        (id, off, 0u64..2 * PAGE).prop_map(|(id, off, len)| Op::Checksum { id, off, len }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Fresh,
    System,
    Vram,
    Cleaned,
}

#[derive(Debug, Clone)]
struct MObj {
    size: u64,
    state: State,
    /// The page of each 4 KiB of the object, when it has backing.
    pages: Vec<u64>,
    data: Vec<u8>,
}

/// Fresh pages, scattered (every other page, reversed) so copies cross extents.
fn scattered_pages(g: &mut SimGuest, n: u64) -> Vec<u64> {
    let base = g.alloc_pages(2 * n);
    (0..n).map(|i| base + (n - 1 - i) * 2 * PAGE).collect()
}

fn entries(pages: &[u64]) -> Vec<MemEntry> {
    pages
        .iter()
        .map(|&addr| MemEntry {
            addr,
            length: PAGE as u32,
            padding: 0,
        })
        .collect()
}

fn write_pages(g: &SimGuest, pages: &[u64], data: &[u8]) {
    for (i, &a) in pages.iter().enumerate() {
        let c = &data[i * PAGE as usize..(i + 1) * PAGE as usize];
        g.mem.write_slice(c, GuestAddress(a)).unwrap();
    }
}

fn read_pages(g: &SimGuest, pages: &[u64]) -> Vec<u8> {
    let mut out = vec![0u8; pages.len() * PAGE as usize];
    for (i, &a) in pages.iter().enumerate() {
        let c = &mut out[i * PAGE as usize..(i + 1) * PAGE as usize];
        g.mem.read_slice(c, GuestAddress(a)).unwrap();
    }
    out
}

fn fill_data(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed))
        .collect()
}

fn in_range(o: &MObj, off: u64, len: u64) -> bool {
    off + len <= o.size
}

fn run(ops: Vec<Op>, backend: MemoryBackend, zero_copy: ZeroCopy) -> Result<(), TestCaseError> {
    // One-page slices: every command with data work runs in several slices (moves in
    // slices of 16 pages, so a move is one slice here).
    let mut g =
        SimGuest::with_backend_and_slices(64 << 20, 16 << 20, backend, zero_copy, PAGE).unwrap();
    let mut m: std::collections::BTreeMap<u32, MObj> = Default::default();
    // Bytes MIGRATE_CLEAN and EVICT into new pages transferred (moved or copied).
    let mut transferred = 0u64;
    // Whether freed guest RAM can be counted exactly: with transparent huge pages, khugepaged
    // may collapse a partly freed huge page again (filling the freed 4 KiB pages with zeros),
    // and these objects are a few 4 KiB pages each.
    let exact = backend != MemoryBackend::Anonymous { thp: true };
    // Touch the request scratch page first, so CLEAN's page counts only see punching.
    g.cmd(p::CtrlHdr::new(p::CMD_NOP).as_bytes());
    for op in ops {
        match op {
            Op::Create { id, pages } => {
                let want = if id == 0 {
                    p::RESP_ERR_INVALID_OBJECT_ID
                } else if let std::collections::btree_map::Entry::Vacant(e) = m.entry(id) {
                    e.insert(MObj {
                        size: pages * PAGE,
                        state: State::Fresh,
                        pages: vec![],
                        data: vec![0; (pages * PAGE) as usize],
                    });
                    p::RESP_OK_NODATA
                } else {
                    p::RESP_ERR_OBJECT_EXISTS
                };
                prop_assert_eq!(g.create(id, pages * PAGE), want);
            }
            Op::Destroy { id } => {
                let want = match m.remove(&id) {
                    Some(_) => p::RESP_OK_NODATA,
                    None => p::RESP_ERR_INVALID_OBJECT_ID,
                };
                prop_assert_eq!(g.obj_cmd(p::CMD_DESTROY, id), want);
            }
            Op::Attach { id, seed } => {
                let Some(o) = m.get_mut(&id) else {
                    let pg = scattered_pages(&mut g, 1);
                    let got = g.backing_cmd(p::CMD_ATTACH_BACKING, id, &entries(&pg));
                    prop_assert_eq!(got, p::RESP_ERR_INVALID_OBJECT_ID);
                    continue;
                };
                let pages = scattered_pages(&mut g, o.size / PAGE);
                let data = fill_data(seed, o.size);
                write_pages(&g, &pages, &data);
                let got = g.backing_cmd(p::CMD_ATTACH_BACKING, id, &entries(&pages));
                if o.state == State::Fresh {
                    prop_assert_eq!(got, p::RESP_OK_NODATA);
                    o.state = State::System;
                    o.pages = pages;
                    o.data = data;
                } else {
                    prop_assert_eq!(got, p::RESP_ERR_INVALID_STATE);
                }
            }
            Op::GuestWrite { id, seed } => {
                // The guest may only write its pages while the object is SYSTEM.
                if let Some(o) = m.get_mut(&id) {
                    if o.state == State::System {
                        o.data = fill_data(seed, o.size);
                        write_pages(&g, &o.pages, &o.data);
                    }
                }
            }
            Op::Migrate { id } => {
                let want = match m.get_mut(&id) {
                    None => p::RESP_ERR_INVALID_OBJECT_ID,
                    Some(o) if o.state == State::System => {
                        o.state = State::Vram;
                        p::RESP_OK_MIGRATE
                    }
                    Some(_) => p::RESP_ERR_INVALID_STATE,
                };
                prop_assert_eq!(g.obj_cmd(p::CMD_MIGRATE, id), want);
            }
            Op::Clean { id } => {
                let before = g.ram.resident_bytes();
                let (want, freed) = match m.get_mut(&id) {
                    None => (p::RESP_ERR_INVALID_OBJECT_ID, 0),
                    Some(o) if o.state == State::Vram => {
                        o.state = State::Cleaned;
                        o.pages.clear();
                        (p::RESP_OK_NODATA, o.size)
                    }
                    Some(_) => (p::RESP_ERR_INVALID_STATE, 0),
                };
                prop_assert_eq!(g.obj_cmd(p::CMD_CLEAN, id), want);
                if exact {
                    prop_assert_eq!(before - g.ram.resident_bytes(), freed);
                }
            }
            Op::MigrateClean { id } => {
                let before = g.ram.resident_bytes();
                let mut old_pages = vec![];
                let (want, freed) = match m.get_mut(&id) {
                    None => (p::RESP_ERR_INVALID_OBJECT_ID, 0),
                    Some(o) if o.state == State::System => {
                        o.state = State::Cleaned;
                        old_pages = std::mem::take(&mut o.pages);
                        transferred += o.size;
                        (p::RESP_OK_MIGRATE, o.size)
                    }
                    Some(_) => (p::RESP_ERR_INVALID_STATE, 0),
                };
                prop_assert_eq!(g.obj_cmd(p::CMD_MIGRATE_CLEAN, id), want);
                if exact {
                    prop_assert_eq!(before - g.ram.resident_bytes(), freed);
                }
                // The moved-from pages read as zero (a test may look; a guest must not).
                prop_assert!(read_pages(&g, &old_pages).iter().all(|b| *b == 0));
            }
            Op::Evict { id, fresh } => {
                let size = m.get(&id).map_or(PAGE, |o| o.size);
                let new_pages = if fresh {
                    scattered_pages(&mut g, size / PAGE)
                } else {
                    vec![]
                };
                let got = g.backing_cmd(p::CMD_EVICT, id, &entries(&new_pages));
                match m.get_mut(&id) {
                    None => prop_assert_eq!(got, p::RESP_ERR_INVALID_OBJECT_ID),
                    Some(o) => match (o.state, fresh) {
                        (State::Fresh | State::System, _) => {
                            prop_assert_eq!(got, p::RESP_ERR_INVALID_STATE)
                        }
                        (State::Cleaned, false) => {
                            prop_assert_eq!(got, p::RESP_ERR_INVALID_PARAMETER)
                        }
                        (_, _) => {
                            prop_assert_eq!(got, p::RESP_OK_NODATA);
                            if fresh {
                                o.pages = new_pages;
                                transferred += o.size;
                            }
                            o.state = State::System;
                            prop_assert!(read_pages(&g, &o.pages) == o.data, "evicted data");
                        }
                    },
                }
            }
            Op::Fill { id, off, len, val } => {
                let want = match m.get_mut(&id) {
                    None => p::RESP_ERR_INVALID_OBJECT_ID,
                    Some(o) if !matches!(o.state, State::Vram | State::Cleaned) => {
                        p::RESP_ERR_INVALID_STATE
                    }
                    Some(o) if !in_range(o, off, len) => p::RESP_ERR_OUT_OF_RANGE,
                    Some(o) => {
                        o.data[off as usize..(off + len) as usize].fill(val);
                        p::RESP_OK_NODATA
                    }
                };
                prop_assert_eq!(g.fill(id, off, len, u32::from(val)), want);
            }
            Op::Copy {
                dst,
                doff,
                src,
                soff,
                len,
            } => {
                let vram = |o: &MObj| matches!(o.state, State::Vram | State::Cleaned);
                let want = match (m.get(&src), m.get(&dst)) {
                    (None, _) => p::RESP_ERR_INVALID_OBJECT_ID,
                    (Some(s), _) if !vram(s) => p::RESP_ERR_INVALID_STATE,
                    (Some(s), _) if !in_range(s, soff, len) => p::RESP_ERR_OUT_OF_RANGE,
                    (_, None) => p::RESP_ERR_INVALID_OBJECT_ID,
                    (_, Some(d)) if !vram(d) => p::RESP_ERR_INVALID_STATE,
                    (_, Some(d)) if !in_range(d, doff, len) => p::RESP_ERR_OUT_OF_RANGE,
                    (Some(s), Some(_)) => {
                        let bytes = s.data[soff as usize..(soff + len) as usize].to_vec();
                        let d = m.get_mut(&dst).unwrap();
                        d.data[doff as usize..(doff + len) as usize].copy_from_slice(&bytes);
                        p::RESP_OK_NODATA
                    }
                };
                prop_assert_eq!(g.copy(dst, doff, src, soff, len), want);
            }
            Op::Checksum { id, off, len } => {
                let want = match m.get(&id) {
                    None => Err(p::RESP_ERR_INVALID_OBJECT_ID),
                    Some(o) if o.state == State::Fresh => Err(p::RESP_ERR_INVALID_STATE),
                    Some(o) if !in_range(o, off, len) => Err(p::RESP_ERR_OUT_OF_RANGE),
                    Some(o) => Ok(crc32c::crc32c(&o.data[off as usize..(off + len) as usize])),
                };
                prop_assert_eq!(g.checksum(id, off, len), want);
            }
        }
    }
    // Final agreement: every object's data, and the counters.
    for (&id, o) in &m {
        if o.state != State::Fresh {
            prop_assert_eq!(g.checksum(id, 0, o.size), Ok(crc32c::crc32c(&o.data)));
        }
    }
    let s = g.dev.stats();
    prop_assert_eq!(s.objects_live, m.len() as u64);
    let in_vram: u64 = m
        .values()
        .filter(|o| matches!(o.state, State::Vram | State::Cleaned))
        .map(|o| o.size)
        .sum();
    prop_assert_eq!(s.vram_used, in_vram);
    prop_assert_eq!(s.bytes_moved + s.bytes_move_copied, transferred);
    match (backend, zero_copy) {
        (MemoryBackend::Shared, _) | (_, ZeroCopy::CopyOnly) => prop_assert_eq!(s.bytes_moved, 0),
        // One page in three is refused and copied; the rest moves.
        (_, ZeroCopy::RefuseEvery(3)) => {
            prop_assert!(s.bytes_move_copied >= transferred / 3 / PAGE * PAGE);
            prop_assert!(s.bytes_moved >= transferred / 2 / PAGE * PAGE);
        }
        _ => prop_assert_eq!(s.bytes_move_copied, 0),
    }
    // With transparent huge pages a write into VRAM may bring in a whole 2 MiB page.
    let slack = match backend {
        MemoryBackend::Anonymous { thp: true } => m.len() as u64 * (2 << 20),
        _ => 0,
    };
    prop_assert!(g.dev.vram().host_memory().resident_bytes() <= in_vram + slack);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_match_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops, MemoryBackend::Shared, ZeroCopy::Auto)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Anonymous memory: MIGRATE_CLEAN and EVICT into new pages move pages (UFFDIO_MOVE).
    #[test]
    fn sequences_with_page_moves_match_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops, MemoryBackend::Anonymous { thp: false }, ZeroCopy::Auto)?;
    }

    /// Every third page refused: partial moves and the copy fallback, byte for byte.
    #[test]
    fn sequences_with_refused_pages_match_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops, MemoryBackend::Anonymous { thp: false }, ZeroCopy::RefuseEvery(3))?;
    }

    /// The same on huge pages (moves split them); every byte checked, freed memory not exactly.
    #[test]
    fn sequences_with_refused_huge_pages_match_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops, MemoryBackend::Anonymous { thp: true }, ZeroCopy::RefuseEvery(3))?;
    }

    /// Anonymous memory where nothing moves (an older kernel): copy and discard.
    #[test]
    fn sequences_without_moves_match_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(ops, MemoryBackend::Anonymous { thp: false }, ZeroCopy::CopyOnly)?;
    }
}
