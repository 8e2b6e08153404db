//! Benchmark workloads for `pvgpu bench`. Each prints `BENCH <name> key=value ...` lines that
//! the host parses; times are measured in the guest with the TSC.

use alloc::vec;
use alloc::vec::Vec;

use pvgpu_abi::layout::PAGE_SIZE;

use super::args::flag;
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::port;
use crate::user::clock;
use crate::user::gpu::{Cmd, MAX_IN_FLIGHT};
use crate::user::objects::{self as obj, Handle};

/// Phase markers of `scale`.
pub const PHASE_SCALE_START: u32 = 10;
/// All objects created.
pub const PHASE_SCALE_CREATED: u32 = 11;
/// All objects destroyed.
pub const PHASE_SCALE_DESTROYED: u32 = 12;

/// First object id `scale` uses (clear of the object layer's ids).
const SCALE_ID_BASE: u32 = 0x4000_0000;

fn us(ticks: u64) -> f64 {
    let khz = crate::user::boot_info().tsc_khz;
    let per_us = if khz == 0 {
        1000.0
    } else {
        khz as f64 / 1000.0
    };
    ticks as f64 / per_us
}

/// The `p`-th percentile (nearest rank) of `v`, which gets sorted.
fn percentile(v: &mut [u64], p: u64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let rank = (p * v.len() as u64).div_ceil(100).max(1) as usize;
    v[rank.min(v.len()) - 1]
}

/// `bench-migrate --mib M --object-mib S [--fused]`: MIGRATE (or, with `--fused`,
/// MIGRATE_CLEAN) throughput for M MiB in S MiB objects.
pub fn migrate(args: &[&str]) -> u8 {
    let fused = args.contains(&"--fused");
    let args: Vec<&str> = args.iter().copied().filter(|a| *a != "--fused").collect();
    let args = &args[..];
    let (Some(mib), Some(obj_mib)) = (flag(args, "--mib", 256), flag(args, "--object-mib", 64))
    else {
        crate::println!("usage: bench-migrate [--mib M] [--object-mib S] [--fused]");
        return EXIT_USAGE;
    };
    if obj_mib == 0 || mib < obj_mib {
        crate::println!("bench-migrate: need --mib >= --object-mib > 0");
        return EXIT_USAGE;
    }
    let n = mib / obj_mib;
    let size = obj_mib << 20;
    let chunk: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut hs: Vec<Handle> = Vec::new();
    for _ in 0..n {
        let Ok(h) = obj::create(0, size) else {
            crate::println!("bench-migrate: create failed (is --mem large enough?)");
            return EXIT_FAILED;
        };
        for off in (0..size).step_by(chunk.len()) {
            if obj::write_at(0, h, off, &chunk).is_err() {
                return EXIT_FAILED;
            }
        }
        hs.push(h);
    }
    let t = clock::ticks();
    let r = if fused {
        obj::migrate_clean_many(0, &hs)
    } else {
        obj::migrate_many(0, &hs)
    };
    let dt = clock::ticks() - t;
    if let Err(e) = r {
        crate::println!("bench-migrate: migrate failed: {e}");
        return EXIT_FAILED;
    }
    // The data arrived: the last MiB of every object, checked by the device.
    let want = pvgpu_abi::crc32c::crc32c(&chunk);
    for &h in &hs {
        if obj::checksum(0, h, size - chunk.len() as u64, chunk.len() as u64).ok() != Some(want) {
            crate::println!("bench-migrate: VRAM checksum differs");
            return EXIT_FAILED;
        }
    }
    crate::println!(
        "BENCH {} object_mib={obj_mib} bytes={} us={:.1}",
        if fused { "migrate_clean" } else { "migrate" },
        n * size,
        us(dt)
    );
    for h in hs {
        let _ = obj::close(0, h);
    }
    EXIT_OK
}

/// `bench-latency --iters N`: the bare notify floor, NOP round trips, and batches of 32.
pub fn latency(args: &[&str]) -> u8 {
    let Some(iters) = flag(args, "--iters", 1000).filter(|n| *n >= 32) else {
        crate::println!("usage: bench-latency [--iters N>=32]");
        return EXIT_USAGE;
    };
    let r = obj::with_gpu(|gpu| {
        let mut floor = Vec::with_capacity(iters as usize);
        for _ in 0..iters {
            let t = clock::ticks();
            gpu.notify_only();
            floor.push(clock::ticks() - t);
        }
        let mut cmd = Vec::with_capacity(iters as usize);
        for _ in 0..iters {
            let t = clock::ticks();
            gpu.submit_one(Cmd::nop())?;
            cmd.push(clock::ticks() - t);
        }
        let batches = iters / 32;
        let t = clock::ticks();
        for _ in 0..batches {
            let mut b: Vec<Cmd> = (0..32).map(|_| Cmd::nop()).collect();
            gpu.submit(&mut b)?;
        }
        let per_cmd = (clock::ticks() - t) / (batches * 32);
        Ok::<_, crate::user::gpu::GpuError>((floor, cmd, per_cmd))
    });
    match r {
        Ok(Ok((mut floor, mut cmd, per_cmd))) => {
            crate::println!(
                "BENCH latency notify_floor_p50_us={:.2} notify_floor_p99_us={:.2} cmd_p50_us={:.2} cmd_p99_us={:.2} batch32_per_cmd_us={:.2} iters={iters}",
                us(percentile(&mut floor, 50)),
                us(percentile(&mut floor, 99)),
                us(percentile(&mut cmd, 50)),
                us(percentile(&mut cmd, 99)),
                us(per_cmd)
            );
            EXIT_OK
        }
        Ok(Err(e)) => {
            crate::println!("bench-latency: {e}");
            EXIT_FAILED
        }
        Err(e) => {
            crate::println!("bench-latency: {e}");
            EXIT_FAILED
        }
    }
}

/// `scale --objects N`: N live objects at once (CREATE only: the device's own bookkeeping).
pub fn scale(args: &[&str]) -> u8 {
    let Some(n) = flag(args, "--objects", 100_000).filter(|n| *n > 0 && *n <= 1 << 20) else {
        crate::println!("usage: scale [--objects N]");
        return EXIT_USAGE;
    };
    let ids: Vec<u32> = (0..n as u32).map(|i| SCALE_ID_BASE + i).collect();
    let run = |make: fn(u32) -> Cmd| -> Result<(), crate::user::gpu::GpuError> {
        for chunk in ids.chunks(MAX_IN_FLIGHT) {
            let mut b: Vec<Cmd> = chunk.iter().map(|&id| make(id)).collect();
            obj::with_gpu(|g| g.submit(&mut b))
                .map_err(|_| crate::user::gpu::GpuError::NoDevice)??;
        }
        Ok(())
    };
    port::phase(PHASE_SCALE_START);
    let t = clock::ticks();
    if let Err(e) = run(|id| Cmd::create(id, PAGE_SIZE)) {
        crate::println!("scale: create failed: {e}");
        return EXIT_FAILED;
    }
    let dt = clock::ticks() - t;
    port::phase(PHASE_SCALE_CREATED);
    let live = obj::device_stats().map(|s| s.objects_live).unwrap_or(0);
    if let Err(e) = run(Cmd::destroy) {
        crate::println!("scale: destroy failed: {e}");
        return EXIT_FAILED;
    }
    port::phase(PHASE_SCALE_DESTROYED);
    crate::println!(
        "BENCH scale objects={n} live={live} create_us={:.0}",
        us(dt)
    );
    if live < n {
        return EXIT_FAILED;
    }
    EXIT_OK
}

/// `density --mib M`: objects totalling M MiB (default: twice the free guest pages) in a
/// guest that cannot hold them; memory pressure cleans idle objects into VRAM, so it finishes
/// and every object verifies.
pub fn density(args: &[&str]) -> u8 {
    let (free, _) = crate::user::pages::counts();
    let headroom = free as u64 * PAGE_SIZE;
    let Some(mib) = flag(args, "--mib", (2 * headroom) >> 20).filter(|m| *m > 0) else {
        crate::println!("usage: density [--mib M]");
        return EXIT_USAGE;
    };
    crate::println!("BENCH density headroom_bytes={headroom}");
    const SIZE: u64 = 4 << 20;
    let n = (mib << 20).div_ceil(SIZE);
    let mut objs: Vec<(Handle, u32)> = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut ok = true;
    for i in 0..n {
        let h = match obj::create(0, SIZE) {
            Ok(h) => h,
            Err(e) => {
                crate::println!("density: create {i} of {n} failed: {e}");
                ok = false;
                break;
            }
        };
        let mut crc = 0;
        for (c, off) in (0..SIZE).step_by(buf.len()).enumerate() {
            fill_chunk(&mut buf, i, c as u64);
            crc = pvgpu_abi::crc32c::crc32c_append(crc, &buf);
            ok &= obj::write_at(0, h, off, &buf).is_ok();
        }
        objs.push((h, crc));
    }
    let c = obj::counters();
    for (i, (h, crc)) in objs.iter().enumerate() {
        if obj::checksum(0, *h, 0, SIZE) != Ok(*crc) {
            crate::println!("density: object {i} does not verify");
            ok = false;
        }
        let mut b = [0u8; 8];
        fill_chunk(&mut buf, i as u64, 0);
        if obj::read_at(0, *h, 0, &mut b).is_err() || b[..] != buf[..8] {
            crate::println!("density: object {i} reads back wrong");
            ok = false;
        }
    }
    for (h, _) in objs {
        let _ = obj::close(0, h);
    }
    crate::println!(
        "density: {} MiB of objects in {} MiB of free guest pages; {} objects reclaimed into VRAM",
        mib,
        headroom >> 20,
        c.reclaims
    );
    crate::println!(
        "BENCH density ok={} object_bytes={}",
        u8::from(ok),
        n * SIZE
    );
    if ok {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

fn fill_chunk(buf: &mut [u8], obj: u64, chunk: u64) {
    for (k, w) in buf.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&super::workload::word(obj << 8 | chunk, k as u64).to_le_bytes());
    }
}
