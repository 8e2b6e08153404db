//! Long data work in bounded steps, command by command: READ, WRITE, MIGRATE_CLEAN (copying and
//! moving), EVICT into new pages (moving) and TRANSFER_TO_HOST_2D each leave their command in
//! flight after one bounded step (its chain unused), and the data and counters are right once
//! the steps are done. Slices are one page here, so small objects span many slices.

mod common;

use common::{pattern, scattered, PAGE};
use pvgpu_abi::crc32c::crc32c;
use pvgpu_abi::protocol::{self as p, format, CtrlHdr, MemEntry, Rect, Wire};
use pvgpu_abi::request as rq;
use pvgpu_device::queue::STEP_SLICES;
use pvgpu_device::sim_driver::{backing_request, page_entries, SimGuest};
use pvgpu_device::{MemoryBackend, ZeroCopy};
use vm_memory::{Bytes, GuestAddress};

const MIB: u64 = 1 << 20;

/// Posts `req` and runs one bounded step, which must leave the command in flight with its
/// chain unused; then runs steps until the device is idle. Returns the response and the steps.
fn in_steps(g: &mut SimGuest, req: &[u8]) -> (Vec<u8>, u64) {
    let slots = g.post(&[req]).unwrap();
    g.dev.process_queue_step(&g.mem).unwrap();
    assert!(g.dev.engine().is_running(), "done in one bounded step");
    assert!(g.dev.has_pending(&g.mem));
    assert!(
        g.take_used().is_empty(),
        "the chain was used before the end"
    );
    let mut steps = 1;
    while g.dev.has_pending(&g.mem) {
        g.dev.process_queue_step(&g.mem).unwrap();
        steps += 1;
        assert!(steps < 100_000);
    }
    let resp = g.collect(&slots).unwrap().pop().unwrap();
    (resp, steps)
}

fn resp_type(resp: &[u8]) -> u32 {
    CtrlHdr::read_from(resp).map_or(0, |h| h.type_)
}

/// Object `id` of `pages` pages holding `data` in fresh guest pages (SYSTEM); returns them.
fn system_object(g: &mut SimGuest, id: u32, data: &[u8]) -> Vec<MemEntry> {
    let pages = data.len() as u64 / PAGE;
    let base = g.alloc_pages(pages);
    g.mem.write_slice(data, GuestAddress(base)).unwrap();
    assert_eq!(g.create(id, pages * PAGE), p::RESP_OK_NODATA);
    let e = page_entries(base, pages);
    assert_eq!(
        g.backing_cmd(p::CMD_ATTACH_BACKING, id, &e),
        p::RESP_OK_NODATA
    );
    e
}

fn read_entries(g: &SimGuest, e: &[MemEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for x in e {
        let mut b = vec![0u8; x.length as usize];
        g.mem.read_slice(&mut b, GuestAddress(x.addr)).unwrap();
        out.extend_from_slice(&b);
    }
    out
}

#[test]
fn read_and_write_run_in_bounded_steps() {
    const PAGES: u64 = 64;
    let mut g = SimGuest::with_slices(32 * MIB, 16 * MIB, true, PAGE).unwrap();
    let old = pattern((PAGES * PAGE) as usize, 1);
    system_object(&mut g, 1, &old);
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 1), p::RESP_OK_MIGRATE);

    // WRITE new data over the whole object from scattered pages (reversed order).
    let new = pattern((PAGES * PAGE) as usize, 77);
    let src = scattered(&mut g, &new);
    let req = rq::transfer(p::CMD_WRITE, 1, 0, PAGES as u32, &src);
    let (resp, steps) = in_steps(&mut g, &req);
    assert_eq!(resp_type(&resp), p::RESP_OK_NODATA);
    assert!(steps >= PAGES / STEP_SLICES, "{steps} steps");
    assert_eq!(g.checksum(1, 0, PAGES * PAGE), Ok(crc32c(&new)));

    // READ half of it back, from page 16 on, into fresh pages.
    let back = g.alloc_pages(PAGES / 2);
    let dst = page_entries(back, PAGES / 2);
    let req = rq::transfer(p::CMD_READ, 1, 16 * PAGE, PAGES as u32 / 2, &dst);
    let (resp, _) = in_steps(&mut g, &req);
    assert_eq!(resp_type(&resp), p::RESP_OK_NODATA);
    let want = &new[(16 * PAGE) as usize..(48 * PAGE) as usize];
    assert!(read_entries(&g, &dst) == want, "READ data");

    let s = g.dev.stats();
    assert_eq!(s.bytes_written, PAGES * PAGE);
    assert_eq!(s.bytes_read, PAGES / 2 * PAGE);
    assert_eq!(s.errors, 0);
}

#[test]
fn copying_migrate_clean_runs_in_bounded_steps() {
    const PAGES: u64 = 64;
    let size = PAGES * PAGE;
    // The shared backend cannot move pages: MIGRATE_CLEAN copies, then discards.
    let mut g = SimGuest::with_slices(32 * MIB, 16 * MIB, true, PAGE).unwrap();
    let data = pattern(size as usize, 3);
    let pages = system_object(&mut g, 1, &data);
    let ram_before = g.ram.resident_bytes();
    let slots = g.post(&[&rq::object(p::CMD_MIGRATE_CLEAN, 1)]).unwrap();
    g.dev.process_queue_step(&g.mem).unwrap();
    assert!(g.dev.engine().is_running(), "done in one bounded step");
    // Until the end the object is what it was, its pages untouched.
    let o = g.dev.engine().objects().get(1).unwrap();
    assert_eq!(o.placement, p::Placement::System);
    assert!(read_entries(&g, &pages) == data);
    while g.dev.has_pending(&g.mem) {
        g.dev.process_queue_step(&g.mem).unwrap();
    }
    let resp = g.collect(&slots).unwrap().pop().unwrap();
    assert_eq!(resp_type(&resp), p::RESP_OK_MIGRATE);
    let o = g.dev.engine().objects().get(1).unwrap();
    assert_eq!(o.placement, p::Placement::Cleaned);
    assert_eq!(g.checksum(1, 0, size), Ok(crc32c(&data)));
    assert_eq!(ram_before - g.ram.resident_bytes(), size);
    let s = g.dev.stats();
    assert_eq!((s.bytes_moved, s.bytes_move_copied), (0, size));
    assert_eq!((s.bytes_migrated, s.bytes_cleaned), (size, size));
    assert!(s.migrate_clean_ns > 0);
}

/// On anonymous memory pages move, 16 slices (here 16 pages) at a time; refused pages are
/// copied. MIGRATE_CLEAN and then EVICT into fresh pages, each over many steps.
#[test]
fn moving_migrate_clean_and_evict_run_in_bounded_steps() {
    const PAGES: u64 = 256;
    let size = PAGES * PAGE;
    for zc in [ZeroCopy::Auto, ZeroCopy::RefuseEvery(3), ZeroCopy::CopyOnly] {
        let backend = MemoryBackend::Anonymous { thp: false };
        let mut g =
            SimGuest::with_backend_and_slices(32 * MIB, 16 * MIB, backend, zc, PAGE).unwrap();
        let data = pattern(size as usize, 9);
        let pages = system_object(&mut g, 1, &data);
        let req = rq::object(p::CMD_MIGRATE_CLEAN, 1);
        let (resp, steps) = in_steps(&mut g, &req);
        assert_eq!(resp_type(&resp), p::RESP_OK_MIGRATE, "{zc:?}");
        assert!(steps >= 16, "{zc:?}: {steps} steps");
        assert_eq!(g.checksum(1, 0, size), Ok(crc32c(&data)), "{zc:?}");
        // The old pages hold nothing any more (moved away, or discarded after the copy).
        assert!(read_entries(&g, &pages).iter().all(|b| *b == 0), "{zc:?}");
        let s = g.dev.stats();
        assert_eq!(s.bytes_moved + s.bytes_move_copied, size, "{zc:?}");
        match zc {
            ZeroCopy::Auto => assert_eq!(s.bytes_moved, size),
            ZeroCopy::RefuseEvery(3) => {
                assert!(s.bytes_moved > 0 && s.bytes_move_copied >= size / 3 / PAGE * PAGE)
            }
            _ => assert_eq!(s.bytes_moved, 0),
        }

        let fresh = g.alloc_pages(PAGES);
        let e = page_entries(fresh, PAGES);
        let (resp, steps) = in_steps(&mut g, &backing_request(p::CMD_EVICT, 1, &e));
        assert_eq!(resp_type(&resp), p::RESP_OK_NODATA, "{zc:?}");
        assert!(steps >= 16, "{zc:?}: {steps} steps");
        assert!(read_entries(&g, &e) == data, "{zc:?}: evicted data");
        let s = g.dev.stats();
        assert_eq!(s.bytes_moved + s.bytes_move_copied, 2 * size, "{zc:?}");
        assert_eq!((s.bytes_evicted, s.vram_used, s.errors), (size, 0, 0));
        assert_eq!(g.dev.vram().host_memory().resident_bytes(), 0, "{zc:?}");
    }
}

/// Huge pages move so fast that a slice of them counts as one ordinary slice: a step moves
/// STEP_SLICES of them where, with 4 KiB pages, it moves one. Only whole 2 MiB pages on both
/// sides count so: an object in pages that are not 2 MiB-aligned is budgeted as 4 KiB pages.
/// Still bounded, still checked.
#[test]
fn a_step_moves_several_slices_of_huge_pages() {
    const HUGE: u64 = 2 * MIB;
    // Slices of 128 KiB, so a move slice is one 2 MiB page; the object is 8 of them.
    let slice = HUGE / pvgpu_device::job::MOVE_SLICES;
    let size = 8 * HUGE;
    let move_slices = size / HUGE;
    let steps_with = |thp: bool, aligned: bool| {
        let backend = MemoryBackend::Anonymous { thp };
        let mut g =
            SimGuest::with_backend_and_slices(64 * MIB, 32 * MIB, backend, ZeroCopy::Auto, slice)
                .unwrap();
        // Guest pages from a 2 MiB boundary, or one page past it.
        let at = g.alloc_pages(0);
        let skip = (at.next_multiple_of(HUGE) - at) / PAGE + u64::from(!aligned);
        g.alloc_pages(skip);
        let data = pattern(size as usize, 4);
        system_object(&mut g, 1, &data);
        let (resp, steps) = in_steps(&mut g, &rq::object(p::CMD_MIGRATE_CLEAN, 1));
        let what = format!("thp {thp}, aligned {aligned}");
        assert_eq!(resp_type(&resp), p::RESP_OK_MIGRATE, "{what}");
        assert_eq!(g.checksum(1, 0, size), Ok(crc32c(&data)), "{what}");
        assert_eq!(g.dev.stats().bytes_moved, size, "{what}");
        steps
    };
    assert_eq!(steps_with(false, true), move_slices);
    assert_eq!(steps_with(true, false), move_slices);
    // The first step also pays for taking the chain.
    let per_step = pvgpu_device::queue::STEP_SLICES;
    let huge = steps_with(true, true);
    assert!(
        (move_slices / per_step..=move_slices / per_step + 1).contains(&huge),
        "{huge} steps for {move_slices} slices of huge pages"
    );
}

#[test]
fn transfer_to_host_2d_runs_in_bounded_steps() {
    const W: u32 = 256;
    const H: u32 = 256;
    let stride = u64::from(W) * 4;
    let mut g = SimGuest::with_slices(32 * MIB, 16 * MIB, true, PAGE).unwrap();
    let c = g.cmd_type(&rq::resource_create_2d(1, format::B8G8R8A8_UNORM, W, H));
    assert_eq!(c, p::RESP_OK_NODATA_2D);
    let pic = pattern((stride * u64::from(H)) as usize, 5);
    let base = g.alloc_pages(pic.len() as u64 / PAGE);
    g.mem.write_slice(&pic, GuestAddress(base)).unwrap();
    let e = page_entries(base, pic.len() as u64 / PAGE);
    let c = g.cmd_type(&backing_request(p::CMD_RESOURCE_ATTACH_BACKING, 1, &e));
    assert_eq!(c, p::RESP_OK_NODATA_2D);
    let vram_of = |g: &SimGuest| {
        let at = g
            .dev
            .engine()
            .objects()
            .get(1)
            .unwrap()
            .vram_offset
            .unwrap();
        let mut v = vec![0u8; pic.len()];
        g.dev.vram().read(at, &mut v).unwrap();
        v
    };
    // A rectangle narrower than the resource (rows apart), then the whole of it (one run).
    let narrow = Rect {
        x: 16,
        y: 8,
        width: 128,
        height: 200,
    };
    let offset = u64::from(narrow.y) * stride + u64::from(narrow.x) * 4;
    let (resp, steps) = in_steps(&mut g, &rq::transfer_to_host_2d(1, narrow, offset));
    assert_eq!(resp_type(&resp), p::RESP_OK_NODATA_2D);
    assert!(steps > 1);
    let v = vram_of(&g);
    for (i, (got, want)) in v.iter().zip(&pic).enumerate() {
        let (x, y) = ((i as u64 % stride) / 4, i as u64 / stride);
        let inside = (16..16 + 128).contains(&x) && (8..8 + 200).contains(&y);
        assert_eq!(*got, if inside { *want } else { 0 }, "byte {i}");
    }
    let full = Rect {
        x: 0,
        y: 0,
        width: W,
        height: H,
    };
    let (resp, steps) = in_steps(&mut g, &rq::transfer_to_host_2d(1, full, 0));
    assert_eq!(resp_type(&resp), p::RESP_OK_NODATA_2D);
    assert!(
        steps >= pic.len() as u64 / PAGE / STEP_SLICES,
        "{steps} steps"
    );
    assert!(vram_of(&g) == pic);
    assert_eq!(
        g.dev.stats().bytes_transferred,
        128 * 4 * 200 + pic.len() as u64
    );
}

/// Found by the request fuzzer: a whole pass (`process_queue`, the VMM's path when a notify
/// reaches it without an ioeventfd) spun forever when the driver had stopped the control queue
/// with a command in flight. Now the pass returns, the command stays in flight unanswered, and
/// a reset drops it.
#[test]
fn a_whole_pass_ends_when_the_control_queue_is_stopped_mid_command() {
    use pvgpu_abi::virtio_mmio::regs;
    let mut g = SimGuest::with_slices(32 * MIB, 16 * MIB, true, PAGE).unwrap();
    let data = pattern((64 * PAGE) as usize, 4);
    system_object(&mut g, 1, &data);
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 1), p::RESP_OK_MIGRATE);
    g.post(&[&rq::fill(1, 0, 64 * PAGE, 0x5a)]).unwrap();
    g.dev.process_queue_step(&g.mem).unwrap();
    assert!(g.dev.engine().is_running());
    g.w32(regs::QUEUE_SEL, 0);
    g.w32(regs::QUEUE_READY, 0);
    g.dev.process_queue(&g.mem).unwrap();
    assert!(g.dev.engine().is_running(), "left in flight");
    assert!(g.take_used().is_empty(), "and unanswered");
    g.w32(regs::STATUS, 0);
    assert!(!g.dev.engine().is_running(), "a reset drops it");
}
