//! The guest page allocator: every 4 KiB page of RAM after the heap, tracked in a bitmap.

use alloc::vec;
use alloc::vec::Vec;

use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::layout::PAGE_SIZE;
use spin::Mutex;

use super::page_runs::PageRuns;
use crate::abi::MapRun;

struct Allocator {
    base: u64,
    /// Bit set = page in use.
    bits: Vec<u64>,
    pages: usize,
    free: usize,
    /// Word to start the next search at.
    hint: usize,
}

static PAGES: Mutex<Option<Allocator>> = Mutex::new(None);

/// Sets the allocator up over the RAM after the heap (vCPU 0, after the heap).
pub fn init(info: &BootInfo) {
    // 2 MiB-aligned, so whole free 64-bit words in groups of 8 are 2 MiB-aligned blocks.
    let base = crate::memory_map::page_pool_base(info);
    let pages = (info.ram_size.saturating_sub(base) / PAGE_SIZE) as usize;
    let mut bits = vec![0u64; pages.div_ceil(64)];
    // Mark the tail of the last word as used, so it is never handed out.
    for p in pages..bits.len() * 64 {
        bits[p / 64] |= 1 << (p % 64);
    }
    *PAGES.lock() = Some(Allocator {
        base,
        bits,
        pages,
        free: pages,
        hint: 0,
    });
}

impl Allocator {
    /// The bitmap index of the page at `pa`, if it is a page of the pool.
    fn index(&self, pa: u64) -> Option<usize> {
        let i = (pa.checked_sub(self.base)? / PAGE_SIZE) as usize;
        (i < self.pages && pa.is_multiple_of(PAGE_SIZE)).then_some(i)
    }
}

/// One free page's guest-physical address.
pub fn alloc() -> Option<u64> {
    let mut g = PAGES.lock();
    let a = g.as_mut()?;
    let n = a.bits.len();
    for k in 0..n {
        let w = (a.hint + k) % n;
        if a.bits[w] != u64::MAX {
            let bit = (!a.bits[w]).trailing_zeros() as usize;
            a.bits[w] |= 1 << bit;
            a.free -= 1;
            a.hint = w;
            return Some(a.base + ((w * 64 + bit) as u64) * PAGE_SIZE);
        }
    }
    None
}

/// Words of the bitmap per 2 MiB block.
const BLOCK_WORDS: usize = 512 / 64;

/// A free, 2 MiB-aligned block of 512 pages, taken whole.
fn alloc_block() -> Option<u64> {
    let mut g = PAGES.lock();
    let a = g.as_mut()?;
    let blocks = a.bits.len() / BLOCK_WORDS;
    for k in 0..blocks {
        let b = (a.hint / BLOCK_WORDS + k) % blocks;
        let words = &mut a.bits[b * BLOCK_WORDS..(b + 1) * BLOCK_WORDS];
        if words.iter().all(|&w| w == 0) {
            words.iter_mut().for_each(|w| *w = u64::MAX);
            a.free -= 512;
            return Some(a.base + (b * 512) as u64 * PAGE_SIZE);
        }
    }
    None
}

/// `n` pages, or none at all. Whole free 2 MiB blocks are used first, so that objects can
/// be mapped with large pages; the rest are single pages.
pub fn alloc_many(n: usize) -> Option<Vec<u64>> {
    let mut v = Vec::with_capacity(n);
    while n - v.len() >= 512 {
        let Some(block) = alloc_block() else { break };
        v.extend((0..512).map(|i| block + i * PAGE_SIZE));
    }
    while v.len() < n {
        match alloc() {
            Some(p) => v.push(p),
            None => {
                free_many(&v);
                return None;
            }
        }
    }
    Some(v)
}

/// Returns a page. Freeing a page that is not allocated is a bug and panics.
pub fn free(pa: u64) {
    free_runs(&[MapRun { pa, pages: 1 }]);
}

/// Returns many pages under one lock. Freeing a page that is not allocated is a bug and
/// panics.
pub fn free_many(pas: &[u64]) {
    free_runs(PageRuns::from_pages(pas).runs());
}

/// Returns runs of pages under one lock (an object's worth after CLEAN), a bitmap word at a
/// time: an object built from 2 MiB blocks frees 256 MiB in 1,024 word writes. Freeing a
/// page that is not allocated is a bug and panics.
pub fn free_runs(runs: &[MapRun]) {
    let mut g = PAGES.lock();
    let Some(a) = g.as_mut() else { return };
    for r in runs {
        let bad = || -> ! {
            panic!(
                "page allocator: bad free of {:#x} (+{} pages)",
                r.pa, r.pages
            )
        };
        let start = a.index(r.pa).unwrap_or_else(|| bad());
        let end = usize::try_from(r.pages)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|&e| e <= a.pages)
            .unwrap_or_else(|| bad());
        let mut i = start;
        while i < end {
            let (w, lo) = (i / 64, i % 64);
            let n = (64 - lo).min(end - i);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << lo
            };
            if a.bits[w] & mask != mask {
                bad();
            }
            a.bits[w] &= !mask;
            a.free += n;
            i += n;
        }
    }
}

/// (free pages, total pages).
pub fn counts() -> (usize, usize) {
    PAGES.lock().as_ref().map_or((0, 0), |a| (a.free, a.pages))
}
