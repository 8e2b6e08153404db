//! Ring-3 page-fault handling: ring 0 hands a fault in the user-map window to [`entry`],
//! which asks the registered resolver to make the page present and then resumes the
//! faulting instruction. This is what demand paging of objects is built on.

use core::sync::atomic::{AtomicUsize, Ordering};

use pvgpu_abi::layout::EXIT_GUEST_FAULT_BASE;

use super::sys;
use crate::abi::FaultUpcall;

/// Makes the page at the given address present; false if it cannot.
pub type Resolver = fn(fault_addr: u64) -> bool;

static RESOLVER: AtomicUsize = AtomicUsize::new(0);

/// Installs `resolver` for faults in the user-map window.
pub fn install(resolver: Resolver) -> Result<(), sys::SysError> {
    RESOLVER.store(resolver as fn(u64) -> bool as usize, Ordering::Release);
    sys::set_fault_handler(entry as extern "C" fn(*mut FaultUpcall) -> ! as usize as u64)
}

/// Removes the resolver: faults in the window are fatal again.
pub fn uninstall() -> Result<(), sys::SysError> {
    sys::set_fault_handler(0)?;
    RESOLVER.store(0, Ordering::Release);
    Ok(())
}

extern "C" fn entry(up: *mut FaultUpcall) -> ! {
    // SAFETY: ring 0 wrote a whole FaultUpcall at `up`, on this stack, just for us.
    let addr = unsafe { (*up).fault_addr };
    let f = RESOLVER.load(Ordering::Acquire);
    let resolved = if f == 0 {
        false
    } else {
        // SAFETY: only `install` stores here, and it stores a `Resolver`.
        let resolver: Resolver = unsafe { core::mem::transmute::<usize, Resolver>(f) };
        resolver(addr)
    };
    if resolved {
        let e = sys::fault_return(up);
        crate::println!("[pvgpu-guest] fault return refused: {e}");
    } else {
        crate::println!("[pvgpu-guest] unresolved page fault at {addr:#x}");
    }
    crate::port::exit(EXIT_GUEST_FAULT_BASE + 14)
}
