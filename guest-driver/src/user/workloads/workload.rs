//! `workload --objects N --mib M`: the object life cycle at scale, in phases the VMM can see.
//!
//! Fill N objects (M MiB in all) with per-object patterns through their views, migrate and
//! clean them in one MIGRATE_CLEAN each (the host moves their guest pages into VRAM where it
//! can; `--copy`: MIGRATE, then CLEAN, so both copies exist in between; `--no-clean`: MIGRATE
//! only, the guest pages keep their copy), verify them in VRAM with the
//! device's CHECKSUM and through the VRAM window, touch every byte through the views (which
//! faults each object back into fresh pages), verify again, and destroy them. A phase marker
//! goes to the VMM at each step (`layout::phase`).

use alloc::vec::Vec;

use pvgpu_abi::crc32c::crc32c;
use pvgpu_abi::layout::{phase, PAGE_SIZE};

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::port;
use crate::user::clock;
use crate::user::objects::{self as obj, Handle, ObjError, Placement, Task};

/// The value of word `k` of object `i`: unique per object and per word.
#[inline]
pub fn word(i: u64, k: u64) -> u64 {
    let mut z = (i << 40 ^ k).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^ (z >> 27)
}

/// Fills a view with object `i`'s pattern.
pub fn fill_view(va: u64, size: u64, i: u64) {
    // SAFETY: `va` is a present, writable view of `size` bytes (the object is SYSTEM).
    let words = unsafe { core::slice::from_raw_parts_mut(va as *mut u64, (size / 8) as usize) };
    for (k, w) in words.iter_mut().enumerate() {
        *w = word(i, k as u64);
    }
}

/// Index of the first word of a view that differs from object `i`'s pattern. Touching a view
/// of a non-SYSTEM object faults it back in.
pub fn check_view(va: u64, size: u64, i: u64) -> Option<usize> {
    // SAFETY: `va` is this object's view; absent pages fault and are resolved.
    let words = unsafe { core::slice::from_raw_parts(va as *const u64, (size / 8) as usize) };
    words
        .iter()
        .enumerate()
        .position(|(k, &w)| w != word(i, k as u64))
}

/// How the objects get into VRAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// MIGRATE_CLEAN: one command, the pages move (the default).
    Fused,
    /// MIGRATE then CLEAN: both copies exist in between (`--copy`).
    Copy,
    /// MIGRATE only: the status quo baseline, guest pages kept (`--no-clean`).
    NoClean,
}

/// The workload's options.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Number of objects.
    pub objects: u64,
    /// Total MiB.
    pub mib: u64,
    /// How objects reach VRAM.
    pub mode: Mode,
}

/// Parses `--objects N --mib M [--copy | --no-clean]`.
pub fn parse(args: &[&str]) -> Option<Options> {
    let mut o = Options {
        objects: 64,
        mib: 256,
        mode: Mode::Fused,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match *flag {
            "--no-clean" => o.mode = Mode::NoClean,
            "--copy" => o.mode = Mode::Copy,
            "--objects" => o.objects = it.next()?.parse().ok()?,
            "--mib" => o.mib = it.next()?.parse().ok()?,
            _ => return None,
        }
    }
    (o.objects > 0 && o.mib > 0).then_some(o)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Runs the workload on task 0.
pub fn run(args: &[&str]) -> u8 {
    let Some(o) = parse(args) else {
        crate::println!("usage: workload [--objects N] [--mib M] [--copy | --no-clean]");
        return EXIT_USAGE;
    };
    let size = (o.mib << 20) / o.objects / PAGE_SIZE * PAGE_SIZE;
    if size == 0 {
        crate::println!("workload: {} MiB is less than a page per object", o.mib);
        return EXIT_USAGE;
    }
    match life_cycle(0, o.objects, size, o.mode) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            crate::println!("workload: FAIL: {e}");
            EXIT_FAILED
        }
    }
}

/// Errors of the workload.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// An object operation failed.
    #[error("{0}")]
    Obj(#[from] ObjError),
    /// Data did not verify.
    #[error("object {0}: {1}")]
    Data(u64, &'static str),
}

fn life_cycle(task: Task, n: u64, size: u64, mode: Mode) -> Result<(), WorkloadError> {
    let clean = mode != Mode::NoClean;
    let total = n * size;
    crate::println!(
        "workload: {n} objects of {} KiB ({} MiB)",
        size >> 10,
        total >> 20
    );
    let t = clock::ticks();
    let mut objs: Vec<(Handle, u64)> = Vec::with_capacity(n as usize);
    let mut crcs = Vec::with_capacity(n as usize);
    let mut t_first_touch = 0u64;
    for i in 0..n {
        // Creating zeroes the new pages: the first touch of fresh guest memory, where the host
        // allocates its pages. Timed with the fill, without the checksum.
        let tf = clock::ticks();
        let h = obj::create(task, size)?;
        let va = obj::map(task, h)?;
        fill_view(va, size, i);
        t_first_touch += clock::us_since(tf);
        // SAFETY: the view is present (SYSTEM) and `size` bytes long.
        crcs.push(crc32c(unsafe {
            core::slice::from_raw_parts(va as *const u8, size as usize)
        }));
        objs.push((h, va));
    }
    let t_fill = clock::us_since(t);
    port::phase(phase::FILLED);
    crate::println!(
        "workload: filled in {:.1} ms (create and fill, without checksums: {:.1} ms)",
        ms(t_fill),
        ms(t_first_touch)
    );

    // When the objects do not all fit in guest memory, memory-pressure reclaim has already
    // migrated and cleaned the idle ones during the fill: those are where this phase would
    // put them, so only the rest are migrated.
    let mut reclaimed = Vec::with_capacity(objs.len());
    for (h, _) in &objs {
        reclaimed.push(obj::placement(task, *h)? == Placement::Cleaned);
    }
    let hs: Vec<Handle> = objs
        .iter()
        .zip(&reclaimed)
        .filter(|(_, r)| !**r)
        .map(|(o, _)| o.0)
        .collect();
    let n_reclaimed = reclaimed.iter().filter(|r| **r).count();
    if n_reclaimed > 0 {
        crate::println!(
            "workload: {n_reclaimed} objects were already migrated and cleaned by memory-pressure reclaim during the fill"
        );
    }
    let t = clock::ticks();
    match mode {
        Mode::Fused => obj::migrate_clean_many(task, &hs)?,
        Mode::Copy | Mode::NoClean => obj::migrate_many(task, &hs)?,
    }
    let t_mig = clock::us_since(t).max(1);
    port::phase(phase::MIGRATED);
    let gibs = total as f64 / (1u64 << 30) as f64 / (t_mig as f64 / 1e6);
    crate::println!(
        "workload: {} in {:.1} ms ({gibs:.2} GiB/s)",
        if mode == Mode::Fused {
            "migrated and cleaned (MIGRATE_CLEAN)"
        } else {
            "migrated"
        },
        ms(t_mig)
    );

    let t = clock::ticks();
    if mode == Mode::Copy {
        obj::clean_many(task, &hs)?;
    }
    let t_clean = clock::us_since(t);
    port::phase(phase::CLEANED);
    if mode == Mode::Fused {
        crate::println!(
            "workload: nothing left to clean: {} MiB of guest pages were given back by MIGRATE_CLEAN",
            total >> 20
        );
    } else if clean {
        crate::println!(
            "workload: cleaned in {:.1} ms: {} MiB of guest pages given back",
            ms(t_clean),
            total >> 20
        );
    } else {
        crate::println!("workload: not cleaning (--no-clean): the guest pages keep their copy");
    }
    let t = clock::ticks();
    for (i, (h, _)) in objs.iter().enumerate() {
        let resident = if clean || reclaimed[i] {
            Placement::Cleaned
        } else {
            Placement::Vram
        };
        if obj::placement(task, *h)? != resident {
            return Err(WorkloadError::Data(
                i as u64,
                "not in VRAM after migrate/clean",
            ));
        }
        if obj::checksum(task, *h, 0, size)? != crcs[i] {
            return Err(WorkloadError::Data(i as u64, "VRAM checksum differs"));
        }
        let mut head = [0u8; 64];
        obj::read_at(task, *h, size - 64, &mut head)?;
        let want: Vec<u8> = (size / 8 - 8..size / 8)
            .flat_map(|k| word(i as u64, k).to_le_bytes())
            .collect();
        if head[..] != want[..] {
            return Err(WorkloadError::Data(i as u64, "VRAM window read differs"));
        }
    }
    crate::println!(
        "workload: verified in VRAM in {:.1} ms",
        ms(clock::us_since(t))
    );

    let faults = obj::counters().faults;
    let t = clock::ticks();
    for (i, (h, va)) in objs.iter().enumerate() {
        if let Some(k) = check_view(*va, size, i as u64) {
            crate::println!("workload: object {i} word {k} differs after faulting back");
            return Err(WorkloadError::Data(
                i as u64,
                "data differs after faulting back",
            ));
        }
        if obj::placement(task, *h)? != Placement::System {
            return Err(WorkloadError::Data(i as u64, "not SYSTEM after the touch"));
        }
    }
    let t_touch = clock::us_since(t);
    port::phase(phase::TOUCHED);
    let faults = obj::counters().faults - faults;
    crate::println!(
        "workload: touched every byte in {:.1} ms ({faults} faults brought {n} objects back)",
        ms(t_touch)
    );
    if faults != n {
        return Err(WorkloadError::Data(faults, "expected one fault per object"));
    }

    for (h, _) in &objs {
        obj::close(task, *h)?;
    }
    port::phase(phase::DESTROYED);
    crate::println!(
        "BENCH workload objects={n} bytes={total} clean={} fused={} fill_us={t_first_touch} migrate_us={t_mig} clean_us={t_clean} touch_us={t_touch}",
        u8::from(clean),
        u8::from(mode == Mode::Fused)
    );
    let s = obj::device_stats()?;
    crate::println!(
        "workload: PASS: {n} objects, {} MiB migrated, {} MiB cleaned, {} MiB evicted, VRAM peak {} MiB",
        s.bytes_migrated >> 20,
        s.bytes_cleaned >> 20,
        s.bytes_evicted >> 20,
        s.vram_peak >> 20
    );
    Ok(())
}
