//! Where guest RAM and VRAM live on the host: the one abstraction over the two memory
//! backends.
//!
//! - [`MemoryBackend::Anonymous`] (the default): anonymous private memory, 2 MiB aligned,
//!   optionally with transparent huge pages (MADV_HUGEPAGE). Pages can be *moved* between
//!   two such ranges with userfaultfd (see [`crate::uffd`]), and freed with
//!   madvise(MADV_DONTNEED); a freed page reads as zero without using memory.
//! - [`MemoryBackend::Shared`]: a memfd mapped MAP_SHARED, so another process (a vhost-user
//!   device) can map the same memory. Pages are freed with fallocate(PUNCH_HOLE); nothing can
//!   be moved, so MIGRATE_CLEAN copies and punches.
//!
//! Host memory is measured the same way for both: the resident bytes of the range, from
//! mincore(2) (for a memfd that is its page-cache pages, which equals `st_blocks`).

use std::sync::{Arc, Mutex, MutexGuard};

use vm_memory::{FileOffset, MmapRegion};

use crate::guest_ram::GuestRamPunch;
use crate::memfd::{MemFd, MemFdError};
use pvgpu_abi::layout;
use pvgpu_abi::protocol::PAGE_SIZE;

/// Alignment of anonymous ranges (a transparent huge page).
pub const HUGE_PAGE: u64 = 2 << 20;

/// Errors from host memory.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The size is 0 or not a multiple of the page size.
    #[error("host memory size {0:#x} is not a non-zero multiple of 4 KiB")]
    BadSize(u64),
    /// The memfd could not be made or punched.
    #[error(transparent)]
    MemFd(#[from] MemFdError),
    /// mmap failed.
    #[error("cannot map {size:#x} bytes of {name}: {msg}")]
    Map {
        /// What was being mapped.
        name: String,
        /// Its size.
        size: u64,
        /// The error.
        msg: String,
    },
    /// A range outside the mapping.
    #[error("range {offset:#x}+{len:#x} is outside {size:#x} bytes of host memory")]
    OutOfRange {
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
        /// Size of the memory.
        size: u64,
    },
    /// madvise failed.
    #[error("madvise({what}) of {offset:#x}+{len:#x}: {source}")]
    Madvise {
        /// The advice.
        what: &'static str,
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Held by the device while pages move between guest RAM and VRAM (one slice of one object
/// at a time), and by whoever measures both ranges: a measurement then never sees a moving
/// page in both ranges, or in neither.
#[derive(Debug, Clone, Default)]
pub struct MoveLock(Arc<Mutex<()>>);

impl MoveLock {
    /// Holds the lock until the guard is dropped.
    pub fn hold(&self) -> MutexGuard<'_, ()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Which host memory backs guest RAM and VRAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryBackend {
    /// Anonymous private memory; pages move with UFFDIO_MOVE. `thp`: MADV_HUGEPAGE.
    Anonymous {
        /// Ask for 2 MiB transparent huge pages.
        thp: bool,
    },
    /// memfds mapped MAP_SHARED (another process may map them); copies and punches.
    #[default]
    Shared,
}

impl MemoryBackend {
    /// The default of `pvgpu run`: anonymous memory with huge pages.
    pub const DEFAULT_VMM: MemoryBackend = MemoryBackend::Anonymous { thp: true };

    /// Whether pages can be moved (anonymous private memory).
    pub fn can_move(self) -> bool {
        matches!(self, MemoryBackend::Anonymous { .. })
    }

    /// A short name for reports: `anonymous`, `anonymous-4k` or `shared`.
    pub fn name(self) -> &'static str {
        match self {
            MemoryBackend::Anonymous { thp: true } => "anonymous",
            MemoryBackend::Anonymous { thp: false } => "anonymous-4k",
            MemoryBackend::Shared => "shared",
        }
    }
}

/// One range of host memory (guest RAM or VRAM) in the chosen backend.
#[derive(Debug)]
pub struct HostMemory {
    backend: MemoryBackend,
    region: Arc<MmapRegion<()>>,
    memfd: Option<MemFd>,
    size: u64,
}

impl HostMemory {
    /// Maps `size` bytes (no host pages are used until touched). `name` names the memfd.
    pub fn new(backend: MemoryBackend, name: &str, size: u64) -> Result<Self, BackendError> {
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) {
            return Err(BackendError::BadSize(size));
        }
        let len = usize::try_from(size).map_err(|_| BackendError::BadSize(size))?;
        let map_err = |msg: String| BackendError::Map {
            name: name.to_owned(),
            size,
            msg,
        };
        let (region, memfd) = match backend {
            MemoryBackend::Shared => {
                let memfd = MemFd::new(name, size)?;
                let file = memfd
                    .file()
                    .try_clone()
                    .map_err(|e| map_err(e.to_string()))?;
                let region = MmapRegion::from_file(FileOffset::new(file, 0), len)
                    .map_err(|e| map_err(e.to_string()))?;
                (region, Some(memfd))
            }
            MemoryBackend::Anonymous { thp } => {
                // Linux aligns anonymous mappings whose length is a multiple of 2 MiB to
                // 2 MiB (6.7+), so guest 2 MiB frames are host huge pages.
                let region = vm_memory::mmap::MmapRegionBuilder::new(len)
                    .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                    .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)
                    .build()
                    .map_err(|e| map_err(e.to_string()))?;
                if !(region.as_ptr() as u64).is_multiple_of(HUGE_PAGE) {
                    log::info!("{name} is not 2 MiB aligned: fewer huge pages");
                }
                let advice = if thp {
                    libc::MADV_HUGEPAGE
                } else {
                    libc::MADV_NOHUGEPAGE
                };
                // SAFETY: the range is exactly the mapping just made; the advice only changes
                // how the kernel backs it.
                let rc = unsafe { libc::madvise(region.as_ptr().cast(), len, advice) };
                if rc != 0 {
                    log::info!(
                        "madvise(THP) on {name}: {}",
                        std::io::Error::last_os_error()
                    );
                }
                (region, None)
            }
        };
        Ok(HostMemory {
            backend,
            region: Arc::new(region),
            memfd,
            size,
        })
    }

    /// Maps `size` bytes of a memfd received from elsewhere, from `offset` (the shared
    /// backend: a vhost-user frontend maps its backend's VRAM this way).
    pub fn from_memfd(memfd: MemFd, offset: u64, size: u64) -> Result<Self, BackendError> {
        let name = "received memfd";
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) || !offset.is_multiple_of(PAGE_SIZE) {
            return Err(BackendError::BadSize(size));
        }
        let len = usize::try_from(size).map_err(|_| BackendError::BadSize(size))?;
        let map_err = |msg: String| BackendError::Map {
            name: name.to_owned(),
            size,
            msg,
        };
        let file = memfd
            .file()
            .try_clone()
            .map_err(|e| map_err(e.to_string()))?;
        let region = MmapRegion::from_file(FileOffset::new(file, offset), len)
            .map_err(|e| map_err(e.to_string()))?;
        Ok(HostMemory {
            backend: MemoryBackend::Shared,
            region: Arc::new(region),
            memfd: Some(memfd),
            size,
        })
    }

    /// The backend.
    pub fn backend(&self) -> MemoryBackend {
        self.backend
    }

    /// The mapping (vm-memory), shared: guest RAM is a `GuestRegionMmap` over it.
    pub fn region(&self) -> &Arc<MmapRegion<()>> {
        &self.region
    }

    /// Start of the mapping in this process.
    pub fn host_addr(&self) -> *mut u8 {
        self.region.as_ptr()
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The memfd of the shared backend.
    pub fn memfd(&self) -> Option<&MemFd> {
        self.memfd.as_ref()
    }

    fn check(&self, offset: u64, len: u64) -> Result<(usize, usize), BackendError> {
        let bad = BackendError::OutOfRange {
            offset,
            len,
            size: self.size,
        };
        match offset.checked_add(len) {
            Some(end) if end <= self.size => {
                Ok((usize::try_from(offset).map_err(|_| bad)?, len as usize))
            }
            _ => Err(bad),
        }
    }

    /// Host bytes resident in `[offset, offset + len)` (page-aligned), from mincore(2), a
    /// bounded piece at a time (VRAM may be tens of GiB).
    pub fn resident_bytes_in(&self, offset: u64, len: u64) -> Result<u64, BackendError> {
        /// Bytes per mincore(2) call: 256 KiB of result vector.
        const PIECE: usize = 1 << 30;
        let (off, n) = self.check(offset, len)?;
        let page = PAGE_SIZE as usize;
        let mut vec = vec![0u8; n.min(PIECE).div_ceil(page)];
        let mut pages = 0u64;
        let mut pos = 0usize;
        while pos < n {
            let piece = (n - pos).min(PIECE);
            let v = &mut vec[..piece.div_ceil(page)];
            // SAFETY: [host_addr + off + pos, + piece) lies inside the mapping (checked above),
            // and `v` has one byte per page of it, as mincore(2) writes.
            let rc = unsafe {
                libc::mincore(
                    self.region.as_ptr().add(off + pos).cast(),
                    piece,
                    v.as_mut_ptr().cast(),
                )
            };
            if rc != 0 {
                return Err(BackendError::Madvise {
                    what: "mincore",
                    offset,
                    len,
                    source: std::io::Error::last_os_error(),
                });
            }
            pages += v.iter().filter(|b| **b & 1 != 0).count() as u64;
            pos += piece;
        }
        Ok(pages * PAGE_SIZE)
    }

    /// Host bytes resident in the whole range (0 if mincore fails).
    pub fn resident_bytes(&self) -> u64 {
        self.resident_bytes_in(0, self.size).unwrap_or(0)
    }

    /// Gives the host pages of `[offset, offset + len)` back; the range reads as zeros
    /// (anonymous: MADV_DONTNEED, nothing allocated until written; shared: PUNCH_HOLE).
    pub fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        let (off, n) = self.check(offset, len)?;
        if n == 0 {
            return Ok(());
        }
        if let Some(m) = &self.memfd {
            return Ok(m.punch_hole(offset, len)?);
        }
        // SAFETY: the range lies inside this private anonymous mapping (checked above);
        // MADV_DONTNEED only drops its pages, which read as zero afterwards. Nothing holds a
        // Rust reference into guest memory or VRAM.
        let rc =
            unsafe { libc::madvise(self.region.as_ptr().add(off).cast(), n, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(BackendError::Madvise {
                what: "MADV_DONTNEED",
                offset,
                len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// Guest RAM is this memory, at guest-physical address 0 ([`layout::RAM_START`]).
impl GuestRamPunch for HostMemory {
    fn punch(&self, gpa: u64, len: u64) -> std::io::Result<()> {
        let off = gpa
            .checked_sub(layout::RAM_START)
            .ok_or_else(|| std::io::Error::other("address below guest RAM"))?;
        self.discard(off, len).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::VolatileMemory;

    fn write(m: &HostMemory, off: usize, data: &[u8]) {
        m.region()
            .get_slice(off, data.len())
            .unwrap()
            .copy_from(data);
    }

    #[test]
    fn both_backends_count_and_discard_the_same_way() {
        for b in [
            MemoryBackend::Shared,
            MemoryBackend::Anonymous { thp: false },
            MemoryBackend::Anonymous { thp: true },
        ] {
            let m = HostMemory::new(b, "t", 4 << 20).unwrap();
            assert_eq!(m.resident_bytes(), 0, "{b:?}");
            write(&m, 1 << 20, &vec![7u8; 3 * 4096]);
            if b != (MemoryBackend::Anonymous { thp: true }) {
                assert_eq!(m.resident_bytes(), 3 * 4096, "{b:?}");
            } else {
                assert!(m.resident_bytes() >= 3 * 4096, "{b:?}");
            }
            m.discard(0, 4 << 20).unwrap();
            assert_eq!(m.resident_bytes(), 0, "{b:?}");
            let mut back = [1u8; 4];
            m.region()
                .get_slice(1 << 20, 4)
                .unwrap()
                .copy_to(&mut back[..]);
            assert_eq!(back, [0; 4]);
            assert!(m.discard(4 << 20, 4096).is_err());
            assert!(m.resident_bytes_in(u64::MAX, 2).is_err());
            assert_eq!(m.memfd().is_some(), b == MemoryBackend::Shared);
        }
        assert!(HostMemory::new(MemoryBackend::Shared, "t", 100).is_err());
    }

    #[test]
    fn anonymous_memory_is_huge_page_aligned() {
        let m = HostMemory::new(MemoryBackend::DEFAULT_VMM, "t", 64 << 20).unwrap();
        assert_eq!(m.host_addr() as u64 % HUGE_PAGE, 0);
    }
}
