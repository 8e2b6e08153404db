//! `selftest`: the heap allocator, the page allocator, and the map/unmap and fault-upcall
//! round trips, with data checked on every path. Every vCPU runs it on its own share of the
//! user-map window; vCPU 0 collects the results.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::layout::{MAX_VCPUS, PAGE_SIZE};

use super::checker::Checker;
use super::{EXIT_FAILED, EXIT_OK};
use crate::abi::ENOSYS;
use crate::check;
use crate::memory_map::{self, image};
use crate::user::page_runs::PageRuns;
use crate::user::sys::{self, SysError};
use crate::user::{fault, pages, smp};

/// Pages in the map round trip.
const MAP_PAGES: usize = 64;
/// Pages touched through the fault upcall.
const FAULT_PAGES: u64 = 8;

static FAULTS: [AtomicU32; MAX_VCPUS as usize] = [const { AtomicU32::new(0) }; MAX_VCPUS as usize];
/// Pages the fault resolver mapped: (virtual, physical), so the test can give them back.
static RESOLVED: spin::Mutex<Vec<(u64, u64)>> = spin::Mutex::new(Vec::new());

/// The value word `k` of a page at `addr` holds in these tests.
fn pattern(addr: u64, k: u64, salt: u64) -> u64 {
    (addr + 8 * k).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt
}

/// Fills the page at `addr` with the pattern of the page at `tag`.
fn fill(addr: u64, tag: u64, salt: u64) {
    let p = addr as *mut u64;
    for k in 0..PAGE_SIZE / 8 {
        // SAFETY: callers pass a page they own that is mapped writable at `addr`.
        unsafe { p.add(k as usize).write_volatile(pattern(tag, k, salt)) };
    }
}

/// Whether the page at `addr` holds the pattern of the page at `tag`.
fn holds(addr: u64, tag: u64, salt: u64) -> bool {
    let p = addr as *const u64;
    // SAFETY: callers pass a page they own that is mapped readable at `addr`.
    (0..PAGE_SIZE / 8)
        .all(|k| unsafe { p.add(k as usize).read_volatile() } == pattern(tag, k, salt))
}

/// vCPU 0: runs the test here and on every other vCPU, prints a summary.
pub fn run(info: &BootInfo) -> u8 {
    let ok = run_on_cpu(0);
    let others = info.num_cpus.saturating_sub(1);
    let failed = smp::wait_all(others) + u32::from(!ok);
    let (used, free) = crate::user::heap::usage();
    let (pfree, ptotal) = pages::counts();
    if pfree != ptotal {
        crate::println!("selftest: FAIL: {} pages leaked", ptotal - pfree);
        return EXIT_FAILED;
    }
    crate::println!(
        "selftest: {} of {} vCPUs passed (heap {used} B used / {free} B free, pages {pfree}/{ptotal} free)",
        info.num_cpus - failed,
        info.num_cpus
    );
    if failed == 0 {
        crate::println!("selftest: PASS");
        EXIT_OK
    } else {
        crate::println!("selftest: FAIL");
        EXIT_FAILED
    }
}

/// Runs every check on this vCPU; true if all passed.
pub fn run_on_cpu(cpu: usize) -> bool {
    let mut c = Checker::new(alloc::format!("[selftest cpu {cpu}]"));
    heap_checks(&mut c);
    page_checks(&mut c);
    let (window, _) = memory_map::selftest_map_window(cpu);
    map_checks(&mut c, window);
    bad_call_checks(&mut c, window);
    fault_checks(&mut c, cpu, memory_map::selftest_fault_window(cpu).0);
    if crate::user::objects::available() {
        super::object_checks::run(&mut c, cpu);
    } else if cpu == 0 {
        crate::println!("[selftest cpu 0] no GPU device: device checks skipped");
    }
    crate::println!(
        "[selftest cpu {cpu}] {} checks passed, {} failed",
        c.passed(),
        c.failed()
    );
    c.failed() == 0
}

/// The page allocator: whole 2 MiB blocks and single pages, freed in pieces that start
/// inside a bitmap word and in reverse (the run's end checks every page came back).
fn page_checks(c: &mut Checker) {
    const N: usize = 2 * 512 + 70;
    for round in 0..2 {
        let Some(mut v) = pages::alloc_many(N) else {
            check!(c, false, "allocate pages");
            return;
        };
        let mut sorted = v.clone();
        sorted.sort_unstable();
        sorted.dedup();
        check!(
            c,
            sorted.len() == N && v.iter().all(|p| p.is_multiple_of(PAGE_SIZE)),
            "pages are distinct and aligned"
        );
        check!(
            c,
            v[..1024]
                .chunks(512)
                .all(|b| b[0].is_multiple_of(2 << 20)
                    && b.windows(2).all(|w| w[1] == w[0] + PAGE_SIZE)),
            "whole 2 MiB blocks first"
        );
        if round == 1 {
            v.reverse();
        }
        let (head, tail) = v.split_at(100);
        pages::free_many(head);
        pages::free_many(tail);
    }
    page_run_checks(c);
}

/// PageRuns: runs merged in order, byte positions found across runs, device entries.
fn page_run_checks(c: &mut Checker) {
    const P: u64 = PAGE_SIZE;
    // Two runs (3 pages at 1 MiB, 2 at 8 MiB), then a page that goes backwards.
    let pages = [
        1 << 20,
        (1 << 20) + P,
        (1 << 20) + 2 * P,
        8 << 20,
        (8 << 20) + P,
        4 << 20,
    ];
    let r = PageRuns::from_pages(&pages);
    check!(
        c,
        r.len() == 6 && r.runs().len() == 3 && r.iter().eq(pages.iter().copied()),
        "page runs keep the pages in order"
    );
    check!(
        c,
        r.locate(0) == Some((1 << 20, 3 * P))
            && r.locate(3 * P - 1) == Some(((1 << 20) + 3 * P - 1, 1))
            && r.locate(3 * P + 5) == Some(((8 << 20) + 5, 2 * P - 5))
            && r.locate(5 * P) == Some((4 << 20, P))
            && r.locate(6 * P).is_none(),
        "page runs locate bytes across runs"
    );
    let e = r.entries();
    check!(
        c,
        e.len() == 3 && e[0].addr == 1 << 20 && u64::from(e[0].length) == 3 * P,
        "page runs as device entries"
    );
    // A run of 1 GiB and 8 pages is split into entries of at most 1 GiB.
    let big: Vec<u64> = (0..(1u64 << 30) / P + 8)
        .map(|i| (4 << 30) + i * P)
        .collect();
    let e = PageRuns::from_pages(&big).entries();
    check!(
        c,
        e.len() == 2
            && u64::from(e[0].length) == 1 << 30
            && (e[1].addr, u64::from(e[1].length)) == (5 << 30, 8 * P),
        "a run longer than an entry is split"
    );
    check!(c, PageRuns::default().is_empty(), "no pages, no runs");
}

fn heap_checks(c: &mut Checker) {
    let v: Vec<u64> = (0..10_000u64).collect();
    check!(c, v.iter().sum::<u64>() == 10_000 * 9_999 / 2, "vec sum");
    let mut m = BTreeMap::new();
    for i in 0..1000u32 {
        m.insert(i.wrapping_mul(2_654_435_761), i);
    }
    for i in (0..1000u32).step_by(2) {
        m.remove(&i.wrapping_mul(2_654_435_761));
    }
    check!(
        c,
        m.len() == 500 && m.values().all(|v| v % 2 == 1),
        "btreemap insert/remove"
    );
    let boxes: Vec<Box<[u8]>> = (1..200usize)
        .map(|n| alloc::vec![n as u8; n * 7].into_boxed_slice())
        .collect();
    check!(
        c,
        boxes
            .iter()
            .enumerate()
            .all(|(i, b)| b.len() == (i + 1) * 7 && b.iter().all(|&x| x == (i + 1) as u8)),
        "boxes of many sizes keep their data"
    );
    drop(boxes);
    let page = PAGE_SIZE as usize;
    let layout = core::alloc::Layout::from_size_align(3 * page, page)
        .unwrap_or(core::alloc::Layout::new::<u8>());
    // SAFETY: layout has a non-zero size; the block is freed with the same layout.
    unsafe {
        let p = alloc::alloc::alloc(layout);
        check!(
            c,
            !p.is_null() && (p as usize).is_multiple_of(page),
            "page-aligned allocation"
        );
        if !p.is_null() {
            alloc::alloc::dealloc(p, layout);
        }
    }
    let mut big = alloc::vec![0u32; 256 * 1024];
    big.iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = (i as u32).wrapping_mul(31));
    check!(
        c,
        big.iter()
            .enumerate()
            .all(|(i, &x)| x == (i as u32).wrapping_mul(31)),
        "1 MiB vec"
    );
}

fn map_checks(c: &mut Checker, va: u64) {
    let Some(pas) = pages::alloc_many(MAP_PAGES) else {
        check!(c, false, "allocate {MAP_PAGES} pages");
        return;
    };
    check!(
        c,
        pas.iter().all(|&p| p % PAGE_SIZE == 0),
        "pages are aligned"
    );
    for &pa in &pas {
        fill(pa, pa, 1);
    }
    let r = sys::map(va, &pas, true);
    check!(c, r.is_ok(), "map {MAP_PAGES} pages: {r:?}");
    let mapped = (0..MAP_PAGES).all(|i| holds(va + i as u64 * PAGE_SIZE, pas[i], 1));
    check!(
        c,
        mapped,
        "data written through the identity map reads back through the mapping"
    );
    for i in 0..MAP_PAGES as u64 {
        fill(va + i * PAGE_SIZE, va + i * PAGE_SIZE, 2);
    }
    let back = (0..MAP_PAGES).all(|i| holds(pas[i], va + i as u64 * PAGE_SIZE, 2));
    check!(
        c,
        back,
        "data written through the mapping reads back through the identity map"
    );
    check!(
        c,
        sys::map(va, &pas[..1], true) == Err(SysError::Exists),
        "mapping over a mapping"
    );
    check!(c, sys::unmap(va, MAP_PAGES as u64).is_ok(), "unmap");
    check!(
        c,
        sys::unmap(va, 1) == Err(SysError::NotMapped),
        "unmapping twice"
    );
    // All or nothing: a map that runs into a mapped page leaves nothing behind.
    let tail = va + 4 * PAGE_SIZE;
    check!(c, sys::map(tail, &pas[..4], true).is_ok(), "map 4 pages");
    check!(
        c,
        sys::map(va, &pas[4..12], true) == Err(SysError::Exists),
        "overlapping map fails"
    );
    check!(
        c,
        sys::unmap(va, 1) == Err(SysError::NotMapped),
        "failed map left nothing behind"
    );
    check!(c, sys::unmap(tail, 4).is_ok(), "unmap the 4 pages");
    for pa in pas {
        pages::free(pa);
    }
}

fn bad_call_checks(c: &mut Checker, va: u64) {
    let kpriv = image::kpriv_start();
    let ram = crate::user::boot_info().ram_size;
    check!(
        c,
        sys::map(va, &[kpriv], true) == Err(SysError::Invalid),
        "ring-0 page refused"
    );
    check!(
        c,
        sys::map(va, &[0x1000], true) == Err(SysError::Invalid),
        "image page refused"
    );
    check!(
        c,
        sys::map(va, &[ram], true) == Err(SysError::Invalid),
        "page past RAM refused"
    );
    let Some(pa) = pages::alloc() else {
        check!(c, false, "allocate a page");
        return;
    };
    check!(
        c,
        sys::map(va, &[pa + 8], true) == Err(SysError::Invalid),
        "unaligned page refused"
    );
    check!(
        c,
        sys::map(va + 8, &[pa], true) == Err(SysError::Invalid),
        "unaligned address refused"
    );
    check!(
        c,
        sys::map(0x40_0000, &[pa], true) == Err(SysError::Invalid),
        "address outside the window refused"
    );
    check!(
        c,
        sys::map(va, &[], true) == Err(SysError::Invalid),
        "empty map refused"
    );
    check!(
        c,
        sys::raw(crate::abi::SYS_MAP, va, kpriv, 1, crate::abi::MAP_WRITE)
            == Err(SysError::Invalid),
        "page list in ring-0 memory refused"
    );
    check!(
        c,
        sys::raw(crate::abi::SYS_MAP, va, pa, 1, 0x80) == Err(SysError::Invalid),
        "unknown flag refused"
    );
    check!(
        c,
        sys::raw(99, 0, 0, 0, 0).map_err(|_| ENOSYS) == Err(ENOSYS),
        "unknown call refused"
    );
    pages::free(pa);
}

/// Resolves a fault in a selftest window: a fresh page filled with the pattern of its address.
fn resolve(addr: u64, _cpu: usize) -> bool {
    let page = addr & !(PAGE_SIZE - 1);
    let cpu = memory_map::cpu_of_user_map(page);
    let Some(pa) = pages::alloc() else {
        return false;
    };
    fill(pa, page, page);
    if sys::map(page, &[pa], true).is_err() {
        pages::free(pa);
        return false;
    }
    RESOLVED.lock().push((page, pa));
    if let Some(n) = FAULTS.get(cpu) {
        n.fetch_add(1, Ordering::Relaxed);
    }
    true
}

fn fault_checks(c: &mut Checker, cpu: usize, va: u64) {
    let end = va + FAULT_PAGES * PAGE_SIZE;
    check!(
        c,
        fault::register(va, end, resolve).is_ok(),
        "install the fault handler"
    );
    let before = FAULTS[cpu].load(Ordering::Relaxed);
    let mut ok = true;
    for i in 0..FAULT_PAGES {
        let page = va + i * PAGE_SIZE;
        let k = i * 5 % (PAGE_SIZE / 8);
        // SAFETY: the page is unmapped; the read faults, the resolver maps it, and the read
        // is retried.
        let got = unsafe { ((page + 8 * k) as *const u64).read_volatile() };
        ok &= got == pattern(page, k, page);
    }
    let faults = FAULTS[cpu].load(Ordering::Relaxed) - before;
    check!(
        c,
        ok,
        "reads of unmapped pages were resolved with the right data"
    );
    check!(
        c,
        faults == FAULT_PAGES as u32,
        "one upcall per page ({faults} for {FAULT_PAGES})"
    );
    // A second pass reads the now-present pages with no fault.
    let again =
        (0..FAULT_PAGES).all(|i| holds(va + i * PAGE_SIZE, va + i * PAGE_SIZE, va + i * PAGE_SIZE));
    check!(c, again, "resolved pages keep their data");
    check!(
        c,
        FAULTS[cpu].load(Ordering::Relaxed) - before == FAULT_PAGES as u32,
        "no further faults"
    );
    check!(
        c,
        sys::unmap(va, FAULT_PAGES).is_ok(),
        "unmap the resolved pages"
    );
    fault::unregister(va, end);
    RESOLVED.lock().retain(|&(v, pa)| {
        let mine = v >= va && v < end;
        if mine {
            pages::free(pa);
        }
        !mine
    });
}
