//! Which guest-physical ranges are RAM, checking guest-supplied page lists against them, and
//! punching guest RAM through [`GuestRamPunch`].
//!
//! The device never trusts an address from the guest: every scatter-gather entry must be
//! page-aligned, non-empty, free of overflow, wholly inside one RAM range, and clear of the MMIO
//! hole and the VRAM window. Only such ranges are ever read, written or punched.

use pvgpu_abi::layout::{self, Range};
use pvgpu_abi::protocol::{MemEntry, PAGE_SIZE};

use crate::memfd::MemFd;

/// Errors about guest RAM ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuestRamError {
    /// A range (given by the VMM) is empty, unaligned, overflowing or overlaps another.
    #[error("RAM range {start:#x}+{len:#x} is invalid")]
    BadRamRange {
        /// Start.
        start: u64,
        /// Length.
        len: u64,
    },
    /// An entry is not page-aligned or is empty.
    #[error("entry {addr:#x}+{len:#x} is empty or not page-aligned")]
    Unaligned {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// addr + len overflows.
    #[error("entry {addr:#x}+{len:#x} overflows")]
    Overflow {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// The entry is not wholly inside guest RAM (or touches the MMIO hole or VRAM window).
    #[error("entry {addr:#x}+{len:#x} is not guest RAM")]
    NotRam {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// The entries do not add up to the object size.
    #[error("entries cover {got:#x} bytes, the object has {want:#x}")]
    SizeMismatch {
        /// Sum of the entries.
        got: u64,
        /// Object size.
        want: u64,
    },
}

/// A contiguous run of guest pages, `[gpa, gpa + len)`, already checked to be guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Guest-physical address (page-aligned).
    pub gpa: u64,
    /// Length (a non-zero multiple of the page size).
    pub len: u64,
}

/// Frees host memory behind guest RAM. The VMM implements it with its guest-RAM memfd
/// (`MemFd` implements it directly when guest RAM is the memfd mapped at guest-physical 0).
/// The device only calls it with ranges that [`RamRanges`] accepted.
pub trait GuestRamPunch {
    /// Releases the host pages of guest-physical `[gpa, gpa + len)`; afterwards the range
    /// reads as zeros.
    fn punch(&self, gpa: u64, len: u64) -> std::io::Result<()>;
}

/// Guest RAM is this memfd, mapped at guest-physical address 0 ([`layout::RAM_START`]).
impl GuestRamPunch for MemFd {
    fn punch(&self, gpa: u64, len: u64) -> std::io::Result<()> {
        let off = gpa
            .checked_sub(layout::RAM_START)
            .ok_or_else(|| std::io::Error::other("address below guest RAM"))?;
        self.punch_hole(off, len).map_err(std::io::Error::other)
    }
}

impl<T: GuestRamPunch + ?Sized> GuestRamPunch for std::sync::Arc<T> {
    fn punch(&self, gpa: u64, len: u64) -> std::io::Result<()> {
        (**self).punch(gpa, len)
    }
}

/// The guest-physical ranges that are RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamRanges {
    ranges: Vec<Range>,
}

fn forbidden() -> [Range; 2] {
    [
        Range {
            start: layout::MMIO_HOLE_START,
            len: layout::MMIO_HOLE_END - layout::MMIO_HOLE_START,
        },
        Range {
            start: layout::VRAM_BASE,
            len: layout::VRAM_MAX,
        },
    ]
}

impl RamRanges {
    /// No RAM at all: every page list is refused (a vhost-user backend before it has a
    /// memory table).
    pub fn none() -> Self {
        RamRanges { ranges: Vec::new() }
    }

    /// RAM is `[0, ram_size)`, the pvgpu layout.
    pub fn from_size(ram_size: u64) -> Result<Self, GuestRamError> {
        Self::new(&[Range {
            start: layout::RAM_START,
            len: ram_size,
        }])
    }

    /// RAM is the given ranges; they must be page-aligned, non-empty, sorted, disjoint, and
    /// clear of the MMIO hole and the VRAM window.
    pub fn new(ranges: &[Range]) -> Result<Self, GuestRamError> {
        let mut prev_end = 0u64;
        for (i, r) in ranges.iter().enumerate() {
            let bad = GuestRamError::BadRamRange {
                start: r.start,
                len: r.len,
            };
            let end = r.start.checked_add(r.len).ok_or(bad)?;
            if r.len == 0 || r.start % PAGE_SIZE != 0 || r.len % PAGE_SIZE != 0 {
                return Err(bad);
            }
            if i > 0 && r.start < prev_end {
                return Err(bad);
            }
            if forbidden().iter().any(|f| overlaps(r.start, end, f)) {
                return Err(bad);
            }
            prev_end = end;
        }
        Ok(RamRanges {
            ranges: ranges.to_vec(),
        })
    }

    /// The RAM ranges.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// Checks that `[addr, addr + len)` is page-aligned, non-empty guest RAM.
    pub fn check(&self, addr: u64, len: u64) -> Result<Extent, GuestRamError> {
        if len == 0 || !addr.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
            return Err(GuestRamError::Unaligned { addr, len });
        }
        self.check_bytes(addr, len)
    }

    /// Checks that `[addr, addr + len)` is non-empty guest RAM, at any byte alignment (the
    /// backing of a virtio-gpu 2D resource). Such an extent is read and written, but only the
    /// whole pages inside it are ever punched.
    pub fn check_bytes(&self, addr: u64, len: u64) -> Result<Extent, GuestRamError> {
        if len == 0 {
            return Err(GuestRamError::Unaligned { addr, len });
        }
        let end = addr
            .checked_add(len)
            .ok_or(GuestRamError::Overflow { addr, len })?;
        if forbidden().iter().any(|f| overlaps(addr, end, f)) {
            return Err(GuestRamError::NotRam { addr, len });
        }
        let inside = self
            .ranges
            .iter()
            .any(|r| addr >= r.start && end <= r.start + r.len);
        if !inside {
            return Err(GuestRamError::NotRam { addr, len });
        }
        Ok(Extent { gpa: addr, len })
    }

    /// Checks a guest page list that must cover exactly `size` bytes, and returns it as
    /// extents with adjacent entries merged (so copies work in large chunks).
    pub fn check_entries(
        &self,
        entries: &[MemEntry],
        size: u64,
    ) -> Result<Vec<Extent>, GuestRamError> {
        let (out, total) = self.check_list(entries)?;
        if total != size {
            return Err(GuestRamError::SizeMismatch {
                got: total,
                want: size,
            });
        }
        Ok(out)
    }

    /// Checks a guest page list of any total size and returns it as merged extents with
    /// that total (saturating: an absurd total fails every later range check).
    pub fn check_list(&self, entries: &[MemEntry]) -> Result<(Vec<Extent>, u64), GuestRamError> {
        let mut out: Vec<Extent> = Vec::new();
        let mut total = 0u64;
        for e in entries {
            let x = self.check(e.addr, u64::from(e.length))?;
            total = total.saturating_add(x.len);
            match out.last_mut() {
                Some(last) if last.gpa + last.len == x.gpa => last.len += x.len,
                _ => out.push(x),
            }
        }
        Ok((out, total))
    }
}

fn overlaps(start: u64, end: u64, r: &Range) -> bool {
    // r never overflows: it is one of the layout constants.
    start < r.start + r.len && r.start < end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(addr: u64, length: u32) -> MemEntry {
        MemEntry {
            addr,
            length,
            padding: 0,
        }
    }

    #[test]
    fn vmm_ranges_are_checked() {
        assert!(RamRanges::from_size(256 << 20).is_ok());
        assert!(RamRanges::from_size(0).is_err());
        assert!(RamRanges::from_size(0x1001).is_err());
        assert!(RamRanges::from_size(layout::MMIO_HOLE_START + PAGE_SIZE).is_err());
        let r = |start, len| Range { start, len };
        assert!(RamRanges::new(&[r(0, 0x2000), r(0x1000, 0x1000)]).is_err());
        assert!(RamRanges::new(&[r(layout::VRAM_BASE, 0x1000)]).is_err());
        assert!(RamRanges::new(&[r(!0xfff, 0x2000)]).is_err());
        let ram = RamRanges::new(&[r(0, 0x10000), r(0x20000, 0x10000)]).unwrap();
        assert_eq!(ram.ranges().len(), 2);
    }

    #[test]
    fn entries_are_checked() {
        let ram = RamRanges::from_size(16 << 20).unwrap();
        assert!(ram.check(0x1000, 0x1000).is_ok());
        assert_eq!(
            ram.check(0x1001, 0x1000),
            Err(GuestRamError::Unaligned {
                addr: 0x1001,
                len: 0x1000
            })
        );
        assert!(matches!(
            ram.check(0x1000, 0x800),
            Err(GuestRamError::Unaligned { .. })
        ));
        assert!(matches!(
            ram.check(0x1000, 0),
            Err(GuestRamError::Unaligned { .. })
        ));
        assert!(matches!(
            ram.check(!0xfff, 0x2000),
            Err(GuestRamError::Overflow { .. })
        ));
        // Straddles the end of RAM.
        assert!(matches!(
            ram.check((16 << 20) - 0x1000, 0x2000),
            Err(GuestRamError::NotRam { .. })
        ));
        assert!(matches!(
            ram.check(layout::VIRTIO_MMIO_BASE, 0x1000),
            Err(GuestRamError::NotRam { .. })
        ));
        assert!(matches!(
            ram.check(layout::VRAM_BASE, 0x1000),
            Err(GuestRamError::NotRam { .. })
        ));
    }

    #[test]
    fn entries_merge_and_must_match_size() {
        let ram = RamRanges::from_size(16 << 20).unwrap();
        let x = ram
            .check_entries(
                &[e(0x1000, 0x1000), e(0x2000, 0x2000), e(0x8000, 0x1000)],
                0x4000,
            )
            .unwrap();
        assert_eq!(
            x,
            vec![
                Extent {
                    gpa: 0x1000,
                    len: 0x3000
                },
                Extent {
                    gpa: 0x8000,
                    len: 0x1000
                }
            ]
        );
        assert!(matches!(
            ram.check_entries(&[e(0x1000, 0x1000)], 0x2000),
            Err(GuestRamError::SizeMismatch { .. })
        ));
        assert!(matches!(
            ram.check_entries(&[], 0x1000),
            Err(GuestRamError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn memfd_punches_guest_ram() {
        use std::os::unix::fs::FileExt;
        let m = MemFd::new("ram", 1 << 20).unwrap();
        m.file().write_all_at(&[1u8; 8192], 0x1000).unwrap();
        GuestRamPunch::punch(&m, 0x1000, 0x1000).unwrap();
        assert_eq!(m.allocated_bytes().unwrap(), 4096);
        assert!(GuestRamPunch::punch(&m, 1 << 20, 0x1000).is_err());
        let a = std::sync::Arc::new(m);
        a.punch(0x2000, 0x1000).unwrap();
        assert_eq!(a.allocated_bytes().unwrap(), 0);
    }
}
