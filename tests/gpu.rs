//! The GPU device end to end: the guest driver, pageable objects, and host memory that really
//! goes down when objects are cleaned.

mod common;

use common::{boot, code, exit_status, num, stats_of};

#[test]
fn selftest_runs_every_device_check() {
    let (r, v) = stats_of(&[], &["selftest"], "selftest");
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    assert!(r.stdout.contains("selftest: PASS"), "{}", r.dump());
    assert!(!r.stdout.contains("device checks skipped"), "{}", r.dump());
    // The device really ran the commands: every kind, and the deliberate bad ones failed.
    for cmd in [
        "create",
        "attach_backing",
        "migrate",
        "clean",
        "evict",
        "fill",
        "copy",
        "checksum",
        "destroy",
        "stats",
    ] {
        assert!(
            num(&v, &format!("/device/by_command/{cmd}/count")) >= 1.0,
            "{cmd} never ran: {v}"
        );
    }
    assert!(
        num(&v, "/device/errors") >= 5.0,
        "the invalid transitions were not refused: {v}"
    );
    assert!(num(&v, "/device/bytes_cleaned") >= 65536.0);
}

#[test]
fn selftest_on_two_vcpus_shares_the_device() {
    let r = boot(&["--vcpus", "2"], &["selftest"]);
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    assert!(
        r.stdout.contains("selftest: 2 of 2 vCPUs passed"),
        "{}",
        r.dump()
    );
}

#[test]
fn clean_frees_host_memory() {
    let (r, v) = stats_of(
        &["--mem", "768M"],
        &["workload", "--objects", "64", "--mib", "256"],
        "workload",
    );
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    assert!(r.stdout.contains("workload: PASS"), "{}", r.dump());
    let object_bytes = 256.0 * 1024.0 * 1024.0;
    let cleaned_bytes = num(&v, "/device/bytes_cleaned");
    assert!(
        cleaned_bytes >= object_bytes,
        "cleaned only {cleaned_bytes}"
    );
    common::assert_clean_freed_host_memory(&v, object_bytes, cleaned_bytes);
}

#[test]
fn pressure_evicts_lru_and_verifies_on_two_vcpus() {
    let r = boot(
        &["--vcpus", "2", "--mem", "512M", "--vram", "64M"],
        &["pressure"],
    );
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    assert!(r.stdout.contains("pressure: PASS"), "{}", r.dump());
    let lru: u64 = r
        .stdout
        .lines()
        .find_map(|l| {
            l.split(", ")
                .find_map(|p| p.strip_suffix(" LRU evictions")?.parse().ok())
        })
        .unwrap_or(0);
    assert!(lru > 0, "no LRU eviction: {}", r.dump());
}

#[test]
fn concurrent_tasks_keep_to_their_own_objects() {
    let r = boot(&["--vcpus", "2"], &["concurrent"]);
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    assert!(r.stdout.contains("[concurrent cpu 0] PASS"), "{}", r.dump());
    assert!(r.stdout.contains("[concurrent cpu 1] PASS"), "{}", r.dump());
    assert!(
        r.stdout.contains("concurrent: 2 of 2 tasks passed"),
        "{}",
        r.dump()
    );
}

#[test]
fn without_the_gpu_object_workloads_fail_cleanly() {
    let r = boot(&["--no-gpu"], &["workload"]);
    assert_eq!(r.code, code(exit_status::FAILED), "{}", r.dump());
    assert!(r.stdout.contains("needs the GPU device"), "{}", r.dump());
    let r = boot(&["--no-gpu"], &["selftest"]);
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    assert!(r.stdout.contains("device checks skipped"), "{}", r.dump());
}

/// `hostile`: malformed requests and descriptor chains through the control queue, each
/// refused; then the driver restarts and the selftest passes in the same boot.
fn check_hostile(r: &common::Run, vcpus: u32) {
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    let out = &r.stdout;
    let pass = out
        .find("hostile: PASS")
        .unwrap_or_else(|| panic!("no PASS\n{}", r.dump()));
    assert!(!out.contains("hostile: FAIL"), "{}", r.dump());
    // The selftest ran after the attack, on every vCPU, and passed.
    let tail = &out[pass..];
    assert!(
        tail.contains(&format!("selftest: {vcpus} of {vcpus} vCPUs passed")),
        "{}",
        r.dump()
    );
    assert!(tail.contains("selftest: PASS"), "{}", r.dump());
    // The VMM stayed alive and sane: no panic, no failure report.
    for bad in ["panic", "rip="] {
        assert!(!r.stderr.contains(bad), "VMM said {bad:?}\n{}", r.dump());
    }
}

#[test]
fn hostile_requests_are_refused_and_the_device_still_works() {
    let (r, v) = stats_of(&[], &["hostile"], "hostile");
    check_hostile(&r, 1);
    // The device refused well over a hundred requests, and counted them.
    assert!(num(&v, "/device/errors") >= 100.0, "{v}");
}

#[test]
fn hostile_on_two_vcpus() {
    let r = boot(&["--vcpus", "2"], &["hostile"]);
    check_hostile(&r, 2);
}

#[test]
fn random_object_operations_match_a_shadow_copy() {
    // Small VRAM, so migrations evict least recently used objects as they go.
    let mut lru_total = 0u64;
    for seed in ["1", "2", "3"] {
        let r = boot(
            &["--vram", "2M"],
            &["objfuzz", "--ops", "3000", "--seed", seed],
        );
        assert_eq!(r.code, code(exit_status::OK), "seed {seed}: {}", r.dump());
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with("objfuzz: PASS"))
            .unwrap_or_else(|| panic!("seed {seed}: {}", r.dump()));
        lru_total += line
            .split(", ")
            .find_map(|p| p.strip_suffix(" LRU evictions")?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    assert!(lru_total > 0, "VRAM never filled up");
}

/// A guest that posts a queue's worth of FILLs, each over an object as large as VRAM, with one
/// notify (legal, just a lot of work: minutes of it): `--timeout` still ends the run on time,
/// with the summary line and the stats JSON, device counters included. The device works in
/// bounded slices and looks at its stop flag between them, the vCPUs get the device between
/// slices, and the final counters are read with a deadline.
#[test]
fn timeout_holds_against_a_busy_device() {
    let img = common::guest_image();
    let path = std::env::temp_dir().join(format!("pvgpu-busy-{}.json", std::process::id()));
    // 128 FILLs of 1 GiB: over 6 s of work even at 20 GiB/s (the driver no longer spins while
    // it waits, so the device thread has a core to itself: about 10 GiB/s here).
    let timeout = 6;
    let args = [
        "run",
        "--kernel",
        img.to_str().unwrap(),
        "--mem",
        "1088M",
        "--vram",
        "1G",
        "--timeout",
        "6",
        "--stats-json",
        path.to_str().unwrap(),
        "--",
        "busy-device",
    ];
    let r = common::pvgpu_with_limit(&args, std::time::Duration::from_secs(60));
    assert_eq!(
        r.code,
        common::code(common::exit_status::TIMEOUT),
        "{}",
        r.dump()
    );
    assert!(
        r.stdout.contains("FILLs of 1024 MiB queued"),
        "the device was never made busy (setup too slow?)\n{}",
        r.dump()
    );
    assert!(!r.stdout.contains("FILLs done"), "{}", r.dump());
    let limit = std::time::Duration::from_millis(timeout * 1000 + 1500);
    assert!(
        r.elapsed < limit,
        "--timeout {timeout} took {:?}\n{}",
        r.elapsed,
        r.dump()
    );
    assert!(
        r.stderr
            .contains(&format!("guest timed out after {timeout} s")),
        "{}",
        r.dump()
    );
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("stats: {e}\n{}", r.dump()));
    let _ = std::fs::remove_file(&path);
    let v: serde_json::Value = serde_json::from_str(&text).expect("stats JSON");
    assert_eq!(
        v.pointer("/guest/exit_reason").and_then(|x| x.as_str()),
        Some("timeout")
    );
    assert!(num(&v, "/device/by_command/migrate/count") >= 1.0, "{v}");
}

/// The defaults (`workload` alone: 256 MiB of objects, in the default 256 MiB guest) do not
/// fit in guest memory: reclaim migrates and cleans objects during the fill, and later,
/// under `--no-clean`, has to clean objects already in VRAM to fault the others back. Every
/// mode still verifies every byte.
#[test]
fn workload_defaults_run_under_memory_pressure() {
    for mode in [&[][..], &["--copy"][..], &["--no-clean"][..]] {
        let mut guest = vec!["workload"];
        guest.extend_from_slice(mode);
        let r = boot(&[], &guest);
        assert_eq!(r.code, code(exit_status::OK), "{mode:?}: {}", r.dump());
        assert!(r.stdout.contains("workload: PASS"), "{}", r.dump());
        assert!(
            r.stdout
                .contains("already migrated and cleaned by memory-pressure reclaim"),
            "the defaults no longer reach memory pressure: {}",
            r.dump()
        );
    }
}
