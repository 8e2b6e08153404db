//! virtio-drivers' `Hal` for this guest: guest RAM is identity-mapped (physical = virtual)
//! and ring 3 reaches it directly, so DMA memory is plain page-aligned heap memory and sharing
//! a buffer is just taking its address.

use core::alloc::Layout;
use core::ptr::NonNull;

use pvgpu_abi::layout::PAGE_SIZE;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// The guest's DMA and MMIO glue.
pub struct GuestHal;

fn layout(pages: usize) -> Option<Layout> {
    Layout::from_size_align(pages.checked_mul(PAGE_SIZE as usize)?, PAGE_SIZE as usize).ok()
}

/// Whether `[addr, addr + len)` lies in identity-mapped guest RAM (below the user-map window).
fn identity_mapped(addr: u64, len: usize) -> bool {
    addr.checked_add(len as u64)
        .is_some_and(|end| end <= crate::user::boot_info().ram_size)
}

// SAFETY: dma_alloc returns zeroed, page-aligned, identity-mapped memory that stays allocated
// until dma_dealloc; share returns the physical address of identity-mapped buffers (and
// refuses any other), so the device sees exactly the driver's memory.
unsafe impl Hal for GuestHal {
    fn dma_alloc(pages: usize, _dir: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(l) = layout(pages) else {
            return (0, NonNull::dangling());
        };
        // SAFETY: the layout has a non-zero size (virtio-drivers never asks for 0 pages).
        let p = unsafe { alloc::alloc::alloc_zeroed(l) };
        match NonNull::new(p) {
            Some(nn) => (p as u64, nn),
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        if let Some(l) = layout(pages) {
            // SAFETY: vaddr came from dma_alloc with the same page count, hence layout.
            unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), l) };
        }
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _dir: BufferDirection) -> PhysAddr {
        let addr = buffer.as_ptr() as *mut u8 as u64;
        // Buffers handed to the device must be identity-mapped; the driver only passes heap
        // and stack buffers. Anything else is a driver bug.
        assert!(
            identity_mapped(addr, buffer.len()),
            "DMA buffer {addr:#x} is not identity-mapped"
        );
        addr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _dir: BufferDirection) {}
}
