//! The pvgpu GPU in the VM with its device model in another process: our VMM as a vhost-user
//! frontend (`pvgpu run --gpu-socket PATH`, the backend being `pvgpu device --socket PATH` or
//! any backend that offers the same features).
//!
//! - **Registers** stay here: the same `pvgpu_device::transport::MmioTransport` as in-process
//!   sits on the MMIO bus, offering the features the backend offers. When the driver sets
//!   DRIVER_OK, the queues it configured go to the backend (SET_FEATURES, SET_VRING_NUM/ADDR/
//!   BASE/KICK/CALL/ENABLE); a device reset stops them (GET_VRING_BASE) and resets the backend
//!   (RESET_DEVICE).
//! - **Guest memory** goes to the backend once, at attach (SET_MEM_TABLE with the guest-RAM
//!   memfd), so its CLEAN punches our memfd and the host-memory figures hold as in-process.
//! - **Notify**: the ioeventfd on QueueNotify (datamatch = queue index) is the queue's kick fd.
//! - **Interrupt**: the backend signals a call eventfd; [`BackendWatch`] on the main event loop
//!   sets INTERRUPT_STATUS and raises the irqfd, so the driver sees a normal virtio-mmio
//!   interrupt.
//! - **VRAM**: GET_SHMEM_CONFIG gives region 1's size; the backend's SHMEM_MAP hands over its
//!   VRAM memfd, which is mapped here and registered as the VRAM memslot.
//! - **Faults**: when the backend goes away, [`BackendWatch`] sets DEVICE_NEEDS_RESET (with a
//!   config interrupt) and ends the run with one clear error; socket calls time out instead of
//!   hanging on a backend that stopped answering.

use std::fs::File;
use std::os::unix::io::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use kvm_ioctls::{IoEventAddress, VmFd};
use pvgpu_abi::layout;
use pvgpu_abi::protocol as p;
use pvgpu_abi::virtio_mmio::INT_VRING;
use pvgpu_device::memfd::MemFd;
use pvgpu_device::transport::{MmioEvent, MmioTransport, CONFIG_SIZE, NUM_QUEUES};
use pvgpu_device::HostMemory;
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserMMap, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{
    Frontend, FrontendReqHandler, HandlerResult, VhostUserFrontend, VhostUserFrontendReqHandlerMut,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::{Bus, BusDevice, BusError};
use crate::devices::gpu::QUEUE_NOTIFY_ADDR;
use crate::run::state::{GuestEnd, RunState};
use crate::run::stats::{MemoryProbe, RunStatsError};
use crate::vstate::guest_ram::GuestRam;

/// How long a request to the backend may take before the VMM gives up on it.
const BACKEND_TIMEOUT_SECS: libc::time_t = 5;

/// Protocol features the frontend needs from the backend.
fn required_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::BACKEND_REQ
        | VhostUserProtocolFeatures::SHMEM
}

/// Protocol features the frontend uses when offered.
fn wanted_protocol_features() -> VhostUserProtocolFeatures {
    required_protocol_features()
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::RESET_DEVICE
}

/// Errors attaching the vhost-user GPU.
#[derive(Debug, thiserror::Error)]
pub enum GpuVhostUserError {
    /// The socket could not be reached.
    #[error("cannot connect to the GPU backend at {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: vhost::Error,
    },
    /// A vhost-user request failed during set-up.
    #[error("GPU backend: {what} failed: {source}")]
    Request {
        /// The request.
        what: &'static str,
        /// Why.
        source: vhost::Error,
    },
    /// The backend lacks something the frontend needs.
    #[error("GPU backend does not support {0}")]
    Unsupported(String),
    /// Guest RAM is not shared memory, so the backend cannot map it.
    #[error("--gpu-socket needs guest RAM in shared memory (--memory shared)")]
    NotShared,
    /// The backend's VRAM is unusable.
    #[error("GPU backend: {0}")]
    Vram(String),
    /// KVM_SET_USER_MEMORY_REGION for the VRAM window failed.
    #[error("cannot register VRAM with KVM (memslot {slot}): {source}")]
    VramSlot {
        /// The memslot.
        slot: u32,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
    /// An eventfd could not be made.
    #[error("cannot create an eventfd for the GPU: {0}")]
    EventFd(std::io::Error),
    /// A socket option could not be set.
    #[error("GPU backend socket: {0}")]
    Socket(std::io::Error),
    /// The register window could not be put on the MMIO bus.
    #[error("GPU register window: {0}")]
    Bus(#[from] BusError),
    /// Host-memory accounting of VRAM could not be set up.
    #[error(transparent)]
    Stats(#[from] RunStatsError),
}

fn req<T>(what: &'static str, r: vhost::Result<T>) -> Result<T, GpuVhostUserError> {
    r.map_err(|source| GpuVhostUserError::Request { what, source })
}

/// Receives the backend's SHMEM_MAP of its VRAM.
#[derive(Debug, Default)]
struct ShmemMapper {
    map: Option<(VhostUserMMap, File)>,
}

impl VhostUserFrontendReqHandlerMut for ShmemMapper {
    fn shmem_map(&mut self, req: &VhostUserMMap, fd: &dyn AsRawFd) -> HandlerResult<u64> {
        if self.map.is_some() || req.shmid != p::SHM_ID_VRAM {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor the handler keeps open for this call makes a
        // new descriptor that nothing else owns.
        let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `dup` was just made and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(dup) };
        self.map = Some((*req, file));
        Ok(0)
    }
}

fn map_vram(
    m: &VhostUserMMap,
    file: File,
    vram_size: u64,
) -> Result<HostMemory, GpuVhostUserError> {
    let (off, shm_off, len) = (m.fd_offset, m.shm_offset, m.len);
    if shm_off != 0 || len != vram_size || off % layout::PAGE_SIZE != 0 {
        return Err(GpuVhostUserError::Vram(format!(
            "SHMEM_MAP must map all of region 1 ({vram_size} bytes) at offset 0; got {len} bytes at {shm_off} from file offset {off}"
        )));
    }
    let file_len = off.saturating_add(len);
    HostMemory::from_memfd(MemFd::from_file(file, file_len), off, len)
        .map_err(|e| GpuVhostUserError::Vram(format!("cannot map the VRAM memfd: {e}")))
}

fn set_timeouts(fd: RawFd) -> Result<(), GpuVhostUserError> {
    let tv = libc::timeval {
        tv_sec: BACKEND_TIMEOUT_SECS,
        tv_usec: 0,
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: setsockopt reads `tv` (a valid timeval of the given size) for this socket.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(GpuVhostUserError::Socket(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn clones(fds: &[EventFd]) -> Result<Vec<EventFd>, GpuVhostUserError> {
    fds.iter()
        .map(EventFd::try_clone)
        .collect::<Result<Vec<_>, _>>()
        .map_err(GpuVhostUserError::EventFd)
}

/// Waits until `fd` is readable, at most the backend timeout.
fn wait_readable(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(BACKEND_TIMEOUT_SECS * 1000).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    rc == 1 && pfd.revents & libc::POLLIN != 0
}

/// The register window and the vhost-user connection.
pub struct VhostUserMmio {
    transport: MmioTransport,
    frontend: Frontend,
    mem: GuestMemoryMmap,
    kicks: Vec<EventFd>,
    calls: Vec<EventFd>,
    errs: Vec<EventFd>,
    irq: Option<EventFd>,
    reset_device: bool,
    started: bool,
    lost: bool,
    /// The VRAM memslot's memory: the MMIO bus holds this adapter, so a vCPU thread that
    /// would not stop keeps the mapping alive (as the in-process device does).
    _vram: Arc<HostMemory>,
}

impl std::fmt::Debug for VhostUserMmio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserMmio")
            .field("transport", &self.transport)
            .field("started", &self.started)
            .field("lost", &self.lost)
            .finish()
    }
}

impl VhostUserMmio {
    fn host_addr(&self, gpa: u64) -> Option<u64> {
        self.mem
            .get_host_address(GuestAddress(gpa))
            .ok()
            .map(|p| p as u64)
    }

    /// Hands the configured queues to the backend (DRIVER_OK).
    fn start(&mut self) -> Result<(), String> {
        let features =
            self.transport.driver_features() | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        self.frontend
            .set_features(features)
            .map_err(|e| format!("SET_FEATURES: {e}"))?;
        for i in 0..NUM_QUEUES {
            let Some(q) = u16::try_from(i)
                .ok()
                .and_then(|i| self.transport.queue_at(i))
            else {
                continue;
            };
            // A driver may leave a queue (the cursor queue) unused.
            if !q.ready() {
                continue;
            }
            let (Some(desc), Some(avail), Some(used)) = (
                self.host_addr(q.desc_table()),
                self.host_addr(q.avail_ring()),
                self.host_addr(q.used_ring()),
            ) else {
                return Err(format!("queue {i}: rings outside guest RAM"));
            };
            let size = q.size();
            let cfg = VringConfigData {
                queue_max_size: q.max_size(),
                queue_size: size,
                flags: 0,
                desc_table_addr: desc,
                used_ring_addr: used,
                avail_ring_addr: avail,
                log_addr: None,
            };
            let e = |what: &str, e: vhost::Error| format!("queue {i}: {what}: {e}");
            self.frontend
                .set_vring_num(i, size)
                .map_err(|x| e("SET_VRING_NUM", x))?;
            self.frontend
                .set_vring_addr(i, &cfg)
                .map_err(|x| e("SET_VRING_ADDR", x))?;
            self.frontend
                .set_vring_base(i, 0)
                .map_err(|x| e("SET_VRING_BASE", x))?;
            self.frontend
                .set_vring_call(i, &self.calls[i])
                .map_err(|x| e("SET_VRING_CALL", x))?;
            self.frontend
                .set_vring_err(i, &self.errs[i])
                .map_err(|x| e("SET_VRING_ERR", x))?;
            self.frontend
                .set_vring_kick(i, &self.kicks[i])
                .map_err(|x| e("SET_VRING_KICK", x))?;
            self.frontend
                .set_vring_enable(i, true)
                .map_err(|x| e("SET_VRING_ENABLE", x))?;
        }
        self.started = true;
        Ok(())
    }

    /// Stops the queues and resets the backend's device (driver reset).
    fn stop(&mut self) {
        if !self.started || self.lost {
            return;
        }
        self.started = false;
        for i in 0..NUM_QUEUES {
            if let Err(e) = self.frontend.get_vring_base(i) {
                log::warn!("GPU backend: GET_VRING_BASE {i}: {e}");
            }
        }
        if self.reset_device {
            if let Err(e) = self.frontend.reset_device() {
                log::warn!("GPU backend: RESET_DEVICE: {e}");
            }
        }
    }

    fn interrupt(&mut self, bits: u32) {
        self.transport.raise(bits);
        if let Some(irq) = &self.irq {
            if let Err(e) = irq.write(1) {
                log::warn!("GPU interrupt: {e}");
            }
        }
    }

    fn fail(&mut self, why: &str) {
        log::error!("GPU backend: {why}; the device needs a reset");
        self.transport.set_needs_reset();
        self.interrupt(0);
    }

    /// The backend went away: the device needs a reset.
    pub fn backend_lost(&mut self) {
        self.lost = true;
        self.transport.set_needs_reset();
        self.interrupt(0);
    }

    /// The transport registers' state.
    pub fn transport(&self) -> &MmioTransport {
        &self.transport
    }
}

impl BusDevice for VhostUserMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.transport.read(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match self.transport.write(offset, data) {
            MmioEvent::None => {}
            MmioEvent::QueueNotify => {
                // Not caught by an ioeventfd: pass it on as that queue's kick.
                let index = <[u8; 4]>::try_from(data).map_or(0, u32::from_le_bytes);
                if let Some(k) = usize::try_from(index).ok().and_then(|i| self.kicks.get(i)) {
                    let _ = k.write(1);
                }
            }
            MmioEvent::Reset => self.stop(),
            MmioEvent::DriverOk => {
                if self.lost {
                    self.fail("backend gone");
                } else if let Err(e) = self.start() {
                    self.fail(&e);
                }
            }
        }
    }
}

fn lock(m: &Mutex<VhostUserMmio>) -> MutexGuard<'_, VhostUserMmio> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Relays the backend's call eventfds into virtio-mmio interrupts and its error eventfds into
/// DEVICE_NEEDS_RESET, and notices the backend going away (the socket hangs up):
/// DEVICE_NEEDS_RESET, and the run ends with an error.
pub struct BackendWatch {
    mmio: Arc<Mutex<VhostUserMmio>>,
    calls: Vec<EventFd>,
    errs: Vec<EventFd>,
    socket: RawFd,
    path: PathBuf,
    state: Arc<RunState>,
}

impl MutEventSubscriber for BackendWatch {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.socket {
            lock(&self.mmio).backend_lost();
            let _ = ops.remove(Events::new_raw(self.socket, EventSet::empty()));
            self.state.finish(GuestEnd::VmmError(format!(
                "the GPU backend at {} went away; the device needs a reset",
                self.path.display()
            )));
            return;
        }
        if self.errs.iter().any(|c| c.read().is_ok()) {
            lock(&self.mmio).fail("the backend reported a broken queue");
        }
        if self.calls.iter().any(|c| c.read().is_ok()) {
            lock(&self.mmio).interrupt(INT_VRING);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for c in self.calls.iter().chain(&self.errs) {
            if let Err(e) = ops.add(Events::new(c, EventSet::IN)) {
                log::error!("cannot watch the GPU backend's call/error eventfd: {e}");
            }
        }
        let hup = EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR;
        if let Err(e) = ops.add(Events::new_raw(self.socket, hup)) {
            log::error!("cannot watch the GPU backend socket: {e}");
        }
    }
}

/// The vhost-user GPU as one run holds it.
pub struct GpuVhostUser {
    mmio: Arc<Mutex<VhostUserMmio>>,
    vram: Arc<HostMemory>,
    path: PathBuf,
    socket: RawFd,
    calls: Vec<EventFd>,
    errs: Vec<EventFd>,
    // The backend channel stays open for the connection's life.
    _backend_channel: FrontendReqHandler<Mutex<ShmemMapper>>,
}

impl std::fmt::Debug for GpuVhostUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuVhostUser")
            .field("path", &self.path)
            .field("vram_size", &self.vram.size())
            .finish()
    }
}

impl GpuVhostUser {
    /// Connects to the backend at `path`, negotiates, maps its VRAM as KVM memslot `slot` at
    /// `layout::VRAM_BASE`, gives it guest RAM, wires the kick ioeventfd and puts the register
    /// window on `mmio`. Call before KVM_CREATE_IRQCHIP (see `Gpu::attach`).
    pub fn attach(
        vm: &VmFd,
        ram: &GuestRam,
        slot: u32,
        mmio: &mut Bus,
        path: &Path,
    ) -> Result<Self, GpuVhostUserError> {
        let mut fe = Frontend::connect(path, NUM_QUEUES as u64).map_err(|source| {
            GpuVhostUserError::Connect {
                path: path.to_owned(),
                source,
            }
        })?;
        set_timeouts(fe.as_raw_fd())?;
        req("SET_OWNER", fe.set_owner())?;
        let features = req("GET_FEATURES", fe.get_features())?;
        let proto_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if features & proto_bit == 0 {
            return Err(GpuVhostUserError::Unsupported(
                "VHOST_USER_F_PROTOCOL_FEATURES".into(),
            ));
        }
        if features & (1 << p::VIRTIO_F_VERSION_1) == 0 {
            return Err(GpuVhostUserError::Unsupported("VIRTIO_F_VERSION_1".into()));
        }
        let offered = req("GET_PROTOCOL_FEATURES", fe.get_protocol_features())?;
        let missing = required_protocol_features() - offered;
        if !missing.is_empty() {
            return Err(GpuVhostUserError::Unsupported(format!(
                "the protocol features {missing:?}"
            )));
        }
        let acked = offered & wanted_protocol_features();
        req("SET_PROTOCOL_FEATURES", fe.set_protocol_features(acked))?;
        if acked.contains(VhostUserProtocolFeatures::MQ) {
            let n = req("GET_QUEUE_NUM", fe.get_queue_num())?;
            if n < NUM_QUEUES as u64 {
                return Err(GpuVhostUserError::Unsupported(format!(
                    "{NUM_QUEUES} queues (it has {n})"
                )));
            }
        }
        let zero = [0u8; CONFIG_SIZE as usize];
        req(
            "GET_CONFIG",
            fe.get_config(0, CONFIG_SIZE as u32, VhostUserConfigFlags::empty(), &zero),
        )?;
        let shm = req("GET_SHMEM_CONFIG", fe.get_shmem_config())?;
        let id = usize::from(p::SHM_ID_VRAM);
        let vram_size = if (shm.nregions as usize) > id {
            shm.memory_sizes[id]
        } else {
            0
        };
        if vram_size == 0 || vram_size % layout::PAGE_SIZE != 0 || vram_size > layout::VRAM_MAX {
            return Err(GpuVhostUserError::Vram(format!(
                "shared-memory region {id} (VRAM) is {vram_size} bytes; need a page multiple up to {}",
                layout::VRAM_MAX
            )));
        }

        // The backend channel; the backend sends SHMEM_MAP of its VRAM as soon as it has it.
        let mapper = Arc::new(Mutex::new(ShmemMapper::default()));
        let mut channel = FrontendReqHandler::new(mapper.clone())
            .map_err(|e| GpuVhostUserError::Socket(std::io::Error::other(e)))?;
        req(
            "SET_BACKEND_REQ_FD",
            fe.set_backend_request_fd(&channel.get_tx_raw_fd()),
        )?;
        if !wait_readable(channel.as_raw_fd()) {
            return Err(GpuVhostUserError::Vram(
                "the backend did not send SHMEM_MAP for its VRAM".into(),
            ));
        }
        req(
            "SHMEM_MAP",
            channel.handle_request().map_err(vhost::Error::from),
        )?;
        let taken = mapper.lock().unwrap_or_else(|p| p.into_inner()).map.take();
        let Some((m, file)) = taken else {
            return Err(GpuVhostUserError::Vram(
                "the backend did not send SHMEM_MAP for its VRAM".into(),
            ));
        };
        let vram = Arc::new(map_vram(&m, file, vram_size)?);
        // SAFETY: [host_addr, + vram_size) is our live MAP_SHARED mapping of the backend's VRAM
        // memfd (exactly `vram_size` bytes); the returned value and the MMIO bus (which every
        // vCPU thread holds) share it, so it outlives every vCPU that can touch the slot. The slot
        // is unused and the window is clear of RAM and MMIO (VRAM_BASE, at most VRAM_MAX
        // bytes, checked above).
        unsafe { super::gpu::register_vram_slot(vm, slot, vram.host_addr() as u64, vram_size) }
            .map_err(|source| GpuVhostUserError::VramSlot { slot, source })?;

        // Guest RAM: its memfd (with --gpu-socket the VMM uses shared memory).
        let ram_fd = ram
            .host_memory()
            .memfd()
            .ok_or(GpuVhostUserError::NotShared)?
            .file()
            .as_raw_fd();
        let mut regions = Vec::new();
        for r in ram.memory().iter() {
            let host = ram
                .memory()
                .get_host_address(r.start_addr())
                .map_err(|e| GpuVhostUserError::Vram(format!("guest RAM: {e}")))?;
            regions.push(VhostUserMemoryRegionInfo {
                guest_phys_addr: r.start_addr().0,
                memory_size: r.len(),
                userspace_addr: host as u64,
                mmap_offset: r.start_addr().0 - layout::RAM_START,
                mmap_handle: ram_fd,
            });
        }
        req("SET_MEM_TABLE", fe.set_mem_table(&regions))?;

        let mut kicks = Vec::new();
        let mut calls = Vec::new();
        let mut errs = Vec::new();
        for i in 0..NUM_QUEUES {
            let kick = EventFd::new(libc::EFD_NONBLOCK).map_err(GpuVhostUserError::EventFd)?;
            if let Err(e) =
                vm.register_ioevent(&kick, &IoEventAddress::Mmio(QUEUE_NOTIFY_ADDR), i as u32)
            {
                log::warn!("GPU queue {i} notify has no ioeventfd ({e}); notifies exit to the VMM");
            }
            kicks.push(kick);
            calls.push(EventFd::new(libc::EFD_NONBLOCK).map_err(GpuVhostUserError::EventFd)?);
            errs.push(EventFd::new(libc::EFD_NONBLOCK).map_err(GpuVhostUserError::EventFd)?);
        }
        let watch_calls = clones(&calls)?;
        let watch_errs = clones(&errs)?;

        let mut transport =
            MmioTransport::new(vram_size).map_err(|e| GpuVhostUserError::Vram(e.to_string()))?;
        transport.set_device_features(features & !proto_bit);
        let socket = fe.as_raw_fd();
        let dev = Arc::new(Mutex::new(VhostUserMmio {
            transport,
            frontend: fe,
            mem: ram.memory().clone(),
            kicks,
            calls,
            errs,
            irq: None,
            reset_device: acked.contains(VhostUserProtocolFeatures::RESET_DEVICE),
            started: false,
            lost: false,
            _vram: vram.clone(),
        }));
        mmio.insert(
            layout::VIRTIO_MMIO_BASE,
            layout::VIRTIO_MMIO_SIZE,
            dev.clone(),
        )?;
        Ok(GpuVhostUser {
            mmio: dev,
            vram,
            path: path.to_owned(),
            socket,
            calls: watch_calls,
            errs: watch_errs,
            _backend_channel: channel,
        })
    }

    /// Gives the device an irqfd on `layout::VIRTIO_MMIO_IRQ` (after KVM_CREATE_IRQCHIP).
    pub fn connect_irq(&mut self, vm: &VmFd) -> Result<(), GpuVhostUserError> {
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(GpuVhostUserError::EventFd)?;
        match vm.register_irqfd(&irq, layout::VIRTIO_MMIO_IRQ) {
            Ok(()) => lock(&self.mmio).irq = Some(irq),
            Err(e) => log::warn!("GPU interrupt not wired (irqfd: {e}); the guest polls"),
        }
        Ok(())
    }

    /// The event-loop subscriber relaying interrupts and watching the backend.
    pub fn watch(&self, state: Arc<RunState>) -> Result<BackendWatch, GpuVhostUserError> {
        Ok(BackendWatch {
            mmio: self.mmio.clone(),
            calls: clones(&self.calls)?,
            errs: clones(&self.errs)?,
            socket: self.socket,
            path: self.path.clone(),
            state,
        })
    }

    /// A host-memory probe of `ram` and the backend's VRAM memfd.
    pub fn memory_probe(&self, ram: &GuestRam) -> Result<MemoryProbe, GpuVhostUserError> {
        Ok(MemoryProbe::new(
            ram.host_memory().clone(),
            Some(self.vram.clone()),
        ))
    }

    /// VRAM size in bytes.
    pub fn vram_size(&self) -> u64 {
        self.vram.size()
    }

    /// The register window (shared with the MMIO bus).
    pub fn mmio(&self) -> &Arc<Mutex<VhostUserMmio>> {
        &self.mmio
    }
}
