//! Seccomp: every thread of `pvgpu run` runs under its filter while the guest runs; a
//! forbidden system call ends the run with one line naming it (not a silent kill);
//! `--no-seccomp` turns the filters off. (Every other integration test runs its workload with
//! the filters on, which is how "all workloads pass with seccomp" is checked.)

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `pvgpu run <flags> -- spin` and returns once the guest prints.
fn spinning(flags: &[&str]) -> Child {
    let img = common::guest_image();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pvgpu"))
        .args(["run", "--kernel", img.to_str().unwrap(), "--timeout", "60"])
        .args(flags)
        .args(["--", "spin"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pvgpu");
    let mut out = child.stdout.take().expect("piped");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    let start = Instant::now();
    while !String::from_utf8_lossy(&seen).contains("spinning") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the guest never ran"
        );
        let n = out.read(&mut buf).expect("read stdout");
        assert!(n > 0, "pvgpu ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    child
}

/// (thread name, seccomp mode) of every thread of `pid`.
fn threads(pid: u32) -> Vec<(String, String)> {
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

fn stop(mut child: Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

#[test]
fn every_thread_is_filtered_while_the_guest_runs() {
    let child = spinning(&["--vcpus", "2"]);
    let t = threads(child.id());
    stop(child);
    let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["pvgpu", "pvgpu-gpu", "vcpu0", "vcpu1"] {
        assert!(names.contains(&want), "no {want} thread: {t:?}");
    }
    for (name, mode) in &t {
        assert_eq!(
            mode, "2",
            "thread {name} is not under a seccomp filter: {t:?}"
        );
    }
}

#[test]
fn no_seccomp_turns_the_filters_off() {
    let child = spinning(&["--no-seccomp"]);
    let t = threads(child.id());
    stop(child);
    assert!(t.iter().all(|(_, mode)| mode == "0"), "{t:?}");
}

#[test]
fn a_forbidden_system_call_ends_the_run_with_its_name() {
    let img = common::guest_image();
    for (thread, label) in [
        ("main", "the main thread"),
        ("vcpu", "the vCPU 0 thread"),
        ("device", "the GPU device thread"),
    ] {
        let r = common::pvgpu_with_limit(
            &[
                "run",
                "--kernel",
                img.to_str().unwrap(),
                "--debug-forbidden-syscall",
                thread,
                "--",
                "spin",
            ],
            Duration::from_secs(30),
        );
        assert_eq!(
            r.code,
            common::code(common::exit_status::VMM_ERROR),
            "{thread}: {}",
            r.dump()
        );
        let line = format!("pvgpu: error: {label} made system call syslog (103)");
        assert!(r.stderr.contains(&line), "{thread}: {}", r.dump());
        assert!(r.stderr.contains("seccomp"), "{}", r.dump());
    }
}
