//! The ring-3 heap: linked_list_allocator over a slice of guest RAM after the image.

use linked_list_allocator::LockedHeap;
use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::layout::LARGE_PAGE_SIZE;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Where the heap is: `[start, start + len)`.
pub fn region(info: &BootInfo) -> (u64, u64) {
    let start = crate::kernel::image::end().next_multiple_of(LARGE_PAGE_SIZE);
    let len = (info.ram_size / 8)
        .clamp(1 << 20, 32 << 20)
        .min(info.ram_size.saturating_sub(start) / 2);
    (start, len)
}

/// Sets the heap up (vCPU 0, before anything allocates).
pub fn init(info: &BootInfo) {
    let (start, len) = region(info);
    // SAFETY: [start, start + len) is guest RAM past the image that nothing else uses: the
    // page allocator starts after it.
    unsafe { HEAP.lock().init(start as *mut u8, len as usize) };
}

/// Bytes in use and free.
pub fn usage() -> (usize, usize) {
    let h = HEAP.lock();
    (h.used(), h.free())
}
