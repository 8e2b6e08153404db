//! The IDT and the assembly entry stubs for the 32 CPU exceptions.
//!
//! Every stub pushes a uniform [`crate::abi::TrapFrame`] (a zero error code where the CPU
//! pushes none, the vector, then the general registers) and calls
//! [`super::trap::trap_dispatch`], which may edit the frame before the stub `iretq`s.
//! Interrupts stay disabled everywhere, so there are no IRQ gates.

use spin::Mutex;
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::VirtAddr;

use super::gdt::DOUBLE_FAULT_IST;

core::arch::global_asm!(
    ".macro TRAP_NOERR n",
    "trap_\\n:",
    "    push 0",
    "    push \\n",
    "    jmp trap_common",
    ".endm",
    ".macro TRAP_ERR n",
    "trap_\\n:",
    "    push \\n",
    "    jmp trap_common",
    ".endm",
    ".section .text",
    ".irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31",
    "TRAP_NOERR \\n",
    ".endr",
    ".irp n, 8,10,11,12,13,14,17,21,29,30",
    "TRAP_ERR \\n",
    ".endr",
    "trap_common:",
    "    push rax",
    "    push rbx",
    "    push rcx",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push rbp",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    cld",
    "    mov rdi, rsp",
    "    call {dispatch}",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rbp",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop rcx",
    "    pop rbx",
    "    pop rax",
    "    add rsp, 16",
    "    iretq",
    ".section .rodata",
    ".balign 8",
    ".global trap_stub_table",
    "trap_stub_table:",
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "    .quad trap_\\n",
    ".endr",
    ".section .text",
    dispatch = sym super::trap::trap_dispatch,
);

extern "C" {
    static trap_stub_table: [u64; 32];
}

/// Built at compile time, so ring 0 only fills in the gates it uses (each store is emulated).
#[link_section = ".kdata"]
static IDT: Mutex<InterruptDescriptorTable> = Mutex::new(InterruptDescriptorTable::new());

/// Fills in the gates (vCPU 0 only).
pub fn init() {
    let mut idt = IDT.lock();
    {
        // SAFETY: the table is 32 addresses of the stubs above, written by the assembler.
        let stubs = unsafe { &*core::ptr::addr_of!(trap_stub_table) };
        let addr = |v: usize| VirtAddr::new(stubs[v]);
        // SAFETY: every address set below is the matching stub above, which saves a full
        // TrapFrame and returns with iretq, as a gate handler must; the double-fault gate's
        // IST index names the per-CPU double-fault stack every TSS sets up (gdt::init).
        unsafe {
            idt.divide_error.set_handler_addr(addr(0));
            idt.debug.set_handler_addr(addr(1));
            idt.non_maskable_interrupt.set_handler_addr(addr(2));
            idt.breakpoint.set_handler_addr(addr(3));
            idt.overflow.set_handler_addr(addr(4));
            idt.bound_range_exceeded.set_handler_addr(addr(5));
            idt.invalid_opcode.set_handler_addr(addr(6));
            idt.device_not_available.set_handler_addr(addr(7));
            idt.double_fault
                .set_handler_addr(addr(8))
                .set_stack_index(DOUBLE_FAULT_IST);
            idt.invalid_tss.set_handler_addr(addr(10));
            idt.segment_not_present.set_handler_addr(addr(11));
            idt.stack_segment_fault.set_handler_addr(addr(12));
            idt.general_protection_fault.set_handler_addr(addr(13));
            idt.page_fault.set_handler_addr(addr(14));
            idt.x87_floating_point.set_handler_addr(addr(16));
            idt.alignment_check.set_handler_addr(addr(17));
            idt.machine_check.set_handler_addr(addr(18));
            idt.simd_floating_point.set_handler_addr(addr(19));
            idt.virtualization.set_handler_addr(addr(20));
            idt.cp_protection_exception.set_handler_addr(addr(21));
            idt.hv_injection_exception.set_handler_addr(addr(28));
            idt.vmm_communication_exception.set_handler_addr(addr(29));
            idt.security_exception.set_handler_addr(addr(30));
        }
    }
}

/// Loads the IDT on this CPU.
pub fn load() {
    let idt = IDT.lock();
    // SAFETY: the table lives in a static, so it outlives every CPU's use of it; after vCPU 0
    // filled it in, nobody changes it.
    unsafe { idt.load_unsafe() };
}
