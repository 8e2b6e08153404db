//! `hostile`: the guest attacks its own GPU. Malformed requests go through the control queue,
//! and each must come back as an error (or, where the chain leaves no room for a response, be
//! dropped with used length 0, or make the device signal DEVICE_NEEDS_RESET). The VMM must
//! stay up and the guest must never hang. Afterwards the driver is restarted and the selftest
//! runs in the same boot, so the device is shown to still work.
//!
//! 1. **Command level**, through the normal driver ([`objects::submit_raw`]): unknown object
//!    ids and command types, short requests, bad scatter-gather lists, bad sizes and ranges,
//!    forbidden state transitions, EVICT into pages that are not the object's, undersized
//!    response buffers. Each case names the exact error type the protocol defines.
//! 2. **Descriptor level**, which virtio-drivers' queue cannot produce: [`raw::RawQueue`] resets
//!    the device, sets up the control queue itself and posts descriptor loops, over-long
//!    chains, wrong-direction and zero-length descriptors, buffers outside RAM, a bad head
//!    index, a runaway avail index and rings outside RAM. Each case starts from a reset device
//!    and waits (bounded by the TSC) for a used entry or DEVICE_NEEDS_RESET.
//! 3. **Recovery**: [`objects::reinit`] restarts the driver, a few plain commands and an object
//!    round trip must work, then the selftest runs.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::crc32c::crc32c;
use pvgpu_abi::layout::{MMIO_HOLE_START, PAGE_SIZE, VIRTIO_MMIO_BASE, VRAM_BASE};
use pvgpu_abi::protocol::{self as p, CtrlHdr, MemEntry, Wire};

use super::{selftest, EXIT_FAILED, EXIT_OK};
use crate::user::gpu::cmd::coalesce;
use crate::user::gpu::Cmd;
use crate::user::smp::{self, Job};
use crate::user::{objects, pages};
use pvgpu_abi::request::{
    backing, checksum, copy, create, fill, header as hdr_only, object as obj,
};

/// Size of the request header.
const HDR: usize = core::mem::size_of::<CtrlHdr>();
/// Object ids of this workload: far from the ids the object layer hands out (1, 2, ...).
const ID: u32 = 0x4000_0000;
/// Fills response buffers, so bytes the device did not write can be told apart.
const SENTINEL: u8 = 0xa5;
/// Response buffer of a command-level case (larger than any response).
const RESP_LEN: usize = 128;

/// Passed and failed cases.
struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn check(&mut self, ok: bool, name: &str, detail: fmt::Arguments) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            crate::println!("hostile: FAIL {name}: {detail}");
        }
    }
}

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

/// A response type, with its name when the protocol defines one.
fn type_name(t: u32) -> &'static str {
    match t {
        p::RESP_OK_NODATA => "OK_NODATA",
        p::RESP_OK_INFO => "OK_INFO",
        p::RESP_OK_CHECKSUM => "OK_CHECKSUM",
        p::RESP_OK_STATS => "OK_STATS",
        p::RESP_OK_MIGRATE => "OK_MIGRATE",
        p::RESP_ERR_UNSPEC => "ERR_UNSPEC",
        p::RESP_ERR_OUT_OF_MEMORY => "ERR_OUT_OF_MEMORY",
        p::RESP_ERR_INVALID_OBJECT_ID => "ERR_INVALID_OBJECT_ID",
        p::RESP_ERR_INVALID_PARAMETER => "ERR_INVALID_PARAMETER",
        p::RESP_ERR_INVALID_STATE => "ERR_INVALID_STATE",
        p::RESP_ERR_UNKNOWN_COMMAND => "ERR_UNKNOWN_COMMAND",
        p::RESP_ERR_BAD_REQUEST => "ERR_BAD_REQUEST",
        p::RESP_ERR_BAD_BACKING => "ERR_BAD_BACKING",
        p::RESP_ERR_OBJECT_EXISTS => "ERR_OBJECT_EXISTS",
        p::RESP_ERR_TOO_MANY_OBJECTS => "ERR_TOO_MANY_OBJECTS",
        p::RESP_ERR_OUT_OF_RANGE => "ERR_OUT_OF_RANGE",
        p::RESP_ERR_NOT_NEGOTIATED => "ERR_NOT_NEGOTIATED",
        _ => "?",
    }
}

// ---------------------------------------------------------------------------------------------
// Request helpers (raw bytes from gpu::request, so they can be cut short or carry any value).

/// ATTACH_BACKING or EVICT with a consistent entry count.
fn sg(cmd: u32, id: u32, entries: &[MemEntry]) -> Vec<u8> {
    backing(cmd, id, entries.len() as u32, entries)
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

// ---------------------------------------------------------------------------------------------
// Command level.

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
            type_name(h.type_),
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

/// Sends `req` and expects a response of type `want` (with the request's fence echoed, when
/// the request was long enough to carry one). Returns the command for further checks.
fn expect(t: &mut Tally, name: &str, req: Vec<u8>, want: u32) -> Cmd {
    let c = send(req, RESP_LEN);
    let sent = CtrlHdr::read_from(&c.req);
    let ok = c.status().is_some_and(|h| {
        let fence_ok = match sent {
            Some(s) if s.flags & p::VIRTIO_GPU_FLAG_FENCE != 0 => {
                h.flags & p::VIRTIO_GPU_FLAG_FENCE != 0 && h.fence_id == s.fence_id
            }
            _ => true,
        };
        h.type_ == want && fence_ok
    }) && c.used <= c.resp.len()
        && untouched_after_used(&c);
    t.check(
        ok,
        name,
        format_args!(
            "sent {} bytes [{}], want {want:#x} {}, got {}",
            c.req.len(),
            hex(&c.req),
            type_name(want),
            got(&c)
        ),
    );
    c
}

/// Sends `req` with a response buffer of `resp_len` bytes, too small for its response: the
/// device must write nothing (used 0) or a whole error header, never more than the buffer.
fn undersized(t: &mut Tally, name: &str, req: Vec<u8>, resp_len: usize) {
    let c = send(req, resp_len);
    let ok = c.used == 0 && untouched_after_used(&c);
    t.check(
        ok,
        name,
        format_args!(
            "sent {} bytes [{}] with a {resp_len}-byte response buffer, got {} [{}]",
            c.req.len(),
            hex(&c.req),
            got(&c),
            hex(&c.resp)
        ),
    );
}

/// Guest pages of this workload, given back at the end.
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
        self.0.drain(..).for_each(pages::free);
    }
}

/// `n` bytes of a pattern unique to `seed`.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8))
        .collect()
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

fn errors_so_far() -> Option<u64> {
    let c = send(hdr_only(p::CMD_STATS), RESP_LEN);
    c.response::<p::RespStats>()
        .filter(|s| s.hdr.type_ == p::RESP_OK_STATS)
        .map(|s| s.errors)
}

/// Command-level cases.
fn command_level(t: &mut Tally, info: &BootInfo) {
    const OBJ_PAGES: usize = 4;
    const SIZE: u64 = OBJ_PAGES as u64 * PAGE_SIZE;
    let (a, b, c, d, e, never) = (ID + 1, ID + 2, ID + 3, ID + 4, ID + 5, ID + 0x999);
    let ram = info.ram_size;
    let mut owned = Pages(Vec::new());
    let (Some(pa_a), Some(pa_b), Some(pa_b2), Some(pa_c), Some(pa_e), Some(spare)) = (
        owned.take(OBJ_PAGES),
        owned.take(OBJ_PAGES),
        owned.take(OBJ_PAGES),
        owned.take(OBJ_PAGES),
        owned.take(2),
        owned.take(OBJ_PAGES),
    ) else {
        t.check(false, "allocate guest pages", format_args!("out of pages"));
        return;
    };
    let data_a = pattern(SIZE as usize, 0xa1);
    let data_b = pattern(SIZE as usize, 0xb2);
    let data_c = pattern(SIZE as usize, 0xc3);
    write_pages(&pa_a, &data_a);
    write_pages(&pa_b, &data_b);
    write_pages(&pa_c, &data_c);
    let sg_a = coalesce(&pa_a);
    let sg_b = coalesce(&pa_b);
    let sg_b2 = coalesce(&pa_b2);
    let sg_spare = coalesce(&spare);
    let e0 = pa_e[0];

    // Set-up: A SYSTEM with pages, B CLEANED, C VRAM, D destroyed, E without pages.
    let ok = p::RESP_OK_NODATA;
    expect(t, "setup: create A", create(a, 0, SIZE), ok);
    expect(
        t,
        "setup: attach A",
        sg(p::CMD_ATTACH_BACKING, a, &sg_a),
        ok,
    );
    expect(t, "setup: create B", create(b, 0, SIZE), ok);
    expect(
        t,
        "setup: attach B",
        sg(p::CMD_ATTACH_BACKING, b, &sg_b),
        ok,
    );
    expect(
        t,
        "setup: migrate B",
        obj(p::CMD_MIGRATE, b),
        p::RESP_OK_MIGRATE,
    );
    expect(t, "setup: clean B", obj(p::CMD_CLEAN, b), ok);
    // B's pages were punched: not touched again until they are freed.
    expect(t, "setup: create C", create(c, 0, SIZE), ok);
    expect(
        t,
        "setup: attach C",
        sg(p::CMD_ATTACH_BACKING, c, &coalesce(&pa_c)),
        ok,
    );
    expect(
        t,
        "setup: migrate C",
        obj(p::CMD_MIGRATE, c),
        p::RESP_OK_MIGRATE,
    );
    expect(t, "setup: create D", create(d, 0, PAGE_SIZE), ok);
    expect(t, "setup: destroy D", obj(p::CMD_DESTROY, d), ok);
    expect(t, "setup: create E", create(e, 0, 2 * PAGE_SIZE), ok);
    let errors_before = errors_so_far();
    let errors_expected = core::cell::Cell::new(0u64);
    let err = |t: &mut Tally, name: &str, req: Vec<u8>, want: u32| {
        errors_expected.set(errors_expected.get() + 1);
        expect(t, name, req, want);
    };

    // Unknown object ids: 0, never created, destroyed.
    let bad_id = p::RESP_ERR_INVALID_OBJECT_ID;
    for (what, id) in [
        ("id 0", 0),
        ("never-created id", never),
        ("destroyed id", d),
    ] {
        err(
            t,
            &format!("destroy {what}"),
            obj(p::CMD_DESTROY, id),
            bad_id,
        );
        err(
            t,
            &format!("migrate {what}"),
            obj(p::CMD_MIGRATE, id),
            bad_id,
        );
        err(t, &format!("clean {what}"), obj(p::CMD_CLEAN, id), bad_id);
        err(
            t,
            &format!("attach {what}"),
            sg(p::CMD_ATTACH_BACKING, id, &sg_spare),
            bad_id,
        );
        err(
            t,
            &format!("evict {what}"),
            sg(p::CMD_EVICT, id, &sg_spare),
            bad_id,
        );
        err(t, &format!("fill {what}"), fill(id, 0, 16, 1), bad_id);
        err(t, &format!("copy to {what}"), copy(id, 0, c, 0, 16), bad_id);
        err(
            t,
            &format!("copy from {what}"),
            copy(c, 0, id, 0, 16),
            bad_id,
        );
        err(t, &format!("checksum {what}"), checksum(id, 0, 16), bad_id);
    }
    err(t, "create id 0", create(0, 0, PAGE_SIZE), bad_id);

    // Unknown command types: pvgpu gaps, virtio-gpu 2D/3D/cursor, response types, all ones.
    for ty in [
        0x0000,
        0x0aff,
        0x0a7f,
        0x0100,
        0x0101,
        0x0200,
        0x0300,
        0x1100,
        0x1a00,
        u32::MAX,
    ] {
        err(
            t,
            &format!("unknown type {ty:#x}"),
            hdr_only(ty),
            p::RESP_ERR_UNKNOWN_COMMAND,
        );
    }

    // Requests shorter than their header or struct (a short header carries no fence).
    let short = p::RESP_ERR_BAD_REQUEST;
    err(t, "1-byte request", vec![p::CMD_NOP as u8], short);
    err(
        t,
        "23-byte request",
        cut(hdr_only(p::CMD_GET_INFO), 23),
        short,
    );
    err(
        t,
        "create of 24 bytes",
        cut(create(ID + 50, 0, PAGE_SIZE), 24),
        short,
    );
    err(
        t,
        "create of 39 bytes",
        cut(create(ID + 50, 0, PAGE_SIZE), 39),
        short,
    );
    err(
        t,
        "destroy of 31 bytes",
        cut(obj(p::CMD_DESTROY, a), 31),
        short,
    );
    err(
        t,
        "migrate of 24 bytes",
        cut(obj(p::CMD_MIGRATE, a), 24),
        short,
    );
    err(t, "clean of 31 bytes", cut(obj(p::CMD_CLEAN, c), 31), short);
    err(
        t,
        "attach of 31 bytes",
        cut(sg(p::CMD_ATTACH_BACKING, e, &[ent(e0, 0x2000)]), 31),
        short,
    );
    err(
        t,
        "evict of 24 bytes",
        cut(sg(p::CMD_EVICT, b, &sg_b2), 24),
        short,
    );
    err(t, "fill of 47 bytes", cut(fill(c, 0, 16, 1), 47), short);
    err(t, "copy of 55 bytes", cut(copy(c, 0, c, 16, 16), 55), short);
    err(
        t,
        "checksum of 47 bytes",
        cut(checksum(c, 0, 16), 47),
        short,
    );
    // Longer than the device reads: refused unread, so no fence echo is required.
    let mut huge = vec![0u8; p::MAX_REQUEST_BYTES + 16];
    huge[..HDR].copy_from_slice(CtrlHdr::new(p::CMD_NOP).as_bytes());
    errors_expected.set(errors_expected.get() + 1);
    let hc = send(huge, RESP_LEN);
    t.check(
        hc.used == HDR
            && hc.status().is_some_and(|h| h.type_ == short)
            && untouched_after_used(&hc),
        "request longer than MAX_REQUEST_BYTES",
        format_args!(
            "sent {} bytes, want {short:#x}, got {}",
            hc.req.len(),
            got(&hc)
        ),
    );

    // ATTACH_BACKING lists that must be refused (E has no pages yet and keeps none).
    let bb = p::RESP_ERR_BAD_BACKING;
    let two = 2 * PAGE_SIZE as u32;
    let attach = |entries: &[MemEntry]| sg(p::CMD_ATTACH_BACKING, e, entries);
    err(t, "attach outside guest RAM", attach(&[ent(ram, two)]), bb);
    err(
        t,
        "attach across the end of RAM",
        attach(&[ent(ram - PAGE_SIZE, two)]),
        bb,
    );
    err(
        t,
        "attach in the VRAM window",
        attach(&[ent(VRAM_BASE, two)]),
        bb,
    );
    err(
        t,
        "attach in the MMIO hole",
        attach(&[ent(VIRTIO_MMIO_BASE, two)]),
        bb,
    );
    err(
        t,
        "attach at the MMIO hole start",
        attach(&[ent(MMIO_HOLE_START, two)]),
        bb,
    );
    err(
        t,
        "attach unaligned address",
        attach(&[ent(e0 + 0x800, two)]),
        bb,
    );
    err(
        t,
        "attach unaligned length",
        attach(&[ent(e0, two - 0x800), ent(e0 + 0x1800, 0x800)]),
        bb,
    );
    err(
        t,
        "attach zero-length entry",
        attach(&[ent(e0, 0), ent(e0, two)]),
        bb,
    );
    err(
        t,
        "attach overflowing addr+len",
        attach(&[ent(u64::MAX - 0xfff, two)]),
        bb,
    );
    err(
        t,
        "attach entries short of the size",
        attach(&[ent(e0, PAGE_SIZE as u32)]),
        bb,
    );
    err(
        t,
        "attach entries past the size",
        attach(&[ent(e0, two), ent(pa_e[1], PAGE_SIZE as u32)]),
        bb,
    );
    err(t, "attach no entries", attach(&[]), bb);
    err(
        t,
        "attach length wraps a u32 sum",
        attach(&[ent(e0, 0x8000_0000), ent(e0, 0x8000_0000)]),
        bb,
    );
    let one = [ent(e0, two)];
    err(
        t,
        "attach nr_entries past the data",
        backing(p::CMD_ATTACH_BACKING, e, 4, &one),
        short,
    );
    err(
        t,
        "attach nr_entries = MAX_SG_ENTRIES, data short",
        backing(p::CMD_ATTACH_BACKING, e, p::MAX_SG_ENTRIES, &one),
        short,
    );
    let inval = p::RESP_ERR_INVALID_PARAMETER;
    err(
        t,
        "attach nr_entries > MAX_SG_ENTRIES",
        backing(p::CMD_ATTACH_BACKING, e, p::MAX_SG_ENTRIES + 1, &one),
        inval,
    );
    err(
        t,
        "attach nr_entries = u32::MAX",
        backing(p::CMD_ATTACH_BACKING, e, u32::MAX, &one),
        inval,
    );
    // E still has no pages: a good list works once, then not again.
    let sg_e = coalesce(&pa_e);
    expect(
        t,
        "attach E after the refusals",
        sg(p::CMD_ATTACH_BACKING, e, &sg_e),
        ok,
    );
    err(
        t,
        "attach twice",
        sg(p::CMD_ATTACH_BACKING, e, &sg_e),
        p::RESP_ERR_INVALID_STATE,
    );

    // CREATE values.
    err(t, "create size 0", create(ID + 60, 0, 0), inval);
    err(
        t,
        "create huge size",
        create(ID + 61, 0, !(PAGE_SIZE - 1)),
        inval,
    );
    err(
        t,
        "create size > VRAM",
        create(ID + 62, 0, info.vram_size + PAGE_SIZE),
        inval,
    );
    err(
        t,
        "create unaligned size",
        create(ID + 63, 0, PAGE_SIZE + 1),
        inval,
    );
    err(t, "create flags != 0", create(ID + 64, 1, PAGE_SIZE), inval);
    err(
        t,
        "create flags all ones",
        create(ID + 65, u32::MAX, PAGE_SIZE),
        inval,
    );
    err(
        t,
        "create duplicate id",
        create(a, 0, PAGE_SIZE),
        p::RESP_ERR_OBJECT_EXISTS,
    );

    // Ranges (C is in VRAM, A in guest pages).
    let oor = p::RESP_ERR_OUT_OF_RANGE;
    err(t, "fill past the end", fill(c, 0, SIZE + 1, 1), oor);
    err(t, "fill at the end", fill(c, SIZE, 1, 1), oor);
    err(
        t,
        "fill offset+length overflows",
        fill(c, u64::MAX, 2, 1),
        oor,
    );
    err(t, "fill length u64::MAX", fill(c, 1, u64::MAX, 1), oor);
    err(t, "fill value > 255", fill(c, 0, 16, 256), inval);
    err(
        t,
        "copy source past the end",
        copy(c, 0, c, SIZE - 8, 16),
        oor,
    );
    err(
        t,
        "copy destination past the end",
        copy(c, SIZE - 1, c, 0, 2),
        oor,
    );
    err(
        t,
        "copy source offset overflows",
        copy(c, 0, c, u64::MAX - 1, 4),
        oor,
    );
    err(t, "copy length u64::MAX", copy(c, 0, c, 0, u64::MAX), oor);
    err(
        t,
        "checksum past the end (SYSTEM)",
        checksum(a, 0, SIZE + PAGE_SIZE),
        oor,
    );
    err(
        t,
        "checksum offset+length overflows",
        checksum(a, u64::MAX - 3, 8),
        oor,
    );
    err(
        t,
        "checksum past the end (VRAM)",
        checksum(c, SIZE - 4, 8),
        oor,
    );

    // State transitions.
    let st = p::RESP_ERR_INVALID_STATE;
    err(t, "clean of a SYSTEM object", obj(p::CMD_CLEAN, a), st);
    err(t, "evict of a SYSTEM object", sg(p::CMD_EVICT, a, &[]), st);
    err(t, "fill of a SYSTEM object", fill(a, 0, 16, 1), st);
    err(t, "copy from a SYSTEM object", copy(c, 0, a, 0, 16), st);
    err(t, "migrate twice", obj(p::CMD_MIGRATE, c), st);
    err(t, "clean twice", obj(p::CMD_CLEAN, b), st);
    err(t, "migrate of a CLEANED object", obj(p::CMD_MIGRATE, b), st);
    err(
        t,
        "attach to a CLEANED object",
        sg(p::CMD_ATTACH_BACKING, b, &sg_b2),
        st,
    );
    err(
        t,
        "evict CLEANED without pages",
        sg(p::CMD_EVICT, b, &[]),
        inval,
    );
    err(
        t,
        "evict into pages outside RAM",
        sg(p::CMD_EVICT, b, &[ent(ram, SIZE as u32)]),
        bb,
    );
    err(
        t,
        "evict into the VRAM window",
        sg(p::CMD_EVICT, b, &[ent(VRAM_BASE, SIZE as u32)]),
        bb,
    );
    err(
        t,
        "evict into the MMIO hole",
        sg(p::CMD_EVICT, b, &[ent(VIRTIO_MMIO_BASE, SIZE as u32)]),
        bb,
    );
    err(
        t,
        "evict into too few pages",
        sg(
            p::CMD_EVICT,
            b,
            &sg_b2[..1]
                .iter()
                .map(|x| ent(x.addr, PAGE_SIZE as u32))
                .collect::<Vec<_>>(),
        ),
        bb,
    );
    err(
        t,
        "evict overflowing addr+len",
        sg(p::CMD_EVICT, b, &[ent(u64::MAX - 0xfff, SIZE as u32)]),
        bb,
    );

    // Undersized response buffers: the command does not run and nothing is written.
    undersized(t, "nop, 1-byte response", hdr_only(p::CMD_NOP), 1);
    undersized(t, "nop, 23-byte response", hdr_only(p::CMD_NOP), 23);
    undersized(t, "unknown type, 8-byte response", hdr_only(0x0aff), 8);
    undersized(t, "bad id, 23-byte response", obj(p::CMD_CLEAN, never), 23);
    undersized(
        t,
        "get_info, 24-byte response",
        hdr_only(p::CMD_GET_INFO),
        HDR,
    );
    undersized(
        t,
        "get_info, 63-byte response",
        hdr_only(p::CMD_GET_INFO),
        63,
    );
    undersized(t, "stats, 103-byte response", hdr_only(p::CMD_STATS), 103);
    undersized(t, "checksum, 31-byte response", checksum(c, 0, SIZE), 31);
    // A command whose answer does not fit is not run at all, and counts as a failed command.
    errors_expected.set(errors_expected.get() + 8);
    // A buffer larger than the response gets just the response.
    let big = send(hdr_only(p::CMD_NOP), 4096);
    t.check(
        big.used == HDR && untouched_after_used(&big),
        "nop, 4096-byte response",
        format_args!("got {}", got(&big)),
    );

    // The device counted every refusal as an error.
    let errors_after = errors_so_far();
    let delta = errors_before
        .zip(errors_after)
        .map(|(x, y)| y.wrapping_sub(x));
    t.check(
        delta == Some(errors_expected.get()),
        "device error counter",
        format_args!(
            "expected {} more errors, STATS says {delta:?}",
            errors_expected.get()
        ),
    );

    // B's data survived all that: a good EVICT brings it back, CPU and device agree.
    expect(
        t,
        "evict B into fresh pages",
        sg(p::CMD_EVICT, b, &sg_b2),
        ok,
    );
    t.check(
        read_pages(&pa_b2) == data_b,
        "B's data after evict",
        format_args!("the evicted pages differ"),
    );
    let cs = expect(t, "checksum B", checksum(b, 0, SIZE), p::RESP_OK_CHECKSUM);
    let crc = cs.response::<p::RespChecksum>().map(|r| r.crc32c);
    t.check(
        crc == Some(crc32c(&data_b)),
        "B's checksum",
        format_args!("got {crc:x?}, want {:#x}", crc32c(&data_b)),
    );
    let cs = expect(t, "checksum C", checksum(c, 0, SIZE), p::RESP_OK_CHECKSUM);
    let crc = cs.response::<p::RespChecksum>().map(|r| r.crc32c);
    t.check(
        crc == Some(crc32c(&data_c)),
        "C's checksum",
        format_args!("got {crc:x?}, want {:#x}", crc32c(&data_c)),
    );

    // EVICT into pages the object does not own: A's live backing. B goes to VRAM and is
    // cleaned again (its pages pa_b2 punched), then tries to land on A's pages.
    expect(
        t,
        "setup: migrate B again",
        obj(p::CMD_MIGRATE, b),
        p::RESP_OK_MIGRATE,
    );
    expect(t, "setup: clean B again", obj(p::CMD_CLEAN, b), ok);
    let stolen = expect(
        t,
        "evict into another live object's pages",
        sg(p::CMD_EVICT, b, &sg_a),
        bb,
    );
    if stolen.status().is_some_and(|h| h.type_ == ok) {
        let clobbered = read_pages(&pa_a) != data_a;
        crate::println!(
            "hostile: DEVICE accepted EVICT of object {b:#x} into object {a:#x}'s pages {:x?} (A's data {})",
            sg_a,
            if clobbered { "overwritten" } else { "intact" }
        );
    }

    // Clean up: every object goes; the pages go back when `owned` drops.
    for (name, id) in [("A", a), ("B", b), ("C", c), ("E", e)] {
        expect(t, &format!("destroy {name}"), obj(p::CMD_DESTROY, id), ok);
    }
    expect(t, "destroy twice", obj(p::CMD_DESTROY, e), bad_id);
}

// ---------------------------------------------------------------------------------------------
// Descriptor level.

/// A split virtqueue driven by hand, to post descriptor chains no well-behaved driver would.
mod raw {
    use core::alloc::Layout;
    use core::ptr::{read_volatile, write_volatile};
    use core::sync::atomic::{fence, Ordering};

    use pvgpu_abi::layout::PAGE_SIZE;
    use pvgpu_abi::protocol as p;

    use crate::user::clock;

    /// Entries in the queue.
    pub const QSIZE: u16 = 16;
    /// Descriptor flag: `next` is valid.
    pub const F_NEXT: u16 = 1;
    /// Descriptor flag: device-writable.
    pub const F_WRITE: u16 = 2;
    /// Descriptor flag: an indirect table.
    pub const F_INDIRECT: u16 = 4;
    /// Device status: the device needs a reset.
    pub const NEEDS_RESET: u32 = 0x40;

    // virtio-mmio v2 registers.
    const MAGIC: u64 = 0x00;
    const DEVICE_FEATURES: u64 = 0x10;
    const DEVICE_FEATURES_SEL: u64 = 0x14;
    const DRIVER_FEATURES: u64 = 0x20;
    const DRIVER_FEATURES_SEL: u64 = 0x24;
    const QUEUE_SEL: u64 = 0x30;
    const QUEUE_NUM_MAX: u64 = 0x34;
    const QUEUE_NUM: u64 = 0x38;
    const QUEUE_READY: u64 = 0x44;
    const QUEUE_NOTIFY: u64 = 0x50;
    const INTERRUPT_STATUS: u64 = 0x60;
    const INTERRUPT_ACK: u64 = 0x64;
    const STATUS: u64 = 0x70;
    const QUEUE_DESC_LOW: u64 = 0x80;
    const QUEUE_DRIVER_LOW: u64 = 0x90;
    const QUEUE_DEVICE_LOW: u64 = 0xa0;

    const ACKNOWLEDGE: u32 = 1;
    const DRIVER: u32 = 2;
    const DRIVER_OK: u32 = 4;
    const FEATURES_OK: u32 = 8;

    /// Pages: descriptor table, avail ring, used ring, then buffers.
    const PAGES: usize = 3 + BUFFERS;
    /// Buffer pages.
    pub const BUFFERS: usize = 4;

    /// One split-queue descriptor.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Desc {
        /// Guest-physical address.
        pub addr: u64,
        /// Length.
        pub len: u32,
        /// `F_*`.
        pub flags: u16,
        /// Next descriptor, with `F_NEXT`.
        pub next: u16,
    }

    impl Desc {
        /// A descriptor.
        pub const fn new(addr: u64, len: u32, flags: u16, next: u16) -> Desc {
            Desc {
                addr,
                len,
                flags,
                next,
            }
        }
    }

    /// What the device did with a posted chain.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Outcome {
        /// It put the chain on the used ring.
        Used {
            /// Head index.
            id: u32,
            /// Bytes written.
            len: u32,
        },
        /// It set DEVICE_NEEDS_RESET.
        NeedsReset,
        /// Neither, within the time limit.
        Timeout,
    }

    /// Ring addresses, when not the queue's own.
    #[derive(Clone, Copy, Debug)]
    pub struct Rings {
        /// Descriptor table.
        pub desc: u64,
        /// Avail ring.
        pub avail: u64,
        /// Used ring.
        pub used: u64,
    }

    /// The hand-driven queue and its memory.
    pub struct RawQueue {
        regs: u64,
        mem: *mut u8,
        ram_size: u64,
        next_avail: u16,
        last_used: u16,
    }

    fn layout() -> Option<Layout> {
        Layout::from_size_align(PAGES * PAGE_SIZE as usize, PAGE_SIZE as usize).ok()
    }

    impl RawQueue {
        /// Queue memory on the heap (identity-mapped guest RAM) for the device at `regs`.
        pub fn new(regs: u64, ram_size: u64) -> Option<RawQueue> {
            let l = layout()?;
            // SAFETY: the layout has a non-zero size.
            let mem = unsafe { alloc::alloc::alloc_zeroed(l) };
            if mem.is_null() {
                return None;
            }
            let q = RawQueue {
                regs,
                mem,
                ram_size,
                next_avail: 0,
                last_used: 0,
            };
            // The device reaches the rings by physical address: they must be identity-mapped
            // RAM (dropping `q` gives the memory back otherwise).
            let end = (mem as u64).checked_add(l.size() as u64)?;
            (end <= ram_size).then_some(q)
        }

        fn read(&self, off: u64) -> u32 {
            // SAFETY: ring 0 maps the virtio-mmio window (uncached) for ring 3 at its physical
            // address; `off` is a register offset inside it.
            unsafe { read_volatile((self.regs + off) as *const u32) }
        }

        fn write(&self, off: u64, v: u32) {
            // SAFETY: as in `read`.
            unsafe { write_volatile((self.regs + off) as *mut u32, v) }
        }

        fn page(&self, i: usize) -> u64 {
            self.mem as u64 + (i as u64) * PAGE_SIZE
        }

        /// Guest-physical address of buffer page `i` (< [`BUFFERS`]).
        pub fn buf(&self, i: usize) -> u64 {
            self.page(3 + i.min(BUFFERS - 1))
        }

        /// Writes `bytes` at `off` in buffer page `i`.
        pub fn put(&mut self, i: usize, off: usize, bytes: &[u8]) {
            let n = bytes.len().min((PAGE_SIZE as usize).saturating_sub(off));
            // SAFETY: the destination lies inside buffer page `i`, which this queue owns.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.buf(i) as *mut u8).add(off), n)
            };
        }

        /// Fills buffer page `i` with `b`.
        pub fn fill(&mut self, i: usize, b: u8) {
            // SAFETY: buffer page `i` is this queue's own.
            unsafe { core::ptr::write_bytes(self.buf(i) as *mut u8, b, PAGE_SIZE as usize) };
        }

        /// `n` bytes at `off` of buffer page `i`.
        pub fn get(&self, i: usize, off: usize, n: usize) -> alloc::vec::Vec<u8> {
            let n = n.min((PAGE_SIZE as usize).saturating_sub(off));
            let mut v = alloc::vec![0u8; n];
            for (k, x) in v.iter_mut().enumerate() {
                // SAFETY: off + k < PAGE_SIZE, inside buffer page `i`, which this queue owns;
                // the device may write it, so it is read volatile, byte by byte.
                *x = unsafe { read_volatile((self.buf(i) as *const u8).add(off + k)) };
            }
            v
        }

        /// Device status.
        pub fn status(&self) -> u32 {
            self.read(STATUS)
        }

        /// Whether the register window still reads as a virtio-mmio device.
        pub fn magic_ok(&self) -> bool {
            self.read(MAGIC) == 0x7472_6976
        }

        /// Resets the device (it forgets the queue and every object).
        pub fn reset(&mut self) {
            self.write(STATUS, 0);
            let isr = self.read(INTERRUPT_STATUS);
            self.write(INTERRUPT_ACK, isr);
        }

        /// Resets the device, negotiates virtio 1 and pvgpu, and sets the queue up on `rings`
        /// (or this queue's own memory), then DRIVER_OK.
        pub fn start(&mut self, rings: Option<Rings>) -> Result<(), &'static str> {
            self.reset();
            if self.status() != 0 {
                return Err("the status does not read 0 after reset");
            }
            for i in 0..3 {
                // SAFETY: the ring pages are this queue's own; the device was just reset and
                // no longer uses them.
                unsafe { core::ptr::write_bytes(self.page(i) as *mut u8, 0, PAGE_SIZE as usize) };
            }
            self.next_avail = 0;
            self.last_used = 0;
            self.write(STATUS, ACKNOWLEDGE);
            self.write(STATUS, ACKNOWLEDGE | DRIVER);
            self.write(DEVICE_FEATURES_SEL, 0);
            let lo = self.read(DEVICE_FEATURES);
            self.write(DEVICE_FEATURES_SEL, 1);
            let hi = self.read(DEVICE_FEATURES);
            let offered = u64::from(lo) | (u64::from(hi) << 32);
            let wanted = (1u64 << p::VIRTIO_F_VERSION_1) | (1 << p::VIRTIO_GPU_F_PVGPU_MEM);
            if offered & wanted != wanted {
                return Err("the device lacks VERSION_1 or PVGPU_MEM");
            }
            self.write(DRIVER_FEATURES_SEL, 0);
            self.write(DRIVER_FEATURES, wanted as u32);
            self.write(DRIVER_FEATURES_SEL, 1);
            self.write(DRIVER_FEATURES, (wanted >> 32) as u32);
            self.write(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
            if self.status() & FEATURES_OK == 0 {
                return Err("the device refused FEATURES_OK");
            }
            self.write(QUEUE_SEL, u32::from(p::CONTROLQ));
            if self.read(QUEUE_READY) != 0 {
                return Err("the queue is ready after reset");
            }
            if self.read(QUEUE_NUM_MAX) < u32::from(QSIZE) {
                return Err("QueueNumMax is below 16");
            }
            self.write(QUEUE_NUM, u32::from(QSIZE));
            let r = rings.unwrap_or(self.own_rings());
            for (reg, addr) in [
                (QUEUE_DESC_LOW, r.desc),
                (QUEUE_DRIVER_LOW, r.avail),
                (QUEUE_DEVICE_LOW, r.used),
            ] {
                self.write(reg, addr as u32);
                self.write(reg + 4, (addr >> 32) as u32);
            }
            self.write(QUEUE_READY, 1);
            self.write(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
            if self.status() & DRIVER_OK == 0 {
                return Err("the device did not take DRIVER_OK");
            }
            Ok(())
        }

        /// The queue's own rings.
        pub fn own_rings(&self) -> Rings {
            Rings {
                desc: self.page(0),
                avail: self.page(1),
                used: self.page(2),
            }
        }

        /// Writes `descs` at table indices 0.., puts `heads` on the avail ring, sets the avail
        /// index (to `idx`, or to the number posted) and notifies.
        pub fn post(&mut self, descs: &[Desc], heads: &[u16], idx: Option<u16>) {
            let table = self.page(0) as *mut u8;
            for (i, d) in descs.iter().take(QSIZE as usize).enumerate() {
                // SAFETY: the descriptor table is this queue's page 0; entry i < QSIZE is
                // inside it (16 bytes each); the fields are written at their virtio offsets.
                unsafe {
                    let e = table.add(i * 16);
                    write_volatile(e as *mut u64, d.addr);
                    write_volatile(e.add(8) as *mut u32, d.len);
                    write_volatile(e.add(12) as *mut u16, d.flags);
                    write_volatile(e.add(14) as *mut u16, d.next);
                }
            }
            let avail = self.page(1) as *mut u16;
            for &h in heads {
                let slot = 2 + (self.next_avail % QSIZE) as usize;
                // SAFETY: avail ring page: flags, idx, then QSIZE u16 entries; slot is inside.
                unsafe { write_volatile(avail.add(slot), h) };
                self.next_avail = self.next_avail.wrapping_add(1);
            }
            self.publish(idx.unwrap_or(self.next_avail));
        }

        fn publish(&mut self, idx: u16) {
            fence(Ordering::SeqCst);
            // SAFETY: the avail ring's idx field, at byte 2 of page 1.
            unsafe { write_volatile((self.page(1) as *mut u16).add(1), idx) };
            fence(Ordering::SeqCst);
            self.notify(p::CONTROLQ);
        }

        /// Writes `queue` to QueueNotify.
        pub fn notify(&mut self, queue: u16) {
            self.write(QUEUE_NOTIFY, u32::from(queue));
        }

        /// Waits up to `timeout_us` for the next used entry or DEVICE_NEEDS_RESET.
        pub fn wait(&mut self, timeout_us: u64) -> Outcome {
            let start = clock::ticks();
            let used = self.page(2) as *const u8;
            loop {
                // SAFETY: the used ring's idx field, at byte 2 of page 2.
                let idx = unsafe { read_volatile(used.add(2) as *const u16) };
                if idx != self.last_used {
                    fence(Ordering::SeqCst);
                    let slot = (self.last_used % QSIZE) as usize;
                    // SAFETY: used ring element `slot` (8 bytes at 4 + 8 * slot) is in page 2.
                    let (id, len) = unsafe {
                        let e = used.add(4 + 8 * slot);
                        (
                            read_volatile(e as *const u32),
                            read_volatile(e.add(4) as *const u32),
                        )
                    };
                    self.last_used = self.last_used.wrapping_add(1);
                    return Outcome::Used { id, len };
                }
                if self.status() & NEEDS_RESET != 0 {
                    return Outcome::NeedsReset;
                }
                if clock::expired(start, timeout_us) {
                    return Outcome::Timeout;
                }
                core::hint::spin_loop();
            }
        }

        /// Guest RAM size (addresses at or past it are not RAM).
        pub fn ram_size(&self) -> u64 {
            self.ram_size
        }
    }

    impl Drop for RawQueue {
        fn drop(&mut self) {
            // The device must stop using the rings before their memory goes back.
            self.reset();
            if let Some(l) = layout() {
                // SAFETY: `mem` came from alloc_zeroed with this layout.
                unsafe { alloc::alloc::dealloc(self.mem, l) };
            }
        }
    }
}

use raw::{Desc, Outcome, RawQueue, F_INDIRECT, F_NEXT, F_WRITE, QSIZE};

/// How long a descriptor-level case may take before it counts as a hang.
const RAW_TIMEOUT_US: u64 = 2_000_000;

/// What a descriptor-level case accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accept {
    /// A plain OK answer (the control case).
    Ok,
    /// An error response header in the response buffer, or DEVICE_NEEDS_RESET.
    Error,
    /// No response can be written: used length 0 with the buffers untouched, or
    /// DEVICE_NEEDS_RESET.
    Dropped,
    /// Any whole response (OK or error), used length 0, or DEVICE_NEEDS_RESET: the point is
    /// only that the device answers and does not hang.
    Answered,
    /// DEVICE_NEEDS_RESET only (the queue itself is unusable).
    Reset,
}

/// A descriptor-level case: fresh device, `descs` posted with `heads`, then checked.
struct RawCase<'a> {
    name: &'a str,
    descs: &'a [Desc],
    heads: &'a [u16],
    accept: Accept,
    /// Queue rings elsewhere than the queue's own memory.
    rings: Option<raw::Rings>,
    /// Set the avail index to this instead of the number posted.
    avail_idx: Option<u16>,
}

fn raw_case(t: &mut Tally, q: &mut RawQueue, rc: RawCase) {
    // Buffer 0: the request (a fenced NOP); buffers 1..: response space full of sentinels.
    if let Err(e) = q.start(rc.rings) {
        t.check(
            false,
            rc.name,
            format_args!("could not set the queue up: {e}"),
        );
        return;
    }
    q.fill(0, 0);
    q.put(0, 0, CtrlHdr::fenced(p::CMD_NOP, 0x77).as_bytes());
    for i in 1..raw::BUFFERS {
        q.fill(i, SENTINEL);
    }
    q.post(rc.descs, rc.heads, rc.avail_idx);
    let out = q.wait(RAW_TIMEOUT_US);
    let resp = q.get(1, 0, 64);
    let hdr = CtrlHdr::read_from(&resp).filter(|_| resp[..HDR].iter().any(|&b| b != SENTINEL));
    let untouched = (1..raw::BUFFERS).all(|i| {
        q.get(i, 0, PAGE_SIZE as usize)
            .iter()
            .all(|&b| b == SENTINEL)
    });
    let is_err = hdr.is_some_and(|h| p::is_error(h.type_));
    let ok = match (rc.accept, out) {
        (_, Outcome::Timeout) => false,
        (Accept::Reset, o) => o == Outcome::NeedsReset,
        (_, Outcome::NeedsReset) => rc.accept != Accept::Ok,
        (Accept::Ok, Outcome::Used { len, .. }) => {
            len as usize == HDR
                && hdr.is_some_and(|h| h.type_ == p::RESP_OK_NODATA && h.fence_id == 0x77)
        }
        (Accept::Error, Outcome::Used { len, .. }) => {
            len as usize >= HDR && len <= PAGE_SIZE as u32 && is_err
        }
        (Accept::Dropped, Outcome::Used { len, .. }) => len == 0 && untouched,
        (Accept::Answered, Outcome::Used { len, .. }) => {
            (len == 0 && untouched)
                || (len as usize >= HDR && len <= PAGE_SIZE as u32 && hdr.is_some())
        }
    };
    let chain: String = rc
        .descs
        .iter()
        .enumerate()
        .map(|(i, d)| format!(" d{i}={:#x}+{:#x}/f{}/n{}", d.addr, d.len, d.flags, d.next))
        .collect();
    t.check(
        ok,
        rc.name,
        format_args!(
            "sent heads {:?} avail {:?}{chain}; want {:?}, got {:?}, status {:#x}, response {}",
            rc.heads,
            rc.avail_idx,
            rc.accept,
            out,
            q.status(),
            match hdr {
                Some(h) => format!("type {:#x} {}", h.type_, type_name(h.type_)),
                None => String::from("none"),
            }
        ),
    );
    if !q.magic_ok() {
        t.check(
            false,
            rc.name,
            format_args!("the register window no longer reads as virtio-mmio"),
        );
    }
}

/// Descriptor-level cases.
fn descriptor_level(t: &mut Tally, info: &BootInfo) {
    let Some(mut q) = RawQueue::new(info.virtio_mmio_base, info.ram_size) else {
        t.check(
            false,
            "raw queue memory",
            format_args!("no identity-mapped heap memory"),
        );
        return;
    };
    let req = q.buf(0);
    let resp = q.buf(1);
    let ram = q.ram_size();
    // An address clear of RAM but below the MMIO hole, if there is room (else RAM's end).
    let past_ram = if ram + (1 << 20) < MMIO_HOLE_START {
        ram + (1 << 20)
    } else {
        ram
    };
    let r = |addr, len| Desc::new(addr, len, F_NEXT, 1);
    let w = |addr, len| Desc::new(addr, len, F_WRITE, 0);
    let nop = HDR as u32;
    let cases: Vec<(&str, Vec<Desc>, Accept)> = vec![
        (
            "raw: a good NOP",
            vec![r(req, nop), w(resp, 64)],
            Accept::Ok,
        ),
        (
            "raw: descriptor loop (writable points back to the head)",
            vec![r(req, nop), Desc::new(resp, 64, F_WRITE | F_NEXT, 0)],
            Accept::Error,
        ),
        (
            "raw: descriptor loop on itself, readable only",
            vec![Desc::new(req, nop, F_NEXT, 0)],
            Accept::Dropped,
        ),
        (
            "raw: descriptor loop on itself (writable)",
            vec![r(req, nop), Desc::new(resp, 64, F_WRITE | F_NEXT, 1)],
            Accept::Error,
        ),
        (
            // Every descriptor links to the next, the last back to the head; the first
            // writable one is the start of the response buffer, where the answer is read.
            "raw: chain longer than the queue",
            core::iter::once(r(req, nop))
                .chain((1..QSIZE).map(|i| {
                    Desc::new(
                        resp + 64 * u64::from(i - 1),
                        64,
                        F_WRITE | F_NEXT,
                        (i + 1) % QSIZE,
                    )
                }))
                .collect(),
            Accept::Error,
        ),
        (
            "raw: next index out of range",
            vec![r(req, nop), Desc::new(resp, 64, F_WRITE | F_NEXT, 0x1234)],
            Accept::Error,
        ),
        (
            "raw: response descriptor device-readable",
            vec![r(req, nop), Desc::new(resp, 64, 0, 0)],
            Accept::Dropped,
        ),
        (
            "raw: readable after writable",
            vec![
                Desc::new(resp, 64, F_WRITE | F_NEXT, 1),
                Desc::new(req, nop, 0, 0),
            ],
            Accept::Error,
        ),
        (
            "raw: request past the end of RAM",
            vec![r(past_ram, nop), w(resp, 64)],
            Accept::Error,
        ),
        (
            "raw: request in the VRAM window",
            vec![r(VRAM_BASE, nop), w(resp, 64)],
            Accept::Error,
        ),
        (
            "raw: request in the MMIO hole",
            vec![r(VIRTIO_MMIO_BASE, nop), w(resp, 64)],
            Accept::Error,
        ),
        (
            "raw: request across the end of RAM",
            vec![r(ram - 8, nop), w(resp, 64)],
            Accept::Error,
        ),
        (
            "raw: request address overflows",
            vec![r(u64::MAX - 7, nop), w(resp, 64)],
            Accept::Error,
        ),
        (
            "raw: request of 2 GiB",
            vec![r(req, 0x8000_0000), w(resp, 64)],
            Accept::Error,
        ),
        (
            "raw: response past the end of RAM",
            vec![r(req, nop), w(past_ram, 64)],
            Accept::Dropped,
        ),
        (
            "raw: response in the VRAM window",
            vec![r(req, nop), w(VRAM_BASE, 64)],
            Accept::Dropped,
        ),
        (
            "raw: response in the MMIO hole",
            vec![r(req, nop), w(VIRTIO_MMIO_BASE, 64)],
            Accept::Dropped,
        ),
        (
            "raw: zero-length request",
            vec![r(req, 0), w(resp, 64)],
            Accept::Error,
        ),
        (
            "raw: zero-length response",
            vec![r(req, nop), w(resp, 0)],
            Accept::Dropped,
        ),
        (
            "raw: zero-length descriptor inside a chain",
            vec![r(req, nop), Desc::new(req, 0, F_NEXT, 2), w(resp, 64)],
            Accept::Answered,
        ),
        (
            "raw: indirect descriptor (not negotiated) outside RAM",
            vec![Desc::new(VRAM_BASE, 32, F_INDIRECT, 0)],
            Accept::Answered,
        ),
    ];
    for (name, descs, accept) in &cases {
        raw_case(
            t,
            &mut q,
            RawCase {
                name,
                descs,
                heads: &[0],
                accept: *accept,
                rings: None,
                avail_idx: None,
            },
        );
    }
    let good = [r(req, nop), w(resp, 64)];
    raw_case(
        t,
        &mut q,
        RawCase {
            name: "raw: head index out of range",
            descs: &good,
            heads: &[200],
            accept: Accept::Answered,
            rings: None,
            avail_idx: None,
        },
    );
    raw_case(
        t,
        &mut q,
        RawCase {
            name: "raw: avail index far ahead",
            descs: &good,
            heads: &[0],
            accept: Accept::Error,
            rings: None,
            avail_idx: Some(0x8000),
        },
    );
    let own = q.own_rings();
    raw_case(
        t,
        &mut q,
        RawCase {
            name: "raw: descriptor table in the VRAM window",
            descs: &good,
            heads: &[0],
            accept: Accept::Reset,
            rings: Some(raw::Rings {
                desc: VRAM_BASE,
                ..own
            }),
            avail_idx: None,
        },
    );
    raw_case(
        t,
        &mut q,
        RawCase {
            name: "raw: used ring in the MMIO hole",
            descs: &good,
            heads: &[0],
            accept: Accept::Reset,
            rings: Some(raw::Rings {
                used: VIRTIO_MMIO_BASE,
                ..own
            }),
            avail_idx: None,
        },
    );
    raw_case(
        t,
        &mut q,
        RawCase {
            name: "raw: used ring past the end of RAM",
            descs: &good,
            heads: &[0],
            accept: Accept::Reset,
            rings: Some(raw::Rings {
                used: past_ram,
                ..own
            }),
            avail_idx: None,
        },
    );
    // After all that, the same hand-made queue still carries a good request.
    raw_case(
        t,
        &mut q,
        RawCase {
            name: "raw: a good NOP afterwards",
            descs: &good,
            heads: &[0],
            accept: Accept::Ok,
            rings: None,
            avail_idx: None,
        },
    );
    // Dropping the queue resets the device.
}

// ---------------------------------------------------------------------------------------------
// Recovery and the run.

/// The driver is back: plain commands and an object round trip work.
fn recovery(t: &mut Tally, info: &BootInfo) -> bool {
    let restarted = objects::reinit(info);
    t.check(
        restarted.is_ok(),
        "restart the driver",
        format_args!("{restarted:?}"),
    );
    if restarted.is_err() {
        return false;
    }
    let before = t.failed;
    expect(
        t,
        "nop after restart",
        hdr_only(p::CMD_NOP),
        p::RESP_OK_NODATA,
    );
    expect(
        t,
        "get_info after restart",
        hdr_only(p::CMD_GET_INFO),
        p::RESP_OK_INFO,
    );
    let s = expect(
        t,
        "stats after restart",
        hdr_only(p::CMD_STATS),
        p::RESP_OK_STATS,
    );
    let live = s.response::<p::RespStats>().map(|s| s.objects_live);
    t.check(
        live == Some(0),
        "no objects survive the reset",
        format_args!("objects_live {live:?}"),
    );
    let task = 0;
    let data = pattern(3 * PAGE_SIZE as usize, 0x5a);
    let round_trip = (|| -> Result<bool, objects::ObjError> {
        let h = objects::create(task, data.len() as u64)?;
        objects::write_at(task, h, 0, &data)?;
        objects::migrate(task, h)?;
        objects::clean(task, h)?;
        let crc = objects::checksum(task, h, 0, data.len() as u64)?;
        let mut back = vec![0u8; data.len()];
        objects::evict(task, h)?;
        objects::read_at(task, h, 0, &mut back)?;
        objects::close(task, h)?;
        Ok(crc == crc32c(&data) && back == data)
    })();
    t.check(
        round_trip == Ok(true),
        "object round trip after restart",
        format_args!("{round_trip:?}"),
    );
    t.failed == before
}

/// vCPU 0: runs every case, then the selftest; exit 0 only if all passed.
pub fn run(info: &BootInfo) -> u8 {
    let mut t = Tally {
        passed: 0,
        failed: 0,
    };
    if !objects::available() {
        crate::println!("hostile: FAIL: no GPU device");
        smp::post(Job::Park);
        return EXIT_FAILED;
    }
    command_level(&mut t, info);
    let after_commands = (t.passed, t.failed);
    crate::println!(
        "hostile: command level: {} passed, {} failed",
        after_commands.0,
        after_commands.1
    );
    descriptor_level(&mut t, info);
    crate::println!(
        "hostile: descriptor level: {} passed, {} failed",
        t.passed - after_commands.0,
        t.failed - after_commands.1
    );
    let works = recovery(&mut t, info);
    let total = t.passed + t.failed;
    if t.failed == 0 && works {
        crate::println!("hostile: PASS ({} of {total} cases)", t.passed);
    } else {
        crate::println!("hostile: FAIL ({} of {total} cases failed)", t.failed);
    }
    // The selftest, in the same boot, on every vCPU.
    smp::post(Job::Selftest);
    let selftest = selftest::run(info);
    if t.failed == 0 && works && selftest == EXIT_OK {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}
