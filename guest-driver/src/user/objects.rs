//! Pageable GPU objects, used like files (Piggin's point): create, read_at, write_at, map,
//! close, whatever the placement; plus migrate, clean, evict and placement.
//!
//! Life cycle (README.md): SYSTEM (guest pages) → MIGRATE → VRAM (both copies) → CLEAN →
//! CLEANED (VRAM only: the host punched the guest pages) and EVICT back to SYSTEM.
//!
//! - A view made by [`map`] always shows the guest pages, so it is present only while the
//!   object is SYSTEM. Migrating unmaps it; touching it then faults, and the fault resolver
//!   evicts the object back into (fresh) pages, maps them and resumes: demand paging.
//! - `read_at`/`write_at` use the guest pages for SYSTEM objects and the VRAM window for
//!   VRAM and CLEANED ones (there VRAM holds the authoritative copy).
//! - CLEAN is fenced: unmap, CLEAN, wait for its completion, and only then free the pages.
//! - MIGRATE_CLEAN does both in one command (the host moves the pages into VRAM where it can,
//!   so it never holds two copies); its rules are CLEAN's.
//! - When VRAM is full, MIGRATE evicts the least recently used VRAM objects (as TTM does).
//! - When guest pages run out, idle SYSTEM objects are migrated and cleaned, so VRAM backs
//!   them.
//! - Objects belong to the task (vCPU) that made them; other tasks cannot name them, and a
//!   task can only act as itself (checked against the vCPU it runs on).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::layout::{MAX_VCPUS, PAGE_SIZE};
use pvgpu_abi::protocol::{self as p, RespStats};
use spin::Mutex;

use super::gpu::{Cmd, Gpu, GpuError};
use super::page_runs::PageRuns;
use super::sys::{self, SysError};
use super::{fault, pages};
use crate::memory_map::{view_window, USER_MAP_BASE, USER_MAP_SIZE};

/// A task: the vCPU that runs it.
pub type Task = usize;

/// Where an object's data lives (the protocol's one definition).
pub use pvgpu_abi::protocol::Placement;

/// An object handle, valid only for the task that created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Handle(pub u32);

/// Object errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ObjError {
    /// The guest has no GPU (or it failed to start).
    #[error("no GPU device")]
    NoDevice,
    /// No such live object.
    #[error("no such object")]
    BadHandle,
    /// The object belongs to another task.
    #[error("the object belongs to another task")]
    NotOwner,
    /// Size 0, not a whole number of pages, or larger than the device allows.
    #[error("bad object size")]
    BadSize,
    /// offset + length is outside the object.
    #[error("range outside the object")]
    OutOfRange,
    /// The operation is not allowed in this placement.
    #[error("not allowed while the object is {0:?}")]
    WrongPlacement(Placement),
    /// Guest pages ran out and nothing could be reclaimed.
    #[error("out of guest pages")]
    OutOfPages,
    /// VRAM is full and nothing could be evicted.
    #[error("out of VRAM")]
    OutOfVram,
    /// The task's view window is used up.
    #[error("out of view address space")]
    OutOfViews,
    /// A map or unmap system call failed.
    #[error("page mapping: {0}")]
    Map(SysError),
    /// The device failed a command.
    #[error("device: {0}")]
    Gpu(GpuError),
}

impl From<GpuError> for ObjError {
    fn from(e: GpuError) -> Self {
        match e {
            GpuError::Device {
                code: p::RESP_ERR_OUT_OF_MEMORY,
                ..
            } => ObjError::OutOfVram,
            e => ObjError::Gpu(e),
        }
    }
}

impl From<SysError> for ObjError {
    fn from(e: SysError) -> Self {
        ObjError::Map(e)
    }
}

/// Counters of the object layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Faults on views resolved.
    pub faults: u64,
    /// The same, per task.
    pub task_faults: [u64; MAX_VCPUS as usize],
    /// Guest pages each task's cleaned objects gave back.
    pub task_pages_cleaned: [u64; MAX_VCPUS as usize],
    /// Objects evicted to make VRAM room (LRU).
    pub lru_evictions: u64,
    /// Objects migrated and cleaned to free guest pages.
    pub reclaims: u64,
}

struct Obj {
    owner: Task,
    size: u64,
    placement: Placement,
    /// Guest pages, in object order (empty when CLEANED).
    pages: PageRuns,
    /// Offset in VRAM (VRAM and CLEANED).
    vram_offset: u64,
    /// Address of the view, if mapped.
    view: Option<u64>,
    /// Whether the view's pages are present.
    view_present: bool,
    /// LRU stamp.
    last_use: u64,
}

struct State {
    gpu: Gpu,
    objs: BTreeMap<u32, Obj>,
    next_id: u32,
    tick: u64,
    /// View start → object id.
    views: BTreeMap<u64, u32>,
    /// Next free view address of each task.
    next_view: [u64; MAX_VCPUS as usize],
    /// View address ranges given back by each task, `(start, len)`, reused first.
    free_views: [Vec<(u64, u64)>; MAX_VCPUS as usize],
    counters: Counters,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Whether (and how) the GPU driver started: it starts on first use, so a guest that never
/// uses it boots without touching the device.
static STARTED: spin::Once<Result<(), ObjError>> = spin::Once::new();

/// Starts the GPU driver and the object layer.
fn start(info: &BootInfo) -> Result<(), ObjError> {
    let gpu = Gpu::probe(info).map_err(|e| match e {
        GpuError::NoDevice => ObjError::NoDevice,
        e => ObjError::Gpu(e),
    })?;
    let next_view = core::array::from_fn(|t| view_window(t).0);
    for t in 0..info.num_cpus as usize {
        let (a, b) = view_window(t);
        fault::register(a, b, resolve_fault).map_err(|_| ObjError::OutOfViews)?;
    }
    *STATE.lock() = Some(State {
        gpu,
        objs: BTreeMap::new(),
        next_id: 1,
        tick: 0,
        views: BTreeMap::new(),
        next_view,
        free_views: core::array::from_fn(|_| Vec::new()),
        counters: Counters::default(),
    });
    Ok(())
}

/// Starts the GPU driver if it has not been started; the outcome of the first start.
pub fn ensure_started() -> Result<(), ObjError> {
    *STARTED.call_once(|| start(&super::boot_info()))
}

/// Whether the GPU is up (starting it if needed).
pub fn available() -> bool {
    ensure_started().is_ok()
}

/// Restarts the driver after the device was reset behind the object layer's back (the
/// `hostile` workload drives the control queue by hand). The reset destroyed every object on
/// the device, so the layer forgets its objects too: their views are unmapped and their guest
/// pages freed. The old driver goes first (dropping it resets the device again), then the
/// device is probed afresh.
pub fn reinit(info: &BootInfo) -> Result<(), ObjError> {
    ensure_started()?;
    let mut g = STATE.lock();
    let old = g.take().ok_or(ObjError::NoDevice)?;
    let State {
        gpu,
        objs,
        next_id,
        next_view,
        free_views,
        counters,
        ..
    } = old;
    drop(gpu);
    for o in objs.into_values() {
        if let (Some(va), true) = (o.view, o.view_present) {
            let _ = sys::unmap(va, o.size / PAGE_SIZE);
        }
        pages::free_runs(o.pages.runs());
    }
    let gpu = Gpu::probe(info).map_err(|e| match e {
        GpuError::NoDevice => ObjError::NoDevice,
        e => ObjError::Gpu(e),
    })?;
    *g = Some(State {
        gpu,
        objs: BTreeMap::new(),
        next_id,
        tick: 0,
        views: BTreeMap::new(),
        next_view,
        free_views,
        counters,
    });
    Ok(())
}

/// Checks that `task` is the task actually running: a task can act only as itself.
fn caller(task: Task) -> Result<(), ObjError> {
    if task == super::current_cpu() && task < MAX_VCPUS as usize {
        Ok(())
    } else {
        Err(ObjError::NotOwner)
    }
}

fn with<R>(f: impl FnOnce(&mut State) -> Result<R, ObjError>) -> Result<R, ObjError> {
    ensure_started()?;
    let mut g = STATE.lock();
    let st = g.as_mut().ok_or(ObjError::NoDevice)?;
    f(st)
}

impl State {
    fn obj(&mut self, task: Task, h: Handle) -> Result<&mut Obj, ObjError> {
        caller(task)?;
        self.tick += 1;
        let tick = self.tick;
        let o = self.objs.get_mut(&h.0).ok_or(ObjError::BadHandle)?;
        if o.owner != task {
            return Err(ObjError::NotOwner);
        }
        o.last_use = tick;
        Ok(o)
    }

    fn obj_by_id(&mut self, id: u32) -> Result<&mut Obj, ObjError> {
        self.objs.get_mut(&id).ok_or(ObjError::BadHandle)
    }

    /// `n` guest pages; with `reclaim`, idle SYSTEM objects (other than `keep`) are migrated
    /// and cleaned until there are enough.
    fn alloc_pages(&mut self, n: usize, reclaim: bool, keep: u32) -> Result<PageRuns, ObjError> {
        loop {
            if let Some(v) = pages::alloc_many(n) {
                return Ok(PageRuns::from_pages(&v));
            }
            if !reclaim || !self.reclaim_one(keep)? {
                return Err(ObjError::OutOfPages);
            }
        }
    }

    /// Migrates and cleans the least recently used idle SYSTEM object. False if none could be.
    fn reclaim_one(&mut self, keep: u32) -> Result<bool, ObjError> {
        // Only the caller's own objects: unmapping another task's view here would leave stale
        // TLB entries on its vCPU (there is no cross-CPU shootdown), and its pages are about
        // to be freed.
        let me = super::current_cpu();
        let lru = |objs: &BTreeMap<u32, Obj>, placement: Placement| {
            objs.iter()
                .filter(|(id, o)| {
                    **id != keep && o.owner == me && o.placement == placement && !o.pages.is_empty()
                })
                .min_by_key(|(_, o)| o.last_use)
                .map(|(id, _)| *id)
        };
        // Cheapest first: an object already in VRAM only needs CLEAN (no VRAM is taken, and
        // with VRAM full it is the only way to free pages); then migrate and clean an idle
        // SYSTEM object.
        if let Some(id) = lru(&self.objs, Placement::Vram) {
            self.clean(id)?;
            self.counters.reclaims += 1;
            return Ok(true);
        }
        let Some(id) = lru(&self.objs, Placement::System) else {
            return Ok(false);
        };
        match self.migrate_clean(id, false) {
            Ok(()) => {}
            Err(ObjError::OutOfVram) => return Ok(false),
            Err(e) => return Err(e),
        }
        self.counters.reclaims += 1;
        Ok(true)
    }

    /// Evicts the least recently used VRAM-resident object other than `keep`. False if none.
    fn evict_lru(&mut self, keep: u32) -> Result<bool, ObjError> {
        let mut victims: Vec<(u64, u32)> = self
            .objs
            .iter()
            .filter(|(id, o)| **id != keep && o.placement != Placement::System)
            .map(|(id, o)| (o.last_use, *id))
            .collect();
        victims.sort_unstable();
        for (_, id) in victims {
            match self.evict(id, false) {
                Ok(()) => {
                    self.counters.lru_evictions += 1;
                    return Ok(true);
                }
                // A CLEANED object needs fresh pages; try the next victim.
                Err(ObjError::OutOfPages) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    fn hide_view(&mut self, id: u32) -> Result<(), ObjError> {
        let o = self.obj_by_id(id)?;
        if let (Some(va), true) = (o.view, o.view_present) {
            let n = o.size / PAGE_SIZE;
            o.view_present = false;
            sys::unmap(va, n)?;
        }
        Ok(())
    }

    fn show_view(&mut self, id: u32) -> Result<(), ObjError> {
        let o = self.obj_by_id(id)?;
        if let (Some(va), false, Placement::System) = (o.view, o.view_present, o.placement) {
            sys::map_runs(va, o.pages.runs(), true)?;
            o.view_present = true;
        }
        Ok(())
    }

    /// SYSTEM → VRAM. With `make_room`, LRU objects are evicted while VRAM is full.
    fn migrate(&mut self, id: u32, make_room: bool) -> Result<(), ObjError> {
        let placement = self.obj_by_id(id)?.placement;
        if placement != Placement::System {
            return Err(ObjError::WrongPlacement(placement));
        }
        self.hide_view(id)?;
        loop {
            match self.gpu.submit_one(Cmd::migrate(id)) {
                Ok(c) => {
                    let r: p::RespMigrate = c
                        .response()
                        .ok_or(ObjError::Gpu(GpuError::BadResponse("migrate")))?;
                    let o = self.obj_by_id(id)?;
                    o.placement = Placement::Vram;
                    o.vram_offset = r.vram_offset;
                    return Ok(());
                }
                Err(e) => match ObjError::from(e) {
                    ObjError::OutOfVram if make_room && self.evict_lru(id)? => continue,
                    e => {
                        let _ = self.show_view(id);
                        return Err(e);
                    }
                },
            }
        }
    }

    /// SYSTEM → CLEANED in one command: unmap, MIGRATE_CLEAN, wait for it, then give the pages
    /// back. With `make_room`, LRU objects are evicted while VRAM is full.
    fn migrate_clean(&mut self, id: u32, make_room: bool) -> Result<(), ObjError> {
        let placement = self.obj_by_id(id)?.placement;
        if placement != Placement::System {
            return Err(ObjError::WrongPlacement(placement));
        }
        self.hide_view(id)?;
        loop {
            match self.gpu.submit_one(Cmd::migrate_clean(id)) {
                Ok(c) => {
                    let r: p::RespMigrate = c
                        .response()
                        .ok_or(ObjError::Gpu(GpuError::BadResponse("migrate_clean")))?;
                    self.obj_by_id(id)?.vram_offset = r.vram_offset;
                    return self.cleaned(id);
                }
                Err(e) => match ObjError::from(e) {
                    ObjError::OutOfVram if make_room && self.evict_lru(id)? => continue,
                    e => {
                        let _ = self.show_view(id);
                        return Err(e);
                    }
                },
            }
        }
    }

    /// VRAM → CLEANED: CLEAN, wait for its fence, then give the pages back.
    fn clean(&mut self, id: u32) -> Result<(), ObjError> {
        let placement = self.obj_by_id(id)?.placement;
        if placement != Placement::Vram {
            return Err(ObjError::WrongPlacement(placement));
        }
        // The view was hidden by migrate, so nothing maps the pages.
        self.gpu.submit_one(Cmd::clean(id))?;
        self.cleaned(id)
    }

    /// Records that CLEAN of `id` completed: its fence has signalled, so the host is done with
    /// the pages and they go back to the allocator.
    fn cleaned(&mut self, id: u32) -> Result<(), ObjError> {
        let o = self.objs.get_mut(&id).ok_or(ObjError::BadHandle)?;
        o.placement = Placement::Cleaned;
        let pages = core::mem::take(&mut o.pages);
        if let Some(n) = self.counters.task_pages_cleaned.get_mut(o.owner) {
            *n += pages.len();
        }
        pages::free_runs(pages.runs());
        Ok(())
    }

    /// VRAM or CLEANED → SYSTEM (fresh pages for a CLEANED object).
    fn evict(&mut self, id: u32, reclaim: bool) -> Result<(), ObjError> {
        let o = self.obj_by_id(id)?;
        let (placement, size) = (o.placement, o.size);
        match placement {
            Placement::System => return Err(ObjError::WrongPlacement(placement)),
            Placement::Vram => {
                self.gpu.submit_one(Cmd::evict(id, &PageRuns::default()))?;
            }
            Placement::Cleaned => {
                let fresh = self.alloc_pages((size / PAGE_SIZE) as usize, reclaim, id)?;
                if let Err(e) = self.gpu.submit_one(Cmd::evict(id, &fresh)) {
                    pages::free_runs(fresh.runs());
                    return Err(e.into());
                }
                self.obj_by_id(id)?.pages = fresh;
            }
        }
        self.obj_by_id(id)?.placement = Placement::System;
        self.show_view(id)
    }

    /// View address space for `size` bytes: 2 MiB-aligned (so whole 2 MiB blocks of pages map
    /// as large pages) with at least one unmapped guard page after it. Ranges given back are
    /// reused first.
    fn reserve_view(&mut self, task: Task, size: u64) -> Result<u64, ObjError> {
        let len = (size + PAGE_SIZE).next_multiple_of(pvgpu_abi::layout::LARGE_PAGE_SIZE);
        let free = self.free_views.get_mut(task).ok_or(ObjError::NotOwner)?;
        if let Some(i) = free.iter().position(|&(_, l)| l >= len) {
            let (va, l) = free[i];
            if l == len {
                free.swap_remove(i);
            } else {
                free[i] = (va + len, l - len);
            }
            return Ok(va);
        }
        let va = self.next_view[task];
        let end = va
            .checked_add(len)
            .filter(|&e| e <= view_window(task).1)
            .ok_or(ObjError::OutOfViews)?;
        self.next_view[task] = end;
        Ok(va)
    }

    /// Gives back the view at `va` of an object of `size` bytes (already unmapped).
    fn release_view(&mut self, task: Task, va: u64, size: u64) {
        self.views.remove(&va);
        let len = (size + PAGE_SIZE).next_multiple_of(pvgpu_abi::layout::LARGE_PAGE_SIZE);
        if let Some(free) = self.free_views.get_mut(task) {
            free.push((va, len));
        }
    }

    fn check_range(
        &mut self,
        task: Task,
        h: Handle,
        offset: u64,
        len: usize,
    ) -> Result<(), ObjError> {
        let size = self.obj(task, h)?.size;
        match offset.checked_add(len as u64) {
            Some(end) if end <= size => Ok(()),
            _ => Err(ObjError::OutOfRange),
        }
    }

    /// Calls `f(addr, len, buf_offset)` for each identity-mapped piece of `[offset, offset+len)`.
    fn pieces(
        &mut self,
        h: Handle,
        offset: u64,
        len: usize,
        mut f: impl FnMut(u64, usize, usize),
    ) -> Result<(), ObjError> {
        let vram_base = self.gpu.vram_base;
        let o = self.obj_by_id(h.0)?;
        if o.placement == Placement::System {
            let mut done = 0usize;
            while done < len {
                // The caller checked the range, so every byte of it is in a page.
                let (addr, run) = o
                    .pages
                    .locate(offset + done as u64)
                    .ok_or(ObjError::OutOfRange)?;
                let n = usize::try_from(run).map_or(len - done, |r| r.min(len - done));
                f(addr, n, done);
                done += n;
            }
        } else if len > 0 {
            f(vram_base + o.vram_offset + offset, len, 0);
        }
        Ok(())
    }
}

/// Creates an object of `size` bytes (whole pages) in guest pages, zero-filled.
pub fn create(task: Task, size: u64) -> Result<Handle, ObjError> {
    caller(task)?;
    with(|st| {
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) || size > st.gpu.info.max_object_size {
            return Err(ObjError::BadSize);
        }
        let id = st.next_id;
        st.next_id = st.next_id.checked_add(1).ok_or(ObjError::BadHandle)?;
        let pages = st.alloc_pages((size / PAGE_SIZE) as usize, true, 0)?;
        for r in pages.runs() {
            // SAFETY: pages just allocated to us, identity-mapped and writable.
            unsafe { core::ptr::write_bytes(r.pa as *mut u8, 0, (r.pages * PAGE_SIZE) as usize) };
        }
        let mut batch = [Cmd::create(id, size), Cmd::attach(id, &pages)];
        if let Err(e) = st.gpu.submit(&mut batch) {
            let _ = st.gpu.submit_one(Cmd::destroy(id));
            pages::free_runs(pages.runs());
            return Err(e.into());
        }
        st.tick += 1;
        let obj = Obj {
            owner: task,
            size,
            placement: Placement::System,
            pages,
            vram_offset: 0,
            view: None,
            view_present: false,
            last_use: st.tick,
        };
        st.objs.insert(id, obj);
        Ok(Handle(id))
    })
}

/// Destroys the object; its pages go back to the allocator.
pub fn close(task: Task, h: Handle) -> Result<(), ObjError> {
    with(|st| {
        st.obj(task, h)?;
        st.hide_view(h.0)?;
        st.gpu.submit_one(Cmd::destroy(h.0))?;
        if let Some(o) = st.objs.remove(&h.0) {
            if let Some(va) = o.view {
                st.release_view(task, va, o.size);
            }
            pages::free_runs(o.pages.runs());
        }
        Ok(())
    })
}

/// The object's size in bytes.
pub fn size(task: Task, h: Handle) -> Result<u64, ObjError> {
    with(|st| Ok(st.obj(task, h)?.size))
}

/// Where the object's data lives.
pub fn placement(task: Task, h: Handle) -> Result<Placement, ObjError> {
    with(|st| Ok(st.obj(task, h)?.placement))
}

/// Whether `buf` lies (partly) in the user-map window, where object views live. Touching a
/// view can fault, and the fault resolver needs the object lock, so such buffers are never
/// touched while the lock is held.
fn in_views(buf: &[u8]) -> bool {
    let (start, len) = (buf.as_ptr() as u64, buf.len() as u64);
    start < USER_MAP_BASE + USER_MAP_SIZE && start + len > USER_MAP_BASE
}

/// Copies `data` into the object at `offset` (pwrite). `data` may be another object's view.
pub fn write_at(task: Task, h: Handle, offset: u64, data: &[u8]) -> Result<(), ObjError> {
    if in_views(data) {
        // Fault the source in now, outside the lock.
        let bounce: Vec<u8> = data.to_vec();
        return write_at(task, h, offset, &bounce);
    }
    with(|st| {
        st.check_range(task, h, offset, data.len())?;
        st.pieces(h, offset, data.len(), |addr, n, at| {
            // SAFETY: `addr..addr+n` is one of the object's own guest pages or its VRAM range,
            // identity-mapped and writable; `data[at..at+n]` is in bounds.
            unsafe { core::ptr::copy_nonoverlapping(data.as_ptr().add(at), addr as *mut u8, n) }
        })
    })
}

/// Copies from the object at `offset` into `buf` (pread). `buf` may be another object's view.
pub fn read_at(task: Task, h: Handle, offset: u64, buf: &mut [u8]) -> Result<(), ObjError> {
    if in_views(buf) {
        // Read into memory no fault can hit, then copy out after the lock is released.
        let mut bounce = alloc::vec![0u8; buf.len()];
        read_at(task, h, offset, &mut bounce)?;
        buf.copy_from_slice(&bounce);
        return Ok(());
    }
    with(|st| {
        st.check_range(task, h, offset, buf.len())?;
        let out = buf.as_mut_ptr();
        st.pieces(h, offset, buf.len(), |addr, n, at| {
            // SAFETY: as in write_at, reading; `out[at..at+n]` is in bounds of `buf`.
            unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, out.add(at), n) }
        })
    })
}

/// Maps the object into the task's view window and returns the address (mmap). The view is
/// present while the object is SYSTEM; otherwise the first touch faults it back.
pub fn map(task: Task, h: Handle) -> Result<u64, ObjError> {
    with(|st| {
        let o = st.obj(task, h)?;
        if let Some(va) = o.view {
            return Ok(va);
        }
        let size = o.size;
        let va = st.reserve_view(task, size)?;
        st.obj_by_id(h.0)?.view = Some(va);
        st.views.insert(va, h.0);
        st.show_view(h.0)?;
        Ok(va)
    })
}

/// Removes the object's view.
pub fn unmap(task: Task, h: Handle) -> Result<(), ObjError> {
    with(|st| {
        st.obj(task, h)?;
        st.hide_view(h.0)?;
        let o = st.obj_by_id(h.0)?;
        let size = o.size;
        if let Some(va) = o.view.take() {
            st.release_view(task, va, size);
        }
        Ok(())
    })
}

/// Copies the object into VRAM (evicting LRU objects if VRAM is full).
pub fn migrate(task: Task, h: Handle) -> Result<(), ObjError> {
    with(|st| {
        st.obj(task, h)?;
        st.migrate(h.0, true)
    })
}

/// Gives the object's guest pages back to the host; the data stays in VRAM only.
pub fn clean(task: Task, h: Handle) -> Result<(), ObjError> {
    with(|st| {
        st.obj(task, h)?;
        st.clean(h.0)
    })
}

/// Moves the object into VRAM and gives its guest pages back in one command (evicting LRU
/// objects if VRAM is full): MIGRATE and CLEAN fused.
pub fn migrate_clean(task: Task, h: Handle) -> Result<(), ObjError> {
    with(|st| {
        st.obj(task, h)?;
        st.migrate_clean(h.0, true)
    })
}

/// MIGRATE_CLEAN of every object in `hs`: one batch (one notify) for the lot, each one's pages
/// freed once its command has completed; any that did not fit are then done one by one,
/// evicting LRU objects.
pub fn migrate_clean_many(task: Task, hs: &[Handle]) -> Result<(), ObjError> {
    to_vram_many(task, hs, true)
}

/// Brings the object back into guest pages and frees its VRAM.
pub fn evict(task: Task, h: Handle) -> Result<(), ObjError> {
    with(|st| {
        st.obj(task, h)?;
        st.evict(h.0, true)
    })
}

/// Migrates every object in `hs`: one batch (one notify) for the lot; any that did not fit
/// are then migrated one by one, evicting LRU objects.
pub fn migrate_many(task: Task, hs: &[Handle]) -> Result<(), ObjError> {
    to_vram_many(task, hs, false)
}

/// MIGRATE (or, `fused`, MIGRATE_CLEAN) of every object in `hs` in one batch, then one by one
/// for those that did not fit.
fn to_vram_many(task: Task, hs: &[Handle], fused: bool) -> Result<(), ObjError> {
    with(|st| {
        for (i, &h) in hs.iter().enumerate() {
            let pl = st.obj(task, h)?.placement;
            if pl != Placement::System {
                return Err(ObjError::WrongPlacement(pl));
            }
            if hs[..i].contains(&h) {
                return Err(ObjError::BadHandle);
            }
        }
        for &h in hs {
            st.hide_view(h.0)?;
        }
        let cmd = if fused {
            Cmd::migrate_clean
        } else {
            Cmd::migrate
        };
        let mut cmds: Vec<Cmd> = hs.iter().map(|h| cmd(h.0)).collect();
        let _ = st.gpu.submit(&mut cmds);
        // Record every command the device did before retrying any, so the driver's books
        // match the device whatever happens next.
        let mut retry = Vec::new();
        for (h, c) in hs.iter().zip(&cmds) {
            match c
                .response::<p::RespMigrate>()
                .filter(|r| r.hdr.type_ == p::RESP_OK_MIGRATE)
            {
                Some(r) => {
                    let o = st.obj_by_id(h.0)?;
                    o.vram_offset = r.vram_offset;
                    if fused {
                        st.cleaned(h.0)?;
                    } else {
                        o.placement = Placement::Vram;
                    }
                }
                None => retry.push(h.0),
            }
        }
        // Those that did not fit go one by one, evicting LRU objects; the first error is
        // returned once every one was tried.
        let mut first_err = Ok(());
        for id in retry {
            let r = if fused {
                st.migrate_clean(id, true)
            } else {
                st.migrate(id, true)
            };
            if let Err(e) = r {
                first_err = first_err.and(Err(e));
            }
        }
        first_err
    })
}

/// Cleans every object in `hs` that is in VRAM, in one batch; each one's pages are freed once
/// its CLEAN has completed.
pub fn clean_many(task: Task, hs: &[Handle]) -> Result<(), ObjError> {
    with(|st| {
        let mut in_vram = Vec::new();
        for &h in hs {
            if st.obj(task, h)?.placement == Placement::Vram {
                in_vram.push(h);
            }
        }
        let mut cmds: Vec<Cmd> = in_vram.iter().map(|h| Cmd::clean(h.0)).collect();
        let result = st.gpu.submit(&mut cmds);
        for (h, c) in in_vram.iter().zip(&cmds) {
            if c.status().is_some_and(|hdr| hdr.type_ == p::RESP_OK_NODATA) {
                st.cleaned(h.0)?;
            }
        }
        result.map_err(ObjError::from)
    })
}

/// crc32c of a range, computed by the device wherever the data is.
pub fn checksum(task: Task, h: Handle, offset: u64, len: u64) -> Result<u32, ObjError> {
    with(|st| {
        st.obj(task, h)?;
        let c = st.gpu.submit_one(Cmd::checksum(h.0, offset, len))?;
        let r: p::RespChecksum = c
            .response()
            .ok_or(ObjError::Gpu(GpuError::BadResponse("checksum")))?;
        Ok(r.crc32c)
    })
}

/// Device-side fill of a range of a VRAM or CLEANED object.
pub fn fill(task: Task, h: Handle, offset: u64, len: u64, value: u8) -> Result<(), ObjError> {
    with(|st| {
        st.obj(task, h)?;
        st.gpu.submit_one(Cmd::fill(h.0, offset, len, value))?;
        Ok(())
    })
}

/// Device-side copy between two of the task's objects (VRAM or CLEANED).
pub fn copy(
    task: Task,
    dst: Handle,
    dst_off: u64,
    src: Handle,
    src_off: u64,
    len: u64,
) -> Result<(), ObjError> {
    with(|st| {
        st.obj(task, dst)?;
        st.obj(task, src)?;
        st.gpu
            .submit_one(Cmd::copy(dst.0, dst_off, src.0, src_off, len))?;
        Ok(())
    })
}

/// The device's counters.
pub fn device_stats() -> Result<RespStats, ObjError> {
    with(|st| {
        let c = st.gpu.submit_one(Cmd::stats())?;
        c.response()
            .ok_or(ObjError::Gpu(GpuError::BadResponse("stats")))
    })
}

/// The object layer's counters.
pub fn counters() -> Counters {
    STATE
        .lock()
        .as_ref()
        .map_or(Counters::default(), |s| s.counters)
}

/// Submits raw commands (for tests of the device's checks); each result is in its `Cmd`.
pub fn submit_raw(cmds: &mut [Cmd]) -> Result<(), ObjError> {
    with(|st| {
        let _ = st.gpu.submit(cmds);
        Ok(())
    })
}

/// Runs `f` with the driver itself (for benchmarks that time raw queue operations).
pub fn with_gpu<R>(f: impl FnOnce(&mut Gpu) -> R) -> Result<R, ObjError> {
    with(|st| Ok(f(&mut st.gpu)))
}

/// Resolves a fault in a view: evict the object back if needed and map its pages.
fn resolve_fault(addr: u64, cpu: usize) -> bool {
    let mut g = STATE.lock();
    let Some(st) = g.as_mut() else { return false };
    let Some((&va, &id)) = st.views.range(..=addr).next_back() else {
        return false;
    };
    let Ok(o) = st.obj_by_id(id) else {
        return false;
    };
    if o.owner != cpu || addr >= va + o.size {
        return false;
    }
    let ok = match o.placement {
        Placement::System => st.show_view(id).is_ok(),
        _ => st.evict(id, true).is_ok(),
    };
    if ok {
        st.counters.faults += 1;
        if let Some(n) = st.counters.task_faults.get_mut(cpu) {
            *n += 1;
        }
        st.tick += 1;
        let tick = st.tick;
        if let Ok(o) = st.obj_by_id(id) {
            o.last_use = tick;
        }
    }
    ok
}
