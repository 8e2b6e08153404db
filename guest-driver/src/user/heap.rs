//! The ring-3 heap: linked_list_allocator over a slice of guest RAM after the image.

use linked_list_allocator::LockedHeap;
use pvgpu_abi::boot_info::BootInfo;

use crate::memory_map::heap_region;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Sets the heap up (vCPU 0, before anything allocates).
pub fn init(info: &BootInfo) {
    let (start, len) = heap_region(info);
    // SAFETY: [start, start + len) is guest RAM past the image that nothing else uses: the
    // page allocator starts after it.
    unsafe { HEAP.lock().init(start as *mut u8, len as usize) };
}

/// Bytes in use and free.
pub fn usage() -> (usize, usize) {
    let h = HEAP.lock();
    (h.used(), h.free())
}
