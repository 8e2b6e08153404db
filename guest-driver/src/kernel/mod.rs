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

/// Linker-script symbols (see link.ld).
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
