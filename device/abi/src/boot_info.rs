//! The boot-info block: what the VMM tells the guest kernel at entry.
//!
//! The VMM writes it at [`crate::layout::BOOT_INFO_ADDR`] and enters every vCPU in 64-bit mode
//! with `rdi` = that address and `rsi` = the vCPU index. It is encoded explicitly as
//! little-endian fields at fixed offsets so that neither side depends on struct layout.

use crate::layout;

/// "PVGPUBI1": marks a valid block.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"PVGPUBI1");
/// The version this crate writes and accepts.
pub const BOOT_INFO_VERSION: u32 = 1;
/// Encoded size in bytes.
pub const BOOT_INFO_SIZE: usize = 104;

/// Errors decoding a boot-info block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BootInfoError {
    /// Fewer bytes than [`BOOT_INFO_SIZE`].
    #[error("boot info truncated: {0} bytes")]
    Truncated(usize),
    /// The magic number is wrong.
    #[error("boot info magic {0:#x} is wrong")]
    BadMagic(u64),
    /// A version this guest does not understand.
    #[error("boot info version {0} is not supported")]
    BadVersion(u32),
    /// A field is out of range (e.g. no CPUs, or more than MAX_VCPUS).
    #[error("boot info field {0} is out of range")]
    BadField(&'static str),
}

/// What the guest learns at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BootInfo {
    /// Number of vCPUs the VMM started.
    pub num_cpus: u32,
    /// Guest RAM is `[0, ram_size)`.
    pub ram_size: u64,
    /// Guest-physical address of the command line.
    pub cmdline_addr: u64,
    /// Length of the command line in bytes.
    pub cmdline_len: u64,
    /// First byte of the loaded kernel image.
    pub kernel_start: u64,
    /// One past the last byte of the loaded kernel image (including its .bss).
    pub kernel_end: u64,
    /// Guest-physical base of the pvgpu virtio-mmio window, or 0 when there is no device.
    pub virtio_mmio_base: u64,
    /// Size of that window.
    pub virtio_mmio_size: u64,
    /// The device's IRQ.
    pub virtio_mmio_irq: u32,
    /// Guest-physical base of the VRAM window.
    pub vram_base: u64,
    /// Size of the VRAM window (0 when there is no device).
    pub vram_size: u64,
    /// TSC frequency in kHz, or 0 if the VMM does not know it.
    pub tsc_khz: u64,
}

// Field offsets in the encoded block.
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_NUM_CPUS: usize = 12;
const OFF_RAM_SIZE: usize = 16;
const OFF_CMDLINE_ADDR: usize = 24;
const OFF_CMDLINE_LEN: usize = 32;
const OFF_KERNEL_START: usize = 40;
const OFF_KERNEL_END: usize = 48;
const OFF_MMIO_BASE: usize = 56;
const OFF_MMIO_SIZE: usize = 64;
const OFF_MMIO_IRQ: usize = 72;
// 76..80 reserved, zero.
const OFF_VRAM_BASE: usize = 80;
const OFF_VRAM_SIZE: usize = 88;
const OFF_TSC_KHZ: usize = 96;

fn put64(b: &mut [u8; BOOT_INFO_SIZE], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8; BOOT_INFO_SIZE], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn get64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn get32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

impl BootInfo {
    /// Encodes the block as the guest will read it.
    pub fn encode(&self) -> [u8; BOOT_INFO_SIZE] {
        let mut b = [0u8; BOOT_INFO_SIZE];
        put64(&mut b, OFF_MAGIC, BOOT_INFO_MAGIC);
        put32(&mut b, OFF_VERSION, BOOT_INFO_VERSION);
        put32(&mut b, OFF_NUM_CPUS, self.num_cpus);
        put64(&mut b, OFF_RAM_SIZE, self.ram_size);
        put64(&mut b, OFF_CMDLINE_ADDR, self.cmdline_addr);
        put64(&mut b, OFF_CMDLINE_LEN, self.cmdline_len);
        put64(&mut b, OFF_KERNEL_START, self.kernel_start);
        put64(&mut b, OFF_KERNEL_END, self.kernel_end);
        put64(&mut b, OFF_MMIO_BASE, self.virtio_mmio_base);
        put64(&mut b, OFF_MMIO_SIZE, self.virtio_mmio_size);
        put32(&mut b, OFF_MMIO_IRQ, self.virtio_mmio_irq);
        put64(&mut b, OFF_VRAM_BASE, self.vram_base);
        put64(&mut b, OFF_VRAM_SIZE, self.vram_size);
        put64(&mut b, OFF_TSC_KHZ, self.tsc_khz);
        b
    }

    /// Decodes and sanity-checks a block.
    pub fn decode(b: &[u8]) -> Result<Self, BootInfoError> {
        if b.len() < BOOT_INFO_SIZE {
            return Err(BootInfoError::Truncated(b.len()));
        }
        let magic = get64(b, OFF_MAGIC);
        if magic != BOOT_INFO_MAGIC {
            return Err(BootInfoError::BadMagic(magic));
        }
        let version = get32(b, OFF_VERSION);
        if version != BOOT_INFO_VERSION {
            return Err(BootInfoError::BadVersion(version));
        }
        let info = BootInfo {
            num_cpus: get32(b, OFF_NUM_CPUS),
            ram_size: get64(b, OFF_RAM_SIZE),
            cmdline_addr: get64(b, OFF_CMDLINE_ADDR),
            cmdline_len: get64(b, OFF_CMDLINE_LEN),
            kernel_start: get64(b, OFF_KERNEL_START),
            kernel_end: get64(b, OFF_KERNEL_END),
            virtio_mmio_base: get64(b, OFF_MMIO_BASE),
            virtio_mmio_size: get64(b, OFF_MMIO_SIZE),
            virtio_mmio_irq: get32(b, OFF_MMIO_IRQ),
            vram_base: get64(b, OFF_VRAM_BASE),
            vram_size: get64(b, OFF_VRAM_SIZE),
            tsc_khz: get64(b, OFF_TSC_KHZ),
        };
        info.validate()?;
        Ok(info)
    }

    /// Checks the fields against the layout.
    pub fn validate(&self) -> Result<(), BootInfoError> {
        if self.num_cpus == 0 || self.num_cpus > layout::MAX_VCPUS {
            return Err(BootInfoError::BadField("num_cpus"));
        }
        if self.ram_size < layout::RAM_MIN || self.ram_size > layout::RAM_MAX {
            return Err(BootInfoError::BadField("ram_size"));
        }
        if self.cmdline_len > layout::CMDLINE_MAX {
            return Err(BootInfoError::BadField("cmdline_len"));
        }
        if self.kernel_start < layout::KERNEL_MIN_ADDR
            || self.kernel_end < self.kernel_start
            || self.kernel_end > self.ram_size
        {
            return Err(BootInfoError::BadField("kernel"));
        }
        if self.vram_size > layout::VRAM_MAX {
            return Err(BootInfoError::BadField("vram_size"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BootInfo {
        BootInfo {
            num_cpus: 2,
            ram_size: 256 << 20,
            cmdline_addr: layout::CMDLINE_ADDR,
            cmdline_len: 5,
            kernel_start: 0x20_0000,
            kernel_end: 0x40_0000,
            virtio_mmio_base: layout::VIRTIO_MMIO_BASE,
            virtio_mmio_size: layout::VIRTIO_MMIO_SIZE,
            virtio_mmio_irq: layout::VIRTIO_MMIO_IRQ,
            vram_base: layout::VRAM_BASE,
            vram_size: 256 << 20,
            tsc_khz: 2_000_000,
        }
    }

    #[test]
    fn round_trip() {
        let b = sample().encode();
        assert_eq!(BootInfo::decode(&b), Ok(sample()));
    }

    #[test]
    fn fixed_offsets() {
        let b = sample().encode();
        assert_eq!(&b[0..8], b"PVGPUBI1");
        assert_eq!(b[8], 1); // version
        assert_eq!(b[12], 2); // num_cpus
        assert_eq!(&b[16..24], &(256u64 << 20).to_le_bytes());
        assert_eq!(&b[72..76], &5u32.to_le_bytes());
        assert_eq!(&b[76..80], &[0; 4]);
        assert_eq!(&b[96..104], &2_000_000u64.to_le_bytes());
        assert!(BOOT_INFO_SIZE as u64 <= layout::PAGE_SIZE);
    }

    #[test]
    fn rejects_bad_blocks() {
        let b = sample().encode();
        assert_eq!(
            BootInfo::decode(&b[..50]),
            Err(BootInfoError::Truncated(50))
        );
        let mut bad = b;
        bad[0] ^= 1;
        assert!(matches!(
            BootInfo::decode(&bad),
            Err(BootInfoError::BadMagic(_))
        ));
        let mut bad = b;
        bad[8] = 9;
        assert_eq!(BootInfo::decode(&bad), Err(BootInfoError::BadVersion(9)));
        for (field, f) in [
            (
                "num_cpus",
                (|i: &mut BootInfo| i.num_cpus = 0) as fn(&mut BootInfo),
            ),
            ("num_cpus", |i| i.num_cpus = layout::MAX_VCPUS + 1),
            ("ram_size", |i| i.ram_size = layout::RAM_MAX + 1),
            ("cmdline_len", |i| i.cmdline_len = layout::CMDLINE_MAX + 1),
            ("kernel", |i| i.kernel_end = i.ram_size + 1),
            ("kernel", |i| i.kernel_start = 0),
            ("vram_size", |i| i.vram_size = layout::VRAM_MAX + 1),
        ] {
            let mut i = sample();
            f(&mut i);
            assert_eq!(
                BootInfo::decode(&i.encode()),
                Err(BootInfoError::BadField(field))
            );
        }
    }
}
