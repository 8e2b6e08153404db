//! The pvgpu guest kernel.
//!
//! Ring 0 ([`kernel`]) is a few hundred lines that KVM's emulator can run: it sets up the
//! GDT/TSS, IDT and page tables, serves a handful of trap-based system calls, and hands page
//! faults in the user-map window to ring 3. Everything else ([`user`]) runs at ring 3,
//! natively: the console, the allocators, and the workloads named on the command line.
#![no_std]
#![no_main]

extern crate alloc;

pub mod abi;
pub mod kernel;
pub mod memory_map;
pub mod port;
pub mod user;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let cs: u16;
    // SAFETY: reads the code segment selector; no side effects.
    unsafe {
        core::arch::asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags))
    };
    kernel::trap::fatal_message(format_args!("panic at ring {}: {}", cs & 3, info))
}
