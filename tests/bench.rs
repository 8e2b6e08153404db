//! `pvgpu bench --quick` and `pvgpu demo`, end to end: every JSON key is present and sane, and
//! the demo writes a real PNG. No timing thresholds: the benchmark is where the figures live.

mod common;

use std::time::Duration;

use common::{code, exit_status, guest_image, pvgpu_with_limit};

fn num(v: &serde_json::Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("{path} missing or not a number in {v:#}"))
}

#[test]
fn bench_quick_reports_every_figure() {
    let img = guest_image();
    let json = std::env::temp_dir().join(format!("pvgpu-bench-{}.json", std::process::id()));
    let r = pvgpu_with_limit(
        &[
            "bench",
            "--quick",
            "--kernel",
            img.to_str().expect("utf-8 path"),
            "--json",
            json.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(240),
    );
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    let _ = std::fs::remove_file(&json);
    let v: serde_json::Value = serde_json::from_str(&text).expect("bench JSON");
    assert_eq!(v["errors"], serde_json::json!([]), "{}", r.dump());
    assert_eq!(v["quick"], true);

    // Throughputs and latencies: positive.
    for p in [
        "/migrate/gib_per_s",
        "/migrate/memcpy_gib_per_s",
        "/migrate/memcpy_warm_gib_per_s",
        "/migrate/ratio",
        "/latency/notify_floor_p50_us",
        "/latency/cmd_p50_us",
        "/latency/cmd_p99_us",
        "/latency/batch32_per_cmd_us",
        "/vhost_user/cmd_p50_us",
        "/vhost_user/cmd_p99_us",
        "/vhost_user/notify_floor_p50_us",
        "/vhost_user/in_process_cmd_p50_us",
        "/vhost_user/cmd_p50_over_in_process",
        "/boot/first_output_ms/min",
        "/boot/first_output_ms/median",
        "/boot/first_output_ms/max",
    ] {
        let x = num(&v, p);
        assert!(x.is_finite() && x > 0.0, "{p} = {x}");
    }
    for size in ["1", "16", "64"] {
        for k in ["gib_per_s", "memcpy_gib_per_s", "ratio", "bytes"] {
            assert!(num(&v, &format!("/migrate/by_object_mib/{size}/{k}")) > 0.0);
        }
    }
    assert!(v["migrate"]["ratio_basis"].is_string());
    assert!(num(&v, "/latency/cmd_p99_us") >= num(&v, "/latency/cmd_p50_us"));
    let b = |k: &str| num(&v, &format!("/boot/first_output_ms/{k}"));
    assert!(b("min") <= b("median") && b("median") <= b("max"));

    // Reclaim: clean frees what it cleaned; the baseline keeps both copies.
    let cleaned = num(&v, "/reclaim/cleaned_bytes");
    assert!(cleaned > 0.0);
    assert!(num(&v, "/reclaim/guest_ram_freed_bytes") > 0.0);
    let freed_ratio = num(&v, "/reclaim/freed_ratio");
    assert!(
        (0.0..=1.5).contains(&freed_ratio),
        "freed_ratio {freed_ratio}"
    );
    let per_byte = num(&v, "/reclaim/host_bytes_per_object_byte");
    let baseline = num(&v, "/reclaim/baseline_host_bytes_per_object_byte");
    assert!(
        per_byte > 0.5 && per_byte < baseline,
        "{per_byte} vs {baseline}"
    );
    assert!(baseline > 1.5 && baseline < 3.0, "baseline {baseline}");

    // MIGRATE_CLEAN: every byte moved, faster than a warm memcpy; no 2x hump.
    assert_eq!(num(&v, "/migrate_clean/moved_fraction"), 1.0);
    for p in [
        "/migrate_clean/gib_per_s",
        "/migrate_clean/gib_per_s_4k",
        "/migrate_clean/ratio_vs_warm_memcpy",
        "/migrate_clean/ratio_vs_warm_memcpy_4k",
        "/workload/fill_gib_per_s",
        "/workload/fill_gib_per_s_4k",
    ] {
        let x = num(&v, p);
        assert!(x.is_finite() && x > 0.0, "{p} = {x}");
    }
    let peak = num(&v, "/reclaim/peak_host_bytes_per_object_byte");
    let copy_peak = num(&v, "/reclaim/baseline_peak_host_bytes_per_object_byte");
    assert!(
        peak < 1.2 && copy_peak > 1.5,
        "peak {peak}, --copy {copy_peak}"
    );

    // Scale and density.
    assert_eq!(num(&v, "/scale/objects"), 10_000.0);
    let per_object = num(&v, "/scale/host_bytes_per_object");
    assert!((0.0..1e6).contains(&per_object), "{per_object}");
    assert_eq!(v["density"]["ok"], true, "{}", r.dump());
    assert!(num(&v, "/density/object_bytes") > num(&v, "/density/headroom_bytes"));
    assert!(num(&v, "/density/peak_host_bytes") > 0.0);

    // The table names every section.
    for section in [
        "migrate",
        "migrate_clean",
        "reclaim",
        "workload",
        "latency",
        "boot",
        "scale",
        "density",
    ] {
        assert!(r.stdout.contains(section), "{section}: {}", r.dump());
    }
    assert!(r.stderr.contains("bench: "), "no progress: {}", r.dump());
}

#[test]
fn demo_writes_a_png() {
    let img = guest_image();
    let png = std::env::temp_dir().join(format!("pvgpu-demo-{}.png", std::process::id()));
    let r = pvgpu_with_limit(
        &[
            "demo",
            "--kernel",
            img.to_str().expect("utf-8 path"),
            "--out",
            png.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    // The guest's progress is forwarded, and the report shows the drop at clean.
    assert!(r.stdout.contains("workload: PASS"), "{}", r.dump());
    assert!(r.stdout.contains("3. cleaned"), "{}", r.dump());
    assert!(
        r.stdout.contains("clean: guest RAM fell by"),
        "{}",
        r.dump()
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    let _ = std::fs::remove_file(&png);
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert!(bytes.len() > 20_000, "PNG of only {} bytes", bytes.len());
}
