//! `pvgpu bench`: boots guests and measures pvgpu, each figure side by side with its baseline
//! measured in the same run. Progress goes to stderr, the table to stdout, and the figures to
//! a JSON file with `--json`.
//!
//! Sections ([`report`] has the JSON shape):
//! - `migrate`: `bench-migrate` per object size, against host memcpy ([`memcpy`]);
//! - `migrate_clean`: `bench-migrate --fused` (pages moved), with huge pages and 4 KiB pages,
//!   against a warm memcpy;
//! - `reclaim`: `workload` (MIGRATE_CLEAN), with `--copy` and with `--no-clean`: host memory
//!   after, and its peak during, migrate and clean;
//! - `workload`: the guest's first-touch fill, with huge pages and 4 KiB pages;
//! - `latency`: `bench-latency` (command round trips against the bare notify);
//! - `boot`: first output of `hello` over several boots;
//! - `scale`: VMM bookkeeping per live object (`scale`, phases 10 → 11);
//! - `density`: objects worth twice the guest's free RAM (`density`).
//!
//! A section that fails is reported and left out; the others still run, and the command then
//! exits 1.

pub mod guest;
pub mod memcpy;
pub mod report;
pub mod vhost_user;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use pvgpu_abi::layout::phase;

use crate::cli::{default_kernel_candidates, find_default_kernel, ConfigError};
use crate::size::format_size;
use crate::tools::measure::{ratio, signed_diff, Spread, MIB};
use crate::VmmError;
use guest::{run_guest, GuestSpec};
use pvgpu_device::MemoryBackend;
use report::{
    BenchReport, BootReport, DensityReport, LatencyReport, Machine, MigrateCleanReport,
    MigrateReport, MigrateSize, ReclaimReport, ScaleReport, WorkloadReport, MIGRATE_RATIO_BASIS,
};

/// Phase the `scale` guest writes before creating its objects.
pub const SCALE_BEFORE: u32 = 10;
/// Phase the `scale` guest writes after creating them (all live).
pub const SCALE_AFTER: u32 = 11;

const MIB_U: u64 = 1 << 20;

/// Options of `pvgpu bench`.
#[derive(Debug, Args, Clone, PartialEq, Eq)]
pub struct BenchArgs {
    /// Also write the figures as JSON to PATH
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Smaller sizes and fewer repetitions (for tests: well under a minute)
    #[arg(long)]
    pub quick: bool,
    /// The guest kernel ELF [default: images/out/pvgpu-guest]
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
}

/// Errors of the benchmarks.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The kernel could not be found.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The VMM could not run the guest at all.
    #[error("`{cmdline}`: {source}")]
    Vmm {
        /// The guest command line.
        cmdline: String,
        /// Why.
        source: Box<VmmError>,
    },
    /// The guest did not exit 0.
    #[error("`{cmdline}`: {end}; its last output:\n{tail}")]
    GuestFailed {
        /// The guest command line.
        cmdline: String,
        /// How it ended.
        end: String,
        /// The end of its output.
        tail: String,
    },
    /// An expected `BENCH` line is missing.
    #[error("the guest printed no `{what}` line; its last output:\n{tail}")]
    MissingLine {
        /// What was looked for.
        what: String,
        /// The end of the guest's output.
        tail: String,
    },
    /// A `BENCH` field is missing or not a number.
    #[error("BENCH {kind}: field {key} is {}", value.as_deref().map_or("missing".to_owned(), |v| format!("not a valid number: {v:?}")))]
    BadField {
        /// The line's kind.
        kind: String,
        /// The field.
        key: String,
        /// Its text, if it was there.
        value: Option<String>,
    },
    /// A phase marker is missing from the stats.
    #[error("the guest wrote no phase marker {phase}; its last output:\n{tail}")]
    MissingPhase {
        /// The marker.
        phase: u32,
        /// The end of the guest's output.
        tail: String,
    },
    /// The `pvgpu device` backend could not be started.
    #[error("cannot start the vhost-user backend: {0}")]
    Backend(std::io::Error),
    /// The device section is missing from the stats (no GPU?).
    #[error("the run has no device statistics")]
    NoDevice,
    /// A figure came out undefined (e.g. nothing measured).
    #[error("{0} could not be computed")]
    Undefined(&'static str),
    /// The memcpy baseline failed.
    #[error("memcpy baseline: {0}")]
    Memcpy(std::io::Error),
    /// The JSON could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Sizes and repetitions of one bench run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Bytes migrated per object size, in MiB.
    pub migrate_mib: u64,
    /// Object sizes for `migrate`, in MiB.
    pub object_mibs: Vec<u64>,
    /// Guest runs per object size (the median time counts).
    pub migrate_reps: usize,
    /// memcpy repetitions per destination.
    pub memcpy_reps: usize,
    /// `workload --objects N --mib M` for `reclaim`.
    pub reclaim_objects: u64,
    /// See `reclaim_objects`.
    pub reclaim_mib: u64,
    /// `bench-latency --iters N`.
    pub latency_iters: u64,
    /// Boots of `hello`.
    pub boots: usize,
    /// `scale --objects N`.
    pub scale_objects: u64,
    /// Guest RAM of the `density` guest.
    pub density_mem: u64,
}

impl Plan {
    /// The full run: 256 MiB, 10 boots, 100,000 objects.
    pub fn full() -> Self {
        Plan {
            migrate_mib: 256,
            object_mibs: vec![1, 16, 64],
            migrate_reps: 3,
            memcpy_reps: 5,
            reclaim_objects: 64,
            reclaim_mib: 256,
            latency_iters: 2000,
            boots: 10,
            scale_objects: 100_000,
            density_mem: 128 * MIB_U,
        }
    }

    /// `--quick`: 64 MiB, 3 boots, 10,000 objects.
    pub fn quick() -> Self {
        Plan {
            migrate_mib: 64,
            object_mibs: vec![1, 16, 64],
            migrate_reps: 1,
            memcpy_reps: 3,
            reclaim_objects: 16,
            reclaim_mib: 64,
            latency_iters: 200,
            boots: 3,
            scale_objects: 10_000,
            density_mem: 128 * MIB_U,
        }
    }

    /// Guest RAM for `mib` MiB of objects: three times the objects (their pages, plus the
    /// evicted copies the workload faults back), at least 256 MiB, a multiple of 2 MiB.
    pub fn mem_for(mib: u64) -> u64 {
        ((3 * mib).max(256) * MIB_U).next_multiple_of(2 * MIB_U)
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

/// Runs every section of `plan` with `kernel`.
pub fn run_plan(kernel: &Path, plan: &Plan, quick: bool) -> BenchReport {
    let mut report = BenchReport {
        machine: Machine::detect(),
        quick,
        migrate: None,
        migrate_clean: None,
        reclaim: None,
        workload: None,
        latency: None,
        vhost_user: None,
        boot: None,
        scale: None,
        density: None,
        errors: Vec::new(),
    };
    progress(format!("on {}", report.machine.line()));
    fn keep<T>(name: &str, r: Result<T, BenchError>, errors: &mut Vec<String>) -> Option<T> {
        r.map_err(|e| {
            progress(format!("{name} FAILED: {e}"));
            errors.push(format!("{name}: {e}"));
        })
        .ok()
    }
    // Scale first: its figure is the VMM's own heap growth, best measured before other runs
    // leave freed memory behind for the allocator to reuse.
    report.scale = keep("scale", scale(kernel, plan), &mut report.errors);
    report.migrate = keep("migrate", migrate(kernel, plan), &mut report.errors);
    report.migrate_clean = keep(
        "migrate_clean",
        migrate_clean(kernel, plan),
        &mut report.errors,
    );
    report.reclaim = keep("reclaim", reclaim(kernel, plan), &mut report.errors);
    report.workload = keep("workload", fill(kernel, plan), &mut report.errors);
    report.latency = keep("latency", latency(kernel, plan), &mut report.errors);
    progress("vhost_user: bench-latency through `pvgpu device` ...");
    let in_process = report.latency.as_ref().map(|l| l.cmd_p50_us);
    report.vhost_user = keep(
        "vhost_user",
        vhost_user::measure(kernel, plan.latency_iters, in_process),
        &mut report.errors,
    );
    if let Some(v) = &report.vhost_user {
        progress(format!(
            "vhost_user: NOP p50 {:.1} us, p99 {:.1} us (in-process p50 {})",
            v.cmd_p50_us,
            v.cmd_p99_us,
            v.in_process_cmd_p50_us
                .map_or("n/a".to_owned(), |x| format!("{x:.1} us"))
        ));
    }
    report.boot = keep("boot", boot(kernel, plan), &mut report.errors);
    report.density = keep("density", density(kernel, plan), &mut report.errors);
    report
}

/// `pvgpu bench`: runs, prints the table, writes the JSON. Returns the exit status.
pub fn main(args: &BenchArgs) -> i32 {
    let kernel = match resolve_kernel(args.kernel.as_deref()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("pvgpu: error: {e}");
            return 1;
        }
    };
    let plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let report = run_plan(&kernel, &plan, args.quick);
    print!("{}", report.table());
    let mut status = i32::from(!report.errors.is_empty());
    if let Some(path) = &args.json {
        if let Err(e) = write_json(&report, path) {
            eprintln!("pvgpu: error: {e}");
            status = 1;
        }
    }
    status
}

/// The kernel to boot: `--kernel` if given (it must exist), else the default search.
pub fn resolve_kernel(kernel: Option<&Path>) -> Result<PathBuf, ConfigError> {
    match kernel {
        Some(p) if p.is_file() => Ok(p.to_path_buf()),
        Some(p) => Err(ConfigError::KernelMissing(p.to_path_buf())),
        None => find_default_kernel(&default_kernel_candidates()),
    }
}

/// Writes the report as pretty JSON.
pub fn write_json(report: &BenchReport, path: &Path) -> Result<(), BenchError> {
    let json = serde_json::to_string_pretty(report).map_err(|e| BenchError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    crate::atomic_file::write(path, (json + "\n").as_bytes()).map_err(|source| BenchError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn migrate(kernel: &Path, plan: &Plan) -> Result<MigrateReport, BenchError> {
    let bytes_total = plan.migrate_mib * MIB_U;
    let mut by_size = std::collections::BTreeMap::new();
    let mut largest: Option<MigrateSize> = None;
    for &m in &plan.object_mibs {
        let spec = GuestSpec::new(
            format!("bench-migrate --mib {} --object-mib {m}", plan.migrate_mib),
            Plan::mem_for(plan.migrate_mib),
        );
        progress(format!(
            "migrate: {} ({} run{}) ...",
            spec.cmdline,
            plan.migrate_reps,
            if plan.migrate_reps == 1 { "" } else { "s" }
        ));
        let mut times = Vec::with_capacity(plan.migrate_reps);
        let mut bytes = 0;
        for _ in 0..plan.migrate_reps.max(1) {
            let g = run_guest(kernel, &spec, false)?;
            let line = g.bench_line("migrate", "us")?;
            bytes = line.u64("bytes")?;
            times.push(line.f64("us")?);
        }
        let us =
            crate::tools::measure::median(&times).ok_or(BenchError::Undefined("migrate time"))?;
        let gib = crate::tools::measure::gib_per_s(bytes, us / 1e6)
            .ok_or(BenchError::Undefined("migrate throughput"))?;
        let copy = memcpy::measure(bytes.max(1), m * MIB_U, plan.memcpy_reps)?;
        let s = MigrateSize {
            object_mib: m,
            bytes,
            us,
            gib_per_s: gib,
            memcpy_gib_per_s: copy.fresh_memfd_gib_per_s,
            memcpy_warm_gib_per_s: copy.warm_gib_per_s,
            ratio: ratio(gib, copy.fresh_memfd_gib_per_s),
            ratio_warm: ratio(gib, copy.warm_gib_per_s),
        };
        progress(format!(
            "migrate: {m} MiB objects: {gib:.2} GiB/s; memcpy {:.2} GiB/s into fresh memfd pages, {:.2} warm",
            s.memcpy_gib_per_s, s.memcpy_warm_gib_per_s
        ));
        if largest.as_ref().is_none_or(|l| l.object_mib < m) {
            largest = Some(s.clone());
        }
        by_size.insert(m.to_string(), s);
    }
    let top = largest.ok_or(BenchError::Undefined("migrate (no object sizes)"))?;
    Ok(MigrateReport {
        gib_per_s: top.gib_per_s,
        memcpy_gib_per_s: top.memcpy_gib_per_s,
        memcpy_warm_gib_per_s: top.memcpy_warm_gib_per_s,
        ratio: top.ratio,
        ratio_basis: format!("{} MiB objects: {MIGRATE_RATIO_BASIS}", top.object_mib),
        object_mib: top.object_mib,
        bytes: bytes_total,
        by_object_mib: by_size,
    })
}

/// `bench-migrate --fused` runs on one memory backend: median times, summed move counts.
struct FusedRun {
    bytes: u64,
    /// Guest-measured, median over the runs.
    us: f64,
    /// The device's time in MIGRATE_CLEAN, median over the runs.
    device_us: f64,
    moved: u64,
    copied: u64,
}

/// `bench-migrate --fused` on `memory`, `plan.migrate_reps` times (each in its own guest).
fn migrate_clean_run(
    kernel: &Path,
    plan: &Plan,
    object_mib: u64,
    memory: MemoryBackend,
) -> Result<FusedRun, BenchError> {
    let mut spec = GuestSpec::new(
        format!(
            "bench-migrate --mib {} --object-mib {object_mib} --fused",
            plan.migrate_mib
        ),
        Plan::mem_for(plan.migrate_mib),
    );
    spec.memory = memory;
    let reps = plan.migrate_reps.max(1);
    progress(format!(
        "migrate_clean: {} ({}, {reps} run{}) ...",
        spec.cmdline,
        memory.name(),
        if reps == 1 { "" } else { "s" }
    ));
    let (mut us, mut device_us) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    let (mut bytes, mut moved, mut copied) = (0, 0, 0);
    for _ in 0..reps {
        let g = run_guest(kernel, &spec, false)?;
        let line = g.bench_line("migrate_clean", "us")?;
        let d = g.stats.device.as_ref().ok_or(BenchError::NoDevice)?;
        bytes = line.u64("bytes")?;
        us.push(line.f64("us")?);
        device_us.push(d.migrate_clean_ns as f64 / 1e3);
        moved += d.bytes_moved;
        copied += d.bytes_move_copied;
    }
    let median = |v: &[f64]| {
        crate::tools::measure::median(v).ok_or(BenchError::Undefined("migrate_clean time"))
    };
    Ok(FusedRun {
        bytes,
        us: median(&us)?,
        device_us: median(&device_us)?,
        moved,
        copied,
    })
}

fn migrate_clean(kernel: &Path, plan: &Plan) -> Result<MigrateCleanReport, BenchError> {
    let object_mib = plan.object_mibs.iter().copied().max().unwrap_or(64);
    let thp = migrate_clean_run(kernel, plan, object_mib, MemoryBackend::DEFAULT_VMM)?;
    let small = migrate_clean_run(
        kernel,
        plan,
        object_mib,
        MemoryBackend::Anonymous { thp: false },
    )?;
    let bytes = thp.bytes;
    let gib = |us: f64| {
        crate::tools::measure::gib_per_s(bytes, us / 1e6)
            .ok_or(BenchError::Undefined("migrate_clean throughput"))
    };
    let copy = memcpy::measure(bytes.max(1), object_mib * MIB_U, plan.memcpy_reps)?;
    let r = MigrateCleanReport {
        gib_per_s: gib(thp.us)?,
        ratio_vs_warm_memcpy: None,
        gib_per_s_4k: gib(small.us)?,
        ratio_vs_warm_memcpy_4k: None,
        memcpy_warm_gib_per_s: copy.warm_gib_per_s,
        device_gib_per_s: gib(thp.device_us)?,
        device_ratio_vs_warm_memcpy: None,
        device_gib_per_s_4k: gib(small.device_us)?,
        device_ratio_vs_warm_memcpy_4k: None,
        moved_fraction: ratio(
            (thp.moved + small.moved) as f64,
            (thp.moved + small.moved + thp.copied + small.copied) as f64,
        ),
        object_mib,
        bytes,
    };
    let r = MigrateCleanReport {
        ratio_vs_warm_memcpy: ratio(r.gib_per_s, copy.warm_gib_per_s),
        ratio_vs_warm_memcpy_4k: ratio(r.gib_per_s_4k, copy.warm_gib_per_s),
        device_ratio_vs_warm_memcpy: ratio(r.device_gib_per_s, copy.warm_gib_per_s),
        device_ratio_vs_warm_memcpy_4k: ratio(r.device_gib_per_s_4k, copy.warm_gib_per_s),
        ..r
    };
    progress(format!(
        "migrate_clean: {:.1} GiB/s with huge pages ({:.0} in the device), {:.1} GiB/s with 4 KiB pages ({:.1}); warm memcpy {:.2} GiB/s; moved fraction {}",
        r.gib_per_s,
        r.device_gib_per_s,
        r.gib_per_s_4k,
        r.device_gib_per_s_4k,
        r.memcpy_warm_gib_per_s,
        r.moved_fraction.map_or("n/a".into(), |x| format!("{x:.3}"))
    ));
    Ok(r)
}

/// What one `workload` run showed: host bytes (resident guest RAM + VRAM) at the "cleaned"
/// marker and their peak between "filled" and "cleaned", the device's cleaned bytes, and the
/// guest's fill time.
struct WorkloadMemory {
    object_bytes: u64,
    filled_guest_ram: u64,
    cleaned_guest_ram: u64,
    cleaned_host: u64,
    peak_host: u64,
    bytes_cleaned: u64,
    fill_us: u64,
}

/// `workload` with `mode` (`""`: MIGRATE_CLEAN, `" --copy"`, `" --no-clean"`) on `memory`.
fn workload(
    kernel: &Path,
    plan: &Plan,
    mode: &str,
    memory: MemoryBackend,
) -> Result<WorkloadMemory, BenchError> {
    let mut spec = GuestSpec::new(
        format!(
            "workload --objects {} --mib {}{mode}",
            plan.reclaim_objects, plan.reclaim_mib,
        ),
        Plan::mem_for(plan.reclaim_mib),
    );
    spec.vram_bytes = (plan.reclaim_mib * MIB_U).max(pvgpu_abi::layout::VRAM_DEFAULT);
    spec.sample = Some(Duration::from_millis(2));
    spec.memory = memory;
    progress(format!("reclaim: {} ({}) ...", spec.cmdline, memory.name()));
    let g = run_guest(kernel, &spec, false)?;
    let line = g.bench_line("workload", "bytes")?;
    let filled = g.phase(phase::FILLED)?;
    let cleaned = g.phase(phase::CLEANED)?;
    let host = |m: &crate::run::stats::MemSnapshot| m.guest_ram_bytes + m.vram_bytes;
    let peak_host = g
        .stats
        .peak_host_between(phase::FILLED, phase::CLEANED)
        .unwrap_or(0);
    Ok(WorkloadMemory {
        object_bytes: line.u64("bytes")?,
        filled_guest_ram: filled.mem.guest_ram_bytes,
        cleaned_guest_ram: cleaned.mem.guest_ram_bytes,
        cleaned_host: host(&cleaned.mem),
        peak_host,
        bytes_cleaned: g
            .stats
            .device
            .as_ref()
            .ok_or(BenchError::NoDevice)?
            .bytes_cleaned,
        fill_us: line.u64("fill_us")?,
    })
}

fn fill(kernel: &Path, plan: &Plan) -> Result<WorkloadReport, BenchError> {
    let thp = workload(kernel, plan, "", MemoryBackend::DEFAULT_VMM)?;
    let small = workload(kernel, plan, "", MemoryBackend::Anonymous { thp: false })?;
    let gib = |w: &WorkloadMemory| {
        crate::tools::measure::gib_per_s(w.object_bytes, w.fill_us as f64 / 1e6)
            .ok_or(BenchError::Undefined("fill throughput"))
    };
    let r = WorkloadReport {
        fill_gib_per_s: gib(&thp)?,
        fill_gib_per_s_4k: gib(&small)?,
        bytes: thp.object_bytes,
    };
    progress(format!(
        "workload: first-touch fill {:.2} GiB/s with huge pages, {:.2} GiB/s with 4 KiB pages",
        r.fill_gib_per_s, r.fill_gib_per_s_4k
    ));
    Ok(r)
}

fn reclaim(kernel: &Path, plan: &Plan) -> Result<ReclaimReport, BenchError> {
    let with = workload(kernel, plan, "", MemoryBackend::DEFAULT_VMM)?;
    let copy = workload(kernel, plan, " --copy", MemoryBackend::DEFAULT_VMM)?;
    let without = workload(kernel, plan, " --no-clean", MemoryBackend::DEFAULT_VMM)?;
    let per_byte = |host: u64, obj: u64| ratio(host as f64, obj as f64);
    let freed = with.filled_guest_ram.saturating_sub(with.cleaned_guest_ram);
    let r = ReclaimReport {
        object_bytes: with.object_bytes,
        cleaned_bytes: with.bytes_cleaned,
        guest_ram_freed_bytes: freed,
        freed_ratio: ratio(freed as f64, with.bytes_cleaned as f64),
        host_bytes_per_object_byte: per_byte(with.cleaned_host, with.object_bytes),
        baseline_host_bytes_per_object_byte: per_byte(without.cleaned_host, without.object_bytes),
        host_bytes: with.cleaned_host,
        baseline_host_bytes: without.cleaned_host,
        baseline_cleaned_bytes: without.bytes_cleaned,
        peak_host_bytes_per_object_byte: per_byte(with.peak_host, with.object_bytes),
        baseline_peak_host_bytes_per_object_byte: per_byte(copy.peak_host, copy.object_bytes),
    };
    let f = |x: Option<f64>| x.map_or("n/a".into(), |x| format!("{x:.3}"));
    progress(format!(
        "reclaim: freed {} of guest RAM for {} cleaned; host bytes per object byte {} (baseline {}); peak during migrate and clean {} (--copy {})",
        format_size(r.guest_ram_freed_bytes),
        format_size(r.cleaned_bytes),
        f(r.host_bytes_per_object_byte),
        f(r.baseline_host_bytes_per_object_byte),
        f(r.peak_host_bytes_per_object_byte),
        f(r.baseline_peak_host_bytes_per_object_byte),
    ));
    Ok(r)
}

fn latency(kernel: &Path, plan: &Plan) -> Result<LatencyReport, BenchError> {
    let spec = GuestSpec::new(
        format!("bench-latency --iters {}", plan.latency_iters),
        pvgpu_abi::layout::RAM_DEFAULT,
    );
    progress(format!("latency: {} ...", spec.cmdline));
    let g = run_guest(kernel, &spec, false)?;
    let l = g.bench_line("latency", "cmd_p50_us")?;
    let floor = l.f64("notify_floor_p50_us")?;
    let r = LatencyReport {
        notify_floor_p50_us: floor,
        notify_floor_p99_us: l.f64("notify_floor_p99_us")?,
        cmd_p50_us: l.f64("cmd_p50_us")?,
        cmd_p99_us: l.f64("cmd_p99_us")?,
        batch32_per_cmd_us: l.f64("batch32_per_cmd_us")?,
        cmd_p50_over_floor: None,
        batch32_per_cmd_over_floor: None,
        iters: l.u64("iters")?,
    };
    let r = LatencyReport {
        cmd_p50_over_floor: ratio(r.cmd_p50_us, floor),
        batch32_per_cmd_over_floor: ratio(r.batch32_per_cmd_us, floor),
        ..r
    };
    progress(format!(
        "latency: NOP p50 {:.1} us, p99 {:.1} us; batch32 {:.2} us/cmd; notify floor p50 {:.1} us",
        r.cmd_p50_us, r.cmd_p99_us, r.batch32_per_cmd_us, r.notify_floor_p50_us
    ));
    Ok(r)
}

fn boot(kernel: &Path, plan: &Plan) -> Result<BootReport, BenchError> {
    let spec = GuestSpec::new("hello", pvgpu_abi::layout::RAM_DEFAULT);
    let mut first = Vec::with_capacity(plan.boots);
    let mut entry = Vec::with_capacity(plan.boots);
    progress(format!("boot: {} boots of `hello` ...", plan.boots));
    for _ in 0..plan.boots {
        let g = run_guest(kernel, &spec, false)?;
        first.push(
            g.stats
                .boot
                .first_output_ms
                .ok_or(BenchError::Undefined("first output time (no output)"))?,
        );
        entry.push(g.stats.boot.entry_ms.unwrap_or(f64::NAN));
    }
    let r = BootReport {
        boots: plan.boots,
        first_output_ms: Spread::of(&first).ok_or(BenchError::Undefined("boot times"))?,
        entry_ms: Spread::of(&entry).ok_or(BenchError::Undefined("entry times"))?,
    };
    progress(format!(
        "boot: first output min {:.1} ms, median {:.1} ms, max {:.1} ms",
        r.first_output_ms.min, r.first_output_ms.median, r.first_output_ms.max
    ));
    Ok(r)
}

/// Gives the allocator's free memory back to the kernel, so that RssAnon growth during the
/// next run is the memory that run really allocated.
fn trim_heap() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel; it has no
    // preconditions and touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn scale(kernel: &Path, plan: &Plan) -> Result<ScaleReport, BenchError> {
    let spec = GuestSpec::new(
        format!("scale --objects {}", plan.scale_objects),
        pvgpu_abi::layout::RAM_DEFAULT,
    );
    progress(format!("scale: {} ...", spec.cmdline));
    trim_heap();
    let g = run_guest(kernel, &spec, false)?;
    let line = g.bench_line("scale", "objects")?;
    let objects = line.u64("objects")?;
    let before = g.phase(SCALE_BEFORE)?.mem.rss_anon_bytes;
    let after = g.phase(SCALE_AFTER)?.mem.rss_anon_bytes;
    let growth = signed_diff(after, before);
    let r = ScaleReport {
        objects,
        host_bytes_per_object: ratio(growth.max(0) as f64, objects as f64),
        rss_anon_growth_bytes: growth,
        device_objects_peak: g.stats.device.as_ref().map_or(0, |d| d.objects_peak),
    };
    progress(format!(
        "scale: {objects} objects grew the VMM's anonymous memory by {} ({} bytes per object)",
        format_size(growth.max(0).unsigned_abs()),
        r.host_bytes_per_object
            .map_or("n/a".into(), |x| format!("{x:.1}"))
    ));
    Ok(r)
}

fn density(kernel: &Path, plan: &Plan) -> Result<DensityReport, BenchError> {
    // A first, tiny run learns the guest's free pages with this much RAM.
    let probe = GuestSpec::new("density --mib 1", plan.density_mem);
    progress(format!(
        "density: measuring the headroom of a {} guest ...",
        format_size(plan.density_mem)
    ));
    let headroom = run_guest(kernel, &probe, false)?
        .bench_line("density", "headroom_bytes")?
        .u64("headroom_bytes")?;
    let mib = (2 * headroom).div_ceil(MIB_U);
    let mut spec = GuestSpec::new(format!("density --mib {mib}"), plan.density_mem);
    spec.vram_bytes = (mib * MIB_U + mib * MIB_U / 2)
        .max(pvgpu_abi::layout::VRAM_DEFAULT)
        .next_multiple_of(2 * MIB_U);
    spec.sample = Some(Duration::from_millis(10));
    progress(format!(
        "density: {} (headroom {}) ...",
        spec.cmdline,
        format_size(headroom)
    ));
    let g = run_guest(kernel, &spec, false)?;
    let line = g.bench_line("density", "ok")?;
    let object_bytes = line.u64("object_bytes")?;
    let peak = g
        .stats
        .samples
        .iter()
        .map(|s| s.mem)
        .chain(g.stats.phases.iter().map(|p| p.mem))
        .map(|m| m.guest_ram_bytes + m.vram_bytes)
        .max()
        .unwrap_or(0);
    let r = DensityReport {
        ok: line.u64("ok")? == 1,
        object_bytes,
        headroom_bytes: headroom,
        object_over_headroom: ratio(object_bytes as f64, headroom as f64),
        mem_bytes: plan.density_mem,
        peak_host_bytes: peak,
        cleaned_bytes: g.stats.device.as_ref().map_or(0, |d| d.bytes_cleaned),
    };
    progress(format!(
        "density: {} MiB of objects in a guest with {:.1} MiB free: {}; peak host memory {:.1} MiB",
        object_bytes / MIB_U,
        headroom as f64 / MIB,
        if r.ok { "verified" } else { "FAILED" },
        peak as f64 / MIB
    ));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let f = Plan::full();
        assert_eq!(
            (f.migrate_mib, f.boots, f.scale_objects),
            (256, 10, 100_000)
        );
        assert_eq!(f.object_mibs, [1, 16, 64]);
        let q = Plan::quick();
        assert!(q.migrate_mib < f.migrate_mib && q.boots < f.boots);
        assert_eq!(Plan::mem_for(256), 768 << 20);
        assert_eq!(Plan::mem_for(64), 256 << 20);
        assert_eq!(Plan::mem_for(85) % (2 << 20), 0);
    }

    #[test]
    fn missing_kernel_is_an_error() {
        let e = resolve_kernel(Some(Path::new("/nonexistent/kernel"))).unwrap_err();
        assert!(matches!(e, ConfigError::KernelMissing(_)));
    }

    #[test]
    fn errors_are_readable() {
        let e = BenchError::BadField {
            kind: "latency".into(),
            key: "cmd_p50_us".into(),
            value: Some("x".into()),
        };
        assert_eq!(
            e.to_string(),
            "BENCH latency: field cmd_p50_us is not a valid number: \"x\""
        );
        let e = BenchError::BadField {
            kind: "latency".into(),
            key: "iters".into(),
            value: None,
        };
        assert_eq!(e.to_string(), "BENCH latency: field iters is missing");
    }
}
