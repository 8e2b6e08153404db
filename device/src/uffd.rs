//! A userfaultfd used only to *move* anonymous pages between two ranges of this process
//! (UFFDIO_MOVE, Linux 6.8+): the page-table entries change hands, no byte is copied, and the
//! source then reads as zero without holding memory. Every userfaultfd system call pvgpu makes
//! is in this file: `userfaultfd(2)` and the ioctls UFFDIO_API, UFFDIO_REGISTER,
//! UFFDIO_UNREGISTER, UFFDIO_MOVE and UFFDIO_COPY.
//!
//! UFFDIO_MOVE needs its destination registered with the userfaultfd. While a range is
//! registered, an access to one of its missing pages (by a vCPU, by KVM, or by this process)
//! waits on the userfaultfd, which nobody serves. So a range is registered only around a move,
//! on the device thread, and copies into a registered range go through UFFDIO_COPY, which
//! fills missing pages without faulting.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::uffd_sys as sys;

/// Errors from userfaultfd.
#[derive(Debug, thiserror::Error)]
pub enum UffdError {
    /// userfaultfd(2) failed (EPERM: run as root or with CAP_SYS_PTRACE, or set
    /// `vm.unprivileged_userfaultfd=1`; ENOSYS: a kernel without userfaultfd).
    #[error("userfaultfd(2): {0} (moving pages needs root, CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1)")]
    Open(std::io::Error),
    /// The API handshake failed.
    #[error("UFFDIO_API: {0}")]
    Api(std::io::Error),
    /// The kernel has userfaultfd but not UFFDIO_MOVE (before Linux 6.8).
    #[error("this kernel has no UFFDIO_MOVE (Linux 6.8 or later is needed)")]
    NoMove,
    /// UFFDIO_REGISTER or UFFDIO_UNREGISTER failed.
    #[error("{what} of {addr:#x}+{len:#x}: {source}")]
    Register {
        /// Which ioctl.
        what: &'static str,
        /// Start of the range.
        addr: u64,
        /// Its length.
        len: u64,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What one UFFDIO_MOVE or UFFDIO_COPY call did.
#[derive(Debug)]
pub struct Progress {
    /// Bytes done from the start of the range (the kernel's count, even on error).
    pub done: u64,
    /// Why it stopped short (`None`: the whole range was done).
    pub error: Option<std::io::Error>,
}

/// A userfaultfd that supports UFFDIO_MOVE.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
}

impl Uffd {
    /// Opens a userfaultfd and checks that the kernel can move pages. It must handle faults
    /// from kernel mode too (a vCPU's access through KVM), so a user-mode-only userfaultfd
    /// (UFFD_USER_MODE_ONLY) will not do: without the privilege (root, CAP_SYS_PTRACE, or
    /// `vm.unprivileged_userfaultfd=1`) this fails with EPERM, and the caller copies instead.
    pub fn new() -> Result<Self, UffdError> {
        // SAFETY: userfaultfd(2) takes only flags and returns a new descriptor or -1.
        let fd =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if fd < 0 {
            return Err(UffdError::Open(std::io::Error::last_os_error()));
        }
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        let mut api = sys::UffdioApi {
            api: sys::UFFD_API,
            features: sys::UFFD_FEATURE_MOVE,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes one uffdio_api, which `api` is.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), sys::UFFDIO_API as _, &mut api) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            // Kernels before 6.8 refuse the unknown feature bit with EINVAL.
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::ENOTTY) => UffdError::NoMove,
                _ => UffdError::Api(e),
            });
        }
        if api.features & sys::UFFD_FEATURE_MOVE == 0 {
            return Err(UffdError::NoMove);
        }
        Ok(Uffd { fd })
    }

    fn range_ioctl(
        &self,
        what: &'static str,
        req: u64,
        addr: u64,
        len: u64,
    ) -> Result<(), UffdError> {
        let rc = if req == sys::UFFDIO_REGISTER {
            let mut reg = sys::UffdioRegister {
                range: sys::UffdioRange { start: addr, len },
                mode: sys::UFFDIO_REGISTER_MODE_MISSING,
                ioctls: 0,
            };
            // SAFETY: UFFDIO_REGISTER reads and writes one uffdio_register. It changes only
            // how faults in the range are handled; the kernel checks the range is mapped.
            unsafe { libc::ioctl(self.fd.as_raw_fd(), req as _, &mut reg) }
        } else {
            let mut range = sys::UffdioRange { start: addr, len };
            // SAFETY: UFFDIO_UNREGISTER reads one uffdio_range; it wakes any waiter.
            unsafe { libc::ioctl(self.fd.as_raw_fd(), req as _, &mut range) }
        };
        if rc != 0 {
            return Err(UffdError::Register {
                what,
                addr,
                len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Registers `[addr, addr + len)` (page-aligned, mapped anonymous memory) for missing-page
    /// faults, as UFFDIO_MOVE's destination. Until [`Self::unregister`], an access to a missing
    /// page there waits.
    pub fn register(&self, addr: u64, len: u64) -> Result<(), UffdError> {
        self.range_ioctl("UFFDIO_REGISTER", sys::UFFDIO_REGISTER, addr, len)
    }

    /// Unregisters `[addr, addr + len)`, waking any access that waits there.
    pub fn unregister(&self, addr: u64, len: u64) -> Result<(), UffdError> {
        self.range_ioctl("UFFDIO_UNREGISTER", sys::UFFDIO_UNREGISTER, addr, len)
    }

    fn transfer(&self, req: u64, mode: u64, dst: u64, src: u64, len: u64) -> Progress {
        let mut arg = sys::UffdioCopy {
            dst,
            src,
            len,
            mode,
            done: 0,
        };
        // SAFETY: UFFDIO_MOVE/UFFDIO_COPY read and write one uffdio_move/uffdio_copy (same
        // layout). The kernel checks both ranges against this process's mappings and fails
        // with an errno (never touching anything else) when they are not suitable. The caller
        // owns both ranges: no Rust reference into them is alive during the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), req as _, &mut arg) };
        let done = u64::try_from(arg.done).unwrap_or(0).min(len);
        if rc == 0 {
            return Progress {
                done: len,
                error: None,
            };
        }
        Progress {
            done,
            error: Some(std::io::Error::last_os_error()),
        }
    }

    /// Moves the pages of `[src, src + len)` to `[dst, dst + len)` (page-aligned; the
    /// destination registered and missing). Holes in the source are skipped (their destination
    /// stays missing, reads as zero). Stops at the first page the kernel refuses (EBUSY for a
    /// pinned or shared page, EEXIST for a present destination page, EAGAIN).
    pub fn move_pages(&self, dst: u64, src: u64, len: u64) -> Progress {
        self.transfer(
            sys::UFFDIO_MOVE,
            sys::UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES,
            dst,
            src,
            len,
        )
    }

    /// Copies `[src, src + len)` into the missing pages of the registered `[dst, dst + len)`
    /// (it fails with EEXIST at a present page).
    pub fn copy_pages(&self, dst: u64, src: u64, len: u64) -> Progress {
        self.transfer(sys::UFFDIO_COPY, 0, dst, src, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{HostMemory, MemoryBackend};
    use vm_memory::VolatileMemory;

    #[test]
    fn pages_move_and_the_source_reads_zero() {
        let b = MemoryBackend::Anonymous { thp: false };
        let src = HostMemory::new(b, "src", 1 << 20).unwrap();
        let dst = HostMemory::new(b, "dst", 1 << 20).unwrap();
        let data: Vec<u8> = (0..64 << 10).map(|i| (i * 7 % 251) as u8).collect();
        src.region()
            .get_slice(0, data.len())
            .unwrap()
            .copy_from(&data);
        let u = Uffd::new().expect("this host has UFFDIO_MOVE (Linux 6.8+)");
        let (d, s) = (dst.host_addr() as u64, src.host_addr() as u64);
        let len = data.len() as u64;
        u.register(d, len).unwrap();
        let p = u.move_pages(d, s, len);
        assert!(p.error.is_none(), "{:?}", p.error);
        assert_eq!(p.done, len);
        // Moving the (now empty) source onto the present destination again never overwrites
        // it (checked below).
        let again = u.move_pages(d, s, 4096);
        assert!(again.done <= 4096);
        u.unregister(d, len).unwrap();
        let mut back = vec![0u8; data.len()];
        dst.region()
            .get_slice(0, back.len())
            .unwrap()
            .copy_to(&mut back[..]);
        assert_eq!(back, data);
        assert_eq!(src.resident_bytes(), 0, "the source holds no memory");
        let mut z = vec![1u8; 4096];
        src.region().get_slice(0, 4096).unwrap().copy_to(&mut z[..]);
        assert!(z.iter().all(|b| *b == 0));
        // Into a range that is not registered: refused with an error, nothing moves.
        let p = u.move_pages(s, d, 4096);
        assert!(p.error.is_some());
        assert_eq!(dst.resident_bytes(), len);
        // Registering a range that is not mapped anonymous memory fails cleanly.
        assert!(u.register(0x1000, 0x1000).is_err());
    }

    #[test]
    fn copies_fill_missing_pages_of_a_registered_range() {
        let b = MemoryBackend::Anonymous { thp: false };
        let src = HostMemory::new(b, "src", 1 << 20).unwrap();
        let dst = HostMemory::new(b, "dst", 1 << 20).unwrap();
        src.region()
            .get_slice(0, 8192)
            .unwrap()
            .copy_from(&[9u8; 8192][..]);
        let u = Uffd::new().unwrap();
        let (d, s) = (dst.host_addr() as u64, src.host_addr() as u64);
        u.register(d, 1 << 20).unwrap();
        let p = u.copy_pages(d, s, 8192);
        assert!(p.error.is_none() && p.done == 8192);
        // The page is there now: a second copy is refused (EEXIST).
        let p = u.copy_pages(d, s, 4096);
        assert_eq!(p.error.and_then(|e| e.raw_os_error()), Some(libc::EEXIST));
        u.unregister(d, 1 << 20).unwrap();
        assert_eq!(src.resident_bytes(), 8192, "a copy leaves the source");
        assert_eq!(dst.resident_bytes(), 8192);
    }
}
