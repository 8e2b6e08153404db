//! The pvgpu device as the VMM sees it: the virtio-mmio register window, the control queue,
//! the command engine, VRAM, counters, and an abstract interrupt line.
//!
//! Wiring (see the README): register an ioeventfd on `VIRTIO_MMIO_BASE + QUEUE_NOTIFY_OFFSET`
//! and call [`PvgpuDevice::process_queue`] when it fires; route all other MMIO exits in the
//! window to [`PvgpuDevice::mmio_read`]/[`PvgpuDevice::mmio_write`]; give the device an
//! [`InterruptSink`] (an irqfd `EventFd` works as is); map [`PvgpuDevice::vram`]'s memfd as
//! the KVM memslot at `layout::VRAM_BASE`; implement [`GuestRamPunch`] with the guest-RAM memfd
//! (`MemFd` already implements it).

use std::sync::Arc;

use vm_memory::GuestMemory;

use crate::commands::{CommandEngine, DeviceConfig};
use crate::display::ScanoutImage;
use crate::guest_ram::GuestRamPunch;
use crate::queue::{self, QueueError, QueueRole};
use crate::stats::DeviceStats;
use crate::transport::{MmioEvent, MmioTransport, TransportError};
use crate::used_watch::UsedWatch;
use crate::vram::{Vram, VramError};
use pvgpu_abi::protocol as p;
use pvgpu_abi::virtio_mmio;

/// Offset of QueueNotify in the register window: where the VMM puts its ioeventfd.
pub const QUEUE_NOTIFY_OFFSET: u64 = virtio_mmio::regs::QUEUE_NOTIFY;

/// Errors creating or running the device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// VRAM could not be created.
    #[error(transparent)]
    Vram(#[from] VramError),
    /// The transport could not be created.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Signalling the interrupt failed.
    #[error("raising the interrupt failed: {0}")]
    Interrupt(std::io::Error),
}

/// The device's interrupt line. The VMM plugs in an irqfd (edge: one trigger per batch of
/// used buffers); INTERRUPT_STATUS stays set until the driver ACKs it.
pub trait InterruptSink: Send {
    /// Raises the interrupt.
    fn trigger(&self) -> std::io::Result<()>;
}

impl InterruptSink for vmm_sys_util::eventfd::EventFd {
    fn trigger(&self) -> std::io::Result<()> {
        self.write(1)
    }
}

/// The pvgpu virtio-mmio GPU memory device.
pub struct PvgpuDevice {
    transport: MmioTransport,
    engine: CommandEngine,
    irq: Option<Box<dyn InterruptSink>>,
    /// The chain whose command is under way (its data work runs in bounded steps).
    inflight: Option<queue::InFlight>,
    /// Where the control queue's used index is published for waiters (the used-wait port).
    used_watch: Option<Arc<UsedWatch>>,
}

impl std::fmt::Debug for PvgpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PvgpuDevice")
            .field("transport", &self.transport)
            .field("engine", &self.engine)
            .finish()
    }
}

impl PvgpuDevice {
    /// A device with `config.vram_size` bytes of fresh VRAM; `punch` frees guest RAM on CLEAN.
    pub fn new(
        config: DeviceConfig,
        punch: Box<dyn GuestRamPunch + Send>,
    ) -> Result<Self, DeviceError> {
        let engine = CommandEngine::new(config, punch)?;
        let transport = MmioTransport::new(engine.vram().size())?;
        Ok(PvgpuDevice {
            transport,
            engine,
            irq: None,
            inflight: None,
            used_watch: None,
        })
    }

    /// Publishes the control queue's used index to `watch` from now on, after every step.
    pub fn set_used_watch(&mut self, watch: Arc<UsedWatch>) {
        self.used_watch = Some(watch);
    }

    /// Sets the interrupt line (e.g. an irqfd `EventFd`).
    pub fn set_interrupt(&mut self, sink: Box<dyn InterruptSink>) {
        self.irq = Some(sink);
    }

    /// A read of `data.len()` bytes at `offset` in the register window.
    pub fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        self.transport.read(offset, data);
    }

    /// A write at `offset` in the register window. Returns true when it was a queue notify:
    /// then call [`Self::process_queue`] (with an ioeventfd, notifies never get here).
    pub fn mmio_write(&mut self, offset: u64, data: &[u8]) -> bool {
        match self.transport.write(offset, data) {
            MmioEvent::None => false,
            MmioEvent::QueueNotify => true,
            MmioEvent::Reset => {
                self.inflight = None;
                self.engine.reset();
                false
            }
            MmioEvent::DriverOk => {
                let ev = self.transport.negotiated(p::VIRTIO_RING_F_EVENT_IDX);
                let on = self.transport.negotiated(p::VIRTIO_GPU_F_PVGPU_MEM);
                for i in [p::CONTROLQ, p::CURSORQ] {
                    if let Some(q) = self.transport.queue_at_mut(i) {
                        virtio_queue::QueueT::set_event_idx(q, ev);
                    }
                }
                self.engine.set_enabled(on);
                false
            }
        }
    }

    /// Handles every request on the control queue and the cursor queue (one notify eventfd
    /// serves both; a queue's worth of each at most), each to the end. Returns whether an
    /// interrupt was raised (INTERRUPT_STATUS set and the sink, if any, triggered). A broken
    /// queue sets DEVICE_NEEDS_RESET and raises a configuration interrupt instead. This can
    /// take as long as the guest's commands take: a thread that must stay responsive uses
    /// [`Self::process_queue_step`].
    pub fn process_queue<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, DeviceError> {
        let mut raised = self.process_queue_step(mem)?;
        // A driver may stop the control queue (QUEUE_READY = 0) with a command in flight: the
        // steps leave a queue that is not ready alone, so the command waits for it (or for a
        // reset) instead of this loop spinning forever.
        while self.inflight.is_some() && self.control_queue_ready() {
            raised |= self.step(mem, u64::MAX)?;
        }
        Ok(raised)
    }

    fn control_queue_ready(&self) -> bool {
        self.transport.is_live()
            && self
                .transport
                .queue_at(p::CONTROLQ)
                .is_some_and(virtio_queue::QueueT::ready)
    }

    /// Like [`Self::process_queue`], but does [`queue::STEP_SLICES`] slices of data work at
    /// most (and at most a queue's worth of chains), so it returns within a bounded
    /// time whatever the guest queued: a long command stays in flight, and
    /// [`Self::has_pending`] is true until it is done. Call it again to go on.
    pub fn process_queue_step<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, DeviceError> {
        if !self.transport.is_live() {
            return Ok(false);
        }
        if self.inflight.is_none() {
            self.engine.stats_mut().notifications += 1;
        }
        self.step(mem, queue::step_budget(&self.engine))
    }

    fn step<M: GuestMemory>(&mut self, mem: &M, budget: u64) -> Result<bool, DeviceError> {
        let mut bits = 0;
        for (index, role) in [
            (p::CONTROLQ, QueueRole::Control),
            (p::CURSORQ, QueueRole::Cursor),
        ] {
            let Some(q) = self.transport.queue_at_mut(index) else {
                continue;
            };
            // A driver may leave the cursor queue unused, or stop a queue before it frees the
            // rings (QUEUE_READY = 0): the device leaves a queue that is not ready alone.
            if !virtio_queue::QueueT::ready(q) {
                continue;
            }
            // Only the control queue carries long commands; a cursor command is done at once.
            let mut none = None;
            let inflight = match role {
                QueueRole::Control => &mut self.inflight,
                QueueRole::Cursor => &mut none,
            };
            bits |= match queue::process(q, mem, &mut self.engine, inflight, budget, role) {
                Ok(true) => virtio_mmio::INT_VRING,
                Ok(false) => 0,
                Err(QueueError::Invalid) | Err(QueueError::Virtqueue(_)) => {
                    self.inflight = None;
                    self.transport.set_needs_reset();
                    virtio_mmio::INT_CONFIG
                }
            };
            if bits & virtio_mmio::INT_CONFIG != 0 {
                break;
            }
        }
        if let (Some(w), Some(q)) = (&self.used_watch, self.transport.queue_at(p::CONTROLQ)) {
            w.publish(virtio_queue::QueueT::next_used(q));
        }
        if bits == 0 {
            return Ok(false);
        }
        self.transport.raise(bits);
        self.engine.stats_mut().interrupts += 1;
        if let Some(irq) = &self.irq {
            irq.trigger().map_err(DeviceError::Interrupt)?;
        }
        Ok(true)
    }

    /// Whether the driver has made requests available that the device has not taken yet
    /// (cheap: one read of the avail index). Lets the VMM poll for a while after a batch
    /// instead of sleeping until the next notify.
    pub fn has_pending<M: GuestMemory>(&self, mem: &M) -> bool {
        if !self.transport.is_live() {
            return false;
        }
        if self.inflight.is_some() {
            return true;
        }
        [p::CONTROLQ, p::CURSORQ].into_iter().any(|i| {
            self.transport.queue_at(i).is_some_and(|q| {
                virtio_queue::QueueT::ready(q)
                    && virtio_queue::QueueT::avail_idx(q, mem, std::sync::atomic::Ordering::Acquire)
                        .is_ok_and(|avail| avail.0 != virtio_queue::QueueT::next_avail(q))
            })
        })
    }

    /// What the scanout shows now (RGB), or `None` when it shows nothing.
    pub fn scanout_image(&self) -> Option<ScanoutImage> {
        self.engine.scanout_image()
    }

    /// Successful RESOURCE_FLUSHes of the resource on the scanout so far.
    pub fn scanout_flushes(&self) -> u64 {
        self.engine.display().flushes()
    }

    /// VRAM: its memfd (for the KVM memslot at `layout::VRAM_BASE`, and for host-memory
    /// accounting) and the device's own mapping.
    pub fn vram(&self) -> &Vram {
        self.engine.vram()
    }

    /// The lock the device holds while pages move between guest RAM and VRAM: a host-memory
    /// probe holds it while it measures both.
    pub fn move_lock(&self) -> crate::backend::MoveLock {
        self.engine.move_lock()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DeviceStats {
        DeviceStats {
            used_waits: self.used_watch.as_ref().map_or(0, |w| w.waits()),
            ..self.engine.stats().clone()
        }
    }

    /// The command engine (objects, VRAM): for tests and diagnostics.
    pub fn engine(&self) -> &CommandEngine {
        &self.engine
    }

    /// The transport registers' state.
    pub fn transport(&self) -> &MmioTransport {
        &self.transport
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<PvgpuDevice>();
    }
}
