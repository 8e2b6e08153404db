//! Entry from the VMM and the first drop to ring 3.
//!
//! The VMM enters every vCPU at `_start` in 64-bit mode with its boot GDT and an identity map,
//! `rdi` = the boot-info address and `rsi` = the vCPU index. vCPU 0 builds the shared tables
//! (GDT with one TSS per CPU, IDT, page tables); the others wait for it, then every CPU loads
//! them and `iretq`s to ring 3 at [`crate::user::user_main`].

use core::sync::atomic::{AtomicBool, Ordering};

use pvgpu_abi::boot_info::{BootInfo, BOOT_INFO_SIZE};
use pvgpu_abi::layout::MAX_VCPUS;
use spin::Once;

use super::{gdt, idt, paging, trap};
use crate::memory_map::{self, KERNEL_STACKS, KSTACK_SLOT};

/// The validated boot info (vCPU 0 fills it).
#[link_section = ".kdata"]
pub static BOOT: Once<BootInfo> = Once::new();

#[link_section = ".kdata"]
static READY: AtomicBool = AtomicBool::new(false);

core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    cmp rsi, {max}",
    "    jae 2f",
    "    lea rsp, [rip + {stacks}]",
    "    lea rax, [rsi + 1]",
    "    imul rax, rax, {slot}",
    "    add rsp, rax",
    "    xor ebp, ebp",
    "    call {kmain}",
    "2:  hlt",
    "    jmp 2b",
    max = const MAX_VCPUS,
    stacks = sym KERNEL_STACKS,
    slot = const KSTACK_SLOT,
    kmain = sym kmain,
);

extern "C" fn kmain(boot_ptr: u64, cpu: u64) -> ! {
    let cpu = cpu as usize;
    if cpu == 0 {
        // SAFETY: the VMM identity-maps guest RAM and wrote BOOT_INFO_SIZE bytes here.
        let raw = unsafe { core::slice::from_raw_parts(boot_ptr as *const u8, BOOT_INFO_SIZE) };
        let info = match BootInfo::decode(raw) {
            Ok(info) => info,
            Err(e) => trap::fatal_message(format_args!("bad boot info: {e}")),
        };
        BOOT.call_once(|| info);
        gdt::init(info.num_cpus as usize);
        idt::init();
        paging::init(&info);
        READY.store(true, Ordering::Release);
    } else {
        while !READY.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
    }
    gdt::load(cpu);
    idt::load();
    paging::activate();
    enter_ring3(cpu)
}

/// RFLAGS for ring 3: only bit 1 (always set). IOPL stays 0 (the TSS I/O bitmap grants the
/// console, exit and phase ports), and interrupts stay off: ring 3 polls.
pub const USER_RFLAGS: u64 = 0x2;

fn enter_ring3(cpu: usize) -> ! {
    let entry = crate::user::user_main as extern "C" fn(usize) -> ! as usize as u64;
    let stack = memory_map::user_stacks().top(cpu);
    // SAFETY: builds an interrupt-return frame to ring 3 with the user selectors from our
    // GDT, a user stack and the user entry point, and never comes back.
    unsafe {
        core::arch::asm!(
            "push {ss}",
            "push {rsp}",
            "push {rflags}",
            "push {cs}",
            "push {rip}",
            "iretq",
            ss = in(reg) gdt::USER_SS as u64,
            rsp = in(reg) stack,
            rflags = in(reg) USER_RFLAGS,
            cs = in(reg) gdt::USER_CS as u64,
            rip = in(reg) entry,
            in("rdi") cpu,
            options(noreturn)
        );
    }
}
