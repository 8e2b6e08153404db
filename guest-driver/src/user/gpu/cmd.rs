//! One command in flight: its request bytes, its response buffer, and the checks on the
//! answer. Builders for every pvgpu command.

use alloc::vec;
use alloc::vec::Vec;

use pvgpu_abi::protocol::{self as p, CtrlHdr, MemEntry, Wire};

use super::GpuError;
use crate::user::page_runs::PageRuns;
use core::mem::size_of;
use pvgpu_abi::request as rq;

/// A command and its response buffer.
pub struct Cmd {
    /// The command's name (for errors).
    pub name: &'static str,
    /// Request bytes (device-readable).
    pub req: Vec<u8>,
    /// Response buffer (device-writable).
    pub resp: Vec<u8>,
    /// Bytes the device wrote.
    pub used: usize,
    /// The success response type expected.
    ok_type: u32,
    /// Fence the request carries.
    fence: u64,
}

impl Cmd {
    /// A command of request bytes `req` expecting a response of type `ok_type`.
    fn new(req: Vec<u8>, ok_type: u32, resp_len: usize) -> Cmd {
        let hdr = CtrlHdr::read_from(&req).unwrap_or_default();
        Cmd {
            name: p::command_name(hdr.type_),
            req,
            resp: vec![0; resp_len],
            used: 0,
            ok_type,
            fence: 0,
        }
    }

    fn nodata(req: Vec<u8>) -> Cmd {
        Cmd::new(req, p::RESP_OK_NODATA, core::mem::size_of::<CtrlHdr>())
    }

    /// A command made of raw request bytes (for the hostile workload): any response is kept.
    pub fn raw(req: Vec<u8>, resp_len: usize) -> Cmd {
        Cmd {
            name: "raw",
            req,
            resp: vec![0; resp_len],
            used: 0,
            ok_type: 0,
            fence: 0,
        }
    }

    /// Marks the request fenced with `fence`.
    pub(super) fn set_fence(&mut self, fence: u64) {
        if self.req.len() >= core::mem::size_of::<CtrlHdr>() {
            if let Some(mut h) = CtrlHdr::read_from(&self.req) {
                h.flags |= p::VIRTIO_GPU_FLAG_FENCE;
                h.fence_id = fence;
                self.req[..core::mem::size_of::<CtrlHdr>()].copy_from_slice(h.as_bytes());
                self.fence = fence;
            }
        }
    }

    /// Whether the command moves an object's pages (MIGRATE, MIGRATE_CLEAN, EVICT): its answer
    /// is worth sleeping for at once, since a vCPU spinning in guest mode slows every page
    /// the host moves.
    pub(super) fn moves_pages(&self) -> bool {
        CtrlHdr::read_from(&self.req).is_some_and(|h| {
            matches!(
                h.type_,
                p::CMD_MIGRATE | p::CMD_MIGRATE_CLEAN | p::CMD_EVICT
            )
        })
    }

    /// The response header, if the device wrote one.
    pub fn status(&self) -> Option<CtrlHdr> {
        CtrlHdr::read_from(&self.resp[..self.used.min(self.resp.len())])
    }

    /// Checks the response: not an error, the expected type, the fence echoed.
    pub(super) fn check(&self) -> Result<(), GpuError> {
        if self.ok_type == 0 {
            return Ok(());
        }
        let h = self.status().ok_or(GpuError::BadResponse(self.name))?;
        if p::is_error(h.type_) {
            return Err(GpuError::Device {
                cmd: self.name,
                code: h.type_,
            });
        }
        if h.type_ != self.ok_type
            || h.flags & p::VIRTIO_GPU_FLAG_FENCE == 0
            || h.fence_id != self.fence
        {
            return Err(GpuError::BadResponse(self.name));
        }
        Ok(())
    }

    /// The response as `T`, if it is whole.
    pub fn response<T: Wire>(&self) -> Option<T> {
        T::read_from(&self.resp[..self.used.min(self.resp.len())])
    }

    /// GET_INFO.
    pub fn get_info() -> Cmd {
        Cmd::new(
            rq::header(p::CMD_GET_INFO),
            p::RESP_OK_INFO,
            size_of::<p::RespInfo>(),
        )
    }

    /// STATS.
    pub fn stats() -> Cmd {
        Cmd::new(
            rq::header(p::CMD_STATS),
            p::RESP_OK_STATS,
            size_of::<p::RespStats>(),
        )
    }

    /// NOP.
    pub fn nop() -> Cmd {
        Cmd::nodata(rq::header(p::CMD_NOP))
    }

    /// CREATE an object of `size` bytes.
    pub fn create(id: u32, size: u64) -> Cmd {
        Cmd::nodata(rq::create(id, 0, size))
    }

    /// DESTROY.
    pub fn destroy(id: u32) -> Cmd {
        Cmd::nodata(rq::object(p::CMD_DESTROY, id))
    }

    /// MIGRATE: the response carries the object's VRAM offset.
    pub fn migrate(id: u32) -> Cmd {
        Cmd::new(
            rq::object(p::CMD_MIGRATE, id),
            p::RESP_OK_MIGRATE,
            size_of::<p::RespMigrate>(),
        )
    }

    /// MIGRATE_CLEAN (MIGRATE and CLEAN in one; the host moves the pages where it can): the
    /// response carries the object's VRAM offset.
    pub fn migrate_clean(id: u32) -> Cmd {
        Cmd::new(
            rq::object(p::CMD_MIGRATE_CLEAN, id),
            p::RESP_OK_MIGRATE,
            size_of::<p::RespMigrate>(),
        )
    }

    /// CLEAN.
    pub fn clean(id: u32) -> Cmd {
        Cmd::nodata(rq::object(p::CMD_CLEAN, id))
    }

    /// ATTACH_BACKING with `pages` (one entry per run).
    pub fn attach(id: u32, pages: &PageRuns) -> Cmd {
        let e = pages.entries();
        Cmd::nodata(rq::backing(p::CMD_ATTACH_BACKING, id, e.len() as u32, &e))
    }

    /// EVICT into `pages` (empty: into the current backing).
    pub fn evict(id: u32, pages: &PageRuns) -> Cmd {
        let e = pages.entries();
        Cmd::nodata(rq::backing(p::CMD_EVICT, id, e.len() as u32, &e))
    }

    /// FILL `length` bytes at `offset` with `value`.
    pub fn fill(id: u32, offset: u64, length: u64, value: u8) -> Cmd {
        Cmd::nodata(rq::fill(id, offset, length, value.into()))
    }

    /// COPY `length` bytes.
    pub fn copy(dst: u32, dst_offset: u64, src: u32, src_offset: u64, length: u64) -> Cmd {
        Cmd::nodata(rq::copy(dst, dst_offset, src, src_offset, length))
    }

    /// A standard virtio-gpu 2D command answered with OK_NODATA (0x1100): build the request
    /// with `pvgpu_abi::request` (`resource_create_2d`, `set_scanout`, `transfer_to_host_2d`,
    /// `resource_flush`, `resource`, ...).
    pub fn standard(req: Vec<u8>) -> Cmd {
        Cmd::new(req, p::RESP_OK_NODATA_2D, core::mem::size_of::<CtrlHdr>())
    }

    /// RESOURCE_ATTACH_BACKING with `pages` (contiguous runs merged).
    pub fn resource_attach_backing(id: u32, pages: &[u64]) -> Cmd {
        let e = coalesce(pages);
        Cmd::standard(rq::backing(
            p::CMD_RESOURCE_ATTACH_BACKING,
            id,
            e.len() as u32,
            &e,
        ))
    }

    /// CHECKSUM of a range.
    pub fn checksum(id: u32, offset: u64, length: u64) -> Cmd {
        Cmd::new(
            rq::checksum(id, offset, length),
            p::RESP_OK_CHECKSUM,
            size_of::<p::RespChecksum>(),
        )
    }
}

/// Page addresses as scatter-gather entries, merging physically contiguous runs.
pub fn coalesce(pages: &[u64]) -> Vec<MemEntry> {
    PageRuns::from_pages(pages).entries()
}
