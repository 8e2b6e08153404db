//! Run statistics: the boot timeline, phase markers, host-memory samples, the `--stats-json`
//! file and the one-line summary.
//!
//! Host memory is measured by a [`MemoryProbe`]: the resident bytes of guest RAM and of VRAM
//! (mincore over each range, the same for the anonymous and the memfd backend) and the VMM's
//! RSS. The phase port takes a
//! [`MemSnapshot`] synchronously in the vCPU's exit handler (before the vCPU resumes), and
//! the event loop takes one every `--sample-ms`.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use pvgpu_device::backend::MoveLock;
use pvgpu_device::{DeviceStats, HostMemory};
use serde::Serialize;

use crate::run::state::GuestEnd;
use crate::size::format_size;

/// Most periodic samples kept (at the default 50 ms, over an hour and a half); later ones are
/// dropped so that a long run cannot grow the VMM without bound.
pub const MAX_SAMPLES: usize = 100_000;
/// Most phase markers kept; a guest writing the phase port in a loop cannot grow the VMM
/// without bound either.
pub const MAX_PHASES: usize = 100_000;

/// Errors of the stats module.
#[derive(Debug, thiserror::Error)]
pub enum RunStatsError {
    /// The VRAM memfd's descriptor could not be duplicated for counting.
    #[error("cannot duplicate the VRAM memfd for accounting: {0}")]
    Dup(std::io::Error),
}

/// Host memory at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemSnapshot {
    /// Host bytes resident in guest RAM.
    pub guest_ram_bytes: u64,
    /// Host bytes resident in VRAM (0 without the GPU).
    pub vram_bytes: u64,
    /// VMM resident set size (VmRSS). It includes the guest-RAM and VRAM pages the VMM
    /// maps.
    pub rss_bytes: u64,
    /// The VMM's anonymous resident memory (RssAnon). With the shared backend that is its own
    /// heap and stacks; with the anonymous backend it includes guest RAM and VRAM.
    pub rss_anon_bytes: u64,
}

/// Measures host memory: guest RAM, VRAM, RSS. Cheap to clone; safe to use from any thread.
#[derive(Debug, Clone)]
pub struct MemoryProbe {
    guest_ram: Arc<HostMemory>,
    // VRAM's host memory, shared with the device: counting it needs no device lock, so a vCPU
    // at a phase marker never waits for the device thread's queue processing.
    vram: Option<Arc<HostMemory>>,
    // Held while measuring both: the device holds it while pages move between them.
    moves: MoveLock,
}

impl MemoryProbe {
    /// A probe of `guest_ram` and, if there is one, `vram`.
    pub fn new(guest_ram: Arc<HostMemory>, vram: Option<Arc<HostMemory>>) -> Self {
        MemoryProbe {
            guest_ram,
            vram,
            moves: MoveLock::default(),
        }
    }

    /// The same probe, measuring consistently with the device's page moves.
    pub fn with_move_lock(self, moves: MoveLock) -> Self {
        MemoryProbe { moves, ..self }
    }

    /// Host bytes resident in guest RAM (0 if mincore fails).
    pub fn guest_ram_bytes(&self) -> u64 {
        self.guest_ram.resident_bytes()
    }

    /// Host bytes resident in VRAM (0 without the GPU or if mincore fails).
    pub fn vram_bytes(&self) -> u64 {
        self.vram.as_ref().map_or(0, |v| v.resident_bytes())
    }

    /// All the numbers, now (/proc/self/status is read once for both RSS figures).
    pub fn snapshot(&self) -> MemSnapshot {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kb = |field| parse_status_kb(&status, field).map_or(0, |kb| kb * 1024);
        let (guest_ram_bytes, vram_bytes) = {
            let _consistent = self.moves.hold();
            (self.guest_ram_bytes(), self.vram_bytes())
        };
        MemSnapshot {
            guest_ram_bytes,
            vram_bytes,
            rss_bytes: kb("VmRSS"),
            rss_anon_bytes: kb("RssAnon"),
        }
    }
}

/// Times since VMM start, shared by the vCPU threads and devices.
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    entry_ms: OnceLock<f64>,
    first_output_ms: OnceLock<f64>,
    phases: Mutex<Vec<PhaseMark>>,
    samples: Mutex<Vec<Sample>>,
}

/// A phase marker written by the guest to the phase port, with host memory at that moment.
/// In JSON: `{phase, t_ms, guest_ram_bytes, vram_bytes, rss_bytes, rss_anon_bytes}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseMark {
    /// The guest's phase number.
    pub phase: u32,
    /// When, in ms since VMM start.
    pub t_ms: f64,
    /// Host memory then.
    #[serde(flatten)]
    pub mem: MemSnapshot,
}

/// A periodic host-memory sample. In JSON: `{t_ms, guest_ram_bytes, vram_bytes, rss_bytes,
/// rss_anon_bytes}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// When, in ms since VMM start.
    pub t_ms: f64,
    /// Host memory then.
    #[serde(flatten)]
    pub mem: MemSnapshot,
}

impl Timeline {
    /// A timeline starting at `start` (taken first thing in `main`).
    pub fn new(start: Instant) -> Self {
        Timeline {
            start,
            entry_ms: OnceLock::new(),
            first_output_ms: OnceLock::new(),
            phases: Mutex::new(Vec::new()),
            samples: Mutex::new(Vec::new()),
        }
    }

    /// When the VMM started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Milliseconds since VMM start.
    pub fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e3
    }

    /// Records the first KVM_RUN of vCPU 0 (only the first call counts).
    pub fn mark_entry(&self) {
        let _ = self.entry_ms.set(self.now_ms());
    }

    /// Records the first serial output byte (only the first call counts).
    pub fn mark_first_output(&self) {
        if self.first_output_ms.get().is_none() {
            let _ = self.first_output_ms.set(self.now_ms());
        }
    }

    /// Appends a phase marker (dropped beyond [`MAX_PHASES`]). Returns whether it was kept.
    pub fn add_phase(&self, mark: PhaseMark) -> bool {
        let mut v = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() >= MAX_PHASES {
            return false;
        }
        v.push(mark);
        true
    }

    /// Appends a periodic sample (dropped beyond [`MAX_SAMPLES`]). Returns whether it was kept.
    pub fn add_sample(&self, sample: Sample) -> bool {
        let mut v = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() >= MAX_SAMPLES {
            return false;
        }
        v.push(sample);
        true
    }

    /// The periodic samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// ms to guest entry, if it happened.
    pub fn entry_ms(&self) -> Option<f64> {
        self.entry_ms.get().copied()
    }

    /// ms to first output, if any.
    pub fn first_output_ms(&self) -> Option<f64> {
        self.first_output_ms.get().copied()
    }

    /// The phase markers so far.
    pub fn phases(&self) -> Vec<PhaseMark> {
        self.phases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// `boot` in the stats JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootStats {
    /// VMM start to the first KVM_RUN of vCPU 0.
    pub entry_ms: Option<f64>,
    /// VMM start to the first serial output byte (null if none).
    pub first_output_ms: Option<f64>,
}

/// `guest` in the stats JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuestStats {
    /// The VMM's exit status: the guest's exit-port value, or 120..124 for failures.
    pub exit_code: i32,
    /// Why the run ended: exit, emulation-failure, internal-error, triple-fault, fail-entry,
    /// unexpected-exit, all-vcpus-halted, timeout or vmm-error.
    pub exit_reason: String,
}

/// `host` in the stats JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostStats {
    /// Host bytes allocated to the guest-RAM memfd at exit (fstat st_blocks).
    pub guest_ram_bytes: u64,
    /// Host bytes allocated to the VRAM memfd at exit (fstat st_blocks; 0 without the GPU).
    pub vram_bytes: u64,
    /// VMM resident set size at exit (VmRSS).
    pub rss_bytes: u64,
    /// VMM peak resident set size (VmHWM).
    pub peak_rss_bytes: u64,
}

/// What the run was configured with, for the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunShape {
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest RAM size.
    pub mem_bytes: u64,
    /// VRAM size, or `None` without the GPU.
    pub vram_size: Option<u64>,
    /// Sampling interval in ms (0: no sampling).
    pub sample_ms: u64,
}

/// The stats JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStats {
    /// Boot timeline.
    pub boot: BootStats,
    /// How the guest ended.
    pub guest: GuestStats,
    /// Host memory at exit.
    pub host: HostStats,
    /// The GPU device's counters at exit (null with `--no-gpu`).
    pub device: Option<DeviceStats>,
    /// Phase markers, in order, each with host memory at the marker.
    pub phases: Vec<PhaseMark>,
    /// Host memory every `sample_ms`, in order.
    pub samples: Vec<Sample>,
    /// The sampling interval in ms (0: sampling was off).
    pub sample_ms: u64,
    /// VMM start to exit.
    pub wall_ms: f64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest RAM size.
    pub mem_bytes: u64,
    /// Whether the GPU device was present.
    pub gpu: bool,
    /// VRAM size (0 without the GPU).
    pub vram_size: u64,
}

impl RunStats {
    /// The phase marker `n`, if the guest wrote it.
    pub fn phase(&self, n: u32) -> Option<&PhaseMark> {
        self.phases.iter().find(|p| p.phase == n)
    }

    /// The largest guest RAM + VRAM (resident bytes) sampled or marked from phase marker
    /// `from` to phase marker `to`, both included; `None` if either marker is missing.
    pub fn peak_host_between(&self, from: u32, to: u32) -> Option<u64> {
        let (a, b) = (self.phase(from)?.t_ms, self.phase(to)?.t_ms);
        let host = |m: &MemSnapshot| m.guest_ram_bytes + m.vram_bytes;
        self.samples
            .iter()
            .filter(|s| (a..=b).contains(&s.t_ms))
            .map(|s| host(&s.mem))
            .chain(
                self.phases
                    .iter()
                    .filter(|p| (a..=b).contains(&p.t_ms))
                    .map(|p| host(&p.mem)),
            )
            .max()
    }

    /// Collects the stats at the end of a run: `host` is host memory now, `device` the
    /// device counters if there is a device.
    pub fn collect(
        timeline: &Timeline,
        end: &GuestEnd,
        shape: RunShape,
        host: MemSnapshot,
        device: Option<DeviceStats>,
    ) -> Self {
        RunStats {
            boot: BootStats {
                entry_ms: timeline.entry_ms(),
                first_output_ms: timeline.first_output_ms(),
            },
            guest: GuestStats {
                exit_code: end.status(),
                exit_reason: end.reason().to_owned(),
            },
            host: HostStats {
                guest_ram_bytes: host.guest_ram_bytes,
                vram_bytes: host.vram_bytes,
                rss_bytes: host.rss_bytes,
                peak_rss_bytes: proc_status_bytes("VmHWM").unwrap_or(0),
            },
            device,
            phases: timeline.phases(),
            samples: timeline.samples(),
            sample_ms: shape.sample_ms,
            wall_ms: timeline.now_ms(),
            vcpus: shape.vcpus,
            mem_bytes: shape.mem_bytes,
            gpu: shape.vram_size.is_some(),
            vram_size: shape.vram_size.unwrap_or(0),
        }
    }

    /// Writes the JSON to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json + "\n")
    }

    /// The one-line summary, e.g. `guest exit 0 in 84.2 ms (entry 3.1 ms, first output 12.5
    /// ms) | 2 vCPUs | guest RAM 4.2 MiB of 256 MiB | VRAM 64 MiB of 256 MiB` (the VRAM part
    /// only with the GPU).
    pub fn summary(&self, end: &GuestEnd) -> String {
        let ms = |v: Option<f64>| v.map_or("none".to_owned(), |v| format!("{v:.1} ms"));
        let what = match end {
            GuestEnd::Exit(_) => end.describe(),
            _ => format!("{} (status {})", end.describe(), end.status()),
        };
        let mut line = format!(
            "{what} in {:.1} ms (entry {}, first output {}) | {} vCPU{} | guest RAM {} of {}",
            self.wall_ms,
            ms(self.boot.entry_ms),
            ms(self.boot.first_output_ms),
            self.vcpus,
            if self.vcpus == 1 { "" } else { "s" },
            format_size(self.host.guest_ram_bytes),
            format_size(self.mem_bytes),
        );
        if self.gpu {
            line.push_str(&format!(
                " | VRAM {} of {}",
                format_size(self.host.vram_bytes),
                format_size(self.vram_size)
            ));
        }
        line
    }
}

/// The VMM's resident set size in bytes (0 if unknown).
pub fn rss_bytes() -> u64 {
    proc_status_bytes("VmRSS").unwrap_or(0)
}

/// A `kB` field of /proc/self/status, in bytes.
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kb(&status, field).map(|kb| kb * 1024)
}

/// Finds `field:   N kB` in /proc/<pid>/status text.
pub fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn status_parsing() {
        let s = "Name:\tpvgpu\nVmHWM:\t   12345 kB\nVmRSS:\t    2048 kB\nVmRSSx: 1 kB\n";
        assert_eq!(parse_status_kb(s, "VmRSS"), Some(2048));
        assert_eq!(parse_status_kb(s, "VmHWM"), Some(12345));
        assert_eq!(parse_status_kb(s, "VmSwap"), None);
        assert!(rss_bytes() > 0);
    }

    fn shape(vcpus: u32, mem_bytes: u64, vram_size: Option<u64>) -> RunShape {
        RunShape {
            vcpus,
            mem_bytes,
            vram_size,
            sample_ms: 50,
        }
    }

    fn host(guest_ram_bytes: u64, vram_bytes: u64) -> MemSnapshot {
        MemSnapshot {
            guest_ram_bytes,
            vram_bytes,
            rss_bytes: rss_bytes(),
            rss_anon_bytes: 0,
        }
    }

    #[test]
    fn json_shape() {
        let t = Timeline::new(Instant::now());
        t.mark_entry();
        t.add_phase(PhaseMark {
            phase: 1,
            t_ms: 2.0,
            mem: MemSnapshot {
                guest_ram_bytes: 4096,
                vram_bytes: 12288,
                rss_bytes: 8192,
                rss_anon_bytes: 4096,
            },
        });
        t.add_sample(Sample {
            t_ms: 3.0,
            mem: MemSnapshot {
                guest_ram_bytes: 8192,
                vram_bytes: 0,
                rss_bytes: 8192,
                rss_anon_bytes: 4096,
            },
        });
        let dev = DeviceStats {
            objects_created: 3,
            vram_size: 256 << 20,
            ..Default::default()
        };
        let s = RunStats::collect(
            &t,
            &GuestEnd::Exit(7),
            shape(2, 256 << 20, Some(256 << 20)),
            host(4096, 8192),
            Some(dev),
        );
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert!(v["boot"]["entry_ms"].as_f64().unwrap() >= 0.0);
        assert!(v["boot"]["first_output_ms"].is_null());
        assert_eq!(v["guest"]["exit_code"], 7);
        assert_eq!(v["guest"]["exit_reason"], "exit");
        assert_eq!(v["host"]["guest_ram_bytes"], 4096);
        assert!(v["host"]["rss_bytes"].as_u64().unwrap() > 0);
        assert!(v["host"]["peak_rss_bytes"].as_u64().unwrap() > 0);
        assert_eq!(v["host"]["vram_bytes"], 8192);
        assert_eq!(v["phases"][0]["phase"], 1);
        assert_eq!(v["phases"][0]["guest_ram_bytes"], 4096);
        assert_eq!(v["phases"][0]["vram_bytes"], 12288);
        assert_eq!(v["phases"][0]["rss_anon_bytes"], 4096);
        assert!(v["phases"][0]["t_ms"].is_number() && v["phases"][0]["rss_bytes"].is_number());
        let keys = |o: &serde_json::Value| {
            let mut k: Vec<String> = o.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&v["phases"][0]),
            [
                "guest_ram_bytes",
                "phase",
                "rss_anon_bytes",
                "rss_bytes",
                "t_ms",
                "vram_bytes"
            ]
        );
        assert_eq!(
            keys(&v["samples"][0]),
            [
                "guest_ram_bytes",
                "rss_anon_bytes",
                "rss_bytes",
                "t_ms",
                "vram_bytes"
            ]
        );
        assert_eq!(v["samples"][0]["guest_ram_bytes"], 8192);
        assert_eq!(v["sample_ms"], 50);
        assert_eq!(v["device"]["objects_created"], 3);
        assert_eq!(v["device"]["vram_size"], 256u64 << 20);
        assert!(v["device"]["by_command"].is_object());
        assert!(v["wall_ms"].is_number());
        assert_eq!(v["vcpus"], 2);
        assert_eq!(v["mem_bytes"], 256u64 << 20);
        assert_eq!(v["gpu"], true);
        assert_eq!(v["vram_size"], 256u64 << 20);
        assert_eq!(
            keys(&v),
            [
                "boot",
                "device",
                "gpu",
                "guest",
                "host",
                "mem_bytes",
                "phases",
                "sample_ms",
                "samples",
                "vcpus",
                "vram_size",
                "wall_ms"
            ]
        );

        let p = std::env::temp_dir().join(format!("pvgpu-stats-{}.json", std::process::id()));
        s.write(&p).unwrap();
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        std::fs::remove_file(p).unwrap();
        // serde_json's default float parsing may be off by an ulp: compare times loosely.
        let near = |a: &serde_json::Value, b: &serde_json::Value| {
            (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-9
        };
        assert!(near(&back["wall_ms"], &v["wall_ms"]));
        assert!(near(&back["boot"]["entry_ms"], &v["boot"]["entry_ms"]));
        for k in ["guest", "host", "device", "phases", "samples", "vram_size"] {
            assert_eq!(back[k], v[k], "{k}");
        }
    }

    #[test]
    fn no_gpu_json() {
        let t = Timeline::new(Instant::now());
        let s = RunStats::collect(
            &t,
            &GuestEnd::Exit(0),
            shape(1, 16 << 20, None),
            host(4096, 0),
            None,
        );
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert!(v["device"].is_null());
        assert_eq!(v["gpu"], false);
        assert_eq!(v["vram_size"], 0);
        assert_eq!(v["host"]["vram_bytes"], 0);
        assert_eq!(v["samples"], serde_json::json!([]));
        assert!(!s.summary(&GuestEnd::Exit(0)).contains("VRAM"));
    }

    #[test]
    fn samples_and_phases_are_capped() {
        let t = Timeline::new(Instant::now());
        let s = Sample {
            t_ms: 0.0,
            mem: MemSnapshot::default(),
        };
        for _ in 0..MAX_SAMPLES {
            assert!(t.add_sample(s.clone()));
        }
        assert!(!t.add_sample(s));
        assert_eq!(t.samples().len(), MAX_SAMPLES);
        let m = PhaseMark {
            phase: 1,
            t_ms: 0.0,
            mem: MemSnapshot::default(),
        };
        for _ in 0..MAX_PHASES {
            assert!(t.add_phase(m.clone()));
        }
        assert!(!t.add_phase(m));
        assert_eq!(t.phases().len(), MAX_PHASES);
    }

    /// Writes `len` bytes of 1 at `off` of `m` (a test helper).
    pub(crate) fn touch(m: &HostMemory, off: usize, len: usize) {
        use vm_memory::VolatileMemory;
        m.region()
            .get_slice(off, len)
            .unwrap()
            .copy_from(&vec![1u8; len]);
    }

    #[test]
    fn probe_counts_both_ranges_in_both_backends() {
        use pvgpu_device::MemoryBackend;
        for b in [
            MemoryBackend::Shared,
            MemoryBackend::Anonymous { thp: false },
        ] {
            let ram = Arc::new(HostMemory::new(b, "ram", 1 << 20).unwrap());
            let vram = Arc::new(HostMemory::new(b, "vram", 1 << 20).unwrap());
            let p = MemoryProbe::new(ram.clone(), Some(vram.clone()));
            assert_eq!(p.snapshot().guest_ram_bytes, 0);
            assert_eq!(p.snapshot().vram_bytes, 0);
            touch(&ram, 0, 8192);
            touch(&vram, 4096, 4096);
            let s = p.snapshot();
            assert_eq!((s.guest_ram_bytes, s.vram_bytes), (8192, 4096), "{b:?}");
            assert!(s.rss_bytes > 0);
            assert!(s.rss_anon_bytes > 0 && s.rss_anon_bytes <= s.rss_bytes);
            vram.discard(0, 1 << 20).unwrap();
            assert_eq!(p.vram_bytes(), 0);
            let none = MemoryProbe::new(ram, None);
            assert_eq!(none.vram_bytes(), 0);
            assert_eq!(none.guest_ram_bytes(), 8192);
        }
    }

    #[test]
    fn summary_line() {
        let t = Timeline::new(Instant::now());
        t.mark_first_output();
        let s = RunStats::collect(
            &t,
            &GuestEnd::Exit(0),
            shape(2, 256 << 20, None),
            host(4_404_019, 0),
            None,
        );
        let line = s.summary(&GuestEnd::Exit(0));
        assert!(line.starts_with("guest exit 0 in "), "{line}");
        assert!(line.contains("(entry none, first output "), "{line}");
        assert!(
            line.ends_with("| 2 vCPUs | guest RAM 4.2 MiB of 256 MiB"),
            "{line}"
        );
        let s = RunStats::collect(
            &t,
            &GuestEnd::Exit(0),
            shape(2, 256 << 20, Some(256 << 20)),
            host(4_404_019, 64 << 20),
            Some(DeviceStats::default()),
        );
        let line = s.summary(&GuestEnd::Exit(0));
        assert!(
            line.ends_with("| guest RAM 4.2 MiB of 256 MiB | VRAM 64 MiB of 256 MiB"),
            "{line}"
        );
        let end = GuestEnd::Timeout(Duration::from_secs(2));
        let line =
            RunStats::collect(&t, &end, shape(1, 16 << 20, None), host(0, 0), None).summary(&end);
        assert!(
            line.starts_with("guest timed out after 2 s (status 124) in "),
            "{line}"
        );
        assert!(line.contains("| 1 vCPU |"), "{line}");
    }
}
