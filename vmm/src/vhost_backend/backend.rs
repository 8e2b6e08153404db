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
//! - A kick runs every available request, then polls the avail ring for a short while (as the
//!   in-process device thread does), and signals the call eventfd when the queue says so.

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

/// How long a kick keeps polling the avail ring after its last request (see
/// `devices::gpu::POLL_WINDOW` for why polling pays on this host).
const POLL_WINDOW: std::time::Duration = std::time::Duration::from_micros(200);

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

    fn process(&self, vring: &ErrVring, role: QueueRole) -> Result<(), GpuBackendError> {
        let mut st = self.lock();
        let Some(atomic) = st.mem.clone() else {
            return Ok(());
        };
        let mem = atomic.memory();
        let mut last = std::time::Instant::now();
        loop {
            let mut vs = vring.get_mut();
            st.engine.stats_mut().notifications += 1;
            // Each command runs to the end here (no budget): the split backend has no stop
            // flag or register accesses waiting on this lock.
            match queue::process(
                vs.get_queue_mut(),
                &*mem,
                &mut st.engine,
                &mut None,
                u64::MAX,
                role,
            ) {
                Ok(true) => {
                    st.engine.stats_mut().interrupts += 1;
                    vs.signal_used_queue().map_err(GpuBackendError::Call)?;
                }
                Ok(false) => {}
                Err(e) => {
                    // The queue is unusable: stop serving it and tell the frontend through the
                    // ring's error eventfd (it sets DEVICE_NEEDS_RESET).
                    vs.set_enabled(false);
                    drop(vs);
                    let told = vring.signal_error();
                    log::warn!(
                        "{role:?} queue unusable ({e}); ring stopped{}",
                        if told {
                            ", frontend told"
                        } else {
                            " (no error eventfd)"
                        }
                    );
                    return Ok(());
                }
            }
            drop(vs);
            // Poll briefly for the next batch.
            loop {
                let q = vring.get_ref();
                let pending = q
                    .get_queue()
                    .avail_idx(&*mem, std::sync::atomic::Ordering::Acquire)
                    .is_ok_and(|a| a.0 != q.get_queue().next_avail());
                if pending {
                    last = std::time::Instant::now();
                    break;
                }
                if last.elapsed() > POLL_WINDOW {
                    return Ok(());
                }
                std::hint::spin_loop();
            }
        }
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
        s.engine.reset();
        s.engine.set_enabled(false);
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
}
