//! Run statistics: the boot timeline, phase markers, host memory, the `--stats-json` file and
//! the one-line summary.

use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde::Serialize;

use crate::run_state::GuestEnd;
use crate::size::format_size;

/// Times since VMM start, shared by the vCPU threads and devices.
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    entry_ms: OnceLock<f64>,
    first_output_ms: OnceLock<f64>,
    phases: Mutex<Vec<PhaseMark>>,
}

/// A phase marker written by the guest to the phase port.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseMark {
    /// The guest's phase number.
    pub phase: u32,
    /// When, in ms since VMM start.
    pub t_ms: f64,
    /// Host bytes allocated to guest RAM then.
    pub guest_ram_bytes: u64,
    /// VMM resident set size then.
    pub rss_bytes: u64,
}

impl Timeline {
    /// A timeline starting at `start` (taken first thing in `main`).
    pub fn new(start: Instant) -> Self {
        Timeline {
            start,
            entry_ms: OnceLock::new(),
            first_output_ms: OnceLock::new(),
            phases: Mutex::new(Vec::new()),
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

    /// Appends a phase marker.
    pub fn add_phase(&self, mark: PhaseMark) {
        self.phases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(mark);
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
    /// VMM resident set size at exit (VmRSS).
    pub rss_bytes: u64,
    /// VMM peak resident set size (VmHWM).
    pub peak_rss_bytes: u64,
}

/// The stats JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStats {
    /// Boot timeline.
    pub boot: BootStats,
    /// How the guest ended.
    pub guest: GuestStats,
    /// Host memory.
    pub host: HostStats,
    /// Phase markers, in order.
    pub phases: Vec<PhaseMark>,
    /// VMM start to exit.
    pub wall_ms: f64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest RAM size.
    pub mem_bytes: u64,
}

impl RunStats {
    /// Collects the stats at the end of a run.
    pub fn collect(
        timeline: &Timeline,
        end: &GuestEnd,
        guest_ram_bytes: u64,
        vcpus: u32,
        mem_bytes: u64,
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
                guest_ram_bytes,
                rss_bytes: rss_bytes(),
                peak_rss_bytes: proc_status_bytes("VmHWM").unwrap_or(0),
            },
            phases: timeline.phases(),
            wall_ms: timeline.now_ms(),
            vcpus,
            mem_bytes,
        }
    }

    /// Writes the JSON to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json + "\n")
    }

    /// The one-line summary, e.g. `guest exit 0 in 84.2 ms (entry 3.1 ms, first output 12.5
    /// ms) | 2 vCPUs | guest RAM 4.2 MiB of 256 MiB`.
    pub fn summary(&self, end: &GuestEnd) -> String {
        let ms = |v: Option<f64>| v.map_or("none".to_owned(), |v| format!("{v:.1} ms"));
        let what = match end {
            GuestEnd::Exit(_) => end.describe(),
            _ => format!("{} (status {})", end.describe(), end.status()),
        };
        format!(
            "{what} in {:.1} ms (entry {}, first output {}) | {} vCPU{} | guest RAM {} of {}",
            self.wall_ms,
            ms(self.boot.entry_ms),
            ms(self.boot.first_output_ms),
            self.vcpus,
            if self.vcpus == 1 { "" } else { "s" },
            format_size(self.host.guest_ram_bytes),
            format_size(self.mem_bytes),
        )
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
mod tests {
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

    #[test]
    fn json_shape() {
        let t = Timeline::new(Instant::now());
        t.mark_entry();
        t.add_phase(PhaseMark {
            phase: 1,
            t_ms: 2.0,
            guest_ram_bytes: 4096,
            rss_bytes: 8192,
        });
        let s = RunStats::collect(&t, &GuestEnd::Exit(7), 4096, 2, 256 << 20);
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert!(v["boot"]["entry_ms"].as_f64().unwrap() >= 0.0);
        assert!(v["boot"]["first_output_ms"].is_null());
        assert_eq!(v["guest"]["exit_code"], 7);
        assert_eq!(v["guest"]["exit_reason"], "exit");
        assert_eq!(v["host"]["guest_ram_bytes"], 4096);
        assert!(v["host"]["rss_bytes"].as_u64().unwrap() > 0);
        assert!(v["host"]["peak_rss_bytes"].as_u64().unwrap() > 0);
        assert_eq!(v["phases"][0]["phase"], 1);
        assert_eq!(v["phases"][0]["guest_ram_bytes"], 4096);
        assert!(v["phases"][0]["t_ms"].is_number() && v["phases"][0]["rss_bytes"].is_number());
        assert!(v["wall_ms"].is_number());
        assert_eq!(v["vcpus"], 2);
        assert_eq!(v["mem_bytes"], 256u64 << 20);

        let p = std::env::temp_dir().join(format!("pvgpu-stats-{}.json", std::process::id()));
        s.write(&p).unwrap();
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(back, v);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn summary_line() {
        let t = Timeline::new(Instant::now());
        t.mark_first_output();
        let s = RunStats::collect(&t, &GuestEnd::Exit(0), 4_404_019, 2, 256 << 20);
        let line = s.summary(&GuestEnd::Exit(0));
        assert!(line.starts_with("guest exit 0 in "), "{line}");
        assert!(line.contains("(entry none, first output "), "{line}");
        assert!(
            line.ends_with("| 2 vCPUs | guest RAM 4.2 MiB of 256 MiB"),
            "{line}"
        );
        let end = GuestEnd::Timeout(Duration::from_secs(2));
        let line = RunStats::collect(&t, &end, 0, 1, 16 << 20).summary(&end);
        assert!(
            line.starts_with("guest timed out after 2 s (status 124) in "),
            "{line}"
        );
        assert!(line.contains("| 1 vCPU |"), "{line}");
    }
}
