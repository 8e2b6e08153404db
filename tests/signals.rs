//! SIGINT, SIGTERM and SIGHUP on `pvgpu run`: the vCPUs stop, the summary line and the stats
//! JSON (exit reason `signal`) are written, and the exit status is 128 + the signal.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

/// Boots `spin` with a stats file, sends `sig` once the guest runs, and checks the ending.
fn stop_with(sig: i32, status: i32, name: &str) {
    let path = std::env::temp_dir().join(format!("pvgpu-sig-{sig}-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut child =
        common::spawn_spinning(&["--timeout", "60", "--stats-json", path.to_str().unwrap()]);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let sent = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st.code();
        }
        if sent.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("pvgpu did not stop within 10 s of {name}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut err = String::new();
    let _ = child.stderr.take().expect("piped").read_to_string(&mut err);
    assert_eq!(code, Some(status), "{name}: {err}");
    assert!(
        err.contains(&format!("stopped by {name} (status {status})")),
        "no summary line: {err}"
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("stats: {e}\n{err}"));
    let _ = std::fs::remove_file(&path);
    let v: serde_json::Value = serde_json::from_str(&text).expect("stats JSON");
    assert_eq!(v["guest"]["exit_reason"], "signal", "{v}");
    assert_eq!(v["guest"]["exit_code"], status, "{v}");
    assert!(v.get("device").is_some_and(|d| !d.is_null()), "{v}");
}

/// 128 + the signal, and the numbers a shell shows.
fn status_of(sig: i32, shell: i32) -> i32 {
    let s = i32::from(common::exit_status::stopped_by(sig as u8));
    assert_eq!(s, shell);
    s
}

#[test]
fn sigint_stops_the_run_with_summary_and_stats() {
    stop_with(libc::SIGINT, status_of(libc::SIGINT, 130), "SIGINT");
}

#[test]
fn sigterm_stops_the_run_with_summary_and_stats() {
    stop_with(libc::SIGTERM, status_of(libc::SIGTERM, 143), "SIGTERM");
}

#[test]
fn sighup_stops_the_run_with_summary_and_stats() {
    stop_with(libc::SIGHUP, status_of(libc::SIGHUP, 129), "SIGHUP");
}
