//! Ring 3: everything that need not be privileged, running natively.

pub mod clock;
pub mod cmdline;
pub mod console;
pub mod fault;
pub mod gpu;
pub mod heap;
pub mod objects;
pub mod page_runs;
pub mod pages;
pub mod smp;
pub mod sys;
pub mod workloads;

use pvgpu_abi::boot_info::{BootInfo, BOOT_INFO_SIZE};
use pvgpu_abi::layout::BOOT_INFO_ADDR;

/// The vCPU this ring-3 code runs on: every vCPU runs ring 3 on its own stack (fault upcalls
/// too), so the stack pointer says which. This is what tasks are: one per vCPU.
pub fn current_cpu() -> usize {
    let rsp: u64;
    // SAFETY: reads the stack pointer; no memory or flags are touched.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags))
    };
    crate::memory_map::user_stacks().cpu_of(rsp)
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
