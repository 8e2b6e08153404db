//! System calls (a `ud2` at the stub, see [`crate::abi`]) and page faults handed to ring 3.

use core::sync::atomic::{AtomicU64, Ordering};

use super::{entry::USER_RFLAGS, gdt, paging};
use crate::abi::*;
use crate::memory_map::{self, image};

/// The ring-3 page-fault handler, or 0.
#[link_section = ".kdata"]
static FAULT_HANDLER: AtomicU64 = AtomicU64::new(0);

/// Length of the `ud2` that made the call.
const UD2_LEN: u64 = 2;

/// Arithmetic flags ring 3 may set when it restores a context; the rest come from
/// [`USER_RFLAGS`] (so no TF, no IF, no NT, and IOPL stays 0).
const RESTORABLE_FLAGS: u64 = 0xcd5;

/// End of the lower (user) half of the address space.
const USER_ADDR_END: u64 = 0x0000_8000_0000_0000;

/// Whether `addr` is in the image's code and constants, where all ring-3 code lives.
fn is_user_code(addr: u64) -> bool {
    (image::start()..image::readonly_end()).contains(&addr)
}

/// Runs the call in `f` (number in rdi, arguments in rsi, rdx, rcx, r8).
pub fn handle(f: &mut crate::abi::TrapFrame) {
    let (a0, a1, a2, a3) = (f.rsi, f.rdx, f.rcx, f.r8);
    let ret = match f.rdi {
        SYS_MAP => paging::map(a0, a1, a2, a3),
        SYS_UNMAP => paging::unmap(a0, a1),
        SYS_SET_FAULT_HANDLER if a0 == 0 || is_user_code(a0) => {
            FAULT_HANDLER.store(a0, Ordering::Relaxed);
            0
        }
        SYS_SET_FAULT_HANDLER => EINVAL,
        SYS_FAULT_RETURN => match fault_return(f, a0) {
            Ok(()) => return,
            Err(e) => e,
        },
        SYS_PARK => loop {
            x86_64::instructions::hlt();
        },
        SYS_FAULT_RING0 => fault_ring0(a0),
        _ => ENOSYS,
    };
    f.rax = ret as u64;
    f.rip += UD2_LEN;
}

/// Hands a ring-3 page fault at `addr` to the registered ring-3 handler: pushes a
/// [`FaultUpcall`] below the interrupted stack (past its red zone) and resumes ring 3 in the
/// handler with `rdi` pointing at it. Returns false if there is no handler or no room.
pub fn deliver_fault(f: &mut TrapFrame, addr: u64) -> bool {
    let handler = FAULT_HANDLER.load(Ordering::Relaxed);
    if handler == 0 {
        return false;
    }
    let size = core::mem::size_of::<FaultUpcall>() as u64;
    let Some(sp) = f.rsp.checked_sub(128 + size).map(|s| s & !15) else {
        return false;
    };
    if !paging::user_buffer_ok(sp - 8, size + 8) {
        return false;
    }
    let up = FaultUpcall {
        frame: *f,
        fault_addr: addr,
        // The trap frame sits on this CPU's ring-0 stack.
        cpu: memory_map::kernel_stacks().cpu_of(f as *const TrapFrame as u64) as u64,
    };
    // SAFETY: [sp - 8, sp + size) is ordinary ring-3 RAM (checked above), 16-byte aligned.
    unsafe {
        core::ptr::write(sp as *mut FaultUpcall, up);
        core::ptr::write((sp - 8) as *mut u64, 0);
    }
    f.rip = handler;
    f.rdi = sp;
    f.rsp = sp - 8;
    true
}

/// Resumes the context saved at `ptr`, keeping ring 3's selectors and safe flags.
fn fault_return(f: &mut TrapFrame, ptr: u64) -> Result<(), i64> {
    let size = core::mem::size_of::<FaultUpcall>() as u64;
    if !ptr.is_multiple_of(8) || !paging::user_buffer_ok(ptr, size) {
        return Err(EINVAL);
    }
    // SAFETY: checked to be ordinary ring-3 RAM, aligned.
    let up = unsafe { core::ptr::read(ptr as *const FaultUpcall) };
    // An iretq to a non-canonical address would fault at ring 0: refuse such a frame.
    if !is_user_code(up.frame.rip) || up.frame.rsp >= USER_ADDR_END {
        return Err(EINVAL);
    }
    *f = up.frame;
    f.cs = gdt::USER_CS as u64;
    f.ss = gdt::USER_SS as u64;
    f.rflags = (up.frame.rflags & RESTORABLE_FLAGS) | USER_RFLAGS;
    Ok(())
}

/// Faults on purpose at ring 0 so tests can check the reports: kind 0 reads page 0 (#PF),
/// kind 1 executes `ud2` (#UD), kind 2 loads an empty IDT first, so the `ud2` becomes a
/// triple fault that the VMM must report, kind 3 executes `int3`, which KVM's emulator lacks:
/// on PVM the VMM must report an emulation failure (elsewhere it is a #BP, reported here),
/// kind 4 recurses until the ring-0 stack hits its guard page (a double fault, reported on
/// its own stack).
fn fault_ring0(kind: u64) -> i64 {
    // SAFETY: both deliberately raise an exception, which the fatal path reports; neither
    // returns.
    unsafe {
        match kind {
            0 => core::arch::asm!("mov rax, qword ptr [0]", out("rax") _, options(nostack)),
            1 => core::arch::asm!("ud2", options(nostack)),
            2 => {
                let empty = x86_64::structures::DescriptorTablePointer {
                    limit: 0,
                    base: x86_64::VirtAddr::zero(),
                };
                x86_64::instructions::tables::lidt(&empty);
                core::arch::asm!("ud2", options(nostack));
            }
            3 => core::arch::asm!("int3", options(nostack)),
            4 => {
                fn dive(depth: u64) -> u64 {
                    if core::hint::black_box(depth) == u64::MAX {
                        return 0;
                    }
                    let frame = core::hint::black_box([depth; 64]);
                    frame[depth as usize % 64] + dive(depth + 1)
                }
                return dive(0) as i64;
            }
            _ => return EINVAL,
        }
    }
    EINVAL
}
