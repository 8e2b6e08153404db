//! Guest RAM: one range of host memory (`pvgpu_device::HostMemory`: anonymous private memory
//! by default, or a memfd mapped MAP_SHARED), seen through vm-memory and registered as KVM
//! memslot 0 at guest-physical 0.
//!
//! Its host pages are counted as resident bytes (mincore) and freed by CLEAN (MADV_DONTNEED
//! or PUNCH_HOLE); see `pvgpu_device::backend`.

use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use pvgpu_abi::layout;
use pvgpu_device::backend::{BackendError, HostMemory, MemoryBackend};
use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
};

/// Errors setting up guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum GuestRamError {
    /// The size is out of range or not 2 MiB aligned.
    #[error("guest RAM size {0:#x} is invalid (must be a multiple of 2 MiB in RAM_MIN..=RAM_MAX)")]
    BadSize(u64),
    /// The host memory could not be made or mapped (e.g. the host cannot map that much).
    #[error("cannot create guest RAM: {0}")]
    Host(#[from] BackendError),
    /// vm-memory refused the region.
    #[error("cannot set up {size} bytes of guest RAM: {msg}")]
    Map {
        /// Requested size.
        size: u64,
        /// What vm-memory said.
        msg: String,
    },
    /// KVM_SET_USER_MEMORY_REGION failed.
    #[error("cannot register guest RAM with KVM: {0}")]
    Register(kvm_ioctls::Error),
}

/// Guest RAM and the host memory behind it.
#[derive(Debug)]
pub struct GuestRam {
    host: Arc<HostMemory>,
    mem: GuestMemoryMmap,
}

impl GuestRam {
    /// Creates `size` bytes of guest RAM at guest-physical 0 (no host pages yet) in
    /// `backend`'s memory.
    pub fn new(size: u64, backend: MemoryBackend) -> Result<Self, GuestRamError> {
        if !(layout::RAM_MIN..=layout::RAM_MAX).contains(&size)
            || !size.is_multiple_of(layout::LARGE_PAGE_SIZE)
        {
            return Err(GuestRamError::BadSize(size));
        }
        let host = HostMemory::new(backend, "pvgpu-guest-ram", size)?;
        let map_err = |msg: String| GuestRamError::Map { size, msg };
        let region =
            GuestRegionMmap::with_arc(host.region().clone(), GuestAddress(layout::RAM_START))
                .ok_or_else(|| map_err("the region overflows".into()))?;
        let mem =
            GuestMemoryMmap::from_regions(vec![region]).map_err(|e| map_err(e.to_string()))?;
        Ok(GuestRam {
            host: Arc::new(host),
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

    /// The host memory, for counting and freeing host pages.
    pub fn host_memory(&self) -> &Arc<HostMemory> {
        &self.host
    }

    /// Size of guest RAM in bytes.
    pub fn size(&self) -> u64 {
        self.host.size()
    }

    /// Host bytes currently resident in guest RAM (0 if mincore fails).
    pub fn allocated_bytes(&self) -> u64 {
        self.host.resident_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn ram_is_backed_by_host_memory_of_either_backend() {
        for b in [
            MemoryBackend::Shared,
            MemoryBackend::Anonymous { thp: false },
        ] {
            let ram = GuestRam::new(layout::RAM_MIN, b).unwrap();
            assert_eq!(ram.size(), layout::RAM_MIN);
            assert_eq!(ram.allocated_bytes(), 0);
            assert_eq!(ram.slots(), 1);
            ram.memory()
                .write_slice(&[1u8; 8192], GuestAddress(0x10_0000))
                .unwrap();
            assert_eq!(ram.allocated_bytes(), 8192);
            ram.host_memory().discard(0x10_0000, 4096).unwrap();
            assert_eq!(ram.allocated_bytes(), 4096);
            let v: u8 = ram.memory().read_obj(GuestAddress(0x10_0000)).unwrap();
            assert_eq!(v, 0);
        }
        let thp = GuestRam::new(layout::RAM_MIN, MemoryBackend::DEFAULT_VMM).unwrap();
        let host = thp.memory().get_host_address(GuestAddress(0)).unwrap();
        assert_eq!(host as u64 % (2 << 20), 0, "2 MiB aligned");
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
                matches!(
                    GuestRam::new(s, MemoryBackend::Shared),
                    Err(GuestRamError::BadSize(_))
                ),
                "{s:#x}"
            );
        }
    }
}
