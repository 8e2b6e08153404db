//! The userfaultfd ABI pieces pvgpu uses, which the `libc` crate does not define: ioctl
//! numbers, flags and argument structs, transcribed from the Linux UAPI header
//! `include/uapi/linux/userfaultfd.h` (UFFDIO_MOVE and UFFD_FEATURE_MOVE since Linux 6.8).
//! Only [`crate::uffd`] uses them.

/// `UFFD_API`: the API version passed to UFFDIO_API.
pub const UFFD_API: u64 = 0xAA;
/// `UFFDIO`: the ioctl type of userfaultfd.
const UFFDIO: u64 = 0xAA;

/// `UFFD_FEATURE_MOVE` (1 << 16): the kernel supports UFFDIO_MOVE.
pub const UFFD_FEATURE_MOVE: u64 = 1 << 16;
/// `UFFDIO_REGISTER_MODE_MISSING`: faults on missing pages are reported.
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
/// `UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES`: source pages that are not there are skipped (the
/// destination stays missing and reads as zero), not an ENOENT.
pub const UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES: u64 = 1 << 1;

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioApi {
    /// `api`.
    pub api: u64,
    /// `features`.
    pub features: u64,
    /// `ioctls`.
    pub ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioRange {
    /// `start`.
    pub start: u64,
    /// `len`.
    pub len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioRegister {
    /// `range`.
    pub range: UffdioRange,
    /// `mode`.
    pub mode: u64,
    /// `ioctls` (out).
    pub ioctls: u64,
}

/// `struct uffdio_copy` (also the layout of `struct uffdio_move`: dst, src, len, mode, and the
/// signed byte count the kernel writes back).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioCopy {
    /// `dst`.
    pub dst: u64,
    /// `src`.
    pub src: u64,
    /// `len`.
    pub len: u64,
    /// `mode`.
    pub mode: u64,
    /// `copy` / `move` (out): bytes done, or a negative errno.
    pub done: i64,
}

/// `_IOC(dir, type, nr, size)` of asm-generic/ioctl.h.
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (UFFDIO << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// `UFFDIO_API = _IOWR(UFFDIO, 0x3F, struct uffdio_api)`.
pub const UFFDIO_API: u64 = ioc(IOC_READ | IOC_WRITE, 0x3F, std::mem::size_of::<UffdioApi>());
/// `UFFDIO_REGISTER = _IOWR(UFFDIO, 0x00, struct uffdio_register)`.
pub const UFFDIO_REGISTER: u64 = ioc(
    IOC_READ | IOC_WRITE,
    0x00,
    std::mem::size_of::<UffdioRegister>(),
);
/// `UFFDIO_UNREGISTER = _IOR(UFFDIO, 0x01, struct uffdio_range)`.
pub const UFFDIO_UNREGISTER: u64 = ioc(IOC_READ, 0x01, std::mem::size_of::<UffdioRange>());
/// `UFFDIO_COPY = _IOWR(UFFDIO, 0x03, struct uffdio_copy)`.
pub const UFFDIO_COPY: u64 = ioc(
    IOC_READ | IOC_WRITE,
    0x03,
    std::mem::size_of::<UffdioCopy>(),
);
/// `UFFDIO_MOVE = _IOWR(UFFDIO, 0x05, struct uffdio_move)`.
pub const UFFDIO_MOVE: u64 = ioc(
    IOC_READ | IOC_WRITE,
    0x05,
    std::mem::size_of::<UffdioCopy>(),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        // Values as computed by the C preprocessor from linux/userfaultfd.h on x86_64.
        assert_eq!(UFFDIO_API, 0xc018_aa3f);
        assert_eq!(UFFDIO_REGISTER, 0xc020_aa00);
        assert_eq!(UFFDIO_UNREGISTER, 0x8010_aa01);
        assert_eq!(UFFDIO_COPY, 0xc028_aa03);
        assert_eq!(UFFDIO_MOVE, 0xc028_aa05);
    }
}
