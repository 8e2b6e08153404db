//! Command level: malformed requests through the normal driver ([`objects::submit_raw`]):
//! unknown object ids and command types, short requests, bad scatter-gather lists, bad sizes
//! and ranges, forbidden state transitions, EVICT into pages that are not the object's,
//! undersized response buffers. Each case names the exact response the protocol defines.
//!
//! The one-call cases are rows of tables ([`SETUP`], [`ID_COMMANDS`] × [`BAD_IDS`],
//! [`UNKNOWN_TYPES`], [`CASES`], [`TEARDOWN`]), each row a request built from the
//! [`Fixture`] and the response it must get; [`run_rows`] sends them in order. The cases that
//! take more than one call (the device's error counter, data that must survive, EVICT into
//! another object's pages) follow as code.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::crc32c::crc32c;
use pvgpu_abi::layout::{MMIO_HOLE_START, PAGE_SIZE, VIRTIO_MMIO_BASE, VRAM_BASE};
use pvgpu_abi::protocol::{self as p, CtrlHdr, MemEntry, Wire};
use pvgpu_abi::request::{
    backing, checksum, copy, create, fill, header as hdr_only, object as obj,
};

use super::{pattern, HDR, SENTINEL};
use crate::check;
use crate::user::gpu::cmd::coalesce;
use crate::user::gpu::Cmd;
use crate::user::workloads::checker::Checker;
use crate::user::{objects, pages};

/// Response buffer of a command-level case (larger than any response).
const RESP_LEN: usize = 128;

/// Object ids of this workload: far from the ids the object layer hands out (1, 2, ...).
const ID: u32 = 0x4000_0000;
/// Object A: SYSTEM, with pages.
const A: u32 = ID + 1;
/// Object B: CLEANED (VRAM only).
const B: u32 = ID + 2;
/// Object C: in VRAM.
const C: u32 = ID + 3;
/// Object D: destroyed.
const D: u32 = ID + 4;
/// Object E: two pages, no backing yet.
const E: u32 = ID + 5;
/// An id never created.
const NEVER: u32 = ID + 0x999;
/// Pages of A, B and C.
const OBJ_PAGES: usize = 4;
/// Size of A, B and C.
const SIZE: u64 = OBJ_PAGES as u64 * PAGE_SIZE;
/// Size of E, as an entry length.
const TWO: u32 = 2 * PAGE_SIZE as u32;

// The responses the cases want, by short name.
const OK: u32 = p::RESP_OK_NODATA;
const BAD_ID: u32 = p::RESP_ERR_INVALID_OBJECT_ID;
const UNKNOWN: u32 = p::RESP_ERR_UNKNOWN_COMMAND;
const SHORT: u32 = p::RESP_ERR_BAD_REQUEST;
const BB: u32 = p::RESP_ERR_BAD_BACKING;
const INVAL: u32 = p::RESP_ERR_INVALID_PARAMETER;
const ST: u32 = p::RESP_ERR_INVALID_STATE;
const OOR: u32 = p::RESP_ERR_OUT_OF_RANGE;

// ---------------------------------------------------------------------------------------------
// The fixture: guest pages and the data and scatter-gather lists the requests are built from.

/// Guest pages of this workload, given back when it drops.
struct Pages(Vec<u64>);

impl Pages {
    fn take(&mut self, n: usize) -> Option<Vec<u64>> {
        let v = pages::alloc_many(n)?;
        self.0.extend_from_slice(&v);
        Some(v)
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        pages::free_many(&core::mem::take(&mut self.0));
    }
}

/// What the requests are built from.
struct Fixture {
    ram: u64,
    vram_size: u64,
    pa_a: Vec<u64>,
    pa_b2: Vec<u64>,
    /// E's first and second page.
    e0: u64,
    e1: u64,
    data_a: Vec<u8>,
    data_b: Vec<u8>,
    data_c: Vec<u8>,
    sg_a: Vec<MemEntry>,
    sg_b: Vec<MemEntry>,
    /// Fresh pages for B to be evicted into.
    sg_b2: Vec<MemEntry>,
    sg_c: Vec<MemEntry>,
    sg_e: Vec<MemEntry>,
    /// Pages no object uses.
    sg_spare: Vec<MemEntry>,
    /// Every page above; freed last.
    _owned: Pages,
}

impl Fixture {
    /// Allocates the pages and writes A's, B's and C's data into theirs.
    fn new(info: &BootInfo) -> Option<Fixture> {
        let mut owned = Pages(Vec::new());
        let pa_a = owned.take(OBJ_PAGES)?;
        let pa_b = owned.take(OBJ_PAGES)?;
        let pa_b2 = owned.take(OBJ_PAGES)?;
        let pa_c = owned.take(OBJ_PAGES)?;
        let pa_e = owned.take(2)?;
        let spare = owned.take(OBJ_PAGES)?;
        let (&e0, &e1) = (pa_e.first()?, pa_e.get(1)?);
        let data_a = pattern(SIZE as usize, 0xa1);
        let data_b = pattern(SIZE as usize, 0xb2);
        let data_c = pattern(SIZE as usize, 0xc3);
        write_pages(&pa_a, &data_a);
        write_pages(&pa_b, &data_b);
        write_pages(&pa_c, &data_c);
        Some(Fixture {
            ram: info.ram_size,
            vram_size: info.vram_size,
            sg_a: coalesce(&pa_a),
            sg_b: coalesce(&pa_b),
            sg_b2: coalesce(&pa_b2),
            sg_c: coalesce(&pa_c),
            sg_e: coalesce(&pa_e),
            sg_spare: coalesce(&spare),
            pa_a,
            pa_b2,
            e0,
            e1,
            data_a,
            data_b,
            data_c,
            _owned: owned,
        })
    }
}

/// Writes `data` across `pages` (each page one PAGE_SIZE piece).
fn write_pages(pages: &[u64], data: &[u8]) {
    for (pa, chunk) in pages.iter().zip(data.chunks(PAGE_SIZE as usize)) {
        // SAFETY: the page was allocated to this workload, is identity-mapped and writable,
        // and no device command is using it right now.
        unsafe { core::ptr::copy_nonoverlapping(chunk.as_ptr(), *pa as *mut u8, chunk.len()) };
    }
}

/// Reads `pages` back.
fn read_pages(pages: &[u64]) -> Vec<u8> {
    let mut v = vec![0u8; pages.len() * PAGE_SIZE as usize];
    for (pa, chunk) in pages.iter().zip(v.chunks_mut(PAGE_SIZE as usize)) {
        // SAFETY: as in write_pages, reading; the chunk is PAGE_SIZE bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(*pa as *const u8, chunk.as_mut_ptr(), chunk.len())
        };
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Request builders (raw bytes from pvgpu_abi::request, so they can be cut short or carry any
// value).

/// ATTACH_BACKING or EVICT with a consistent entry count.
fn sg(cmd: u32, id: u32, entries: &[MemEntry]) -> Vec<u8> {
    backing(cmd, id, entries.len() as u32, entries)
}

/// ATTACH_BACKING of `entries` to E (which has no pages yet and keeps none).
fn attach_e(entries: &[MemEntry]) -> Vec<u8> {
    sg(p::CMD_ATTACH_BACKING, E, entries)
}

/// EVICT of B into `entries`.
fn evict_b(entries: &[MemEntry]) -> Vec<u8> {
    sg(p::CMD_EVICT, B, entries)
}

fn ent(addr: u64, length: u32) -> MemEntry {
    MemEntry {
        addr,
        length,
        padding: 0,
    }
}

fn cut(mut v: Vec<u8>, n: usize) -> Vec<u8> {
    v.truncate(n);
    v
}

/// A NOP header followed by zeros, longer than the device reads.
fn too_long(_: &Fixture) -> Vec<u8> {
    let mut huge = vec![0u8; p::MAX_REQUEST_BYTES + 16];
    huge[..HDR].copy_from_slice(CtrlHdr::new(p::CMD_NOP).as_bytes());
    huge
}

// ---------------------------------------------------------------------------------------------
// The cases.

/// What a case must get back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// A response of this type, echoing the request's fence when it carried one.
    Response(u32),
    /// Exactly one header of this type (no fence echo: the device refuses such a request
    /// unread, or it is a NOP in a buffer larger than its answer).
    HeaderOnly(u32),
    /// Nothing: used length 0 and the buffer untouched (it is too small for the response;
    /// the command does not run, and counts as a failed command).
    Nothing,
}

impl Want {
    /// Whether the device counts the request as a failed command.
    fn is_refusal(self) -> bool {
        match self {
            Want::Response(t) | Want::HeaderOnly(t) => p::is_error(t),
            Want::Nothing => true,
        }
    }
}

impl fmt::Display for Want {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            Want::Response(t) => write!(f, "{t:#x} {}", p::response_name(t)),
            Want::HeaderOnly(t) => write!(f, "exactly a {t:#x} {} header", p::response_name(t)),
            Want::Nothing => f.write_str("nothing written"),
        }
    }
}

/// A request built from the fixture.
type Build = fn(&Fixture) -> Vec<u8>;

/// A one-call case: a request built from the fixture, sent with a response buffer of
/// `resp_len` bytes.
struct Case {
    name: &'static str,
    req: Build,
    resp_len: usize,
    want: Want,
}

impl Case {
    /// A case that wants a response of type `want`.
    const fn new(name: &'static str, want: u32, req: Build) -> Case {
        Case {
            name,
            req,
            resp_len: RESP_LEN,
            want: Want::Response(want),
        }
    }

    /// A case whose response buffer of `resp_len` bytes is too small for its answer.
    const fn undersized(name: &'static str, resp_len: usize, req: Build) -> Case {
        Case {
            name,
            req,
            resp_len,
            want: Want::Nothing,
        }
    }

    fn row(&self, fx: &Fixture) -> Row {
        Row {
            name: Cow::Borrowed(self.name),
            req: (self.req)(fx),
            resp_len: self.resp_len,
            want: self.want,
        }
    }
}

/// A case ready to send.
struct Row {
    name: Cow<'static, str>,
    req: Vec<u8>,
    resp_len: usize,
    want: Want,
}

/// Set-up: A SYSTEM with pages, B CLEANED, C in VRAM, D destroyed, E without pages.
const SETUP: &[Case] = &[
    Case::new("setup: create A", OK, |_| create(A, 0, SIZE)),
    Case::new("setup: attach A", OK, |f| {
        sg(p::CMD_ATTACH_BACKING, A, &f.sg_a)
    }),
    Case::new("setup: create B", OK, |_| create(B, 0, SIZE)),
    Case::new("setup: attach B", OK, |f| {
        sg(p::CMD_ATTACH_BACKING, B, &f.sg_b)
    }),
    Case::new("setup: migrate B", p::RESP_OK_MIGRATE, |_| {
        obj(p::CMD_MIGRATE, B)
    }),
    // B's pages are punched now: not touched again until they are freed.
    Case::new("setup: clean B", OK, |_| obj(p::CMD_CLEAN, B)),
    Case::new("setup: create C", OK, |_| create(C, 0, SIZE)),
    Case::new("setup: attach C", OK, |f| {
        sg(p::CMD_ATTACH_BACKING, C, &f.sg_c)
    }),
    Case::new("setup: migrate C", p::RESP_OK_MIGRATE, |_| {
        obj(p::CMD_MIGRATE, C)
    }),
    Case::new("setup: create D", OK, |_| create(D, 0, PAGE_SIZE)),
    Case::new("setup: destroy D", OK, |_| obj(p::CMD_DESTROY, D)),
    Case::new("setup: create E", OK, |_| create(E, 0, 2 * PAGE_SIZE)),
];

/// Ids no live object has: each command of [`ID_COMMANDS`] is sent with each.
const BAD_IDS: [(&str, u32); 3] = [
    ("id 0", 0),
    ("never-created id", NEVER),
    ("destroyed id", D),
];

/// A request naming object `id`, built from the fixture.
type BuildFor = fn(&Fixture, u32) -> Vec<u8>;

/// Every command that names an object.
const ID_COMMANDS: [(&str, BuildFor); 9] = [
    ("destroy", |_, id| obj(p::CMD_DESTROY, id)),
    ("migrate", |_, id| obj(p::CMD_MIGRATE, id)),
    ("clean", |_, id| obj(p::CMD_CLEAN, id)),
    ("attach", |f, id| sg(p::CMD_ATTACH_BACKING, id, &f.sg_spare)),
    ("evict", |f, id| sg(p::CMD_EVICT, id, &f.sg_spare)),
    ("fill", |_, id| fill(id, 0, 16, 1)),
    ("copy to", |_, id| copy(id, 0, C, 0, 16)),
    ("copy from", |_, id| copy(C, 0, id, 0, 16)),
    ("checksum", |_, id| checksum(id, 0, 16)),
];

/// Command types the device does not know: pvgpu gaps, response types, all ones.
const UNKNOWN_TYPES: [u32; 6] = [0x0000, 0x0aff, 0x0a7f, 0x1100, 0x1a00, u32::MAX];

/// Requests in virtio-gpu's type ranges that get virtio-gpu's ERR_UNSPEC: a 2D type the spec
/// does not define, a RESOURCE_CREATE_2D too short for its struct, a 3D command (no 3D here),
/// a cursor command on the control queue.
const VIRTIO_GPU_REFUSED: [u32; 4] = [
    0x01ff,
    p::CMD_RESOURCE_CREATE_2D,
    0x0200,
    p::CMD_UPDATE_CURSOR,
];

/// The other one-call cases, in order (a few change state for the ones after them).
const CASES: &[Case] = &[
    Case::new("create id 0", BAD_ID, |_| create(0, 0, PAGE_SIZE)),
    // Requests shorter than their header or struct (a short header carries no fence).
    Case::new("1-byte request", SHORT, |_| vec![p::CMD_NOP as u8]),
    Case::new("23-byte request", SHORT, |_| {
        cut(hdr_only(p::CMD_GET_INFO), 23)
    }),
    Case::new("create of 24 bytes", SHORT, |_| {
        cut(create(ID + 50, 0, PAGE_SIZE), 24)
    }),
    Case::new("create of 39 bytes", SHORT, |_| {
        cut(create(ID + 50, 0, PAGE_SIZE), 39)
    }),
    Case::new("destroy of 31 bytes", SHORT, |_| {
        cut(obj(p::CMD_DESTROY, A), 31)
    }),
    Case::new("migrate of 24 bytes", SHORT, |_| {
        cut(obj(p::CMD_MIGRATE, A), 24)
    }),
    Case::new("clean of 31 bytes", SHORT, |_| {
        cut(obj(p::CMD_CLEAN, C), 31)
    }),
    Case::new("attach of 31 bytes", SHORT, |f| {
        cut(attach_e(&[ent(f.e0, TWO)]), 31)
    }),
    Case::new("evict of 24 bytes", SHORT, |f| cut(evict_b(&f.sg_b2), 24)),
    Case::new("fill of 47 bytes", SHORT, |_| cut(fill(C, 0, 16, 1), 47)),
    Case::new("copy of 55 bytes", SHORT, |_| {
        cut(copy(C, 0, C, 16, 16), 55)
    }),
    Case::new("checksum of 47 bytes", SHORT, |_| {
        cut(checksum(C, 0, 16), 47)
    }),
    // Longer than the device reads: refused unread, so no fence echo is required.
    Case {
        name: "request longer than MAX_REQUEST_BYTES",
        req: too_long,
        resp_len: RESP_LEN,
        want: Want::HeaderOnly(SHORT),
    },
    // ATTACH_BACKING lists that must be refused (E has no pages yet and keeps none).
    Case::new("attach outside guest RAM", BB, |f| {
        attach_e(&[ent(f.ram, TWO)])
    }),
    Case::new("attach across the end of RAM", BB, |f| {
        attach_e(&[ent(f.ram - PAGE_SIZE, TWO)])
    }),
    Case::new("attach in the VRAM window", BB, |_| {
        attach_e(&[ent(VRAM_BASE, TWO)])
    }),
    Case::new("attach in the MMIO hole", BB, |_| {
        attach_e(&[ent(VIRTIO_MMIO_BASE, TWO)])
    }),
    Case::new("attach at the MMIO hole start", BB, |_| {
        attach_e(&[ent(MMIO_HOLE_START, TWO)])
    }),
    Case::new("attach unaligned address", BB, |f| {
        attach_e(&[ent(f.e0 + 0x800, TWO)])
    }),
    Case::new("attach unaligned length", BB, |f| {
        attach_e(&[ent(f.e0, TWO - 0x800), ent(f.e0 + 0x1800, 0x800)])
    }),
    Case::new("attach zero-length entry", BB, |f| {
        attach_e(&[ent(f.e0, 0), ent(f.e0, TWO)])
    }),
    Case::new("attach overflowing addr+len", BB, |_| {
        attach_e(&[ent(u64::MAX - 0xfff, TWO)])
    }),
    Case::new("attach entries short of the size", BB, |f| {
        attach_e(&[ent(f.e0, PAGE_SIZE as u32)])
    }),
    Case::new("attach entries past the size", BB, |f| {
        attach_e(&[ent(f.e0, TWO), ent(f.e1, PAGE_SIZE as u32)])
    }),
    Case::new("attach no entries", BB, |_| attach_e(&[])),
    Case::new("attach length wraps a u32 sum", BB, |f| {
        attach_e(&[ent(f.e0, 0x8000_0000), ent(f.e0, 0x8000_0000)])
    }),
    Case::new("attach nr_entries past the data", SHORT, |f| {
        backing(p::CMD_ATTACH_BACKING, E, 4, &[ent(f.e0, TWO)])
    }),
    Case::new(
        "attach nr_entries = MAX_SG_ENTRIES, data short",
        SHORT,
        |f| {
            backing(
                p::CMD_ATTACH_BACKING,
                E,
                p::MAX_SG_ENTRIES,
                &[ent(f.e0, TWO)],
            )
        },
    ),
    Case::new("attach nr_entries > MAX_SG_ENTRIES", INVAL, |f| {
        backing(
            p::CMD_ATTACH_BACKING,
            E,
            p::MAX_SG_ENTRIES + 1,
            &[ent(f.e0, TWO)],
        )
    }),
    Case::new("attach nr_entries = u32::MAX", INVAL, |f| {
        backing(p::CMD_ATTACH_BACKING, E, u32::MAX, &[ent(f.e0, TWO)])
    }),
    // E still has no pages: a good list works once, then not again.
    Case::new("attach E after the refusals", OK, |f| attach_e(&f.sg_e)),
    Case::new("attach twice", ST, |f| attach_e(&f.sg_e)),
    // CREATE values.
    Case::new("create size 0", INVAL, |_| create(ID + 60, 0, 0)),
    Case::new("create huge size", INVAL, |_| {
        create(ID + 61, 0, !(PAGE_SIZE - 1))
    }),
    Case::new("create size > VRAM", INVAL, |f| {
        create(ID + 62, 0, f.vram_size + PAGE_SIZE)
    }),
    Case::new("create unaligned size", INVAL, |_| {
        create(ID + 63, 0, PAGE_SIZE + 1)
    }),
    Case::new("create flags != 0", INVAL, |_| {
        create(ID + 64, 1, PAGE_SIZE)
    }),
    Case::new("create flags all ones", INVAL, |_| {
        create(ID + 65, u32::MAX, PAGE_SIZE)
    }),
    Case::new("create duplicate id", p::RESP_ERR_OBJECT_EXISTS, |_| {
        create(A, 0, PAGE_SIZE)
    }),
    // Ranges (C is in VRAM, A in guest pages).
    Case::new("fill past the end", OOR, |_| fill(C, 0, SIZE + 1, 1)),
    Case::new("fill at the end", OOR, |_| fill(C, SIZE, 1, 1)),
    Case::new("fill offset+length overflows", OOR, |_| {
        fill(C, u64::MAX, 2, 1)
    }),
    Case::new("fill length u64::MAX", OOR, |_| fill(C, 1, u64::MAX, 1)),
    Case::new("fill value > 255", INVAL, |_| fill(C, 0, 16, 256)),
    Case::new("copy source past the end", OOR, |_| {
        copy(C, 0, C, SIZE - 8, 16)
    }),
    Case::new("copy destination past the end", OOR, |_| {
        copy(C, SIZE - 1, C, 0, 2)
    }),
    Case::new("copy source offset overflows", OOR, |_| {
        copy(C, 0, C, u64::MAX - 1, 4)
    }),
    Case::new("copy length u64::MAX", OOR, |_| copy(C, 0, C, 0, u64::MAX)),
    Case::new("checksum past the end (SYSTEM)", OOR, |_| {
        checksum(A, 0, SIZE + PAGE_SIZE)
    }),
    Case::new("checksum offset+length overflows", OOR, |_| {
        checksum(A, u64::MAX - 3, 8)
    }),
    Case::new("checksum past the end (VRAM)", OOR, |_| {
        checksum(C, SIZE - 4, 8)
    }),
    // State transitions.
    Case::new("clean of a SYSTEM object", ST, |_| obj(p::CMD_CLEAN, A)),
    Case::new("evict of a SYSTEM object", ST, |_| sg(p::CMD_EVICT, A, &[])),
    Case::new("fill of a SYSTEM object", ST, |_| fill(A, 0, 16, 1)),
    Case::new("copy from a SYSTEM object", ST, |_| copy(C, 0, A, 0, 16)),
    Case::new("migrate twice", ST, |_| obj(p::CMD_MIGRATE, C)),
    Case::new("clean twice", ST, |_| obj(p::CMD_CLEAN, B)),
    Case::new("migrate of a CLEANED object", ST, |_| {
        obj(p::CMD_MIGRATE, B)
    }),
    Case::new("attach to a CLEANED object", ST, |f| {
        sg(p::CMD_ATTACH_BACKING, B, &f.sg_b2)
    }),
    Case::new("evict CLEANED without pages", INVAL, |_| evict_b(&[])),
    Case::new("evict into pages outside RAM", BB, |f| {
        evict_b(&[ent(f.ram, SIZE as u32)])
    }),
    Case::new("evict into the VRAM window", BB, |_| {
        evict_b(&[ent(VRAM_BASE, SIZE as u32)])
    }),
    Case::new("evict into the MMIO hole", BB, |_| {
        evict_b(&[ent(VIRTIO_MMIO_BASE, SIZE as u32)])
    }),
    Case::new("evict into too few pages", BB, |f| {
        let first: Vec<MemEntry> = f
            .sg_b2
            .iter()
            .take(1)
            .map(|x| ent(x.addr, PAGE_SIZE as u32))
            .collect();
        evict_b(&first)
    }),
    Case::new("evict overflowing addr+len", BB, |_| {
        evict_b(&[ent(u64::MAX - 0xfff, SIZE as u32)])
    }),
    // Undersized response buffers: the command does not run and nothing is written.
    Case::undersized("nop, 1-byte response", 1, |_| hdr_only(p::CMD_NOP)),
    Case::undersized("nop, 23-byte response", 23, |_| hdr_only(p::CMD_NOP)),
    Case::undersized("unknown type, 8-byte response", 8, |_| hdr_only(0x0aff)),
    Case::undersized("bad id, 23-byte response", 23, |_| obj(p::CMD_CLEAN, NEVER)),
    Case::undersized("get_info, 24-byte response", HDR, |_| {
        hdr_only(p::CMD_GET_INFO)
    }),
    Case::undersized("get_info, 63-byte response", 63, |_| {
        hdr_only(p::CMD_GET_INFO)
    }),
    Case::undersized("stats, 103-byte response", 103, |_| hdr_only(p::CMD_STATS)),
    Case::undersized("checksum, 31-byte response", 31, |_| checksum(C, 0, SIZE)),
    // A buffer larger than the response gets just the response.
    Case {
        name: "nop, 4096-byte response",
        req: |_| hdr_only(p::CMD_NOP),
        resp_len: 4096,
        want: Want::HeaderOnly(OK),
    },
];

/// Clean-up: every object goes (the pages go back when the fixture drops).
const TEARDOWN: &[Case] = &[
    Case::new("destroy A", OK, |_| obj(p::CMD_DESTROY, A)),
    Case::new("destroy B", OK, |_| obj(p::CMD_DESTROY, B)),
    Case::new("destroy C", OK, |_| obj(p::CMD_DESTROY, C)),
    Case::new("destroy E", OK, |_| obj(p::CMD_DESTROY, E)),
    Case::new("destroy twice", BAD_ID, |_| obj(p::CMD_DESTROY, E)),
];

/// The refusals, in order: every command of [`ID_COMMANDS`] with every id of [`BAD_IDS`],
/// every type of [`UNKNOWN_TYPES`] and [`VIRTIO_GPU_REFUSED`], then [`CASES`].
fn refusals(fx: &Fixture) -> impl Iterator<Item = Row> + '_ {
    let by_id = BAD_IDS.iter().flat_map(move |&(what, id)| {
        ID_COMMANDS.iter().map(move |&(verb, req)| Row {
            name: Cow::Owned(format!("{verb} {what}")),
            req: req(fx, id),
            resp_len: RESP_LEN,
            want: Want::Response(BAD_ID),
        })
    });
    let unknown = UNKNOWN_TYPES.iter().map(|&ty| Row {
        name: Cow::Owned(format!("unknown type {ty:#x}")),
        req: hdr_only(ty),
        resp_len: RESP_LEN,
        want: Want::Response(UNKNOWN),
    });
    let virtio_gpu = VIRTIO_GPU_REFUSED.iter().map(|&ty| Row {
        name: Cow::Owned(format!("virtio-gpu type {ty:#x}")),
        req: hdr_only(ty),
        resp_len: RESP_LEN,
        want: Want::Response(p::RESP_ERR_UNSPEC),
    });
    by_id
        .chain(unknown)
        .chain(virtio_gpu)
        .chain(CASES.iter().map(move |c| c.row(fx)))
}

// ---------------------------------------------------------------------------------------------
// Sending and checking.

/// The first bytes of `b` in hex, for failure reports.
fn hex(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, x) in b.iter().take(48).enumerate() {
        if i > 0 && i % 8 == 0 {
            s.push(' ');
        }
        s.push_str(&format!("{x:02x}"));
    }
    if b.len() > 48 {
        s.push_str("..");
    }
    s
}

/// Sends one raw request with a sentinel-filled response buffer of `resp_len` bytes.
fn send(req: Vec<u8>, resp_len: usize) -> Cmd {
    let mut c = Cmd::raw(req, resp_len);
    c.resp.fill(SENTINEL);
    let mut cs = [c];
    let _ = objects::submit_raw(&mut cs);
    let [c] = cs;
    c
}

/// What came back, for failure reports.
fn got(c: &Cmd) -> String {
    match c.status() {
        Some(h) => format!(
            "used {} type {:#x} {} flags {:#x} fence {}",
            c.used,
            h.type_,
            p::response_name(h.type_),
            h.flags,
            h.fence_id
        ),
        None => format!(
            "used {} (no header) [{}]",
            c.used,
            hex(&c.resp[..c.used.min(c.resp.len())])
        ),
    }
}

/// Whether the device left every byte past `used` alone.
fn untouched_after_used(c: &Cmd) -> bool {
    c.resp.iter().skip(c.used).all(|&b| b == SENTINEL)
}

/// Whether `c` got what `want` asks for.
fn answered(c: &Cmd, want: Want) -> bool {
    let untouched = untouched_after_used(c);
    match want {
        Want::Response(t) => {
            let sent = CtrlHdr::read_from(&c.req);
            c.status().is_some_and(|h| {
                let fence_ok = match sent {
                    Some(s) if s.flags & p::VIRTIO_GPU_FLAG_FENCE != 0 => {
                        h.flags & p::VIRTIO_GPU_FLAG_FENCE != 0 && h.fence_id == s.fence_id
                    }
                    _ => true,
                };
                h.type_ == t && fence_ok
            }) && c.used <= c.resp.len()
                && untouched
        }
        Want::HeaderOnly(t) => {
            c.used == HDR && c.status().is_some_and(|h| h.type_ == t) && untouched
        }
        Want::Nothing => c.used == 0 && untouched,
    }
}

/// Sends one row and checks its answer; returns the command for further checks.
fn run_row(ck: &mut Checker, row: Row) -> Cmd {
    let c = send(row.req, row.resp_len);
    check!(
        ck,
        answered(&c, row.want),
        "{}: sent {} bytes [{}] with a {}-byte response buffer, want {}, got {}",
        row.name,
        c.req.len(),
        hex(&c.req),
        row.resp_len,
        row.want,
        got(&c)
    );
    c
}

/// Sends `rows` in order; returns how many the device must count as failed commands.
fn run_rows(ck: &mut Checker, rows: impl Iterator<Item = Row>) -> u64 {
    let mut refusals = 0;
    for row in rows {
        refusals += u64::from(row.want.is_refusal());
        run_row(ck, row);
    }
    refusals
}

/// Sends `req` and expects a response of type `want` (with the request's fence echoed, when
/// it carries one). Returns the command for further checks.
pub fn expect(ck: &mut Checker, name: &'static str, req: Vec<u8>, want: u32) -> Cmd {
    run_row(
        ck,
        Row {
            name: Cow::Borrowed(name),
            req,
            resp_len: RESP_LEN,
            want: Want::Response(want),
        },
    )
}

/// The device's count of failed commands so far.
fn errors_so_far() -> Option<u64> {
    let c = send(hdr_only(p::CMD_STATS), RESP_LEN);
    c.response::<p::RespStats>()
        .filter(|s| s.hdr.type_ == p::RESP_OK_STATS)
        .map(|s| s.errors)
}

/// Runs every command-level case.
pub fn run(ck: &mut Checker, info: &BootInfo) {
    let Some(fx) = Fixture::new(info) else {
        check!(ck, false, "allocate guest pages: out of pages");
        return;
    };
    run_rows(ck, SETUP.iter().map(|c| c.row(&fx)));
    let errors_before = errors_so_far();
    let refused = run_rows(ck, refusals(&fx));

    // The device counted every refusal as an error.
    let errors_after = errors_so_far();
    let delta = errors_before
        .zip(errors_after)
        .map(|(x, y)| y.wrapping_sub(x));
    check!(
        ck,
        delta == Some(refused),
        "device error counter: expected {refused} more errors, STATS says {delta:?}"
    );

    // B's data survived all that: a good EVICT brings it back, CPU and device agree.
    expect(ck, "evict B into fresh pages", evict_b(&fx.sg_b2), OK);
    check!(
        ck,
        read_pages(&fx.pa_b2) == fx.data_b,
        "B's data after evict: the evicted pages differ"
    );
    for (name, id, data, what) in [
        ("checksum B", B, &fx.data_b, "B's checksum"),
        ("checksum C", C, &fx.data_c, "C's checksum"),
    ] {
        let cs = expect(ck, name, checksum(id, 0, SIZE), p::RESP_OK_CHECKSUM);
        let crc = cs.response::<p::RespChecksum>().map(|r| r.crc32c);
        check!(
            ck,
            crc == Some(crc32c(data)),
            "{what}: got {crc:x?}, want {:#x}",
            crc32c(data)
        );
    }

    // EVICT into pages the object does not own: A's live backing. B goes to VRAM and is
    // cleaned again (its pages pa_b2 punched), then tries to land on A's pages.
    expect(
        ck,
        "setup: migrate B again",
        obj(p::CMD_MIGRATE, B),
        p::RESP_OK_MIGRATE,
    );
    expect(ck, "setup: clean B again", obj(p::CMD_CLEAN, B), OK);
    let stolen = expect(
        ck,
        "evict into another live object's pages",
        evict_b(&fx.sg_a),
        BB,
    );
    if stolen.status().is_some_and(|h| h.type_ == OK) {
        let clobbered = read_pages(&fx.pa_a) != fx.data_a;
        crate::println!(
            "hostile: DEVICE accepted EVICT of object {B:#x} into object {A:#x}'s pages {:x?} (A's data {})",
            fx.sg_a,
            if clobbered { "overwritten" } else { "intact" }
        );
    }

    run_rows(ck, TEARDOWN.iter().map(|c| c.row(&fx)));
}
