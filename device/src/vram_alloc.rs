//! The VRAM range allocator: first fit over a free list, with alignment, coalescing of freed
//! neighbours, and a clear out-of-VRAM error.

use std::collections::BTreeMap;

/// Errors from the VRAM allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// No free range is large enough.
    #[error("out of VRAM: {requested:#x} bytes requested, {free:#x} free, largest free range {largest:#x}")]
    OutOfVram {
        /// Bytes asked for.
        requested: u64,
        /// Total free bytes.
        free: u64,
        /// The largest free range.
        largest: u64,
    },
    /// Size 0, or alignment not a power of two.
    #[error("invalid allocation: size {size:#x}, align {align:#x}")]
    Invalid {
        /// Size.
        size: u64,
        /// Alignment.
        align: u64,
    },
    /// Freeing a range that is not allocated (or overlaps a free range).
    #[error("range {offset:#x}+{len:#x} is not allocated")]
    NotAllocated {
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
    },
}

/// Allocates ranges of `[0, size)`.
#[derive(Debug, Clone)]
pub struct VramAllocator {
    size: u64,
    /// Free ranges: start → length. Never adjacent (they are merged), never empty.
    free: BTreeMap<u64, u64>,
    used: u64,
}

impl VramAllocator {
    /// An allocator over `size` bytes, all free.
    pub fn new(size: u64) -> Self {
        let mut free = BTreeMap::new();
        if size > 0 {
            free.insert(0, size);
        }
        VramAllocator {
            size,
            free,
            used: 0,
        }
    }

    /// Total size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes allocated.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The largest free range.
    pub fn largest_free(&self) -> u64 {
        self.free.values().copied().max().unwrap_or(0)
    }

    /// The free range `(start, len)` that contains `offset`, if it is free.
    pub fn free_range_containing(&self, offset: u64) -> Option<(u64, u64)> {
        let (&start, &len) = self.free.range(..=offset).next_back()?;
        (offset < start + len).then_some((start, len))
    }

    /// Number of free ranges (a fragmentation measure).
    pub fn free_ranges(&self) -> usize {
        self.free.len()
    }

    /// Allocates `size` bytes at an offset that is a multiple of `align` (a power of two).
    pub fn alloc(&mut self, size: u64, align: u64) -> Result<u64, AllocError> {
        if size == 0 || !align.is_power_of_two() {
            return Err(AllocError::Invalid { size, align });
        }
        let mut found = None;
        for (&start, &len) in &self.free {
            let Some(aligned) = start.checked_next_multiple_of(align) else {
                continue;
            };
            let pad = aligned - start;
            if pad < len && len - pad >= size {
                found = Some((start, len, aligned));
                break;
            }
        }
        let Some((start, len, aligned)) = found else {
            return Err(AllocError::OutOfVram {
                requested: size,
                free: self.size - self.used,
                largest: self.largest_free(),
            });
        };
        self.free.remove(&start);
        if aligned > start {
            self.free.insert(start, aligned - start);
        }
        let end = aligned + size;
        if end < start + len {
            self.free.insert(end, start + len - end);
        }
        self.used += size;
        Ok(aligned)
    }

    /// Frees `[offset, offset + len)`, which must be (part of) an allocation.
    pub fn free(&mut self, offset: u64, len: u64) -> Result<(), AllocError> {
        let bad = AllocError::NotAllocated { offset, len };
        let end = offset.checked_add(len).ok_or(bad)?;
        if len == 0 || end > self.size {
            return Err(bad);
        }
        // The free range at or before `offset` must end at or before it...
        let mut new_start = offset;
        let mut new_len = len;
        if let Some((&s, &l)) = self.free.range(..=offset).next_back() {
            if s + l > offset {
                return Err(bad);
            }
            if s + l == offset {
                new_start = s;
                new_len += l;
            }
        }
        // ...and the next one must start at or after `end`.
        if let Some((&s, &l)) = self.free.range(offset..).next() {
            if s < end {
                return Err(bad);
            }
            if s == end {
                self.free.remove(&s);
                new_len += l;
            }
        }
        self.free.insert(new_start, new_len);
        self.used -= len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 4096;

    #[test]
    fn alloc_free_coalesce() {
        let mut a = VramAllocator::new(16 * P);
        let x = a.alloc(4 * P, P).unwrap();
        let y = a.alloc(4 * P, P).unwrap();
        let z = a.alloc(8 * P, P).unwrap();
        assert_eq!((x, y, z), (0, 4 * P, 8 * P));
        assert_eq!(a.used(), 16 * P);
        assert!(matches!(
            a.alloc(P, P),
            Err(AllocError::OutOfVram {
                requested: P,
                free: 0,
                largest: 0
            })
        ));
        a.free(y, 4 * P).unwrap();
        assert_eq!(a.free_ranges(), 1);
        a.free(x, 4 * P).unwrap();
        assert_eq!(a.free_ranges(), 1);
        assert_eq!(a.largest_free(), 8 * P);
        a.free(z, 8 * P).unwrap();
        assert_eq!(a.free_ranges(), 1);
        assert_eq!(a.used(), 0);
        assert_eq!(a.largest_free(), 16 * P);
    }

    #[test]
    fn fragmentation_gives_clear_error() {
        let mut a = VramAllocator::new(8 * P);
        let offs: Vec<u64> = (0..8).map(|_| a.alloc(P, P).unwrap()).collect();
        for o in offs.iter().step_by(2) {
            a.free(*o, P).unwrap();
        }
        assert_eq!(a.free_ranges(), 4);
        assert_eq!(
            a.alloc(2 * P, P),
            Err(AllocError::OutOfVram {
                requested: 2 * P,
                free: 4 * P,
                largest: P
            })
        );
        assert!(a.alloc(P, P).is_ok());
    }

    #[test]
    fn alignment() {
        let mut a = VramAllocator::new(1 << 22);
        assert_eq!(a.alloc(P, P).unwrap(), 0);
        let big = a.alloc(1 << 21, 1 << 21).unwrap();
        assert_eq!(big, 1 << 21);
        // The gap before the aligned block is still usable.
        assert_eq!(a.alloc(P, P).unwrap(), P);
        assert!(a.alloc(P, 3).is_err());
        assert!(a.alloc(0, P).is_err());
    }

    #[test]
    fn bad_frees_are_refused() {
        let mut a = VramAllocator::new(8 * P);
        let x = a.alloc(2 * P, P).unwrap();
        assert!(a.free(4 * P, P).is_err()); // free space
        assert!(a.free(u64::MAX, 2).is_err());
        assert!(a.free(7 * P, 2 * P).is_err()); // past the end
        assert!(a.free(x, 0).is_err());
        a.free(x, 2 * P).unwrap();
        assert!(a.free(x, 2 * P).is_err()); // double free
        assert_eq!(a.used(), 0);
    }

    #[test]
    fn random_alloc_free_keeps_invariants() {
        let mut a = VramAllocator::new(64 * P);
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut seed = 12345u64;
        for _ in 0..2000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let r = seed >> 33;
            if !r.is_multiple_of(3) || live.is_empty() {
                let n = (r % 7 + 1) * P;
                if let Ok(o) = a.alloc(n, P) {
                    for &(s, l) in &live {
                        assert!(o + n <= s || s + l <= o, "overlap");
                    }
                    live.push((o, n));
                }
            } else {
                let (o, n) = live.swap_remove((r as usize / 3) % live.len());
                a.free(o, n).unwrap();
            }
            assert_eq!(a.used(), live.iter().map(|l| l.1).sum::<u64>());
        }
    }

    #[test]
    fn the_free_range_around_an_offset() {
        let mut a = VramAllocator::new(16 * P);
        let x = a.alloc(4 * P, P).unwrap();
        let y = a.alloc(4 * P, P).unwrap();
        assert_eq!(a.free_range_containing(x), None);
        a.free(x, 4 * P).unwrap();
        assert_eq!(a.free_range_containing(x + P), Some((x, 4 * P)));
        assert_eq!(a.free_range_containing(y), None);
        assert_eq!(a.free_range_containing(y + 4 * P), Some((y + 4 * P, 8 * P)));
    }
}
