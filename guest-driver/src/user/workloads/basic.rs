//! Small workloads: greet, fault on purpose, spin.

use crate::memory_map::USER_MAP_BASE;
use pvgpu_abi::boot_info::BootInfo;

use super::{EXIT_FAILED, EXIT_OK};
use crate::user::sys;

/// Prints a greeting.
pub fn hello(info: &BootInfo) -> u8 {
    crate::println!(
        "Hello from the pvgpu guest: ring 3 on vCPU 0 of {}, {} MiB of RAM",
        info.num_cpus,
        info.ram_size >> 20
    );
    EXIT_OK
}

/// Asks ring 0 to fault (0: #PF, 1: #UD); the fatal report ends the guest.
pub fn fault_ring0(kind: u64) -> u8 {
    crate::println!("[pvgpu-guest] asking ring 0 to fault (kind {kind})");
    match sys::fault_ring0(kind) {
        Ok(()) => crate::println!("[pvgpu-guest] ring 0 did not fault"),
        Err(e) => crate::println!("[pvgpu-guest] ring 0 refused to fault: {e}"),
    }
    EXIT_FAILED
}

/// Reads an unmapped user-map address with no fault handler: a fatal ring-3 #PF.
pub fn fault_ring3() -> u8 {
    crate::println!("[pvgpu-guest] touching an unmapped page from ring 3");
    // SAFETY: deliberately faults; ring 0 reports it and ends the guest.
    let v = unsafe { core::ptr::read_volatile(USER_MAP_BASE as *const u64) };
    crate::println!("[pvgpu-guest] read {v:#x} from an unmapped page");
    EXIT_FAILED
}

/// Recurses until the ring-3 stack runs into its guard page: a clean #PF report, not a
/// silent write over the next vCPU's stack.
pub fn stack_overflow() -> u8 {
    crate::println!("[pvgpu-guest] recursing until the stack runs out");
    fn dive(depth: u64) -> u64 {
        if core::hint::black_box(depth) == u64::MAX {
            return 0;
        }
        let frame = core::hint::black_box([depth; 64]);
        frame[depth as usize % 64] + dive(depth + 1)
    }
    let n = dive(0);
    crate::println!("[pvgpu-guest] the stack never ran out ({n})");
    EXIT_FAILED
}

/// Spins forever (for testing the VMM's timeout).
pub fn spin() -> u8 {
    crate::println!("[pvgpu-guest] spinning");
    loop {
        core::hint::spin_loop();
    }
}
