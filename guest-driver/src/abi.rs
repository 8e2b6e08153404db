//! The system-call ABI between the guest's ring 3 and its ring 0.
//!
//! On PVM neither `syscall` nor `int N` can enter ring 0 (README.md, "Architecture"), so a
//! system call is a `ud2` at one known stub address
//! ([`crate::memory_map::syscall_stub_addr`]): the #UD handler recognises the address, runs
//! the call, puts the result in `rax`, steps over the `ud2` and returns with `iretq`.
//! Arguments travel in the SysV argument registers: `rdi` = number, then `rsi`, `rdx`,
//! `rcx`, `r8`.

/// Map pages: `(va, runs_ptr, nruns, flags)`. `runs_ptr` points to `nruns` [`MapRun`]s,
/// mapped one after another from `va`. Returns 0 or a negative error.
pub const SYS_MAP: u64 = 0;
/// Unmap `count` pages from `va`: `(va, count)`.
pub const SYS_UNMAP: u64 = 1;
/// Register the ring-3 page-fault handler: `(entry)`; 0 removes it.
pub const SYS_SET_FAULT_HANDLER: u64 = 2;
/// Resume the context saved in a [`FaultUpcall`]: `(frame_ptr)`. Does not return.
pub const SYS_FAULT_RETURN: u64 = 3;
/// Park this vCPU (halt) until the VMM ends the guest. Does not return.
pub const SYS_PARK: u64 = 4;
/// Deliberately fault at ring 0 (for testing the fault report): `(kind)`.
pub const SYS_FAULT_RING0: u64 = 5;

/// One run of physically contiguous pages for [`SYS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapRun {
    /// Guest-physical address of the first page (page-aligned).
    pub pa: u64,
    /// Number of pages.
    pub pages: u64,
}

/// Most pages one [`SYS_MAP`] or [`SYS_UNMAP`] call may cover (1 GiB): bounds the time one call
/// holds ring 0's page-table lock in the emulator. Ring 3 splits larger requests.
pub const MAX_PAGES_PER_CALL: u64 = 1 << 18;

/// [`SYS_MAP`] flag: the mapping is writable.
pub const MAP_WRITE: u64 = 1;

/// A bad address, length or flag.
pub const EINVAL: i64 = -1;
/// The kernel ran out of page-table pages.
pub const ENOMEM: i64 = -2;
/// A page in the range is already mapped.
pub const EEXIST: i64 = -3;
/// A page in the range is not mapped.
pub const ENOENT: i64 = -4;
/// No such system call.
pub const ENOSYS: i64 = -5;

/// The registers saved on a trap, lowest address first (the order the entry stub pushes them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// What ring 0 pushes on the ring-3 stack when it hands a page fault in the user-map window
/// to the registered ring-3 handler. The handler gets a pointer to it in `rdi`, resolves the
/// fault and calls [`SYS_FAULT_RETURN`] with the same pointer, which resumes `frame`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultUpcall {
    /// The interrupted ring-3 context; the faulting instruction is retried on return.
    pub frame: TrapFrame,
    /// The faulting address (CR2).
    pub fault_addr: u64,
    /// The vCPU that faulted.
    pub cpu: u64,
}
