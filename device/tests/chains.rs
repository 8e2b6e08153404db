//! Hostile descriptor chains and rings: each gets an error response or nothing, never a hang
//! or a panic, and the device keeps working afterwards.

use pvgpu_abi::protocol::{self as p, CtrlHdr, Wire};
use pvgpu_abi::virtio_mmio::{desc, regs, status, INT_CONFIG};
use pvgpu_device::sim_driver::{
    driver_features, start_driver, QueueRings, RawDesc, SimGuest, QSIZE, SCRATCH_START,
};
use vm_memory::{Bytes, GuestAddress};

const MIB: u64 = 1 << 20;
const REQ: u64 = SCRATCH_START;
const RESP: u64 = SCRATCH_START + 0x1000;

fn guest() -> SimGuest {
    let g = SimGuest::new(16 * MIB, MIB).unwrap();
    g.mem
        .write_slice(CtrlHdr::fenced(p::CMD_NOP, 5).as_bytes(), GuestAddress(REQ))
        .unwrap();
    g
}

fn r(addr: u64, len: u32, next: Option<u16>) -> RawDesc {
    RawDesc {
        addr,
        len,
        flags: if next.is_some() { desc::F_NEXT } else { 0 },
        next: next.unwrap_or(0),
    }
}

fn w(addr: u64, len: u32, next: Option<u16>) -> RawDesc {
    RawDesc {
        flags: r(addr, len, next).flags | desc::F_WRITE,
        ..r(addr, len, next)
    }
}

/// Runs one chain (descriptors at indices 0..) and returns (used len, response type).
fn run(g: &mut SimGuest, descs: &[RawDesc]) -> (u32, u32) {
    g.mem.write_slice(&[0u8; 64], GuestAddress(RESP)).unwrap();
    for (i, d) in descs.iter().enumerate() {
        g.write_desc(i as u16, *d);
    }
    g.push_avail(0);
    g.notify();
    let used = g.take_used();
    assert_eq!(used.len(), 1, "exactly one used entry");
    assert_eq!(used[0].0, 0);
    let t: u32 = g.mem.read_obj(GuestAddress(RESP)).unwrap();
    (used[0].1, t)
}

fn still_works(g: &mut SimGuest) {
    assert_eq!(
        g.cmd_type(CtrlHdr::new(p::CMD_NOP).as_bytes()),
        p::RESP_OK_NODATA
    );
}

#[test]
fn a_good_chain_split_over_descriptors() {
    let mut g = guest();
    // Header split 10 + 14 bytes, response split 8 + 16.
    let got = run(
        &mut g,
        &[
            r(REQ, 10, Some(1)),
            r(REQ + 10, 14, Some(2)),
            w(RESP, 8, Some(3)),
            w(RESP + 8, 16, None),
        ],
    );
    assert_eq!(got, (24, p::RESP_OK_NODATA));
    let fence: u64 = g.mem.read_obj(GuestAddress(RESP + 8)).unwrap();
    assert_eq!(fence, 5);
}

#[test]
fn loops_end() {
    let mut g = guest();
    // Readable loop with no response buffer: consumed, nothing written.
    assert_eq!(
        run(&mut g, &[r(REQ, 24, Some(1)), r(REQ, 24, Some(0))]).0,
        0
    );
    // Loop through a writable descriptor: readable after writable.
    let got = run(&mut g, &[r(REQ, 24, Some(1)), w(RESP, 64, Some(0))]);
    assert_eq!(got, (24, p::RESP_ERR_BAD_REQUEST));
    // Self loop.
    assert_eq!(run(&mut g, &[w(RESP, 64, Some(0))]).0, 24);
    still_works(&mut g);
}

#[test]
fn wrong_direction_short_and_oversized_requests() {
    let mut g = guest();
    assert_eq!(
        run(&mut g, &[w(RESP, 64, Some(1)), r(REQ, 24, None)]),
        (24, p::RESP_ERR_BAD_REQUEST)
    );
    assert_eq!(
        run(&mut g, &[r(REQ, 10, Some(1)), w(RESP, 64, None)]),
        (24, p::RESP_ERR_BAD_REQUEST)
    );
    assert_eq!(
        run(&mut g, &[w(RESP, 64, None)]),
        (24, p::RESP_ERR_BAD_REQUEST)
    );
    // Longer than any request may be.
    assert_eq!(
        run(&mut g, &[r(REQ, 0x7fff_ffff, Some(1)), w(RESP, 64, None)]),
        (24, p::RESP_ERR_BAD_REQUEST)
    );
    // Chains over 4 GiB in total are cut by virtio-queue: no response buffer is reached.
    assert_eq!(
        run(&mut g, &[r(REQ, u32::MAX, Some(1)), w(RESP, 64, None)]),
        (0, 0)
    );
    assert_eq!(
        run(
            &mut g,
            &[
                r(REQ, 0x80_0000, Some(1)),
                r(REQ, 0x80_0000, Some(2)),
                w(RESP, 64, None)
            ]
        ),
        (24, p::RESP_ERR_BAD_REQUEST)
    );
    still_works(&mut g);
}

#[test]
fn bad_buffers() {
    let mut g = guest();
    // Response buffer too small: nothing written.
    assert_eq!(
        run(&mut g, &[r(REQ, 24, Some(1)), w(RESP, 8, None)]),
        (0, 0)
    );
    // No response buffer.
    assert_eq!(run(&mut g, &[r(REQ, 24, None)]).0, 0);
    // Request outside guest memory.
    for addr in [16 * MIB, u64::MAX - 8, pvgpu_abi::layout::VRAM_BASE] {
        assert_eq!(
            run(&mut g, &[r(addr, 24, Some(1)), w(RESP, 64, None)]),
            (24, p::RESP_ERR_BAD_REQUEST)
        );
        // Response outside guest memory.
        assert_eq!(run(&mut g, &[r(REQ, 24, Some(1)), w(addr, 64, None)]).0, 0);
    }
    // Next index out of range ends the chain.
    assert_eq!(run(&mut g, &[r(REQ, 24, Some(QSIZE + 5))]).0, 0);
    assert!(g.dev.stats().dropped_chains >= 5);
    still_works(&mut g);
}

#[test]
fn indirect_tables() {
    let mut g = guest();
    let table = SCRATCH_START + 0x2000;
    let ind = [r(REQ, 24, Some(1)), w(RESP, 64, None)];
    for (i, d) in ind.iter().enumerate() {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&d.addr.to_le_bytes());
        b[8..12].copy_from_slice(&d.len.to_le_bytes());
        b[12..14].copy_from_slice(&d.flags.to_le_bytes());
        b[14..16].copy_from_slice(&d.next.to_le_bytes());
        g.mem
            .write_slice(&b, GuestAddress(table + 16 * i as u64))
            .unwrap();
    }
    let head = RawDesc {
        addr: table,
        len: 32,
        flags: desc::F_INDIRECT,
        next: 0,
    };
    // The device does not offer VIRTIO_F_INDIRECT_DESC: a well-formed table is refused.
    assert_eq!(run(&mut g, &[head]), (24, p::RESP_ERR_BAD_REQUEST));
    // Bad table length, table outside memory, huge table: no response, no crash.
    for (addr, len) in [(table, 31), (64 * MIB, 32), (table, !15)] {
        let bad = RawDesc { addr, len, ..head };
        assert_eq!(run(&mut g, &[bad]).0, 0);
    }
    still_works(&mut g);
}

#[test]
fn broken_rings() {
    let mut g = guest();
    // Avail index far ahead of what the ring can hold: no hang.
    g.mem
        .write_obj(
            5000u16,
            GuestAddress(pvgpu_device::sim_driver::AVAIL_ADDR + 2),
        )
        .unwrap();
    g.notify();
    assert!(g.take_used().len() <= usize::from(QSIZE));
    g.reinit();
    still_works(&mut g);
    // Head index beyond the queue.
    g.push_avail(QSIZE + 3);
    g.notify();
    g.take_used();
    g.reinit();
    still_works(&mut g);
}

#[test]
fn a_queue_outside_guest_memory_needs_reset() {
    let mut g = guest();
    // Rings at 64 GiB: not RAM.
    let rings = QueueRings {
        size: 16,
        desc: 64 << 30,
        avail: 0,
        used: 0,
    };
    start_driver(|off, v| _ = g.w32(off, v), driver_features(true), &rings);
    assert!(g.notify());
    assert_ne!(g.r32(regs::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(g.r32(regs::INTERRUPT_STATUS) & INT_CONFIG, INT_CONFIG);
    // Nothing is processed until reset.
    assert!(!g.notify());
    g.reinit();
    still_works(&mut g);
}

#[test]
fn queue_notify_before_driver_ok_is_ignored() {
    let mut g = guest();
    g.w32(regs::STATUS, 0);
    assert!(!g.w32(regs::QUEUE_NOTIFY, 0));
    assert!(!g.notify());
    g.reinit();
    still_works(&mut g);
}

#[test]
fn chains_cut_short_are_refused_not_run() {
    let mut g = guest();
    // A writable descriptor that loops onto itself after the request.
    let got = run(&mut g, &[r(REQ, 24, Some(1)), w(RESP, 64, Some(1))]);
    assert_eq!(got, (24, p::RESP_ERR_BAD_REQUEST));
    // A `next` index outside the queue.
    let got = run(&mut g, &[r(REQ, 24, Some(1)), w(RESP, 64, Some(0x1234))]);
    assert_eq!(got, (24, p::RESP_ERR_BAD_REQUEST));
    still_works(&mut g);
}

#[test]
fn pending_work_is_visible_before_the_notify() {
    let mut g = guest();
    assert!(!g.dev.has_pending(&g.mem));
    g.write_desc(0, r(REQ, 24, Some(1)));
    g.write_desc(1, w(RESP, 64, None));
    g.push_avail(0);
    assert!(g.dev.has_pending(&g.mem), "an available chain is pending");
    g.notify();
    assert_eq!(g.take_used().len(), 1);
    assert!(
        !g.dev.has_pending(&g.mem),
        "nothing pending once it was used"
    );
}
