//! Exception dispatch: system calls, page faults handed to ring 3, and fatal reports.

use core::fmt::Write;

use pvgpu_abi::exit_status::{vector, GUEST_FAULT_BASE, KERNEL_ERROR};
use x86_64::registers::control::Cr2;

use super::syscall;
use crate::abi::TrapFrame;
use crate::memory_map;
use crate::port::{self, LineWriter};

const VECTOR_UD: u64 = vector::UD as u64;
const VECTOR_PF: u64 = vector::PF as u64;

const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization",
    "#CP control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved",
];

/// Called by the entry stub with the saved frame of every exception.
pub extern "C" fn trap_dispatch(f: &mut TrapFrame) {
    let from_user = f.cs & 3 == 3;
    if from_user && f.vector == VECTOR_UD && f.rip == memory_map::syscall_stub_addr() {
        syscall::handle(f);
        return;
    }
    if f.vector == VECTOR_PF {
        let addr = Cr2::read_raw();
        if from_user && memory_map::in_user_map(addr) && syscall::deliver_fault(f, addr) {
            return;
        }
        fatal(f, addr);
    }
    fatal(f, 0)
}

/// Reports an exception nobody handles, then ends the guest with 64 + vector.
fn fatal(f: &TrapFrame, cr2: u64) -> ! {
    let vector = (f.vector & 31) as usize;
    let rsp = current_rsp();
    let cpu =
        super::gdt::cpu_of_df_stack(rsp).unwrap_or_else(|| memory_map::kernel_stacks().cpu_of(rsp));
    let mut w = LineWriter::new();
    let _ = write!(
        w,
        "\n[pvgpu-guest] FATAL {} (vector {}) at ring {} on cpu {}: error {:#x}\n",
        NAMES[vector],
        f.vector,
        f.cs & 3,
        cpu,
        f.error_code
    );
    let _ = writeln!(
        w,
        "  rip={:#018x} rsp={:#018x} rflags={:#x} cr2={:#x}",
        f.rip, f.rsp, f.rflags, cr2
    );
    let _ = writeln!(
        w,
        "  rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
        f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp
    );
    w.flush();
    port::exit(GUEST_FAULT_BASE + vector as u8)
}

/// Reports a fatal condition that is not an exception, then exits with [`KERNEL_ERROR`].
pub fn fatal_message(args: core::fmt::Arguments) -> ! {
    let mut w = LineWriter::new();
    let _ = write!(w, "\n[pvgpu-guest] FATAL: {args}\n");
    w.flush();
    port::exit(KERNEL_ERROR)
}

fn current_rsp() -> u64 {
    let rsp: u64;
    // SAFETY: reads the stack pointer; no memory or flags are touched.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags))
    };
    rsp
}
