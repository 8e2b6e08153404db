//! Request bytes for every pvgpu command, from raw field values (with the `alloc` feature).
//! The guest driver's command builders use them with valid values, its hostile workload and
//! the device's tests with any values: each request is encoded in this one place.

use alloc::vec::Vec;

use crate::protocol::{self as p, CtrlHdr, MemEntry, Wire};

/// A request that is a bare header of type `t`.
pub fn header(t: u32) -> Vec<u8> {
    CtrlHdr::new(t).as_bytes().to_vec()
}

/// CREATE.
pub fn create(id: u32, flags: u32, size: u64) -> Vec<u8> {
    p::ReqCreate {
        hdr: CtrlHdr::new(p::CMD_CREATE),
        object_id: id,
        flags,
        size,
    }
    .as_bytes()
    .to_vec()
}

/// A command naming one object (DESTROY, MIGRATE, CLEAN).
pub fn object(cmd: u32, id: u32) -> Vec<u8> {
    p::ReqObject {
        hdr: CtrlHdr::new(cmd),
        object_id: id,
        padding: 0,
    }
    .as_bytes()
    .to_vec()
}

/// ATTACH_BACKING or EVICT with `nr` in the header and `entries` after it (they may differ).
pub fn backing(cmd: u32, id: u32, nr: u32, entries: &[MemEntry]) -> Vec<u8> {
    let mut v = p::ReqBacking {
        hdr: CtrlHdr::new(cmd),
        object_id: id,
        nr_entries: nr,
    }
    .as_bytes()
    .to_vec();
    for e in entries {
        v.extend_from_slice(e.as_bytes());
    }
    v
}

/// READ or WRITE with `nr` in the header and `entries` after it (they may differ).
pub fn transfer(cmd: u32, id: u32, offset: u64, nr: u32, entries: &[MemEntry]) -> Vec<u8> {
    let mut v = p::ReqTransfer {
        hdr: CtrlHdr::new(cmd),
        object_id: id,
        nr_entries: nr,
        offset,
    }
    .as_bytes()
    .to_vec();
    for e in entries {
        v.extend_from_slice(e.as_bytes());
    }
    v
}

/// FILL (`value` is a byte on the wire's u32, so out-of-range values can be sent).
pub fn fill(id: u32, offset: u64, length: u64, value: u32) -> Vec<u8> {
    p::ReqFill {
        hdr: CtrlHdr::new(p::CMD_FILL),
        object_id: id,
        value,
        offset,
        length,
    }
    .as_bytes()
    .to_vec()
}

/// COPY.
pub fn copy(dst_id: u32, dst_offset: u64, src_id: u32, src_offset: u64, length: u64) -> Vec<u8> {
    p::ReqCopy {
        hdr: CtrlHdr::new(p::CMD_COPY),
        dst_id,
        src_id,
        dst_offset,
        src_offset,
        length,
    }
    .as_bytes()
    .to_vec()
}

/// CHECKSUM.
pub fn checksum(id: u32, offset: u64, length: u64) -> Vec<u8> {
    p::ReqRange {
        hdr: CtrlHdr::new(p::CMD_CHECKSUM),
        object_id: id,
        padding: 0,
        offset,
        length,
    }
    .as_bytes()
    .to_vec()
}

/// RESOURCE_CREATE_2D.
pub fn resource_create_2d(id: u32, format: u32, width: u32, height: u32) -> Vec<u8> {
    p::ReqResourceCreate2d {
        hdr: CtrlHdr::new(p::CMD_RESOURCE_CREATE_2D),
        resource_id: id,
        format,
        width,
        height,
    }
    .as_bytes()
    .to_vec()
}

/// A 2D command naming one resource (RESOURCE_UNREF, RESOURCE_DETACH_BACKING).
pub fn resource(cmd: u32, id: u32) -> Vec<u8> {
    p::ReqResource {
        hdr: CtrlHdr::new(cmd),
        resource_id: id,
        padding: 0,
    }
    .as_bytes()
    .to_vec()
}

/// SET_SCANOUT.
pub fn set_scanout(scanout_id: u32, id: u32, r: p::Rect) -> Vec<u8> {
    p::ReqSetScanout {
        hdr: CtrlHdr::new(p::CMD_SET_SCANOUT),
        r,
        scanout_id,
        resource_id: id,
    }
    .as_bytes()
    .to_vec()
}

/// RESOURCE_FLUSH.
pub fn resource_flush(id: u32, r: p::Rect) -> Vec<u8> {
    p::ReqResourceFlush {
        hdr: CtrlHdr::new(p::CMD_RESOURCE_FLUSH),
        r,
        resource_id: id,
        padding: 0,
    }
    .as_bytes()
    .to_vec()
}

/// TRANSFER_TO_HOST_2D.
pub fn transfer_to_host_2d(id: u32, r: p::Rect, offset: u64) -> Vec<u8> {
    p::ReqTransferToHost2d {
        hdr: CtrlHdr::new(p::CMD_TRANSFER_TO_HOST_2D),
        r,
        offset,
        resource_id: id,
        padding: 0,
    }
    .as_bytes()
    .to_vec()
}

/// GET_EDID.
pub fn get_edid(scanout: u32) -> Vec<u8> {
    p::ReqGetEdid {
        hdr: CtrlHdr::new(p::CMD_GET_EDID),
        scanout,
        padding: 0,
    }
    .as_bytes()
    .to_vec()
}

/// UPDATE_CURSOR or MOVE_CURSOR (`cmd`), for the cursor queue.
pub fn cursor(cmd: u32, scanout_id: u32, id: u32, x: u32, y: u32, hot: (u32, u32)) -> Vec<u8> {
    p::ReqUpdateCursor {
        hdr: CtrlHdr::new(cmd),
        pos: p::CursorPos {
            scanout_id,
            x,
            y,
            padding: 0,
        },
        resource_id: id,
        hot_x: hot.0,
        hot_y: hot.1,
        padding: 0,
    }
    .as_bytes()
    .to_vec()
}
