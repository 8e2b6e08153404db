//! The pvgpu commands: decoding a request, checking every guest value, acting on objects, VRAM
//! and guest pages, and encoding the response. One request in, one response out; bad
//! requests get an error response and change nothing.

use vm_memory::{GuestMemory, Permissions};

use pvgpu_abi::protocol::{self as p, CtrlHdr, MemEntry, Wire};

use crate::backend::{MemoryBackend, MoveLock, HUGE_PAGE};
use crate::backing_index::BackingIndex;
use crate::display::{Display, DisplayError, DisplayMode};
use crate::guest_ram::{Extent, GuestRamError, GuestRamPunch, RamRanges};
use crate::job::{Env, Job, Work};
use crate::object::{ObjectError, ObjectTable, Op, Placement};
use crate::page_mover::{PageMover, ZeroCopy};
use crate::stats::DeviceStats;
use crate::vram::{guest_slices, Vram, VramError};
use crate::vram_alloc::{AllocError, VramAllocator};

/// Why a command failed; each maps to one response type.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request is shorter than its command needs.
    #[error("request of {got} bytes is too short for {cmd:#x} (needs {need})")]
    BadRequest {
        /// Command type.
        cmd: u32,
        /// Bytes needed.
        need: usize,
        /// Bytes received.
        got: usize,
    },
    /// The type is not a pvgpu command.
    #[error("unknown command type {0:#x}")]
    UnknownCommand(u32),
    /// The driver did not negotiate the pvgpu feature.
    #[error("the pvgpu feature was not negotiated")]
    NotNegotiated,
    /// A field is out of range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(&'static str),
    /// Object id, state or range.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// A bad page list.
    #[error("bad backing: {0}")]
    Backing(#[from] GuestRamError),
    /// A page list names pages that already back a live object (or itself, twice).
    #[error("pages {addr:#x}+{len:#x} already back object {owner}")]
    SharedBacking {
        /// Start of the offending entry.
        addr: u64,
        /// Its length.
        len: u64,
        /// The object those pages back.
        owner: u32,
    },
    /// Not enough VRAM.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// A VRAM or guest-memory access failed.
    #[error(transparent)]
    Vram(#[from] VramError),
    /// Punching guest RAM failed.
    #[error("punching guest RAM failed: {0}")]
    Punch(std::io::Error),
    /// A 2D or cursor command's own check failed.
    #[error(transparent)]
    Display(#[from] DisplayError),
}

impl CommandError {
    /// The response type the guest sees.
    pub fn response_type(&self) -> u32 {
        match self {
            CommandError::BadRequest { .. } => p::RESP_ERR_BAD_REQUEST,
            CommandError::UnknownCommand(_) => p::RESP_ERR_UNKNOWN_COMMAND,
            CommandError::NotNegotiated => p::RESP_ERR_NOT_NEGOTIATED,
            CommandError::InvalidParameter(_) => p::RESP_ERR_INVALID_PARAMETER,
            CommandError::Object(e) => match e {
                ObjectError::NoSuchObject(_) | ObjectError::ZeroId => p::RESP_ERR_INVALID_OBJECT_ID,
                ObjectError::Exists(_) => p::RESP_ERR_OBJECT_EXISTS,
                ObjectError::TooMany(_) => p::RESP_ERR_TOO_MANY_OBJECTS,
                ObjectError::InvalidState { .. } => p::RESP_ERR_INVALID_STATE,
                ObjectError::OutOfRange { .. } => p::RESP_ERR_OUT_OF_RANGE,
            },
            CommandError::Backing(_) | CommandError::SharedBacking { .. } => {
                p::RESP_ERR_BAD_BACKING
            }
            CommandError::Alloc(AllocError::OutOfVram { .. }) => p::RESP_ERR_OUT_OF_MEMORY,
            CommandError::Alloc(_) | CommandError::Vram(_) | CommandError::Punch(_) => {
                p::RESP_ERR_UNSPEC
            }
            CommandError::Display(e) => e.response_type(),
        }
    }
}

/// What the device model is configured with.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// VRAM size in bytes (page multiple, at most `layout::VRAM_MAX`).
    pub vram_size: u64,
    /// Which guest-physical ranges are RAM (backing pages must lie inside).
    pub ram: RamRanges,
    /// Most live objects (at most `protocol::MAX_OBJECTS`).
    pub max_objects: u32,
    /// Most bytes of data work (every command that copies, fills, checksums or moves data)
    /// between two looks at the queue's budget ([`crate::job::SLICE_BYTES`]; smaller only in
    /// tests and the fuzzer; rounded up to whole pages).
    pub slice_bytes: u64,
    /// The host memory of VRAM (guest RAM, made by the VMM, must be of the same kind for
    /// pages to move between them).
    pub backend: MemoryBackend,
    /// Whether MIGRATE_CLEAN and EVICT move pages (a test hook can make them refuse some).
    pub zero_copy: ZeroCopy,
    /// The scanout's mode (GET_DISPLAY_INFO, EDID).
    pub display: DisplayMode,
}

/// The object cap for a configuration: one object per 4 KiB page of guest RAM plus VRAM (as
/// many objects as could all hold data at once), at most `protocol::MAX_OBJECTS`. Each live
/// object costs about 130 bytes of host bookkeeping, so a 16 MiB guest with 2 MiB of VRAM
/// gets 4,608 objects (0.6 MiB) instead of 262,144 (33 MiB).
pub fn object_cap(ram_size: u64, vram_size: u64) -> u32 {
    let pages = ram_size.saturating_add(vram_size) / p::PAGE_SIZE;
    u32::try_from(pages)
        .unwrap_or(u32::MAX)
        .clamp(1, p::MAX_OBJECTS)
}

impl DeviceConfig {
    /// The pvgpu layout: RAM is `[0, ram_size)`; the object cap is [`object_cap`].
    pub fn new(ram_size: u64, vram_size: u64) -> Result<Self, GuestRamError> {
        Ok(DeviceConfig {
            vram_size,
            ram: RamRanges::from_size(ram_size)?,
            max_objects: object_cap(ram_size, vram_size),
            slice_bytes: crate::job::SLICE_BYTES,
            backend: MemoryBackend::Shared,
            zero_copy: ZeroCopy::Auto,
            display: DisplayMode::default(),
        })
    }

    /// The same, with VRAM in `backend`'s memory.
    pub fn with_backend(self, backend: MemoryBackend) -> Self {
        DeviceConfig { backend, ..self }
    }
}

/// What a checked command still has to do once its data work (a [`Job`]) is finished.
#[derive(Debug)]
pub(crate) enum Commit {
    /// Answer OK_NODATA.
    Ok,
    /// Answer OK_CHECKSUM with the job's crc.
    Checksum,
    /// The object's data is in VRAM at `off`.
    Migrate { id: u32, off: u64 },
    /// The object's data is in VRAM at `off` (moved or copied, see the job's counts); its
    /// backing is discarded as by CLEAN. `started`: when the command started.
    MigrateClean {
        id: u32,
        off: u64,
        started: std::time::Instant,
    },
    /// The object's data is back in guest pages (`backing`, if new ones were given).
    Evict {
        id: u32,
        off: u64,
        backing: Option<Vec<Extent>>,
    },
    /// READ (`to_vram` false) or WRITE is done: count the bytes, answer OK_NODATA.
    Transfer { to_vram: bool },
    /// TRANSFER_TO_HOST_2D is done: count the bytes, answer virtio-gpu's OK_NODATA.
    ToHost2d,
}

/// A command whose data work is under way.
#[derive(Debug)]
struct Running {
    hdr: CtrlHdr,
    job: Job,
    commit: Commit,
}

/// What a checked command gives: its response now, or data work first.
pub(crate) enum Outcome {
    Reply(Vec<u8>),
    Work(Job, Commit),
}

/// The command engine: objects, VRAM and counters.
pub struct CommandEngine {
    pub(crate) vram: Vram,
    pub(crate) alloc: VramAllocator,
    pub(crate) objects: ObjectTable,
    pub(crate) ram: RamRanges,
    punch: Box<dyn GuestRamPunch + Send>,
    /// Moves pages between guest RAM and VRAM (MIGRATE_CLEAN, EVICT into new pages).
    mover: PageMover,
    /// The backing pages of every live object, to refuse lists that would share them.
    pub(crate) backing: BackingIndex,
    pub(crate) stats: DeviceStats,
    pub(crate) tick: u64,
    enabled: bool,
    /// The command whose data work is under way (at most one: the queue is served in order).
    running: Option<Running>,
    slice_bytes: u64,
    /// The scanout and cursor (2D commands, `display.rs`).
    pub(crate) display: Display,
}

impl std::fmt::Debug for CommandEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandEngine")
            .field("vram", &self.vram)
            .field("objects", &self.objects.len())
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// MIGRATE's and MIGRATE_CLEAN's answer: the object's VRAM offset.
fn migrated(hdr: &CtrlHdr, vram_offset: u64) -> Vec<u8> {
    p::RespMigrate {
        hdr: hdr.response(p::RESP_OK_MIGRATE),
        vram_offset,
    }
    .as_bytes()
    .to_vec()
}

pub(crate) fn need<T: Wire>(cmd: u32, req: &[u8]) -> Result<T, CommandError> {
    T::read_from(req).ok_or(CommandError::BadRequest {
        cmd,
        need: std::mem::size_of::<T>(),
        got: req.len(),
    })
}

/// The `nr` entries after the fixed part `T` of a request.
pub(crate) fn entries<T: Wire>(
    cmd: u32,
    req: &[u8],
    nr: u32,
) -> Result<Vec<MemEntry>, CommandError> {
    if nr > p::MAX_SG_ENTRIES {
        return Err(CommandError::InvalidParameter("nr_entries"));
    }
    let head = std::mem::size_of::<T>();
    let esz = std::mem::size_of::<MemEntry>();
    let want = head + nr as usize * esz;
    if req.len() < want {
        return Err(CommandError::BadRequest {
            cmd,
            need: want,
            got: req.len(),
        });
    }
    Ok(req[head..want]
        .chunks_exact(esz)
        .filter_map(MemEntry::read_from)
        .collect())
}

impl CommandEngine {
    /// A device with fresh VRAM; `punch` frees guest RAM for CLEAN.
    pub fn new(
        config: DeviceConfig,
        punch: Box<dyn GuestRamPunch + Send>,
    ) -> Result<Self, VramError> {
        let vram = Vram::with_backend(config.backend, config.vram_size)?;
        let stats = DeviceStats {
            vram_size: vram.size(),
            ..DeviceStats::default()
        };
        Ok(CommandEngine {
            alloc: VramAllocator::new(vram.size()),
            vram,
            objects: ObjectTable::new(config.max_objects.min(p::MAX_OBJECTS)),
            ram: config.ram,
            punch,
            mover: PageMover::new(config.backend, config.zero_copy),
            backing: BackingIndex::default(),
            stats,
            tick: 0,
            enabled: true,
            running: None,
            // Whole pages: slices that move or discard pages cut only between pages.
            slice_bytes: config
                .slice_bytes
                .max(1)
                .checked_next_multiple_of(p::PAGE_SIZE)
                .unwrap_or(crate::job::SLICE_BYTES),
            display: Display::new(config.display),
        })
    }

    /// Which guest-physical ranges are RAM from now on (a vhost-user backend learns them from
    /// the frontend's memory table). Backing pages already recorded are not re-checked, so
    /// call it on a device without objects (after [`Self::reset`]).
    pub fn set_ram(&mut self, ram: RamRanges) {
        self.ram = ram;
    }

    /// Whether pvgpu commands are accepted (the driver negotiated the feature).
    pub fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }

    /// VRAM.
    pub fn vram(&self) -> &Vram {
        &self.vram
    }

    /// The lock held while pages move between guest RAM and VRAM: hold it while measuring
    /// both, and no page is counted twice (or not at all).
    pub fn move_lock(&self) -> MoveLock {
        self.mover.move_lock()
    }

    /// Whether MIGRATE_CLEAN and EVICT can move pages (otherwise they copy).
    pub fn can_move_pages(&self) -> bool {
        self.mover.can_move()
    }

    /// The objects.
    pub fn objects(&self) -> &ObjectTable {
        &self.objects
    }

    /// The counters.
    pub fn stats(&self) -> &DeviceStats {
        &self.stats
    }

    /// Counters that the queue layer keeps.
    pub fn stats_mut(&mut self) -> &mut DeviceStats {
        &mut self.stats
    }

    /// Destroys every object and frees all VRAM (device reset). Guest pages are untouched.
    /// A command under way is dropped unanswered.
    pub fn reset(&mut self) {
        self.cancel();
        self.backing.clear();
        for o in self.objects.drain() {
            if let Some(off) = o.vram_offset {
                self.free_vram(off, o.size);
            }
        }
        self.stats.set_objects(0);
        self.display.reset();
    }

    /// Handles one request to the end and returns the response bytes.
    pub fn handle<M: GuestMemory + ?Sized>(&mut self, mem: &M, req: &[u8]) -> Vec<u8> {
        if let Some(resp) = self.start(mem, req) {
            return resp;
        }
        loop {
            let mut budget = u64::MAX;
            if let Some(resp) = self.resume(mem, &mut budget) {
                return resp;
            }
        }
    }

    /// Checks one request and acts on it. Returns the response, or `None` when the command
    /// has data work to do first: then call [`Self::resume`] until it answers (no other
    /// request may start meanwhile).
    pub fn start<M: GuestMemory + ?Sized>(&mut self, mem: &M, req: &[u8]) -> Option<Vec<u8>> {
        self.tick += 1;
        let Some(hdr) = CtrlHdr::read_from(req) else {
            self.stats.count_command("short", true);
            return Some(CtrlHdr::new(p::RESP_ERR_BAD_REQUEST).as_bytes().to_vec());
        };
        // virtio-gpu's own commands are for every driver; the extension's need bit 20.
        let result = if p::is_virtio_gpu_command(hdr.type_) {
            self.dispatch_2d(&hdr, req)
        } else if self.enabled {
            self.dispatch(mem, &hdr, req)
        } else {
            Err(CommandError::NotNegotiated)
        };
        match result {
            Ok(Outcome::Reply(resp)) => Some(self.answered(&hdr, Ok(resp))),
            Ok(Outcome::Work(job, commit)) => {
                self.running = Some(Running { hdr, job, commit });
                None
            }
            Err(e) => Some(self.answered(&hdr, Err(e))),
        }
    }

    /// Bytes of data work in one slice.
    pub fn slice_bytes(&self) -> u64 {
        self.slice_bytes
    }

    /// Whether a command's data work is under way.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Continues the command under way with at most about `budget` bytes of data work
    /// (at least one slice), and returns its response once it is finished. `None` with no
    /// command under way too.
    pub fn resume<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        budget: &mut u64,
    ) -> Option<Vec<u8>> {
        let mut r = self.running.take()?;
        let mut env = Env {
            vram: &self.vram,
            mem,
            mover: &mut self.mover,
            punch: &*self.punch,
        };
        let result = match r.job.run(&mut env, self.slice_bytes, budget) {
            Ok(false) => {
                self.running = Some(r);
                return None;
            }
            Ok(true) => self.commit(&r.hdr, &r.job, r.commit),
            Err(e) => {
                self.abandon(&r.commit);
                Err(e.into())
            }
        };
        Some(self.answered(&r.hdr, result))
    }

    /// Drops the command under way, if any, unanswered (a device reset; a vhost-user frontend
    /// stopping the control ring).
    pub fn cancel(&mut self) {
        if let Some(r) = self.running.take() {
            self.abandon(&r.commit);
        }
    }

    /// Gives back what a command that will not commit holds: the VRAM a MIGRATE or
    /// MIGRATE_CLEAN allocated for the object, not yet the object's. (Pages a MIGRATE_CLEAN
    /// already moved there go with it: the guest was giving them up, and after a reset the
    /// object is gone. A move cannot fail half way otherwise: its pages were checked first.)
    fn abandon(&mut self, commit: &Commit) {
        if let Commit::Migrate { id, off } | Commit::MigrateClean { id, off, .. } = *commit {
            if let Ok(o) = self.objects.get(id) {
                let size = o.size;
                self.free_vram(off, size);
            }
        }
    }

    /// Counts a finished command and encodes its answer.
    fn answered(&mut self, hdr: &CtrlHdr, result: Result<Vec<u8>, CommandError>) -> Vec<u8> {
        self.stats
            .count_command(p::command_name(hdr.type_), result.is_err());
        self.stats.set_objects(self.objects.len() as u64);
        self.stats.set_vram_used(self.alloc.used());
        match result {
            Ok(resp) => resp,
            Err(e) if p::is_virtio_gpu_command(hdr.type_) => {
                hdr.response(e.response_type_2d()).as_bytes().to_vec()
            }
            Err(e) => hdr.response(e.response_type()).as_bytes().to_vec(),
        }
    }

    /// Finishes a command whose data work is done.
    fn commit(
        &mut self,
        hdr: &CtrlHdr,
        job: &Job,
        commit: Commit,
    ) -> Result<Vec<u8>, CommandError> {
        match commit {
            Commit::Ok => Ok(hdr.response(p::RESP_OK_NODATA).as_bytes().to_vec()),
            Commit::Checksum => Ok(p::RespChecksum {
                hdr: hdr.response(p::RESP_OK_CHECKSUM),
                crc32c: job.crc(),
                padding: 0,
            }
            .as_bytes()
            .to_vec()),
            Commit::Migrate { id, off } => {
                self.place_in_vram(id, off)?;
                Ok(migrated(hdr, off))
            }
            Commit::MigrateClean { id, off, started } => {
                self.place_in_vram(id, off)?;
                let c = job.moves();
                self.stats.bytes_moved += c.moved;
                self.stats.bytes_move_copied += c.copied;
                // Every page moved: the guest range is empty already, nothing to punch.
                self.clean(id, c.copied == 0)?;
                self.stats.migrate_clean_ns +=
                    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                Ok(migrated(hdr, off))
            }
            Commit::Evict { id, off, backing } => {
                let o = self.objects.touch(id, self.tick)?;
                if let Some(n) = backing {
                    self.backing.remove(o.backing.as_deref().unwrap_or(&[]));
                    self.backing.insert(id, &n);
                    o.backing = Some(n);
                }
                o.placement = Placement::System;
                o.vram_offset = None;
                let size = o.size;
                self.stats.bytes_evicted += size;
                // Moves and copies into new pages (none into the current ones).
                let c = job.moves();
                self.stats.bytes_moved += c.moved;
                self.stats.bytes_move_copied += c.copied;
                self.free_vram(off, size);
                Ok(hdr.response(p::RESP_OK_NODATA).as_bytes().to_vec())
            }
            Commit::Transfer { to_vram } => {
                if to_vram {
                    self.stats.bytes_written += job.len();
                } else {
                    self.stats.bytes_read += job.len();
                }
                Ok(hdr.response(p::RESP_OK_NODATA).as_bytes().to_vec())
            }
            Commit::ToHost2d => {
                self.stats.bytes_transferred += job.len();
                Ok(hdr.response(p::RESP_OK_NODATA_2D).as_bytes().to_vec())
            }
        }
    }

    /// The object's data is in VRAM at `off` now (MIGRATE, MIGRATE_CLEAN).
    fn place_in_vram(&mut self, id: u32, off: u64) -> Result<(), CommandError> {
        let o = self.objects.touch(id, self.tick)?;
        o.placement = Placement::Vram;
        o.vram_offset = Some(off);
        self.stats.bytes_migrated += o.size;
        Ok(())
    }

    fn dispatch<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        hdr: &CtrlHdr,
        req: &[u8],
    ) -> Result<Outcome, CommandError> {
        let cmd = hdr.type_;
        let ok = || Outcome::Reply(hdr.response(p::RESP_OK_NODATA).as_bytes().to_vec());
        match cmd {
            p::CMD_NOP => Ok(ok()),
            p::CMD_GET_INFO => Ok(Outcome::Reply(self.info(hdr).as_bytes().to_vec())),
            p::CMD_STATS => Ok(Outcome::Reply(self.wire_stats(hdr).as_bytes().to_vec())),
            p::CMD_CREATE => {
                let r: p::ReqCreate = need(cmd, req)?;
                self.create(r.object_id, r.flags, r.size)?;
                Ok(ok())
            }
            p::CMD_DESTROY => {
                let r: p::ReqObject = need(cmd, req)?;
                self.destroy(r.object_id)?;
                Ok(ok())
            }
            p::CMD_ATTACH_BACKING => {
                let r: p::ReqBacking = need(cmd, req)?;
                let e = entries::<p::ReqBacking>(cmd, req, r.nr_entries)?;
                self.attach(r.object_id, &e)?;
                Ok(ok())
            }
            p::CMD_MIGRATE => {
                let r: p::ReqObject = need(cmd, req)?;
                self.migrate(r.object_id)
            }
            p::CMD_MIGRATE_CLEAN => {
                let r: p::ReqObject = need(cmd, req)?;
                self.migrate_clean(mem, r.object_id)
            }
            p::CMD_CLEAN => {
                let r: p::ReqObject = need(cmd, req)?;
                self.clean(r.object_id, false)?;
                Ok(ok())
            }
            p::CMD_EVICT => {
                let r: p::ReqBacking = need(cmd, req)?;
                let e = entries::<p::ReqBacking>(cmd, req, r.nr_entries)?;
                self.evict(mem, r.object_id, &e)
            }
            p::CMD_FILL => {
                let r: p::ReqFill = need(cmd, req)?;
                self.fill(r.object_id, r.offset, r.length, r.value)
            }
            p::CMD_COPY => {
                let r: p::ReqCopy = need(cmd, req)?;
                self.copy(r.dst_id, r.dst_offset, r.src_id, r.src_offset, r.length)
            }
            p::CMD_CHECKSUM => {
                let r: p::ReqRange = need(cmd, req)?;
                self.checksum(r.object_id, r.offset, r.length)
            }
            p::CMD_READ | p::CMD_WRITE => {
                let r: p::ReqTransfer = need(cmd, req)?;
                let e = entries::<p::ReqTransfer>(cmd, req, r.nr_entries)?;
                self.transfer(cmd == p::CMD_WRITE, r.object_id, r.offset, &e)
            }
            other => Err(CommandError::UnknownCommand(other)),
        }
    }

    fn info(&self, hdr: &CtrlHdr) -> p::RespInfo {
        p::RespInfo {
            hdr: hdr.response(p::RESP_OK_INFO),
            protocol_version: p::PROTOCOL_VERSION,
            flags: 0,
            vram_size: self.vram.size(),
            max_object_size: self.vram.size(),
            max_objects: self.objects.limit(),
            max_sg_entries: p::MAX_SG_ENTRIES,
            page_size: p::PAGE_SIZE as u32,
            padding: 0,
        }
    }

    fn wire_stats(&self, hdr: &CtrlHdr) -> p::RespStats {
        let s = &self.stats;
        p::RespStats {
            hdr: hdr.response(p::RESP_OK_STATS),
            objects_live: self.objects.len() as u64,
            objects_peak: s.objects_peak,
            bytes_migrated: s.bytes_migrated,
            bytes_cleaned: s.bytes_cleaned,
            bytes_evicted: s.bytes_evicted,
            vram_used: self.alloc.used(),
            vram_peak: s.vram_peak,
            vram_size: self.vram.size(),
            // This request counts itself.
            commands: s.commands + 1,
            errors: s.errors,
        }
    }

    fn create(&mut self, id: u32, flags: u32, size: u64) -> Result<(), CommandError> {
        if flags != 0 {
            return Err(CommandError::InvalidParameter("flags"));
        }
        if size == 0 || !size.is_multiple_of(p::PAGE_SIZE) || size > self.vram.size() {
            return Err(CommandError::InvalidParameter("size"));
        }
        self.objects.create(id, size, self.tick)?;
        self.stats.objects_created += 1;
        Ok(())
    }

    /// DESTROY and RESOURCE_UNREF: any object, 2D resource or not.
    pub(crate) fn destroy(&mut self, id: u32) -> Result<(), CommandError> {
        let o = self.objects.remove(id)?;
        self.display.forget(id);
        self.backing.remove(o.backing.as_deref().unwrap_or(&[]));
        if let Some(off) = o.vram_offset {
            self.free_vram(off, o.size);
        }
        Ok(())
    }

    fn attach(&mut self, id: u32, entries: &[MemEntry]) -> Result<(), CommandError> {
        let o = self.objects.touch(id, self.tick)?;
        o.check(Op::Attach)?;
        let extents = self.ram.check_entries(entries, o.size)?;
        self.check_unshared(id, &extents)?;
        self.backing.insert(id, &extents);
        let o = self.objects.touch(id, self.tick)?;
        o.backing = Some(extents);
        Ok(())
    }

    /// Allocates the object's VRAM; the job copies its pages there.
    fn migrate(&mut self, id: u32) -> Result<Outcome, CommandError> {
        let o = self.objects.touch(id, self.tick)?;
        o.check(Op::Migrate)?;
        let size = o.size;
        let extents = o.backing.clone().unwrap_or_default();
        let off = self.alloc.alloc(size, p::PAGE_SIZE)?;
        let job = Job::new(Work::ToVram { extents, vram: off }, size);
        Ok(Outcome::Work(job, Commit::Migrate { id, off }))
    }

    /// MIGRATE and CLEAN in one: the guest pages move into VRAM where they can (the source
    /// then holds no memory), the rest is copied, a slice at a time (the job); the commit then
    /// discards the backing as CLEAN does.
    fn migrate_clean<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        id: u32,
    ) -> Result<Outcome, CommandError> {
        let o = self.objects.touch(id, self.tick)?;
        o.check(Op::Migrate)?;
        let size = o.size;
        let extents = o.backing.clone().unwrap_or_default();
        let moving = self.mover.can_move();
        if moving {
            // Every page is checked now, so no slice fails after earlier ones moved pages
            // away from the guest.
            guest_slices(mem, &extents, Permissions::Read)?;
        }
        // Huge-page-aligned VRAM lets whole 2 MiB pages move.
        let align = if moving && size.is_multiple_of(HUGE_PAGE) {
            HUGE_PAGE
        } else {
            p::PAGE_SIZE
        };
        let off = self.alloc.alloc(size, align)?;
        let job = Job::new(Work::MoveToVram { extents, vram: off }, size);
        let commit = Commit::MigrateClean {
            id,
            off,
            started: std::time::Instant::now(),
        };
        Ok(Outcome::Work(job, commit))
    }

    /// VRAM holds the object's data: forget its backing and punch the guest pages, unless
    /// `moved_away` (MIGRATE_CLEAN moved every page out, so there is nothing left to punch:
    /// discarding the empty range cost about 10 µs per 64 MiB here, a sixth of moving it).
    fn clean(&mut self, id: u32, moved_away: bool) -> Result<(), CommandError> {
        let o = self.objects.touch(id, self.tick)?;
        o.check(Op::Clean)?;
        // The object is CLEANED whatever happens below: VRAM holds the data.
        let backing = o.backing.take().unwrap_or_default();
        o.placement = Placement::Cleaned;
        self.backing.remove(&backing);
        // The object is CLEANED now: a range the host fails to punch stays allocated (and is
        // counted), but the guest's view of the object is right either way, so CLEAN succeeds.
        for x in &backing {
            // Only the whole pages inside an extent (a 2D resource's backing may start or
            // end inside a page that holds other guest data).
            let start = x.gpa.next_multiple_of(p::PAGE_SIZE);
            let end = (x.gpa + x.len) / p::PAGE_SIZE * p::PAGE_SIZE;
            if end <= start {
                continue;
            }
            // Re-check: only guest RAM is ever punched.
            let r = self
                .ram
                .check(start, end - start)
                .map_err(CommandError::Backing)
                .and_then(|x| match moved_away {
                    true => Ok(()),
                    false => self.punch.punch(x.gpa, x.len).map_err(CommandError::Punch),
                });
            match r {
                Ok(()) => self.stats.bytes_cleaned += end - start,
                Err(e) => {
                    log::warn!("CLEAN of object {id}: {e}");
                    self.stats.punch_failures += 1;
                }
            }
        }
        Ok(())
    }

    fn evict<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        id: u32,
        entries: &[MemEntry],
    ) -> Result<Outcome, CommandError> {
        let o = self.objects.touch(id, self.tick)?;
        o.check(Op::Evict)?;
        let new_backing: Option<Vec<Extent>> = if entries.is_empty() {
            None
        } else {
            let size = o.size;
            let n = self.ram.check_entries(entries, size)?;
            self.check_unshared(id, &n)?;
            Some(n)
        };
        let o = self.objects.touch(id, self.tick)?;
        let off = o.vram_offset.unwrap_or_default();
        let size = o.size;
        let work = match (&new_backing, &o.backing) {
            // EVICT overwrites new pages whole: VRAM's pages can move there.
            (Some(n), _) => {
                if self.mover.can_move() {
                    // Checked first, so no slice fails after earlier ones moved pages out
                    // of the object's VRAM.
                    guest_slices(mem, n, Permissions::Write)?;
                }
                Work::MoveToGuest {
                    extents: n.clone(),
                    vram: off,
                }
            }
            (None, Some(old)) => Work::ToGuest {
                extents: old.clone(),
                vram: off,
            },
            (None, None) => return Err(CommandError::InvalidParameter("nr_entries")),
        };
        let commit = Commit::Evict {
            id,
            off,
            backing: new_backing,
        };
        Ok(Outcome::Work(Job::new(work, size), commit))
    }

    /// READ (`to_vram` false) or WRITE: copies between the guest pages `entries` and the
    /// object's VRAM data at `offset`, a slice at a time (the job).
    fn transfer(
        &mut self,
        to_vram: bool,
        id: u32,
        offset: u64,
        entries: &[MemEntry],
    ) -> Result<Outcome, CommandError> {
        let o = self.objects.touch(id, self.tick)?;
        o.check(Op::Transfer)?;
        if !offset.is_multiple_of(p::PAGE_SIZE) {
            return Err(CommandError::InvalidParameter("offset"));
        }
        if entries.is_empty() {
            return Err(CommandError::InvalidParameter("nr_entries"));
        }
        let (extents, len) = self.ram.check_list(entries)?;
        o.check_range(offset, len)?;
        let at = o.vram_offset.unwrap_or_default() + offset;
        let work = if to_vram {
            Work::ToVram { extents, vram: at }
        } else {
            Work::ToGuest { extents, vram: at }
        };
        Ok(Outcome::Work(
            Job::new(work, len),
            Commit::Transfer { to_vram },
        ))
    }

    fn fill(
        &mut self,
        id: u32,
        offset: u64,
        len: u64,
        value: u32,
    ) -> Result<Outcome, CommandError> {
        let value = u8::try_from(value).map_err(|_| CommandError::InvalidParameter("value"))?;
        let o = self.objects.touch(id, self.tick)?;
        o.check(Op::VramData)?;
        o.check_range(offset, len)?;
        let at = o.vram_offset.unwrap_or_default() + offset;
        Ok(Outcome::Work(
            Job::new(Work::Fill { at, value }, len),
            Commit::Ok,
        ))
    }

    fn copy(
        &mut self,
        dst_id: u32,
        dst_off: u64,
        src_id: u32,
        src_off: u64,
        len: u64,
    ) -> Result<Outcome, CommandError> {
        let s = self.objects.touch(src_id, self.tick)?;
        s.check(Op::VramData)?;
        s.check_range(src_off, len)?;
        let src = s.vram_offset.unwrap_or_default() + src_off;
        let d = self.objects.touch(dst_id, self.tick)?;
        d.check(Op::VramData)?;
        d.check_range(dst_off, len)?;
        let dst = d.vram_offset.unwrap_or_default() + dst_off;
        Ok(Outcome::Work(
            Job::new(Work::Copy { src, dst }, len),
            Commit::Ok,
        ))
    }

    fn checksum(&mut self, id: u32, offset: u64, len: u64) -> Result<Outcome, CommandError> {
        let o = self.objects.touch(id, self.tick)?;
        o.check(Op::Read)?;
        o.check_range(offset, len)?;
        let work = match (o.vram_offset, &o.backing) {
            (Some(base), _) => Work::VramChecksum { at: base + offset },
            (None, Some(b)) => Work::GuestChecksum {
                extents: b.clone(),
                offset,
            },
            (None, None) => return Err(CommandError::InvalidParameter("no data")),
        };
        Ok(Outcome::Work(Job::new(work, len), Commit::Checksum))
    }

    /// Refuses a page list that overlaps itself or the backing of another live object: the
    /// device would otherwise copy one object's data over another's pages on EVICT.
    pub(crate) fn check_unshared(&self, id: u32, extents: &[Extent]) -> Result<(), CommandError> {
        match self.backing.conflict(id, extents) {
            None => Ok(()),
            Some(c) => Err(CommandError::SharedBacking {
                addr: c.extent.gpa,
                len: c.extent.len,
                owner: c.owner,
            }),
        }
    }

    pub(crate) fn free_vram(&mut self, off: u64, size: u64) {
        // Both can only fail on a bookkeeping bug; the range came from the allocator.
        if self.alloc.free(off, size).is_err() {
            self.stats.set_vram_used(self.alloc.used());
            return;
        }
        // Discard the free VRAM around the range too, up to its huge pages' edges: a huge
        // page whose other part was freed earlier would otherwise stay resident.
        let (start, end) = match self.alloc.free_range_containing(off) {
            Some((s, l)) => (
                s.max(off - off % HUGE_PAGE),
                (s + l).min((off + size).next_multiple_of(HUGE_PAGE)),
            ),
            None => (off, off + size),
        };
        if self.vram.punch(start, end - start).is_ok() {
            self.stats.vram_bytes_punched += size;
        }
        self.stats.set_vram_used(self.alloc.used());
    }
}
