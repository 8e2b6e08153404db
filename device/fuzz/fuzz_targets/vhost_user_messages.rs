//! Fuzzes the vhost-user backend's message handling (`pvgpu device`): each input is a
//! stream of vhost-user messages (any request code, flags, sizes that may lie, bodies, and 0-2
//! memfds as SCM_RIGHTS) sent by a raw client to the real backend (`BackendServer`, the code
//! `pvgpu device` runs, without its seccomp filter). Often a valid handshake comes first so
//! the later messages reach the deeper handlers (memory tables, vrings, config, shared
//! memory). After each connection the backend must have freed everything: no objects, no
//! VRAM. A panic anywhere (or a hang, which libFuzzer reports as a timeout) is a failure.

#![no_main]

use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use pvgpu::vhost_backend::{raw_client, BackendServer};
use pvgpu_device::memfd::MemFd;

struct World {
    server: BackendServer,
    socket: std::path::PathBuf,
    memfd: MemFd,
}

fn world() -> &'static Mutex<World> {
    static W: OnceLock<Mutex<World>> = OnceLock::new();
    W.get_or_init(|| {
        let socket =
            std::env::temp_dir().join(format!("pvgpu-fuzz-vu-{}.sock", std::process::id()));
        let server = BackendServer::new(&socket, 8 << 20, Default::default()).expect("backend");
        let memfd = MemFd::new("fuzz-ram", 16 << 20).expect("memfd");
        Mutex::new(World {
            server,
            socket,
            memfd,
        })
    })
}

struct Input<'a> {
    d: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.d.split_first()?;
        self.d = rest;
        Some(*b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.d.len());
        let (a, b) = self.d.split_at(n);
        self.d = b;
        a
    }
}

fn header(code: u32, flags: u32, size: u32) -> Vec<u8> {
    raw_client::message_with_size(code, flags, size, &[])
}

fn send(s: &UnixStream, m: &[u8], fds: &[i32]) -> bool {
    raw_client::send_with_fds(s, m, fds).is_ok()
}

fn handshake(s: &UnixStream, proto: u64) {
    let mut m = header(3, 1, 0); // SET_OWNER
    m.extend(header(1, 1, 0)); // GET_FEATURES
    let f: u64 = (1 << 30) | (1 << 32) | (1 << 29) | (1 << 20);
    m.extend(header(2, 1, 8)); // SET_FEATURES
    m.extend_from_slice(&f.to_le_bytes());
    m.extend(header(16, 1, 8)); // SET_PROTOCOL_FEATURES
    m.extend_from_slice(&proto.to_le_bytes());
    let _ = send(s, &m, &[]);
}

fuzz_target!(|data: &[u8]| {
    let mut w = world().lock().unwrap_or_else(|p| p.into_inner());
    let client = UnixStream::connect(&w.socket).expect("connect");
    let mut drain = client.try_clone().expect("clone");
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(drain.read(&mut buf), Ok(n) if n > 0) {}
    });
    let fd = w.memfd.file().as_raw_fd();
    let mut inp = Input { d: data };
    let first = inp.byte().unwrap_or(0);
    if first & 1 == 1 {
        // REPLY_ACK | CONFIG | MQ | RESET_DEVICE | SHMEM (BACKEND_REQ needs a real channel).
        let proto = (1 << 3) | (1 << 9) | (1 << 0) | (1 << 13) | (1 << 22);
        handshake(&client, proto);
    }
    let mut n = 0;
    while let Some(sel) = inp.byte() {
        n += 1;
        if n > 32 {
            break;
        }
        let code = u32::from(inp.byte().unwrap_or(0) % 48);
        let flags = if sel & 0x80 != 0 {
            u32::from(inp.byte().unwrap_or(0))
        } else {
            1 | u32::from(sel & 0x8)
        };
        let len = usize::from(inp.byte().unwrap_or(0));
        let body = inp.take(len).to_vec();
        let size = if sel & 0x40 != 0 {
            u32::from(inp.byte().unwrap_or(0)) * 16
        } else {
            body.len() as u32
        };
        let nfds = usize::from(sel & 0x3).min(2);
        let mut m = header(code, flags, size);
        m.extend_from_slice(&body);
        if !send(&client, &m, &[fd; 2][..nfds]) {
            break;
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Write);
    let end = w.server.serve_one().expect("serve");
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    assert_eq!(end.objects, 0, "objects left after the frontend went away");
    assert_eq!(end.vram_bytes, 0, "VRAM held after the frontend went away");
});
