//! `vhost_user`: the same command round trip as `latency`, with the device model in a
//! `pvgpu device` backend process (the split shape), from the same `pvgpu bench` run.
//!
//! The backend is this very binary, started as `pvgpu device --socket TMP --once`; the guest
//! runs `bench-latency` through `--gpu-socket`. Its figures sit beside the in-process round trip
//! and the notify floor of the `latency` section.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::guest::{run_guest, GuestSpec};
use super::report::VhostUserReport;
use super::BenchError;

/// How long the backend may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The backend process; killed when dropped.
struct BackendProcess {
    child: Child,
    socket: PathBuf,
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn start_backend(vram_bytes: u64) -> Result<BackendProcess, BenchError> {
    let exe = std::env::current_exe().map_err(BenchError::Backend)?;
    let socket =
        std::env::temp_dir().join(format!("pvgpu-bench-vhost-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let child = Command::new(exe)
        .arg("device")
        .arg("--socket")
        .arg(&socket)
        .arg("--vram")
        .arg(format!("{}M", vram_bytes >> 20))
        .arg("--once")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(BenchError::Backend)?;
    let mut b = BackendProcess { child, socket };
    let until = Instant::now() + LISTEN_TIMEOUT;
    while !b.socket.exists() {
        if let Ok(Some(st)) = b.child.try_wait() {
            return Err(BenchError::Backend(std::io::Error::other(format!(
                "`pvgpu device` exited early ({st})"
            ))));
        }
        if Instant::now() > until {
            return Err(BenchError::Backend(std::io::Error::other(
                "`pvgpu device` did not listen in time",
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(b)
}

/// Runs `bench-latency --iters iters` through a fresh backend. `in_process_p50_us` is the
/// `latency` section's NOP p50, if it was measured.
pub fn measure(
    kernel: &std::path::Path,
    iters: u64,
    in_process_p50_us: Option<f64>,
) -> Result<VhostUserReport, BenchError> {
    let mut spec = GuestSpec::new(
        format!("bench-latency --iters {iters}"),
        pvgpu_abi::layout::RAM_DEFAULT,
    );
    let backend = start_backend(spec.vram_bytes)?;
    spec.gpu_socket = Some(backend.socket.clone());
    // The backend maps guest RAM: it must be shared memory.
    spec.memory = pvgpu_device::MemoryBackend::Shared;
    let g = run_guest(kernel, &spec, false)?;
    drop(backend);
    let l = g.bench_line("latency", "cmd_p50_us")?;
    let cmd_p50_us = l.f64("cmd_p50_us")?;
    let floor = l.f64("notify_floor_p50_us")?;
    Ok(VhostUserReport {
        cmd_p50_us,
        cmd_p99_us: l.f64("cmd_p99_us")?,
        batch32_per_cmd_us: l.f64("batch32_per_cmd_us")?,
        notify_floor_p50_us: floor,
        in_process_cmd_p50_us: in_process_p50_us,
        cmd_p50_over_in_process: in_process_p50_us
            .and_then(|base| crate::tools::measure::ratio(cmd_p50_us, base)),
        iters: l.u64("iters")?,
    })
}
