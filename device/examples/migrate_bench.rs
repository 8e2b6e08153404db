//! Micro-benchmark (not a test): MIGRATE and EVICT throughput for a 64 MiB object made of
//! 4 KiB pages, next to plain memcpy of the same bytes in the same run, and the per-command
//! overhead of a null command (NOP), through the real queue path.
//!
//! Run: `cargo run --release -p pvgpu-device --example migrate_bench`

use std::time::{Duration, Instant};

use pvgpu_abi::protocol::{self as p, CtrlHdr, MemEntry, Wire};
use pvgpu_device::memfd::MemFd;
use pvgpu_device::sim_driver::SimGuest;
use vm_memory::{Bytes, GuestAddress};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;
const PAGE: u64 = 4096;
const ROUNDS: usize = 5;

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn best(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[0]
}

fn memcpy_warm() -> Duration {
    let src = vec![0x5au8; SIZE as usize];
    let mut dst = vec![0u8; SIZE as usize];
    dst.copy_from_slice(&src); // touch
    best(
        (0..ROUNDS)
            .map(|i| {
                let t = Instant::now();
                dst.copy_from_slice(&src);
                let d = t.elapsed();
                assert_eq!(dst[i], 0x5a);
                d
            })
            .collect(),
    )
}

/// memcpy into freshly punched memfd pages, as MIGRATE into newly allocated VRAM is.
fn memcpy_fresh_memfd() -> Duration {
    use std::os::unix::fs::FileExt;
    let src = vec![0x5au8; SIZE as usize];
    let m = MemFd::new("bench", SIZE).unwrap();
    best(
        (0..ROUNDS)
            .map(|_| {
                m.punch_hole(0, SIZE).unwrap();
                let t = Instant::now();
                m.file().write_all_at(&src, 0).unwrap();
                t.elapsed()
            })
            .collect(),
    )
}

fn entries(base: u64, scattered: bool) -> Vec<MemEntry> {
    let pages = SIZE / PAGE;
    (0..pages)
        .map(|i| MemEntry {
            // Scattered: every other page, in reverse, so no two entries merge.
            addr: if scattered {
                base + (pages - 1 - i) * 2 * PAGE
            } else {
                base + i * PAGE
            },
            length: PAGE as u32,
            padding: 0,
        })
        .collect()
}

fn migrate_evict(scattered: bool) -> (Duration, Duration) {
    let mut g = SimGuest::new(SIZE * 2 + 16 * MIB, SIZE * 2).unwrap();
    let base = g.alloc_pages(2 * SIZE / PAGE);
    let e = entries(base, scattered);
    for (i, x) in e.iter().enumerate() {
        g.mem
            .write_slice(&[(i % 251) as u8; PAGE as usize], GuestAddress(x.addr))
            .unwrap();
    }
    assert_eq!(g.create(1, SIZE), p::RESP_OK_NODATA);
    assert_eq!(
        g.backing_cmd(p::CMD_ATTACH_BACKING, 1, &e),
        p::RESP_OK_NODATA
    );
    let want = g.checksum(1, 0, SIZE).unwrap();
    let mut mig = Vec::new();
    let mut ev = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 1), p::RESP_OK_MIGRATE);
        mig.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(g.backing_cmd(p::CMD_EVICT, 1, &[]), p::RESP_OK_NODATA);
        ev.push(t.elapsed());
    }
    assert_eq!(g.checksum(1, 0, SIZE).unwrap(), want);
    (best(mig), best(ev))
}

/// Where MIGRATE's time goes: host page allocation for fresh VRAM vs the copy itself.
fn breakdown() -> (Duration, Duration, Duration) {
    use pvgpu_device::guest_ram::Extent;
    use pvgpu_device::vram::Vram;
    let g = SimGuest::new(SIZE + 16 * MIB, SIZE).unwrap();
    let base = 8 * MIB;
    g.mem
        .write_slice(&vec![7u8; SIZE as usize], GuestAddress(base))
        .unwrap();
    let v = Vram::new(SIZE).unwrap();
    let x = [Extent {
        gpa: base,
        len: SIZE,
    }];
    let (mut pre, mut cp, mut punch) = (vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        // Into fresh (punched) VRAM, then again into the now allocated pages.
        let t = Instant::now();
        v.copy_from_guest(&g.mem, &x, 0).unwrap();
        pre.push(t.elapsed());
        let t = Instant::now();
        v.copy_from_guest(&g.mem, &x, 0).unwrap();
        cp.push(t.elapsed());
        let t = Instant::now();
        v.punch(0, SIZE).unwrap();
        punch.push(t.elapsed());
    }
    (best(pre), best(cp), best(punch))
}

fn null_command() -> (Duration, Duration) {
    let mut g = SimGuest::new(32 * MIB, MIB).unwrap();
    let nop = CtrlHdr::new(p::CMD_NOP);
    let n = 20_000u32;
    for _ in 0..1000 {
        g.cmd(nop.as_bytes());
    }
    let t = Instant::now();
    for _ in 0..n {
        g.cmd(nop.as_bytes());
    }
    let single = t.elapsed() / n;
    let batch: Vec<&[u8]> = (0..100).map(|_| nop.as_bytes()).collect();
    let t = Instant::now();
    for _ in 0..n / 100 {
        g.submit(&batch).unwrap();
    }
    let batched = t.elapsed() / n;
    (single, batched)
}

fn main() {
    println!("pvgpu device micro-benchmark: 64 MiB object of 4 KiB pages, best of {ROUNDS}");
    let warm = memcpy_warm();
    let fresh = memcpy_fresh_memfd();
    println!(
        "memcpy, warm buffers:             {:7.2} ms  {:6.2} GB/s",
        warm.as_secs_f64() * 1e3,
        gbps(SIZE, warm)
    );
    println!(
        "memcpy into fresh memfd pages:    {:7.2} ms  {:6.2} GB/s",
        fresh.as_secs_f64() * 1e3,
        gbps(SIZE, fresh)
    );
    for scattered in [false, true] {
        let (m, e) = migrate_evict(scattered);
        let kind = if scattered { "scattered" } else { "contiguous" };
        for (name, d) in [("MIGRATE", m), ("EVICT", e)] {
            println!(
                "{name:7} ({kind:10} pages):     {:7.2} ms  {:6.2} GB/s  ratio vs warm memcpy {:.2}, vs fresh-memfd memcpy {:.2}",
                d.as_secs_f64() * 1e3,
                gbps(SIZE, d),
                warm.as_secs_f64() / d.as_secs_f64(),
                fresh.as_secs_f64() / d.as_secs_f64(),
            );
        }
    }
    let (pre, cp, punch) = breakdown();
    println!(
        "breakdown: guest->VRAM copy into fresh VRAM {:.2} ms, into allocated VRAM {:.2} ms ({:.2} GB/s, ratio vs warm memcpy {:.2}), punch {:.2} ms",
        pre.as_secs_f64() * 1e3,
        cp.as_secs_f64() * 1e3,
        gbps(SIZE, cp),
        warm.as_secs_f64() / cp.as_secs_f64(),
        punch.as_secs_f64() * 1e3
    );
    let (single, batched) = null_command();
    println!(
        "null command (NOP): {:.2} us per command with one notify each, {:.2} us per command in batches of 100",
        single.as_secs_f64() * 1e6,
        batched.as_secs_f64() * 1e6
    );
}
