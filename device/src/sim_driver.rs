//! A minimal in-process virtio driver for tests, benchmarks and fuzzing: guest RAM in host
//! memory of either backend (so freeing can be observed as resident bytes), a device set up through its
//! registers exactly as a guest would, and helpers that build real descriptor chains in guest
//! memory, notify, and read the responses back from the used ring.
//!
//! Guest RAM layout used here: split-queue rings at 64 KiB, request/response scratch from
//! 1 MiB to [`DATA_START`], data pages for objects from [`DATA_START`] up.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use pvgpu_abi::protocol::{self as p, CtrlHdr, MemEntry, Wire};
use pvgpu_abi::request;

use crate::backend::{HostMemory, MemoryBackend};
use crate::commands::DeviceConfig;
use crate::device::{PvgpuDevice, QUEUE_NOTIFY_OFFSET};
use crate::page_mover::ZeroCopy;
use pvgpu_abi::virtio_mmio::{desc, regs, status};

/// Queue size the simulated driver uses.
pub const QSIZE: u16 = 256;
/// Descriptor table address.
pub const DESC_ADDR: u64 = 0x1_0000;
/// Available ring address.
pub const AVAIL_ADDR: u64 = 0x1_1000;
/// Used ring address.
pub const USED_ADDR: u64 = 0x1_2000;
/// Start of the request/response scratch area.
pub const SCRATCH_START: u64 = 0x10_0000;
/// End of the scratch area; object data pages start here.
pub const DATA_START: u64 = 0x50_0000;
/// Room for one response (the largest is GET_EDID's).
const RESP_SLOT: u64 = 0x800;
/// Cursor queue size.
pub const CURSOR_QSIZE: u16 = 16;
/// Cursor queue: descriptor table, available ring, used ring.
pub const CURSOR_DESC_ADDR: u64 = 0x1_3000;
/// Cursor queue available ring.
pub const CURSOR_AVAIL_ADDR: u64 = 0x1_3800;
/// Cursor queue used ring.
pub const CURSOR_USED_ADDR: u64 = 0x1_4000;
/// Where a cursor request (and its optional response) is written.
const CURSOR_SCRATCH: u64 = DATA_START - 0x1000;

/// Where a driver puts one queue's split rings.
#[derive(Debug, Clone, Copy)]
pub struct QueueRings {
    /// Queue size (QUEUE_NUM).
    pub size: u16,
    /// Descriptor table address.
    pub desc: u64,
    /// Available (driver) ring address.
    pub avail: u64,
    /// Used (device) ring address.
    pub used: u64,
}

/// The virtio-mmio driver start-up sequence (virtio 1.2 §3.1.1 and §4.2.3.2) for queue 0,
/// through any 32-bit register writer: reset, ACKNOWLEDGE, DRIVER, the driver's `features`,
/// FEATURES_OK, the queue's size and rings, QUEUE_READY, DRIVER_OK. Every host-side test and
/// tool that plays the driver uses this one sequence.
pub fn start_driver(w32: impl FnMut(u64, u32), features: u64, rings: &QueueRings) {
    start_driver_queues(w32, features, core::slice::from_ref(rings));
}

/// [`start_driver`] for queues 0, 1, ... (`rings[i]` is queue `i`: controlq, cursorq).
pub fn start_driver_queues(mut w32: impl FnMut(u64, u32), features: u64, rings: &[QueueRings]) {
    use status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
    w32(regs::STATUS, 0);
    w32(regs::STATUS, ACKNOWLEDGE);
    w32(regs::STATUS, ACKNOWLEDGE | DRIVER);
    w32(regs::DRIVER_FEATURES_SEL, 0);
    w32(regs::DRIVER_FEATURES, features as u32);
    w32(regs::DRIVER_FEATURES_SEL, 1);
    w32(regs::DRIVER_FEATURES, (features >> 32) as u32);
    w32(regs::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    for (index, rings) in (0u32..).zip(rings) {
        w32(regs::QUEUE_SEL, index);
        w32(regs::QUEUE_NUM, u32::from(rings.size));
        w32(regs::QUEUE_DESC_LOW, rings.desc as u32);
        w32(regs::QUEUE_DESC_HIGH, (rings.desc >> 32) as u32);
        w32(regs::QUEUE_DRIVER_LOW, rings.avail as u32);
        w32(regs::QUEUE_DRIVER_HIGH, (rings.avail >> 32) as u32);
        w32(regs::QUEUE_DEVICE_LOW, rings.used as u32);
        w32(regs::QUEUE_DEVICE_HIGH, (rings.used >> 32) as u32);
        w32(regs::QUEUE_READY, 1);
    }
    w32(regs::QUEUE_SEL, 0);
    w32(regs::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
}

/// The features a pvgpu driver accepts: VERSION_1, EVENT_IDX, EDID and, if `pvgpu`, the
/// memory extension.
pub fn driver_features(pvgpu: bool) -> u64 {
    let ext = if pvgpu {
        1 << p::VIRTIO_GPU_F_PVGPU_MEM
    } else {
        0
    };
    (1 << p::VIRTIO_F_VERSION_1)
        | (1 << p::VIRTIO_RING_F_EVENT_IDX)
        | (1 << p::VIRTIO_GPU_F_EDID)
        | ext
}

/// Errors from the simulated driver (tests unwrap them).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Setting up memory failed.
    #[error("setup: {0}")]
    Setup(String),
    /// The device did not complete what was submitted.
    #[error("device completed {got} of {want} chains")]
    Incomplete {
        /// Completed.
        got: u16,
        /// Submitted.
        want: u16,
    },
    /// Too much for one batch.
    #[error("batch too large")]
    TooLarge,
}

/// One raw descriptor, as the driver writes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDesc {
    /// Buffer address.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// `DESC_F_*`.
    pub flags: u16,
    /// Next descriptor index.
    pub next: u16,
}

/// Writes descriptor `index` of the split-queue descriptor table at `table` (16 bytes, little
/// endian), as a driver does: for tests that build their own tables and rings.
pub fn write_desc_at<M: Bytes<GuestAddress>>(
    mem: &M,
    table: u64,
    index: u64,
    d: RawDesc,
) -> Result<(), M::E> {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&d.addr.to_le_bytes());
    b[8..12].copy_from_slice(&d.len.to_le_bytes());
    b[12..14].copy_from_slice(&d.flags.to_le_bytes());
    b[14..16].copy_from_slice(&d.next.to_le_bytes());
    let at = table.wrapping_add(16u64.wrapping_mul(index));
    mem.write_slice(&b, GuestAddress(at))
}

/// A simulated guest with one pvgpu device.
pub struct SimGuest {
    /// Guest RAM's host memory (also the device's punch target).
    pub ram: Arc<HostMemory>,
    /// Guest memory: a vm-memory region over `ram`.
    pub mem: GuestMemoryMmap,
    /// The device.
    pub dev: PvgpuDevice,
    avail_idx: u16,
    used_seen: u16,
    cursor_avail: u16,
    next_data: u64,
}

impl SimGuest {
    /// A guest with `ram_size` bytes of RAM and a device with `vram_size` bytes of VRAM,
    /// negotiated (with the pvgpu feature) and live.
    pub fn new(ram_size: u64, vram_size: u64) -> Result<Self, SimError> {
        Self::with_features(ram_size, vram_size, true)
    }

    /// As [`Self::new`], choosing whether the driver accepts the pvgpu feature.
    pub fn with_features(ram_size: u64, vram_size: u64, pvgpu: bool) -> Result<Self, SimError> {
        Self::build(
            ram_size,
            vram_size,
            pvgpu,
            MemoryBackend::Shared,
            ZeroCopy::Auto,
            crate::job::SLICE_BYTES,
        )
    }

    /// As [`Self::with_features`], with data work in slices of `slice_bytes` (small slices
    /// leave long commands in flight across bounded steps: tests and the fuzzer).
    pub fn with_slices(
        ram_size: u64,
        vram_size: u64,
        pvgpu: bool,
        slice_bytes: u64,
    ) -> Result<Self, SimError> {
        Self::build(
            ram_size,
            vram_size,
            pvgpu,
            MemoryBackend::Shared,
            ZeroCopy::Auto,
            slice_bytes,
        )
    }

    /// As [`Self::new`], with guest RAM and VRAM in `backend`'s memory and the device's
    /// page moves set to `zero_copy`.
    pub fn with_backend(
        ram_size: u64,
        vram_size: u64,
        backend: MemoryBackend,
        zero_copy: ZeroCopy,
    ) -> Result<Self, SimError> {
        Self::with_backend_and_slices(
            ram_size,
            vram_size,
            backend,
            zero_copy,
            crate::job::SLICE_BYTES,
        )
    }

    /// As [`Self::with_backend`], with data work in slices of `slice_bytes`.
    pub fn with_backend_and_slices(
        ram_size: u64,
        vram_size: u64,
        backend: MemoryBackend,
        zero_copy: ZeroCopy,
        slice_bytes: u64,
    ) -> Result<Self, SimError> {
        Self::build(ram_size, vram_size, true, backend, zero_copy, slice_bytes)
    }

    fn build(
        ram_size: u64,
        vram_size: u64,
        pvgpu: bool,
        backend: MemoryBackend,
        zero_copy: ZeroCopy,
        slice_bytes: u64,
    ) -> Result<Self, SimError> {
        let setup = |e: &dyn std::fmt::Display| SimError::Setup(e.to_string());
        let ram = Arc::new(HostMemory::new(backend, "sim-ram", ram_size).map_err(|e| setup(&e))?);
        let region = GuestRegionMmap::with_arc(ram.region().clone(), GuestAddress(0))
            .ok_or_else(|| SimError::Setup("guest RAM region".into()))?;
        let mem = GuestMemoryMmap::from_regions(vec![region]).map_err(|e| setup(&e))?;
        let config = DeviceConfig {
            zero_copy,
            slice_bytes,
            ..DeviceConfig::new(ram_size, vram_size)
                .map_err(|e| setup(&e))?
                .with_backend(backend)
        };
        let dev = PvgpuDevice::new(config, Box::new(ram.clone())).map_err(|e| setup(&e))?;
        let mut g = SimGuest {
            ram,
            mem,
            dev,
            avail_idx: 0,
            used_seen: 0,
            cursor_avail: 0,
            next_data: DATA_START,
        };
        g.init(pvgpu);
        Ok(g)
    }

    /// Writes a 32-bit register.
    pub fn w32(&mut self, off: u64, v: u32) -> bool {
        self.dev.mmio_write(off, &v.to_le_bytes())
    }

    /// Reads a 32-bit register.
    pub fn r32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.mmio_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn init(&mut self, pvgpu: bool) {
        // Zero the rings first (a reset guest may have left garbage).
        let _ = self
            .mem
            .write_slice(&[0u8; 0x3000], GuestAddress(DESC_ADDR));
        let _ = self
            .mem
            .write_slice(&[0u8; 0x2000], GuestAddress(CURSOR_DESC_ADDR));
        let controlq = QueueRings {
            size: QSIZE,
            desc: DESC_ADDR,
            avail: AVAIL_ADDR,
            used: USED_ADDR,
        };
        let cursorq = QueueRings {
            size: CURSOR_QSIZE,
            desc: CURSOR_DESC_ADDR,
            avail: CURSOR_AVAIL_ADDR,
            used: CURSOR_USED_ADDR,
        };
        start_driver_queues(
            |off, v| _ = self.w32(off, v),
            driver_features(pvgpu),
            &[controlq, cursorq],
        );
        self.avail_idx = 0;
        self.used_seen = 0;
        self.cursor_avail = 0;
    }

    /// Resets the device and sets it up again.
    pub fn reinit(&mut self) {
        self.init(true);
    }

    /// Hands out `pages` fresh, contiguous data pages (never reused).
    pub fn alloc_pages(&mut self, pages: u64) -> u64 {
        let a = self.next_data;
        self.next_data += pages * p::PAGE_SIZE;
        a
    }

    /// Writes a descriptor.
    pub fn write_desc(&self, index: u16, d: RawDesc) {
        let _ = write_desc_at(&self.mem, DESC_ADDR, u64::from(index % QSIZE), d);
    }

    /// Makes the chain starting at descriptor `head` available.
    pub fn push_avail(&mut self, head: u16) {
        let slot = AVAIL_ADDR + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        let _ = self.mem.write_obj(head, GuestAddress(slot));
        self.avail_idx = self.avail_idx.wrapping_add(1);
        let _ = self
            .mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL_ADDR + 2));
    }

    /// Notifies the device (as the ioeventfd would) and returns whether it interrupted.
    pub fn notify(&mut self) -> bool {
        // EVENT_IDX: ask for an interrupt once the device passes what we have seen.
        let used_event = AVAIL_ADDR + 4 + 2 * u64::from(QSIZE);
        let _ = self.mem.write_obj(self.used_seen, GuestAddress(used_event));
        if self.w32(QUEUE_NOTIFY_OFFSET, 0) {
            self.dev.process_queue(&self.mem).unwrap_or(false)
        } else {
            false
        }
    }

    /// Used ring entries the device added since the last call: (head, len).
    pub fn take_used(&mut self) -> Vec<(u32, u32)> {
        let idx: u16 = self.mem.read_obj(GuestAddress(USED_ADDR + 2)).unwrap_or(0);
        let mut out = Vec::new();
        while self.used_seen != idx {
            let e = USED_ADDR + 4 + 8 * u64::from(self.used_seen % QSIZE);
            let id: u32 = self.mem.read_obj(GuestAddress(e)).unwrap_or(u32::MAX);
            let len: u32 = self.mem.read_obj(GuestAddress(e + 4)).unwrap_or(u32::MAX);
            out.push((id, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }

    /// Submits a batch of requests (each a two-descriptor chain: request, then a response
    /// buffer), notifies once, and returns each response.
    pub fn submit(&mut self, reqs: &[&[u8]]) -> Result<Vec<Vec<u8>>, SimError> {
        let slots = self.post(reqs)?;
        self.notify();
        self.collect(&slots)
    }

    /// Makes a batch of requests available (each a two-descriptor chain: request, then a
    /// response buffer) without notifying, and returns where each response goes: for a test
    /// that drives the device itself (`dev.process_queue_step`), then calls [`Self::collect`].
    pub fn post(&mut self, reqs: &[&[u8]]) -> Result<Vec<u64>, SimError> {
        if reqs.len() * 2 > usize::from(QSIZE) {
            return Err(SimError::TooLarge);
        }
        let mut at = SCRATCH_START;
        let mut slots = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            let resp = at;
            let req = at + RESP_SLOT;
            at = (req + r.len() as u64 + 63) & !63;
            if at > DATA_START {
                return Err(SimError::TooLarge);
            }
            let _ = self
                .mem
                .write_slice(&[0u8; RESP_SLOT as usize], GuestAddress(resp));
            let _ = self.mem.write_slice(r, GuestAddress(req));
            let d = (2 * i) as u16;
            self.write_desc(
                d,
                RawDesc {
                    addr: req,
                    len: r.len() as u32,
                    flags: desc::F_NEXT,
                    next: d + 1,
                },
            );
            self.write_desc(
                d + 1,
                RawDesc {
                    addr: resp,
                    len: RESP_SLOT as u32,
                    flags: desc::F_WRITE,
                    next: 0,
                },
            );
            slots.push(resp);
        }
        for i in 0..reqs.len() {
            self.push_avail((2 * i) as u16);
        }
        Ok(slots)
    }

    /// The responses of the requests [`Self::post`] made available (`slots`, as it returned
    /// them), once the device has used them all.
    pub fn collect(&mut self, slots: &[u64]) -> Result<Vec<Vec<u8>>, SimError> {
        let used = self.take_used();
        if used.len() != slots.len() {
            return Err(SimError::Incomplete {
                got: used.len() as u16,
                want: slots.len() as u16,
            });
        }
        let mut out = vec![Vec::new(); slots.len()];
        for (id, len) in used {
            let i = (id / 2) as usize;
            if let (Some(slot), Some(o)) = (slots.get(i), out.get_mut(i)) {
                let mut b = vec![0u8; (len as usize).min(RESP_SLOT as usize)];
                let _ = self.mem.read_slice(&mut b, GuestAddress(*slot));
                *o = b;
            }
        }
        Ok(out)
    }

    /// Submits one request; returns its response.
    pub fn cmd(&mut self, req: &[u8]) -> Vec<u8> {
        self.submit(&[req])
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default()
    }

    /// Submits one request; returns the response type (0 if there was no response).
    pub fn cmd_type(&mut self, req: &[u8]) -> u32 {
        CtrlHdr::read_from(&self.cmd(req)).map_or(0, |h| h.type_)
    }

    /// CREATE.
    pub fn create(&mut self, id: u32, size: u64) -> u32 {
        self.cmd_type(&request::create(id, 0, size))
    }

    /// A command naming one object (DESTROY, MIGRATE, CLEAN).
    pub fn obj_cmd(&mut self, cmd: u32, id: u32) -> u32 {
        self.cmd_type(&request::object(cmd, id))
    }

    /// ATTACH_BACKING or EVICT with a page list.
    pub fn backing_cmd(&mut self, cmd: u32, id: u32, entries: &[MemEntry]) -> u32 {
        self.cmd_type(&backing_request(cmd, id, entries))
    }

    /// READ or WRITE between the object's VRAM at `offset` and the pages `entries`.
    pub fn transfer(&mut self, cmd: u32, id: u32, offset: u64, entries: &[MemEntry]) -> u32 {
        self.cmd_type(&request::transfer(
            cmd,
            id,
            offset,
            entries.len() as u32,
            entries,
        ))
    }

    /// FILL.
    pub fn fill(&mut self, id: u32, offset: u64, length: u64, value: u32) -> u32 {
        self.cmd_type(&request::fill(id, offset, length, value))
    }

    /// COPY.
    pub fn copy(&mut self, dst: u32, dst_off: u64, src: u32, src_off: u64, len: u64) -> u32 {
        self.cmd_type(&request::copy(dst, dst_off, src, src_off, len))
    }

    /// CHECKSUM: Ok(crc) or Err(response type).
    pub fn checksum(&mut self, id: u32, offset: u64, length: u64) -> Result<u32, u32> {
        let r = self.cmd(&request::checksum(id, offset, length));
        match p::RespChecksum::read_from(&r) {
            Some(c) if c.hdr.type_ == p::RESP_OK_CHECKSUM => Ok(c.crc32c),
            _ => Err(CtrlHdr::read_from(&r).map_or(0, |h| h.type_)),
        }
    }

    /// Sends one request on the cursor queue, with a response buffer of `resp_len` bytes
    /// (stock drivers give none), and returns the used length and the response bytes.
    pub fn cursor_cmd(&mut self, req: &[u8], resp_len: u32) -> (u32, Vec<u8>) {
        let resp_at = CURSOR_SCRATCH + 0x800;
        let _ = self.mem.write_slice(&[0u8; 0x800], GuestAddress(resp_at));
        let _ = self.mem.write_slice(req, GuestAddress(CURSOR_SCRATCH));
        let slot = u64::from(self.cursor_avail % CURSOR_QSIZE);
        let d0 = (slot * 2) as u16 % CURSOR_QSIZE;
        let put = |i: u16, addr: u64, len: u32, flags: u16, next: u16| {
            let a = CURSOR_DESC_ADDR + 16 * u64::from(i);
            let mut b = [0u8; 16];
            b[0..8].copy_from_slice(&addr.to_le_bytes());
            b[8..12].copy_from_slice(&len.to_le_bytes());
            b[12..14].copy_from_slice(&flags.to_le_bytes());
            b[14..16].copy_from_slice(&next.to_le_bytes());
            let _ = self.mem.write_slice(&b, GuestAddress(a));
        };
        if resp_len == 0 {
            put(d0, CURSOR_SCRATCH, req.len() as u32, 0, 0);
        } else {
            put(d0, CURSOR_SCRATCH, req.len() as u32, desc::F_NEXT, d0 + 1);
            put(d0 + 1, resp_at, resp_len.min(0x800), desc::F_WRITE, 0);
        }
        let ring = CURSOR_AVAIL_ADDR + 4 + 2 * u64::from(self.cursor_avail % CURSOR_QSIZE);
        let _ = self.mem.write_obj(d0, GuestAddress(ring));
        let seen = self.cursor_avail;
        self.cursor_avail = self.cursor_avail.wrapping_add(1);
        let _ = self
            .mem
            .write_obj(self.cursor_avail, GuestAddress(CURSOR_AVAIL_ADDR + 2));
        if self.w32(QUEUE_NOTIFY_OFFSET, u32::from(p::CURSORQ)) {
            let _ = self.dev.process_queue(&self.mem);
        }
        let e = CURSOR_USED_ADDR + 4 + 8 * u64::from(seen % CURSOR_QSIZE);
        let used: u32 = self.mem.read_obj(GuestAddress(e + 4)).unwrap_or(u32::MAX);
        let mut b = vec![0u8; (used as usize).min(0x800)];
        let _ = self.mem.read_slice(&mut b, GuestAddress(resp_at));
        (used, b)
    }

    /// STATS.
    pub fn wire_stats(&mut self) -> Option<p::RespStats> {
        let r = self.cmd(CtrlHdr::new(p::CMD_STATS).as_bytes());
        p::RespStats::read_from(&r)
    }
}

/// Encodes an ATTACH_BACKING or EVICT request with a consistent entry count.
pub fn backing_request(cmd: u32, id: u32, entries: &[MemEntry]) -> Vec<u8> {
    request::backing(cmd, id, entries.len() as u32, entries)
}

/// Page list of `pages` 4 KiB entries starting at `addr`, one entry per page.
pub fn page_entries(addr: u64, pages: u64) -> Vec<MemEntry> {
    (0..pages)
        .map(|i| MemEntry {
            addr: addr + i * p::PAGE_SIZE,
            length: p::PAGE_SIZE as u32,
            padding: 0,
        })
        .collect()
}
