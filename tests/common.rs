//! Shared helpers for the integration tests: they run the real `pvgpu` binary, which boots
//! the real guest image under /dev/kvm.

#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The exit statuses of a run, by name (defined once, in pvgpu-abi).
pub use pvgpu_abi::exit_status;

/// The process exit code of a run that ends with `status`, as [`Run::code`] holds it.
pub fn code(status: u8) -> Option<i32> {
    Some(i32::from(status))
}

/// What one `pvgpu` run produced.
pub struct Run {
    /// Exit status (None if killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Both streams, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The guest image; fails the test (never skips) when it or /dev/kvm is missing.
pub fn guest_image() -> PathBuf {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: these tests boot real guests and need KVM"
    );
    let img = root().join("images/out/pvgpu-guest");
    assert!(
        img.exists(),
        "{} is missing: run images/build.sh first",
        img.display()
    );
    img
}

/// Runs `pvgpu` with `args`; kills it and fails the test if it takes longer than `limit`.
pub fn pvgpu_with_limit(args: &[&str], limit: Duration) -> Run {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pvgpu"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pvgpu");
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for pvgpu") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pvgpu {args:?} hung: killed after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        code: status.code(),
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// `pvgpu run --kernel <guest> <flags> -- <guest args>`, with a 60 s guard.
pub fn boot(flags: &[&str], guest_args: &[&str]) -> Run {
    let img = guest_image();
    let img = img.to_str().expect("utf-8 path");
    let mut args = vec!["run", "--kernel", img];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(guest_args);
    pvgpu_with_limit(&args, Duration::from_secs(60))
}

/// Starts `pvgpu run --kernel <guest> <flags> -- spin` (stderr piped) and returns once the
/// guest has printed, so that what follows happens while the guest runs.
pub fn spawn_spinning(flags: &[&str]) -> std::process::Child {
    let img = guest_image();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pvgpu"))
        .args(["run", "--kernel", img.to_str().expect("utf-8 path")])
        .args(flags)
        .args(["--", "spin"])
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pvgpu");
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    let start = Instant::now();
    while !String::from_utf8_lossy(&seen).contains("spinning") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the guest never ran"
        );
        let n = out.read(&mut buf).expect("read stdout");
        assert!(n > 0, "pvgpu ended before the guest ran");
        seen.extend_from_slice(&buf[..n]);
    }
    child
}

/// (thread name, seccomp mode) of every thread of `pid` (mode "2": under a filter).
pub fn seccomp_modes(pid: u32) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let status =
            std::fs::read_to_string(t.expect("task").path().join("status")).expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        v.push((field("Name:"), field("Seccomp:")));
    }
    v
}

/// `boot` with `--stats-json` to a temporary file (named after `tag`); returns the run and the
/// parsed stats. Fails the test if the file is missing or not JSON.
pub fn stats_of(flags: &[&str], guest: &[&str], tag: &str) -> (Run, serde_json::Value) {
    let path = std::env::temp_dir().join(format!("pvgpu-{tag}-{}.json", std::process::id()));
    let mut all = vec!["--stats-json", path.to_str().expect("utf-8 path")];
    all.extend_from_slice(flags);
    let r = boot(&all, guest);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("stats file: {e}\n{}", r.dump()));
    let _ = std::fs::remove_file(&path);
    (r, serde_json::from_str(&text).expect("stats JSON"))
}

/// The number at JSON pointer `path` in `v`; fails the test if it is missing.
pub fn num(v: &serde_json::Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(|x| x.as_f64())
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}

/// Checks the stats `v` of `workload` (phase 1 = filled, phase 3 = cleaned) for
/// `object_bytes` of objects of which `cleaned_bytes` were cleaned: guest RAM fell by what was
/// cleaned, VRAM grew by the objects, and host memory then holds about one copy, not two.
pub fn assert_clean_freed_host_memory(
    v: &serde_json::Value,
    object_bytes: f64,
    cleaned_bytes: f64,
) {
    let phases = v["phases"].as_array().expect("phases");
    let at = |n: u64| {
        phases
            .iter()
            .find(|p| p["phase"].as_u64() == Some(n))
            .unwrap_or_else(|| panic!("phase {n} missing: {v}"))
    };
    let (filled, cleaned) = (at(1), at(3));
    let ram_drop = num(filled, "/guest_ram_bytes") - num(cleaned, "/guest_ram_bytes");
    assert!(
        ram_drop >= 0.99 * cleaned_bytes,
        "guest RAM fell by {ram_drop}, cleaned {cleaned_bytes}: {v}"
    );
    let vram_growth = num(cleaned, "/vram_bytes") - num(filled, "/vram_bytes");
    assert!(
        (vram_growth - object_bytes).abs() <= 0.02 * object_bytes,
        "VRAM grew by {vram_growth} for {object_bytes} of objects: {v}"
    );
    let host = num(cleaned, "/guest_ram_bytes") + num(cleaned, "/vram_bytes");
    assert!(
        host <= 1.05 * object_bytes,
        "host holds {host} bytes for {object_bytes} of objects: {v}"
    );
}
