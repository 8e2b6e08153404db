//! `busy-device [--mib M]`: keeps the GPU as busy as one notify can. One object as large as
//! VRAM (or `M` MiB) goes to VRAM, then a whole queue's worth of FILLs, each over the whole
//! object, is posted with a single notify, and the guest waits for them. Nothing here is
//! malformed; it is just a lot of legal work. The VMM's `--timeout` must still end the run
//! on time, with its summary and stats (the integration test checks that).

use alloc::vec::Vec;

use crate::user::page_runs::PageRuns;

use pvgpu_abi::layout::PAGE_SIZE;

use super::args::flag;
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::user::gpu::{Cmd, MAX_IN_FLIGHT};
use crate::user::{objects, pages};

/// The object's id: far from the ids the object layer hands out.
const ID: u32 = 0x5000_0000;

/// The most pages the object may take, halved until the allocator has them.
fn backing(mut n: usize) -> Option<Vec<u64>> {
    while n > 0 {
        if let Some(v) = pages::alloc_many(n) {
            return Some(v);
        }
        n /= 2;
    }
    None
}

/// Runs the workload; returns only if the device finished every FILL (or refused one).
pub fn run(args: &[&str]) -> u8 {
    let vram = crate::user::boot_info().vram_size;
    let Some(mib) = flag(args, "--mib", vram >> 20).filter(|m| *m > 0) else {
        crate::println!("usage: busy-device [--mib M]");
        return EXIT_USAGE;
    };
    let want = (mib << 20).min(vram) / PAGE_SIZE;
    let Some(pages) = backing(want as usize) else {
        crate::println!("busy-device: no guest pages");
        return EXIT_FAILED;
    };
    let size = pages.len() as u64 * PAGE_SIZE;
    // The pages are not touched by the guest: the device reads them (as zeros) on MIGRATE.
    let mut setup = [
        Cmd::create(ID, size),
        Cmd::attach(ID, &PageRuns::from_pages(&pages)),
        Cmd::migrate(ID),
    ];
    match objects::with_gpu(|g| g.submit(&mut setup)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            crate::println!("busy-device: setup: {e}");
            return EXIT_FAILED;
        }
        Err(e) => {
            crate::println!("busy-device: setup: {e}");
            return EXIT_FAILED;
        }
    }
    let mut fills: Vec<Cmd> = (0..MAX_IN_FLIGHT)
        .map(|i| Cmd::fill(ID, 0, size, i as u8))
        .collect();
    crate::println!(
        "busy-device: {} FILLs of {} MiB queued with one notify",
        fills.len(),
        size >> 20
    );
    match objects::with_gpu(|g| g.submit(&mut fills)) {
        Ok(Ok(())) => {
            crate::println!("busy-device: {} FILLs done", fills.len());
            EXIT_OK
        }
        Ok(Err(e)) => {
            crate::println!("busy-device: {e}");
            EXIT_FAILED
        }
        Err(e) => {
            crate::println!("busy-device: {e}");
            EXIT_FAILED
        }
    }
}
