//! Guest RAM: one memfd, mapped MAP_SHARED through vm-memory and registered as KVM memslot 0
//! at guest-physical 0.
//!
//! The memfd lets the host count (`st_blocks`) and free (`PUNCH_HOLE`) the pages that back
//! guest RAM exactly; see `pvgpu_device::memfd`.

use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use pvgpu_abi::layout;
use pvgpu_device::memfd::{MemFd, MemFdError};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Errors setting up guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum GuestRamError {
    /// The size is out of range or not 2 MiB aligned.
    #[error("guest RAM size {0:#x} is invalid (must be a multiple of 2 MiB in RAM_MIN..=RAM_MAX)")]
    BadSize(u64),
    /// The memfd could not be made.
    #[error("cannot create guest RAM: {0}")]
    MemFd(#[from] MemFdError),
    /// Duplicating the memfd's descriptor failed.
    #[error("cannot duplicate the guest RAM memfd: {0}")]
    Dup(std::io::Error),
    /// mmap of the memfd failed (e.g. the host cannot map that much).
    #[error("cannot map {size} bytes of guest RAM: {source}")]
    Map {
        /// Requested size.
        size: u64,
        /// What vm-memory said.
        source: vm_memory::mmap::FromRangesError,
    },
    /// KVM_SET_USER_MEMORY_REGION failed.
    #[error("cannot register guest RAM with KVM: {0}")]
    Register(kvm_ioctls::Error),
}

/// Guest RAM and the memfd behind it.
#[derive(Debug)]
pub struct GuestRam {
    memfd: Arc<MemFd>,
    mem: GuestMemoryMmap,
}

impl GuestRam {
    /// Creates `size` bytes of guest RAM at guest-physical 0 (no host pages yet).
    pub fn new(size: u64) -> Result<Self, GuestRamError> {
        if !(layout::RAM_MIN..=layout::RAM_MAX).contains(&size)
            || !size.is_multiple_of(layout::LARGE_PAGE_SIZE)
        {
            return Err(GuestRamError::BadSize(size));
        }
        let len = usize::try_from(size).map_err(|_| GuestRamError::BadSize(size))?;
        let memfd = MemFd::new("pvgpu-guest-ram", size)?;
        let file = memfd.file().try_clone().map_err(GuestRamError::Dup)?;
        let mem = GuestMemoryMmap::from_ranges_with_files([(
            GuestAddress(layout::RAM_START),
            len,
            Some(FileOffset::new(file, 0)),
        )])
        .map_err(|source| GuestRamError::Map { size, source })?;
        Ok(GuestRam {
            memfd: Arc::new(memfd),
            mem,
        })
    }

    /// Registers the RAM as KVM memslot 0.
    pub fn register(&self, vm: &VmFd) -> Result<(), GuestRamError> {
        for (slot, region) in self.mem.iter().enumerate() {
            let host = self
                .mem
                .get_host_address(region.start_addr())
                .map_err(|_| GuestRamError::BadSize(self.size()))?;
            let desc = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the host range [host, host + len) is a live mapping owned by self.mem,
            // which the caller keeps alive for as long as the VM exists (GuestRam outlives
            // every vCPU thread in vm::run).
            unsafe { vm.set_user_memory_region(desc) }.map_err(GuestRamError::Register)?;
        }
        Ok(())
    }

    /// How many KVM memslots guest RAM uses (slots `0..n`); the next free slot is `n`.
    pub fn slots(&self) -> u32 {
        self.mem.num_regions() as u32
    }

    /// The guest memory, for reading and writing through vm-memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The memfd, for counting and punching host pages.
    pub fn memfd(&self) -> &Arc<MemFd> {
        &self.memfd
    }

    /// Size of guest RAM in bytes.
    pub fn size(&self) -> u64 {
        self.memfd.size()
    }

    /// Host bytes currently allocated to guest RAM (0 if fstat fails).
    pub fn allocated_bytes(&self) -> u64 {
        self.memfd.allocated_bytes().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn ram_is_backed_by_the_memfd() {
        let ram = GuestRam::new(layout::RAM_MIN).unwrap();
        assert_eq!(ram.size(), layout::RAM_MIN);
        assert_eq!(ram.allocated_bytes(), 0);
        assert_eq!(ram.slots(), 1);
        ram.memory()
            .write_slice(&[1u8; 8192], GuestAddress(0x10_0000))
            .unwrap();
        assert_eq!(ram.allocated_bytes(), 8192);
        ram.memfd().punch_hole(0x10_0000, 4096).unwrap();
        assert_eq!(ram.allocated_bytes(), 4096);
        let v: u8 = ram.memory().read_obj(GuestAddress(0x10_0000)).unwrap();
        assert_eq!(v, 0);
    }

    #[test]
    fn bad_sizes_are_refused() {
        for s in [
            0,
            layout::RAM_MIN - 2 * 1024 * 1024,
            layout::RAM_MIN + 4096,
            layout::RAM_MAX + layout::LARGE_PAGE_SIZE,
        ] {
            assert!(
                matches!(GuestRam::new(s), Err(GuestRamError::BadSize(_))),
                "{s:#x}"
            );
        }
    }
}
