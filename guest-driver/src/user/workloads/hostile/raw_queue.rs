//! A split virtqueue driven by hand, to post descriptor chains no well-behaved driver would.
//!
//! The device's registers are driven through virtio-drivers' transport ([`MmioTransport`],
//! opened with [`gpu::open_transport`], negotiated with [`gpu::negotiate`] like the real
//! driver); only the rings, which the cases corrupt, are built here: a descriptor table, an
//! avail ring and a used ring in three pages of identity-mapped heap, then buffer pages.

use alloc::vec::Vec;
use core::alloc::Layout;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::layout::PAGE_SIZE;
use pvgpu_abi::protocol as p;
use pvgpu_abi::virtio_mmio::{regs, MMIO_MAGIC};
use virtio_drivers::transport::mmio::MmioTransport;
use virtio_drivers::transport::{DeviceStatus, Transport};

use crate::user::clock;
use crate::user::gpu::{self, GpuError};

/// Entries in the queue.
pub const QSIZE: u16 = 16;
/// Buffer pages.
pub const BUFFERS: usize = 4;
/// Pages: descriptor table, avail ring, used ring, then buffers.
const PAGES: usize = 3 + BUFFERS;

/// Why the hand-driven queue could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RawQueueError {
    /// No heap memory for the rings, or not in identity-mapped RAM.
    #[error("no identity-mapped heap memory for the rings")]
    NoMemory,
    /// Opening the transport or negotiating the features failed.
    #[error("{0}")]
    Device(GpuError),
    /// The status did not read 0 after the reset.
    #[error("the status does not read 0 after reset")]
    NotReset,
    /// The control queue was still ready after the reset.
    #[error("the queue is ready after reset")]
    QueueReady,
    /// The control queue is smaller than [`QSIZE`].
    #[error("QueueNumMax is below {QSIZE}")]
    QueueTooSmall,
    /// The device did not take DRIVER_OK.
    #[error("the device did not take DRIVER_OK")]
    NoDriverOk,
}

impl From<GpuError> for RawQueueError {
    fn from(e: GpuError) -> Self {
        RawQueueError::Device(e)
    }
}

/// One split-queue descriptor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Desc {
    /// Guest-physical address.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// `virtio_mmio::desc::F_*`.
    pub flags: u16,
    /// Next descriptor, with `F_NEXT`.
    pub next: u16,
}

impl Desc {
    /// A descriptor.
    pub const fn new(addr: u64, len: u32, flags: u16, next: u16) -> Desc {
        Desc {
            addr,
            len,
            flags,
            next,
        }
    }
}

/// What the device did with a posted chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It put the chain on the used ring.
    Used {
        /// Head index.
        id: u32,
        /// Bytes written.
        len: u32,
    },
    /// It set DEVICE_NEEDS_RESET.
    NeedsReset,
    /// Neither, within the time limit.
    Timeout,
}

/// Ring addresses, when not the queue's own.
#[derive(Clone, Copy, Debug)]
pub struct Rings {
    /// Descriptor table.
    pub desc: u64,
    /// Avail ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
}

/// The hand-driven queue and its memory.
pub struct RawQueue {
    transport: MmioTransport<'static>,
    regs: u64,
    mem: *mut u8,
    ram_size: u64,
    next_avail: u16,
    last_used: u16,
}

fn layout() -> Option<Layout> {
    Layout::from_size_align(PAGES * PAGE_SIZE as usize, PAGE_SIZE as usize).ok()
}

impl RawQueue {
    /// Opens the device `info` names and puts the queue's memory on the heap (identity-mapped
    /// guest RAM). The object layer's driver must stay idle while this queue lives (see
    /// [`gpu::open_transport`]).
    pub fn new(info: &BootInfo) -> Result<RawQueue, RawQueueError> {
        // SAFETY: the caller keeps the object layer's driver idle while this queue lives, and
        // restarts it (objects::reinit) after this queue is dropped.
        let transport = unsafe { gpu::open_transport(info) }?;
        let l = layout().ok_or(RawQueueError::NoMemory)?;
        // SAFETY: the layout has a non-zero size.
        let mem = unsafe { alloc::alloc::alloc_zeroed(l) };
        if mem.is_null() {
            return Err(RawQueueError::NoMemory);
        }
        let q = RawQueue {
            transport,
            regs: info.virtio_mmio_base,
            mem,
            ram_size: info.ram_size,
            next_avail: 0,
            last_used: 0,
        };
        // The device reaches the rings by physical address: they must be identity-mapped
        // RAM (dropping `q` gives the memory back otherwise).
        let end = (mem as u64).checked_add(l.size() as u64);
        match end {
            Some(end) if end <= info.ram_size => Ok(q),
            _ => Err(RawQueueError::NoMemory),
        }
    }

    fn page(&self, i: usize) -> u64 {
        self.mem as u64 + (i as u64) * PAGE_SIZE
    }

    /// Guest-physical address of buffer page `i` (< [`BUFFERS`]).
    pub fn buf(&self, i: usize) -> u64 {
        self.page(3 + i.min(BUFFERS - 1))
    }

    /// Writes `bytes` at `off` in buffer page `i`.
    pub fn put(&mut self, i: usize, off: usize, bytes: &[u8]) {
        let n = bytes.len().min((PAGE_SIZE as usize).saturating_sub(off));
        // SAFETY: the destination lies inside buffer page `i`, which this queue owns.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.buf(i) as *mut u8).add(off), n)
        };
    }

    /// Fills buffer page `i` with `b`.
    pub fn fill(&mut self, i: usize, b: u8) {
        // SAFETY: buffer page `i` is this queue's own.
        unsafe { core::ptr::write_bytes(self.buf(i) as *mut u8, b, PAGE_SIZE as usize) };
    }

    /// `n` bytes at `off` of buffer page `i`.
    pub fn get(&self, i: usize, off: usize, n: usize) -> Vec<u8> {
        let n = n.min((PAGE_SIZE as usize).saturating_sub(off));
        let mut v = alloc::vec![0u8; n];
        for (k, x) in v.iter_mut().enumerate() {
            // SAFETY: off + k < PAGE_SIZE, inside buffer page `i`, which this queue owns;
            // the device may write it, so it is read volatile, byte by byte.
            *x = unsafe { read_volatile((self.buf(i) as *const u8).add(off + k)) };
        }
        v
    }

    /// Device status.
    pub fn status(&self) -> DeviceStatus {
        self.transport.get_status()
    }

    /// Whether the register window still reads as a virtio-mmio device. (The transport reads
    /// MagicValue only when it opens the device, so this one read is made here.)
    pub fn magic_ok(&self) -> bool {
        // SAFETY: MagicValue is a read-only register inside the window the transport drives
        // (ring 0 maps it uncached for ring 3); reading it has no side effect.
        let magic = unsafe { read_volatile((self.regs + regs::MAGIC_VALUE) as *const u32) };
        magic == MMIO_MAGIC
    }

    /// Resets the device (it forgets the queue and every object).
    pub fn reset(&mut self) {
        self.transport.set_status(DeviceStatus::empty());
        let _ = self.transport.ack_interrupt();
    }

    /// Resets the device, negotiates virtio 1 and pvgpu, and sets the queue up on `rings`
    /// (or this queue's own memory), then DRIVER_OK.
    pub fn start(&mut self, rings: Option<Rings>) -> Result<(), RawQueueError> {
        self.reset();
        if self.status() != DeviceStatus::empty() {
            return Err(RawQueueError::NotReset);
        }
        for i in 0..3 {
            // SAFETY: the ring pages are this queue's own; the device was just reset and
            // no longer uses them.
            unsafe { core::ptr::write_bytes(self.page(i) as *mut u8, 0, PAGE_SIZE as usize) };
        }
        self.next_avail = 0;
        self.last_used = 0;
        let st = gpu::negotiate(&mut self.transport)?;
        if self.transport.queue_used(p::CONTROLQ) {
            return Err(RawQueueError::QueueReady);
        }
        if self.transport.max_queue_size(p::CONTROLQ) < u32::from(QSIZE) {
            return Err(RawQueueError::QueueTooSmall);
        }
        let r = rings.unwrap_or(self.own_rings());
        self.transport
            .queue_set(p::CONTROLQ, u32::from(QSIZE), r.desc, r.avail, r.used);
        self.transport.set_status(st | DeviceStatus::DRIVER_OK);
        if !self.status().contains(DeviceStatus::DRIVER_OK) {
            return Err(RawQueueError::NoDriverOk);
        }
        Ok(())
    }

    /// The queue's own rings.
    pub fn own_rings(&self) -> Rings {
        Rings {
            desc: self.page(0),
            avail: self.page(1),
            used: self.page(2),
        }
    }

    /// Writes `descs` at table indices 0.., puts `heads` on the avail ring, sets the avail
    /// index (to `idx`, or to the number posted) and notifies.
    pub fn post(&mut self, descs: &[Desc], heads: &[u16], idx: Option<u16>) {
        let table = self.page(0) as *mut u8;
        for (i, d) in descs.iter().take(QSIZE as usize).enumerate() {
            // SAFETY: the descriptor table is this queue's page 0; entry i < QSIZE is
            // inside it (16 bytes each); the fields are written at their virtio offsets.
            unsafe {
                let e = table.add(i * 16);
                write_volatile(e as *mut u64, d.addr);
                write_volatile(e.add(8) as *mut u32, d.len);
                write_volatile(e.add(12) as *mut u16, d.flags);
                write_volatile(e.add(14) as *mut u16, d.next);
            }
        }
        let avail = self.page(1) as *mut u16;
        for &h in heads {
            let slot = 2 + (self.next_avail % QSIZE) as usize;
            // SAFETY: avail ring page: flags, idx, then QSIZE u16 entries; slot is inside.
            unsafe { write_volatile(avail.add(slot), h) };
            self.next_avail = self.next_avail.wrapping_add(1);
        }
        fence(Ordering::SeqCst);
        // SAFETY: the avail ring's idx field, at byte 2 of page 1.
        unsafe { write_volatile(avail.add(1), idx.unwrap_or(self.next_avail)) };
        fence(Ordering::SeqCst);
        self.transport.notify(p::CONTROLQ);
    }

    /// Waits up to `timeout_us` for the next used entry or DEVICE_NEEDS_RESET.
    pub fn wait(&mut self, timeout_us: u64) -> Outcome {
        let start = clock::ticks();
        let used = self.page(2) as *const u8;
        loop {
            // SAFETY: the used ring's idx field, at byte 2 of page 2.
            let idx = unsafe { read_volatile(used.add(2) as *const u16) };
            if idx != self.last_used {
                fence(Ordering::SeqCst);
                let slot = (self.last_used % QSIZE) as usize;
                // SAFETY: used ring element `slot` (8 bytes at 4 + 8 * slot) is in page 2.
                let (id, len) = unsafe {
                    let e = used.add(4 + 8 * slot);
                    (
                        read_volatile(e as *const u32),
                        read_volatile(e.add(4) as *const u32),
                    )
                };
                self.last_used = self.last_used.wrapping_add(1);
                return Outcome::Used { id, len };
            }
            if self.status().contains(DeviceStatus::DEVICE_NEEDS_RESET) {
                return Outcome::NeedsReset;
            }
            if clock::expired(start, timeout_us) {
                return Outcome::Timeout;
            }
            core::hint::spin_loop();
        }
    }

    /// Guest RAM size (addresses at or past it are not RAM).
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }
}

impl Drop for RawQueue {
    fn drop(&mut self) {
        // The device must stop using the rings before their memory goes back.
        self.reset();
        if let Some(l) = layout() {
            // SAFETY: `mem` came from alloc_zeroed with this layout.
            unsafe { alloc::alloc::dealloc(self.mem, l) };
        }
    }
}
