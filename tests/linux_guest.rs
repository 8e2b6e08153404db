//! The Linux guest: a User-Mode Linux kernel with the pvgpu module (guest-driver/linux) drives
//! `pvgpu device --socket` over vhost-user. Its init (guest-driver/linux/test) fills objects,
//! migrates and cleans them, verifies them by CHECKSUM and pread, touches every byte back
//! through mmap, then runs a pressure and a hostile run. At each phase marker the test reads
//! how much of the guest's RAM file (UML's physical memory, which the backend received in
//! SET_MEM_TABLE) the host really holds, and answers on the console so the guest goes on.
//!
//! Needs no KVM. Fails (never skips) when the kernel or the module cannot be built:
//! images/build-linux.sh runs first (cached, so quick after the first build).

// Only `root` is used here; the helpers for KVM guests (and their re-exports) are not.
#[allow(unused_imports)]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::root;

const MIB: u64 = 1 << 20;
/// The whole boot, workload, pressure and hostile run.
const LIMIT: Duration = Duration::from_secs(300);

/// Kills a child process when dropped (a failing assertion must not leave it running).
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn build_linux() {
    let out = Command::new("bash")
        .arg(root().join("images/build-linux.sh"))
        .current_dir(root())
        .output()
        .expect("run images/build-linux.sh");
    assert!(
        out.status.success(),
        "images/build-linux.sh failed: the Linux guest cannot be built\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where UML creates its physical-memory file (an O_TMPFILE, or `vm_file-XXXXXX` unlinked):
/// a tmpfs, so that punching really frees it.
const UML_TMPDIR: &str = "/dev/shm";

/// Host bytes allocated to the UML physical-memory files the backend holds open (the
/// memory table's fds: regular files in [`UML_TMPDIR`]), summed over distinct files.
fn guest_ram_bytes(backend_pid: u32) -> u64 {
    let mut files = BTreeMap::new();
    let dir = PathBuf::from(format!("/proc/{backend_pid}/fd"));
    for entry in std::fs::read_dir(&dir).expect("list the backend's fds") {
        let path = entry.expect("fd entry").path();
        let Ok(target) = std::fs::read_link(&path) else {
            continue;
        };
        if !target.starts_with(UML_TMPDIR) {
            continue;
        }
        if let Ok(m) = std::fs::metadata(&path) {
            if m.is_file() {
                files.insert((m.dev(), m.ino()), m.blocks() * 512);
            }
        }
    }
    assert!(
        !files.is_empty(),
        "the backend holds no UML memory file (no SET_MEM_TABLE?)"
    );
    files.values().sum()
}

fn wait_for_socket(path: &Path, backend: &mut Child) {
    let start = Instant::now();
    while !path.exists() {
        if let Ok(Some(st)) = backend.try_wait() {
            panic!("pvgpu device exited before listening: {st}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "pvgpu device did not create {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

#[test]
fn linux_guest_cleans_frees_host_memory_and_pages_back() {
    build_linux();
    let out = root().join("images/out");
    let tmp = std::env::temp_dir().join(format!("pvgpu-linux-guest-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let socket = tmp.join("gpu.sock");

    let mut backend = Command::new(env!("CARGO_BIN_EXE_pvgpu"))
        .args(["device", "--once", "--vram", "48M", "--socket"])
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pvgpu device");
    let backend_err = drain(backend.stderr.take().expect("piped"));
    let backend_pid = backend.id();
    let mut backend = Reaper(backend);
    wait_for_socket(&socket, &mut backend.0);

    // The guest's physical memory file goes to /dev/shm (tmpfs), where punching frees it.
    let mut uml = Command::new(out.join("linux-uml"))
        .arg("mem=256M")
        .arg(format!(
            "initrd={}",
            out.join("linux-initramfs.cpio").display()
        ))
        .arg(format!("virtio_uml.device={}:16", socket.display()))
        .arg(format!("uml_dir={}", tmp.display()))
        .args([
            "PVGPU_HANDSHAKE=1",
            "PVGPU_OBJECTS=8",
            "PVGPU_MIB=32",
            "PVGPU_PRESSURE_OBJECTS=64",
            "PVGPU_PRESSURE_ROUNDS=3000",
        ])
        .env("TMPDIR", UML_TMPDIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the UML kernel");
    let mut console_in = uml.stdin.take().expect("piped");
    let console_out = uml.stdout.take().expect("piped");
    let kernel_log = drain(uml.stderr.take().expect("piped"));
    let mut uml = Reaper(uml);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(console_out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let start = Instant::now();
    let mut console = Vec::new();
    let mut ram = BTreeMap::new();
    let mut cleaned_bytes = None;
    let mut result = None;
    while result.is_none() {
        let left = LIMIT.saturating_sub(start.elapsed());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => break,
        };
        if let Some(phase) = line.strip_prefix("PVGPU-PHASE ") {
            ram.insert(phase.trim().to_owned(), guest_ram_bytes(backend_pid));
            // Go on (ignore a guest that already died: the result check reports it).
            let _ = console_in.write_all(b"go\n");
        } else if let Some(n) = line.strip_prefix("PVGPU-CLEANED-BYTES ") {
            cleaned_bytes = n.trim().parse::<u64>().ok();
        } else if let Some(r) = line.strip_prefix("PVGPU-RESULT ") {
            result = Some(r.trim().to_owned());
        }
        console.push(line);
    }
    let elapsed = start.elapsed();
    // The guest powers off after its result; give it a moment, then reap both.
    let deadline = Instant::now() + Duration::from_secs(10);
    while uml.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(uml);
    drop(backend);
    let report = format!(
        "after {elapsed:?}\n--- console ---\n{}\n--- kernel log ---\n{}\n--- backend ---\n{}\nhost guest-RAM bytes per phase: {ram:?}",
        console.join("\n"),
        kernel_log.join().unwrap_or_default(),
        backend_err.join().unwrap_or_default(),
    );
    let _ = std::fs::remove_dir_all(&tmp);

    assert_eq!(result.as_deref(), Some("ok"), "{report}");
    assert!(
        !console.iter().any(|l| l.starts_with("PVGPU-FAIL")),
        "{report}"
    );
    for run in ["workload", "pressure", "hostile"] {
        assert!(
            console
                .iter()
                .any(|l| l.starts_with(&format!("PVGPU-RUN {run}"))),
            "the {run} run did not start\n{report}"
        );
    }
    // The pressure run really ran out of VRAM (and evicted to make room) and cleaned.
    let pressure: Vec<u64> = console
        .iter()
        .find_map(|l| l.strip_prefix("PVGPU-PRESSURE "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        matches!(pressure[..], [m, o, c] if m > 0 && o > 0 && c > 0),
        "pressure counts (migrated, out of VRAM, cleaned): {pressure:?}\n{report}"
    );
    let cleaned = cleaned_bytes.unwrap_or_else(|| panic!("no cleaned-bytes line\n{report}"));
    assert_eq!(cleaned, 32 * MIB, "{report}");
    let phase = |name: &str| {
        *ram.get(name)
            .unwrap_or_else(|| panic!("no phase {name}\n{report}"))
    };
    // CLEAN really gave the host the guest pages back.
    let freed = phase("migrated").saturating_sub(phase("cleaned"));
    assert!(
        freed as f64 >= 0.99 * cleaned as f64,
        "CLEAN freed {freed} host bytes of {cleaned} cleaned\n{report}"
    );
    // Verifying by CHECKSUM and pread did not bring the cleaned pages back...
    let regrown = phase("verified").saturating_sub(phase("cleaned"));
    assert!(
        regrown < cleaned / 10,
        "verifying a cleaned object allocated {regrown} bytes\n{report}"
    );
    // ...touching them through mmap did (demand paging into fresh pages).
    let paged_back = phase("restored").saturating_sub(phase("verified"));
    assert!(
        paged_back as f64 >= 0.9 * cleaned as f64,
        "touching the cleaned objects paged back only {paged_back} bytes\n{report}"
    );
    eprintln!(
        "linux guest: CLEAN freed {freed} host bytes of {cleaned} cleaned, mmap paged back {paged_back}; pressure (migrated, out of VRAM, cleaned) {pressure:?}; {elapsed:?}"
    );
}
