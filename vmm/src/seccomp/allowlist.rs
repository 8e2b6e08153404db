//! The system calls each thread of `pvgpu run` may make once its filter is installed (after
//! set-up, before the guest runs), and those of the `pvgpu device` vhost-user backend once its
//! socket is bound. Everything else traps (SIGSYS) and ends the process with a message naming
//! the call. Built from `strace -f` of every guest workload; one entry per syscall group, with
//! what needs it. To extend: add the call to the group (or a new group) of the thread that
//! makes it, and say why.

use libc::c_ulong;
use pvgpu_device::uffd_sys::{
    UFFDIO_API, UFFDIO_COPY, UFFDIO_MOVE, UFFDIO_REGISTER, UFFDIO_UNREGISTER,
};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iowr_nr};

/// Which thread a list is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ThreadKind {
    /// The main thread: event loop, timeout, host-memory sampling, the end of the run.
    Main,
    /// A vCPU thread: KVM_RUN, port I/O and MMIO exits, phase markers, failure reports.
    Vcpu,
    /// The GPU device thread: the control queue and its data paths.
    Device,
    /// Every thread of the `pvgpu device` vhost-user backend (one list for the process: its
    /// threads are made after the filter and inherit it). Not a `run` thread.
    #[value(skip)]
    Backend,
}

/// A system call, allowed whatever its arguments, or (for ioctl) only with these requests.
pub enum Allow {
    /// Any arguments.
    Any(i64),
    /// ioctl with one of these request numbers (argument 1).
    Ioctl(Vec<c_ulong>),
    /// Not allowed, but answered with EACCES instead of a trap: for calls that libraries
    /// make on their own and cope with failing.
    Refuse(i64),
}

const KVMIO: u32 = kvm_bindings::KVMIO;
ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_bindings::kvm_regs);
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_bindings::kvm_sregs);
ioctl_iowr_nr!(KVM_TRANSLATE, KVMIO, 0x85, kvm_bindings::kvm_translation);

/// Every thread, whatever it does: memory, locks, sleeping, logging to stderr, thread exit.
fn common() -> Vec<Allow> {
    use Allow::Any;
    vec![
        // Heap and thread stacks (malloc, Vec growth, arenas, freeing a finished thread).
        Any(libc::SYS_mmap),
        Any(libc::SYS_munmap),
        Any(libc::SYS_mremap),
        Any(libc::SYS_mprotect),
        Any(libc::SYS_madvise),
        Any(libc::SYS_brk),
        // Locks, condition variables, joins, parking; bounded waits and back-off.
        Any(libc::SYS_futex),
        Any(libc::SYS_sched_yield),
        Any(libc::SYS_nanosleep),
        Any(libc::SYS_clock_nanosleep),
        Any(libc::SYS_clock_gettime),
        // Log lines and errors on stderr.
        Any(libc::SYS_write),
        Any(libc::SYS_writev),
        // Dropping descriptors (epoll sets, eventfds, files) and leaving the thread.
        Any(libc::SYS_close),
        Any(libc::SYS_rt_sigprocmask),
        Any(libc::SYS_sigaltstack),
        Any(libc::SYS_rt_sigreturn),
        Any(libc::SYS_exit),
        Any(libc::SYS_exit_group),
        Any(libc::SYS_gettid),
        Any(libc::SYS_getpid),
    ]
}

/// Reading host memory: fstat of the RAM and VRAM memfds (st_blocks), /proc/self/status (RSS).
fn host_memory_probe() -> Vec<Allow> {
    use Allow::Any;
    vec![
        Any(libc::SYS_openat),
        Any(libc::SYS_read),
        Any(libc::SYS_fstat),
        Any(libc::SYS_newfstatat),
        Any(libc::SYS_statx),
        Any(libc::SYS_lseek),
        // Resident bytes of anonymous guest RAM and VRAM.
        Any(libc::SYS_mincore),
    ]
}

/// Copies between guest memory and the VRAM memfd (MIGRATE/EVICT: pwritev/preadv), CLEAN and
/// freed VRAM (fallocate PUNCH_HOLE), the notify eventfd (read) and the irqfd (write, in
/// `common`): what the device model does on shared memory, in-process or in the backend.
fn vram_copies() -> Vec<Allow> {
    use Allow::Any;
    vec![
        Any(libc::SYS_pwritev),
        Any(libc::SYS_preadv),
        Any(libc::SYS_pwrite64),
        Any(libc::SYS_pread64),
        Any(libc::SYS_fallocate),
        Any(libc::SYS_read),
    ]
}

/// The in-process device's data paths: [`vram_copies`], and on anonymous memory page moves.
fn device_data_path() -> Vec<Allow> {
    let mut v = vram_copies();
    // Anonymous memory: MIGRATE_CLEAN and EVICT move pages with userfaultfd (the destination
    // is registered for the one call, and first checked to be missing with mincore), CLEAN
    // discards with MADV_DONTNEED (madvise is in `common`).
    v.push(Allow::Any(libc::SYS_mincore));
    v.push(Allow::Ioctl(vec![
        UFFDIO_API,
        UFFDIO_REGISTER,
        UFFDIO_UNREGISTER,
        UFFDIO_MOVE,
        UFFDIO_COPY,
    ]));
    v
}

/// Writing a file through a temporary name and a rename (the stats JSON on the main thread,
/// `--screenshot` PNGs on the device thread).
fn write_file_atomically() -> Vec<Allow> {
    use Allow::Any;
    vec![
        Any(libc::SYS_openat),
        Any(libc::SYS_fstat),
        Any(libc::SYS_newfstatat),
        Any(libc::SYS_statx),
        Any(libc::SYS_lseek),
        Any(libc::SYS_fcntl),
        Any(libc::SYS_rename),
        Any(libc::SYS_renameat),
        Any(libc::SYS_renameat2),
        Any(libc::SYS_unlink),
        Any(libc::SYS_unlinkat),
    ]
}

/// vhost-user messages on a connected socket: the frontend's (`--gpu-socket`: register
/// accesses and queue set-up on the vCPU threads, shutdown on the main thread) and the
/// backend's.
fn vhost_user_messages() -> Vec<Allow> {
    use Allow::Any;
    vec![
        Any(libc::SYS_sendmsg),
        Any(libc::SYS_recvmsg),
        Any(libc::SYS_sendto),
        Any(libc::SYS_recvfrom),
        Any(libc::SYS_poll),
        Any(libc::SYS_ppoll),
    ]
}

/// The list for `kind`; `screenshots`: the device thread writes `--screenshot` PNGs.
pub fn allowed(kind: ThreadKind, screenshots: bool) -> Vec<Allow> {
    use Allow::Any;
    let mut v = common();
    match kind {
        ThreadKind::Main => {
            // The event loop: epoll, the run-state/signal eventfds, the timeout and sampling
            // timerfds, dropping a subscriber's fd from the set.
            v.extend([
                Any(libc::SYS_epoll_wait),
                Any(libc::SYS_epoll_pwait),
                Any(libc::SYS_epoll_ctl),
                Any(libc::SYS_timerfd_settime),
            ]);
            // Stopping the vCPUs: the kick signal to each vCPU thread.
            v.extend([Any(libc::SYS_tgkill)]);
            // Sampling host memory, and the stats JSON at the end (a temporary name renamed
            // into place, removed if the write fails).
            v.extend(host_memory_probe());
            v.extend(write_file_atomically());
            v.extend(vhost_user_messages());
        }
        ThreadKind::Vcpu => {
            // KVM_RUN, and the registers and translated RIP for a failure report.
            v.push(Allow::Ioctl(vec![
                KVM_RUN(),
                KVM_GET_REGS(),
                KVM_GET_SREGS(),
                KVM_TRANSLATE(),
            ]));
            // Phase markers snapshot host memory on the vCPU that writes them.
            v.extend(host_memory_probe());
            // A queue notify that the ioeventfd did not catch is served on the vCPU thread.
            v.extend(device_data_path());
            v.extend(vhost_user_messages());
        }
        ThreadKind::Device => {
            // Its own event loop on the notify eventfd.
            v.extend([Any(libc::SYS_epoll_wait), Any(libc::SYS_epoll_pwait)]);
            v.extend(device_data_path());
            if screenshots {
                // `--screenshot`: the scanout as a PNG at flushes (temporary file, rename).
                v.extend(write_file_atomically());
            } else {
                // glibc's malloc reads /proc/sys/vm/overcommit_memory the first time it
                // shrinks a thread's heap (seen in `scale`); it copes with the open failing.
                // Without screenshots the device thread opens no file of its own.
                v.push(Allow::Refuse(libc::SYS_openat));
            }
        }
        ThreadKind::Backend => v.extend(backend()),
    }
    v
}

/// `pvgpu device`, beyond `common`: it serves a socket, maps the memory the frontend sends,
/// copies between that memory and its VRAM memfd, punches holes, and runs a few threads. It
/// never opens files, never issues ioctls (so no /dev/kvm, even through an inherited
/// descriptor), never creates sockets and never executes programs; the one file-system change
/// it may make is removing its socket file at the end.
fn backend() -> Vec<Allow> {
    use Allow::Any;
    let mut v = vhost_user_messages();
    v.extend([
        // The listening socket: the next frontend, the end of a connection.
        Any(libc::SYS_accept4),
        Any(libc::SYS_shutdown),
        Any(libc::SYS_getsockopt),
        // Event loops and eventfds (kick, call, exit events) of the daemon and vring workers.
        Any(libc::SYS_epoll_create1),
        Any(libc::SYS_epoll_ctl),
        Any(libc::SYS_epoll_wait),
        Any(libc::SYS_epoll_pwait),
        Any(libc::SYS_eventfd2),
        Any(libc::SYS_fcntl),
        Any(libc::SYS_dup),
        // The memory-table fds and the VRAM memfd: sizes, and resident VRAM pages (the
        // device's host-memory figures).
        Any(libc::SYS_fstat),
        Any(libc::SYS_newfstatat),
        Any(libc::SYS_statx),
        Any(libc::SYS_lseek),
        Any(libc::SYS_mincore),
        // Threads (the daemon's request thread and vring workers) and their set-up.
        Any(libc::SYS_clone),
        Any(libc::SYS_clone3),
        Any(libc::SYS_set_robust_list),
        Any(libc::SYS_rseq),
        Any(libc::SYS_sched_getaffinity),
        Any(libc::SYS_prctl),
        Any(libc::SYS_rt_sigaction),
        Any(libc::SYS_getrandom),
        Any(libc::SYS_tgkill),
        // Removing the socket file when `--once` ends (the listener's drop).
        Any(libc::SYS_unlink),
    ]);
    // Guest memory copies and VRAM punches (shared memory only: no page moves, no ioctl).
    v.extend(vram_copies());
    v
}
