//! The split shape: `pvgpu device --socket` (the device model as a vhost-user backend, in its
//! own process) and `pvgpu run --gpu-socket` (our VMM as its frontend). Every guest workload
//! through it, host memory after CLEAN, both sides dying, malformed vhost-user messages.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{boot, code, exit_status, guest_image, root};
use pvgpu::vhost_backend::raw_client;
use pvgpu_abi::layout::phase;

/// A `pvgpu device` process; killed when dropped.
struct Backend {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Backend {
    fn start(tag: &str, extra: &[&str]) -> Backend {
        let dir = std::env::temp_dir();
        let socket = dir.join(format!("pvgpu-vu-{tag}-{}.sock", std::process::id()));
        let log = dir.join(format!("pvgpu-vu-{tag}-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let err = std::fs::File::create(&log).expect("backend log");
        let mut args = vec!["device", "--socket", socket.to_str().unwrap()];
        args.extend_from_slice(extra);
        let child = Command::new(env!("CARGO_BIN_EXE_pvgpu"))
            .args(&args)
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn pvgpu device");
        let b = Backend { child, socket, log };
        b.wait_for(|l| l.contains("listening on"), Duration::from_secs(10));
        b
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&self, what: impl Fn(&str) -> bool, limit: Duration) {
        let until = Instant::now() + limit;
        while !what(&self.log()) {
            assert!(
                Instant::now() < until,
                "backend log never matched:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Host bytes of the backend's VRAM memfd, found through /proc.
    fn vram_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let dir = format!("/proc/{}/fd", self.pid());
        for e in std::fs::read_dir(&dir).expect("backend fds").flatten() {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            if target.to_string_lossy().contains("pvgpu-vram") {
                return std::fs::metadata(e.path()).expect("stat VRAM").blocks() * 512;
            }
        }
        panic!("the backend has no VRAM memfd");
    }

    /// Waits for the backend to exit; its status code.
    fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let until = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait backend") {
                return st.code();
            }
            assert!(
                Instant::now() < until,
                "backend did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("wait backend").is_none()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.log);
    }
}

fn split(b: &Backend, flags: &[&str], guest: &[&str]) -> common::Run {
    let mut all = vec!["--gpu-socket", b.socket.to_str().unwrap()];
    all.extend_from_slice(flags);
    boot(&all, guest)
}

fn passes(tag: &str, backend_flags: &[&str], flags: &[&str], guest: &[&str], pass: &str) {
    let mut b = Backend::start(tag, backend_flags);
    let r = split(&b, flags, guest);
    assert_eq!(
        r.code,
        code(exit_status::OK),
        "{}\n--- backend ---\n{}",
        r.dump(),
        b.log()
    );
    assert!(r.stdout.contains(pass), "{}", r.dump());
    // The device really ran in the backend: it counted the commands.
    b.wait_for(
        |l| l.contains("objects and VRAM freed"),
        Duration::from_secs(10),
    );
    let served: u64 = b
        .log()
        .lines()
        .find_map(|l| {
            l.split(" commands served")
                .next()?
                .rsplit('(')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(served > 0, "backend served no commands:\n{}", b.log());
    assert_eq!(b.exit_code(Duration::from_secs(10)), Some(0), "{}", b.log());
}

#[test]
fn split_selftest() {
    passes(
        "selftest",
        &["--once"],
        &[],
        &["selftest"],
        "selftest: PASS",
    );
}

#[test]
fn split_selftest_two_vcpus() {
    passes(
        "selftest2",
        &["--once"],
        &["--vcpus", "2"],
        &["selftest"],
        "selftest: 2 of 2 vCPUs passed",
    );
}

#[test]
fn split_pressure() {
    passes(
        "pressure",
        &["--once", "--vram", "64M"],
        &["--mem", "512M"],
        &["pressure"],
        "pressure: PASS",
    );
}

#[test]
fn split_concurrent() {
    passes(
        "concurrent",
        &["--once"],
        &["--vcpus", "2"],
        &["concurrent"],
        "concurrent: 2 of 2 tasks passed",
    );
}

#[test]
fn split_hostile() {
    passes("hostile", &["--once"], &[], &["hostile"], "selftest: PASS");
}

#[test]
fn split_objfuzz() {
    passes(
        "objfuzz",
        &["--once", "--vram", "8M"],
        &[],
        &["objfuzz", "--ops", "400", "--seed", "7"],
        "objfuzz: PASS",
    );
}

#[test]
fn split_display_with_the_backends_mode_and_clean() {
    // The mode is the backend's (`pvgpu device --display`): the stock driver and the EDID see
    // it through the split.
    let b = Backend::start("display", &["--once", "--display", "640x480"]);
    let path = std::env::temp_dir().join(format!("pvgpu-vu-disp-{}.json", std::process::id()));
    let r = split(&b, &["--stats-json", path.to_str().unwrap()], &["display"]);
    assert_eq!(r.code, code(exit_status::OK), "{}\n{}", r.dump(), b.log());
    assert!(r.stdout.contains("display: PASS"), "{}", r.dump());
    assert!(
        r.stdout
            .contains("VirtIOGpu: 640x480, EDID preferred mode 640x480"),
        "{}",
        r.dump()
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("stats")).expect("json");
    let _ = std::fs::remove_file(&path);
    let at = |n: u32| {
        v["phases"]
            .as_array()
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p["phase"].as_u64() == Some(u64::from(n)))
            })
            .and_then(|p| p["guest_ram_bytes"].as_u64())
            .unwrap_or_else(|| panic!("phase {n} missing: {v}"))
    };
    // CLEAN of the framebuffer (in the backend) freed its pages in our guest-RAM memfd.
    let freed = at(phase::FB_DRAWN).saturating_sub(at(phase::FB_CLEANED));
    let fb = 640 * 480 * 4;
    assert!(
        freed as f64 >= 0.99 * fb as f64,
        "freed {freed} of {fb}: {v}"
    );
}

#[test]
fn split_workload_clean_frees_host_memory() {
    let b = Backend::start("workload", &["--once"]);
    let path = std::env::temp_dir().join(format!("pvgpu-vu-wl-{}.json", std::process::id()));
    let r = split(
        &b,
        &["--mem", "768M", "--stats-json", path.to_str().unwrap()],
        &["workload", "--objects", "64", "--mib", "256"],
    );
    assert_eq!(r.code, code(exit_status::OK), "{}\n{}", r.dump(), b.log());
    assert!(r.stdout.contains("workload: PASS"), "{}", r.dump());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("stats")).expect("json");
    let _ = std::fs::remove_file(&path);
    // The backend punched our guest-RAM memfd (all 256 MiB were cleaned: the guest checks
    // each CLEAN's response), and the VRAM figure is the backend's memfd (via SHMEM_MAP).
    let object_bytes = 256.0 * 1024.0 * 1024.0;
    common::assert_clean_freed_host_memory(&v, object_bytes, object_bytes);
}

/// Starts a frontend whose guest keeps objects in VRAM, waits until the backend holds VRAM.
fn frontend_with_vram(b: &Backend) -> Child {
    let img = guest_image();
    let child = Command::new(env!("CARGO_BIN_EXE_pvgpu"))
        .args([
            "run",
            "--kernel",
            img.to_str().unwrap(),
            "--gpu-socket",
            b.socket.to_str().unwrap(),
            "--mem",
            "512M",
            "--",
            "workload",
            "--objects",
            "32",
            "--mib",
            "192",
        ])
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn frontend");
    let until = Instant::now() + Duration::from_secs(30);
    while b.vram_bytes() < 16 << 20 {
        assert!(
            Instant::now() < until,
            "the backend never held VRAM:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

#[test]
fn frontend_killed_backend_frees_everything_and_serves_the_next() {
    let mut b = Backend::start("fkill", &[]);
    let mut f = frontend_with_vram(&b);
    f.kill().expect("kill -9 the frontend");
    let _ = f.wait();
    b.wait_for(
        |l| l.contains("objects and VRAM freed"),
        Duration::from_secs(10),
    );
    assert_eq!(
        b.vram_bytes(),
        0,
        "VRAM still held after the frontend died:\n{}",
        b.log()
    );
    assert!(b.log().contains(", 0 objects)"), "{}", b.log());
    assert!(b.alive(), "backend exited:\n{}", b.log());
    // A new frontend gets a fresh device.
    let r = split(&b, &[], &["selftest"]);
    assert_eq!(r.code, code(exit_status::OK), "{}\n{}", r.dump(), b.log());
    assert!(r.stdout.contains("selftest: PASS"), "{}", r.dump());
}

#[test]
fn frontend_killed_backend_once_exits_with_a_message() {
    let mut b = Backend::start("fkill-once", &["--once"]);
    let mut f = frontend_with_vram(&b);
    f.kill().expect("kill -9 the frontend");
    let _ = f.wait();
    assert_eq!(b.exit_code(Duration::from_secs(10)), Some(0), "{}", b.log());
    let log = b.log();
    assert!(
        log.contains("objects and VRAM freed") && log.contains("VRAM now 0 bytes"),
        "{log}"
    );
    assert!(log.contains("--once: exiting"), "{log}");
}

#[test]
fn backend_killed_run_ends_with_one_error_and_stats() {
    let mut b = Backend::start("bkill", &[]);
    let path = std::env::temp_dir().join(format!("pvgpu-vu-bk-{}.json", std::process::id()));
    let socket = b.socket.to_str().unwrap().to_owned();
    let stats = path.to_str().unwrap().to_owned();
    let t = std::thread::spawn(move || {
        boot(
            &[
                "--gpu-socket",
                &socket,
                "--stats-json",
                &stats,
                "--mem",
                "512M",
            ],
            &["workload", "--objects", "32", "--mib", "192"],
        )
    });
    let until = Instant::now() + Duration::from_secs(30);
    while b.vram_bytes() < 16 << 20 {
        assert!(
            Instant::now() < until,
            "the backend never held VRAM:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = Instant::now();
    b.child.kill().expect("kill -9 the backend");
    let _ = b.child.wait();
    let r = t.join().expect("frontend thread");
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "took {:?}",
        killed.elapsed()
    );
    assert_eq!(r.code, code(exit_status::VMM_ERROR), "{}", r.dump());
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("pvgpu: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", r.dump());
    assert!(
        errors[0].contains("GPU backend") && errors[0].contains("went away"),
        "{}",
        r.dump()
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("stats written"))
            .expect("json");
    let _ = std::fs::remove_file(&path);
    assert_eq!(v["guest"]["exit_reason"], "vmm-error", "{v}");
}

// ---- malformed vhost-user messages from a raw client ----

const NEED_REPLY: u32 = raw_client::FLAG_NEED_REPLY;
const SET_OWNER: u32 = 3;
const GET_FEATURES: u32 = 1;
const SET_FEATURES: u32 = 2;
const SET_MEM_TABLE: u32 = 5;
const SET_VRING_NUM: u32 = 8;
const SET_VRING_ADDR: u32 = 9;
const SET_PROTOCOL_FEATURES: u32 = 16;
const GET_CONFIG: u32 = 24;
const PROTOCOL_FEATURES_BIT: u64 = 1 << 30;
const F_REPLY_ACK: u64 = 1 << 3;
const F_CONFIG: u64 = 1 << 9;

fn msg(req: u32, flags: u32, body: &[u8]) -> Vec<u8> {
    raw_client::message(req, raw_client::FLAG_VERSION | flags, body)
}

fn connect(b: &Backend) -> UnixStream {
    let s = UnixStream::connect(&b.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn send_with_fds(s: &UnixStream, m: &[u8], fds: &[i32]) {
    let n = raw_client::send_with_fds(s, m, fds).expect("sendmsg");
    assert_eq!(n, m.len(), "sendmsg");
}

/// Reads one reply; returns its request code and body.
fn reply(s: &mut UnixStream) -> Option<(u32, Vec<u8>)> {
    let mut h = [0u8; 12];
    s.read_exact(&mut h).ok()?;
    let req = u32::from_le_bytes(h[0..4].try_into().unwrap());
    let size = u32::from_le_bytes(h[8..12].try_into().unwrap()) as usize;
    let mut body = vec![0u8; size];
    s.read_exact(&mut body).ok()?;
    Some((req, body))
}

fn ack(s: &mut UnixStream) -> u64 {
    let (_, body) = reply(s).expect("an ack");
    u64::from_le_bytes(body[..8].try_into().unwrap())
}

/// SET_OWNER, features with PROTOCOL_FEATURES, protocol features REPLY_ACK | CONFIG.
fn negotiated(b: &Backend) -> UnixStream {
    let mut s = connect(b);
    s.write_all(&msg(SET_OWNER, 0, &[])).unwrap();
    s.write_all(&msg(GET_FEATURES, 0, &[])).unwrap();
    let (_, f) = reply(&mut s).expect("features");
    let f = u64::from_le_bytes(f[..8].try_into().unwrap());
    assert_ne!(f & PROTOCOL_FEATURES_BIT, 0);
    s.write_all(&msg(SET_FEATURES, 0, &f.to_le_bytes()))
        .unwrap();
    s.write_all(&msg(
        SET_PROTOCOL_FEATURES,
        0,
        &(F_REPLY_ACK | F_CONFIG).to_le_bytes(),
    ))
    .unwrap();
    s
}

fn region(gpa: u64, size: u64, offset: u64) -> Vec<u8> {
    let mut r = Vec::new();
    for v in [gpa, size, 0x7f00_0000_0000u64 + gpa % (1 << 40), offset] {
        r.extend_from_slice(&v.to_le_bytes());
    }
    r
}

fn mem_table(regions: &[Vec<u8>]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(regions.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for r in regions {
        b.extend_from_slice(r);
    }
    b
}

#[test]
fn malformed_messages_get_errors_and_the_backend_survives() {
    use std::os::unix::io::AsRawFd;
    let mut b = Backend::start("malformed", &[]);
    let memfd = pvgpu_device::memfd::MemFd::new("t", 16 << 20).unwrap();
    let fd = memfd.file().as_raw_fd();

    // Each refused request gets an error ack (REPLY_ACK), after which the backend ends that
    // connection (vhost-user-backend's behaviour) and waits for the next frontend.
    let refused = |what: &str, m: Vec<u8>, fds: &[i32]| {
        let mut s = negotiated(&b);
        send_with_fds(&s, &m, fds);
        let v = ack(&mut s);
        assert_ne!(v, 0, "{what} accepted");
    };
    // Queue index out of range, and a queue size of zero.
    refused(
        "SET_VRING_NUM on queue 99",
        msg(SET_VRING_NUM, NEED_REPLY, &[99, 0, 0, 0, 8, 0, 0, 0]),
        &[],
    );
    refused(
        "a zero-sized queue",
        msg(SET_VRING_NUM, NEED_REPLY, &[0; 8]),
        &[],
    );
    // Ring addresses the frontend never mapped.
    let mut addr = vec![0u8; 40];
    addr[8..16].copy_from_slice(&0xdead_0000u64.to_le_bytes());
    refused(
        "unmapped ring addresses",
        msg(SET_VRING_ADDR, NEED_REPLY, &addr),
        &[],
    );
    let mut addr = vec![0u8; 40];
    addr[0..4].copy_from_slice(&7u32.to_le_bytes());
    refused(
        "SET_VRING_ADDR on queue 7",
        msg(SET_VRING_ADDR, NEED_REPLY, &addr),
        &[],
    );
    // Overlapping regions.
    let t = mem_table(&[region(0, 8 << 20, 0), region(4 << 20, 8 << 20, 0)]);
    refused(
        "overlapping regions",
        msg(SET_MEM_TABLE, NEED_REPLY, &t),
        &[fd, fd],
    );
    // A region that wraps the address space.
    let t = mem_table(&[region(u64::MAX - 4095, 8192, 0)]);
    refused(
        "a wrapping region",
        msg(SET_MEM_TABLE, NEED_REPLY, &t),
        &[fd],
    );
    // A region in the VRAM window (not RAM for the device).
    let t = mem_table(&[region(pvgpu_abi::layout::VRAM_BASE, 8 << 20, 0)]);
    refused(
        "a region in the VRAM window",
        msg(SET_MEM_TABLE, NEED_REPLY, &t),
        &[fd],
    );
    // A region that runs past the end of its file (16 MiB): touching it would be SIGBUS.
    let t = mem_table(&[region(0, 32 << 20, 0)]);
    refused(
        "a region past the end of its file",
        msg(SET_MEM_TABLE, NEED_REPLY, &t),
        &[fd],
    );
    // A region larger than its file offset allows.
    let t = mem_table(&[region(0, 8 << 20, u64::MAX - 4095)]);
    refused(
        "a region at a wrapping file offset",
        msg(SET_MEM_TABLE, NEED_REPLY, &t),
        &[fd],
    );
    // GET_CONFIG beyond the config space: a reply of size 0 (failure).
    let mut s = negotiated(&b);
    let mut cfg = Vec::new();
    for v in [200u32, 16, 0] {
        cfg.extend_from_slice(&v.to_le_bytes());
    }
    cfg.extend_from_slice(&[0u8; 16]);
    s.write_all(&msg(GET_CONFIG, 0, &cfg)).unwrap();
    let (req, body) = reply(&mut s).expect("GET_CONFIG reply");
    assert_eq!(req, GET_CONFIG);
    assert_eq!(
        u32::from_le_bytes(body[4..8].try_into().unwrap()),
        0,
        "config size must be 0"
    );
    drop(s);

    // Missing fds: the backend drops the connection, and lives on.
    let s = negotiated(&b);
    let t = mem_table(&[region(0, 8 << 20, 0)]);
    send_with_fds(&s, &msg(SET_MEM_TABLE, NEED_REPLY, &t), &[]);
    let mut s = s;
    assert!(reply(&mut s).is_none_or(|(_, body)| body[..8] != [0u8; 8]));
    drop(s);

    // A header that claims more payload than any message has, and a truncated body.
    let mut s = connect(&b);
    let mut m = msg(SET_FEATURES, 0, &[]);
    m[8..12].copy_from_slice(&0x10_0000u32.to_le_bytes());
    s.write_all(&m).unwrap();
    s.write_all(&[0u8; 64]).unwrap();
    let mut one = [0u8; 1];
    assert!(matches!(s.read(&mut one), Ok(0) | Err(_)));
    drop(s);
    let mut s = connect(&b);
    s.write_all(&msg(SET_FEATURES, 0, &[1, 2, 3])).unwrap();
    drop(s);
    // An unknown request code.
    let mut s = connect(&b);
    s.write_all(&msg(0xffff, NEED_REPLY, &[])).unwrap();
    let _ = s.read(&mut one);
    drop(s);

    std::thread::sleep(Duration::from_millis(200));
    assert!(b.alive(), "the backend died:\n{}", b.log());
    assert!(!b.log().contains("panicked"), "{}", b.log());
    // And it still serves a real guest.
    let r = split(&b, &[], &["selftest"]);
    assert_eq!(r.code, code(exit_status::OK), "{}\n{}", r.dump(), b.log());
}

#[test]
fn backend_is_confined_and_never_opens_kvm() {
    let b = Backend::start("confined", &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", b.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Seccomp:") && l.trim_end().ends_with('2')),
        "no seccomp filter:\n{status}"
    );
    let mut f = frontend_with_vram(&b);
    // Every thread, those made for the frontend (request handler, vring worker) too.
    let t = common::seccomp_modes(b.pid());
    assert!(t.len() >= 3, "no serving threads: {t:?}");
    for (name, mode) in &t {
        assert_eq!(mode, "2", "backend thread {name} is not filtered: {t:?}");
    }
    for e in std::fs::read_dir(format!("/proc/{}/fd", b.pid()))
        .unwrap()
        .flatten()
    {
        let t = std::fs::read_link(e.path()).unwrap_or_default();
        assert!(
            !t.to_string_lossy().contains("kvm"),
            "backend holds {}",
            t.display()
        );
    }
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", b.pid())).unwrap();
    assert!(!maps.contains("kvm"), "{maps}");
    let _ = f.kill();
    let _ = f.wait();
}

#[test]
fn backend_no_seccomp_turns_the_filter_off() {
    let b = Backend::start("noseccomp", &["--no-seccomp"]);
    let mut f = frontend_with_vram(&b);
    let t = common::seccomp_modes(b.pid());
    let _ = f.kill();
    let _ = f.wait();
    assert!(t.len() >= 3, "no serving threads: {t:?}");
    assert!(t.iter().all(|(_, mode)| mode == "0"), "{t:?}");
}

#[test]
fn a_forbidden_system_call_ends_the_backend_with_its_name() {
    let socket = std::env::temp_dir().join(format!("pvgpu-vu-sigsys-{}.sock", std::process::id()));
    let r = common::pvgpu_with_limit(
        &[
            "device",
            "--socket",
            socket.to_str().unwrap(),
            "--debug-forbidden-syscall",
        ],
        Duration::from_secs(10),
    );
    let _ = std::fs::remove_file(&socket);
    // Reported like `pvgpu run`'s, not a silent SIGSYS kill.
    assert_eq!(r.code, code(exit_status::VMM_ERROR), "{}", r.dump());
    assert!(
        r.stderr.starts_with(
            "pvgpu: error: the vhost-user backend made system call syslog (103), \
             which its seccomp filter forbids; the backend is stopped"
        ),
        "{}",
        r.dump()
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.dump());
}

#[test]
fn run_without_a_backend_is_one_clear_error() {
    let _ = guest_image();
    let missing = Path::new("/nonexistent/pvgpu.sock");
    let r = boot(&["--gpu-socket", missing.to_str().unwrap()], &["hello"]);
    assert_eq!(r.code, code(exit_status::VMM_ERROR), "{}", r.dump());
    assert!(
        r.stderr
            .trim()
            .starts_with("pvgpu: error: cannot connect to the GPU backend"),
        "{}",
        r.dump()
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.dump());
}

#[test]
fn device_and_gpu_socket_usage_errors() {
    let _ = guest_image();
    // The split's VRAM is the backend's: --vram (and --no-gpu) conflict with --gpu-socket.
    let r = boot(
        &["--gpu-socket", "/tmp/x.sock", "--vram", "64M"],
        &["hello"],
    );
    assert_eq!(r.code, code(exit_status::VMM_USAGE), "{}", r.dump());
    let r = boot(&["--gpu-socket", "/tmp/x.sock", "--no-gpu"], &["hello"]);
    assert_eq!(r.code, code(exit_status::VMM_USAGE), "{}", r.dump());
    // `pvgpu device` needs --socket, and a socket it can bind.
    let r = common::pvgpu_with_limit(&["device"], Duration::from_secs(10));
    assert_eq!(r.code, code(exit_status::VMM_USAGE), "{}", r.dump());
    let r = common::pvgpu_with_limit(
        &["device", "--socket", "/nonexistent/dir/pvgpu.sock"],
        Duration::from_secs(10),
    );
    assert_eq!(r.code, code(exit_status::VMM_ERROR), "{}", r.dump());
    assert!(
        r.stderr
            .trim()
            .starts_with("pvgpu: error: cannot listen on /nonexistent/dir/pvgpu.sock"),
        "{}",
        r.dump()
    );
    let r = common::pvgpu_with_limit(
        &[
            "device",
            "--socket",
            "/tmp/pvgpu-never.sock",
            "--vram",
            "3M",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(r.code, code(exit_status::VMM_ERROR), "{}", r.dump());
    assert!(
        r.stderr.starts_with("pvgpu: error: --vram 3M"),
        "{}",
        r.dump()
    );
}

#[test]
fn connections_do_not_leak_descriptors() {
    let b = Backend::start("fds", &[]);
    let count = || {
        std::fs::read_dir(format!("/proc/{}/fd", b.pid()))
            .unwrap()
            .count()
    };
    let connect_and_leave = |nth: usize| {
        drop(negotiated(&b));
        b.wait_for(
            |l| l.matches("objects and VRAM freed").count() >= nth,
            Duration::from_secs(20),
        );
    };
    for nth in 1..=3 {
        connect_and_leave(nth);
    }
    let before = count();
    // 30 more frontends come and go (the fuzzer found one eventfd leaked per connection).
    for nth in 4..=33 {
        connect_and_leave(nth);
    }
    assert_eq!(count(), before, "descriptors grew over 30 connections");
}
