//! `--stats-json` and the summary line.

mod common;

use common::{boot, code, exit_status};

fn f(v: &serde_json::Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(|x| x.as_f64())
        .unwrap_or_else(|| panic!("{path} missing or not a number in {v}"))
}

#[test]
fn stats_json_has_sane_values() {
    let path = std::env::temp_dir().join(format!("pvgpu-stats-{}.json", std::process::id()));
    let r = boot(
        &["--stats-json", path.to_str().unwrap(), "--mem", "128M"],
        &["exit", "5"],
    );
    assert_eq!(r.code, code(5), "{}", r.dump());
    let text = std::fs::read_to_string(&path).expect("stats file written");
    let _ = std::fs::remove_file(&path);
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");

    assert_eq!(f(&v, "/guest/exit_code"), 5.0);
    let entry = f(&v, "/boot/entry_ms");
    assert!(entry > 0.0 && entry < 5_000.0, "entry_ms {entry}");
    // exit 5 prints nothing, so there is no first output.
    assert!(
        v.pointer("/boot/first_output_ms")
            .is_some_and(|x| x.is_null()),
        "{v}"
    );
    let ram = f(&v, "/host/guest_ram_bytes");
    assert!(
        ram > 0.0 && ram <= (128u64 << 20) as f64,
        "guest_ram_bytes {ram}"
    );
    // The guest touched its kernel image at least.
    assert!(ram >= 64.0 * 1024.0, "guest_ram_bytes {ram}");
    assert!(f(&v, "/host/rss_bytes") > 0.0);
}

#[test]
fn first_output_comes_after_entry() {
    let path = std::env::temp_dir().join(format!("pvgpu-stats-hello-{}.json", std::process::id()));
    let r = boot(&["--stats-json", path.to_str().unwrap()], &["hello"]);
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("stats file")).expect("JSON");
    let _ = std::fs::remove_file(&path);
    let entry = f(&v, "/boot/entry_ms");
    let first = f(&v, "/boot/first_output_ms");
    assert!(
        first > entry,
        "first output {first} ms before entry {entry} ms"
    );
    assert!(first < 10_000.0, "first output {first} ms");
    assert_eq!(f(&v, "/guest/exit_code"), 0.0);
}

#[test]
fn summary_line_at_exit() {
    let r = boot(&[], &["exit", "3"]);
    assert_eq!(r.code, code(3), "{}", r.dump());
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("pvgpu:") && l.contains("exit 3"));
    assert!(line.is_some(), "no summary line: {}", r.dump());
}

#[test]
fn device_section_follows_the_gpu_flag() {
    let path = std::env::temp_dir().join(format!("pvgpu-stats-gpu-{}.json", std::process::id()));
    let r = boot(
        &["--stats-json", path.to_str().unwrap(), "--no-gpu"],
        &["hello"],
    );
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("stats file")).expect("JSON");
    assert!(v["device"].is_null(), "{v}");
    assert_eq!(f(&v, "/host/vram_bytes"), 0.0);

    let r = boot(
        &["--stats-json", path.to_str().unwrap(), "--vram", "64M"],
        &["selftest"],
    );
    assert_eq!(r.code, code(exit_status::OK), "{}", r.dump());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("stats file")).expect("JSON");
    let _ = std::fs::remove_file(&path);
    assert_eq!(f(&v, "/vram_size"), (64u64 << 20) as f64);
    assert!(f(&v, "/device/commands") > 0.0, "{v}");
    assert!(f(&v, "/device/vram_peak") > 0.0, "{v}");
}
