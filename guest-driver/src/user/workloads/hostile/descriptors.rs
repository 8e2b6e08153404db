//! Descriptor level: chains virtio-drivers' queue cannot produce, posted on a hand-driven
//! queue ([`RawQueue`]): descriptor loops, over-long chains, wrong-direction and zero-length
//! descriptors, buffers outside RAM, a bad head index, a runaway avail index and rings
//! outside RAM. Each case starts from a reset device and waits (bounded by the TSC) for a used
//! entry or DEVICE_NEEDS_RESET.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::layout::{MMIO_HOLE_START, PAGE_SIZE, VIRTIO_MMIO_BASE, VRAM_BASE};
use pvgpu_abi::protocol::{self as p, CtrlHdr, Wire};
use pvgpu_abi::virtio_mmio::desc::{F_INDIRECT, F_NEXT, F_WRITE};

use super::raw_queue::{self, Desc, Outcome, RawQueue, Rings, QSIZE};
use super::{HDR, SENTINEL};
use crate::check;
use crate::user::workloads::checker::Checker;

/// How long a descriptor-level case may take before it counts as a hang.
const RAW_TIMEOUT_US: u64 = 2_000_000;
/// The request every case carries: a fenced NOP, one header long.
const NOP: u32 = HDR as u32;
/// The fence of that NOP.
const FENCE: u64 = 0x77;

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

/// The addresses a case's chain and rings are made of.
struct Bufs {
    /// Buffer page 0: the request.
    req: u64,
    /// Buffer pages 1..: response space.
    resp: u64,
    /// Guest RAM size.
    ram: u64,
    /// An address clear of RAM but below the MMIO hole, if there is room (else RAM's end).
    past_ram: u64,
    /// The queue's own rings.
    own: Rings,
}

/// A descriptor-level case: a fresh device, the chain posted with `heads`, then checked.
struct RawCase {
    name: &'static str,
    /// The descriptors, written at table indices 0...
    chain: fn(&Bufs) -> Vec<Desc>,
    /// Heads put on the avail ring.
    heads: &'static [u16],
    accept: Accept,
    /// The queue's rings (the queue's own memory when None).
    rings: fn(&Bufs) -> Option<Rings>,
    /// The avail index to set instead of the number posted.
    avail_idx: Option<u16>,
}

fn own_rings(_: &Bufs) -> Option<Rings> {
    None
}

impl RawCase {
    /// A chain with head 0 on the queue's own rings.
    const fn new(name: &'static str, accept: Accept, chain: fn(&Bufs) -> Vec<Desc>) -> Self {
        RawCase {
            name,
            chain,
            heads: &[0],
            accept,
            rings: own_rings,
            avail_idx: None,
        }
    }

    /// A good NOP chain with head 0 on `rings`.
    const fn rings(name: &'static str, rings: fn(&Bufs) -> Option<Rings>) -> Self {
        RawCase {
            rings,
            ..RawCase::new(name, Accept::Reset, good)
        }
    }
}

/// A device-readable descriptor chained to index 1.
fn rd(addr: u64, len: u32) -> Desc {
    Desc::new(addr, len, F_NEXT, 1)
}

/// A device-writable descriptor that ends its chain.
fn wr(addr: u64, len: u32) -> Desc {
    Desc::new(addr, len, F_WRITE, 0)
}

/// A well-formed NOP: the request, then a 64-byte response buffer.
fn good(b: &Bufs) -> Vec<Desc> {
    vec![rd(b.req, NOP), wr(b.resp, 64)]
}

/// Every descriptor links to the next, the last back to the head; the first writable one is
/// the start of the response buffer, where the answer is read.
fn longer_than_the_queue(b: &Bufs) -> Vec<Desc> {
    core::iter::once(rd(b.req, NOP))
        .chain((1..QSIZE).map(|i| {
            Desc::new(
                b.resp + 64 * u64::from(i - 1),
                64,
                F_WRITE | F_NEXT,
                (i + 1) % QSIZE,
            )
        }))
        .collect()
}

/// Every case, in order: each starts from a reset device.
const CASES: &[RawCase] = &[
    RawCase::new("raw: a good NOP", Accept::Ok, good),
    RawCase::new(
        "raw: descriptor loop (writable points back to the head)",
        Accept::Error,
        |b| vec![rd(b.req, NOP), Desc::new(b.resp, 64, F_WRITE | F_NEXT, 0)],
    ),
    RawCase::new(
        "raw: descriptor loop on itself, readable only",
        Accept::Dropped,
        |b| vec![Desc::new(b.req, NOP, F_NEXT, 0)],
    ),
    RawCase::new(
        "raw: descriptor loop on itself (writable)",
        Accept::Error,
        |b| vec![rd(b.req, NOP), Desc::new(b.resp, 64, F_WRITE | F_NEXT, 1)],
    ),
    RawCase::new(
        "raw: chain longer than the queue",
        Accept::Error,
        longer_than_the_queue,
    ),
    RawCase::new("raw: next index out of range", Accept::Error, |b| {
        vec![
            rd(b.req, NOP),
            Desc::new(b.resp, 64, F_WRITE | F_NEXT, 0x1234),
        ]
    }),
    RawCase::new(
        "raw: response descriptor device-readable",
        Accept::Dropped,
        |b| vec![rd(b.req, NOP), Desc::new(b.resp, 64, 0, 0)],
    ),
    RawCase::new("raw: readable after writable", Accept::Error, |b| {
        vec![
            Desc::new(b.resp, 64, F_WRITE | F_NEXT, 1),
            Desc::new(b.req, NOP, 0, 0),
        ]
    }),
    RawCase::new("raw: request past the end of RAM", Accept::Error, |b| {
        vec![rd(b.past_ram, NOP), wr(b.resp, 64)]
    }),
    RawCase::new("raw: request in the VRAM window", Accept::Error, |b| {
        vec![rd(VRAM_BASE, NOP), wr(b.resp, 64)]
    }),
    RawCase::new("raw: request in the MMIO hole", Accept::Error, |b| {
        vec![rd(VIRTIO_MMIO_BASE, NOP), wr(b.resp, 64)]
    }),
    RawCase::new("raw: request across the end of RAM", Accept::Error, |b| {
        vec![rd(b.ram - 8, NOP), wr(b.resp, 64)]
    }),
    RawCase::new("raw: request address overflows", Accept::Error, |b| {
        vec![rd(u64::MAX - 7, NOP), wr(b.resp, 64)]
    }),
    RawCase::new("raw: request of 2 GiB", Accept::Error, |b| {
        vec![rd(b.req, 0x8000_0000), wr(b.resp, 64)]
    }),
    RawCase::new("raw: response past the end of RAM", Accept::Dropped, |b| {
        vec![rd(b.req, NOP), wr(b.past_ram, 64)]
    }),
    RawCase::new("raw: response in the VRAM window", Accept::Dropped, |b| {
        vec![rd(b.req, NOP), wr(VRAM_BASE, 64)]
    }),
    RawCase::new("raw: response in the MMIO hole", Accept::Dropped, |b| {
        vec![rd(b.req, NOP), wr(VIRTIO_MMIO_BASE, 64)]
    }),
    RawCase::new("raw: zero-length request", Accept::Error, |b| {
        vec![rd(b.req, 0), wr(b.resp, 64)]
    }),
    RawCase::new("raw: zero-length response", Accept::Dropped, |b| {
        vec![rd(b.req, NOP), wr(b.resp, 0)]
    }),
    RawCase::new(
        "raw: zero-length descriptor inside a chain",
        Accept::Answered,
        |b| {
            vec![
                rd(b.req, NOP),
                Desc::new(b.req, 0, F_NEXT, 2),
                wr(b.resp, 64),
            ]
        },
    ),
    RawCase::new(
        "raw: indirect descriptor (not negotiated) outside RAM",
        Accept::Answered,
        |_| vec![Desc::new(VRAM_BASE, 32, F_INDIRECT, 0)],
    ),
    RawCase {
        heads: &[200],
        ..RawCase::new("raw: head index out of range", Accept::Answered, good)
    },
    RawCase {
        avail_idx: Some(0x8000),
        ..RawCase::new("raw: avail index far ahead", Accept::Error, good)
    },
    RawCase::rings("raw: descriptor table in the VRAM window", |b| {
        Some(Rings {
            desc: VRAM_BASE,
            ..b.own
        })
    }),
    RawCase::rings("raw: used ring in the MMIO hole", |b| {
        Some(Rings {
            used: VIRTIO_MMIO_BASE,
            ..b.own
        })
    }),
    RawCase::rings("raw: used ring past the end of RAM", |b| {
        Some(Rings {
            used: b.past_ram,
            ..b.own
        })
    }),
    // After all that, the same hand-made queue still carries a good request.
    RawCase::new("raw: a good NOP afterwards", Accept::Ok, good),
];

/// Runs one case on a freshly reset device.
fn run_case(c: &mut Checker, q: &mut RawQueue, b: &Bufs, rc: &RawCase) {
    let name = rc.name;
    if let Err(e) = q.start((rc.rings)(b)) {
        check!(c, false, "{name}: could not set the queue up: {e}");
        return;
    }
    // Buffer 0: the request (a fenced NOP); buffers 1..: response space full of sentinels.
    q.fill(0, 0);
    q.put(0, 0, CtrlHdr::fenced(p::CMD_NOP, FENCE).as_bytes());
    for i in 1..raw_queue::BUFFERS {
        q.fill(i, SENTINEL);
    }
    let descs = (rc.chain)(b);
    q.post(&descs, rc.heads, rc.avail_idx);
    let out = q.wait(RAW_TIMEOUT_US);
    let resp = q.get(1, 0, 64);
    let hdr = CtrlHdr::read_from(&resp).filter(|_| resp[..HDR].iter().any(|&b| b != SENTINEL));
    let untouched = (1..raw_queue::BUFFERS).all(|i| {
        q.get(i, 0, PAGE_SIZE as usize)
            .iter()
            .all(|&b| b == SENTINEL)
    });
    let is_err = hdr.is_some_and(|h| p::is_error(h.type_));
    let whole = |len: u32| len as usize >= HDR && len <= PAGE_SIZE as u32;
    let ok = match (rc.accept, out) {
        (_, Outcome::Timeout) => false,
        (Accept::Reset, o) => o == Outcome::NeedsReset,
        (_, Outcome::NeedsReset) => rc.accept != Accept::Ok,
        (Accept::Ok, Outcome::Used { len, .. }) => {
            len as usize == HDR
                && hdr.is_some_and(|h| h.type_ == p::RESP_OK_NODATA && h.fence_id == FENCE)
        }
        (Accept::Error, Outcome::Used { len, .. }) => whole(len) && is_err,
        (Accept::Dropped, Outcome::Used { len, .. }) => len == 0 && untouched,
        (Accept::Answered, Outcome::Used { len, .. }) => {
            (len == 0 && untouched) || (whole(len) && hdr.is_some())
        }
    };
    let chain: String = descs
        .iter()
        .enumerate()
        .map(|(i, d)| format!(" d{i}={:#x}+{:#x}/f{}/n{}", d.addr, d.len, d.flags, d.next))
        .collect();
    check!(
        c,
        ok,
        "{name}: sent heads {:?} avail {:?}{chain}; want {:?}, got {:?}, status {:#x}, response {}",
        rc.heads,
        rc.avail_idx,
        rc.accept,
        out,
        q.status().bits(),
        match hdr {
            Some(h) => format!("type {:#x} {}", h.type_, p::response_name(h.type_)),
            None => String::from("none"),
        }
    );
    if !q.magic_ok() {
        check!(
            c,
            false,
            "{name}: the register window no longer reads as virtio-mmio"
        );
    }
}

/// Runs every descriptor-level case. The object layer's driver stays idle meanwhile; dropping
/// the queue at the end resets the device, and the caller restarts the driver.
pub fn run(c: &mut Checker, info: &BootInfo) {
    let mut q = match RawQueue::new(info) {
        Ok(q) => q,
        Err(e) => {
            check!(c, false, "raw queue: {e}");
            return;
        }
    };
    let ram = q.ram_size();
    let b = Bufs {
        req: q.buf(0),
        resp: q.buf(1),
        ram,
        past_ram: if ram + (1 << 20) < MMIO_HOLE_START {
            ram + (1 << 20)
        } else {
            ram
        },
        own: q.own_rings(),
    };
    for rc in CASES {
        run_case(c, &mut q, &b, rc);
    }
}
