//! MIGRATE_CLEAN end to end: on anonymous memory (the default) the guest pages move into
//! VRAM, so host memory never holds two copies; the moved-from pages read as zero and objects
//! fault back; on the shared backend (memfds) the same commands copy and punch.

mod common;

use common::{code, exit_status, num, stats_of};

const OBJECT_BYTES: f64 = 128.0 * 1024.0 * 1024.0;

/// Runs `workload` on 128 MiB of objects, sampling host memory every millisecond; returns the
/// stats and the largest guest RAM + VRAM seen between the filled and the cleaned marker,
/// less guest RAM not holding objects (what was resident before the fill).
fn peak_during_migrate_and_clean(
    flags: &[&str],
    mode: &[&str],
    tag: &str,
) -> (serde_json::Value, f64) {
    let mut f = vec!["--mem", "512M", "--sample-ms", "1"];
    f.extend_from_slice(flags);
    let mut g = vec!["workload", "--objects", "32", "--mib", "128"];
    g.extend_from_slice(mode);
    let (r, v) = stats_of(&f, &g, tag);
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    assert!(r.stdout.contains("workload: PASS"), "{}", r.dump());
    let phases = v["phases"].as_array().expect("phases");
    let at = |n: u64| {
        phases
            .iter()
            .find(|p| p["phase"].as_u64() == Some(n))
            .unwrap_or_else(|| panic!("phase {n} missing: {v}"))
    };
    let (t0, t1) = (num(at(1), "/t_ms"), num(at(3), "/t_ms"));
    let host = |s: &serde_json::Value| num(s, "/guest_ram_bytes") + num(s, "/vram_bytes");
    let base = host(at(1)) - OBJECT_BYTES;
    let samples = v["samples"].as_array().expect("samples");
    let peak = samples
        .iter()
        .filter(|s| (t0..=t1).contains(&num(s, "/t_ms")))
        .map(host)
        .chain([host(at(1)), host(at(2)), host(at(3))])
        .fold(0.0, f64::max);
    (v, peak - base)
}

#[test]
fn migrate_clean_moves_pages_and_never_holds_two_copies() {
    let (v, peak) = peak_during_migrate_and_clean(&[], &[], "fused");
    // Every byte moved: into VRAM by MIGRATE_CLEAN, back by the faults (EVICT).
    assert_eq!(num(&v, "/device/bytes_moved"), 2.0 * OBJECT_BYTES);
    assert_eq!(num(&v, "/device/bytes_move_copied"), 0.0);
    assert_eq!(num(&v, "/device/by_command/migrate_clean/count"), 32.0);
    assert!(
        peak <= 1.05 * OBJECT_BYTES,
        "host held {peak} bytes for {OBJECT_BYTES} of objects during MIGRATE_CLEAN"
    );
    // The copying path, measured the same way, holds both copies in between.
    let (v, peak) = peak_during_migrate_and_clean(&[], &["--copy"], "copy");
    // Only the faults back (EVICT into fresh pages) moved.
    assert_eq!(num(&v, "/device/bytes_moved"), OBJECT_BYTES);
    assert!(
        peak >= 1.9 * OBJECT_BYTES,
        "the copy path peaked at only {peak} bytes: the measurement misses the hump"
    );
}

#[test]
fn on_the_shared_backend_migrate_clean_copies_and_punches() {
    let (v, peak) = peak_during_migrate_and_clean(&["--memory", "shared"], &[], "shared");
    assert_eq!(num(&v, "/device/bytes_moved"), 0.0, "{v}");
    assert_eq!(
        num(&v, "/device/bytes_move_copied"),
        2.0 * OBJECT_BYTES,
        "{v}"
    );
    assert!(num(&v, "/device/bytes_cleaned") >= OBJECT_BYTES, "{v}");
    // Copy, then punch: one object's worth of two copies at a time at most.
    assert!(peak <= 2.05 * OBJECT_BYTES, "{peak}");
}

#[test]
fn moved_from_pages_read_zero_and_objects_fault_back() {
    for flags in [&[][..], &["--no-thp"][..], &["--memory", "shared"][..]] {
        let (r, v) = stats_of(flags, &["zerocopy"], "zero");
        assert_eq!(r.code, code(exit_status::OK), "{flags:?}: {}", r.dump());
        for line in [
            "moved-from pages read as zero",
            "EVICT into fresh pages brought back every byte",
            "faulted back intact",
            "zerocopy: PASS",
        ] {
            assert!(r.stdout.contains(line), "{flags:?}: {line}\n{}", r.dump());
        }
        let moved = num(&v, "/device/bytes_moved");
        let copied = num(&v, "/device/bytes_move_copied");
        if flags.contains(&"shared") {
            assert_eq!(moved, 0.0);
            assert!(copied > 0.0);
        } else {
            assert!(moved > 0.0 && copied == 0.0, "{flags:?}: {moved} {copied}");
        }
    }
}

#[test]
fn refused_pages_are_copied_and_every_byte_still_verifies() {
    // The hidden test hook: the device refuses every third page it would move.
    for guest in [
        &["zerocopy"][..],
        &["workload", "--objects", "16", "--mib", "64"][..],
    ] {
        let (r, v) = stats_of(
            &["--mem", "512M", "--test-refuse-every", "3"],
            guest,
            "refuse",
        );
        assert_eq!(r.code, code(exit_status::OK), "{guest:?}: {}", r.dump());
        assert!(r.stdout.contains("PASS"), "{guest:?}: {}", r.dump());
        let moved = num(&v, "/device/bytes_moved");
        let copied = num(&v, "/device/bytes_move_copied");
        assert!(
            moved > 0.0 && copied > 0.0,
            "{guest:?}: moved {moved}, copied {copied}"
        );
        // About one page in three was copied instead.
        let share = copied / (moved + copied);
        assert!(
            (0.2..0.5).contains(&share),
            "{guest:?}: copied share {share}"
        );
    }
}

#[test]
fn a_driver_waiting_for_a_long_command_sleeps_in_the_vmm() {
    // A copying MIGRATE of 128 MiB takes milliseconds. The driver sleeps on the used-wait
    // port for it rather than spinning in guest mode (where its vCPU would slow every page
    // the host moves), and the VMM counts the waits that blocked.
    let (r, v) = stats_of(
        &["--mem", "512M"],
        &["bench-migrate", "--mib", "128", "--object-mib", "64"],
        "used-wait",
    );
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    assert!(r.stdout.contains("BENCH migrate "), "{}", r.dump());
    assert!(num(&v, "/device/used_waits") >= 1.0, "{v}");
}
