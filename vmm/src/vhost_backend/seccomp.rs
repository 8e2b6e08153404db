//! The backend's seccomp allow-list: what `pvgpu device` may do once its socket is bound.
//!
//! It serves a socket, maps the memory the frontend sends, copies between that memory and its
//! VRAM memfd, punches holes, and runs a few threads. It never opens files, never issues
//! ioctls (so no /dev/kvm, even through an inherited descriptor), never creates sockets and
//! never executes programs; the one file-system change it may make is removing its socket
//! file at the end. Any other system call kills the process (SIGSYS).

use std::collections::BTreeMap;
use std::convert::TryInto;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

/// Errors installing the filter.
#[derive(Debug, thiserror::Error)]
pub enum BackendSeccompError {
    /// The filter could not be built.
    #[error("cannot build the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("cannot install the seccomp filter: {0}")]
    Apply(#[from] seccompiler::Error),
}

/// The system calls the backend needs after start-up.
const ALLOWED: &[libc::c_long] = &[
    // The vhost-user socket and its messages (accept for the next frontend).
    libc::SYS_accept4,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_poll,
    libc::SYS_ppoll,
    // Event loops and eventfds (kick, call, exit events).
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_lseek,
    // Guest memory (SET_MEM_TABLE), VRAM copies and punches.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_fallocate,
    // Counting resident VRAM pages (the device's host-memory figures).
    libc::SYS_mincore,
    // Threads (the daemon's request thread and vring workers) and their synchronisation.
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_prctl,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_tgkill,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // Removing the socket file when `--once` ends (the listener's drop).
    libc::SYS_unlink,
];

/// The filter as BPF.
pub fn program() -> Result<BpfProgram, BackendSeccompError> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    Ok(filter.try_into()?)
}

/// Installs the filter on every thread of the process (threads made later inherit it).
pub fn install() -> Result<(), BackendSeccompError> {
    let prog = program()?;
    seccompiler::apply_filter_all_threads(&prog)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_builds_and_leaves_out_open_and_ioctl() {
        assert!(!program().unwrap().is_empty());
        for nr in [
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_ioctl,
            libc::SYS_execve,
            libc::SYS_socket,
        ] {
            assert!(!ALLOWED.contains(&nr), "{nr} must not be allowed");
        }
    }
}
