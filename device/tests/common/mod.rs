//! Helpers the device's integration tests share: test data and scattered guest pages.

#![allow(dead_code)]

use pvgpu_abi::protocol::MemEntry;
use pvgpu_device::sim_driver::SimGuest;
use vm_memory::{Bytes, GuestAddress};

/// Bytes per guest page.
pub const PAGE: u64 = 4096;

/// `len` bytes of a pattern that differs with `seed` and from page to page.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

/// Writes `data` (whole pages) into scattered guest pages, every other page in reverse order so
/// nothing is contiguous, and returns the page list.
pub fn scattered(g: &mut SimGuest, data: &[u8]) -> Vec<MemEntry> {
    let pages = data.len() as u64 / PAGE;
    let base = g.alloc_pages(pages * 2);
    let entries: Vec<MemEntry> = (0..pages)
        .map(|i| MemEntry {
            addr: base + (pages - 1 - i) * 2 * PAGE,
            length: PAGE as u32,
            padding: 0,
        })
        .collect();
    for (e, chunk) in entries.iter().zip(data.chunks(PAGE as usize)) {
        g.mem.write_slice(chunk, GuestAddress(e.addr)).unwrap();
    }
    entries
}
