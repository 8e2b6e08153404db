//! Seccomp filters, as Firecracker does it: each thread of a run (main, every vCPU, the GPU
//! device thread) installs its own seccomp-bpf allow-list ([`allowlist`]), compiled with the
//! `seccompiler` crate, after its set-up and before the guest runs. A system call outside the
//! list traps (SECCOMP_RET_TRAP): the SIGSYS handler writes one line naming the call and the
//! thread, with async-signal-safe calls only, and ends the process with status 1. Nothing is
//! killed silently.
//!
//! `pvgpu run` filters every thread; `--no-seccomp` turns the filters off (for debugging).
//! Library callers (bench, demo, tests), whose main thread goes on to other work after a
//! run, filter the vCPU and device threads only (those end with the run).
//!
//! `pvgpu device` (the vhost-user backend) has one list for the whole process
//! ([`ThreadKind::Backend`]), built and reported by the same code: installed on every thread
//! at once (TSYNC) when its socket is bound; the threads it makes later inherit it.

pub mod allowlist;
pub mod syscall_names;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};

use libc::{c_int, c_void, siginfo_t};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use vmm_sys_util::signal::register_signal_handler;

pub use allowlist::ThreadKind;
use allowlist::{allowed, Allow};

/// Exit status after a forbidden system call (a VMM error).
pub const STATUS_FORBIDDEN_SYSCALL: c_int = pvgpu_abi::exit_status::VMM_ERROR as c_int;

/// Errors building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The allow-list could not be compiled.
    #[error("seccomp filter of the {thread}: {message}")]
    Build {
        /// Which thread (or process).
        thread: &'static str,
        /// seccompiler's error.
        message: String,
    },
    /// The filter could not be installed.
    #[error("cannot install the seccomp filter of the {thread}: {message}")]
    Apply {
        /// Which thread (or process).
        thread: &'static str,
        /// seccompiler's error.
        message: String,
    },
    /// The SIGSYS handler could not be installed.
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(vmm_sys_util::errno::Error),
}

/// Which threads a run filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// vCPU and device threads.
    pub threads: bool,
    /// The main thread too (only when the process ends with the run: `pvgpu run`), or the
    /// whole process (`pvgpu device`, whose list covers every thread).
    pub main: bool,
    /// Debug/test hook (`pvgpu run --debug-forbidden-syscall THREAD`, `pvgpu device
    /// --debug-forbidden-syscall`): that thread makes a forbidden call right after installing
    /// its filter, to show what happens.
    pub provoke: Option<ThreadKind>,
    /// The device thread writes `--screenshot` PNGs (files: open, rename).
    pub screenshots: bool,
}

impl Policy {
    /// No filters at all.
    pub const OFF: Policy = Policy {
        threads: false,
        main: false,
        provoke: None,
        screenshots: false,
    };
    /// Every thread (`pvgpu run`).
    pub const PROCESS: Policy = Policy {
        threads: true,
        main: true,
        provoke: None,
        screenshots: false,
    };
    /// vCPU and device threads (library callers).
    pub const THREADS: Policy = Policy {
        threads: true,
        main: false,
        provoke: None,
        screenshots: false,
    };
    /// The whole process (`pvgpu device`).
    pub const BACKEND: Policy = Policy {
        threads: false,
        main: true,
        provoke: None,
        screenshots: false,
    };

    /// `base`, or no filters at all with `--no-seccomp` (`off`); `provoke`: the thread that
    /// makes a forbidden call (`--debug-forbidden-syscall`).
    pub fn from_flags(base: Policy, off: bool, provoke: Option<ThreadKind>) -> Policy {
        if off {
            Policy::OFF
        } else {
            Policy { provoke, ..base }
        }
    }

    /// Whether any thread is filtered.
    pub fn any(&self) -> bool {
        self.threads || self.main
    }

    /// Installs the filter of the calling thread, a `kind` thread (vCPU `index`), if the
    /// policy filters it (for [`ThreadKind::Backend`], on every thread of the process); then
    /// makes the forbidden call if asked to.
    pub fn enter(&self, kind: ThreadKind, index: u32) -> Result<(), SeccompError> {
        let on = match kind {
            ThreadKind::Main | ThreadKind::Backend => self.main,
            ThreadKind::Vcpu | ThreadKind::Device => self.threads,
        };
        if !on {
            return Ok(());
        }
        // The thread's first allocation attaches it to a malloc arena, and glibc counts the
        // CPUs (opening /sys/devices/system/cpu/online) when it first needs one more arena:
        // let that happen now, before the filter, not in the middle of the run.
        std::hint::black_box(vec![0u8; 64]);
        apply(kind, index, self.screenshots)?;
        if self.provoke == Some(kind) {
            provoke();
        }
        Ok(())
    }
}

/// What a filter is on, in messages.
fn label(kind: ThreadKind) -> &'static str {
    match kind {
        ThreadKind::Main => "main thread",
        ThreadKind::Vcpu => "vCPU thread",
        ThreadKind::Device => "GPU device thread",
        ThreadKind::Backend => "vhost-user backend",
    }
}

/// Whether `kind`'s filter goes on every thread of the process (TSYNC), not the caller only.
fn whole_process(kind: ThreadKind) -> bool {
    kind == ThreadKind::Backend
}

/// Compiles the filters of `kind`: the allow-list (trap on anything else) and, if the list
/// refuses some calls with EACCES, a second filter that does that (seccomp applies the
/// strictest answer of all filters: a refused call passes the first and fails in the second).
pub fn filters(kind: ThreadKind, screenshots: bool) -> Result<Vec<BpfProgram>, SeccompError> {
    let mut progs = vec![filter(kind, screenshots)?];
    let refused: Vec<i64> = allowed(kind, screenshots)
        .iter()
        .filter_map(|a| match a {
            Allow::Refuse(nr) => Some(*nr),
            _ => None,
        })
        .collect();
    if !refused.is_empty() {
        let build = |e: &dyn std::fmt::Display| SeccompError::Build {
            thread: label(kind),
            message: e.to_string(),
        };
        let rules = refused.into_iter().map(|nr| (nr, Vec::new())).collect();
        let f = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EACCES as u32),
            TargetArch::x86_64,
        )
        .map_err(|e| build(&e))?;
        progs.push(
            f.try_into()
                .map_err(|e: seccompiler::BackendError| build(&e))?,
        );
    }
    Ok(progs)
}

/// Compiles the allow-list of `kind` (trap on anything else).
pub fn filter(kind: ThreadKind, screenshots: bool) -> Result<BpfProgram, SeccompError> {
    let build = |e: &dyn std::fmt::Display| SeccompError::Build {
        thread: label(kind),
        message: e.to_string(),
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for a in allowed(kind, screenshots) {
        match a {
            // An empty rule list matches the call whatever its arguments.
            Allow::Any(nr) | Allow::Refuse(nr) => {
                rules.insert(nr, Vec::new());
            }
            Allow::Ioctl(requests) => {
                let mut v = Vec::with_capacity(requests.len());
                for req in requests {
                    let cond = SeccompCondition::new(
                        1,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::Eq,
                        u64::from(req as u32),
                    )
                    .map_err(|e| build(&e))?;
                    v.push(SeccompRule::new(vec![cond]).map_err(|e| build(&e))?);
                }
                rules.entry(libc::SYS_ioctl).or_default().extend(v);
            }
        }
    }
    let f = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| build(&e))?;
    f.try_into()
        .map_err(|e: seccompiler::BackendError| build(&e))
}

/// The kinds, for the SIGSYS handler: a kind's code in `KIND` and `PROCESS_KIND` is its place
/// here plus one (0: not set).
const KINDS: [ThreadKind; 4] = [
    ThreadKind::Main,
    ThreadKind::Vcpu,
    ThreadKind::Device,
    ThreadKind::Backend,
];

fn kind_code(kind: ThreadKind) -> u8 {
    KINDS
        .iter()
        .position(|&k| k == kind)
        .map_or(0, |i| i as u8 + 1)
}

thread_local! {
    /// What the calling thread is, for the SIGSYS message ([`kind_code`]; 0 not set).
    static KIND: Cell<u8> = const { Cell::new(0) };
    /// The vCPU index.
    static INDEX: Cell<u32> = const { Cell::new(0) };
}

/// What every thread of the process is, when one filter covers them all (threads made after
/// it have no `KIND` of their own); 0 when each thread has its own.
static PROCESS_KIND: AtomicU8 = AtomicU8::new(0);

/// Installs the filters of `kind` on the calling thread (on every thread of the process for
/// [`ThreadKind::Backend`]).
pub fn apply(kind: ThreadKind, index: u32, screenshots: bool) -> Result<(), SeccompError> {
    let progs = filters(kind, screenshots)?;
    if whole_process(kind) {
        PROCESS_KIND.store(kind_code(kind), Ordering::Relaxed);
    }
    KIND.with(|k| k.set(kind_code(kind)));
    INDEX.with(|i| i.set(index));
    // The allow-list last: installing a filter takes prctl and seccomp, which it forbids.
    for prog in progs.iter().rev() {
        let applied = if whole_process(kind) {
            seccompiler::apply_filter_all_threads(prog)
        } else {
            seccompiler::apply_filter(prog)
        };
        applied.map_err(|e| SeccompError::Apply {
            thread: label(kind),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// Installs the SIGSYS handler (before any filter).
pub fn install_sigsys_handler() -> Result<(), SeccompError> {
    register_signal_handler(libc::SIGSYS, on_sigsys).map_err(SeccompError::Handler)
}

/// A system call no thread's list allows (the kernel log's size: harmless if it ran).
fn provoke() {
    // SAFETY: syslog(SYSLOG_ACTION_SIZE_BUFFER) reads nothing and writes nothing of ours.
    unsafe { libc::syscall(libc::SYS_syslog, 10, std::ptr::null_mut::<c_void>(), 0) };
}

/// A fixed buffer for the handler's message (no allocation in a signal handler).
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }

    fn push_num(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// Byte offset of `si_syscall` in a SIGSYS siginfo on x86-64: after si_signo, si_errno,
/// si_code (and padding) comes `_sigsys { void *_call_addr; int _syscall; unsigned _arch; }`.
const SI_OFF_SYSCALL: usize = 0x18;

extern "C" fn on_sigsys(_: c_int, info: *mut siginfo_t, _: *mut c_void) {
    let nr = if info.is_null() {
        -1
    } else {
        // SAFETY: the kernel passes a valid siginfo for SIGSYS (SA_SIGINFO), and for a
        // seccomp trap it fills the _sigsys member, whose `_syscall` int sits at
        // SI_OFF_SYSCALL; the read is in bounds of the 128-byte siginfo.
        unsafe { std::ptr::read_unaligned(info.cast::<u8>().add(SI_OFF_SYSCALL).cast::<i32>()) }
    };
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    line.push(b"pvgpu: error: the ");
    let code = match KIND.with(|k| k.get()) {
        0 => PROCESS_KIND.load(Ordering::Relaxed),
        c => c,
    };
    let kind = KINDS.get(usize::from(code).wrapping_sub(1)).copied();
    match kind {
        Some(ThreadKind::Vcpu) => {
            line.push(b"vCPU ");
            line.push_num(u64::from(INDEX.with(|i| i.get())));
            line.push(b" thread");
        }
        Some(k) => line.push(label(k).as_bytes()),
        None => line.push(b"unnamed thread"),
    }
    line.push(b" made system call ");
    let name = syscall_names::name(i64::from(nr));
    line.push(if name.is_empty() {
        b"?"
    } else {
        name.as_bytes()
    });
    line.push(b" (");
    line.push_num(u64::try_from(nr).unwrap_or(0));
    line.push(b"), which its seccomp filter forbids; ");
    let stopped: &[u8] = if kind == Some(ThreadKind::Backend) {
        b"the backend is stopped"
    } else {
        b"the run is stopped"
    };
    line.push(stopped);
    line.push(b" (--no-seccomp turns the filters off)\n");
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is a local array.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast::<c_void>(), line.len);
        libc::_exit(STATUS_FORBIDDEN_SYSCALL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BPF `ret` of a constant, and the trap answer (linux/seccomp.h).
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_TRAP: u32 = 0x0003_0000;

    #[test]
    fn every_list_compiles() {
        for k in KINDS {
            let p = filter(k, false).unwrap();
            assert!(!p.is_empty());
            assert_eq!(KINDS[usize::from(kind_code(k)) - 1], k);
        }
    }

    #[test]
    fn the_backend_list_has_no_open_ioctl_socket_or_exec() {
        let list = allowed(ThreadKind::Backend, false);
        for nr in [
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_ioctl,
            libc::SYS_execve,
            libc::SYS_socket,
            libc::SYS_syslog,
        ] {
            assert!(
                !list.iter().any(|a| match a {
                    Allow::Any(n) | Allow::Refuse(n) => *n == nr,
                    Allow::Ioctl(_) => nr == libc::SYS_ioctl,
                }),
                "the backend allows {}",
                syscall_names::name(nr)
            );
        }
        // What it serves with: the socket, its threads, VRAM copies and punches.
        for nr in [
            libc::SYS_accept4,
            libc::SYS_recvmsg,
            libc::SYS_clone3,
            libc::SYS_pwritev,
            libc::SYS_fallocate,
            libc::SYS_unlink,
        ] {
            assert!(list.iter().any(|a| matches!(a, Allow::Any(n) if *n == nr)));
        }
        // One filter, which traps (the SIGSYS report) rather than killing silently.
        let progs = filters(ThreadKind::Backend, false).unwrap();
        assert_eq!(progs.len(), 1);
        let ret = |k: u32| progs[0].iter().any(|i| i.code == BPF_RET_K && i.k == k);
        // (seccompiler's architecture check still kills: a foreign-ABI call is no syscall of
        // ours to name.)
        assert!(ret(SECCOMP_RET_TRAP));
        assert!(whole_process(ThreadKind::Backend));
        assert!(!KINDS
            .iter()
            .any(|&k| k != ThreadKind::Backend && whole_process(k)));
    }

    #[test]
    fn the_lists_are_tight() {
        let has = |k, nr| {
            allowed(k, false)
                .iter()
                .any(|a| matches!(a, Allow::Any(n) if *n == nr))
        };
        // Nobody may start processes, open sockets or make VMs once the guest runs.
        for k in [ThreadKind::Main, ThreadKind::Vcpu, ThreadKind::Device] {
            for nr in [
                libc::SYS_execve,
                libc::SYS_clone,
                libc::SYS_clone3,
                libc::SYS_fork,
                libc::SYS_socket,
                libc::SYS_ptrace,
                libc::SYS_syslog,
                libc::SYS_ioctl,
            ] {
                assert!(!has(k, nr), "{k:?} allows {}", syscall_names::name(nr));
            }
        }
        // ioctls only by request number: KVM's vCPU ones on vCPU threads, userfaultfd's on
        // the threads that move pages; none on the main thread.
        assert!(allowed(ThreadKind::Vcpu, false)
            .iter()
            .any(|a| matches!(a, Allow::Ioctl(r) if r.len() == 4)));
        assert!(!allowed(ThreadKind::Main, false)
            .iter()
            .any(|a| matches!(a, Allow::Ioctl(_))));
        // The device thread cannot open files (its openat is refused) or rename them.
        assert!(!has(ThreadKind::Device, libc::SYS_openat));
        assert!(!has(ThreadKind::Device, libc::SYS_rename));
        assert!(allowed(ThreadKind::Device, false)
            .iter()
            .any(|a| matches!(a, Allow::Refuse(n) if *n == libc::SYS_openat)));
        assert_eq!(filters(ThreadKind::Device, false).unwrap().len(), 2);
        assert_eq!(filters(ThreadKind::Vcpu, false).unwrap().len(), 1);
        // With --screenshot it writes its PNGs.
        assert!(allowed(ThreadKind::Device, true)
            .iter()
            .any(|a| matches!(a, Allow::Any(n) if *n == libc::SYS_rename)));
        assert_eq!(filters(ThreadKind::Device, true).unwrap().len(), 1);
        assert!(has(ThreadKind::Device, libc::SYS_fallocate));
    }
}
