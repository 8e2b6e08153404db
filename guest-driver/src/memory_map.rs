//! The guest's memory map, for both rings: where the image's parts lie, the stacks and their
//! guard pages, the system-call stub, the heap and the page pool, and how the user-map window
//! is shared out. Ring 0 builds its page tables and checks ring 3's buffers against this map;
//! ring 3 places its heap, pages and views by it. The guest-physical facts the VMM shares (RAM,
//! boot pages, device windows) are in [`pvgpu_abi::layout`]; this module holds what only the
//! guest knows.
//!
//! Everything below the user-map window is identity-mapped (virtual = physical):
//!
//! ```text
//! 0x0000_0000            null page                              unmapped
//! 0x0000_1000            boot info, command line, boot tables   ring 3 read-only
//! image::start()         .text, .rodata, GOT                    ring 3 read-only
//! image::readonly_end()  .data                                  ring 3 read-write
//! image::data_end()      .ustack: per CPU a guard page, then    ring 3 read-write
//!                        its ring-3 stack (USTACK_SLOT each)
//! image::ustack_end()    .kstack: per CPU a guard page, then    ring 0 only
//!                        its ring-0 stack (KSTACK_SLOT each)
//! image::kpriv_start()   .kdata, .kbss (2 MiB-aligned):         ring 0 only
//!                        GDT, TSS, IDT, page-table pool
//! image::kpriv_end()     .bss                                   ring 3 read-write
//! image::end() ↑ 2 MiB   the ring-3 heap                        heap_region()
//! heap end ↑ 2 MiB       the page pool, up to the end of RAM    page_pool_base()
//! VIRTIO_MMIO_BASE       the GPU's registers (uncached); VRAM   ring 3 read-write
//!   .. VRAM_BASE        at its window (pvgpu_abi::layout)
//! USER_MAP_BASE          the user-map window (virtual only): each CPU's share USER_MAP_PER_CPU,
//!                        in quarters: selftest mappings, object views, selftest fault pages,
//!                        workload mappings (zerocopy)
//! ```

use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::layout::{LARGE_PAGE_SIZE, MAX_VCPUS, PAGE_SIZE};

/// Linker-script symbols (see link.ld): the boundaries of the image's parts.
pub mod image {
    extern "C" {
        static __image_start: u8;
        static __readonly_end: u8;
        static __data_end: u8;
        static __ustack_end: u8;
        static __kstack_end: u8;
        static __kpriv_start: u8;
        static __kpriv_end: u8;
        static __image_end: u8;
    }

    macro_rules! sym_addr {
        ($name:ident, $sym:ident) => {
            /// Address of the linker symbol of the same name.
            pub fn $name() -> u64 {
                core::ptr::addr_of!($sym) as u64
            }
        };
    }

    sym_addr!(start, __image_start);
    sym_addr!(readonly_end, __readonly_end);
    sym_addr!(data_end, __data_end);
    sym_addr!(ustack_end, __ustack_end);
    sym_addr!(kstack_end, __kstack_end);
    sym_addr!(kpriv_start, __kpriv_start);
    sym_addr!(kpriv_end, __kpriv_end);
    sym_addr!(end, __image_end);
}

// ---------------------------------------------------------------------------------------------
// Stacks: one slot per CPU, an unmapped guard page and then the stack, so running off a
// stack's end faults instead of writing over the next CPU's stack.

/// Size of each CPU's ring-3 stack.
pub const USTACK_SIZE: usize = 192 * 1024;
/// A ring-3 stack slot: the guard page, then the stack.
pub const USTACK_SLOT: usize = USTACK_SIZE + PAGE_SIZE as usize;
/// Size of each CPU's ring-0 stack.
pub const KSTACK_SIZE: usize = 16 * 1024;
/// A ring-0 stack slot: the guard page, then the stack. An overflow becomes a double fault on
/// its own stack, which is reported, not silent corruption.
pub const KSTACK_SLOT: usize = KSTACK_SIZE + PAGE_SIZE as usize;

/// One stack slot of `SLOT` bytes per CPU.
#[repr(C, align(4096))]
pub struct StackSlots<const SLOT: usize>([[u8; SLOT]; MAX_VCPUS as usize]);

/// Ring-3 stacks, at the start of `.ustack` (ring 0 checks that).
#[link_section = ".ustack"]
static mut USER_STACKS: StackSlots<USTACK_SLOT> =
    StackSlots([[0; USTACK_SLOT]; MAX_VCPUS as usize]);

/// Ring-0 stacks, at the start of `.kstack` (mapped without the user bit). Public for the
/// entry stub, which finds its stack by this symbol.
#[link_section = ".kstack"]
pub static mut KERNEL_STACKS: StackSlots<KSTACK_SLOT> =
    StackSlots([[0; KSTACK_SLOT]; MAX_VCPUS as usize]);

/// A row of per-CPU stack slots.
#[derive(Clone, Copy, Debug)]
pub struct StackArea {
    /// Where the slots start (CPU 0's guard page).
    pub base: u64,
    /// Bytes per slot: the guard page, then the stack.
    pub slot: u64,
}

impl StackArea {
    /// Top of CPU `cpu`'s stack.
    #[inline]
    pub fn top(self, cpu: usize) -> u64 {
        self.base + (cpu as u64 + 1) * self.slot
    }

    /// The CPU whose slot holds `rsp`.
    #[inline]
    pub fn cpu_of(self, rsp: u64) -> usize {
        (rsp.wrapping_sub(self.base) / self.slot) as usize
    }
}

/// The ring-3 stacks.
#[inline]
pub fn user_stacks() -> StackArea {
    StackArea {
        base: core::ptr::addr_of!(USER_STACKS) as u64,
        slot: USTACK_SLOT as u64,
    }
}

/// The ring-0 stacks (every ring-0 path runs on one).
#[inline]
pub fn kernel_stacks() -> StackArea {
    StackArea {
        base: core::ptr::addr_of!(KERNEL_STACKS) as u64,
        slot: KSTACK_SLOT as u64,
    }
}

// ---------------------------------------------------------------------------------------------
// The system-call stub: the one `ud2` that ring 0's #UD handler treats as a system call (see
// crate::abi). Ring 3 calls it like a C function; ring 0 recognises it by its address.

core::arch::global_asm!(
    ".section .text",
    ".global pvgpu_syscall_stub",
    "pvgpu_syscall_stub:",
    "    ud2",
    "    ret",
);

extern "C" {
    /// The system-call stub: number, then up to four arguments; the result comes back in
    /// `rax` (see [`crate::abi`]).
    pub fn pvgpu_syscall_stub(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> i64;
}

/// Address of the `ud2` that ring 0 treats as a system call.
pub fn syscall_stub_addr() -> u64 {
    pvgpu_syscall_stub as unsafe extern "C" fn(u64, u64, u64, u64, u64) -> i64 as usize as u64
}

// ---------------------------------------------------------------------------------------------
// Ring 3's memory: the heap and the page pool, in the RAM after the image.

/// Where the ring-3 heap is: `[start, start + len)`, from the first 2 MiB boundary after the
/// image.
pub fn heap_region(info: &BootInfo) -> (u64, u64) {
    let start = image::end().next_multiple_of(LARGE_PAGE_SIZE);
    let len = (info.ram_size / 8)
        .clamp(1 << 20, 32 << 20)
        .min(info.ram_size.saturating_sub(start) / 2);
    (start, len)
}

/// Where the page pool starts: the first 2 MiB boundary after the heap (so whole free 2 MiB
/// blocks of the pool are 2 MiB-aligned). It runs to the end of RAM.
pub fn page_pool_base(info: &BootInfo) -> u64 {
    let (heap, len) = heap_region(info);
    (heap + len).next_multiple_of(LARGE_PAGE_SIZE)
}

// ---------------------------------------------------------------------------------------------
// The user-map window: virtual addresses where ring 3 maps pages through the map system call.

/// Start of the window (PML4 slot 1).
pub const USER_MAP_BASE: u64 = 0x80_0000_0000;
/// Size of the window (one PML4 slot: 512 GiB).
pub const USER_MAP_SIZE: u64 = 0x80_0000_0000;
/// Each vCPU's share of the window, for per-CPU tasks.
pub const USER_MAP_PER_CPU: u64 = USER_MAP_SIZE / MAX_VCPUS as u64;

/// Whether `addr` lies in the user-map window.
pub const fn in_user_map(addr: u64) -> bool {
    addr >= USER_MAP_BASE && addr - USER_MAP_BASE < USER_MAP_SIZE
}

/// The vCPU whose share of the window holds `addr` (an address in the window).
pub const fn cpu_of_user_map(addr: u64) -> usize {
    (addr.wrapping_sub(USER_MAP_BASE) / USER_MAP_PER_CPU) as usize
}

/// Quarter `q` (0..4) of CPU `cpu`'s share of the window: `[start, end)`.
const fn quarter(cpu: usize, q: u64) -> (u64, u64) {
    let start = USER_MAP_BASE + cpu as u64 * USER_MAP_PER_CPU + q * (USER_MAP_PER_CPU / 4);
    (start, start + USER_MAP_PER_CPU / 4)
}

/// Where the selftest maps pages by hand on CPU `cpu` (the first quarter of its share).
pub const fn selftest_map_window(cpu: usize) -> (u64, u64) {
    quarter(cpu, 0)
}

/// Where CPU `cpu`'s task maps its objects' views (the second quarter of its share).
pub const fn view_window(cpu: usize) -> (u64, u64) {
    quarter(cpu, 1)
}

/// Where the selftest's fault-upcall pages go on CPU `cpu` (the third quarter of its share).
pub const fn selftest_fault_window(cpu: usize) -> (u64, u64) {
    quarter(cpu, 2)
}

/// Where a workload maps pages by hand on CPU `cpu`, e.g. `zerocopy` looking at moved-from
/// pages (the fourth quarter of its share).
pub const fn workload_map_window(cpu: usize) -> (u64, u64) {
    quarter(cpu, 3)
}
