//! Command tests: real descriptor chains in memfd-backed guest memory, through the device's
//! register interface and control queue. Data is checked with CHECKSUM and by reading guest
//! memory; CLEAN is checked to free exactly the cleaned bytes of the guest-RAM memfd.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod common;

use common::{pattern, scattered, PAGE};
use pvgpu_abi::protocol::{self as p, CtrlHdr, MemEntry, Wire};
use pvgpu_device::sim_driver::{backing_request, page_entries, SimGuest};
use pvgpu_device::InterruptSink;
use vm_memory::{Bytes, GuestAddress};

const MIB: u64 = 1 << 20;

fn guest() -> SimGuest {
    SimGuest::new(32 * MIB, 16 * MIB).unwrap()
}

#[test]
fn get_info_nop_and_fences() {
    let mut g = guest();
    let r = g.cmd(CtrlHdr::fenced(p::CMD_GET_INFO, 42).as_bytes());
    let info = p::RespInfo::read_from(&r).unwrap();
    assert_eq!(info.hdr.type_, p::RESP_OK_INFO);
    assert_eq!(info.hdr.flags, p::VIRTIO_GPU_FLAG_FENCE);
    assert_eq!(info.hdr.fence_id, 42);
    assert_eq!(info.protocol_version, p::PROTOCOL_VERSION);
    assert_eq!(info.vram_size, 16 * MIB);
    assert_eq!(info.page_size, 4096);
    assert_eq!(info.max_sg_entries, p::MAX_SG_ENTRIES);
    let r = g.cmd(CtrlHdr::fenced(p::CMD_NOP, 7).as_bytes());
    let h = CtrlHdr::read_from(&r).unwrap();
    assert_eq!((h.type_, h.fence_id), (p::RESP_OK_NODATA, 7));
    // A batch: every response in place, fences echoed.
    let reqs: Vec<Vec<u8>> = (0..100)
        .map(|i| CtrlHdr::fenced(p::CMD_NOP, i).as_bytes().to_vec())
        .collect();
    let refs: Vec<&[u8]> = reqs.iter().map(|r| r.as_slice()).collect();
    let resps = g.submit(&refs).unwrap();
    for (i, r) in resps.iter().enumerate() {
        assert_eq!(CtrlHdr::read_from(r).unwrap().fence_id, i as u64);
    }
}

#[test]
fn full_life_cycle_keeps_data_and_frees_host_memory() {
    let mut g = guest();
    let size = 64 * PAGE;
    let data = pattern(size as usize, 3);
    let want = crc32c::crc32c(&data);
    let entries = scattered(&mut g, &data);
    assert_eq!(g.create(1, size), p::RESP_OK_NODATA);
    assert_eq!(
        g.backing_cmd(p::CMD_ATTACH_BACKING, 1, &entries),
        p::RESP_OK_NODATA
    );
    assert_eq!(g.checksum(1, 0, size), Ok(want));

    let vram_before = g.dev.vram().host_memory().resident_bytes();
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 1), p::RESP_OK_MIGRATE);
    assert_eq!(g.checksum(1, 0, size), Ok(want));
    assert_eq!(
        g.dev.vram().host_memory().resident_bytes() - vram_before,
        size
    );

    // CLEAN: the guest-RAM memfd shrinks by exactly the object's bytes.
    let ram_before = g.ram.resident_bytes();
    assert_eq!(g.obj_cmd(p::CMD_CLEAN, 1), p::RESP_OK_NODATA);
    let ram_after = g.ram.resident_bytes();
    assert_eq!(ram_before - ram_after, size);
    assert_eq!(g.checksum(1, 0, size), Ok(want));
    for e in &entries {
        assert_eq!(
            g.mem.read_obj::<u64>(GuestAddress(e.addr)).unwrap(),
            0,
            "cleaned page reads zero"
        );
    }
    // Reading the cleaned pages above allocated them again; punch them back for the count.
    for e in &entries {
        g.ram.discard(e.addr, PAGE).unwrap();
    }

    // EVICT into fresh pages: data back, VRAM punched.
    let fresh = g.alloc_pages(64);
    let fresh_entries = page_entries(fresh, 64);
    assert_eq!(
        g.backing_cmd(p::CMD_EVICT, 1, &fresh_entries),
        p::RESP_OK_NODATA
    );
    let mut back = vec![0u8; size as usize];
    g.mem.read_slice(&mut back, GuestAddress(fresh)).unwrap();
    assert_eq!(back, data);
    assert_eq!(g.checksum(1, 0, size), Ok(want));
    assert_eq!(g.dev.vram().host_memory().resident_bytes(), vram_before);

    let s = g.wire_stats().unwrap();
    assert_eq!(s.bytes_migrated, size);
    assert_eq!(s.bytes_cleaned, size);
    assert_eq!(s.bytes_evicted, size);
    assert_eq!(s.objects_live, 1);
    assert_eq!(s.vram_used, 0);
    assert_eq!(s.vram_peak, size);
    assert_eq!(s.errors, 0);

    assert_eq!(g.obj_cmd(p::CMD_DESTROY, 1), p::RESP_OK_NODATA);
    assert_eq!(g.checksum(1, 0, size), Err(p::RESP_ERR_INVALID_OBJECT_ID));
    let js = g.dev.stats().to_json().unwrap();
    assert!(js.contains("\"bytes_cleaned\":262144"), "{js}");
}

#[test]
fn evict_from_vram_back_into_own_pages_after_fill_and_copy() {
    let mut g = guest();
    let size = 4 * PAGE;
    let a = g.alloc_pages(4);
    let b = g.alloc_pages(4);
    g.mem
        .write_slice(&pattern(size as usize, 9), GuestAddress(a))
        .unwrap();
    for (id, addr) in [(1, a), (2, b)] {
        assert_eq!(g.create(id, size), p::RESP_OK_NODATA);
        let e = [MemEntry {
            addr,
            length: size as u32,
            padding: 0,
        }];
        assert_eq!(
            g.backing_cmd(p::CMD_ATTACH_BACKING, id, &e),
            p::RESP_OK_NODATA
        );
        assert_eq!(g.obj_cmd(p::CMD_MIGRATE, id), p::RESP_OK_MIGRATE);
    }
    // FILL and COPY change VRAM; CHECKSUM sees it; EVICT writes it back.
    assert_eq!(g.fill(2, 0, size, 0x5a), p::RESP_OK_NODATA);
    assert_eq!(g.copy(2, 100, 1, 200, 5000), p::RESP_OK_NODATA);
    // Overlapping copy inside one object behaves like memmove.
    assert_eq!(g.copy(1, 10, 1, 0, 3 * PAGE), p::RESP_OK_NODATA);
    let mut want2 = vec![0x5a; size as usize];
    let src = pattern(size as usize, 9);
    want2[100..5100].copy_from_slice(&src[200..5200]);
    let mut want1 = src.clone();
    want1.copy_within(0..3 * PAGE as usize, 10);
    assert_eq!(g.checksum(2, 0, size), Ok(crc32c::crc32c(&want2)));
    assert_eq!(g.checksum(1, 0, size), Ok(crc32c::crc32c(&want1)));
    assert_eq!(g.checksum(2, 100, 10), Ok(crc32c::crc32c(&want2[100..110])));
    assert_eq!(g.checksum(2, 0, 0), Ok(0));
    for id in [1, 2] {
        assert_eq!(g.backing_cmd(p::CMD_EVICT, id, &[]), p::RESP_OK_NODATA);
    }
    let mut got = vec![0u8; size as usize];
    g.mem.read_slice(&mut got, GuestAddress(b)).unwrap();
    assert_eq!(got, want2);
    g.mem.read_slice(&mut got, GuestAddress(a)).unwrap();
    assert_eq!(got, want1);
}

#[test]
fn invalid_transitions_get_errors_and_change_nothing() {
    let mut g = guest();
    let pages = g.alloc_pages(2);
    let e = page_entries(pages, 2);
    assert_eq!(g.create(1, 2 * PAGE), p::RESP_OK_NODATA);
    // No backing yet.
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 1), p::RESP_ERR_INVALID_STATE);
    assert_eq!(g.checksum(1, 0, 1), Err(p::RESP_ERR_INVALID_STATE));
    assert_eq!(
        g.backing_cmd(p::CMD_ATTACH_BACKING, 1, &e),
        p::RESP_OK_NODATA
    );
    assert_eq!(
        g.backing_cmd(p::CMD_ATTACH_BACKING, 1, &e),
        p::RESP_ERR_INVALID_STATE
    );
    // SYSTEM: no CLEAN, EVICT, FILL, COPY.
    assert_eq!(g.obj_cmd(p::CMD_CLEAN, 1), p::RESP_ERR_INVALID_STATE);
    assert_eq!(
        g.backing_cmd(p::CMD_EVICT, 1, &[]),
        p::RESP_ERR_INVALID_STATE
    );
    assert_eq!(g.fill(1, 0, 1, 0), p::RESP_ERR_INVALID_STATE);
    assert_eq!(g.copy(1, 0, 1, 0, 1), p::RESP_ERR_INVALID_STATE);
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 1), p::RESP_OK_MIGRATE);
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 1), p::RESP_ERR_INVALID_STATE);
    assert_eq!(g.obj_cmd(p::CMD_CLEAN, 1), p::RESP_OK_NODATA);
    assert_eq!(g.obj_cmd(p::CMD_CLEAN, 1), p::RESP_ERR_INVALID_STATE);
    // CLEANED: EVICT needs pages.
    assert_eq!(
        g.backing_cmd(p::CMD_EVICT, 1, &[]),
        p::RESP_ERR_INVALID_PARAMETER
    );
    // Use after DESTROY.
    assert_eq!(g.obj_cmd(p::CMD_DESTROY, 1), p::RESP_OK_NODATA);
    assert_eq!(g.obj_cmd(p::CMD_DESTROY, 1), p::RESP_ERR_INVALID_OBJECT_ID);
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 1), p::RESP_ERR_INVALID_OBJECT_ID);
    assert_eq!(
        g.backing_cmd(p::CMD_EVICT, 1, &e),
        p::RESP_ERR_INVALID_OBJECT_ID
    );
    assert_eq!(g.fill(1, 0, 1, 0), p::RESP_ERR_INVALID_OBJECT_ID);
    let s = g.dev.stats();
    assert_eq!(s.objects_live, 0);
    assert_eq!(s.vram_used, 0);
    assert!(s.by_command["migrate"].errors >= 3);
}

#[test]
fn hostile_values_are_refused() {
    let mut g = guest();
    // Sizes.
    assert_eq!(g.create(1, 0), p::RESP_ERR_INVALID_PARAMETER);
    assert_eq!(g.create(1, 100), p::RESP_ERR_INVALID_PARAMETER);
    assert_eq!(g.create(1, !0xfff), p::RESP_ERR_INVALID_PARAMETER);
    assert_eq!(g.create(1, 32 * MIB), p::RESP_ERR_INVALID_PARAMETER); // > VRAM
    assert_eq!(g.create(0, PAGE), p::RESP_ERR_INVALID_OBJECT_ID);
    let mut bad_flags = p::ReqCreate {
        hdr: CtrlHdr::new(p::CMD_CREATE),
        object_id: 1,
        flags: 1,
        size: PAGE,
    };
    assert_eq!(
        g.cmd_type(bad_flags.as_bytes()),
        p::RESP_ERR_INVALID_PARAMETER
    );
    bad_flags.flags = 0;
    assert_eq!(g.cmd_type(bad_flags.as_bytes()), p::RESP_OK_NODATA);
    assert_eq!(g.cmd_type(bad_flags.as_bytes()), p::RESP_ERR_OBJECT_EXISTS);
    // Scatter-gather entries.
    let ent = |addr, length| MemEntry {
        addr,
        length,
        padding: 0,
    };
    let ram_end = 32 * MIB;
    for bad in [
        vec![ent(0x50_0001, 4096)],                    // unaligned address
        vec![ent(0x50_0000, 100)],                     // unaligned length
        vec![ent(0x50_0000, 0), ent(0x50_0000, 4096)], // empty entry
        vec![ent(ram_end, 4096)],                      // outside RAM
        vec![ent(ram_end - 4096, 8192)],               // straddles the end
        vec![ent(!0xfff, 4096)],                       // overflow
        vec![ent(pvgpu_abi::layout::VIRTIO_MMIO_BASE, 4096)],
        vec![ent(pvgpu_abi::layout::VRAM_BASE, 4096)],
        vec![ent(0x50_0000, 4096), ent(0x60_0000, 4096)], // too much
        vec![],                                           // too little
    ] {
        assert_eq!(
            g.backing_cmd(p::CMD_ATTACH_BACKING, 1, &bad),
            p::RESP_ERR_BAD_BACKING,
            "{bad:x?}"
        );
    }
    // nr_entries larger than the request / than the limit.
    let mut r = backing_request(p::CMD_ATTACH_BACKING, 1, &[ent(0x50_0000, 4096)]);
    r[28..32].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(g.cmd_type(&r), p::RESP_ERR_BAD_REQUEST);
    r[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(g.cmd_type(&r), p::RESP_ERR_INVALID_PARAMETER);
    // Object offsets and lengths.
    assert_eq!(
        g.backing_cmd(p::CMD_ATTACH_BACKING, 1, &[ent(0x50_0000, 4096)]),
        p::RESP_OK_NODATA
    );
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 1), p::RESP_OK_MIGRATE);
    assert_eq!(g.fill(1, 4096, 1, 0), p::RESP_ERR_OUT_OF_RANGE);
    assert_eq!(g.fill(1, u64::MAX, 2, 0), p::RESP_ERR_OUT_OF_RANGE);
    assert_eq!(g.fill(1, 0, 1, 256), p::RESP_ERR_INVALID_PARAMETER);
    assert_eq!(g.copy(1, 1, 1, 0, 4096), p::RESP_ERR_OUT_OF_RANGE);
    assert_eq!(g.copy(1, 0, 1, u64::MAX, 1), p::RESP_ERR_OUT_OF_RANGE);
    assert_eq!(g.copy(1, 0, 9, 0, 1), p::RESP_ERR_INVALID_OBJECT_ID);
    assert_eq!(g.checksum(1, 4095, 2), Err(p::RESP_ERR_OUT_OF_RANGE));
    // Unknown and short commands.
    for t in [0x0a7f, 0xffff_ffff, 0] {
        assert_eq!(
            g.cmd_type(CtrlHdr::new(t).as_bytes()),
            p::RESP_ERR_UNKNOWN_COMMAND
        );
    }
    // virtio-gpu's ranges answer with virtio-gpu's codes: a short 2D request, a 3D command,
    // a cursor command on the control queue.
    for t in [0x0101u32, 0x0200, 0x0300] {
        assert_eq!(g.cmd_type(CtrlHdr::new(t).as_bytes()), p::RESP_ERR_UNSPEC);
    }
    assert_eq!(
        g.cmd_type(CtrlHdr::new(p::CMD_FILL).as_bytes()),
        p::RESP_ERR_BAD_REQUEST
    );
    assert_eq!(g.cmd_type(&[1, 2, 3]), p::RESP_ERR_BAD_REQUEST);
    // The object is untouched by all of that.
    assert_eq!(g.checksum(1, 0, 4096), Ok(crc32c::crc32c(&[0u8; 4096])));
}

#[test]
fn out_of_vram_is_reported_and_fragmentation_handled() {
    let mut g = SimGuest::new(32 * MIB, MIB).unwrap();
    let pages = g.alloc_pages(256);
    for id in 1..=4u32 {
        assert_eq!(g.create(id, 64 * PAGE), p::RESP_OK_NODATA);
        let e = page_entries(pages + u64::from(id - 1) * 64 * PAGE, 64);
        assert_eq!(
            g.backing_cmd(p::CMD_ATTACH_BACKING, id, &e),
            p::RESP_OK_NODATA
        );
        assert_eq!(g.obj_cmd(p::CMD_MIGRATE, id), p::RESP_OK_MIGRATE);
    }
    assert_eq!(g.create(5, PAGE), p::RESP_OK_NODATA);
    let one = page_entries(g.alloc_pages(1), 1);
    assert_eq!(
        g.backing_cmd(p::CMD_ATTACH_BACKING, 5, &one),
        p::RESP_OK_NODATA
    );
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 5), p::RESP_ERR_OUT_OF_MEMORY);
    // Still SYSTEM after the failure; evict one and retry.
    assert_eq!(g.backing_cmd(p::CMD_EVICT, 2, &[]), p::RESP_OK_NODATA);
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 5), p::RESP_OK_MIGRATE);
    assert_eq!(g.dev.engine().objects().lru_in_vram()[0], 1);
}

#[test]
fn pvgpu_commands_need_the_feature() {
    let mut g = SimGuest::with_features(16 * MIB, MIB, false).unwrap();
    assert_eq!(
        g.cmd_type(CtrlHdr::new(p::CMD_GET_INFO).as_bytes()),
        p::RESP_ERR_NOT_NEGOTIATED
    );
    assert_eq!(g.create(1, PAGE), p::RESP_ERR_NOT_NEGOTIATED);
}

#[test]
fn reset_destroys_objects_and_frees_vram() {
    let mut g = guest();
    let pages = g.alloc_pages(16);
    g.mem
        .write_slice(&[1u8; 65536], GuestAddress(pages))
        .unwrap();
    assert_eq!(g.create(1, 16 * PAGE), p::RESP_OK_NODATA);
    assert_eq!(
        g.backing_cmd(p::CMD_ATTACH_BACKING, 1, &page_entries(pages, 16)),
        p::RESP_OK_NODATA
    );
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 1), p::RESP_OK_MIGRATE);
    assert_eq!(g.dev.vram().host_memory().resident_bytes(), 16 * PAGE);
    g.reinit();
    assert_eq!(g.dev.vram().host_memory().resident_bytes(), 0);
    assert!(g.dev.engine().objects().is_empty());
    assert_eq!(g.create(1, PAGE), p::RESP_OK_NODATA);
}

struct Counter(Arc<AtomicU64>);
impl InterruptSink for Counter {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn interrupts_are_raised_once_per_batch_and_acked() {
    let mut g = guest();
    let n = Arc::new(AtomicU64::new(0));
    g.dev.set_interrupt(Box::new(Counter(n.clone())));
    let nop = CtrlHdr::new(p::CMD_NOP);
    g.submit(&[nop.as_bytes(), nop.as_bytes(), nop.as_bytes()])
        .unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 1);
    use pvgpu_abi::virtio_mmio::{regs, INT_VRING};
    assert_eq!(g.r32(regs::INTERRUPT_STATUS) & INT_VRING, INT_VRING);
    g.w32(regs::INTERRUPT_ACK, INT_VRING);
    assert_eq!(g.r32(regs::INTERRUPT_STATUS), 0);
    // An eventfd works as the sink.
    let efd = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
    g.dev.set_interrupt(Box::new(efd.try_clone().unwrap()));
    g.submit(&[nop.as_bytes()]).unwrap();
    assert_eq!(efd.read().unwrap(), 1);
}

#[test]
fn pages_backing_a_live_object_cannot_back_another() {
    let mut g = guest();
    let size = 4 * PAGE;
    let a = scattered(&mut g, &pattern(size as usize, 1));
    assert_eq!(g.create(1, size), p::RESP_OK_NODATA);
    assert_eq!(
        g.backing_cmd(p::CMD_ATTACH_BACKING, 1, &a),
        p::RESP_OK_NODATA
    );
    // Object 2 may not be given object 1's pages, at attach or at evict.
    assert_eq!(g.create(2, size), p::RESP_OK_NODATA);
    assert_eq!(
        g.backing_cmd(p::CMD_ATTACH_BACKING, 2, &a),
        p::RESP_ERR_BAD_BACKING
    );
    let b = scattered(&mut g, &pattern(size as usize, 2));
    assert_eq!(
        g.backing_cmd(p::CMD_ATTACH_BACKING, 2, &b),
        p::RESP_OK_NODATA
    );
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 2), p::RESP_OK_MIGRATE);
    assert_eq!(g.obj_cmd(p::CMD_CLEAN, 2), p::RESP_OK_NODATA);
    assert_eq!(g.backing_cmd(p::CMD_EVICT, 2, &a), p::RESP_ERR_BAD_BACKING);
    // Object 1's data is untouched, and a list that names one page twice is refused too.
    assert_eq!(
        g.checksum(1, 0, size),
        Ok(crc32c::crc32c(&pattern(size as usize, 1)))
    );
    let twice = [b[0], b[1], b[0], b[2]];
    assert_eq!(
        g.backing_cmd(p::CMD_EVICT, 2, &twice),
        p::RESP_ERR_BAD_BACKING
    );
    // Once object 1 is gone its pages are free to use.
    assert_eq!(g.obj_cmd(p::CMD_DESTROY, 1), p::RESP_OK_NODATA);
    assert_eq!(g.backing_cmd(p::CMD_EVICT, 2, &a), p::RESP_OK_NODATA);
    assert_eq!(
        g.checksum(2, 0, size),
        Ok(crc32c::crc32c(&pattern(size as usize, 2)))
    );
}

/// The object cap scales with the configuration: a 16 MiB guest with 2 MiB of VRAM gets one
/// object per page of RAM + VRAM (4,608), reported by GET_INFO and enforced by CREATE.
#[test]
fn the_object_cap_follows_ram_and_vram() {
    let mut g = SimGuest::new(16 * MIB, 2 * MIB).unwrap();
    let cap = ((16 + 2) * MIB / PAGE) as u32;
    let info = g.cmd(CtrlHdr::new(p::CMD_GET_INFO).as_bytes());
    let info = p::RespInfo::read_from(&info).unwrap();
    assert_eq!(info.max_objects, cap);
    let reqs: Vec<Vec<u8>> = (1..=cap + 1)
        .map(|id| pvgpu_abi::request::create(id, 0, PAGE))
        .collect();
    let mut types = Vec::new();
    for batch in reqs.chunks(100) {
        let refs: Vec<&[u8]> = batch.iter().map(|r| r.as_slice()).collect();
        for r in g.submit(&refs).unwrap() {
            types.push(CtrlHdr::read_from(&r).unwrap().type_);
        }
    }
    assert!(types[..cap as usize]
        .iter()
        .all(|&t| t == p::RESP_OK_NODATA));
    assert_eq!(types[cap as usize], p::RESP_ERR_TOO_MANY_OBJECTS);
    // The largest configurations stop at the protocol's cap.
    assert_eq!(
        pvgpu_device::commands::object_cap(3 << 30, 64 << 30),
        p::MAX_OBJECTS
    );
}
