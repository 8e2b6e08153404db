//! The virtio-mmio transport's register map (virtio 1.2 §4.2.2), device-status bits (§2.1),
//! interrupt bits and split-virtqueue descriptor flags (§2.7.5): defined once, used by the
//! device's transport, the host-side simulated driver and tests, and the guest.

/// Register offsets (virtio 1.x §4.2.2).
pub mod regs {
    /// "virt".
    pub const MAGIC_VALUE: u64 = 0x000;
    /// 2.
    pub const VERSION: u64 = 0x004;
    /// Device ID.
    pub const DEVICE_ID: u64 = 0x008;
    /// Vendor ID.
    pub const VENDOR_ID: u64 = 0x00c;
    /// Device features, the 32-bit word chosen by DEVICE_FEATURES_SEL.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// Selects a device feature word.
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// Driver features, word chosen by DRIVER_FEATURES_SEL.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// Selects a driver feature word.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// Selects the queue the queue registers refer to.
    pub const QUEUE_SEL: u64 = 0x030;
    /// Largest size of the selected queue (0: no such queue).
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// Size of the selected queue.
    pub const QUEUE_NUM: u64 = 0x038;
    /// The selected queue is ready.
    pub const QUEUE_READY: u64 = 0x044;
    /// Write a queue index: new buffers. The VMM puts an ioeventfd here.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// Bit 0: used buffer; bit 1: configuration change.
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// Clears bits of INTERRUPT_STATUS.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Device status.
    pub const STATUS: u64 = 0x070;
    /// Descriptor table address, low word.
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// Descriptor table address, high word.
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// Available ring address, low word.
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    /// Available ring address, high word.
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    /// Used ring address, low word.
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    /// Used ring address, high word.
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    /// Selects a shared-memory region.
    pub const SHM_SEL: u64 = 0x0ac;
    /// Length of the selected region, low word (all ones: no such region).
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    /// Length, high word.
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    /// Guest-physical base of the selected region, low word.
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    /// Base, high word.
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    /// Changes whenever the config space changes.
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device config space (virtio_gpu_config).
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits.
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver.
    pub const DRIVER: u32 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error and needs a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up.
    pub const FAILED: u32 = 128;
}

/// INTERRUPT_STATUS bit: the used ring changed.
pub const INT_VRING: u32 = 1;
/// INTERRUPT_STATUS bit: the configuration changed (or the device needs a reset).
pub const INT_CONFIG: u32 = 2;

/// MagicValue: "virt".
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// Version: the virtio 1.x (non-legacy) register layout.
pub const MMIO_VERSION: u32 = 2;

/// Split-virtqueue descriptor flags (virtq_desc.flags).
pub mod desc {
    /// Another descriptor follows (`next` is valid).
    pub const F_NEXT: u16 = 1;
    /// The buffer is device-writable.
    pub const F_WRITE: u16 = 2;
    /// The buffer is a table of indirect descriptors.
    pub const F_INDIRECT: u16 = 4;
}
