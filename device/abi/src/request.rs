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
