//! Moving an object's pages between guest RAM and VRAM without copying them (MIGRATE_CLEAN,
//! and EVICT into fresh pages), with a copy wherever a move is not possible.
//!
//! A move takes the page-table entries of the source and puts them at the destination
//! (UFFDIO_MOVE, see [`crate::uffd`]): the data is never in two places, and the source reads
//! as zero afterwards. The destination must be registered with the userfaultfd and missing;
//! the caller discards it first. It is registered only for the duration of one call.
//!
//! Fallback, never corruption: a page the kernel refuses (EBUSY: pinned or shared; EEXIST: the
//! destination became present; EAGAIN three times in a row), or the whole rest when the kernel
//! cannot move at all (EINVAL, ENOTTY, ...), is copied after the range is unregistered; its
//! source keeps its data, for the caller to discard. [`MoveCounts`] says how many bytes went
//! each way.
//!
//! A long transfer is done in slices (`job::Work::MoveToVram`, `MoveToGuest`): one call per
//! slice, each registering, moving and unregistering its own destination range, and each
//! holding the [`MoveLock`] only for itself.

use vm_memory::bitmap::{Bitmap, BitmapSlice};
use vm_memory::{GuestMemory, Permissions, VolatileSlice};

use crate::backend::{MemoryBackend, MoveLock};
use crate::guest_ram::Extent;
use crate::uffd::Uffd;
use crate::vram::{guest_slices, Vram, VramError};
use pvgpu_abi::protocol::PAGE_SIZE;

/// How many times an EAGAIN is retried before the page is copied instead.
const EAGAIN_RETRIES: u32 = 3;

/// Whether the device moves pages (a test hook can make it refuse some).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// Move where the backend and the kernel allow it (the default).
    #[default]
    Auto,
    /// Never move: copy (and discard), as on the shared backend.
    CopyOnly,
    /// Testing: refuse every n-th page (n >= 1), as if the kernel had said EBUSY, so partial
    /// moves and the copy fallback run.
    RefuseEvery(u64),
}

/// Bytes moved and bytes copied by one transfer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MoveCounts {
    /// Moved without copying.
    pub moved: u64,
    /// Copied instead (the fallback).
    pub copied: u64,
}

impl MoveCounts {
    /// Adds the bytes of another transfer.
    pub fn add(&mut self, other: MoveCounts) {
        self.moved += other.moved;
        self.copied += other.copied;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToVram,
    ToGuest,
}

/// Moves pages between guest RAM and VRAM.
#[derive(Debug)]
pub struct PageMover {
    uffd: Option<Uffd>,
    refuse_every: Option<u64>,
    /// The memory asks for transparent huge pages (MADV_HUGEPAGE).
    huge: bool,
    pages_seen: u64,
    /// Held during each transfer, so host-memory measurements stay consistent.
    lock: MoveLock,
}

impl PageMover {
    /// A mover for memory of `backend`. Without a usable userfaultfd (an older kernel, no
    /// permission) it only copies, and says why once in the log.
    pub fn new(backend: MemoryBackend, mode: ZeroCopy) -> Self {
        let uffd = match (backend.can_move(), mode) {
            (false, _) | (_, ZeroCopy::CopyOnly) => None,
            _ => match Uffd::new() {
                Ok(u) => Some(u),
                Err(e) => {
                    log::warn!("pages will be copied, not moved: {e}");
                    None
                }
            },
        };
        let refuse_every = match mode {
            ZeroCopy::RefuseEvery(n) => Some(n.max(1)),
            _ => None,
        };
        PageMover {
            uffd,
            refuse_every,
            huge: backend == (MemoryBackend::Anonymous { thp: true }),
            pages_seen: 0,
            lock: MoveLock::default(),
        }
    }

    /// The lock held while pages move between guest RAM and VRAM: hold it while measuring
    /// both, and no page is counted twice (or not at all).
    pub fn move_lock(&self) -> MoveLock {
        self.lock.clone()
    }

    /// Whether pages can be moved (otherwise every transfer copies).
    pub fn can_move(&self) -> bool {
        self.uffd.is_some()
    }

    /// Whether pages move as 2 MiB huge pages, where the memory has them (it asks for them,
    /// and pages can move): 64 MiB then move in 50 to 130 µs here, against about 2 ms for
    /// 4 KiB pages and 10 ms or more to copy.
    pub fn moves_huge_pages(&self) -> bool {
        self.huge && self.can_move()
    }

    /// Moves (or copies) the guest pages `extents`, in order, to VRAM at `vram_offset`. The
    /// VRAM range must have been discarded. Copied source pages keep their data.
    pub fn to_vram<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        extents: &[Extent],
        vram: &Vram,
        vram_offset: u64,
    ) -> Result<MoveCounts, VramError> {
        self.transfer(mem, extents, vram, vram_offset, Dir::ToVram)
    }

    /// Moves (or copies) VRAM at `vram_offset` into the guest pages `extents`, which must
    /// have been discarded. Copied VRAM keeps its data.
    pub fn to_guest<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        extents: &[Extent],
        vram: &Vram,
        vram_offset: u64,
    ) -> Result<MoveCounts, VramError> {
        self.transfer(mem, extents, vram, vram_offset, Dir::ToGuest)
    }

    fn transfer<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        extents: &[Extent],
        vram: &Vram,
        vram_offset: u64,
        dir: Dir,
    ) -> Result<MoveCounts, VramError> {
        let lock = self.lock.clone();
        let _moving = lock.hold();
        let access = match dir {
            Dir::ToVram => Permissions::Read,
            Dir::ToGuest => Permissions::Write,
        };
        // The guest runs, each with the VRAM offset it pairs with (all checked first).
        let mut voff = vram_offset;
        let runs: Vec<_> = guest_slices(mem, extents, access)?
            .into_iter()
            .map(|s| {
                let at = voff;
                voff += s.len() as u64;
                (s, at)
            })
            .collect();
        let total = voff - vram_offset;
        let vram_all = vram.slice(vram_offset, total)?;
        let mut counts = MoveCounts::default();
        // (run index, offset in the run, length) to copy after unregistering.
        let mut to_copy: Vec<(usize, u64, u64)> = Vec::new();
        let registered = self.register(&runs, &vram_all, dir);
        match (self.uffd.take(), registered) {
            (Some(uffd), Some((addr, len))) => {
                let mut hard_fail = false;
                for (i, (s, voff)) in runs.iter().enumerate() {
                    let guest = s.ptr_guard_mut().as_ptr() as u64;
                    let v = vram.host_addr() as u64 + voff;
                    let (dst, src) = match dir {
                        Dir::ToVram => (v, guest),
                        Dir::ToGuest => (guest, v),
                    };
                    let len = s.len() as u64;
                    if hard_fail {
                        to_copy.push((i, 0, len));
                        continue;
                    }
                    let moved = self.move_run(&uffd, dst, src, len, |off, n| {
                        to_copy.push((i, off, n));
                    });
                    counts.moved += moved.0;
                    if moved.1 {
                        hard_fail = true;
                    }
                }
                match uffd.unregister(addr, len) {
                    Ok(()) => self.uffd = Some(uffd),
                    // Accesses there would wait forever: give up moving from now on (closing
                    // the userfaultfd unregisters everything).
                    Err(e) => log::error!("{e}; pages will be copied from now on"),
                }
            }
            (uffd, _) => {
                self.uffd = uffd;
                to_copy.extend(
                    runs.iter()
                        .enumerate()
                        .map(|(i, r)| (i, 0, r.0.len() as u64)),
                );
            }
        }
        for (i, off, n) in to_copy {
            let (s, voff) = &runs[i];
            let bad = || VramError::OutOfBounds {
                offset: voff + off,
                len: n,
            };
            let g = s.subslice(off as usize, n as usize).map_err(|_| bad())?;
            let v = vram.slice(voff + off, n)?;
            match dir {
                Dir::ToVram => g.copy_to_volatile_slice(v),
                Dir::ToGuest => v.copy_to_volatile_slice(g),
            }
            counts.copied += n;
        }
        if dir == Dir::ToGuest {
            for (s, _) in &runs {
                s.bitmap().mark_dirty(0, s.len());
            }
        }
        Ok(counts)
    }

    /// Registers the destination with the userfaultfd; returns the registered host range.
    fn register<B: BitmapSlice>(
        &self,
        runs: &[(VolatileSlice<'_, B>, u64)],
        vram_all: &VolatileSlice<'_, ()>,
        dir: Dir,
    ) -> Option<(u64, u64)> {
        let uffd = self.uffd.as_ref()?;
        let (addr, len) = match dir {
            Dir::ToVram => (vram_all.ptr_guard().as_ptr() as u64, vram_all.len() as u64),
            Dir::ToGuest => {
                // One range covering every destination page: registering each run could
                // split the mapping into thousands of pieces. A vCPU touching a missing page
                // in between waits until the move is over.
                let start = runs.iter().map(|r| r.0.ptr_guard().as_ptr() as u64).min()?;
                let end = runs
                    .iter()
                    .map(|r| r.0.ptr_guard().as_ptr() as u64 + r.0.len() as u64)
                    .max()?;
                (start, end - start)
            }
        };
        if len == 0 {
            return None;
        }
        match uffd.register(addr, len) {
            Ok(()) => Some((addr, len)),
            Err(e) => {
                log::warn!("{e}; copying instead");
                None
            }
        }
    }

    /// Moves one run. `copy(offset, len)` records a part to copy instead. Returns the bytes
    /// moved and whether moving is impossible (the caller copies the remaining runs).
    fn move_run(
        &mut self,
        uffd: &Uffd,
        dst: u64,
        src: u64,
        len: u64,
        mut copy: impl FnMut(u64, u64),
    ) -> (u64, bool) {
        let mut pos = 0u64;
        let mut moved = 0u64;
        let mut retries = 0u32;
        while pos < len {
            // The test hook: stop the move just before the next refused page.
            let mut end = len;
            if let Some(n) = self.refuse_every {
                let page = self.pages_seen + pos / PAGE_SIZE;
                let next_refused = page.div_ceil(n) * n;
                let at = (next_refused - self.pages_seen) * PAGE_SIZE;
                if at == pos {
                    copy(pos, PAGE_SIZE);
                    pos += PAGE_SIZE;
                    continue;
                }
                end = end.min(at);
            }
            let p = uffd.move_pages(dst + pos, src + pos, end - pos);
            moved += p.done;
            pos += p.done;
            let Some(err) = p.error else {
                retries = 0;
                continue;
            };
            match err.raw_os_error() {
                Some(libc::EAGAIN) if retries < EAGAIN_RETRIES => retries += 1,
                Some(libc::EAGAIN | libc::EBUSY | libc::EEXIST | libc::ENOENT) => {
                    retries = 0;
                    log::debug!("UFFDIO_MOVE refused a page at {:#x}: {err}", src + pos);
                    copy(pos, PAGE_SIZE);
                    pos += PAGE_SIZE;
                }
                _ => {
                    log::warn!("UFFDIO_MOVE: {err}; copying instead");
                    copy(pos, len - pos);
                    self.pages_seen += len / PAGE_SIZE;
                    return (moved, true);
                }
            }
        }
        self.pages_seen += len / PAGE_SIZE;
        (moved, false)
    }
}
