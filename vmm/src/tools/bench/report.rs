//! The results of `pvgpu bench`: the JSON document (`--json`) and the table on stdout.
//!
//! A section that could not be measured is `null` in the JSON, and its error is listed under
//! `errors`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::size::format_size;
use crate::tools::measure::{Spread, MIB};

/// The whole report. In JSON: `{machine, quick, migrate, migrate_clean, reclaim, workload,
/// latency, vhost_user, boot, scale, density, errors}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// Where it ran.
    pub machine: Machine,
    /// Whether this was `--quick` (smaller sizes, fewer repetitions).
    pub quick: bool,
    /// MIGRATE throughput against host memcpy.
    pub migrate: Option<MigrateReport>,
    /// MIGRATE_CLEAN (pages moved, not copied) against a warm memcpy.
    pub migrate_clean: Option<MigrateCleanReport>,
    /// Host memory with CLEAN against the same workload without it.
    pub reclaim: Option<ReclaimReport>,
    /// The guest's first-touch fill, with and without transparent huge pages.
    pub workload: Option<WorkloadReport>,
    /// Command round trips against the bare notify.
    pub latency: Option<LatencyReport>,
    /// The same round trip with the device in a vhost-user backend process.
    pub vhost_user: Option<VhostUserReport>,
    /// Time to the first guest output.
    pub boot: Option<BootReport>,
    /// Host bookkeeping per live object.
    pub scale: Option<ScaleReport>,
    /// Objects worth twice the guest's free RAM.
    pub density: Option<DensityReport>,
    /// The sections that failed, one line each.
    pub errors: Vec<String>,
}

/// The host the figures come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// The CPU model (first `model name` of /proc/cpuinfo).
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Host memory (MemTotal).
    pub mem_bytes: u64,
    /// The host kernel release.
    pub kernel: String,
    /// Which KVM: `PVM (kvm_pvm, software)`, `hardware (kvm_intel)`, ...
    pub kvm: String,
}

impl Machine {
    /// Reads this machine's description from /proc and /sys.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let mem_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| crate::run::stats::parse_status_kb(&m, "MemTotal"))
            .map_or(0, |kb| kb * 1024);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let module = |m: &str| std::path::Path::new("/sys/module").join(m).exists();
        let kvm = if module("kvm_pvm") {
            "PVM (kvm_pvm, software: no VMX/SVM)".to_owned()
        } else if module("kvm_intel") {
            "hardware (kvm_intel)".to_owned()
        } else if module("kvm_amd") {
            "hardware (kvm_amd)".to_owned()
        } else {
            "unknown".to_owned()
        };
        Machine {
            cpu,
            cpus,
            mem_bytes,
            kernel,
            kvm,
        }
    }

    /// One line, e.g. `AMD EPYC, 2 CPUs, 23.4 GiB, Linux 6.18, KVM: PVM (...)`.
    pub fn line(&self) -> String {
        format!(
            "{}, {} CPUs, {} RAM, Linux {}, KVM: {}",
            self.cpu,
            self.cpus,
            format_size(self.mem_bytes),
            self.kernel,
            self.kvm
        )
    }
}

/// What the migrate ratio compares, in words (also in the JSON as `ratio_basis`).
pub const MIGRATE_RATIO_BASIS: &str =
    "largest object size; MIGRATE GiB/s / host memcpy GiB/s into fresh memfd pages";

/// `migrate`: the top-level figures are those of the largest object size (64 MiB); every
/// size is under `by_object_mib`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrateReport {
    /// MIGRATE throughput (guest-measured time of one batch of all objects).
    pub gib_per_s: f64,
    /// Host memcpy of the same bytes into fresh memfd pages (what MIGRATE writes into).
    pub memcpy_gib_per_s: f64,
    /// Host memcpy of the same bytes into a warm buffer (copy only, no page allocation).
    pub memcpy_warm_gib_per_s: f64,
    /// `gib_per_s / memcpy_gib_per_s`.
    pub ratio: Option<f64>,
    /// What `ratio` compares.
    pub ratio_basis: String,
    /// The object size of the top-level figures, in MiB.
    pub object_mib: u64,
    /// Bytes migrated per size.
    pub bytes: u64,
    /// Per object size in MiB ("1", "16", "64").
    pub by_object_mib: BTreeMap<String, MigrateSize>,
}

/// One object size of `migrate`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrateSize {
    /// Object size in MiB.
    pub object_mib: u64,
    /// Bytes migrated in the batch.
    pub bytes: u64,
    /// The guest-measured time of the batch, in µs (the median over the guest runs).
    pub us: f64,
    /// MIGRATE throughput.
    pub gib_per_s: f64,
    /// memcpy into fresh memfd pages, in chunks of the object size.
    pub memcpy_gib_per_s: f64,
    /// memcpy into a warm buffer, in chunks of the object size.
    pub memcpy_warm_gib_per_s: f64,
    /// `gib_per_s / memcpy_gib_per_s`.
    pub ratio: Option<f64>,
    /// `gib_per_s / memcpy_warm_gib_per_s`.
    pub ratio_warm: Option<f64>,
}

/// `migrate_clean`: `bench-migrate --fused` (MIGRATE_CLEAN of every object in one batch; times
/// are medians over guest runs) on anonymous memory with transparent huge pages, and with
/// 4 KiB pages (`_4k`), against a warm memcpy of the same bytes in this process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrateCleanReport {
    /// GiB/s with huge pages.
    pub gib_per_s: f64,
    /// `gib_per_s / memcpy_warm_gib_per_s` (aim >= 50 with huge pages).
    pub ratio_vs_warm_memcpy: Option<f64>,
    /// GiB/s with 4 KiB pages.
    pub gib_per_s_4k: f64,
    /// `gib_per_s_4k / memcpy_warm_gib_per_s` (aim >= 3).
    pub ratio_vs_warm_memcpy_4k: Option<f64>,
    /// Host memcpy into a warm buffer, same bytes, in chunks of the object size.
    pub memcpy_warm_gib_per_s: f64,
    /// The same bytes over the time the device spent in MIGRATE_CLEAN (device counter
    /// `migrate_clean_ns`), with huge pages: the move itself, without the guest's round trip
    /// and page freeing.
    pub device_gib_per_s: f64,
    /// `device_gib_per_s / memcpy_warm_gib_per_s`.
    pub device_ratio_vs_warm_memcpy: Option<f64>,
    /// The same with 4 KiB pages.
    pub device_gib_per_s_4k: f64,
    /// `device_gib_per_s_4k / memcpy_warm_gib_per_s`.
    pub device_ratio_vs_warm_memcpy_4k: Option<f64>,
    /// Bytes moved over bytes moved or copied (device counters, every run; 1.0 when every
    /// page moved).
    pub moved_fraction: Option<f64>,
    /// Object size in MiB.
    pub object_mib: u64,
    /// Bytes per run.
    pub bytes: u64,
}

/// `workload`: the guest's first-touch fill (create, which zeroes the fresh pages, and the
/// pattern fill) of `workload`'s objects, on anonymous memory with and without transparent
/// huge pages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadReport {
    /// GiB/s with huge pages (the default).
    pub fill_gib_per_s: f64,
    /// GiB/s with 4 KiB pages (`--no-thp`).
    pub fill_gib_per_s_4k: f64,
    /// Bytes filled.
    pub bytes: u64,
}

/// `reclaim`: `workload` with CLEAN, against the same workload with `--no-clean`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReclaimReport {
    /// Bytes of objects.
    pub object_bytes: u64,
    /// Guest bytes the device punched (device counter `bytes_cleaned`).
    pub cleaned_bytes: u64,
    /// Guest-RAM memfd bytes at "filled" minus at "cleaned".
    pub guest_ram_freed_bytes: u64,
    /// `guest_ram_freed_bytes / cleaned_bytes`.
    pub freed_ratio: Option<f64>,
    /// Guest-RAM + VRAM memfd bytes at "cleaned", over `object_bytes`.
    pub host_bytes_per_object_byte: Option<f64>,
    /// The same in the `--no-clean` run (the status quo: backing kept).
    pub baseline_host_bytes_per_object_byte: Option<f64>,
    /// Guest-RAM + VRAM memfd bytes at "cleaned".
    pub host_bytes: u64,
    /// The same in the `--no-clean` run.
    pub baseline_host_bytes: u64,
    /// `bytes_cleaned` in the `--no-clean` run (should be 0).
    pub baseline_cleaned_bytes: u64,
    /// Largest guest-RAM + VRAM resident bytes sampled between the 'filled' and 'cleaned'
    /// markers (MIGRATE_CLEAN), over `object_bytes` (aim <= 1.05).
    pub peak_host_bytes_per_object_byte: Option<f64>,
    /// The same with `--copy` (MIGRATE, then CLEAN: both copies in between).
    pub baseline_peak_host_bytes_per_object_byte: Option<f64>,
}

/// `latency`, from `bench-latency` (all in µs, guest-measured).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyReport {
    /// A bare QueueNotify write caught by the ioeventfd, nothing queued: p50.
    pub notify_floor_p50_us: f64,
    /// The same, p99.
    pub notify_floor_p99_us: f64,
    /// A NOP round trip, batch of 1: p50.
    pub cmd_p50_us: f64,
    /// The same, p99.
    pub cmd_p99_us: f64,
    /// 32 NOPs behind one notify, per command.
    pub batch32_per_cmd_us: f64,
    /// `cmd_p50_us / notify_floor_p50_us` (aim < 2).
    pub cmd_p50_over_floor: Option<f64>,
    /// `batch32_per_cmd_us / notify_floor_p50_us` (aim < 0.2).
    pub batch32_per_cmd_over_floor: Option<f64>,
    /// Iterations.
    pub iters: u64,
}

/// `vhost_user`, from `bench-latency` with `--gpu-socket` (all in µs, guest-measured).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VhostUserReport {
    /// A NOP round trip through the backend process, batch of 1: p50.
    pub cmd_p50_us: f64,
    /// The same, p99.
    pub cmd_p99_us: f64,
    /// 32 NOPs behind one notify, per command.
    pub batch32_per_cmd_us: f64,
    /// The bare notify in that run: p50.
    pub notify_floor_p50_us: f64,
    /// The in-process NOP p50 of the same `pvgpu bench` run (the `latency` section).
    pub in_process_cmd_p50_us: Option<f64>,
    /// `cmd_p50_us / in_process_cmd_p50_us`.
    pub cmd_p50_over_in_process: Option<f64>,
    /// Iterations.
    pub iters: u64,
}

/// `boot`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootReport {
    /// Boots of `hello`.
    pub boots: usize,
    /// Milliseconds from creating the VM to the guest's first serial byte.
    pub first_output_ms: Spread,
    /// Milliseconds from creating the VM to the first KVM_RUN.
    pub entry_ms: Spread,
}

/// `scale`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaleReport {
    /// Live objects created (CREATE only, no backing).
    pub objects: u64,
    /// VMM anonymous memory (RssAnon) growth from before to after creating them, per object.
    pub host_bytes_per_object: Option<f64>,
    /// That growth in bytes (may be negative if the allocator reused freed memory).
    pub rss_anon_growth_bytes: i64,
    /// The device's own count of live objects at its peak.
    pub device_objects_peak: u64,
}

/// `density`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DensityReport {
    /// The guest verified every object and exited 0.
    pub ok: bool,
    /// Bytes of objects created.
    pub object_bytes: u64,
    /// Free guest pages at the start, as the guest reported them.
    pub headroom_bytes: u64,
    /// `object_bytes / headroom_bytes`.
    pub object_over_headroom: Option<f64>,
    /// Guest RAM given to the guest.
    pub mem_bytes: u64,
    /// The most guest-RAM + VRAM memfd bytes seen in any sample.
    pub peak_host_bytes: u64,
    /// Bytes the device cleaned (reclaim under guest memory pressure).
    pub cleaned_bytes: u64,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.digits$}"))
}

impl BenchReport {
    /// The table printed at the end of `pvgpu bench`, with its footnotes.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 5]> = vec![[
            "measure".into(),
            "pvgpu".into(),
            "baseline".into(),
            "ratio".into(),
            "aim".into(),
        ]];
        let mut row = |a: String, b: String, c: String, d: String, e: &str| {
            rows.push([a, b, c, d, e.to_owned()]);
        };
        if let Some(m) = &self.migrate {
            for s in m.by_object_mib.values() {
                row(
                    format!("migrate {} MiB objects [1]", s.object_mib),
                    format!("{:.2} GiB/s", s.gib_per_s),
                    format!(
                        "{:.2} GiB/s fresh, {:.2} warm",
                        s.memcpy_gib_per_s, s.memcpy_warm_gib_per_s
                    ),
                    opt(s.ratio, 2),
                    if s.object_mib == m.object_mib {
                        ">= 0.8"
                    } else {
                        ""
                    },
                );
            }
        }
        if let Some(c) = &self.migrate_clean {
            row(
                format!("migrate_clean {} MiB objects, THP [7]", c.object_mib),
                format!("{:.1} GiB/s", c.gib_per_s),
                format!("{:.2} GiB/s warm memcpy", c.memcpy_warm_gib_per_s),
                opt(c.ratio_vs_warm_memcpy, 1),
                ">= 50",
            );
            row(
                format!("migrate_clean {} MiB objects, 4 KiB [7]", c.object_mib),
                format!("{:.1} GiB/s", c.gib_per_s_4k),
                format!("{:.2} GiB/s warm memcpy", c.memcpy_warm_gib_per_s),
                opt(c.ratio_vs_warm_memcpy_4k, 1),
                ">= 3",
            );
            row(
                "migrate_clean in the device, THP (4 KiB) [7]".into(),
                format!(
                    "{:.0} GiB/s ({:.1})",
                    c.device_gib_per_s, c.device_gib_per_s_4k
                ),
                format!("{:.2} GiB/s warm memcpy", c.memcpy_warm_gib_per_s),
                format!(
                    "{} ({})",
                    opt(c.device_ratio_vs_warm_memcpy, 0),
                    opt(c.device_ratio_vs_warm_memcpy_4k, 1)
                ),
                "",
            );
            row(
                "migrate_clean: bytes moved, not copied [7]".into(),
                opt(c.moved_fraction, 3),
                String::new(),
                String::new(),
                "1.0",
            );
        }
        if let Some(r) = &self.reclaim {
            row(
                "reclaim: peak host bytes per object byte [2]".into(),
                opt(r.peak_host_bytes_per_object_byte, 3),
                format!(
                    "{} (--copy)",
                    opt(r.baseline_peak_host_bytes_per_object_byte, 3)
                ),
                opt(
                    r.peak_host_bytes_per_object_byte
                        .zip(r.baseline_peak_host_bytes_per_object_byte)
                        .and_then(|(a, b)| crate::tools::measure::ratio(a, b)),
                    3,
                ),
                "<= 1.05 (vs 2)",
            );
            row(
                "reclaim: guest RAM freed / cleaned [2]".into(),
                mib(r.guest_ram_freed_bytes),
                format!("{} cleaned", mib(r.cleaned_bytes)),
                opt(r.freed_ratio, 4),
                ">= 0.99",
            );
            row(
                "reclaim: host bytes per object byte [2]".into(),
                opt(r.host_bytes_per_object_byte, 3),
                format!(
                    "{} (--no-clean)",
                    opt(r.baseline_host_bytes_per_object_byte, 3)
                ),
                opt(
                    r.host_bytes_per_object_byte
                        .zip(r.baseline_host_bytes_per_object_byte)
                        .and_then(|(a, b)| crate::tools::measure::ratio(a, b)),
                    3,
                ),
                "<= 1.02 (vs ~2)",
            );
        }
        if let Some(w) = &self.workload {
            row(
                "workload: first-touch fill, THP [8]".into(),
                format!("{:.2} GiB/s", w.fill_gib_per_s),
                format!("{:.2} GiB/s with 4 KiB pages", w.fill_gib_per_s_4k),
                opt(
                    crate::tools::measure::ratio(w.fill_gib_per_s, w.fill_gib_per_s_4k),
                    2,
                ),
                "",
            );
        }
        if let Some(l) = &self.latency {
            row(
                "latency: NOP round trip p50 (p99) [3]".into(),
                format!("{:.1} us ({:.1})", l.cmd_p50_us, l.cmd_p99_us),
                format!(
                    "{:.1} us notify floor ({:.1})",
                    l.notify_floor_p50_us, l.notify_floor_p99_us
                ),
                opt(l.cmd_p50_over_floor, 2),
                "< 2",
            );
            row(
                "latency: batch of 32, per command [3]".into(),
                format!("{:.2} us", l.batch32_per_cmd_us),
                format!("{:.1} us notify floor", l.notify_floor_p50_us),
                opt(l.batch32_per_cmd_over_floor, 3),
                "< 0.2",
            );
        }
        if let Some(v) = &self.vhost_user {
            row(
                "vhost-user: NOP round trip p50 (p99) [3]".into(),
                format!("{:.1} us ({:.1})", v.cmd_p50_us, v.cmd_p99_us),
                format!(
                    "in-process {}; notify floor {:.1} us",
                    v.in_process_cmd_p50_us
                        .map_or("n/a".to_owned(), |x| format!("{x:.1} us")),
                    v.notify_floor_p50_us
                ),
                opt(v.cmd_p50_over_in_process, 2),
                "",
            );
        }
        if let Some(b) = &self.boot {
            row(
                format!("boot: first output, {} boots [4]", b.boots),
                format!("{:.1} ms median", b.first_output_ms.median),
                format!(
                    "min {:.1}, max {:.1}",
                    b.first_output_ms.min, b.first_output_ms.max
                ),
                String::new(),
                "",
            );
        }
        if let Some(s) = &self.scale {
            row(
                format!("scale: host bytes per object, {} objects [5]", s.objects),
                opt(s.host_bytes_per_object, 1),
                String::new(),
                String::new(),
                "< 256",
            );
        }
        if let Some(d) = &self.density {
            row(
                "density: objects of 2x free guest RAM [6]".into(),
                format!(
                    "{} ({})",
                    if d.ok { "verified" } else { "FAILED" },
                    mib(d.object_bytes)
                ),
                format!(
                    "{} headroom, {} guest RAM",
                    mib(d.headroom_bytes),
                    format_size(d.mem_bytes)
                ),
                opt(d.object_over_headroom, 2),
                "runs, verifies",
            );
            row(
                "density: peak host memory [6]".into(),
                mib(d.peak_host_bytes),
                String::new(),
                opt(
                    crate::tools::measure::ratio(d.peak_host_bytes as f64, d.object_bytes as f64),
                    3,
                ),
                "",
            );
        }
        let mut widths = [0usize; 5];
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pvgpu bench{} on {}",
            if self.quick { " --quick" } else { "" },
            self.machine.line()
        );
        for (i, r) in rows.iter().enumerate() {
            let cells: Vec<String> = r
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
                let _ = writeln!(out, "{}", rule.join("  "));
            }
        }
        out.push_str(FOOTNOTES);
        for e in &self.errors {
            let _ = writeln!(out, "error: {e}");
        }
        out
    }
}

/// The table's footnotes.
pub const FOOTNOTES: &str = "\
[1] MIGRATE of all objects in one batch, timed by the guest (median over guest runs). Baseline:
    host memcpy of the same bytes in chunks of the object size, in this process, this run
    (median of repetitions). 'fresh' copies into a never-touched MAP_SHARED memfd mapping,
    which is what MIGRATE writes into (VRAM is a memfd, punched when freed), so it pays for
    allocating host pages; 'warm' copies into an already-faulted buffer (copy only). The ratio
    uses 'fresh'; the JSON's top-level migrate figures are those of the largest object size.
[2] `workload` with MIGRATE_CLEAN, against the same workload with --no-clean (guest pages
    kept, as virtio-gpu does today). Host bytes = resident guest RAM + VRAM at the 'cleaned'
    marker. Peak: the largest sample (every 2 ms) between the 'filled' and 'cleaned' markers,
    against the same with --copy (MIGRATE, then CLEAN).
[3] Guest-measured, NOP commands. The notify floor is a bare QueueNotify MMIO write caught by
    the ioeventfd with nothing queued. Ratio: pvgpu / notify floor p50.
[4] From creating the VM (in this process) to the guest's first serial byte, guest `hello`.
[5] VMM anonymous memory (RssAnon, so not guest RAM or VRAM) grown while the guest created
    the objects (CREATE only, no backing), per object.
[6] The guest creates objects worth twice its free pages; reclaim under memory pressure
    migrates and cleans idle ones. Peak = max over samples of resident guest RAM + VRAM;
    ratio = peak / object bytes.
[7] MIGRATE_CLEAN of all objects in one batch (`bench-migrate --fused`), timed by the guest
    (median over guest runs, as in [1]), on anonymous memory with transparent huge pages and
    with 4 KiB pages (--no-thp): the device moves the pages with UFFDIO_MOVE. Baseline: warm
    memcpy, as in [1]. 'in the device': the same bytes over the time the device spent in
    MIGRATE_CLEAN (the move and the discard of the guest pages, without the guest's round
    trip and its page freeing).
[8] `workload`: creating the objects (which zeroes their fresh pages: the first touch) and
    filling them, timed by the guest, THP-backed guest RAM against 4 KiB pages.
";

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> BenchReport {
        let size = |m: u64| MigrateSize {
            object_mib: m,
            bytes: 256 << 20,
            us: 125_000.0,
            gib_per_s: 2.0,
            memcpy_gib_per_s: 2.5,
            memcpy_warm_gib_per_s: 8.0,
            ratio: Some(0.8),
            ratio_warm: Some(0.25),
        };
        BenchReport {
            machine: Machine {
                cpu: "Test CPU".into(),
                cpus: 2,
                mem_bytes: 1 << 30,
                kernel: "6.1".into(),
                kvm: "hardware (kvm_intel)".into(),
            },
            quick: true,
            migrate: Some(MigrateReport {
                gib_per_s: 2.0,
                memcpy_gib_per_s: 2.5,
                memcpy_warm_gib_per_s: 8.0,
                ratio: Some(0.8),
                ratio_basis: MIGRATE_RATIO_BASIS.into(),
                object_mib: 64,
                bytes: 256 << 20,
                by_object_mib: [1, 16, 64]
                    .into_iter()
                    .map(|m| (m.to_string(), size(m)))
                    .collect(),
            }),
            migrate_clean: Some(MigrateCleanReport {
                gib_per_s: 800.0,
                ratio_vs_warm_memcpy: Some(80.0),
                gib_per_s_4k: 40.0,
                ratio_vs_warm_memcpy_4k: Some(4.0),
                memcpy_warm_gib_per_s: 10.0,
                device_gib_per_s: 1000.0,
                device_ratio_vs_warm_memcpy: Some(100.0),
                device_gib_per_s_4k: 50.0,
                device_ratio_vs_warm_memcpy_4k: Some(5.0),
                moved_fraction: Some(1.0),
                object_mib: 64,
                bytes: 256 << 20,
            }),
            workload: Some(WorkloadReport {
                fill_gib_per_s: 0.4,
                fill_gib_per_s_4k: 0.3,
                bytes: 256 << 20,
            }),
            reclaim: Some(ReclaimReport {
                object_bytes: 256 << 20,
                cleaned_bytes: 256 << 20,
                guest_ram_freed_bytes: 256 << 20,
                freed_ratio: Some(1.0),
                host_bytes_per_object_byte: Some(1.001),
                baseline_host_bytes_per_object_byte: Some(2.001),
                host_bytes: 257 << 20,
                baseline_host_bytes: 513 << 20,
                baseline_cleaned_bytes: 0,
                peak_host_bytes_per_object_byte: Some(1.04),
                baseline_peak_host_bytes_per_object_byte: Some(2.0),
            }),
            latency: Some(LatencyReport {
                notify_floor_p50_us: 20.0,
                notify_floor_p99_us: 30.0,
                cmd_p50_us: 30.0,
                cmd_p99_us: 60.0,
                batch32_per_cmd_us: 2.0,
                cmd_p50_over_floor: Some(1.5),
                batch32_per_cmd_over_floor: Some(0.1),
                iters: 100,
            }),
            vhost_user: Some(VhostUserReport {
                cmd_p50_us: 40.0,
                cmd_p99_us: 80.0,
                batch32_per_cmd_us: 2.5,
                notify_floor_p50_us: 20.0,
                in_process_cmd_p50_us: Some(30.0),
                cmd_p50_over_in_process: Some(1.33),
                iters: 100,
            }),
            boot: Some(BootReport {
                boots: 3,
                first_output_ms: Spread {
                    min: 10.0,
                    median: 11.0,
                    max: 12.0,
                },
                entry_ms: Spread {
                    min: 1.0,
                    median: 2.0,
                    max: 3.0,
                },
            }),
            scale: Some(ScaleReport {
                objects: 10_000,
                host_bytes_per_object: Some(120.0),
                rss_anon_growth_bytes: 1_200_000,
                device_objects_peak: 10_000,
            }),
            density: Some(DensityReport {
                ok: true,
                object_bytes: 200 << 20,
                headroom_bytes: 100 << 20,
                object_over_headroom: Some(2.0),
                mem_bytes: 128 << 20,
                peak_host_bytes: 210 << 20,
                cleaned_bytes: 100 << 20,
            }),
            errors: vec![],
        }
    }

    fn keys(v: &serde_json::Value) -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            keys(&v),
            [
                "boot",
                "density",
                "errors",
                "latency",
                "machine",
                "migrate",
                "migrate_clean",
                "quick",
                "reclaim",
                "scale",
                "vhost_user",
                "workload"
            ]
        );
        // The keys the issue names, each a number (or a bool for density.ok).
        for p in [
            "/migrate/gib_per_s",
            "/migrate/memcpy_gib_per_s",
            "/migrate/ratio",
            "/migrate/memcpy_warm_gib_per_s",
            "/migrate/by_object_mib/1/gib_per_s",
            "/migrate/by_object_mib/16/ratio",
            "/migrate/by_object_mib/64/memcpy_gib_per_s",
            "/reclaim/cleaned_bytes",
            "/reclaim/guest_ram_freed_bytes",
            "/reclaim/freed_ratio",
            "/reclaim/host_bytes_per_object_byte",
            "/reclaim/baseline_host_bytes_per_object_byte",
            "/reclaim/peak_host_bytes_per_object_byte",
            "/reclaim/baseline_peak_host_bytes_per_object_byte",
            "/migrate_clean/gib_per_s",
            "/migrate_clean/ratio_vs_warm_memcpy",
            "/migrate_clean/gib_per_s_4k",
            "/migrate_clean/ratio_vs_warm_memcpy_4k",
            "/migrate_clean/moved_fraction",
            "/migrate_clean/device_gib_per_s",
            "/migrate_clean/device_ratio_vs_warm_memcpy_4k",
            "/workload/fill_gib_per_s",
            "/workload/fill_gib_per_s_4k",
            "/latency/notify_floor_p50_us",
            "/latency/cmd_p50_us",
            "/latency/cmd_p99_us",
            "/latency/batch32_per_cmd_us",
            "/vhost_user/cmd_p50_us",
            "/vhost_user/in_process_cmd_p50_us",
            "/boot/first_output_ms/min",
            "/boot/first_output_ms/median",
            "/boot/first_output_ms/max",
            "/scale/objects",
            "/scale/host_bytes_per_object",
            "/density/object_bytes",
            "/density/peak_host_bytes",
        ] {
            assert!(v.pointer(p).is_some_and(|x| x.is_number()), "{p}: {v}");
        }
        assert_eq!(v["density"]["ok"], true);
        assert!(v["migrate"]["ratio_basis"].is_string());
        assert_eq!(v["machine"]["cpus"], 2);
        assert_eq!(
            keys(&v["boot"]["first_output_ms"]),
            ["max", "median", "min"]
        );
        // A failed section is null and its error listed.
        let mut r = sample();
        r.scale = None;
        r.errors.push("scale: guest exit 1".into());
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["scale"].is_null());
        assert_eq!(v["errors"][0], "scale: guest exit 1");
    }

    #[test]
    fn table_has_every_section_and_the_footnotes() {
        let t = sample().table();
        for needle in [
            "pvgpu bench --quick on Test CPU, 2 CPUs",
            "migrate 1 MiB objects",
            "migrate 64 MiB objects",
            "2.00 GiB/s",
            "2.50 GiB/s fresh, 8.00 warm",
            "guest RAM freed / cleaned",
            "migrate_clean 64 MiB objects, THP",
            "800.0 GiB/s",
            "peak host bytes per object byte",
            "2.000 (--copy)",
            "first-touch fill, THP",
            "[7] MIGRATE_CLEAN",
            "1.001",
            "2.001 (--no-clean)",
            "NOP round trip p50",
            "batch of 32",
            "first output, 3 boots",
            "scale: host bytes per object, 10000 objects",
            "density: objects of 2x free guest RAM",
            "verified",
            "[1] MIGRATE",
            "The ratio\n    uses 'fresh'",
        ] {
            assert!(t.contains(needle), "{needle} missing:\n{t}");
        }
        let mut r = sample();
        r.migrate = None;
        r.errors.push("migrate: boom".into());
        let t = r.table();
        assert!(!t.contains("migrate 1 MiB"));
        assert!(t.contains("error: migrate: boom"));
    }
}
