//! Seccomp: every thread of `pvgpu run` runs under its filter while the guest runs; a
//! forbidden system call ends the run with one line naming it (not a silent kill);
//! `--no-seccomp` turns the filters off. (Every other integration test runs its workload with
//! the filters on, which is how "all workloads pass with seccomp" is checked.)

mod common;

use std::process::Child;
use std::time::Duration;

fn spinning(flags: &[&str]) -> Child {
    let mut a = vec!["--timeout", "60"];
    a.extend_from_slice(flags);
    common::spawn_spinning(&a)
}

fn stop(mut child: Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

#[test]
fn every_thread_is_filtered_while_the_guest_runs() {
    let child = spinning(&["--vcpus", "2"]);
    let t = common::seccomp_modes(child.id());
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
    let t = common::seccomp_modes(child.id());
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
