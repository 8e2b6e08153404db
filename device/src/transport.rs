//! The virtio-mmio transport (virtio 1.x, register layout version 2): identification,
//! feature negotiation with the device-status state machine, the control queue's registers,
//! interrupt status/ACK, the virtio-gpu config space and the shared-memory region registers
//! that expose VRAM as region 1.
//!
//! Every access is total: unknown offsets read as zero, odd widths on 32-bit registers read as
//! zero and are ignored on write, and writes that break the driver's required order are
//! ignored. Nothing here can panic on guest input.

use virtio_queue::{Queue, QueueT};

use pvgpu_abi::layout;
use pvgpu_abi::protocol as p;

use pvgpu_abi::virtio_mmio::{regs, status, INT_CONFIG, MMIO_MAGIC, MMIO_VERSION};

/// Size of virtio_gpu_config.
pub const CONFIG_SIZE: u64 = 16;

/// The virtqueues of the device (controlq 0, cursorq 1). A vhost-user backend serves this
/// many and a frontend sets up this many.
pub const NUM_QUEUES: usize = 2;

/// Features the device offers.
pub const DEVICE_FEATURES: u64 = (1 << p::VIRTIO_F_VERSION_1)
    | (1 << p::VIRTIO_RING_F_EVENT_IDX)
    | (1 << p::VIRTIO_GPU_F_EDID)
    | (1 << p::VIRTIO_GPU_F_PVGPU_MEM);

/// The virtio_gpu_config bytes: events_read, events_clear (reads 0), num_scanouts,
/// num_capsets. The in-process transport and the vhost-user backend (GET_CONFIG) both serve
/// this.
pub fn config_space(events_read: u32) -> [u8; CONFIG_SIZE as usize] {
    let mut c = [0u8; CONFIG_SIZE as usize];
    c[0..4].copy_from_slice(&events_read.to_le_bytes());
    c[8..12].copy_from_slice(&p::NUM_SCANOUTS.to_le_bytes());
    c[12..16].copy_from_slice(&p::NUM_CAPSETS.to_le_bytes());
    c
}

/// Errors building the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The queue could not be created.
    #[error("cannot create the control queue: {0}")]
    Queue(virtio_queue::Error),
}

/// What a register write asks of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioEvent {
    /// Nothing more to do.
    None,
    /// The driver notified the control queue: process it.
    QueueNotify,
    /// The driver reset the device: drop all objects.
    Reset,
    /// The driver set DRIVER_OK: the device is live with the negotiated features.
    DriverOk,
}

/// The virtio-mmio register state of the pvgpu device.
#[derive(Debug)]
pub struct MmioTransport {
    device_features: u64,
    driver_features: u64,
    device_features_sel: u32,
    driver_features_sel: u32,
    queue_sel: u32,
    /// controlq (0) and cursorq (1).
    queues: [Queue; 2],
    interrupt_status: u32,
    status: u32,
    shm_sel: u32,
    config_generation: u32,
    events_read: u32,
    vram_size: u64,
}

fn word(v: u64, sel: u32) -> u32 {
    match sel {
        0 => v as u32,
        1 => (v >> 32) as u32,
        _ => 0,
    }
}

impl MmioTransport {
    /// The transport of a device with `vram_size` bytes of VRAM.
    pub fn new(vram_size: u64) -> Result<Self, TransportError> {
        let controlq = Queue::new(p::CONTROLQ_SIZE_MAX).map_err(TransportError::Queue)?;
        let cursorq = Queue::new(p::CURSORQ_SIZE_MAX).map_err(TransportError::Queue)?;
        Ok(MmioTransport {
            device_features: DEVICE_FEATURES,
            driver_features: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            queue_sel: 0,
            queues: [controlq, cursorq],
            interrupt_status: 0,
            status: 0,
            shm_sel: 0,
            config_generation: 0,
            events_read: 0,
            vram_size,
        })
    }

    /// Features the device offers.
    pub fn device_features(&self) -> u64 {
        self.device_features
    }

    /// Offers `features` instead (a vhost-user frontend offers what its backend offers);
    /// takes effect for a driver that has not read the features yet.
    pub fn set_device_features(&mut self, features: u64) {
        self.device_features = features;
    }

    /// Features the driver accepted (meaningful once FEATURES_OK is set).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Whether feature `bit` was negotiated.
    pub fn negotiated(&self, bit: u32) -> bool {
        bit < 64 && self.status & status::FEATURES_OK != 0 && self.driver_features & (1 << bit) != 0
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the driver set DRIVER_OK and the device does not need a reset.
    pub fn is_live(&self) -> bool {
        self.status & status::DRIVER_OK != 0
            && self.status & (status::DEVICE_NEEDS_RESET | status::FAILED) == 0
    }

    /// The control queue.
    pub fn queue(&self) -> &Queue {
        &self.queues[0]
    }

    /// The control queue, for processing.
    pub fn queue_mut(&mut self) -> &mut Queue {
        &mut self.queues[0]
    }

    /// Queue `index` (0: controlq, 1: cursorq), if there is one.
    pub fn queue_at(&self, index: u16) -> Option<&Queue> {
        self.queues.get(usize::from(index))
    }

    /// Queue `index`, mutable, for processing.
    pub fn queue_at_mut(&mut self, index: u16) -> Option<&mut Queue> {
        self.queues.get_mut(usize::from(index))
    }

    /// The queue QUEUE_SEL names, if any.
    fn selected(&self) -> Option<&Queue> {
        usize::try_from(self.queue_sel)
            .ok()
            .and_then(|i| self.queues.get(i))
    }

    fn selected_mut(&mut self) -> Option<&mut Queue> {
        usize::try_from(self.queue_sel)
            .ok()
            .and_then(|i| self.queues.get_mut(i))
    }

    /// Pending interrupt bits.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    /// Sets interrupt bits (`INT_VRING`, `INT_CONFIG`).
    pub fn raise(&mut self, bits: u32) {
        self.interrupt_status |= bits;
    }

    /// Marks the device broken (e.g. an unusable queue) until the driver resets it.
    pub fn set_needs_reset(&mut self) {
        if self.status & status::DRIVER_OK != 0 {
            self.status |= status::DEVICE_NEEDS_RESET;
            self.config_generation = self.config_generation.wrapping_add(1);
            self.raise(INT_CONFIG);
        }
    }

    fn queue_writable(&self) -> bool {
        self.status & status::FEATURES_OK != 0
            && self.status & (status::DRIVER_OK | status::FAILED) == 0
            && self.selected().is_some_and(|q| !q.ready())
    }

    /// Handles a read of `data.len()` bytes at `offset` in the register window.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= regs::CONFIG {
            self.read_config(offset - regs::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            return;
        }
        let q = self.selected();
        let v: u32 = match offset {
            regs::MAGIC_VALUE => MMIO_MAGIC,
            regs::VERSION => MMIO_VERSION,
            regs::DEVICE_ID => p::VIRTIO_ID_GPU,
            regs::VENDOR_ID => p::PVGPU_VENDOR_ID,
            regs::DEVICE_FEATURES => word(self.device_features, self.device_features_sel),
            regs::QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size())),
            regs::QUEUE_NUM => q.map_or(0, |q| u32::from(q.size())),
            regs::QUEUE_READY => q.map_or(0, |q| u32::from(q.ready())),
            regs::QUEUE_DESC_LOW => q.map_or(0, |q| q.desc_table() as u32),
            regs::QUEUE_DESC_HIGH => q.map_or(0, |q| (q.desc_table() >> 32) as u32),
            regs::QUEUE_DRIVER_LOW => q.map_or(0, |q| q.avail_ring() as u32),
            regs::QUEUE_DRIVER_HIGH => q.map_or(0, |q| (q.avail_ring() >> 32) as u32),
            regs::QUEUE_DEVICE_LOW => q.map_or(0, |q| q.used_ring() as u32),
            regs::QUEUE_DEVICE_HIGH => q.map_or(0, |q| (q.used_ring() >> 32) as u32),
            regs::INTERRUPT_STATUS => self.interrupt_status,
            regs::STATUS => self.status,
            regs::SHM_LEN_LOW => word(self.shm_len(), 0),
            regs::SHM_LEN_HIGH => word(self.shm_len(), 1),
            regs::SHM_BASE_LOW => word(self.shm_base(), 0),
            regs::SHM_BASE_HIGH => word(self.shm_base(), 1),
            regs::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn shm_len(&self) -> u64 {
        if self.shm_sel == u32::from(p::SHM_ID_VRAM) {
            self.vram_size
        } else {
            u64::MAX
        }
    }

    fn shm_base(&self) -> u64 {
        if self.shm_sel == u32::from(p::SHM_ID_VRAM) {
            layout::VRAM_BASE
        } else {
            0
        }
    }

    fn config_bytes(&self) -> [u8; CONFIG_SIZE as usize] {
        config_space(self.events_read)
    }

    fn read_config(&self, off: u64, data: &mut [u8]) {
        if !matches!(data.len(), 1 | 2 | 4 | 8) {
            return;
        }
        let c = self.config_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            if let Some(v) = off
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| c.get(o))
            {
                *b = *v;
            }
        }
    }

    /// Handles a write of `data` at `offset` in the register window.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> MmioEvent {
        if offset >= regs::CONFIG {
            self.write_config(offset - regs::CONFIG, data);
            return MmioEvent::None;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return MmioEvent::None;
        };
        if !offset.is_multiple_of(4) {
            return MmioEvent::None;
        }
        let v = u32::from_le_bytes(bytes);
        match offset {
            regs::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            regs::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            regs::DRIVER_FEATURES => {
                let s = self.status;
                if s & status::DRIVER != 0 && s & (status::FEATURES_OK | status::FAILED) == 0 {
                    match self.driver_features_sel {
                        0 => {
                            self.driver_features =
                                (self.driver_features & !0xffff_ffff) | u64::from(v)
                        }
                        1 => {
                            self.driver_features =
                                (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                        }
                        _ => {}
                    }
                }
            }
            regs::QUEUE_SEL => self.queue_sel = v,
            regs::QUEUE_NUM if self.queue_writable() => {
                if let (Ok(n), Some(q)) = (u16::try_from(v), self.selected_mut()) {
                    q.set_size(n);
                }
            }
            regs::QUEUE_READY
                if self.status & status::FEATURES_OK != 0
                    && self.status & (status::DRIVER_OK | status::FAILED) == 0 =>
            {
                // Set up before DRIVER_OK only (no VIRTIO_F_RING_RESET); ready is checked
                // against guest memory when the queue is first used.
                if let Some(q) = self.selected_mut() {
                    q.set_ready(v == 1);
                }
            }
            regs::QUEUE_READY if v == 0 => {
                // Stopping a queue is always allowed (virtio 1.2, 4.2.2.1: the driver writes
                // 0 and reads it back); the device then leaves it alone. Starting it again
                // would need VIRTIO_F_RING_RESET, which is not offered.
                if let Some(q) = self.selected_mut() {
                    q.set_ready(false);
                }
            }
            regs::QUEUE_DESC_LOW if self.queue_writable() => {
                if let Some(q) = self.selected_mut() {
                    q.set_desc_table_address(Some(v), None)
                }
            }
            regs::QUEUE_DESC_HIGH if self.queue_writable() => {
                if let Some(q) = self.selected_mut() {
                    q.set_desc_table_address(None, Some(v))
                }
            }
            regs::QUEUE_DRIVER_LOW if self.queue_writable() => {
                if let Some(q) = self.selected_mut() {
                    q.set_avail_ring_address(Some(v), None)
                }
            }
            regs::QUEUE_DRIVER_HIGH if self.queue_writable() => {
                if let Some(q) = self.selected_mut() {
                    q.set_avail_ring_address(None, Some(v))
                }
            }
            regs::QUEUE_DEVICE_LOW if self.queue_writable() => {
                if let Some(q) = self.selected_mut() {
                    q.set_used_ring_address(Some(v), None)
                }
            }
            regs::QUEUE_DEVICE_HIGH if self.queue_writable() => {
                if let Some(q) = self.selected_mut() {
                    q.set_used_ring_address(None, Some(v))
                }
            }
            regs::QUEUE_NOTIFY
                if (v == u32::from(p::CONTROLQ) || v == u32::from(p::CURSORQ))
                    && self.is_live() =>
            {
                return MmioEvent::QueueNotify;
            }
            regs::INTERRUPT_ACK => self.interrupt_status &= !v,
            regs::STATUS => return self.write_status(v),
            regs::SHM_SEL => self.shm_sel = v,
            _ => {}
        }
        MmioEvent::None
    }

    fn write_config(&mut self, off: u64, data: &[u8]) {
        // Only events_clear (offset 4, 4 bytes) is writable.
        if off == 4 {
            if let Ok(b) = <[u8; 4]>::try_from(data) {
                self.events_read &= !u32::from_le_bytes(b);
            }
        }
    }

    /// Resets the transport to its power-on state.
    pub fn reset(&mut self) {
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.interrupt_status = 0;
        self.status = 0;
        self.shm_sel = 0;
        self.events_read = 0;
    }

    fn write_status(&mut self, v: u32) -> MmioEvent {
        if v == 0 {
            self.reset();
            return MmioEvent::Reset;
        }
        let old = self.status;
        if v > 0xff {
            return MmioEvent::None;
        }
        if v & status::FAILED != 0 {
            self.status |= status::FAILED;
            return MmioEvent::None;
        }
        // The driver may only add bits, and never DEVICE_NEEDS_RESET.
        let mut new = (v & !status::DEVICE_NEEDS_RESET) | (old & status::DEVICE_NEEDS_RESET);
        if new & old != old {
            return MmioEvent::None;
        }
        let added = new & !old;
        let has = |b| new & b != 0;
        if (has(status::DRIVER) && !has(status::ACKNOWLEDGE))
            || (has(status::FEATURES_OK) && !has(status::DRIVER))
            || (has(status::DRIVER_OK) && !has(status::FEATURES_OK))
        {
            return MmioEvent::None;
        }
        if added & status::FEATURES_OK != 0 {
            let subset = self.driver_features & !self.device_features == 0;
            let v1 = self.driver_features & (1 << p::VIRTIO_F_VERSION_1) != 0;
            if !subset || !v1 {
                // Refuse: the driver reads FEATURES_OK back as clear.
                new &= !(status::FEATURES_OK | status::DRIVER_OK);
            }
        }
        self.status = new;
        if added & status::DRIVER_OK != 0 && new & status::DRIVER_OK != 0 {
            return MmioEvent::DriverOk;
        }
        MmioEvent::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvgpu_abi::virtio_mmio::INT_VRING;

    fn rd(t: &MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(t: &mut MmioTransport, off: u64, v: u32) -> MmioEvent {
        t.write(off, &v.to_le_bytes())
    }

    fn negotiate(t: &mut MmioTransport, features: u64) {
        wr(t, regs::STATUS, status::ACKNOWLEDGE);
        wr(t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        wr(t, regs::DRIVER_FEATURES_SEL, 0);
        wr(t, regs::DRIVER_FEATURES, features as u32);
        wr(t, regs::DRIVER_FEATURES_SEL, 1);
        wr(t, regs::DRIVER_FEATURES, (features >> 32) as u32);
        wr(
            t,
            regs::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
    }

    /// ACKNOWLEDGE | DRIVER | FEATURES_OK.
    const NEGOTIATED: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;

    const ALL: u64 = (1 << 32) | (1 << 29) | (1 << 20);

    #[test]
    fn identification() {
        let t = MmioTransport::new(1 << 20).unwrap();
        assert_eq!(rd(&t, regs::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(rd(&t, regs::VERSION), 2);
        assert_eq!(rd(&t, regs::DEVICE_ID), 16);
        assert_eq!(rd(&t, regs::VENDOR_ID), p::PVGPU_VENDOR_ID);
        assert_eq!(rd(&t, regs::QUEUE_NUM_MAX), 1024);
        assert_eq!(rd(&t, regs::DEVICE_FEATURES), 1 << 29 | 1 << 20 | 1 << 1);
        // Odd widths and offsets read zero.
        let mut b = [0xffu8; 2];
        t.read(regs::MAGIC_VALUE, &mut b);
        assert_eq!(b, [0, 0]);
        assert_eq!(rd(&t, 0x2), 0);
        assert_eq!(rd(&t, 0xf00), 0);
        let mut big = [0xffu8; 3];
        t.read(regs::CONFIG, &mut big);
        assert_eq!(big, [0; 3]);
    }

    #[test]
    fn feature_words_and_negotiation() {
        let mut t = MmioTransport::new(1 << 20).unwrap();
        wr(&mut t, regs::DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(&t, regs::DEVICE_FEATURES), 1);
        wr(&mut t, regs::DEVICE_FEATURES_SEL, 7);
        assert_eq!(rd(&t, regs::DEVICE_FEATURES), 0);
        negotiate(&mut t, ALL);
        assert_ne!(rd(&t, regs::STATUS) & status::FEATURES_OK, 0);
        assert!(t.negotiated(p::VIRTIO_GPU_F_PVGPU_MEM));
        assert!(!t.negotiated(70));
        // Features are frozen after FEATURES_OK.
        wr(&mut t, regs::DRIVER_FEATURES_SEL, 0);
        wr(&mut t, regs::DRIVER_FEATURES, 0);
        assert_eq!(t.driver_features(), ALL);
    }

    #[test]
    fn features_ok_is_refused_without_version_1_or_with_unknown_bits() {
        let mut t = MmioTransport::new(1 << 20).unwrap();
        negotiate(&mut t, 1 << 20);
        assert_eq!(rd(&t, regs::STATUS) & status::FEATURES_OK, 0);
        let mut t = MmioTransport::new(1 << 20).unwrap();
        negotiate(&mut t, ALL | 1 << 5);
        assert_eq!(rd(&t, regs::STATUS) & status::FEATURES_OK, 0);
        // Without the pvgpu bit it is fine (commands will be refused later).
        let mut t = MmioTransport::new(1 << 20).unwrap();
        negotiate(&mut t, 1 << 32);
        assert_ne!(rd(&t, regs::STATUS) & status::FEATURES_OK, 0);
        assert!(!t.negotiated(p::VIRTIO_GPU_F_PVGPU_MEM));
    }

    #[test]
    fn status_order_is_enforced() {
        let mut t = MmioTransport::new(1 << 20).unwrap();
        // DRIVER_OK straight away: ignored.
        wr(&mut t, regs::STATUS, status::DRIVER_OK);
        assert_eq!(rd(&t, regs::STATUS), 0);
        wr(&mut t, regs::STATUS, status::DRIVER);
        assert_eq!(rd(&t, regs::STATUS), 0);
        // Driver features before DRIVER: ignored.
        wr(&mut t, regs::DRIVER_FEATURES, 0xffff_ffff);
        assert_eq!(t.driver_features(), 0);
        negotiate(&mut t, ALL);
        // Clearing bits: ignored.
        wr(&mut t, regs::STATUS, status::ACKNOWLEDGE);
        assert_eq!(rd(&t, regs::STATUS), NEGOTIATED);
        // The driver cannot set NEEDS_RESET.
        wr(
            &mut t,
            regs::STATUS,
            NEGOTIATED | status::DEVICE_NEEDS_RESET,
        );
        assert_eq!(rd(&t, regs::STATUS), NEGOTIATED);
        assert_eq!(
            wr(&mut t, regs::STATUS, NEGOTIATED | status::DRIVER_OK),
            MmioEvent::DriverOk
        );
        assert!(t.is_live());
        assert_eq!(wr(&mut t, regs::QUEUE_NOTIFY, 0), MmioEvent::QueueNotify);
        assert_eq!(wr(&mut t, regs::QUEUE_NOTIFY, 1), MmioEvent::QueueNotify);
        assert_eq!(wr(&mut t, regs::QUEUE_NOTIFY, 2), MmioEvent::None);
        t.set_needs_reset();
        assert!(!t.is_live());
        assert_eq!(rd(&t, regs::INTERRUPT_STATUS), INT_CONFIG);
        assert_eq!(wr(&mut t, regs::QUEUE_NOTIFY, 0), MmioEvent::None);
        assert_eq!(wr(&mut t, regs::STATUS, 0), MmioEvent::Reset);
        assert_eq!(rd(&t, regs::STATUS), 0);
        assert_eq!(rd(&t, regs::INTERRUPT_STATUS), 0);
        // FAILED sticks until reset.
        wr(&mut t, regs::STATUS, status::FAILED);
        assert_eq!(rd(&t, regs::STATUS), status::FAILED);
        assert_eq!(wr(&mut t, regs::STATUS, 0x1234), MmioEvent::None);
    }

    #[test]
    fn queue_registers() {
        let mut t = MmioTransport::new(1 << 20).unwrap();
        // Before FEATURES_OK the queue cannot be configured.
        wr(&mut t, regs::QUEUE_NUM, 16);
        assert_eq!(rd(&t, regs::QUEUE_NUM), 1024);
        negotiate(&mut t, ALL);
        wr(&mut t, regs::QUEUE_NUM, 16);
        assert_eq!(rd(&t, regs::QUEUE_NUM), 16);
        wr(&mut t, regs::QUEUE_NUM, 17); // not a power of two
        wr(&mut t, regs::QUEUE_NUM, 4096); // above the maximum
        wr(&mut t, regs::QUEUE_NUM, 0x1_0000); // does not fit u16
        assert_eq!(rd(&t, regs::QUEUE_NUM), 16);
        wr(&mut t, regs::QUEUE_DESC_LOW, 0x1000);
        wr(&mut t, regs::QUEUE_DESC_HIGH, 0x1);
        wr(&mut t, regs::QUEUE_DRIVER_LOW, 0x2000);
        wr(&mut t, regs::QUEUE_DEVICE_LOW, 0x3000);
        wr(&mut t, regs::QUEUE_DEVICE_LOW, 0x3001); // misaligned: ignored
        assert_eq!(t.queue().desc_table(), 0x1_0000_1000);
        assert_eq!(rd(&t, regs::QUEUE_DESC_HIGH), 1);
        assert_eq!(rd(&t, regs::QUEUE_DRIVER_LOW), 0x2000);
        assert_eq!(rd(&t, regs::QUEUE_DEVICE_LOW), 0x3000);
        wr(&mut t, regs::QUEUE_READY, 1);
        assert_eq!(rd(&t, regs::QUEUE_READY), 1);
        // Ready queues are frozen.
        wr(&mut t, regs::QUEUE_NUM, 32);
        assert_eq!(rd(&t, regs::QUEUE_NUM), 16);
        // The cursor queue is queue 1, set up on its own.
        wr(&mut t, regs::QUEUE_SEL, 1);
        assert_eq!(rd(&t, regs::QUEUE_NUM_MAX), 64);
        assert_eq!(rd(&t, regs::QUEUE_READY), 0);
        wr(&mut t, regs::QUEUE_NUM, 2);
        wr(&mut t, regs::QUEUE_DESC_LOW, 0x8000);
        assert_eq!(rd(&t, regs::QUEUE_NUM), 2);
        assert_eq!(rd(&t, regs::QUEUE_DESC_LOW), 0x8000);
        assert_eq!(t.queue_at(1).map(|q| q.desc_table()), Some(0x8000));
        assert_eq!(t.queue().desc_table(), 0x1_0000_1000);
        // Other queues do not exist.
        wr(&mut t, regs::QUEUE_SEL, 2);
        assert_eq!(rd(&t, regs::QUEUE_NUM_MAX), 0);
        assert_eq!(rd(&t, regs::QUEUE_READY), 0);
        wr(&mut t, regs::QUEUE_READY, 1);
        assert!(t.queue_at(2).is_none());
        wr(&mut t, regs::QUEUE_SEL, 0);
        wr(&mut t, regs::STATUS, NEGOTIATED | status::DRIVER_OK);
        assert!(t.is_live());
        // After DRIVER_OK a queue can be stopped (drivers do so before freeing its rings) but
        // not started again (no ring reset offered).
        wr(&mut t, regs::QUEUE_READY, 0);
        assert_eq!(rd(&t, regs::QUEUE_READY), 0);
        wr(&mut t, regs::QUEUE_READY, 1);
        assert_eq!(rd(&t, regs::QUEUE_READY), 0);
    }

    #[test]
    fn interrupts_config_and_shm() {
        let mut t = MmioTransport::new(64 << 20).unwrap();
        t.raise(INT_VRING | INT_CONFIG);
        wr(&mut t, regs::INTERRUPT_ACK, INT_VRING);
        assert_eq!(rd(&t, regs::INTERRUPT_STATUS), INT_CONFIG);
        // Config: events_read, events_clear, num_scanouts 1, num_capsets 0; byte access works.
        t.events_read = 1;
        let mut b = [0u8; 1];
        t.read(regs::CONFIG, &mut b);
        assert_eq!(b, [1]);
        t.write(regs::CONFIG + 4, &1u32.to_le_bytes());
        assert_eq!(rd(&t, regs::CONFIG), 0);
        assert_eq!(rd(&t, regs::CONFIG + 8), 1);
        assert_eq!(rd(&t, regs::CONFIG + 12), 0);
        assert_eq!(rd(&t, regs::CONFIG + 0x1000), 0);
        let mut b8 = [0xffu8; 8];
        t.read(u64::MAX - 3, &mut b8);
        assert_eq!(b8, [0; 8]);
        // Region 1 is VRAM; others do not exist.
        wr(&mut t, regs::SHM_SEL, 1);
        assert_eq!(rd(&t, regs::SHM_LEN_LOW), 64 << 20);
        assert_eq!(rd(&t, regs::SHM_LEN_HIGH), 0);
        assert_eq!(rd(&t, regs::SHM_BASE_LOW), layout::VRAM_BASE as u32);
        assert_eq!(
            rd(&t, regs::SHM_BASE_HIGH),
            (layout::VRAM_BASE >> 32) as u32
        );
        wr(&mut t, regs::SHM_SEL, 0);
        assert_eq!(rd(&t, regs::SHM_LEN_LOW), u32::MAX);
        assert_eq!(rd(&t, regs::SHM_LEN_HIGH), u32::MAX);
    }
}
