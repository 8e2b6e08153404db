//! Ring 0: only what must run privileged. Every instruction here is interpreted by KVM's
//! emulator on PVM (about 270 ns each), so this code is small, does little, and avoids
//! instructions the emulator lacks (no SSE, popcnt, int3, xsave: the target is soft-float,
//! baseline x86-64).

pub mod entry;
pub mod gdt;
pub mod idt;
pub mod paging;
pub mod syscall;
pub mod trap;
