//! Ring 3: everything that need not be privileged, running natively.

pub mod clock;
pub mod cmdline;
pub mod console;
pub mod fault;
pub mod gpu;
pub mod heap;
pub mod objects;
pub mod pages;
pub mod smp;
pub mod sys;
pub mod workloads;

use pvgpu_abi::boot_info::{BootInfo, BOOT_INFO_SIZE};
use pvgpu_abi::layout::{BOOT_INFO_ADDR, MAX_VCPUS};

/// Size of each CPU's ring-3 stack.
const USTACK_SIZE: usize = 192 * 1024;
/// Each stack sits in a slot after an unmapped guard page (see kernel::paging), so running
/// off its end faults instead of writing over the next CPU's stack.
pub const USTACK_SLOT: usize = USTACK_SIZE + pvgpu_abi::layout::PAGE_SIZE as usize;

#[repr(C, align(4096))]
struct Stacks([[u8; USTACK_SLOT]; MAX_VCPUS as usize]);

#[link_section = ".ustack"]
static mut USER_STACKS: Stacks = Stacks([[0; USTACK_SLOT]; MAX_VCPUS as usize]);

/// Where the stack slots start (ring 0 checks that this is the start of `.ustack`).
pub fn stacks_base() -> u64 {
    core::ptr::addr_of!(USER_STACKS) as u64
}

/// Top of CPU `cpu`'s ring-3 stack.
pub fn stack_top(cpu: usize) -> u64 {
    core::ptr::addr_of!(USER_STACKS) as u64 + ((cpu as u64 + 1) * USTACK_SLOT as u64)
}

/// The vCPU this ring-3 code runs on: every vCPU runs ring 3 on its own stack (fault upcalls
/// too), so the stack pointer says which. This is what tasks are: one per vCPU.
pub fn current_cpu() -> usize {
    let rsp: u64;
    // SAFETY: reads the stack pointer; no memory or flags are touched.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags))
    };
    let base = core::ptr::addr_of!(USER_STACKS) as u64;
    (rsp.wrapping_sub(base) / USTACK_SLOT as u64) as usize
}

/// The boot info, read from its page (mapped read-only for ring 3).
pub fn boot_info() -> BootInfo {
    // SAFETY: the boot-info page is identity-mapped and readable at ring 3; the VMM wrote it
    // and nobody changes it.
    let raw = unsafe { core::slice::from_raw_parts(BOOT_INFO_ADDR as *const u8, BOOT_INFO_SIZE) };
    // Ring 0 validated this very block before entering ring 3.
    BootInfo::decode(raw).unwrap_or_default()
}

/// Ring-3 entry of every CPU.
pub extern "C" fn user_main(cpu: usize) -> ! {
    if cpu != 0 {
        smp::secondary(cpu)
    }
    let info = boot_info();
    heap::init(&info);
    pages::init(&info);
    let status = workloads::run(&cmdline::args(&info), &info);
    crate::port::exit(status)
}
