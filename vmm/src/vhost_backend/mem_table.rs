//! The guest memory a vhost-user frontend gave the backend (SET_MEM_TABLE): which
//! guest-physical ranges are RAM, and how CLEAN frees host pages behind them.
//!
//! vhost-user-backend maps every region from the fd it received (at the region's
//! `mmap_offset`); the mapping keeps that fd as its `FileOffset`. CLEAN punches a hole in that
//! very file at `file offset + (gpa - region start)`, so the frontend's memfd really shrinks,
//! exactly as when the device runs inside the VMM.

use std::os::unix::io::AsRawFd;

use pvgpu_abi::layout::Range;
use pvgpu_device::guest_ram::{GuestRamError, GuestRamPunch, RamRanges};
use vm_memory::{
    GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion,
};

/// The memory type the backend works on.
pub type BackendMemory = GuestMemoryAtomic<GuestMemoryMmap<()>>;

/// Errors deriving the RAM ranges from a memory table.
#[derive(Debug, thiserror::Error)]
pub enum MemTableError {
    /// A region is not acceptable as guest RAM (unaligned, overlapping, in the MMIO hole or
    /// the VRAM window).
    #[error("memory table: {0}")]
    Ranges(#[from] GuestRamError),
    /// A region maps past the end of its file (touching it would raise SIGBUS).
    #[error("memory table: region at {gpa:#x} ({len} bytes from file offset {offset}) passes the end of its {file_len}-byte file")]
    PastEof {
        /// Guest-physical start.
        gpa: u64,
        /// Length.
        len: u64,
        /// Offset in the file.
        offset: u64,
        /// The file's size.
        file_len: u64,
    },
    /// A region's file cannot be examined.
    #[error("memory table: cannot stat a region's file: {0}")]
    Stat(std::io::Error),
}

/// The RAM ranges of `mem`, sorted and checked by the device model's rules; every region must
/// lie inside its file (vm-memory maps past the end without complaint).
pub fn ram_ranges(mem: &GuestMemoryMmap<()>) -> Result<RamRanges, MemTableError> {
    for r in mem.iter() {
        let Some(fo) = r.file_offset() else { continue };
        let file_len = fo.file().metadata().map_err(MemTableError::Stat)?.len();
        if fo
            .start()
            .checked_add(r.len())
            .is_none_or(|end| end > file_len)
        {
            return Err(MemTableError::PastEof {
                gpa: r.start_addr().0,
                len: r.len(),
                offset: fo.start(),
                file_len,
            });
        }
    }
    let mut ranges: Vec<Range> = mem
        .iter()
        .map(|r| Range {
            start: r.start_addr().0,
            len: r.len(),
        })
        .collect();
    ranges.sort_by_key(|r| r.start);
    Ok(RamRanges::new(&ranges)?)
}

/// Punches guest RAM through the files of the frontend's memory table.
#[derive(Debug, Clone)]
pub struct MemTablePunch {
    mem: BackendMemory,
}

impl MemTablePunch {
    /// Punches through whatever memory table `mem` holds at the time of each CLEAN.
    pub fn new(mem: BackendMemory) -> Self {
        MemTablePunch { mem }
    }
}

impl GuestRamPunch for MemTablePunch {
    fn punch(&self, gpa: u64, len: u64) -> std::io::Result<()> {
        let mem = self.mem.memory();
        let region = mem
            .find_region(GuestAddress(gpa))
            .ok_or_else(|| std::io::Error::other("address outside the memory table"))?;
        let rel = gpa - region.start_addr().0;
        if rel.checked_add(len).is_none_or(|end| end > region.len()) {
            return Err(std::io::Error::other("range crosses a memory-table region"));
        }
        let fo = region
            .file_offset()
            .ok_or_else(|| std::io::Error::other("memory-table region has no file"))?;
        let off = fo
            .start()
            .checked_add(rel)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or_else(|| std::io::Error::other("file offset overflows"))?;
        let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
        // SAFETY: the fd is the region's file, open while `mem` (and so the region) lives;
        // fallocate only changes the file's allocation, never this process's memory.
        let rc = unsafe {
            libc::fallocate(
                fo.file().as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvgpu_device::memfd::MemFd;
    use vm_memory::{Bytes, FileOffset};

    #[test]
    fn punch_goes_to_the_region_file_at_its_offset() {
        // One memfd of 8 MiB; the region maps its second half at guest-physical 4 MiB.
        let fd = MemFd::new("t", 8 << 20).unwrap();
        let file = fd.file().try_clone().unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(4 << 20),
            4 << 20,
            Some(FileOffset::new(file, 4 << 20)),
        )])
        .unwrap();
        mem.write_slice(&[7u8; 1 << 20], GuestAddress(5 << 20))
            .unwrap();
        assert!(fd.allocated_bytes().unwrap() >= 1 << 20);
        let atomic = GuestMemoryAtomic::new(mem);
        let p = MemTablePunch::new(atomic.clone());
        p.punch(5 << 20, 1 << 20).unwrap();
        assert_eq!(fd.allocated_bytes().unwrap(), 0);
        // Outside the table, or across its end: refused.
        assert!(p.punch(1 << 20, 4096).is_err());
        assert!(p.punch((8 << 20) - 4096, 8192).is_err());
        let r = ram_ranges(&atomic.memory()).unwrap();
        assert_eq!(r.ranges().len(), 1);
    }

    #[test]
    fn a_region_past_the_end_of_its_file_is_refused() {
        let fd = MemFd::new("t", 4 << 20).unwrap();
        let file = fd.file().try_clone().unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(0),
            4 << 20,
            Some(FileOffset::new(file, 2 << 20)),
        )])
        .unwrap();
        assert!(matches!(
            ram_ranges(&mem),
            Err(MemTableError::PastEof { .. })
        ));
    }
}
