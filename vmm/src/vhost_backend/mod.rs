//! `pvgpu device --socket PATH`: the pvgpu device model served as a vhost-user backend, in a
//! process of its own, for our VMM (`pvgpu run --gpu-socket PATH`) or any vhost-user frontend.
//!
//! It lives in the VMM crate (not in `pvgpu-device`) because it is a program, with a socket, a
//! connection loop and a seccomp filter; the device crate stays the KVM-free, socket-free model
//! that both shapes share. Nothing here uses KVM, and the process never opens /dev/kvm.
//!
//! - [`backend`]: the `VhostUserBackend` around the command engine;
//! - [`mem_table`]: RAM ranges from SET_MEM_TABLE and CLEAN's punch through its fds;
//! - [`raw_client`]: raw message bytes with fds, for the malformed-message tests and the fuzzer.
//!
//! Its seccomp allow-list is [`crate::seccomp`]'s `Backend` list, installed on the whole process
//! once the socket is bound, with the same SIGSYS report as `pvgpu run`.
//!
//! One frontend at a time. When it goes away (even killed), every object is destroyed and all
//! VRAM punched, the memory table dropped, and the backend waits for the next frontend, or,
//! with `--once`, exits.

pub mod backend;
pub mod mem_table;
pub mod raw_client;
pub mod vring;

use std::path::{Path, PathBuf};

use clap::Args;
use pvgpu_abi::protocol as p;
use pvgpu_device::guest_ram::RamRanges;
use pvgpu_device::{CommandEngine, DeviceConfig, MemoryBackend, ZeroCopy};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::cli::{parse_display, parse_vram, ConfigError};
use crate::seccomp::{Policy, SeccompError, ThreadKind};
use backend::GpuBackend;
use mem_table::{BackendMemory, MemTablePunch};
use pvgpu_device::display::DisplayMode;

/// Options of `pvgpu device`.
#[derive(Debug, Args, Clone, PartialEq, Eq)]
pub struct DeviceArgs {
    /// The vhost-user socket to listen on (made afresh; an old file there is replaced)
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// VRAM of the GPU device, e.g. 256M or 4G (a multiple of 2 MiB, 2M..64G)
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub vram: String,
    /// The GPU's scanout resolution, WIDTHxHEIGHT (each 1..=4095)
    #[arg(long, value_name = "WxH", default_value = "1280x800")]
    pub display: String,
    /// Exit when the first frontend disconnects instead of waiting for the next one
    #[arg(long)]
    pub once: bool,
    /// Run without the seccomp filter (the process is filtered by default; for debugging)
    #[arg(long)]
    pub no_seccomp: bool,
    /// DEBUG ONLY: make a forbidden system call right after the seccomp filter is installed
    /// (shows, and lets the tests check, how a forbidden call ends the backend)
    #[arg(long, hide = true, conflicts_with = "no_seccomp")]
    pub debug_forbidden_syscall: bool,
}

impl DeviceArgs {
    /// The backend's seccomp policy: the whole process, unless `--no-seccomp`.
    pub fn seccomp(&self) -> Policy {
        Policy::from_flags(
            Policy::BACKEND,
            self.no_seccomp,
            self.debug_forbidden_syscall.then_some(ThreadKind::Backend),
        )
    }
}

/// Errors of `pvgpu device`.
#[derive(Debug, thiserror::Error)]
pub enum VhostBackendError {
    /// A bad option value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The device model could not be made (e.g. VRAM).
    #[error("GPU device: {0}")]
    Device(#[from] pvgpu_device::vram::VramError),
    /// The socket could not be bound.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: vhost::vhost_user::Error,
    },
    /// The vhost-user daemon failed to start or accept (vhost-user-backend's error is not a
    /// `std::error::Error`, so its text is kept).
    #[error("vhost-user: {0}")]
    Daemon(String),
    /// The vring workers' exit eventfd could not be made.
    #[error("cannot create an eventfd: {0}")]
    ExitEvent(std::io::Error),
    /// The seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

/// How one frontend connection ended.
#[derive(Debug)]
pub struct ConnectionEnd {
    /// How the connection ended, for people ("disconnected", or the error).
    pub how: String,
    /// Commands served during the connection (the device counters at its end).
    pub commands: u64,
    /// Host bytes the VRAM memfd holds after the reset (0: everything freed).
    pub vram_bytes: u64,
    /// Live objects after the reset (0).
    pub objects: usize,
}

/// The backend, its listening socket and the memory table it shares with the daemon.
pub struct BackendServer {
    backend: GpuBackend,
    mem: BackendMemory,
    listener: Listener,
}

impl BackendServer {
    /// A backend with `vram` bytes of VRAM and a scanout of `display`, listening on `socket`.
    pub fn new(socket: &Path, vram: u64, display: DisplayMode) -> Result<Self, VhostBackendError> {
        let mem: BackendMemory = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let config = DeviceConfig {
            vram_size: vram,
            ram: RamRanges::none(),
            max_objects: p::MAX_OBJECTS,
            slice_bytes: pvgpu_device::job::SLICE_BYTES,
            display,
            // VRAM must be a memfd (SHMEM_MAP hands it to the frontend), and guest memory is
            // the frontend's shared memory: MIGRATE_CLEAN copies and punches.
            backend: MemoryBackend::Shared,
            zero_copy: ZeroCopy::CopyOnly,
        };
        let engine = CommandEngine::new(config, Box::new(MemTablePunch::new(mem.clone())))?;
        let listener = Listener::new(socket, true).map_err(|source| VhostBackendError::Listen {
            path: socket.to_owned(),
            source,
        })?;
        Ok(BackendServer {
            backend: GpuBackend::new(engine).map_err(VhostBackendError::ExitEvent)?,
            mem,
            listener,
        })
    }

    /// Accepts one frontend and serves it until it goes away; then destroys every object,
    /// frees (punches) all VRAM and drops the frontend's memory.
    pub fn serve_one(&mut self) -> Result<ConnectionEnd, VhostBackendError> {
        let mut daemon = VhostUserDaemon::new(
            "pvgpu-vhost-user".into(),
            self.backend.clone(),
            self.mem.clone(),
        )
        .map_err(|e| VhostBackendError::Daemon(e.to_string()))?;
        daemon
            .start(&mut self.listener)
            .map_err(|e| VhostBackendError::Daemon(e.to_string()))?;
        let end = daemon.wait();
        // The worker threads stop with the daemon (exit events), before the state is reset.
        drop(daemon);
        let stats = self.backend.disconnected();
        if let Ok(m) = self.mem.lock() {
            m.replace(GuestMemoryMmap::new());
        }
        let how = match end {
            Ok(())
            | Err(vhost_user_backend::Error::HandleRequest(
                vhost::vhost_user::Error::Disconnected,
            )) => "disconnected".to_owned(),
            Err(e) => format!("connection ended ({e})"),
        };
        Ok(ConnectionEnd {
            how,
            commands: stats.commands,
            vram_bytes: self.backend.vram_bytes(),
            objects: self.backend.objects(),
        })
    }
}

/// Runs `pvgpu device`; returns when `--once` ends it (or on an error).
pub fn serve(args: &DeviceArgs) -> Result<(), VhostBackendError> {
    let vram = parse_vram(&args.vram)?;
    let display = parse_display(&args.display)?;
    let mut server = BackendServer::new(&args.socket, vram, display)?;
    let seccomp = args.seccomp();
    if seccomp.any() {
        crate::seccomp::install_sigsys_handler()?;
    }
    seccomp.enter(ThreadKind::Backend, 0)?;
    eprintln!(
        "pvgpu device: listening on {} (VRAM {} MiB, display {}x{})",
        args.socket.display(),
        vram >> 20,
        display.width(),
        display.height()
    );
    loop {
        let end = server.serve_one()?;
        eprintln!(
            "pvgpu device: frontend {}; objects and VRAM freed ({} commands served, VRAM now {} bytes, {} objects)",
            end.how, end.commands, end.vram_bytes, end.objects,
        );
        if args.once {
            eprintln!("pvgpu device: --once: exiting");
            return Ok(());
        }
    }
}
