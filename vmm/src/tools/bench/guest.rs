//! Running one guest for a measurement, and reading what it printed.
//!
//! The guest's serial output goes into a buffer (optionally echoed line by line), and its
//! `BENCH kind key=value ...` lines are parsed from there. A guest that does not exit 0 is an
//! error that carries the end of its output.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::RunConfig;
use crate::run::stats::{PhaseMark, RunStats, Timeline};
use pvgpu_device::MemoryBackend;

use super::BenchError;

/// Each benchmark guest is stopped after this long.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(180);
/// How many lines of guest output an error shows.
const TAIL_LINES: usize = 12;

/// One guest to boot.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// The guest command line, e.g. `bench-latency --iters 1000`.
    pub cmdline: String,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// VRAM in bytes.
    pub vram_bytes: u64,
    /// Host-memory sampling interval, if any.
    pub sample: Option<Duration>,
    /// A vhost-user GPU backend to use instead of the in-process device.
    pub gpu_socket: Option<std::path::PathBuf>,
    /// Host memory of guest RAM and VRAM.
    pub memory: MemoryBackend,
}

impl GuestSpec {
    /// `cmdline` with `mem_bytes` of RAM, the default VRAM and no sampling.
    pub fn new(cmdline: impl Into<String>, mem_bytes: u64) -> Self {
        GuestSpec {
            cmdline: cmdline.into(),
            mem_bytes,
            vram_bytes: pvgpu_abi::layout::VRAM_DEFAULT,
            sample: None,
            gpu_socket: None,
            memory: MemoryBackend::DEFAULT_VMM,
        }
    }
}

/// What a finished guest left behind.
#[derive(Debug)]
pub struct GuestResult {
    /// Everything it printed on the serial port.
    pub output: String,
    /// The run's statistics.
    pub stats: RunStats,
}

impl GuestResult {
    /// The last `BENCH <kind>` line that has `key`.
    pub fn bench_line(&self, kind: &str, key: &str) -> Result<BenchLine, BenchError> {
        find_bench_line(&self.output, kind, key).ok_or_else(|| BenchError::MissingLine {
            what: format!("BENCH {kind} ... {key}=..."),
            tail: tail(&self.output, TAIL_LINES),
        })
    }

    /// The first phase marker `n`.
    pub fn phase(&self, n: u32) -> Result<&PhaseMark, BenchError> {
        self.stats
            .phases
            .iter()
            .find(|p| p.phase == n)
            .ok_or_else(|| BenchError::MissingPhase {
                phase: n,
                tail: tail(&self.output, TAIL_LINES),
            })
    }
}

/// A buffer that collects the guest's output and can echo complete lines to stdout as they
/// arrive (skipping the `BENCH` lines, which are for machines).
#[derive(Debug, Clone, Default)]
pub struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    echo: Option<Arc<Mutex<Vec<u8>>>>,
}

impl Capture {
    /// A capture that echoes complete human-readable lines to stdout when `echo` is set.
    pub fn new(echo: bool) -> Self {
        Capture {
            buf: Arc::default(),
            echo: echo.then(Arc::default),
        }
    }

    /// Everything written so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        let b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&b).into_owned()
    }

    fn echo_lines(&self, data: &[u8], flush_partial: bool) {
        let Some(pending) = &self.echo else { return };
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        p.extend_from_slice(data);
        let mut out = std::io::stdout().lock();
        while let Some(i) = p.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = p.drain(..=i).collect();
            if !line.starts_with(b"BENCH ") {
                let _ = out.write_all(&line);
            }
        }
        if flush_partial && !p.is_empty() {
            let _ = out.write_all(&p);
            let _ = out.write_all(b"\n");
            p.clear();
        }
        let _ = out.flush();
    }
}

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        self.echo_lines(data, false);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Boots `spec` with `kernel` and runs it to the end; an exit status other than 0 is an error.
/// With `echo`, the guest's lines go to stdout as they come.
pub fn run_guest(kernel: &Path, spec: &GuestSpec, echo: bool) -> Result<GuestResult, BenchError> {
    let mut config = RunConfig::with_defaults(kernel.to_path_buf());
    config.mem_bytes = spec.mem_bytes;
    config.vram_bytes = Some(spec.vram_bytes);
    config.sample_interval = spec.sample;
    config.memory = spec.memory;
    config.timeout = Some(GUEST_TIMEOUT);
    config.cmdline = spec.cmdline.clone();
    config.gpu_socket = spec.gpu_socket.clone();
    let capture = Capture::new(echo);
    let timeline = Arc::new(Timeline::new(Instant::now()));
    let outcome =
        crate::run_with_output(&config, timeline, Box::new(capture.clone())).map_err(|e| {
            BenchError::Vmm {
                cmdline: spec.cmdline.clone(),
                source: Box::new(e),
            }
        })?;
    capture.echo_lines(&[], true);
    let output = capture.text();
    if outcome.status() != 0 {
        return Err(BenchError::GuestFailed {
            cmdline: spec.cmdline.clone(),
            end: outcome.end.describe(),
            tail: tail(&output, TAIL_LINES),
        });
    }
    Ok(GuestResult {
        output,
        stats: outcome.stats,
    })
}

/// The last `n` lines of `text`, indented, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    if lines.is_empty() {
        return "    (no guest output)".to_owned();
    }
    lines[from..]
        .iter()
        .map(|l| format!("    {}", l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One `BENCH <kind> key=value ...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchLine {
    /// The word after `BENCH`.
    pub kind: String,
    /// The `key=value` pairs.
    pub fields: BTreeMap<String, String>,
}

impl BenchLine {
    /// Parses one line; `None` unless it starts with `BENCH ` and names a kind. Tokens without
    /// `=` after the kind are ignored.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim().strip_prefix("BENCH ")?;
        let mut words = rest.split_whitespace();
        let kind = words.next().filter(|k| !k.contains('='))?.to_owned();
        let fields = words
            .filter_map(|w| w.split_once('='))
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some(BenchLine { kind, fields })
    }

    fn raw(&self, key: &str) -> Result<&str, BenchError> {
        self.fields
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| BenchError::BadField {
                kind: self.kind.clone(),
                key: key.to_owned(),
                value: None,
            })
    }

    fn bad(&self, key: &str, value: &str) -> BenchError {
        BenchError::BadField {
            kind: self.kind.clone(),
            key: key.to_owned(),
            value: Some(value.to_owned()),
        }
    }

    /// A finite number.
    pub fn f64(&self, key: &str) -> Result<f64, BenchError> {
        let v = self.raw(key)?;
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| self.bad(key, v))
    }

    /// A whole number.
    pub fn u64(&self, key: &str) -> Result<u64, BenchError> {
        let v = self.raw(key)?;
        v.parse::<u64>().map_err(|_| self.bad(key, v))
    }
}

/// The last `BENCH <kind>` line in `output` that has `key`.
pub fn find_bench_line(output: &str, kind: &str, key: &str) -> Option<BenchLine> {
    output
        .lines()
        .rev()
        .filter_map(BenchLine::parse)
        .find(|l| l.kind == kind && l.fields.contains_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bench_lines() {
        let l =
            BenchLine::parse("BENCH migrate object_mib=16 bytes=268435456 us=1270921.2\r").unwrap();
        assert_eq!(l.kind, "migrate");
        assert_eq!(l.u64("object_mib").unwrap(), 16);
        assert_eq!(l.u64("bytes").unwrap(), 268_435_456);
        assert!((l.f64("us").unwrap() - 1_270_921.2).abs() < 1e-6);
        assert!(matches!(
            l.u64("us"),
            Err(BenchError::BadField { value: Some(_), .. })
        ));
        assert!(matches!(
            l.f64("nope"),
            Err(BenchError::BadField { value: None, .. })
        ));
        assert_eq!(BenchLine::parse("density: 64 MiB of objects"), None);
        assert_eq!(BenchLine::parse("BENCH "), None);
        assert_eq!(BenchLine::parse("BENCH a=1"), None);
        let odd = BenchLine::parse("BENCH x stray =3 k=v=w y=nan").unwrap();
        assert_eq!(odd.fields.get("k").map(String::as_str), Some("v=w"));
        assert_eq!(odd.fields.len(), 2);
        assert!(odd.f64("y").is_err());
    }

    #[test]
    fn finds_the_last_line_with_the_key() {
        let out = "hello\nBENCH density headroom_bytes=100\nBENCH density ok=1 object_bytes=200\n\
                   BENCH scale objects=5\n";
        let h = find_bench_line(out, "density", "headroom_bytes").unwrap();
        assert_eq!(h.u64("headroom_bytes").unwrap(), 100);
        let ok = find_bench_line(out, "density", "ok").unwrap();
        assert_eq!(ok.u64("object_bytes").unwrap(), 200);
        assert!(find_bench_line(out, "latency", "cmd_p50_us").is_none());
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("a\nb\nc\n", 2), "    b\n    c");
        assert_eq!(tail("", 2), "    (no guest output)");
    }

    #[test]
    fn capture_collects_everything() {
        let mut c = Capture::new(false);
        c.write_all(b"one\ntw").unwrap();
        c.write_all(b"o\n").unwrap();
        assert_eq!(c.text(), "one\ntwo\n");
    }
}
