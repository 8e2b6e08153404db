//! The pvgpu virtio driver (ring 3): finds the device from the boot info, negotiates features
//! (virtio 1 and the pvgpu extension), sets up the control queue, and submits batches of
//! commands with one notify, waiting by polling the used ring for a short while and then
//! asleep in the VMM (the used-wait port) until the device answers.
//!
//! The transport and the split virtqueue are virtio-drivers'. The MMIO registers are mapped
//! into ring 3; the notify is an MMIO write that the VMM catches with an ioeventfd.

pub mod cmd;
pub mod hal;

use alloc::vec::Vec;

use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::protocol::{self as p, CtrlHdr, RespInfo, Wire};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceStatus, DeviceType, Transport};

pub use cmd::Cmd;
use hal::GuestHal;

/// Descriptors in the control queue.
pub const QUEUE_SIZE: usize = 256;
/// Most commands in flight at once (each uses two descriptors).
pub const MAX_IN_FLIGHT: usize = QUEUE_SIZE / 2;
/// How long the driver polls the used ring before it sleeps on the used-wait port: a short
/// command is answered within this, so it never pays for the port's VM exit and the wake-up
/// (a sleeping vCPU takes a few hundred µs to wake on PVM). A batch that moves pages sleeps at
/// once (see [`Cmd::moves_pages`]).
const SPIN_US: u64 = 300;

/// Driver errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// The boot info names no device.
    #[error("no pvgpu device in the boot info")]
    NoDevice,
    /// The MMIO window does not hold a virtio GPU.
    #[error("the MMIO window does not hold a virtio GPU")]
    NotAGpu,
    /// The device does not offer a feature the driver needs.
    #[error("the device lacks feature bit {0}")]
    MissingFeature(u32),
    /// The device refused FEATURES_OK.
    #[error("the device refused the negotiated features")]
    FeaturesRefused,
    /// The virtqueue could not be set up or used.
    #[error("virtqueue error: {0}")]
    Queue(virtio_drivers::Error),
    /// The device answered with an error response.
    #[error("{cmd} failed with response {code:#x}")]
    Device {
        /// The command's name.
        cmd: &'static str,
        /// The response type.
        code: u32,
    },
    /// The response is malformed (short, wrong type, or its fence does not match).
    #[error("{0}: malformed response")]
    BadResponse(&'static str),
    /// The device broke the queue protocol (answered out of order or with a bad id); the
    /// driver stopped using the queue.
    #[error("the device broke the queue protocol; the driver stopped")]
    Broken,
}

/// The driver.
pub struct Gpu {
    transport: MmioTransport<'static>,
    queue: VirtQueue<GuestHal, QUEUE_SIZE>,
    /// What GET_INFO reported.
    pub info: RespInfo,
    /// Guest-physical base of the VRAM window.
    pub vram_base: u64,
    next_fence: u64,
    /// Commands submitted and notifies sent, for statistics.
    pub commands: u64,
    /// Notifies sent (one per batch).
    pub notifies: u64,
    /// Set once the device broke the queue protocol: nothing more is submitted.
    broken: bool,
    /// Used-ring entries popped so far (mod 2^16): the used index this driver has consumed
    /// up to (a batch of n waits for this plus n on the used-wait port).
    used_seen: u16,
}

/// Opens the virtio-mmio transport of the device the boot info names, and checks it is a GPU.
///
/// # Safety
/// Only one transport may drive the device at a time: while the returned one lives, no other
/// may be used (the object layer's driver owns one; the `hostile` workload opens its own only
/// while that driver is idle, and restarts the driver afterwards).
pub unsafe fn open_transport(info: &BootInfo) -> Result<MmioTransport<'static>, GpuError> {
    let header = core::ptr::NonNull::new(info.virtio_mmio_base as *mut VirtIOHeader)
        .ok_or(GpuError::NoDevice)?;
    // SAFETY: ring 0 maps the virtio-mmio window (uncached) for ring 3 at its physical
    // address for the guest's whole life; the caller keeps every other transport idle.
    let transport = unsafe { MmioTransport::new(header, info.virtio_mmio_size as usize) }
        .map_err(|_| GpuError::NotAGpu)?;
    if transport.device_type() != DeviceType::GPU {
        return Err(GpuError::NotAGpu);
    }
    Ok(transport)
}

/// Resets the device and negotiates virtio 1 and the pvgpu extension, up to FEATURES_OK.
/// Returns the status the driver has written (ACKNOWLEDGE | DRIVER | FEATURES_OK).
pub fn negotiate(transport: &mut impl Transport) -> Result<DeviceStatus, GpuError> {
    transport.set_status(DeviceStatus::empty());
    transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    let offered = transport.read_device_features();
    for bit in [p::VIRTIO_F_VERSION_1, p::VIRTIO_GPU_F_PVGPU_MEM] {
        if offered & (1 << bit) == 0 {
            return Err(GpuError::MissingFeature(bit));
        }
    }
    let wanted = (1u64 << p::VIRTIO_F_VERSION_1) | (1 << p::VIRTIO_GPU_F_PVGPU_MEM);
    transport.write_driver_features(wanted);
    let st = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK;
    transport.set_status(st);
    if !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
        return Err(GpuError::FeaturesRefused);
    }
    Ok(st)
}

impl Gpu {
    /// Finds, resets and starts the device.
    pub fn probe(info: &BootInfo) -> Result<Gpu, GpuError> {
        if info.virtio_mmio_base == 0 || info.vram_size == 0 {
            return Err(GpuError::NoDevice);
        }
        // SAFETY: the object layer holds the only driver; it probes when nothing else uses
        // the device (the `hostile` workload's own transport is gone before `reinit`).
        let mut transport = unsafe { open_transport(info) }?;
        let st = negotiate(&mut transport)?;
        let queue =
            VirtQueue::new(&mut transport, p::CONTROLQ, false, false).map_err(GpuError::Queue)?;
        transport.set_status(st | DeviceStatus::DRIVER_OK);
        let mut gpu = Gpu {
            transport,
            queue,
            info: RespInfo::default(),
            vram_base: info.vram_base,
            next_fence: 1,
            commands: 0,
            notifies: 0,
            broken: false,
            used_seen: 0,
        };
        let mut c = [Cmd::get_info()];
        gpu.submit(&mut c)?;
        gpu.info = c[0]
            .response::<RespInfo>()
            .ok_or(GpuError::BadResponse("get_info"))?;
        Ok(gpu)
    }

    /// Submits `cmds` (fenced) with one notify per batch of up to [`MAX_IN_FLIGHT`], waits for
    /// all of them by polling, and checks every response. Every command runs even when an
    /// earlier one failed; the first error is returned, and each command's own outcome is in
    /// [`Cmd::status`].
    pub fn submit(&mut self, cmds: &mut [Cmd]) -> Result<(), GpuError> {
        if self.broken {
            return Err(GpuError::Broken);
        }
        let mut first_err = None;
        for chunk in cmds.chunks_mut(MAX_IN_FLIGHT) {
            let mut tokens = Vec::with_capacity(chunk.len());
            let mut add_err = None;
            for c in chunk.iter_mut() {
                c.set_fence(self.next_fence);
                self.next_fence += 1;
                // SAFETY: the buffers live in `c`, which is not touched until pop_used below
                // returns them (or, if the queue breaks, they are leaked to the device).
                match unsafe { self.queue.add(&[&c.req], &mut [&mut c.resp]) } {
                    Ok(t) => tokens.push(t),
                    Err(e) => {
                        add_err = Some(GpuError::Queue(e));
                        break;
                    }
                }
            }
            // Whatever was queued is notified and waited for, even if a later add failed: the
            // device owns those buffers until it gives them back.
            if !tokens.is_empty() && self.queue.should_notify() {
                self.transport.notify(p::CONTROLQ);
                self.notifies += 1;
            }
            let queued = tokens.len();
            let spin_us = if chunk.iter().any(|c| c.moves_pages()) {
                0
            } else {
                SPIN_US
            };
            // Sleep until the whole batch is answered: a vCPU back in guest mode between its
            // commands would slow the page moves of the rest.
            let target = self.used_seen.wrapping_add(queued as u16);
            for (i, (c, t)) in chunk.iter_mut().zip(tokens).enumerate() {
                self.wait_for_answer(spin_us, target);
                // SAFETY: same buffers as were added with this token.
                match unsafe { self.queue.pop_used(t, &[&c.req], &mut [&mut c.resp]) } {
                    Ok(used) => {
                        c.used = used as usize;
                        self.used_seen = self.used_seen.wrapping_add(1);
                    }
                    Err(_) => {
                        // The device answered out of order or with a bad id: its view of the
                        // queue no longer matches ours. The buffers it may still write are
                        // leaked rather than freed, and the driver stops.
                        self.broken = true;
                        for c in chunk.iter_mut().take(queued).skip(i) {
                            core::mem::forget(core::mem::take(&mut c.req));
                            core::mem::forget(core::mem::take(&mut c.resp));
                        }
                        return Err(GpuError::Broken);
                    }
                }
                self.commands += 1;
                if let Err(e) = c.check() {
                    first_err.get_or_insert(e);
                }
            }
            if let Some(e) = add_err {
                return Err(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Returns once the used ring has an entry to pop: polls for `spin_us`, then sleeps in
    /// the VMM a millisecond at a time until the device's used index reaches `target`.
    fn wait_for_answer(&self, spin_us: u64, target: u16) {
        let start = super::clock::ticks();
        while !self.queue.can_pop() {
            if super::clock::expired(start, spin_us) {
                crate::port::wait_used(target);
            } else {
                core::hint::spin_loop();
            }
        }
    }

    /// Submits one command.
    pub fn submit_one(&mut self, mut c: Cmd) -> Result<Cmd, GpuError> {
        self.submit(core::slice::from_mut(&mut c))?;
        Ok(c)
    }

    /// A bare QueueNotify with nothing queued: the cost of the notify alone (the VMM's
    /// ioeventfd catches it; the device finds no work).
    pub fn notify_only(&mut self) {
        self.transport.notify(p::CONTROLQ);
        self.notifies += 1;
    }

    /// Acknowledges any pending interrupt (the driver polls, so this only keeps the status tidy).
    pub fn ack_interrupt(&mut self) {
        let _ = self.transport.ack_interrupt();
    }
}

/// Reads the header of a response.
pub fn response_header(resp: &[u8]) -> Option<CtrlHdr> {
    CtrlHdr::read_from(resp)
}
