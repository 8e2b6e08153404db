//! The pvgpu device model as a `vhost_user_backend::VhostUserBackend`: the same command
//! engine and queue processing as in-process (`pvgpu_device::queue::process`), fed by the
//! vrings a frontend sets up, with its VRAM offered as shared-memory region 1.
//!
//! - Features: the device's (`transport::DEVICE_FEATURES`) plus VHOST_USER_F_PROTOCOL_FEATURES.
//! - Protocol features: CONFIG (GET_CONFIG serves virtio_gpu_config), MQ, REPLY_ACK,
//!   RESET_DEVICE, BACKEND_REQ and SHMEM (GET_SHMEM_CONFIG; SHMEM_MAP of the VRAM memfd).
//! - SHMEM_MAP is sent once, when the frontend gives its backend channel
//!   (SET_BACKEND_REQ_FD), without asking for a reply: the frontend is then still waiting for
//!   its own SET_BACKEND_REQ_FD acknowledgement, so waiting for one here would deadlock.
//! - A kick serves the queue as the in-process device thread does
//!   (`devices::queue_steps::serve`): bounded steps (a queue's worth of requests and a few
//!   slices of data work at most; a long command stays in flight, its chain unused), the
//!   device's lock and the vring's released in between and the worker's exit event looked at,
//!   then a short poll of the avail ring; the call eventfd is signalled when the queue says so.
//! - A frontend stopping the control ring (GET_VRING_BASE) while a command is under way drops
//!   that command unanswered, as a reset does (frontends stop rings to reset the device or to
//!   leave; waiting for a long command there would hold them up).

use std::sync::{Arc, Mutex, MutexGuard};

use pvgpu_abi::protocol as p;
use pvgpu_device::queue::{self, QueueRole};
use pvgpu_device::transport::{config_space, DEVICE_FEATURES, NUM_QUEUES};
use pvgpu_device::{CommandEngine, DeviceStats};
use std::os::unix::io::{AsRawFd, FromRawFd};
use vhost::vhost_user::message::{
    VhostUserMMap, VhostUserMMapFlags, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Backend, VhostUserFrontendReqHandler};
use vhost_user_backend::{VhostUserBackend, VringT};
use virtio_queue::QueueT;
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};
use vmm_sys_util::eventfd::EventFd;

use super::mem_table::{ram_ranges, BackendMemory};
use super::vring::ErrVring;
use crate::devices::queue_steps;
use crate::devices::warn_limit::WarnLimit;

/// Queue entries the backend accepts (the device model's largest queue, the control queue;
/// vhost-user-backend has one maximum for every queue).
const MAX_QUEUE_SIZE: usize = p::CONTROLQ_SIZE_MAX as usize;

/// Errors of the backend's event handling.
#[derive(Debug, thiserror::Error)]
pub enum GpuBackendError {
    /// An event for a queue the device does not have.
    #[error("event for queue {0}, the device has {NUM_QUEUES}")]
    NoSuchQueue(u16),
    /// The memory table is not acceptable.
    #[error(transparent)]
    MemTable(#[from] super::mem_table::MemTableError),
    /// Signalling the call eventfd failed.
    #[error("cannot signal the used-buffer notification: {0}")]
    Call(std::io::Error),
}

impl From<GpuBackendError> for std::io::Error {
    fn from(e: GpuBackendError) -> Self {
        std::io::Error::other(e)
    }
}

struct State {
    engine: CommandEngine,
    mem: Option<BackendMemory>,
    /// The backend-request channel, kept open for the connection's life: a frontend may
    /// take its closing for a broken connection (Linux's virtio_uml removes the device).
    backend_req: Option<Backend>,
    /// The control queue's chain whose command is under way (its data work runs in bounded
    /// steps).
    inflight: Option<queue::InFlight>,
    /// Warnings the frontend (or its guest) can cause at will, per connection: a queue made
    /// unusable, a ring stopped with a command under way.
    unusable: WarnLimit,
    dropped: WarnLimit,
}

/// The backend (cheap to clone: the daemon hands clones to its worker threads).
#[derive(Clone)]
pub struct GpuBackend {
    state: Arc<Mutex<State>>,
    vram_size: u64,
    /// The exit event of every connection's vring worker (see [`GpuBackend::exit_event`]).
    exit: Arc<EventFd>,
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBackend")
            .field("vram_size", &self.vram_size)
            .finish()
    }
}

impl GpuBackend {
    /// The backend around `engine` (its VRAM is what SHMEM_MAP offers).
    pub fn new(engine: CommandEngine) -> std::io::Result<Self> {
        let vram_size = engine.vram().size();
        Ok(GpuBackend {
            state: Arc::new(Mutex::new(State {
                engine,
                mem: None,
                backend_req: None,
                inflight: None,
                unusable: WarnLimit::new(),
                dropped: WarnLimit::new(),
            })),
            vram_size,
            exit: Arc::new(EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The frontend went away: every object is destroyed and all VRAM freed (punched); the
    /// memory table is forgotten. Returns the counters as they were at the end.
    pub fn disconnected(&self) -> DeviceStats {
        // The connection's worker has stopped (its daemon is gone): drain its exit event so
        // the next connection's worker does not stop at once.
        let _ = self.exit.read();
        let mut s = self.lock();
        s.inflight = None;
        s.unusable = WarnLimit::new();
        s.dropped = WarnLimit::new();
        s.engine.reset();
        s.engine.set_enabled(false);
        s.mem = None;
        s.backend_req = None;
        s.engine.stats().clone()
    }

    /// Host bytes the VRAM memfd holds now.
    pub fn vram_bytes(&self) -> u64 {
        self.lock().engine.vram().host_memory().resident_bytes()
    }

    /// Live objects now.
    pub fn objects(&self) -> usize {
        self.lock().engine.objects().len()
    }

    /// Serves `vring` after a kick, in bounded steps until it is idle or the worker is asked
    /// to exit.
    fn process(&self, vring: &ErrVring, role: QueueRole) -> Result<(), GpuBackendError> {
        queue_steps::serve(
            || self.exit_requested(),
            || self.step(vring, role),
            || self.pending(vring, role),
        )
    }

    /// One bounded step of `vring`'s queue (`queue::process` with one step's budget). Returns
    /// whether to go on: not without guest memory, nor on a ring the frontend stopped or
    /// that turned out unusable.
    fn step(&self, vring: &ErrVring, role: QueueRole) -> Result<bool, GpuBackendError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(atomic) = st.mem.clone() else {
            return Ok(false);
        };
        let mem = atomic.memory();
        let mut vs = vring.get_mut();
        // The frontend may stop the ring between two steps (GET_VRING_BASE).
        if !vs.is_enabled() || !vs.get_queue().ready() {
            return Ok(false);
        }
        // Only the control queue carries long commands; a cursor command is done at once.
        let mut none = None;
        let inflight = match role {
            QueueRole::Control => &mut st.inflight,
            QueueRole::Cursor => &mut none,
        };
        if inflight.is_none() {
            st.engine.stats_mut().notifications += 1;
        }
        let budget = queue::step_budget(&st.engine);
        match queue::process(
            vs.get_queue_mut(),
            &*mem,
            &mut st.engine,
            inflight,
            budget,
            role,
        ) {
            Ok(true) => {
                st.engine.stats_mut().interrupts += 1;
                vs.signal_used_queue().map_err(GpuBackendError::Call)?;
                Ok(true)
            }
            Ok(false) => Ok(true),
            Err(e) => {
                // The queue is unusable: stop serving it and tell the frontend through the
                // ring's error eventfd (it sets DEVICE_NEEDS_RESET).
                if role == QueueRole::Control {
                    st.inflight = None;
                }
                vs.set_enabled(false);
                drop(vs);
                let told = vring.signal_error();
                if let Some(more) = st.unusable.count() {
                    log::warn!(
                        "{role:?} queue unusable ({e}); ring stopped{}{more}",
                        if told {
                            ", frontend told"
                        } else {
                            " (no error eventfd)"
                        }
                    );
                }
                Ok(false)
            }
        }
    }

    /// Whether `vring`'s queue has work: a command in flight, or requests not taken yet.
    fn pending(&self, vring: &ErrVring, role: QueueRole) -> bool {
        let st = self.lock();
        if role == QueueRole::Control && st.inflight.is_some() {
            return true;
        }
        let Some(atomic) = st.mem.clone() else {
            return false;
        };
        drop(st);
        let mem = atomic.memory();
        let q = vring.get_ref();
        q.get_queue()
            .avail_idx(&*mem, std::sync::atomic::Ordering::Acquire)
            .is_ok_and(|a| a.0 != q.get_queue().next_avail())
    }

    /// Whether the daemon has asked the vring workers to exit: their exit event is readable
    /// (it is left for the worker's event loop to read, which then ends).
    fn exit_requested(&self) -> bool {
        let mut fds = [libc::pollfd {
            fd: self.exit.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: `fds` is one valid pollfd, alive for the call; a zero timeout never blocks,
        // and poll(2) only writes `revents`.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
        n > 0 && fds[0].revents & libc::POLLIN != 0
    }
}

/// The protocol features the backend offers.
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::RESET_DEVICE
        | VhostUserProtocolFeatures::BACKEND_REQ
        | VhostUserProtocolFeatures::SHMEM
}

impl VhostUserBackend for GpuBackend {
    type Bitmap = ();
    type Vring = ErrVring;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        DEVICE_FEATURES | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&self, features: u64) {
        let on = features & (1 << p::VIRTIO_GPU_F_PVGPU_MEM) != 0;
        self.lock().engine.set_enabled(on);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        protocol_features()
    }

    fn reset_device(&self) {
        let mut s = self.lock();
        s.inflight = None;
        s.engine.reset();
        s.engine.set_enabled(false);
    }

    fn stop_vring(&self, queue_index: u32) -> std::io::Result<()> {
        // The command under way is dropped unanswered, as by a reset (see the module comment).
        if queue_index == u32::from(p::CONTROLQ) {
            let mut s = self.lock();
            if s.inflight.take().is_some() {
                if let Some(more) = s.dropped.count() {
                    log::warn!(
                        "control ring stopped while a command was under way; it is dropped{more}"
                    );
                }
            }
            s.engine.cancel();
        }
        Ok(())
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The handler sets it on each vring's queue, where queue::process reads it.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let c = config_space(0);
        let start = offset as usize;
        match start.checked_add(size as usize) {
            Some(end) if end <= c.len() && size > 0 => c[start..end].to_vec(),
            _ => Vec::new(),
        }
    }

    fn set_config(&self, _offset: u32, _buf: &[u8]) -> std::io::Result<()> {
        // events_clear: there are no events to clear (events_read is always 0 here).
        Ok(())
    }

    fn update_memory(&self, mem: BackendMemory) -> std::io::Result<()> {
        let mut s = self.lock();
        // The handler has already swapped the table in; a refused table leaves the device
        // without memory (no queue is served, nothing is touched) until a good one comes.
        s.mem = None;
        s.engine.set_ram(pvgpu_device::guest_ram::RamRanges::none());
        let ranges = ram_ranges(&mem.memory()).map_err(GpuBackendError::from)?;
        s.engine.set_ram(ranges);
        s.mem = Some(mem);
        Ok(())
    }

    fn set_backend_req_fd(&self, backend: Backend) {
        // Offer VRAM at once (no reply asked: see the module comment).
        backend.set_reply_ack_flag(false);
        let map = VhostUserMMap {
            shmid: p::SHM_ID_VRAM,
            fd_offset: 0,
            shm_offset: 0,
            len: self.vram_size,
            flags: VhostUserMMapFlags::WRITABLE.bits(),
            ..Default::default()
        };
        let mut s = self.lock();
        match s.engine.vram().memfd() {
            Some(memfd) => {
                if let Err(e) = backend.shmem_map(&map, memfd.file()) {
                    log::warn!("VRAM not offered to the frontend (SHMEM_MAP): {e}");
                }
            }
            None => log::error!("VRAM is not a memfd: it cannot be offered to the frontend"),
        }
        // Keep the channel open for the connection's life: a frontend may take its closing
        // for a broken connection (Linux's virtio_uml then removes the device).
        s.backend_req = Some(backend);
    }

    fn get_shmem_config(&self) -> std::io::Result<VhostUserShMemConfig> {
        let mut sizes = [0u64; p::SHM_ID_VRAM as usize + 1];
        sizes[p::SHM_ID_VRAM as usize] = self.vram_size;
        Ok(VhostUserShMemConfig::new(sizes.len() as u32, &sizes))
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // vhost-user-backend 0.24 registers the consumer with `into_raw_fd()` and never closes
        // it, so a fresh eventfd per connection would leak one descriptor per frontend (the
        // fuzzer ran the backend out of descriptors that way). Every connection gets the same
        // eventfd instead: the consumer aliases our descriptor (never closed through it), the
        // notifier is a duplicate that the handler owns and closes.
        let fd = self.exit.as_raw_fd();
        // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor nobody else owns.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            log::error!(
                "no exit event for the vring worker: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        // SAFETY: `dup` is ours alone and goes to the notifier, which closes it. The consumer
        // aliases `self.exit`'s descriptor, which outlives every daemon; the handler only
        // takes its number (`into_raw_fd`) for its epoll set and never closes it.
        let pair = unsafe {
            (
                EventConsumer::from_raw_fd(fd),
                EventNotifier::from_raw_fd(dup),
            )
        };
        Some(pair)
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[ErrVring],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        if evset != EventSet::IN {
            return Ok(());
        }
        let vring = vrings
            .get(usize::from(device_event))
            .ok_or(GpuBackendError::NoSuchQueue(device_event))?;
        let role = if device_event == p::CURSORQ {
            QueueRole::Cursor
        } else {
            QueueRole::Control
        };
        Ok(self.process(vring, role)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvgpu_device::guest_ram::RamRanges;
    use pvgpu_device::DeviceConfig;

    fn backend() -> GpuBackend {
        let mem = BackendMemory::new(vm_memory::GuestMemoryMmap::new());
        let config = DeviceConfig {
            vram_size: 4 << 20,
            ram: RamRanges::none(),
            max_objects: 16,
            slice_bytes: pvgpu_device::job::SLICE_BYTES,
            display: Default::default(),
            backend: pvgpu_device::MemoryBackend::Shared,
            zero_copy: pvgpu_device::ZeroCopy::CopyOnly,
        };
        let punch = super::super::mem_table::MemTablePunch::new(mem);
        GpuBackend::new(CommandEngine::new(config, Box::new(punch)).unwrap()).unwrap()
    }

    #[test]
    fn config_reads_are_bounded() {
        let b = backend();
        assert_eq!(b.get_config(0, 16), config_space(0).to_vec());
        assert_eq!(b.get_config(8, 8).len(), 8);
        assert!(b.get_config(8, 9).is_empty());
        assert!(b.get_config(200, 16).is_empty());
        assert!(b.get_config(0, 0).is_empty());
        assert!(b.get_config(u32::MAX, u32::MAX).is_empty());
    }

    #[test]
    fn offers_the_device_features_and_vram_as_region_1() {
        let b = backend();
        let f = b.features();
        assert_eq!(f & DEVICE_FEATURES, DEVICE_FEATURES);
        assert_ne!(f & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(), 0);
        assert!(b
            .protocol_features()
            .contains(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::SHMEM));
        let shm = b.get_shmem_config().unwrap();
        assert_eq!(shm.nregions, 2);
        assert_eq!(shm.memory_sizes[usize::from(p::SHM_ID_VRAM)], 4 << 20);
        assert_eq!(b.num_queues(), NUM_QUEUES);
    }

    /// A FILL over many slices: one step leaves it in flight, the worker's exit event stops
    /// the serving before the next step, the command goes on at the next kick and its data is
    /// right; a stopped control ring drops a command under way.
    #[test]
    fn a_long_command_is_served_in_steps_and_exit_is_seen_between_them() {
        use pvgpu_abi::protocol::Wire;
        use pvgpu_abi::request as rq;
        use pvgpu_device::sim_driver::{write_desc_at, RawDesc};
        use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
        const OBJ: u64 = 16 << 20;
        let (desc, avail, used, req, resp) = (0x1000u64, 0x2000u64, 0x3000u64, 0x4000, 0x5000);
        let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let mem = BackendMemory::new(ram.clone());
        let config = DeviceConfig {
            vram_size: 32 << 20,
            ram: RamRanges::none(),
            max_objects: 16,
            slice_bytes: 4096,
            display: Default::default(),
            backend: pvgpu_device::MemoryBackend::Shared,
            zero_copy: pvgpu_device::ZeroCopy::CopyOnly,
        };
        let punch = super::super::mem_table::MemTablePunch::new(mem.clone());
        let b = GpuBackend::new(CommandEngine::new(config, Box::new(punch)).unwrap()).unwrap();
        b.update_memory(mem.clone()).unwrap();
        // Object 1: 16 MiB at guest 32 MiB, in VRAM.
        let pages = [p::MemEntry {
            addr: 32 << 20,
            length: OBJ as u32,
            padding: 0,
        }];
        for (r, want) in [
            (rq::create(1, 0, OBJ), p::RESP_OK_NODATA),
            (
                rq::backing(p::CMD_ATTACH_BACKING, 1, 1, &pages),
                p::RESP_OK_NODATA,
            ),
            (rq::object(p::CMD_MIGRATE, 1), p::RESP_OK_MIGRATE),
        ] {
            let out = b.lock().engine.handle(&ram, &r);
            assert_eq!(p::CtrlHdr::read_from(&out).unwrap().type_, want);
        }
        // The control ring: one chain, a FILL of the whole object, then its response buffer.
        let control = ErrVring::new(mem.clone(), 16).unwrap();
        control.set_queue_size(16);
        control.set_queue_info(desc, avail, used).unwrap();
        control.set_queue_ready(true);
        control.set_enabled(true);
        let cursor = ErrVring::new(mem.clone(), 16).unwrap();
        let vrings = [control.clone(), cursor];
        let post = |n: u16| {
            ram.write_slice(&rq::fill(1, 0, OBJ, 0x5a), GuestAddress(req))
                .unwrap();
            let d = |i, addr, len, flags, next| {
                let raw = RawDesc {
                    addr,
                    len,
                    flags,
                    next,
                };
                write_desc_at(&ram, desc, i, raw).unwrap();
            };
            d(0, req, 48, 1, 1);
            d(1, resp, 24, 2, 0);
            ram.write_obj(0u16, GuestAddress(avail + 4 + 2 * u64::from(n % 16)))
                .unwrap();
            ram.write_obj(n + 1, GuestAddress(avail + 2)).unwrap();
        };
        let used_idx = || ram.read_obj::<u16>(GuestAddress(used + 2)).unwrap();
        let running = || b.lock().engine.is_running();
        post(0);
        assert!(b.step(&control, QueueRole::Control).unwrap());
        assert!(running(), "16 MiB of FILL in one step of 4 KiB slices");
        assert_eq!(used_idx(), 0);
        // Exit asked: the kick's handling returns without another step.
        b.exit.write(1).unwrap();
        b.handle_event(p::CONTROLQ, EventSet::IN, &vrings, 0)
            .unwrap();
        assert!(running());
        assert_eq!(used_idx(), 0);
        // Exit withdrawn: the next kick finishes the command.
        b.exit.read().unwrap();
        b.handle_event(p::CONTROLQ, EventSet::IN, &vrings, 0)
            .unwrap();
        assert!(!running());
        assert_eq!(used_idx(), 1);
        let answer: u32 = ram.read_obj(GuestAddress(resp)).unwrap();
        assert_eq!(answer, p::RESP_OK_NODATA);
        let out = b.lock().engine.handle(&ram, &rq::checksum(1, 0, OBJ));
        let crc = p::RespChecksum::read_from(&out).unwrap().crc32c;
        assert_eq!(crc, pvgpu_abi::crc32c::crc32c(&vec![0x5a; OBJ as usize]));
        // A stopped control ring drops the command under way.
        post(1);
        assert!(b.step(&control, QueueRole::Control).unwrap());
        assert!(running());
        b.stop_vring(u32::from(p::CONTROLQ)).unwrap();
        assert!(!running());
        assert!(!b.pending(&control, QueueRole::Control));
        assert_eq!(used_idx(), 1);
    }
}
