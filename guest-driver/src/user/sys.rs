//! Ring-3 wrappers for the system calls (see [`crate::abi`]).

use pvgpu_abi::exit_status;
use pvgpu_abi::layout::PAGE_SIZE;

use crate::abi::*;
use crate::memory_map::pvgpu_syscall_stub;
use crate::user::page_runs::PageRuns;

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
    map_runs(va, PageRuns::from_pages(pages).runs(), writable)
}

/// Maps runs of physically contiguous pages at `va`, one after another, in as many calls as
/// ring 0's per-call limit needs. On error nothing stays mapped.
pub fn map_runs(va: u64, runs: &[MapRun], writable: bool) -> Result<(), SysError> {
    let flags = if writable { MAP_WRITE } else { 0 };
    if runs.is_empty() {
        // Ring 0 refuses an empty map; let it say so.
        return call(SYS_MAP, va, runs.as_ptr() as u64, 0, flags).map(|_| ());
    }
    let mut at = va;
    let mut batch: alloc::vec::Vec<MapRun> = alloc::vec::Vec::new();
    let mut pages = 0;
    let flush = |batch: &mut alloc::vec::Vec<MapRun>, pages: &mut u64, at: &mut u64| {
        if batch.is_empty() {
            return Ok(());
        }
        call(
            SYS_MAP,
            *at,
            batch.as_ptr() as u64,
            batch.len() as u64,
            flags,
        )?;
        *at += *pages * PAGE_SIZE;
        batch.clear();
        *pages = 0;
        Ok(())
    };
    for r in runs {
        let mut run = *r;
        while run.pages > 0 {
            let n = run.pages.min(MAX_PAGES_PER_CALL - pages);
            batch.push(MapRun {
                pa: run.pa,
                pages: n,
            });
            pages += n;
            run.pa += n * PAGE_SIZE;
            run.pages -= n;
            if pages == MAX_PAGES_PER_CALL {
                if let Err(e) = flush(&mut batch, &mut pages, &mut at) {
                    let _ = unmap(va, (at - va) / PAGE_SIZE);
                    return Err(e);
                }
            }
        }
    }
    if let Err(e) = flush(&mut batch, &mut pages, &mut at) {
        if at > va {
            let _ = unmap(va, (at - va) / PAGE_SIZE);
        }
        return Err(e);
    }
    Ok(())
}

/// Unmaps `count` pages at `va` (in as many calls as ring 0's per-call limit needs).
pub fn unmap(va: u64, count: u64) -> Result<(), SysError> {
    let mut result = Ok(());
    let mut done = 0;
    while done < count {
        let n = (count - done).min(MAX_PAGES_PER_CALL);
        let r = call(SYS_UNMAP, va + done * PAGE_SIZE, n, 0, 0).map(|_| ());
        result = result.and(r);
        done += n;
    }
    if count == 0 {
        return call(SYS_UNMAP, va, 0, 0, 0).map(|_| ());
    }
    result
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
    crate::port::exit(exit_status::KERNEL_ERROR)
}

/// Makes ring 0 fault on purpose (0: #PF, 1: #UD), to test the fault report.
pub fn fault_ring0(kind: u64) -> Result<(), SysError> {
    call(SYS_FAULT_RING0, kind, 0, 0, 0).map(|_| ())
}

/// Raw call, for tests of the validation itself.
pub fn raw(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> Result<u64, SysError> {
    call(nr, a0, a1, a2, a3)
}
