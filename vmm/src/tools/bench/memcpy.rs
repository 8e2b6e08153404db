//! The baseline for MIGRATE: host memcpy of the same bytes, in chunks of the object size,
//! measured in this process during the same run.
//!
//! Two destinations are measured:
//! - **fresh memfd pages**: a new memfd, mapped MAP_SHARED, that has never been touched. This
//!   is what MIGRATE really writes into (VRAM is a memfd whose ranges are punched when freed,
//!   so a migrate allocates its host pages as it copies). The time includes allocating and
//!   zeroing those pages, as the device's copy pays it too.
//! - **a warm buffer**: anonymous memory written once before timing, so only the copy counts:
//!   the upper bound of any copy on this machine.

use std::ptr::NonNull;
use std::time::Instant;

use pvgpu_device::memfd::MemFd;

use super::BenchError;
use crate::tools::measure::{gib_per_s, median};

/// Throughputs of one memcpy baseline, each the median over its repetitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemcpyFigures {
    /// GiB/s into a fresh, never-touched MAP_SHARED memfd mapping.
    pub fresh_memfd_gib_per_s: f64,
    /// GiB/s into a warm (already-faulted) anonymous buffer.
    pub warm_gib_per_s: f64,
}

/// A MAP_SHARED mapping of a whole memfd, unmapped on drop.
struct SharedMap {
    ptr: NonNull<u8>,
    len: usize,
    // Keeps the memfd alive as long as the mapping (not strictly needed after mmap, but it
    // makes the ownership obvious).
    _fd: MemFd,
}

impl SharedMap {
    fn new(len: usize) -> Result<Self, BenchError> {
        let fd = MemFd::new("pvgpu-bench-memcpy", len as u64)
            .map_err(|e| BenchError::Memcpy(std::io::Error::other(e)))?;
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared read-write mapping of a memfd of exactly `len` bytes; the
        // kernel picks the address, so no existing mapping is replaced.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.file().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(BenchError::Memcpy(std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| BenchError::Memcpy(std::io::Error::other("mmap returned null")))?;
        Ok(SharedMap { ptr, len, _fd: fd })
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr..ptr+len is a live read-write mapping owned by self, and the &mut self
        // borrow makes this the only reference to it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no slice of it outlives self.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Copies `src` into `dst` in chunks of `chunk` bytes (as one command per object would) and
/// returns the seconds it took.
fn timed_copy(src: &[u8], dst: &mut [u8], chunk: usize) -> f64 {
    let t = Instant::now();
    for (d, s) in dst.chunks_mut(chunk.max(1)).zip(src.chunks(chunk.max(1))) {
        d.copy_from_slice(s);
    }
    std::hint::black_box(&dst);
    t.elapsed().as_secs_f64()
}

/// Host memcpy of `total` bytes in chunks of `chunk` bytes, `reps` times into each
/// destination; the medians.
pub fn measure(total: u64, chunk: u64, reps: usize) -> Result<MemcpyFigures, BenchError> {
    let len = usize::try_from(total).map_err(|_| {
        BenchError::Memcpy(std::io::Error::other(format!("{total} bytes do not fit")))
    })?;
    let chunk = usize::try_from(chunk).unwrap_or(len);
    // A source with a pattern, faulted in before any timing.
    let src: Vec<u8> = (0..len).map(|i| (i as u8) ^ ((i >> 12) as u8)).collect();
    let mut warm = vec![0u8; len];
    // Fault the warm destination in (vec! of zeros may be lazily mapped).
    timed_copy(&src, &mut warm, chunk);
    let mut fresh_t = Vec::with_capacity(reps);
    let mut warm_t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let mut map = SharedMap::new(len)?;
        fresh_t.push(timed_copy(&src, map.as_mut_slice(), chunk));
        drop(map);
        warm_t.push(timed_copy(&src, &mut warm, chunk));
    }
    let rate = |times: &[f64]| {
        median(times)
            .and_then(|s| gib_per_s(total, s))
            .ok_or_else(|| BenchError::Memcpy(std::io::Error::other("no time measured")))
    };
    Ok(MemcpyFigures {
        fresh_memfd_gib_per_s: rate(&fresh_t)?,
        warm_gib_per_s: rate(&warm_t)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_really_land() {
        let src: Vec<u8> = (0..=255u8).cycle().take(3 * 4096 + 5).collect();
        let mut map = SharedMap::new(src.len()).unwrap();
        let secs = timed_copy(&src, map.as_mut_slice(), 4096);
        assert!(secs >= 0.0);
        assert_eq!(map.as_mut_slice(), &src[..]);
    }

    #[test]
    fn measures_both_destinations() {
        let f = measure(4 << 20, 1 << 20, 2).unwrap();
        assert!(f.fresh_memfd_gib_per_s > 0.0 && f.fresh_memfd_gib_per_s.is_finite());
        assert!(f.warm_gib_per_s > 0.0 && f.warm_gib_per_s.is_finite());
    }
}
