//! Ring-3 wrappers for the system calls (see [`crate::abi`]).

use crate::abi::*;

core::arch::global_asm!(
    ".section .text",
    ".global pvgpu_syscall_stub",
    "pvgpu_syscall_stub:",
    "    ud2",
    "    ret",
);

extern "C" {
    fn pvgpu_syscall_stub(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> i64;
}

/// Address of the `ud2` that ring 0 treats as a system call.
pub fn stub_addr() -> u64 {
    pvgpu_syscall_stub as unsafe extern "C" fn(u64, u64, u64, u64, u64) -> i64 as usize as u64
}

/// A failed system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SysError {
    /// Bad address, length or flag.
    #[error("invalid argument")]
    Invalid,
    /// Ring 0 ran out of page-table pages.
    #[error("out of page-table memory")]
    NoMemory,
    /// Already mapped.
    #[error("already mapped")]
    Exists,
    /// Not mapped.
    #[error("not mapped")]
    NotMapped,
    /// Unknown call.
    #[error("no such system call")]
    NoSys,
    /// Anything else.
    #[error("error {0}")]
    Other(i64),
}

fn call(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> Result<u64, SysError> {
    // SAFETY: the stub traps to ring 0, which reads only the arguments, validates every
    // pointer, and returns in rax like a C function.
    let r = unsafe { pvgpu_syscall_stub(nr, a0, a1, a2, a3) };
    match r {
        r if r >= 0 => Ok(r as u64),
        EINVAL => Err(SysError::Invalid),
        ENOMEM => Err(SysError::NoMemory),
        EEXIST => Err(SysError::Exists),
        ENOENT => Err(SysError::NotMapped),
        ENOSYS => Err(SysError::NoSys),
        r => Err(SysError::Other(r)),
    }
}

/// Maps `pages` (guest-physical addresses) at `va`, one after another. Physically
/// contiguous pages go to ring 0 as one run, so aligned 2 MiB stretches get one large page.
pub fn map(va: u64, pages: &[u64], writable: bool) -> Result<(), SysError> {
    let mut runs: alloc::vec::Vec<MapRun> = alloc::vec::Vec::new();
    for &pa in pages {
        match runs.last_mut() {
            Some(r) if r.pa + r.pages * pvgpu_abi::layout::PAGE_SIZE == pa => r.pages += 1,
            _ => runs.push(MapRun { pa, pages: 1 }),
        }
    }
    map_runs(va, &runs, writable)
}

/// Maps runs of physically contiguous pages at `va`, one after another.
pub fn map_runs(va: u64, runs: &[MapRun], writable: bool) -> Result<(), SysError> {
    let flags = if writable { MAP_WRITE } else { 0 };
    call(SYS_MAP, va, runs.as_ptr() as u64, runs.len() as u64, flags).map(|_| ())
}

/// Unmaps `count` pages at `va`.
pub fn unmap(va: u64, count: u64) -> Result<(), SysError> {
    call(SYS_UNMAP, va, count, 0, 0).map(|_| ())
}

/// Registers the ring-3 page-fault entry (0 to remove it).
pub fn set_fault_handler(entry: u64) -> Result<(), SysError> {
    call(SYS_SET_FAULT_HANDLER, entry, 0, 0, 0).map(|_| ())
}

/// Resumes the context saved in `frame`. Returns only if ring 0 refused the frame.
pub fn fault_return(frame: *const FaultUpcall) -> SysError {
    match call(SYS_FAULT_RETURN, frame as u64, 0, 0, 0) {
        Ok(_) => SysError::Other(0),
        Err(e) => e,
    }
}

/// Halts this vCPU for good.
pub fn park() -> ! {
    let _ = call(SYS_PARK, 0, 0, 0, 0);
    crate::port::exit(crate::kernel::trap::EXIT_KERNEL_ERROR)
}

/// Makes ring 0 fault on purpose (0: #PF, 1: #UD), to test the fault report.
pub fn fault_ring0(kind: u64) -> Result<(), SysError> {
    call(SYS_FAULT_RING0, kind, 0, 0, 0).map(|_| ())
}

/// Raw call, for tests of the validation itself.
pub fn raw(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> Result<u64, SysError> {
    call(nr, a0, a1, a2, a3)
}
