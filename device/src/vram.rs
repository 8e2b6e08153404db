//! VRAM: host memory of the configured size ([`HostMemory`]: anonymous, or a memfd), mapped
//! into the device, and the data paths on it: bulk copies between guest pages and VRAM, fill,
//! copy, checksum, and discarding freed ranges. (Moving pages instead of copying them is
//! [`crate::page_mover`].)
//!
//! All guest memory goes through vm-memory (`GuestMemory::get_slices`); VRAM is a vm-memory
//! `MmapRegion`, and the VMM registers that very mapping as the KVM memslot of the VRAM
//! window. Copies move whole runs of contiguous pages at once.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddress, GuestMemory, Permissions, VolatileMemory, VolatileSlice};

use crate::backend::{BackendError, HostMemory, MemoryBackend};
use crate::guest_ram::Extent;
use crate::memfd::MemFd;
use pvgpu_abi::layout;
use pvgpu_abi::protocol::PAGE_SIZE;

/// Chunk size for fill and checksum passes.
const CHUNK: usize = 256 << 10;
/// Most iovecs per preadv/pwritev call (Linux's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

#[derive(Clone, Copy)]
enum Direction {
    ToVram,
    ToGuest,
}

/// Errors from VRAM operations.
#[derive(Debug, thiserror::Error)]
pub enum VramError {
    /// The size is 0, not page-aligned, or above `layout::VRAM_MAX`.
    #[error("invalid VRAM size {0:#x}")]
    BadSize(u64),
    /// Creating, mapping or discarding VRAM's host memory failed.
    #[error("VRAM: {0}")]
    Host(#[from] BackendError),
    /// A range outside VRAM (an internal error: callers check ranges first).
    #[error("VRAM range {offset:#x}+{len:#x} is out of bounds")]
    OutOfBounds {
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// Reading or writing the VRAM memfd failed.
    #[error("VRAM I/O: {0}")]
    Io(std::io::Error),
    /// Guest memory could not be accessed (not backed by the VMM's guest memory).
    #[error("guest memory {gpa:#x}+{len:#x}: {msg}")]
    Guest {
        /// Address.
        gpa: u64,
        /// Length.
        len: u64,
        /// vm-memory's error.
        msg: String,
    },
}

/// VRAM: its host memory and the device's mapping of it.
#[derive(Debug)]
pub struct Vram {
    host: Arc<HostMemory>,
}

impl Vram {
    /// Creates `size` bytes of VRAM in a memfd (the shared backend; no host memory is used
    /// until written).
    pub fn new(size: u64) -> Result<Self, VramError> {
        Self::with_backend(MemoryBackend::Shared, size)
    }

    /// Creates `size` bytes of VRAM in `backend`'s memory.
    ///
    /// Anonymous VRAM does not ask for transparent huge pages (MADV_NOHUGEPAGE): huge pages
    /// that MIGRATE_CLEAN moves in from guest RAM stay huge (UFFDIO_MOVE moves whole page-table
    /// entries), but pages VRAM allocates itself (a copying MIGRATE, FILL) come 4 KiB at a
    /// time. Measured here, faulting in fresh huge pages for a 64 MiB copy took 307 ms against
    /// 79 ms with 4 KiB pages (this host is itself a VM that backs fresh memory lazily), and a
    /// huge page partly freed stays resident.
    pub fn with_backend(backend: MemoryBackend, size: u64) -> Result<Self, VramError> {
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) || size > layout::VRAM_MAX {
            return Err(VramError::BadSize(size));
        }
        let backend = match backend {
            MemoryBackend::Anonymous { .. } => MemoryBackend::Anonymous { thp: false },
            b => b,
        };
        let host = HostMemory::new(backend, "pvgpu-vram", size)?;
        Ok(Vram {
            host: Arc::new(host),
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.host.size()
    }

    /// VRAM's host memory: for host-memory accounting (`resident_bytes`), shared with the
    /// VMM's probe.
    pub fn host_memory(&self) -> &Arc<HostMemory> {
        &self.host
    }

    /// The memfd, on the shared backend.
    pub fn memfd(&self) -> Option<&MemFd> {
        self.host.memfd()
    }

    /// The device's mapping of VRAM: the VMM registers this address as the memslot's
    /// userspace address, so guest and device share one mapping.
    pub fn host_addr(&self) -> *mut u8 {
        self.host.host_addr()
    }

    /// `[offset, offset + len)` of VRAM as a volatile slice.
    pub(crate) fn slice(&self, offset: u64, len: u64) -> Result<VolatileSlice<'_, ()>, VramError> {
        let oob = VramError::OutOfBounds { offset, len };
        let off = usize::try_from(offset).map_err(|_| VramError::OutOfBounds { offset, len })?;
        let n = usize::try_from(len).map_err(|_| VramError::OutOfBounds { offset, len })?;
        self.host.region().get_slice(off, n).map_err(|_| oob)
    }

    /// Copies the guest pages `extents`, in order, to VRAM at `vram_offset`.
    pub fn copy_from_guest<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        extents: &[Extent],
        vram_offset: u64,
    ) -> Result<(), VramError> {
        self.transfer(mem, extents, vram_offset, Direction::ToVram)
    }

    /// Copies VRAM at `vram_offset` into the guest pages `extents`, in order.
    pub fn copy_to_guest<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        extents: &[Extent],
        vram_offset: u64,
    ) -> Result<(), VramError> {
        self.transfer(mem, extents, vram_offset, Direction::ToGuest)
    }

    /// Moves data between guest pages and VRAM with vectored I/O on the memfd
    /// (pwritev/preadv, up to `IOV_MAX` guest runs per system call) instead of copying
    /// through the device's mapping. Freshly allocated VRAM has no host pages (freed ranges
    /// are punched); shmem's write path allocates whole pages without zeroing them and
    /// without one page fault per 4 KiB, and its read path needs no mapping of VRAM at all.
    fn transfer<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        extents: &[Extent],
        vram_offset: u64,
        dir: Direction,
    ) -> Result<(), VramError> {
        let access = match dir {
            Direction::ToVram => Permissions::Read,
            Direction::ToGuest => Permissions::Write,
        };
        // Gather every guest run first (checked against guest memory), then VRAM bounds.
        let slices = guest_slices(mem, extents, access)?;
        let total: u64 = slices.iter().map(|s| s.len() as u64).sum();
        let vram_all = self.slice(vram_offset, total)?;
        let Some(memfd) = self.host.memfd() else {
            // Anonymous VRAM: copy through the mapping, run by run.
            let mut pos = 0usize;
            for s in &slices {
                let v = vram_all
                    .subslice(pos, s.len())
                    .map_err(|_| VramError::OutOfBounds {
                        offset: vram_offset,
                        len: total,
                    })?;
                match dir {
                    Direction::ToVram => s.copy_to_volatile_slice(v),
                    Direction::ToGuest => {
                        v.copy_to_volatile_slice(s.clone());
                        s.bitmap().mark_dirty(0, s.len());
                    }
                }
                pos += s.len();
            }
            return Ok(());
        };
        let fd = memfd.file().as_raw_fd();
        let mut pos = vram_offset;
        for chunk in slices.chunks(IOV_MAX) {
            let guards: Vec<_> = chunk.iter().map(|s| s.ptr_guard_mut()).collect();
            let iov: Vec<libc::iovec> = guards
                .iter()
                .zip(chunk)
                .map(|(g, s)| libc::iovec {
                    iov_base: g.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                })
                .collect();
            let want: usize = chunk.iter().map(|s| s.len()).sum();
            let mut done = 0usize;
            // Retry partial transfers from where they stopped.
            let mut iov_at = 0usize;
            let mut iov = iov;
            while done < want {
                let off = libc::off_t::try_from(pos + done as u64).map_err(|_| {
                    VramError::OutOfBounds {
                        offset: pos,
                        len: want as u64,
                    }
                })?;
                let rest = &iov[iov_at..];
                // SAFETY: every iovec points into a guest-memory VolatileSlice that vm-memory
                // bounds-checked and that stays mapped while its guard lives (for the whole
                // loop); the file range [off, off + len) was checked to lie inside VRAM. The
                // kernel copies between the file and those buffers; no Rust reference to the
                // buffers exists meanwhile.
                let n = unsafe {
                    match dir {
                        Direction::ToVram => {
                            libc::pwritev(fd, rest.as_ptr(), rest.len() as libc::c_int, off)
                        }
                        Direction::ToGuest => {
                            libc::preadv(fd, rest.as_ptr(), rest.len() as libc::c_int, off)
                        }
                    }
                };
                if n <= 0 {
                    return Err(VramError::Io(std::io::Error::last_os_error()));
                }
                let mut n = n as usize;
                done += n;
                // Advance the iovec window past what was transferred.
                while n > 0 && iov_at < iov.len() {
                    let v = &mut iov[iov_at];
                    if n >= v.iov_len {
                        n -= v.iov_len;
                        iov_at += 1;
                    } else {
                        // SAFETY: n < iov_len, so the new base stays inside the same buffer.
                        v.iov_base = unsafe { (v.iov_base as *mut u8).add(n) } as *mut libc::c_void;
                        v.iov_len -= n;
                        n = 0;
                    }
                }
            }
            if matches!(dir, Direction::ToGuest) {
                for s in chunk {
                    s.bitmap().mark_dirty(0, s.len());
                }
            }
            pos += want as u64;
        }
        Ok(())
    }

    /// Sets `[offset, offset + len)` to `value`.
    pub fn fill(&self, offset: u64, len: u64, value: u8) -> Result<(), VramError> {
        let dst = self.slice(offset, len)?;
        let buf = vec![value; CHUNK.min(dst.len())];
        let mut pos = 0;
        while pos < dst.len() {
            let n = CHUNK.min(dst.len() - pos);
            let part = dst
                .subslice(pos, n)
                .map_err(|_| VramError::OutOfBounds { offset, len })?;
            part.copy_from(&buf[..n]);
            pos += n;
        }
        Ok(())
    }

    /// Copies `len` bytes from `src` to `dst` (memmove: the ranges may overlap).
    pub fn copy_within(&self, src: u64, dst: u64, len: u64) -> Result<(), VramError> {
        let s = self.slice(src, len)?;
        let d = self.slice(dst, len)?;
        // copy_to_volatile_slice uses ptr::copy, which handles overlap.
        s.copy_to_volatile_slice(d);
        Ok(())
    }

    /// Continues crc32c `crc` over `[offset, offset + len)`.
    pub fn checksum_append(&self, crc: u32, offset: u64, len: u64) -> Result<u32, VramError> {
        let src = self.slice(offset, len)?;
        Ok(checksum_slice(crc, &src))
    }

    /// Reads VRAM into `buf` (tests and diagnostics).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), VramError> {
        let s = self.slice(offset, buf.len() as u64)?;
        s.copy_to(buf);
        Ok(())
    }

    /// Gives the host pages of `[offset, offset + len)` back; the range reads as zeros.
    pub fn punch(&self, offset: u64, len: u64) -> Result<(), VramError> {
        Ok(self.host.discard(offset, len)?)
    }

    /// Makes `[offset, offset + len)` missing, as the destination of a page move must be:
    /// punches it only if a page there is resident. (Freed VRAM already is missing, and a
    /// discard is not free even then: KVM must drop its mappings of the range.)
    pub fn make_missing(&self, offset: u64, len: u64) -> Result<(), VramError> {
        if self.host.resident_bytes_in(offset, len)? == 0 {
            return Ok(());
        }
        self.punch(offset, len)
    }
}

/// The guest memory of the pages `extents`, in order, as vm-memory slices for `access`; every
/// extent must be wholly backed by guest memory.
pub(crate) fn guest_slices<'m, M: GuestMemory + ?Sized>(
    mem: &'m M,
    extents: &[Extent],
    access: Permissions,
) -> Result<Vec<GuestSlice<'m, M>>, VramError> {
    let mut slices = Vec::with_capacity(extents.len());
    for x in extents {
        let guest_err = |msg: String| VramError::Guest {
            gpa: x.gpa,
            len: x.len,
            msg,
        };
        let n = usize::try_from(x.len).map_err(|_| guest_err("too long".into()))?;
        let it = mem
            .get_slices(GuestAddress(x.gpa), n, access)
            .map_err(|e| guest_err(e.to_string()))?;
        let mut done = 0u64;
        for s in it {
            let s = s.map_err(|e| guest_err(e.to_string()))?;
            done += s.len() as u64;
            slices.push(s);
        }
        if done != x.len {
            return Err(guest_err("short guest memory".into()));
        }
    }
    Ok(slices)
}

/// A slice of guest memory `M`.
pub(crate) type GuestSlice<'m, M> =
    VolatileSlice<'m, <<M as GuestMemory>::Bitmap as vm_memory::bitmap::WithBitmapSlice<'m>>::S>;

/// Continues crc32c `crc` over a volatile slice, a chunk at a time.
pub fn checksum_slice<B: vm_memory::bitmap::BitmapSlice>(
    crc: u32,
    s: &VolatileSlice<'_, B>,
) -> u32 {
    let mut buf = vec![0u8; CHUNK.min(s.len())];
    let mut crc = crc;
    let mut pos = 0;
    while pos < s.len() {
        let n = CHUNK.min(s.len() - pos);
        let Ok(part) = s.subslice(pos, n) else {
            break;
        };
        part.copy_to(&mut buf[..n]);
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        pos += n;
    }
    crc
}

/// crc32c of bytes `[offset, offset + len)` of the data held in the guest pages `extents`.
pub fn guest_checksum<M: GuestMemory + ?Sized>(
    mem: &M,
    extents: &[Extent],
    offset: u64,
    len: u64,
) -> Result<u32, VramError> {
    guest_checksum_append(mem, 0, extents, offset, len)
}

/// Continues crc32c `crc` over bytes `[offset, offset + len)` of the data held in the guest
/// pages `extents`.
pub fn guest_checksum_append<M: GuestMemory + ?Sized>(
    mem: &M,
    crc: u32,
    extents: &[Extent],
    offset: u64,
    len: u64,
) -> Result<u32, VramError> {
    let mut crc = crc;
    let mut skip = offset;
    let mut left = len;
    for x in extents {
        if left == 0 {
            break;
        }
        if skip >= x.len {
            skip -= x.len;
            continue;
        }
        let n = (x.len - skip).min(left);
        let gpa = x.gpa + skip;
        let guest_err = |msg: String| VramError::Guest { gpa, len: n, msg };
        let count = usize::try_from(n).map_err(|_| guest_err("too long".into()))?;
        let slices = mem
            .get_slices(GuestAddress(gpa), count, Permissions::Read)
            .map_err(|e| guest_err(e.to_string()))?;
        for s in slices {
            let s = s.map_err(|e| guest_err(e.to_string()))?;
            crc = checksum_slice(crc, &s);
        }
        left -= n;
        skip = 0;
    }
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryMmap};

    #[test]
    fn guest_crc32c_matches_the_host_crate() {
        // The guest uses pvgpu_abi's table-driven crc32c; the device uses the crc32c crate.
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for len in [0, 1, 3, 7, 8, 9, 63, 64, 4095, 4096, 65537, 70_000] {
            for start in [0, 1, 5] {
                let d = &data[start..len.max(start)];
                assert_eq!(pvgpu_abi::crc32c::crc32c(d), crc32c::crc32c(d), "len {len}");
            }
        }
        let a = pvgpu_abi::crc32c::crc32c(&data[..1000]);
        assert_eq!(
            pvgpu_abi::crc32c::crc32c_append(a, &data[1000..]),
            crc32c::crc32c(&data)
        );
    }

    #[test]
    fn sizes_are_checked() {
        assert!(matches!(Vram::new(0), Err(VramError::BadSize(0))));
        assert!(matches!(Vram::new(100), Err(VramError::BadSize(100))));
        assert!(Vram::new(layout::VRAM_MAX + PAGE_SIZE).is_err());
        let v = Vram::new(1 << 20).unwrap();
        assert_eq!(v.size(), 1 << 20);
        assert!(!v.host_addr().is_null());
    }

    #[test]
    fn fill_copy_checksum_punch() {
        let v = Vram::new(1 << 20).unwrap();
        assert_eq!(v.host_memory().resident_bytes(), 0);
        v.fill(0, 8192, 0xaa).unwrap();
        v.fill(8192, 100, 0x55).unwrap();
        assert_eq!(v.host_memory().resident_bytes(), 12288);
        let mut b = [0u8; 4];
        v.read(8190, &mut b).unwrap();
        assert_eq!(b, [0xaa, 0xaa, 0x55, 0x55]);
        v.copy_within(0, 4096 + 2, 8192).unwrap(); // overlapping memmove
        v.read(4096, &mut b).unwrap();
        assert_eq!(b, [0xaa; 4]);
        let mut all = vec![0u8; 16384];
        v.read(0, &mut all).unwrap();
        assert_eq!(
            v.checksum_append(0, 0, 16384).unwrap(),
            pvgpu_abi::crc32c::crc32c(&all)
        );
        v.punch(0, 16384).unwrap();
        assert_eq!(v.host_memory().resident_bytes(), 0);
        v.read(4096, &mut b).unwrap();
        assert_eq!(b, [0; 4]);
        assert!(v.fill(1 << 20, 1, 0).is_err());
        assert!(v.copy_within(0, u64::MAX, 2).is_err());
        assert!(v.checksum_append(0, (1 << 20) - 1, 2).is_err());
    }

    #[test]
    fn guest_round_trip_over_scattered_pages() {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let data: Vec<u8> = (0..3 * 4096).map(|i| (i * 13 % 251) as u8).collect();
        let extents = [
            Extent {
                gpa: 0x5000,
                len: 0x1000,
            },
            Extent {
                gpa: 0x1000,
                len: 0x2000,
            },
        ];
        mem.write_slice(&data[..4096], GuestAddress(0x5000))
            .unwrap();
        mem.write_slice(&data[4096..], GuestAddress(0x1000))
            .unwrap();
        assert_eq!(
            guest_checksum(&mem, &extents, 0, data.len() as u64).unwrap(),
            crc32c::crc32c(&data)
        );
        assert_eq!(
            guest_checksum(&mem, &extents, 100, 5000).unwrap(),
            crc32c::crc32c(&data[100..5100])
        );
        let v = Vram::new(1 << 20).unwrap();
        v.copy_from_guest(&mem, &extents, 0x10000).unwrap();
        let mut back = vec![0u8; data.len()];
        v.read(0x10000, &mut back).unwrap();
        assert_eq!(back, data);
        v.fill(0x10000, 10, 7).unwrap();
        let dst = [Extent {
            gpa: 0x20000,
            len: 0x3000,
        }];
        v.copy_to_guest(&mem, &dst, 0x10000).unwrap();
        let mut g = vec![0u8; data.len()];
        mem.read_slice(&mut g, GuestAddress(0x20000)).unwrap();
        assert_eq!(&g[..10], &[7; 10]);
        assert_eq!(&g[10..], &data[10..]);
        // Guest memory that does not exist is an error, not a crash.
        let outside = [Extent {
            gpa: 2 << 20,
            len: 0x1000,
        }];
        assert!(v.copy_from_guest(&mem, &outside, 0).is_err());
        assert!(v.copy_to_guest(&mem, &outside, 0).is_err());
        assert!(v.copy_from_guest(&mem, &extents, (1 << 20) - 4096).is_err());
    }
}
