//! Anonymous shared memory files (memfd) whose host pages can be counted and freed exactly.
//!
//! Guest RAM and VRAM both live in memfds: `fstat` `st_blocks` tells how many host bytes are
//! really allocated, and `fallocate(PUNCH_HOLE | KEEP_SIZE)` gives pages back to the host
//! while keeping the file's size, so later reads of a punched range see zeros.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

/// Errors from memfd operations.
#[derive(Debug, thiserror::Error)]
pub enum MemFdError {
    /// memfd_create failed.
    #[error("memfd_create({name}) failed: {source}")]
    Create {
        /// The memfd's name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Setting the size failed.
    #[error("cannot size memfd to {size} bytes: {source}")]
    SetLen {
        /// Requested size.
        size: u64,
        /// The OS error.
        source: std::io::Error,
    },
    /// fstat failed.
    #[error("fstat on memfd failed: {0}")]
    Stat(std::io::Error),
    /// The range to punch is outside the file.
    #[error("punch range {offset:#x}+{len:#x} is outside the memfd ({size:#x} bytes)")]
    OutOfRange {
        /// Start of the range.
        offset: u64,
        /// Its length.
        len: u64,
        /// The file size.
        size: u64,
    },
    /// fallocate(PUNCH_HOLE) failed.
    #[error("punching {offset:#x}+{len:#x} failed: {source}")]
    Punch {
        /// Start of the range.
        offset: u64,
        /// Its length.
        len: u64,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A sized memfd.
#[derive(Debug)]
pub struct MemFd {
    file: File,
    size: u64,
}

impl MemFd {
    /// Creates a memfd of `size` bytes (no host pages are allocated until touched).
    pub fn new(name: &str, size: u64) -> Result<Self, MemFdError> {
        let cname = CString::new(name).unwrap_or_else(|_| c"pvgpu".to_owned());
        // SAFETY: cname is a valid NUL-terminated string; the flags are valid for memfd_create.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(MemFdError::Create {
                name: name.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size)
            .map_err(|source| MemFdError::SetLen { size, source })?;
        Ok(MemFd { file, size })
    }

    /// A memfd received from elsewhere (e.g. over a vhost-user socket) of `size` bytes.
    pub fn from_file(file: File, size: u64) -> Self {
        MemFd { file, size }
    }

    /// The file, for mapping it (e.g. as a vm-memory `FileOffset`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Size of the file in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Host bytes really allocated to the file (fstat `st_blocks` × 512).
    pub fn allocated_bytes(&self) -> Result<u64, MemFdError> {
        // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the fd is open for the lifetime of self, and st is a valid out-pointer.
        let rc = unsafe { libc::fstat(self.file.as_raw_fd(), &mut st) };
        if rc != 0 {
            return Err(MemFdError::Stat(std::io::Error::last_os_error()));
        }
        Ok(st.st_blocks as u64 * 512)
    }

    /// Frees the host pages of `[offset, offset + len)`, keeping the file size; the range
    /// reads as zeros afterwards.
    pub fn punch_hole(&self, offset: u64, len: u64) -> Result<(), MemFdError> {
        let end = offset.checked_add(len);
        if end.is_none_or(|e| e > self.size) {
            return Err(MemFdError::OutOfRange {
                offset,
                len,
                size: self.size,
            });
        }
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the fd is valid; fallocate only changes the file's allocation.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc != 0 {
            return Err(MemFdError::Punch {
                offset,
                len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn allocation_is_counted_and_punched() {
        let m = MemFd::new("test", 4 << 20).unwrap();
        assert_eq!(m.allocated_bytes().unwrap(), 0);
        m.file()
            .write_all_at(&vec![0xab; 1 << 20], 1 << 20)
            .unwrap();
        assert_eq!(m.allocated_bytes().unwrap(), 1 << 20);
        m.punch_hole(1 << 20, 512 << 10).unwrap();
        assert_eq!(m.allocated_bytes().unwrap(), 512 << 10);
        let mut b = [1u8; 16];
        m.file().read_exact_at(&mut b, 1 << 20).unwrap();
        assert_eq!(b, [0; 16]);
        m.file().read_exact_at(&mut b, (3 << 19) + 8).unwrap();
        assert_eq!(b, [0xab; 16]);
    }

    #[test]
    fn punch_outside_is_refused() {
        let m = MemFd::new("test", 1 << 20).unwrap();
        assert!(matches!(
            m.punch_hole(1 << 20, 1),
            Err(MemFdError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.punch_hole(u64::MAX, 2),
            Err(MemFdError::OutOfRange { .. })
        ));
        m.punch_hole(0, 0).unwrap();
    }
}
