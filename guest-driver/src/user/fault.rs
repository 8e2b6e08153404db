//! Ring-3 page-fault handling: ring 0 hands a fault in the user-map window to [`entry`],
//! which finds the resolver registered for that address range, lets it make the page
//! present, and resumes the faulting instruction. Demand paging of objects is built on this.

use pvgpu_abi::exit_status;
use spin::Mutex;

use super::sys;
use crate::abi::FaultUpcall;

/// Makes the page at `fault_addr` present for vCPU `cpu`; false if it cannot.
pub type Resolver = fn(fault_addr: u64, cpu: usize) -> bool;

const SLOTS: usize = 16;

/// Registered ranges `[start, end)` and their resolvers.
static RESOLVERS: Mutex<[Option<(u64, u64, Resolver)>; SLOTS]> = Mutex::new([None; SLOTS]);

/// Errors registering a resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// Every slot is taken.
    #[error("no free fault-resolver slot")]
    Full,
    /// Ring 0 refused the handler.
    #[error("registering the fault handler: {0}")]
    Sys(sys::SysError),
}

/// Routes faults in `[start, end)` to `resolver` (replacing a registration of the same range).
pub fn register(start: u64, end: u64, resolver: Resolver) -> Result<(), FaultError> {
    {
        let mut slots = RESOLVERS.lock();
        let same = slots
            .iter()
            .position(|s| matches!(s, Some((a, b, _)) if *a == start && *b == end));
        let free = same
            .or_else(|| slots.iter().position(|s| s.is_none()))
            .ok_or(FaultError::Full)?;
        slots[free] = Some((start, end, resolver));
    }
    let entry_addr = entry as extern "C" fn(*mut FaultUpcall) -> ! as usize as u64;
    sys::set_fault_handler(entry_addr).map_err(FaultError::Sys)
}

/// Stops routing faults in `[start, end)`.
pub fn unregister(start: u64, end: u64) {
    let mut slots = RESOLVERS.lock();
    for s in slots.iter_mut() {
        if matches!(s, Some((a, b, _)) if *a == start && *b == end) {
            *s = None;
        }
    }
}

fn resolver_for(addr: u64) -> Option<Resolver> {
    let slots = RESOLVERS.lock();
    slots
        .iter()
        .flatten()
        .find(|(a, b, _)| (*a..*b).contains(&addr))
        .map(|(_, _, r)| *r)
}

extern "C" fn entry(up: *mut FaultUpcall) -> ! {
    // SAFETY: ring 0 wrote a whole FaultUpcall at `up`, on this stack, just for us.
    let (addr, cpu) = unsafe { ((*up).fault_addr, (*up).cpu as usize) };
    let resolved = resolver_for(addr).is_some_and(|r| r(addr, cpu));
    if resolved {
        let e = sys::fault_return(up);
        crate::println!("[pvgpu-guest] fault return refused: {e}");
    } else {
        crate::println!("[pvgpu-guest] unresolved page fault at {addr:#x} on vCPU {cpu}");
    }
    crate::port::exit(exit_status::guest_fault(exit_status::vector::PF))
}
