//! `zerocopy`: MIGRATE_CLEAN and EVICT on pages the workload holds itself, so it can look at
//! what a driver never should: the moved-from pages. An object of a 2 MiB run plus three
//! scattered pages is filled, sent with MIGRATE_CLEAN, and then
//! - the old pages, mapped again, read as zeros (on the anonymous backend the host moved them
//!   into VRAM, and reading them maps the host's shared zero page, allocating nothing);
//! - the device's CHECKSUM of the object in VRAM matches the data;
//! - EVICT into fresh pages brings back every byte;
//! - the same through the object API: a view of a MIGRATE_CLEANed object faults back.

use alloc::vec::Vec;

use crate::user::page_runs::PageRuns;

use pvgpu_abi::crc32c::crc32c;
use pvgpu_abi::layout::PAGE_SIZE;
use pvgpu_abi::protocol as p;

use super::workload::{check_view, fill_view};
use super::{EXIT_FAILED, EXIT_OK};
use crate::user::gpu::Cmd;
use crate::user::objects::{self as obj, Placement};
use crate::user::{pages, sys};

/// The raw object's id (far from the object API's ids).
const ID: u32 = 0x7a00_0001;
/// Pages of the raw object: one 2 MiB run and three more.
const PAGES: usize = 512 + 3;

/// Runs the checks on task 0 (vCPU 0).
pub fn run() -> u8 {
    match raw_round_trip().and_then(|()| view_round_trip()) {
        Ok(()) => {
            crate::println!("zerocopy: PASS");
            EXIT_OK
        }
        Err(e) => {
            crate::println!("zerocopy: FAIL: {e}");
            EXIT_FAILED
        }
    }
}

fn scratch_va() -> u64 {
    crate::memory_map::workload_map_window(0).0
}

/// Submits one command and checks its response type.
fn expect(c: Cmd, want: u32, what: &'static str) -> Result<Cmd, &'static str> {
    let mut cmds = [c];
    obj::submit_raw(&mut cmds).map_err(|_| what)?;
    let [c] = cmds;
    match c.status() {
        Some(h) if h.type_ == want => Ok(c),
        Some(h) => {
            crate::println!("zerocopy: {what}: response {:#x}", h.type_);
            Err(what)
        }
        None => Err(what),
    }
}

/// The bytes of pages `pas`, through a temporary mapping (`fill`: write the pattern first).
fn through_mapping(pas: &[u64], fill: bool) -> Result<Vec<u8>, &'static str> {
    let va = scratch_va();
    let size = pas.len() as u64 * PAGE_SIZE;
    sys::map(va, pas, true).map_err(|_| "map the pages")?;
    if fill {
        fill_view(va, size, 7);
    }
    // SAFETY: the `size` bytes at `va` were just mapped to pages this workload owns.
    let bytes = unsafe { core::slice::from_raw_parts(va as *const u8, size as usize) }.to_vec();
    sys::unmap(va, pas.len() as u64).map_err(|_| "unmap the pages")?;
    Ok(bytes)
}

fn raw_round_trip() -> Result<(), &'static str> {
    let mut pas = pages::alloc_many(512).ok_or("allocate a 2 MiB run")?;
    for _ in 0..3 {
        pas.push(pages::alloc().ok_or("allocate a page")?);
    }
    let size = PAGES as u64 * PAGE_SIZE;
    let data = through_mapping(&pas, true)?;
    let crc = crc32c(&data);
    expect(Cmd::create(ID, size), p::RESP_OK_NODATA, "create")?;
    expect(
        Cmd::attach(ID, &PageRuns::from_pages(&pas)),
        p::RESP_OK_NODATA,
        "attach",
    )?;
    // The pages are unmapped (through_mapping unmapped them): MIGRATE_CLEAN's rule.
    expect(Cmd::migrate_clean(ID), p::RESP_OK_MIGRATE, "migrate_clean")?;
    // Only a test looks at the pages now; a driver just frees them.
    let old = through_mapping(&pas, false)?;
    if let Some(i) = old.iter().position(|&b| b != 0) {
        crate::println!("zerocopy: moved-from byte {i} is {:#x}", old[i]);
        return Err("the moved-from pages do not read as zero");
    }
    crate::println!(
        "zerocopy: the {} KiB of moved-from pages read as zero",
        size >> 10
    );
    let c = expect(Cmd::checksum(ID, 0, size), p::RESP_OK_CHECKSUM, "checksum")?;
    if c.response::<p::RespChecksum>().map(|r| r.crc32c) != Some(crc) {
        return Err("VRAM checksum differs after MIGRATE_CLEAN");
    }
    // The old pages go back to the allocator; EVICT gets fresh ones (some may be the old).
    pages::free_many(&pas);
    let mut fresh = pages::alloc_many(PAGES).ok_or("allocate fresh pages")?;
    fresh.reverse();
    expect(
        Cmd::evict(ID, &PageRuns::from_pages(&fresh)),
        p::RESP_OK_NODATA,
        "evict",
    )?;
    let back = through_mapping(&fresh, false)?;
    let ok = back == data;
    expect(Cmd::destroy(ID), p::RESP_OK_NODATA, "destroy")?;
    pages::free_many(&fresh);
    if !ok {
        return Err("data differs after EVICT");
    }
    crate::println!("zerocopy: EVICT into fresh pages brought back every byte");
    Ok(())
}

fn view_round_trip() -> Result<(), &'static str> {
    let size = 4 << 20;
    let h = obj::create(0, size).map_err(|_| "create")?;
    let va = obj::map(0, h).map_err(|_| "map")?;
    fill_view(va, size, 3);
    obj::migrate_clean(0, h).map_err(|_| "migrate_clean")?;
    if obj::placement(0, h).ok() != Some(Placement::Cleaned) {
        return Err("not CLEANED after MIGRATE_CLEAN");
    }
    let faults = obj::counters().faults;
    if check_view(va, size, 3).is_some() {
        return Err("view data differs after faulting back");
    }
    if obj::counters().faults != faults + 1 {
        return Err("expected one fault");
    }
    obj::close(0, h).map_err(|_| "close")?;
    crate::println!("zerocopy: a view of a MIGRATE_CLEANed object faulted back intact");
    Ok(())
}
