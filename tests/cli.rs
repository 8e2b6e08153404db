//! The command line: clear one-line errors and non-zero exits, never a panic.

mod common;

use std::time::Duration;

use common::{code, exit_status, guest_image, pvgpu_with_limit, Run};

fn run(args: &[&str]) -> Run {
    pvgpu_with_limit(args, Duration::from_secs(30))
}

fn assert_clean_error(r: &Run, needle: &str) {
    assert_eq!(r.code, code(exit_status::VMM_ERROR), "{}", r.dump());
    assert!(!r.stderr.contains("panicked"), "{}", r.dump());
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("pvgpu: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "want one error line: {}", r.dump());
    assert!(
        lines[0].to_lowercase().contains(needle),
        "{:?} lacks {needle:?}",
        lines[0]
    );
}

#[test]
fn missing_kernel() {
    let r = run(&["run", "--kernel", "/nonexistent/guest", "--", "hello"]);
    assert_clean_error(&r, "/nonexistent/guest");
}

#[test]
fn kernel_that_is_not_an_elf() {
    let path = std::env::temp_dir().join(format!("pvgpu-not-elf-{}", std::process::id()));
    std::fs::write(&path, b"#!/bin/sh\necho this is not a kernel\n").unwrap();
    let r = run(&["run", "--kernel", path.to_str().unwrap(), "--", "hello"]);
    let _ = std::fs::remove_file(&path);
    assert_clean_error(&r, "elf");
}

#[test]
fn bad_sizes() {
    let img = guest_image();
    let img = img.to_str().unwrap();
    for bad in ["12Q", "", "-5M", "99999999999999999999G", "1M", "3K"] {
        let r = run(&["run", "--kernel", img, "--mem", bad, "--", "hello"]);
        assert!(
            [code(exit_status::VMM_ERROR), code(exit_status::VMM_USAGE)].contains(&r.code),
            "--mem {bad:?}: {}",
            r.dump()
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.dump());
        assert!(r.stderr.contains("error"), "{}", r.dump());
    }
}

#[test]
fn too_many_vcpus() {
    let img = guest_image();
    for n in ["0", "9", "1000"] {
        let r = run(&[
            "run",
            "--kernel",
            img.to_str().unwrap(),
            "--vcpus",
            n,
            "--",
            "hello",
        ]);
        assert!(
            [code(exit_status::VMM_ERROR), code(exit_status::VMM_USAGE)].contains(&r.code),
            "--vcpus {n}: {}",
            r.dump()
        );
        assert!(
            r.stderr.contains("error") && !r.stderr.contains("panicked"),
            "{}",
            r.dump()
        );
    }
}

#[test]
fn ram_larger_than_the_guest_can_have() {
    let img = guest_image();
    let r = run(&[
        "run",
        "--kernel",
        img.to_str().unwrap(),
        "--mem",
        "64G",
        "--",
        "hello",
    ]);
    assert_clean_error(&r, "mem");
}

#[test]
fn command_line_too_long_for_the_guest() {
    let img = guest_image();
    let long = "x".repeat(5000);
    let r = run(&["run", "--kernel", img.to_str().unwrap(), "--", &long]);
    assert_clean_error(&r, "command line");
}

#[test]
fn help_lists_the_run_flags() {
    let r = run(&["run", "--help"]);
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    for flag in ["--kernel", "--mem", "--vcpus", "--timeout", "--stats-json"] {
        assert!(r.stdout.contains(flag), "help lacks {flag}: {}", r.dump());
    }
}

#[test]
fn bad_vram_sizes() {
    let img = guest_image();
    for bad in ["3M", "0", "65G", "1K", "lots"] {
        let r = run(&[
            "run",
            "--kernel",
            img.to_str().unwrap(),
            "--vram",
            bad,
            "--",
            "hello",
        ]);
        assert!(
            [code(exit_status::VMM_ERROR), code(exit_status::VMM_USAGE)].contains(&r.code),
            "--vram {bad:?}: {}",
            r.dump()
        );
        assert!(
            r.stderr.contains("error") && !r.stderr.contains("panicked"),
            "{}",
            r.dump()
        );
    }
}

/// Runs `pvgpu run -- hello` in a private mount namespace after `setup` (a shell command that
/// changes what /dev/kvm is). Needs root, as CI runs.
fn run_with_mounts(setup: &str) -> Run {
    let script = format!(
        "{setup} && exec {} run -- hello",
        env!("CARGO_BIN_EXE_pvgpu")
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .current_dir(common::root())
        .output()
        .expect("run unshare (util-linux)");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: Duration::ZERO,
    }
}

#[test]
fn no_kvm_device_is_a_clear_error() {
    // An empty /dev: no /dev/kvm at all.
    assert_clean_error(&run_with_mounts("mount -t tmpfs none /dev"), "/dev/kvm");
}

#[test]
fn a_kvm_node_that_is_not_kvm_is_a_clear_error() {
    let r = run_with_mounts("mount --bind /dev/null /dev/kvm");
    assert_clean_error(&r, "does not answer as kvm");
}
