//! The guest-physical memory map, I/O ports and IRQs. Every magic address lives here.
//!
//! ```text
//! 0x0000_0000  null page (never mapped by the guest)
//! 0x0000_1000  boot-info block             (BOOT_INFO_ADDR, one page)
//! 0x0000_2000  kernel command line         (CMDLINE_ADDR, CMDLINE_MAX bytes)
//! 0x0000_3000  boot GDT built by the VMM   (BOOT_GDT_ADDR)
//! 0x0000_4000  boot page tables (VMM)      (BOOT_PML4_ADDR .. BOOT_PT_END)
//! 0x0020_0000  guest kernel ELF load area  (KERNEL_MIN_ADDR ..)
//!   ...        guest RAM up to ram_size    (at most RAM_MAX, below the MMIO hole)
//! 0xd000_0000  MMIO hole: the pvgpu virtio-mmio device (VIRTIO_MMIO_BASE)
//! 0x1_0000_0000  VRAM window (virtio shared-memory region 1), VRAM_MAX at most
//! ```
//!
//! The guest kernel's own map (its image, stacks, heap and user-map window) is the guest's
//! business: guest-driver/src/memory_map.rs.

/// Size of a guest page.
pub const PAGE_SIZE: u64 = 0x1000;
/// Size of a large (2 MiB) page.
pub const LARGE_PAGE_SIZE: u64 = 0x20_0000;

/// Where the VMM writes the [`crate::boot_info::BootInfo`] block.
pub const BOOT_INFO_ADDR: u64 = 0x1000;
/// Where the VMM writes the guest command line (not NUL-terminated; its length is in BootInfo).
pub const CMDLINE_ADDR: u64 = 0x2000;
/// Longest command line, in bytes.
pub const CMDLINE_MAX: u64 = 0x1000;
/// The GDT the VMM builds to enter long mode (the guest loads its own at once).
pub const BOOT_GDT_ADDR: u64 = 0x3000;
/// The VMM's identity-mapping page tables: PML4, one PDPT, four PDs (0..4 GiB, 2 MiB pages).
pub const BOOT_PML4_ADDR: u64 = 0x4000;
/// The boot PDPT.
pub const BOOT_PDPT_ADDR: u64 = 0x5000;
/// The first of the four boot page directories.
pub const BOOT_PD_ADDR: u64 = 0x6000;
/// End of the boot page tables (exclusive).
pub const BOOT_PT_END: u64 = 0xa000;
/// Lowest address a guest kernel ELF segment may be loaded at.
pub const KERNEL_MIN_ADDR: u64 = 0x20_0000;

/// Start of guest RAM (it begins at 0 and is one contiguous block).
pub const RAM_START: u64 = 0;
/// Smallest guest RAM the VMM accepts.
pub const RAM_MIN: u64 = 16 << 20;
/// Default guest RAM.
pub const RAM_DEFAULT: u64 = 256 << 20;
/// Largest guest RAM: everything below the MMIO hole.
pub const RAM_MAX: u64 = MMIO_HOLE_START;

/// Start of the MMIO hole (no RAM here).
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the MMIO hole (exclusive).
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// The pvgpu virtio-mmio device's register window.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of the virtio-mmio register window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Guest IRQ (GSI) of the pvgpu virtio-mmio device.
pub const VIRTIO_MMIO_IRQ: u32 = 5;

/// Guest-physical base of the VRAM window (virtio shared-memory region id 1).
pub const VRAM_BASE: u64 = 0x1_0000_0000;
/// Largest VRAM the window can hold.
pub const VRAM_MAX: u64 = 64 << 30;
/// Default VRAM size.
pub const VRAM_DEFAULT: u64 = 256 << 20;

/// Most vCPUs a guest can have (the guest kernel has per-CPU tables of this size).
pub const MAX_VCPUS: u32 = 8;

/// COM1: the 16550 serial console.
pub const SERIAL_PORT: u16 = 0x3f8;
/// Number of ports the 16550 occupies.
pub const SERIAL_PORT_LEN: u16 = 8;
/// Guest IRQ (GSI) of the serial port.
pub const SERIAL_IRQ: u32 = 4;
/// Exit device: a 1- to 4-byte write of status N makes the VMM exit with status N (low 8 bits;
/// the statuses are in [`crate::exit_status`]).
pub const EXIT_PORT: u16 = 0x501;
/// Phase-marker device: a 4-byte write of N tells the VMM "phase N begins".
pub const PHASE_PORT: u16 = 0x504;
/// Used-ring wait device: a 2-byte write of N, the control-queue used index the driver waits
/// for (its whole batch answered), blocks the writing vCPU in the VMM until the device's used
/// index reaches N (modulo 2^16) or [`USED_WAIT_MAX_US`] pass, whichever is first (it returns
/// at once without an in-process device). It lets a driver wait for long commands without
/// spinning: a vCPU running in guest mode makes every page-table change of the VMM's memory
/// (each huge page MIGRATE_CLEAN moves) interrupt it, which costs far more than the move, and
/// a vCPU woken between the commands of a batch fights the moves for KVM's MMU.
pub const USED_WAIT_PORT: u16 = 0x508;
/// Longest a single write to [`USED_WAIT_PORT`] blocks, in microseconds.
pub const USED_WAIT_MAX_US: u64 = 1000;

/// A guest-physical range, `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Range {
    /// Whether two ranges share at least one byte.
    pub const fn overlaps(&self, other: &Range) -> bool {
        self.start < other.start + other.len && other.start < self.start + self.len
    }

    /// One past the last address.
    pub const fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// The fixed regions of the guest-physical map, for overlap checks and documentation.
pub const FIXED_REGIONS: [(&str, Range); 8] = [
    (
        "boot info",
        Range {
            start: BOOT_INFO_ADDR,
            len: PAGE_SIZE,
        },
    ),
    (
        "command line",
        Range {
            start: CMDLINE_ADDR,
            len: CMDLINE_MAX,
        },
    ),
    (
        "boot gdt",
        Range {
            start: BOOT_GDT_ADDR,
            len: PAGE_SIZE,
        },
    ),
    (
        "boot page tables",
        Range {
            start: BOOT_PML4_ADDR,
            len: BOOT_PT_END - BOOT_PML4_ADDR,
        },
    ),
    (
        "kernel",
        Range {
            start: KERNEL_MIN_ADDR,
            len: RAM_MIN - KERNEL_MIN_ADDR,
        },
    ),
    (
        "mmio hole",
        Range {
            start: MMIO_HOLE_START,
            len: MMIO_HOLE_END - MMIO_HOLE_START,
        },
    ),
    (
        "vram window",
        Range {
            start: VRAM_BASE,
            len: VRAM_MAX,
        },
    ),
    (
        "null page",
        Range {
            start: 0,
            len: PAGE_SIZE,
        },
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_regions_do_not_overlap() {
        for (i, (a, ra)) in FIXED_REGIONS.iter().enumerate() {
            for (b, rb) in FIXED_REGIONS.iter().skip(i + 1) {
                assert!(!ra.overlaps(rb), "{a} {ra:x?} overlaps {b} {rb:x?}");
            }
        }
    }

    #[test]
    fn device_windows_sit_where_ram_cannot_reach() {
        let ram = Range {
            start: RAM_START,
            len: RAM_MAX,
        };
        let mmio = Range {
            start: VIRTIO_MMIO_BASE,
            len: VIRTIO_MMIO_SIZE,
        };
        let vram = Range {
            start: VRAM_BASE,
            len: VRAM_MAX,
        };
        assert!(!ram.overlaps(&mmio));
        assert!(!ram.overlaps(&vram));
        assert!(!mmio.overlaps(&vram));
        assert!(mmio.start >= MMIO_HOLE_START && mmio.end() <= MMIO_HOLE_END);
        const { assert!(BOOT_PT_END <= KERNEL_MIN_ADDR) };
        // The boot page tables identity-map 0..4 GiB: RAM and the MMIO hole.
        assert_eq!(
            (BOOT_PT_END - BOOT_PD_ADDR) / PAGE_SIZE * 512 * LARGE_PAGE_SIZE,
            4 << 30
        );
    }

    #[test]
    fn alignment() {
        for (_, r) in FIXED_REGIONS {
            assert_eq!(r.start % PAGE_SIZE, 0);
        }
        assert_eq!(KERNEL_MIN_ADDR % LARGE_PAGE_SIZE, 0);
        assert_eq!(VRAM_BASE % LARGE_PAGE_SIZE, 0);
        const { assert!(RAM_DEFAULT >= RAM_MIN && RAM_DEFAULT <= RAM_MAX) };
    }

    #[test]
    fn overlap_is_exact_at_the_edges() {
        let a = Range {
            start: 0x1000,
            len: 0x1000,
        };
        assert!(!a.overlaps(&Range {
            start: 0x2000,
            len: 1
        }));
        assert!(a.overlaps(&Range {
            start: 0x1fff,
            len: 1
        }));
        assert!(!a.overlaps(&Range {
            start: 0,
            len: 0x1000
        }));
        assert_eq!(a.end(), 0x2000);
    }
}

/// Phase numbers the guest writes to [`PHASE_PORT`] during `workload` (the VMM snapshots host
/// memory at each; the demo labels its plot with them).
pub mod phase {
    /// Objects created and filled with data (guest pages hold it).
    pub const FILLED: u32 = 1;
    /// Objects migrated to VRAM (both copies exist).
    pub const MIGRATED: u32 = 2;
    /// Objects cleaned (VRAM only: the guest pages were punched).
    pub const CLEANED: u32 = 3;
    /// Objects touched through their mappings and faulted back into guest pages.
    pub const TOUCHED: u32 = 4;
    /// Objects destroyed.
    pub const DESTROYED: u32 = 5;
    /// `display`: a framebuffer built with the standard 2D commands is on the scanout (its
    /// guest backing still holds the picture).
    pub const FB_DRAWN: u32 = 6;
    /// `display`: the framebuffer's backing was cleaned (the scanout shows the VRAM copy).
    pub const FB_CLEANED: u32 = 7;

    /// A short name for a phase number.
    pub const fn name(n: u32) -> &'static str {
        match n {
            FILLED => "filled",
            MIGRATED => "migrated",
            CLEANED => "cleaned",
            TOUCHED => "touched",
            DESTROYED => "destroyed",
            FB_DRAWN => "fb-drawn",
            FB_CLEANED => "fb-cleaned",
            _ => "phase",
        }
    }
}
