//! The guest's page tables: an identity map of RAM and the device windows, and the user-map
//! window that ring 3 fills through the map and unmap system calls.
//!
//! Identity map (physical = virtual): RAM with 2 MiB pages, except below the ring-0-private
//! area, where 4 KiB pages map only what is there: the boot pages and the image's code
//! (read-only) and data. Page 0 and the gaps stay unmapped. Ring-0-private memory (`.kdata`,
//! `.kbss`: GDT, TSS, IDT, stacks, these tables) is 2 MiB-aligned and mapped without the user
//! bit. The virtio-mmio window is mapped uncached and the VRAM window with 2 MiB pages, both
//! for ring 3.
//!
//! Page-table pages come from a fixed pool in `.kbss`, which is zero on boot. All changes are
//! made under one lock; every loop here runs in the emulator, so each is kept short.

use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::layout::{self, LARGE_PAGE_SIZE, PAGE_SIZE};
use spin::Mutex;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::{PageTable, PageTableFlags as F, PhysFrame};
use x86_64::PhysAddr;

use crate::abi::{MapRun, EEXIST, EINVAL, ENOENT, ENOMEM, MAP_WRITE, MAX_PAGES_PER_CALL};
use crate::memory_map::{self as map, image, in_user_map, USER_MAP_BASE, USER_MAP_SIZE};

/// Page-table pages available (each maps 2 MiB of 4 KiB pages at the last level).
const POOL_PAGES: usize = 512;

#[repr(C, align(4096))]
struct Pool([PageTable; POOL_PAGES]);

#[link_section = ".kbss"]
static mut POOL: Pool = Pool([const { PageTable::new() }; POOL_PAGES]);

struct State {
    /// Pool pages handed out so far; pool page 0 is the PML4.
    used: usize,
    ram_size: u64,
    /// Present entries of each pool page used as a last-level table of the user-map window,
    /// so a table is given back when its last mapping goes.
    present: [u16; POOL_PAGES],
    /// Pool pages given back (all zero), to hand out before new ones.
    free: [u16; POOL_PAGES],
    nfree: usize,
}

#[link_section = ".kdata"]
static STATE: Mutex<State> = Mutex::new(State {
    used: 0,
    ram_size: 0,
    present: [0; POOL_PAGES],
    free: [0; POOL_PAGES],
    nfree: 0,
});

const TABLE: F = F::PRESENT.union(F::WRITABLE).union(F::USER_ACCESSIBLE);
const USER_RW: F = TABLE;
const USER_RO: F = F::PRESENT.union(F::USER_ACCESSIBLE);
const KERNEL_RW: F = F::PRESENT.union(F::WRITABLE);

/// The pool table at `p` as a reference.
///
/// # Safety
/// `p` must come from [`pool_table`] and the caller must hold the state lock (or be vCPU 0
/// before the tables are shared).
unsafe fn tbl<'a>(p: *mut PageTable) -> &'a mut PageTable {
    // SAFETY: the caller's contract.
    unsafe { &mut *p }
}

fn pool_table(i: usize) -> *mut PageTable {
    // SAFETY: only the address of pool entry i (< POOL_PAGES, checked by callers) is formed.
    unsafe { core::ptr::addr_of_mut!(POOL.0[i]) }
}

impl State {
    fn alloc_table(&mut self) -> Option<*mut PageTable> {
        if self.nfree > 0 {
            self.nfree -= 1;
            return Some(pool_table(self.free[self.nfree] as usize));
        }
        if self.used >= POOL_PAGES {
            return None;
        }
        let t = pool_table(self.used);
        self.used += 1;
        Some(t)
    }

    /// Pool index of the table at `pt`.
    fn pool_index(pt: *mut u64) -> usize {
        ((pt as u64 - pool_table(0) as u64) / PAGE_SIZE) as usize
    }

    /// The table that entry `idx` of `parent` points to, made if `create` and missing.
    ///
    /// # Safety
    /// `parent` must be a table from the pool.
    unsafe fn next(
        &mut self,
        parent: *mut PageTable,
        idx: usize,
        create: bool,
    ) -> Option<*mut PageTable> {
        // SAFETY: parent is a live pool table (caller's contract); we hold the state lock.
        let e = unsafe { &mut tbl(parent)[idx] };
        if e.is_unused() {
            if !create {
                return None;
            }
            let t = self.alloc_table()?;
            e.set_addr(PhysAddr::new(t as u64), TABLE);
            return Some(t);
        }
        if e.flags().contains(F::HUGE_PAGE) {
            return None; // a 2 MiB mapping, not a table
        }
        Some(e.addr().as_u64() as *mut PageTable)
    }

    /// The last-level table for `va`, or the page directory when `level` is 2.
    fn walk(&mut self, va: u64, level: u8, create: bool) -> Option<*mut PageTable> {
        let mut t = pool_table(0);
        let mut shift = 39;
        while shift > 12 + 9 * (level as u32 - 1) {
            // SAFETY: t starts at the PML4 and each step returns a pool table.
            t = unsafe { self.next(t, ((va >> shift) & 511) as usize, create)? };
            shift -= 9;
        }
        Some(t)
    }

    fn user_pa_ok(&self, pa: u64) -> bool {
        pa.is_multiple_of(PAGE_SIZE) && pa >= image::end() && pa < self.ram_size
    }
}

/// Flags for the 4 KiB pages of the identity map from `pa` up to the next change of flags,
/// and where that run ends. Only called below the ring-0-private area.
fn identity_run(pa: u64) -> (F, u64) {
    let bounds = [
        (PAGE_SIZE, F::empty()),
        (layout::BOOT_PT_END, USER_RO),
        (image::start(), F::empty()),
        (image::readonly_end(), USER_RO),
        (image::data_end(), USER_RW),
    ];
    for (end, flags) in bounds {
        if pa < end {
            return (flags, end);
        }
    }
    // The stacks: in each slot a guard page (unmapped), then the stack; ring 3's first, then
    // ring 0's (without the user bit).
    let stacks = [
        (
            image::data_end(),
            image::ustack_end(),
            map::USTACK_SLOT,
            USER_RW,
        ),
        (
            image::ustack_end(),
            image::kstack_end(),
            map::KSTACK_SLOT,
            KERNEL_RW,
        ),
    ];
    for (base, end, slot, flags) in stacks {
        if pa >= base && pa < end {
            let start = pa - (pa - base) % slot as u64;
            return if pa < start + PAGE_SIZE {
                (F::empty(), start + PAGE_SIZE)
            } else {
                (flags, start + slot as u64)
            };
        }
    }
    (F::empty(), u64::MAX)
}

/// Writes 4 KiB leaf entries for `[pa, end)` into `pt`, which maps the 2 MiB around them.
/// A plain store loop: in the emulator each instruction costs ~270 ns, so this avoids the
/// per-entry checks of `PageTableEntry::set_addr`.
fn fill_leaves(pt: *mut PageTable, pa: u64, end: u64, flags: F) {
    let entries = pt as *mut u64;
    let mut p = pa;
    if flags.is_empty() {
        return; // pool tables start out zero: nothing mapped
    }
    while p < end {
        let v = p | flags.bits();
        // SAFETY: `p` lies in the 2 MiB that `pt` maps, so the index is below 512; `pt` is a
        // pool table (PageTableEntry is a transparent u64).
        unsafe { entries.add(((p >> 12) & 511) as usize).write(v) };
        p += PAGE_SIZE;
    }
}

/// Builds every table (vCPU 0 only, before [`activate`]).
pub fn init(info: &BootInfo) {
    // The stack guard pages are placed by slot, counting from the starts of `.ustack` and
    // `.kstack`. (The compiler assumes distinct symbols have distinct addresses, so compare
    // opaque values.)
    let ustacks = core::hint::black_box(map::user_stacks().base);
    let kstacks = core::hint::black_box(map::kernel_stacks().base);
    if ustacks != core::hint::black_box(image::data_end())
        || kstacks != core::hint::black_box(image::ustack_end())
    {
        super::trap::fatal_message(format_args!(
            "the stacks are not at the start of .ustack and .kstack"
        ));
    }
    let mut s = STATE.lock();
    s.ram_size = info.ram_size;
    s.used = 1; // the PML4
    let fine_end = image::kpriv_start();
    let (kpriv_end, ram) = (image::kpriv_end(), info.ram_size);
    let mut pa = 0;
    while pa < ram {
        // One directory (1 GiB) at a time: walking from the PML4 for every 2 MiB entry would
        // cost ~100 emulated instructions each.
        let Some(pd) = s.walk(pa, 2, true) else {
            super::trap::fatal_message(format_args!("out of page-table pages for guest RAM"))
        };
        let entries = pd as *mut u64;
        let gib_end = (((pa >> 30) + 1) << 30).min(ram);
        while pa < gib_end {
            let idx = ((pa >> 21) & 511) as usize;
            if pa < fine_end {
                let Some(pt) = s.alloc_table() else {
                    super::trap::fatal_message(format_args!(
                        "out of page-table pages for the image"
                    ))
                };
                // SAFETY: idx < 512 indexes the pool table `pd`; we hold the lock.
                unsafe { entries.add(idx).write(pt as u64 | TABLE.bits()) };
                let mut p = pa;
                while p < pa + LARGE_PAGE_SIZE {
                    let (flags, run_end) = identity_run(p);
                    let end = run_end.min(pa + LARGE_PAGE_SIZE);
                    fill_leaves(pt, p, end, flags);
                    p = end;
                }
            } else {
                let flags = if pa < kpriv_end { KERNEL_RW } else { USER_RW };
                // SAFETY: as above.
                unsafe { entries.add(idx).write(pa | (flags | F::HUGE_PAGE).bits()) };
            }
            pa += LARGE_PAGE_SIZE;
        }
    }
    let windows = [
        (
            info.virtio_mmio_base,
            info.virtio_mmio_size,
            USER_RW | F::NO_CACHE | F::WRITE_THROUGH,
        ),
        (info.vram_base, info.vram_size, USER_RW),
    ];
    for (base, size, flags) in windows {
        let bits = (flags | F::HUGE_PAGE).bits();
        let end = base + size;
        let mut pa = base & !(LARGE_PAGE_SIZE - 1);
        while size > 0 && pa < end {
            // One directory (1 GiB) at a time, with a plain store loop: a 64 GiB VRAM window
            // is 32768 entries, and each instruction here is emulated.
            let Some(pd) = s.walk(pa, 2, true) else { break };
            let entries = pd as *mut u64;
            let gib_end = ((pa >> 30) + 1) << 30;
            while pa < end.min(gib_end) {
                // SAFETY: pa lies in the 1 GiB that `pd` maps, so the index is below 512; we
                // hold the lock.
                unsafe { entries.add(((pa >> 21) & 511) as usize).write(pa | bits) };
                pa += LARGE_PAGE_SIZE;
            }
        }
    }
}

/// Switches this CPU to the tables built by [`init`].
pub fn activate() {
    let pml4 = PhysFrame::containing_address(PhysAddr::new(pool_table(0) as u64));
    // SAFETY: the new tables identity-map the kernel image, its stacks and the boot info,
    // exactly as the VMM's boot tables did, so execution continues unchanged.
    unsafe { Cr3::write(pml4, Cr3Flags::empty()) };
}

fn window_range_ok(va: u64, count: u64) -> bool {
    va.is_multiple_of(PAGE_SIZE)
        && count > 0
        && count <= MAX_PAGES_PER_CALL
        && in_user_map(va)
        && va + count * PAGE_SIZE <= USER_MAP_BASE + USER_MAP_SIZE
}

/// Whether ring 3 may hand ring 0 the buffer `[addr, addr + len)`: writable ring-3 memory of
/// the identity map: the image's `.data`, one ring-3 stack (not its guard page), or RAM past
/// the ring-0-private area.
pub fn user_buffer_ok(addr: u64, len: u64) -> bool {
    let ram = STATE.lock().ram_size;
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    let in_stack = || {
        let slot = map::USTACK_SLOT as u64;
        let start = image::data_end() + (addr - image::data_end()) / slot * slot;
        addr >= start + PAGE_SIZE && end <= start + slot && end <= image::ustack_end()
    };
    (addr >= image::readonly_end() && end <= image::data_end())
        || (addr >= image::data_end() && addr < image::ustack_end() && in_stack())
        || (addr >= image::kpriv_end() && end <= ram)
}

/// Entry bits of a 2 MiB leaf.
const HUGE: u64 = F::HUGE_PAGE.bits();

/// The page-directory entry covering `va`, made (with its tables) if `create`.
fn pde(s: &mut State, va: u64, create: bool) -> Option<*mut u64> {
    let pd = s.walk(va, 2, create)?;
    // SAFETY: pd is a pool table; the index is below 512.
    Some(unsafe { (pd as *mut u64).add(((va >> 21) & 511) as usize) })
}

/// Maps the runs of physical pages listed at `runs` ([`MapRun`]s in ring-3 memory) one after
/// another from `va`. Where a run allows it (`va` and the physical address 2 MiB-aligned, 512
/// pages left), one 2 MiB entry maps 512 pages; elsewhere 4 KiB entries are written in a
/// tight loop (each instruction here is emulated). All or nothing: on error nothing stays
/// mapped.
pub fn map(va: u64, runs: u64, nruns: u64, flags: u64) -> i64 {
    let run_size = core::mem::size_of::<MapRun>() as u64;
    if flags & !MAP_WRITE != 0
        || nruns == 0
        || nruns > MAX_PAGES_PER_CALL
        || !user_buffer_ok(runs, nruns * run_size)
        || !va.is_multiple_of(PAGE_SIZE)
        || !in_user_map(va)
    {
        return EINVAL;
    }
    let leaf = if flags & MAP_WRITE != 0 {
        USER_RW
    } else {
        USER_RO
    }
    .bits();
    let window_end = USER_MAP_BASE + USER_MAP_SIZE;
    let mut s = STATE.lock();
    let mut v = va;
    let mut err = 0;
    let mut total = 0u64;
    'runs: for r in 0..nruns {
        // SAFETY: the run list was checked to be ordinary ring-3 RAM.
        let run = unsafe { core::ptr::read_volatile((runs + r * run_size) as *const MapRun) };
        let bytes = run.pages.checked_mul(PAGE_SIZE);
        let fits = |base: u64, limit: u64| {
            bytes
                .and_then(|b| base.checked_add(b))
                .is_some_and(|e| e <= limit)
        };
        total = total.saturating_add(run.pages);
        if run.pages == 0
            || total > MAX_PAGES_PER_CALL
            || !s.user_pa_ok(run.pa)
            || !fits(run.pa, s.ram_size)
            || !fits(v, window_end)
        {
            err = EINVAL;
            break;
        }
        let (mut pa, mut left) = (run.pa, run.pages);
        while left > 0 {
            if v.is_multiple_of(LARGE_PAGE_SIZE)
                && pa.is_multiple_of(LARGE_PAGE_SIZE)
                && left >= 512
            {
                let Some(e) = pde(&mut s, v, true) else {
                    err = ENOMEM;
                    break 'runs;
                };
                // SAFETY: e is an entry of a pool table; we hold the lock.
                unsafe {
                    if *e != 0 {
                        err = EEXIST;
                        break 'runs;
                    }
                    *e = pa | leaf | HUGE;
                }
                v += LARGE_PAGE_SIZE;
                pa += LARGE_PAGE_SIZE;
                left -= 512;
                continue;
            }
            let Some(e) = pde(&mut s, v, true) else {
                err = ENOMEM;
                break 'runs;
            };
            // SAFETY: e is an entry of a pool table; we hold the lock.
            if unsafe { *e } & HUGE != 0 {
                err = EEXIST;
                break 'runs;
            }
            let Some(pt) = s.walk(v, 1, true) else {
                err = ENOMEM;
                break 'runs;
            };
            let ents = pt as *mut u64;
            let first = ((v >> 12) & 511) as usize;
            let n = (512 - first as u64).min(left) as usize;
            for k in first..first + n {
                // SAFETY: k < 512 indexes the pool table `pt`; we hold the lock.
                unsafe {
                    if *ents.add(k) != 0 {
                        err = EEXIST;
                        break 'runs;
                    }
                    *ents.add(k) = pa | leaf;
                }
                s.present[State::pool_index(ents)] += 1;
                pa += PAGE_SIZE;
                v += PAGE_SIZE;
            }
            left -= n as u64;
        }
    }
    if err != 0 {
        clear(&mut s, va, (v - va) / PAGE_SIZE);
        return err;
    }
    0
}

/// Unmaps `count` pages at `va`. Returns ENOENT if any of them was not mapped (the others
/// are unmapped all the same), and EINVAL for a range that would split a 2 MiB mapping.
pub fn unmap(va: u64, count: u64) -> i64 {
    if !window_range_ok(va, count) {
        return EINVAL;
    }
    let mut s = STATE.lock();
    let cleared = clear(&mut s, va, count);
    match cleared {
        Some(n) if n == count => 0,
        Some(_) => ENOENT,
        None => EINVAL,
    }
}

/// Clears the mappings of `count` pages from `va` and flushes them from this CPU's TLB.
/// Returns how many pages were mapped, or None if the range splits a 2 MiB mapping (which
/// is then left alone).
fn clear(s: &mut State, va: u64, count: u64) -> Option<u64> {
    let end = va + count * PAGE_SIZE;
    let mut v = va;
    let mut mapped = 0;
    let mut whole = true;
    while v < end {
        let next = ((v / LARGE_PAGE_SIZE) + 1) * LARGE_PAGE_SIZE;
        let Some(e) = pde(s, v, false) else {
            v = next.min(end);
            continue;
        };
        // SAFETY: e is an entry of a pool table; we hold the lock.
        let entry = unsafe { *e };
        if entry == 0 {
            v = next.min(end);
        } else if entry & HUGE != 0 {
            if !v.is_multiple_of(LARGE_PAGE_SIZE) || end - v < LARGE_PAGE_SIZE {
                whole = false;
                v = next.min(end);
                continue;
            }
            // SAFETY: as above.
            unsafe { *e = 0 };
            x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(v));
            mapped += 512;
            v = next;
        } else {
            let ents = (entry & !0xfff & ((1 << 52) - 1)) as *mut u64;
            let first = ((v >> 12) & 511) as usize;
            let n = ((next.min(end) - v) / PAGE_SIZE) as usize;
            let idx = State::pool_index(ents);
            for k in first..first + n {
                // SAFETY: k < 512 indexes the page table this directory entry names, a pool
                // table; we hold the lock.
                unsafe {
                    if *ents.add(k) != 0 {
                        *ents.add(k) = 0;
                        mapped += 1;
                        s.present[idx] = s.present[idx].saturating_sub(1);
                    }
                }
            }
            if s.present[idx] == 0 {
                // The table maps nothing now: unhook it and keep it (all zero) for reuse. The
                // TLB flush below also drops cached directory entries for this range.
                // SAFETY: e is an entry of a pool table; we hold the lock.
                unsafe { *e = 0 };
                s.free[s.nfree] = idx as u16;
                s.nfree += 1;
            }
            v = next.min(end);
        }
    }
    if count > 32 {
        let (frame, flags) = Cr3::read();
        // SAFETY: reloading the same CR3 only flushes non-global TLB entries.
        unsafe { Cr3::write(frame, flags) };
    } else {
        for k in 0..count {
            x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(va + k * PAGE_SIZE));
        }
    }
    whole.then_some(mapped)
}
