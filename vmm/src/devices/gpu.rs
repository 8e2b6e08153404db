//! The pvgpu GPU device in the VM: the device model (`pvgpu_device::PvgpuDevice`) wired to KVM.
//!
//! - **Registers**: [`GpuMmio`] sits on the MMIO bus at `layout::VIRTIO_MMIO_BASE` and
//!   forwards every access in the window to the device. A QueueNotify that reaches it (only if
//!   the ioeventfd could not be registered) is processed right there, on the vCPU thread.
//! - **Notify**: an ioeventfd on `VIRTIO_MMIO_BASE + QUEUE_NOTIFY_OFFSET` (any length, any
//!   value) catches the guest's QueueNotify inside KVM, so the vCPU does not exit to the VMM;
//!   the event loop's [`QueueWorker`] wakes on it and processes the control queue.
//! - **Interrupt**: an irqfd on `layout::VIRTIO_MMIO_IRQ` is the device's `InterruptSink`.
//!   The guest polls the used ring and need not use it.
//! - **VRAM**: the device's VRAM (host memory of the same backend as guest RAM) is KVM memslot
//!   `slot` at `layout::VRAM_BASE`. The memslot's userspace address is the device's own
//!   mapping (`Vram::host_addr`), so guest, device and host accounting all see one set of
//!   pages, the VMM maps VRAM once, and pages can move between guest RAM and VRAM.
//! - **Punch**: CLEAN frees guest pages through guest RAM's host memory (`HostMemory`
//!   implements `GuestRamPunch`; guest RAM is at guest-physical 0, so offset = address).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use pvgpu_abi::layout;
use pvgpu_device::{
    DeviceConfig, DeviceError, DeviceStats, DisplayMode, PvgpuDevice, UsedWatch, ZeroCopy,
    QUEUE_NOTIFY_OFFSET,
};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::{Bus, BusDevice, BusError};
use crate::devices::queue_steps;
use crate::devices::screenshot::{Screenshot, ScreenshotError};
use crate::run::event_loop::Subscriber;
use crate::run::stats::{MemoryProbe, RunStatsError};
use crate::vstate::guest_ram::GuestRam;

/// Guest-physical address of the QueueNotify register, where the ioeventfd sits.
pub const QUEUE_NOTIFY_ADDR: u64 = layout::VIRTIO_MMIO_BASE + QUEUE_NOTIFY_OFFSET;

/// Errors putting the GPU into the VM.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The guest RAM layout was refused by the device model.
    #[error("GPU device configuration: {0}")]
    Config(#[from] pvgpu_device::guest_ram::GuestRamError),
    /// The device model could not be created (e.g. VRAM could not be made or mapped).
    #[error("GPU device: {0}")]
    Device(#[from] DeviceError),
    /// VRAM is larger than this host can address.
    #[error("VRAM of {0} bytes does not fit in this host's address space")]
    VramSize(u64),
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
    /// The register window could not be put on the MMIO bus.
    #[error("GPU register window: {0}")]
    Bus(#[from] BusError),
    /// Host-memory accounting of VRAM could not be set up.
    #[error(transparent)]
    Stats(#[from] RunStatsError),
    /// The device thread's epoll set could not be made.
    #[error("GPU device thread: {0}")]
    Events(#[from] event_manager::Error),
    /// The device thread could not be started.
    #[error("cannot start the GPU device thread: {0}")]
    Thread(std::io::Error),
    /// The device thread's seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
}

/// The thread that serves the control queue, with an event loop of its own, so a long
/// MIGRATE or CLEAN never delays the main loop (timeout, exit, host-memory sampling).
pub struct DeviceThread {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// How often the device thread looks at its stop flag while idle.
const DEVICE_THREAD_TICK_MS: i32 = 20;
/// How long stopping waits for the device thread before leaving it behind.
const DEVICE_THREAD_JOIN: std::time::Duration = std::time::Duration::from_secs(2);

impl DeviceThread {
    /// Starts serving the GPU's queues, if it has a notify eventfd. With `screenshot`, the
    /// thread also writes the scanout as a PNG when the guest flushes it (rate-limited). The
    /// thread installs its seccomp filter (per `seccomp`) before it serves anything.
    pub fn spawn(
        gpu: &mut Gpu,
        screenshot: Option<Arc<Mutex<Screenshot>>>,
        seccomp: crate::seccomp::Policy,
    ) -> Result<Option<Self>, GpuError> {
        let mmio = gpu.mmio.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let Some(worker) = gpu.take_queue_worker(stop.clone()) else {
            return Ok(None);
        };
        let mut manager = event_manager::EventManager::<Subscriber>::new()?;
        manager.add_subscriber(worker);
        let flag = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("pvgpu-gpu".into())
            .spawn(move || {
                let filtered = seccomp.enter(crate::seccomp::ThreadKind::Device, 0);
                let ok = filtered.is_ok();
                let _ = ready_tx.send(filtered);
                if !ok {
                    return;
                }
                while !flag.load(Ordering::Acquire) {
                    if let Err(e) = manager.run_with_timeout(DEVICE_THREAD_TICK_MS) {
                        log::error!("GPU device thread: {e}");
                        break;
                    }
                    if let Some(s) = &screenshot {
                        screenshot_if_due(&mmio, s);
                    }
                }
            })
            .map_err(GpuError::Thread)?;
        let thread = DeviceThread {
            stop,
            handle: Some(handle),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Some(thread)),
            Ok(Err(e)) => Err(GpuError::Seccomp(e)),
            Err(_) => Err(GpuError::Thread(std::io::Error::other(
                "the GPU device thread ended before it started",
            ))),
        }
    }
}

impl Drop for DeviceThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let Some(h) = self.handle.take() else { return };
        // The worker checks the flag between bounded batches, so this is quick; should the
        // thread be stuck anyway, leave it behind rather than hang the VMM.
        let until = std::time::Instant::now() + DEVICE_THREAD_JOIN;
        while !h.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if !h.is_finished() {
            log::error!("the GPU device thread did not stop within {DEVICE_THREAD_JOIN:?}");
        } else if h.join().is_err() {
            log::error!("the GPU device thread panicked");
        }
    }
}

/// The device as the MMIO bus and the event loop see it: the device model plus the guest
/// memory its queue lives in.
pub struct GpuMmio {
    device: PvgpuDevice,
    mem: GuestMemoryMmap,
}

impl std::fmt::Debug for GpuMmio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuMmio")
            .field("device", &self.device)
            .finish()
    }
}

impl GpuMmio {
    /// The adapter for `device`, whose queues live in `mem`.
    pub fn new(device: PvgpuDevice, mem: GuestMemoryMmap) -> Self {
        GpuMmio { device, mem }
    }

    /// Handles every request on the control queue, each to the end. A failure (only the
    /// interrupt can fail) is logged: the guest polls, so it still sees its completions.
    pub fn process_queue(&mut self) {
        if let Err(e) = self.device.process_queue(&self.mem) {
            log::warn!("GPU: {e}");
        }
    }

    /// One bounded step of queue work (a few slices of data work at most, so the lock is
    /// held briefly whatever the guest queued); [`Self::has_pending`] says whether to go on.
    pub fn process_queue_step(&mut self) {
        if let Err(e) = self.device.process_queue_step(&self.mem) {
            log::warn!("GPU: {e}");
        }
    }

    /// Whether requests are waiting on the control queue.
    pub fn has_pending(&self) -> bool {
        self.device.has_pending(&self.mem)
    }

    /// The device model.
    pub fn device(&self) -> &PvgpuDevice {
        &self.device
    }

    /// The device model, mutably (e.g. to set its interrupt line).
    pub fn device_mut(&mut self) -> &mut PvgpuDevice {
        &mut self.device
    }
}

impl BusDevice for GpuMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.device.mmio_read(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if self.device.mmio_write(offset, data) {
            // A notify that KVM's ioeventfd did not catch: handle it on this vCPU thread.
            log::debug!("GPU: queue notify by MMIO exit (not caught by the ioeventfd)");
            self.process_queue();
        }
    }
}

/// Writes the scanout as a PNG if the guest flushed it and the last write is old enough. The
/// picture is copied under the device lock and encoded after it is released.
fn screenshot_if_due(mmio: &Mutex<GpuMmio>, shot: &Mutex<Screenshot>) {
    let now = std::time::Instant::now();
    let mut s = shot.lock().unwrap_or_else(|p| p.into_inner());
    let image = {
        let g = lock(mmio);
        if !s.due(g.device().scanout_flushes(), now) {
            return;
        }
        g.device().scanout_image()
    };
    if let Some(image) = image {
        if let Err(e) = s.write(&image, now) {
            log::warn!("{e}");
        }
    }
}

/// What the screenshot at exit came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalShot {
    /// The scanout's picture was written.
    Written,
    /// The scanout shows nothing; `earlier` pictures were written during the run.
    Blank {
        /// PNGs written before.
        earlier: u64,
    },
    /// The device (or the device thread, writing a picture) stayed busy past the deadline:
    /// nothing was written.
    Busy,
}

/// The screenshot at exit: the scanout as it is now, written to `shot`'s PNG (no rate limit).
/// Waits at most `deadline` in all for the screenshot's state and the device: a device
/// thread that did not stop, or a vCPU in a long register access, may still hold them.
fn final_screenshot(
    mmio: &Mutex<GpuMmio>,
    shot: &Mutex<Screenshot>,
    deadline: std::time::Duration,
) -> Result<FinalShot, ScreenshotError> {
    let until = std::time::Instant::now() + deadline;
    // The same order as `screenshot_if_due`: the screenshot's state, then the device.
    let Some(mut s) = lock_within(shot, deadline) else {
        return Ok(FinalShot::Busy);
    };
    let left = until.saturating_duration_since(std::time::Instant::now());
    let Some(g) = lock_within(mmio, left) else {
        return Ok(FinalShot::Busy);
    };
    let image = g.device().scanout_image();
    drop(g);
    match image {
        Some(image) => s
            .write(&image, std::time::Instant::now())
            .map(|()| FinalShot::Written),
        None => Ok(FinalShot::Blank {
            earlier: s.written(),
        }),
    }
}

/// Locks the adapter, recovering it if a thread panicked while holding it.
fn lock(m: &Mutex<GpuMmio>) -> MutexGuard<'_, GpuMmio> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Locks `m` if that is possible within `deadline` (recovering it if a thread panicked while
/// holding it); `None` if it stayed busy.
fn lock_within<T>(m: &Mutex<T>, deadline: std::time::Duration) -> Option<MutexGuard<'_, T>> {
    let until = std::time::Instant::now() + deadline;
    loop {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        if std::time::Instant::now() >= until {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The event-loop subscriber that processes the control queue when the guest notifies.
pub struct QueueWorker {
    notify: EventFd,
    gpu: Arc<Mutex<GpuMmio>>,
    /// Set when the run ends: a guest that keeps its queue fed must not keep us here.
    stop: Arc<AtomicBool>,
}

impl MutEventSubscriber for QueueWorker {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        // Each step is bounded: the device serves at most a queue's worth of requests and a
        // few slices of data work, then the lock is released (vCPU register accesses get in)
        // and the stop flag is looked at again. A long command goes on in the next step.
        let stepped = queue_steps::serve(
            || self.stop.load(Ordering::Acquire),
            || {
                // Reset the counter first: a notify that arrives while we process makes the
                // eventfd readable again, so no request is left behind.
                let _ = self.notify.read();
                lock(&self.gpu).process_queue_step();
                Ok::<_, std::convert::Infallible>(true)
            },
            || lock(&self.gpu).has_pending(),
        );
        let Ok(()) = stepped;
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.notify, EventSet::IN)) {
            log::error!("cannot watch the GPU queue notify: {e}");
        }
    }
}

/// The GPU as one run holds it.
pub struct Gpu {
    mmio: Arc<Mutex<GpuMmio>>,
    notify: Option<EventFd>,
    vram_size: u64,
    ioeventfd: bool,
    irqfd: bool,
    used_watch: Arc<UsedWatch>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("vram_size", &self.vram_size)
            .field("ioeventfd", &self.ioeventfd)
            .field("irqfd", &self.irqfd)
            .finish()
    }
}

impl Gpu {
    /// Creates the device with `vram_size` bytes of VRAM (the same kind of host memory as
    /// guest RAM `ram`; pages move between them as `zero_copy` says), maps VRAM as
    /// KVM memslot `slot` at `layout::VRAM_BASE`, catches QueueNotify with an ioeventfd, and
    /// puts the register window on `mmio`. The interrupt is wired later, by
    /// [`Gpu::connect_irq`], once the in-kernel irqchip exists.
    ///
    /// Call this before KVM_CREATE_IRQCHIP: on PVM a memslot added after the irqchip costs
    /// about 7 ms (measured), before it about 0.1 ms.
    ///
    /// The VRAM memslot points at the device's mapping, so the device must outlive every vCPU
    /// that can run: the returned `Gpu` and the MMIO bus both hold it; `vm::run` stops the
    /// vCPUs before dropping the `Gpu`, and a vCPU thread that will not stop still holds the
    /// bus.
    pub fn attach(
        vm: &VmFd,
        ram: &GuestRam,
        vram_size: u64,
        zero_copy: ZeroCopy,
        display: DisplayMode,
        slot: u32,
        mmio: &mut Bus,
    ) -> Result<Self, GpuError> {
        let config = DeviceConfig {
            zero_copy,
            display,
            ..DeviceConfig::new(ram.size(), vram_size)?.with_backend(ram.host_memory().backend())
        };
        let mut device = PvgpuDevice::new(config, Box::new(ram.host_memory().clone()))?;
        let used_watch = Arc::new(UsedWatch::new());
        device.set_used_watch(used_watch.clone());

        let vram = device.vram();
        let len = vram.size();
        usize::try_from(len).map_err(|_| GpuError::VramSize(len))?;
        // SAFETY: [host_addr, host_addr + len) is the device's live mapping of its VRAM
        // (exactly `len` bytes). The mapping lives as long as the device, and the
        // device outlives every vCPU that can touch the slot (see the doc comment above). The
        // slot number is not used by guest RAM (the caller passes the next free one).
        unsafe { register_vram_slot(vm, slot, vram.host_addr() as u64, len) }
            .map_err(|source| GpuError::VramSlot { slot, source })?;

        let notify = EventFd::new(libc::EFD_NONBLOCK).map_err(GpuError::EventFd)?;
        let ioeventfd = match vm.register_ioevent(
            &notify,
            &IoEventAddress::Mmio(QUEUE_NOTIFY_ADDR),
            NoDatamatch,
        ) {
            Ok(()) => true,
            Err(e) => {
                log::warn!(
                    "GPU queue notify has no ioeventfd ({e}); notifies exit to the VMM instead"
                );
                false
            }
        };

        let gpu = Arc::new(Mutex::new(GpuMmio::new(device, ram.memory().clone())));
        mmio.insert(
            layout::VIRTIO_MMIO_BASE,
            layout::VIRTIO_MMIO_SIZE,
            gpu.clone(),
        )?;
        Ok(Gpu {
            mmio: gpu,
            notify: ioeventfd.then_some(notify),
            vram_size: len,
            ioeventfd,
            irqfd: false,
            used_watch,
        })
    }

    /// Where the device publishes its control queue's used index (for the used-wait port).
    pub fn used_watch(&self) -> Arc<UsedWatch> {
        self.used_watch.clone()
    }

    /// Gives the device an irqfd on `layout::VIRTIO_MMIO_IRQ` as its interrupt line (after
    /// KVM_CREATE_IRQCHIP). If KVM refuses, the device runs without one: the guest polls.
    pub fn connect_irq(&mut self, vm: &VmFd) -> Result<(), GpuError> {
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(GpuError::EventFd)?;
        match vm.register_irqfd(&irq, layout::VIRTIO_MMIO_IRQ) {
            Ok(()) => {
                lock(&self.mmio).device_mut().set_interrupt(Box::new(irq));
                self.irqfd = true;
            }
            Err(e) => log::warn!("GPU interrupt not wired (irqfd: {e}); the guest polls"),
        }
        Ok(())
    }

    /// The event-loop subscriber that processes the queue on notify (once; `None` after the
    /// first call, or if there is no ioeventfd).
    pub fn take_queue_worker(&mut self, stop: Arc<AtomicBool>) -> Option<Subscriber> {
        let notify = self.notify.take()?;
        Some(Arc::new(Mutex::new(QueueWorker {
            notify,
            gpu: self.mmio.clone(),
            stop,
        })))
    }

    /// A host-memory probe of `ram` and this VRAM.
    pub fn memory_probe(&self, ram: &GuestRam) -> Result<MemoryProbe, GpuError> {
        let g = lock(&self.mmio);
        Ok(MemoryProbe::new(
            ram.host_memory().clone(),
            Some(g.device().vram().host_memory().clone()),
        )
        .with_move_lock(g.device().move_lock()))
    }

    /// VRAM size in bytes.
    pub fn vram_size(&self) -> u64 {
        self.vram_size
    }

    /// Whether QueueNotify is caught by an ioeventfd.
    pub fn has_ioeventfd(&self) -> bool {
        self.ioeventfd
    }

    /// Whether the interrupt goes through an irqfd.
    pub fn has_irqfd(&self) -> bool {
        self.irqfd
    }

    /// The device counters now.
    pub fn stats(&self) -> DeviceStats {
        lock(&self.mmio).device().stats()
    }

    /// The device counters, if the device can be had within `deadline` (a thread that did
    /// not stop may still hold it); `None` otherwise.
    pub fn stats_within(&self, deadline: std::time::Duration) -> Option<DeviceStats> {
        lock_within(&self.mmio, deadline).map(|g| g.device().stats())
    }

    /// Writes the scanout as it is now to `shot`'s PNG (at exit; no rate limit), if the
    /// device can be had within `deadline` (see [`final_screenshot`]).
    pub fn final_screenshot(
        &self,
        shot: &Mutex<Screenshot>,
        deadline: std::time::Duration,
    ) -> Result<FinalShot, ScreenshotError> {
        final_screenshot(&self.mmio, shot, deadline)
    }

    /// The adapter (shared with the MMIO bus and the queue worker).
    pub fn mmio(&self) -> &Arc<Mutex<GpuMmio>> {
        &self.mmio
    }
}

/// Registers `len` bytes of VRAM mapped at `host_addr` as KVM memslot `slot`, at the VRAM
/// window's base (virtio shared-memory region 1), for the in-process device and the vhost-user
/// frontend alike.
///
/// # Safety
///
/// `[host_addr, host_addr + len)` must be a live mapping that outlives every vCPU able to touch
/// the slot, `slot` must be unused, and `len` must fit the VRAM window (at most `VRAM_MAX`), so
/// the slot stays clear of RAM and MMIO.
pub(crate) unsafe fn register_vram_slot(
    vm: &VmFd,
    slot: u32,
    host_addr: u64,
    len: u64,
) -> Result<(), kvm_ioctls::Error> {
    let region = kvm_userspace_memory_region {
        slot,
        flags: 0,
        guest_phys_addr: layout::VRAM_BASE,
        memory_size: len,
        userspace_addr: host_addr,
    };
    // SAFETY: the caller guarantees the mapping's lifetime, the free slot and the size; the
    // guest-physical range is the VRAM window, which overlaps no other slot.
    unsafe { vm.set_user_memory_region(region) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::bus::SharedDevice;
    use event_manager::SubscriberOps;
    use pvgpu_abi::protocol as p;
    use pvgpu_abi::virtio_mmio::{regs, status, INT_VRING, MMIO_MAGIC, MMIO_VERSION};
    use pvgpu_device::sim_driver::{start_driver, QueueRings};
    use vm_memory::{Bytes, GuestAddress};

    fn bus_with_device() -> (Bus, Arc<Mutex<GpuMmio>>, GuestRam) {
        let ram = GuestRam::new(layout::RAM_MIN, pvgpu_device::MemoryBackend::DEFAULT_VMM).unwrap();
        let config = DeviceConfig::new(ram.size(), 4 << 20).unwrap();
        let device = PvgpuDevice::new(config, Box::new(ram.host_memory().clone())).unwrap();
        let gpu = Arc::new(Mutex::new(GpuMmio::new(device, ram.memory().clone())));
        let mut bus = Bus::new();
        bus.insert(
            layout::VIRTIO_MMIO_BASE,
            layout::VIRTIO_MMIO_SIZE,
            gpu.clone() as SharedDevice,
        )
        .unwrap();
        (bus, gpu, ram)
    }

    fn read32(bus: &Bus, addr: u64) -> u32 {
        let mut d = [0u8; 4];
        assert!(bus.read(addr, &mut d), "nothing at {addr:#x}");
        u32::from_le_bytes(d)
    }

    #[test]
    fn identification_registers_through_the_bus() {
        let (bus, _gpu, _ram) = bus_with_device();
        let base = layout::VIRTIO_MMIO_BASE;
        assert_eq!(read32(&bus, base + regs::MAGIC_VALUE), MMIO_MAGIC);
        assert_eq!(read32(&bus, base + regs::VERSION), MMIO_VERSION);
        assert_eq!(read32(&bus, base + regs::DEVICE_ID), p::VIRTIO_ID_GPU);
        // Outside the window nothing answers.
        let mut d = [0u8; 4];
        assert!(!bus.read(base + layout::VIRTIO_MMIO_SIZE, &mut d));
        assert!(!bus.read(base - 4, &mut d));
    }

    #[test]
    fn writes_reach_the_device_and_a_stray_notify_is_harmless() {
        let (bus, gpu, _ram) = bus_with_device();
        let base = layout::VIRTIO_MMIO_BASE;
        // Status: ACKNOWLEDGE | DRIVER, then read it back.
        let ack_driver = status::ACKNOWLEDGE | status::DRIVER;
        assert!(bus.write(base + regs::STATUS, &ack_driver.to_le_bytes()));
        assert_eq!(read32(&bus, base + regs::STATUS), ack_driver);
        // A notify before the queue is live goes through the fallback path and does nothing.
        assert!(bus.write(QUEUE_NOTIFY_ADDR, &0u32.to_le_bytes()));
        // Odd sizes and offsets are the device's to refuse; no panic.
        assert!(bus.write(base + regs::STATUS + 1, &[1, 2, 3]));
        let mut d = [0u8; 8];
        assert!(bus.read(base + layout::VIRTIO_MMIO_SIZE - 2, &mut d));
        assert_eq!(gpu.lock().unwrap().device().stats().commands, 0);
    }

    /// Brings the control queue up the way a guest driver would (features: VERSION_1 and
    /// PVGPU_MEM), with 16 entries, rings at 0x30_0000.
    fn bring_up(bus: &Bus) {
        let w = |off: u64, v: u32| {
            assert!(bus.write(layout::VIRTIO_MMIO_BASE + off, &v.to_le_bytes()));
        };
        let features = (1 << p::VIRTIO_GPU_F_PVGPU_MEM) | (1 << p::VIRTIO_F_VERSION_1);
        let rings = QueueRings {
            size: 16,
            desc: DESC,
            avail: AVAIL,
            used: USED,
        };
        start_driver(w, features, &rings);
        let live = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
        assert_eq!(read32(bus, layout::VIRTIO_MMIO_BASE + regs::STATUS), live);
    }

    const DESC: u64 = 0x30_0000;
    const AVAIL: u64 = 0x30_1000;
    const USED: u64 = 0x30_2000;
    const REQ: u64 = 0x30_3000;
    const RESP: u64 = 0x30_4000;

    /// Queues request number `n` (0-based): a NOP with a 24-byte response buffer.
    fn queue_nop(mem: &GuestMemoryMmap, n: u16) {
        queue_req(mem, n, &pvgpu_abi::request::header(p::CMD_NOP));
    }

    /// Queues request number `n` (0-based): `req`, with a 24-byte response buffer.
    fn queue_req(mem: &GuestMemoryMmap, n: u16, req: &[u8]) {
        let d = u64::from(n % 8) * 2;
        mem.write_slice(req, GuestAddress(REQ)).unwrap();
        let desc = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
            let at = DESC + i * 16;
            mem.write_obj(addr, GuestAddress(at)).unwrap();
            mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            mem.write_obj(next, GuestAddress(at + 14)).unwrap();
        };
        desc(d, REQ, req.len() as u32, 1, (d + 1) as u16);
        desc(d + 1, RESP, 24, 2, 0);
        mem.write_obj(d as u16, GuestAddress(AVAIL + 4 + u64::from(n % 16) * 2))
            .unwrap();
        mem.write_obj(n + 1, GuestAddress(AVAIL + 2)).unwrap();
    }

    fn used_idx(mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    #[test]
    fn a_notify_that_exits_to_the_vmm_is_processed_on_the_spot() {
        let (bus, gpu, ram) = bus_with_device();
        let mem = ram.memory();
        bring_up(&bus);
        queue_nop(mem, 0);
        assert_eq!(used_idx(mem), 0);
        assert!(bus.write(QUEUE_NOTIFY_ADDR, &0u32.to_le_bytes()));
        assert_eq!(used_idx(mem), 1);
        let resp: u32 = mem.read_obj(GuestAddress(RESP)).unwrap();
        assert_eq!(resp, p::RESP_OK_NODATA);
        let st = gpu.lock().unwrap().device().stats();
        assert_eq!((st.commands, st.errors, st.notifications), (1, 0, 1));
        // The used-buffer interrupt is pending in INTERRUPT_STATUS.
        assert_eq!(
            read32(&bus, layout::VIRTIO_MMIO_BASE + regs::INTERRUPT_STATUS) & INT_VRING,
            INT_VRING
        );
    }

    #[test]
    fn the_queue_worker_processes_on_the_event_loop() {
        let (bus, gpu, ram) = bus_with_device();
        let mem = ram.memory().clone();
        bring_up(&bus);
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        gpu.lock()
            .unwrap()
            .device_mut()
            .set_interrupt(Box::new(irq.try_clone().unwrap()));
        let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let worker = QueueWorker {
            stop: Arc::new(AtomicBool::new(false)),
            notify: notify.try_clone().unwrap(),
            gpu: gpu.clone(),
        };
        let mut em =
            event_manager::EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
                .unwrap();
        em.add_subscriber(Arc::new(Mutex::new(worker)));
        for n in 0..3u16 {
            queue_nop(&mem, n);
            // What KVM does when the guest writes QueueNotify.
            notify.write(1).unwrap();
            assert_eq!(em.run_with_timeout(1000).unwrap(), 1);
            assert_eq!(used_idx(&mem), n + 1);
            // The counter was read: the eventfd is no longer readable.
            assert!(notify.read().is_err());
            // The irqfd was signalled.
            assert_eq!(irq.read().unwrap(), 1);
        }
        assert_eq!(gpu.lock().unwrap().device().stats().commands, 3);
    }

    #[test]
    fn flushes_write_screenshots_rate_limited() {
        use pvgpu_abi::protocol::{format, MemEntry, Rect};
        use pvgpu_abi::request as rq;
        let (bus, gpu, ram) = bus_with_device();
        let mem = ram.memory();
        bring_up(&bus);
        // A 4x4 B8G8R8A8 picture in guest memory: pixel i is (r, g, b) = (i, 2i, 3i).
        const FB: u64 = 0x31_0000;
        let bgra: Vec<u8> = (0..16u8).flat_map(|i| [3 * i, 2 * i, i, 0xff]).collect();
        mem.write_slice(&bgra, GuestAddress(FB)).unwrap();
        let all = Rect {
            x: 0,
            y: 0,
            width: 4,
            height: 4,
        };
        let backing = [MemEntry {
            addr: FB,
            length: 64,
            padding: 0,
        }];
        let mut n = 0u16;
        let mut send = |req: Vec<u8>| {
            queue_req(mem, n, &req);
            n += 1;
            assert!(bus.write(QUEUE_NOTIFY_ADDR, &0u32.to_le_bytes()));
            let resp: u32 = mem.read_obj(GuestAddress(RESP)).unwrap();
            assert_eq!(resp, p::RESP_OK_NODATA_2D);
        };
        send(rq::resource_create_2d(1, format::B8G8R8A8_UNORM, 4, 4));
        send(rq::backing(p::CMD_RESOURCE_ATTACH_BACKING, 1, 1, &backing));
        send(rq::set_scanout(0, 1, all));
        send(rq::transfer_to_host_2d(1, all, 0));
        let dir = std::env::temp_dir().join(format!("pvgpu-gpu-shot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.png");
        let shot = Mutex::new(Screenshot::new(path.clone()));
        let written = || shot.lock().unwrap().written();
        // No flush yet: nothing is written.
        screenshot_if_due(&gpu, &shot);
        assert_eq!(written(), 0);
        send(rq::resource_flush(1, all));
        screenshot_if_due(&gpu, &shot);
        assert_eq!(written(), 1);
        let mut r = png::Decoder::new(std::fs::File::open(&path).unwrap())
            .read_info()
            .unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (4, 4));
        let want: Vec<u8> = (0..16u8).flat_map(|i| [i, 2 * i, 3 * i]).collect();
        assert_eq!(&buf[..48], &want[..]);
        // Nothing new: no write. A flush right after a write waits for the interval.
        screenshot_if_due(&gpu, &shot);
        send(rq::resource_flush(1, all));
        screenshot_if_due(&gpu, &shot);
        assert_eq!(written(), 1);
        std::thread::sleep(crate::devices::screenshot::MIN_INTERVAL);
        screenshot_if_due(&gpu, &shot);
        assert_eq!(written(), 2);
        // At exit: written at once, whatever the interval.
        let d = std::time::Duration::from_millis(100);
        assert_eq!(
            final_screenshot(&gpu, &shot, d).unwrap(),
            FinalShot::Written
        );
        assert_eq!(written(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The screenshot at exit waits for a busy device only until its deadline, then gives up
    /// without writing anything.
    #[test]
    fn the_final_screenshot_gives_up_on_a_busy_device() {
        use std::time::{Duration, Instant};
        let (_bus, gpu, _ram) = bus_with_device();
        let path = std::env::temp_dir().join(format!("pvgpu-final-{}.png", std::process::id()));
        let shot = Mutex::new(Screenshot::new(path.clone()));
        let d = Duration::from_millis(50);
        // The device is held (a device thread that did not stop, say): no wait past `d`.
        let held = gpu.lock().unwrap();
        let t = Instant::now();
        assert_eq!(final_screenshot(&gpu, &shot, d).unwrap(), FinalShot::Busy);
        assert!(t.elapsed() >= d && t.elapsed() < Duration::from_secs(5));
        drop(held);
        // The same for the screenshot's own state (the device thread writing a picture).
        let busy_writer = shot.lock().unwrap();
        assert_eq!(final_screenshot(&gpu, &shot, d).unwrap(), FinalShot::Busy);
        drop(busy_writer);
        // Free: the scanout shows nothing, so there is nothing to write.
        let free = final_screenshot(&gpu, &shot, d).unwrap();
        assert_eq!(free, FinalShot::Blank { earlier: 0 });
        assert!(!path.exists());
    }
}
