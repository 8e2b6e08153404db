//! The virtio-gpu 2D command set and the cursor queue, through the device's registers and real
//! descriptor chains (no KVM): the spec's responses, the one object table shared with the
//! pvgpu extension (CLEAN of a framebuffer's backing), and bad input that gets the spec's
//! error code and changes nothing.

use pvgpu_abi::protocol::{self as p, format, CtrlHdr, MemEntry, Rect, Wire};
use pvgpu_abi::{crc32c, request as rq};
use pvgpu_device::sim_driver::{backing_request, page_entries, SimGuest};
use pvgpu_device::ScanoutImage;
use vm_memory::{Bytes, GuestAddress};

const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;

fn guest() -> SimGuest {
    SimGuest::new(32 * MIB, 16 * MIB).unwrap()
}

fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
    Rect {
        x,
        y,
        width,
        height,
    }
}

/// BGRA bytes of a `w` x `h` picture.
fn picture(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            v.extend_from_slice(&[
                (x as u8).wrapping_add(seed),
                (y as u8).wrapping_mul(3),
                seed ^ 0x5a,
                0xff,
            ]);
        }
    }
    v
}

/// The RGB a scanout of that BGRA picture shows.
fn rgb_of_bgra(bgra: &[u8]) -> Vec<u8> {
    bgra.chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect()
}

/// Creates resource `id` (`w` x `h`, B8G8R8A8) with a fresh page-aligned backing holding
/// `data`; returns the backing's guest address.
fn framebuffer(g: &mut SimGuest, id: u32, w: u32, h: u32, data: &[u8]) -> u64 {
    let c = g.cmd_type(&rq::resource_create_2d(id, format::B8G8R8A8_UNORM, w, h));
    assert_eq!(c, p::RESP_OK_NODATA_2D);
    let pages = (data.len() as u64).div_ceil(PAGE);
    let base = g.alloc_pages(pages);
    g.mem.write_slice(data, GuestAddress(base)).unwrap();
    let c = g.cmd_type(&backing_request(
        p::CMD_RESOURCE_ATTACH_BACKING,
        id,
        &page_entries(base, pages),
    ));
    assert_eq!(c, p::RESP_OK_NODATA_2D);
    base
}

fn ok(g: &mut SimGuest, req: &[u8]) {
    assert_eq!(g.cmd_type(req), p::RESP_OK_NODATA_2D, "{:x?}", &req[..4]);
}

/// Everything a bad command could have changed (VRAM contents by checksum; reading VRAM
/// allocates host pages, so host bytes are not part of it).
#[derive(Debug, PartialEq)]
struct Snapshot {
    objects: usize,
    vram_used: u64,
    scanout: Option<ScanoutImage>,
    cursor: Option<pvgpu_device::display::Cursor>,
    cursor_pos: (u32, u32),
    vram_crc: u32,
}

fn snapshot(g: &SimGuest) -> Snapshot {
    let e = g.dev.engine();
    let vram = e.vram();
    Snapshot {
        objects: e.objects().len(),
        vram_used: g.dev.stats().vram_used,
        scanout: g.dev.scanout_image(),
        cursor: e.display().cursor(),
        cursor_pos: e.display().cursor_pos(),
        vram_crc: vram.checksum_append(0, 0, vram.size()).unwrap(),
    }
}

#[test]
fn display_info_config_and_edid() {
    let mut g = guest();
    // virtio_gpu_config: events_read 0, num_scanouts 1, num_capsets 0.
    assert_eq!(g.r32(0x100), 0);
    assert_eq!(g.r32(0x108), 1);
    assert_eq!(g.r32(0x10c), 0);
    // VIRTIO_GPU_F_EDID is offered.
    g.w32(0x14, 0);
    assert_ne!(g.r32(0x10) & (1 << p::VIRTIO_GPU_F_EDID), 0);

    let r = g.cmd(CtrlHdr::fenced(p::CMD_GET_DISPLAY_INFO, 9).as_bytes());
    let info = p::RespDisplayInfo::read_from(&r).unwrap();
    assert_eq!(info.hdr.type_, p::RESP_OK_DISPLAY_INFO);
    assert_eq!(
        (info.hdr.flags, info.hdr.fence_id),
        (p::VIRTIO_GPU_FLAG_FENCE, 9)
    );
    assert_eq!(info.pmodes[0].r, rect(0, 0, 1280, 800));
    assert_eq!(info.pmodes[0].enabled, 1);
    assert!(info.pmodes[1..]
        .iter()
        .all(|m| *m == p::DisplayOne::default()));

    let r = g.cmd(&rq::get_edid(0));
    let edid = p::RespEdid::read_from(&r).unwrap();
    assert_eq!(edid.hdr.type_, p::RESP_OK_EDID);
    assert_eq!(edid.size, 128);
    let block = &edid.edid[..128];
    assert_eq!(&block[..8], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
    assert_eq!(
        block.iter().fold(0u8, |a, b| a.wrapping_add(*b)),
        0,
        "checksum"
    );
    let w = u32::from(block[0x38]) | (u32::from(block[0x3a]) & 0xf0) << 4;
    let h = u32::from(block[0x3b]) | (u32::from(block[0x3d]) & 0xf0) << 4;
    assert_eq!((w, h), (1280, 800));
    assert!(edid.edid[128..].iter().all(|&b| b == 0));

    // Scanout out of range, no capsets, a 3D command: errors, nothing else.
    assert_eq!(g.cmd_type(&rq::get_edid(1)), p::RESP_ERR_INVALID_PARAMETER);
    let capset = CtrlHdr::new(p::CMD_GET_CAPSET_INFO);
    assert_eq!(g.cmd_type(capset.as_bytes()), p::RESP_ERR_INVALID_PARAMETER);
    assert_eq!(
        g.cmd_type(CtrlHdr::new(0x0201).as_bytes()),
        p::RESP_ERR_UNSPEC
    );
}

#[test]
fn framebuffer_transfer_scanout_flush_and_clean() {
    let mut g = guest();
    let (w, h) = (64u32, 32u32);
    let size = u64::from(w * h * 4);
    let data = picture(w, h, 7);
    let vram_before = g.dev.stats().vram_used;
    let base = framebuffer(&mut g, 5, w, h, &data);
    // The host copy is VRAM, counted in VRAM used and in the objects.
    let st = g.dev.stats();
    assert_eq!(st.vram_used - vram_before, size);
    assert_eq!(st.objects_live, 1);
    ok(&mut g, &rq::transfer_to_host_2d(5, rect(0, 0, w, h), 0));
    ok(&mut g, &rq::set_scanout(0, 5, rect(0, 0, w, h)));
    ok(&mut g, &rq::resource_flush(5, rect(0, 0, w, h)));
    assert_eq!(g.dev.scanout_flushes(), 1);
    let shot = g.dev.scanout_image().unwrap();
    assert_eq!((shot.width, shot.height), (w, h));
    assert_eq!(shot.rgb, rgb_of_bgra(&data));
    // The extension's CHECKSUM sees the VRAM copy.
    assert_eq!(g.checksum(5, 0, size), Ok(crc32c::crc32c(&data)));

    // CLEAN drops the backing's host pages; the scanout still shows the picture.
    let ram_before = g.ram.resident_bytes();
    assert_eq!(g.obj_cmd(p::CMD_CLEAN, 5), p::RESP_OK_NODATA);
    let ram_after = g.ram.resident_bytes();
    assert_eq!(
        ram_before - ram_after,
        size,
        "CLEAN frees exactly the framebuffer"
    );
    let mut back = vec![0xffu8; size as usize];
    g.mem.read_slice(&mut back, GuestAddress(base)).unwrap();
    assert!(back.iter().all(|&b| b == 0), "the guest pages are gone");
    ok(&mut g, &rq::resource_flush(5, rect(0, 0, w, h)));
    assert_eq!(g.dev.scanout_image().unwrap().rgb, rgb_of_bgra(&data));
    assert_eq!(g.dev.stats().bytes_cleaned, size);

    // Without a backing there is nothing to transfer from; a resource is never evicted or
    // migrated (its host copy is what the scanout shows).
    let t = g.cmd_type(&rq::transfer_to_host_2d(5, rect(0, 0, w, h), 0));
    assert_eq!(t, p::RESP_ERR_UNSPEC);
    assert_eq!(
        g.backing_cmd(p::CMD_EVICT, 5, &page_entries(base, 2)),
        p::RESP_ERR_INVALID_STATE
    );
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 5), p::RESP_ERR_INVALID_STATE);
    assert_eq!(g.obj_cmd(p::CMD_CLEAN, 5), p::RESP_ERR_INVALID_STATE);

    // A new backing brings it back to VRAM placement; UNREF frees the VRAM and the scanout.
    let again = g.alloc_pages(size / PAGE);
    let c = g.backing_cmd(
        p::CMD_RESOURCE_ATTACH_BACKING,
        5,
        &page_entries(again, size / PAGE),
    );
    assert_eq!(c, p::RESP_OK_NODATA_2D);
    ok(&mut g, &rq::resource(p::CMD_RESOURCE_DETACH_BACKING, 5));
    ok(&mut g, &rq::resource(p::CMD_RESOURCE_UNREF, 5));
    assert_eq!(g.dev.stats().vram_used, vram_before);
    assert!(g.dev.scanout_image().is_none());
    let c = g.cmd_type(&rq::resource(p::CMD_RESOURCE_UNREF, 5));
    assert_eq!(c, p::RESP_ERR_INVALID_RESOURCE_ID);
}

#[test]
fn partial_transfers_use_offset_and_stride() {
    let mut g = guest();
    let (w, h) = (40u32, 20u32);
    let data = picture(w, h, 1);
    framebuffer(&mut g, 3, w, h, &data);
    ok(&mut g, &rq::set_scanout(0, 3, rect(0, 0, w, h)));
    // Only the rectangle (8, 4) 16x8 is copied; the offset names its first pixel.
    let offset = u64::from((4 * w + 8) * 4);
    ok(
        &mut g,
        &rq::transfer_to_host_2d(3, rect(8, 4, 16, 8), offset),
    );
    let shot = g.dev.scanout_image().unwrap();
    let expect = rgb_of_bgra(&data);
    for y in 0..h {
        for x in 0..w {
            let i = ((y * w + x) * 3) as usize;
            let inside = (8..24).contains(&x) && (4..12).contains(&y);
            let want: &[u8] = if inside {
                &expect[i..i + 3]
            } else {
                &[0, 0, 0]
            };
            assert_eq!(&shot.rgb[i..i + 3], want, "pixel {x},{y}");
        }
    }
    // A scanout showing part of the resource.
    ok(&mut g, &rq::set_scanout(0, 3, rect(8, 4, 16, 8)));
    let shot = g.dev.scanout_image().unwrap();
    assert_eq!((shot.width, shot.height), (16, 8));
    assert_eq!(&shot.rgb[..3], &expect[((4 * w + 8) * 3) as usize..][..3]);
}

#[test]
fn every_listed_format_and_nothing_else() {
    let mut g = guest();
    for (i, f) in format::ALL.into_iter().enumerate() {
        let id = 100 + i as u32;
        let c = g.cmd_type(&rq::resource_create_2d(id, f, 2, 2));
        assert_eq!(c, p::RESP_OK_NODATA_2D, "format {f}");
        // Its channels land where the format says.
        let px: [u8; 16] = [
            10, 20, 30, 40, 10, 20, 30, 40, 10, 20, 30, 40, 10, 20, 30, 40,
        ];
        let base = g.alloc_pages(1);
        g.mem.write_slice(&px, GuestAddress(base)).unwrap();
        let e = [MemEntry {
            addr: base,
            length: 16,
            padding: 0,
        }];
        let c = g.backing_cmd(p::CMD_RESOURCE_ATTACH_BACKING, id, &e);
        assert_eq!(c, p::RESP_OK_NODATA_2D);
        ok(&mut g, &rq::transfer_to_host_2d(id, rect(0, 0, 2, 2), 0));
        ok(&mut g, &rq::set_scanout(0, id, rect(0, 0, 2, 2)));
        let [r, gr, b] = format::rgb_offsets(f).unwrap();
        let shot = g.dev.scanout_image().unwrap();
        assert_eq!(&shot.rgb[..3], &[px[r], px[gr], px[b]], "format {f}");
    }
    let before = snapshot(&g);
    for f in [0u32, 5, 66, 120, 135, u32::MAX] {
        let c = g.cmd_type(&rq::resource_create_2d(1, f, 16, 16));
        assert_eq!(c, p::RESP_ERR_INVALID_PARAMETER, "format {f}");
    }
    assert_eq!(snapshot(&g), before);
}

#[test]
fn bad_sizes_and_ids_change_nothing() {
    let mut g = guest();
    framebuffer(&mut g, 1, 16, 16, &picture(16, 16, 0));
    let before = snapshot(&g);
    let f = format::B8G8R8A8_UNORM;
    for (w, h) in [
        (0, 16),
        (16, 0),
        (0, 0),
        (u32::MAX, 1),
        (u32::MAX, u32::MAX),
        (1 << 30, 2),
    ] {
        let c = g.cmd_type(&rq::resource_create_2d(2, f, w, h));
        assert_eq!(c, p::RESP_ERR_INVALID_PARAMETER, "{w}x{h}");
    }
    // Fits 32-bit stride arithmetic but not VRAM (16 MiB here): out of memory.
    for (w, h) in [(65536, 65536), (4096, 4096), (1 << 29, 8)] {
        let c = g.cmd_type(&rq::resource_create_2d(2, f, w, h));
        assert_eq!(c, p::RESP_ERR_OUT_OF_MEMORY, "{w}x{h}");
    }
    // Id 0 and an id in use (by a 2D resource or a pvgpu object: one id space).
    assert_eq!(
        g.cmd_type(&rq::resource_create_2d(0, f, 4, 4)),
        p::RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        g.cmd_type(&rq::resource_create_2d(1, f, 4, 4)),
        p::RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(snapshot(&g), before);
    assert_eq!(g.create(7, PAGE), p::RESP_OK_NODATA);
    assert_eq!(
        g.cmd_type(&rq::resource_create_2d(7, f, 4, 4)),
        p::RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(g.create(1, PAGE), p::RESP_ERR_OBJECT_EXISTS);
    // 2D commands on a pvgpu memory object: not a resource.
    for req in [
        rq::transfer_to_host_2d(7, rect(0, 0, 1, 1), 0),
        rq::set_scanout(0, 7, rect(0, 0, 1, 1)),
        rq::resource_flush(7, rect(0, 0, 1, 1)),
        rq::resource(p::CMD_RESOURCE_DETACH_BACKING, 7),
        backing_request(
            p::CMD_RESOURCE_ATTACH_BACKING,
            7,
            &page_entries(0x60_0000, 1),
        ),
    ] {
        assert_eq!(g.cmd_type(&req), p::RESP_ERR_INVALID_RESOURCE_ID);
    }
    // UNREF is the extension's DESTROY and works on any object.
    ok(&mut g, &rq::resource(p::CMD_RESOURCE_UNREF, 7));
    assert_eq!(snapshot(&g), before);
}

#[test]
fn rectangles_outside_the_resource_change_nothing() {
    let mut g = guest();
    let (w, h) = (32u32, 16u32);
    let data = picture(w, h, 3);
    framebuffer(&mut g, 1, w, h, &data);
    ok(&mut g, &rq::transfer_to_host_2d(1, rect(0, 0, w, h), 0));
    ok(&mut g, &rq::set_scanout(0, 1, rect(0, 0, w, h)));
    let flushes = g.dev.scanout_flushes();
    let before = snapshot(&g);
    let bad = [
        rect(1, 0, w, h),
        rect(0, 1, w, h),
        rect(w, 0, 1, 1),
        rect(0, h, 1, 1),
        rect(u32::MAX, 0, 2, 1),
        rect(0, u32::MAX, 1, 2),
        rect(0, 0, u32::MAX, u32::MAX),
    ];
    for r in bad {
        let t = g.cmd_type(&rq::transfer_to_host_2d(1, r, 0));
        assert_eq!(t, p::RESP_ERR_INVALID_PARAMETER, "transfer {r:?}");
        let s = g.cmd_type(&rq::set_scanout(0, 1, r));
        assert_eq!(s, p::RESP_ERR_INVALID_PARAMETER, "scanout {r:?}");
        let f = g.cmd_type(&rq::resource_flush(1, r));
        assert_eq!(f, p::RESP_ERR_INVALID_PARAMETER, "flush {r:?}");
    }
    // An empty scanout rectangle; transfers that would read past the backing (one page, the
    // resource is half of it) or whose offset arithmetic overflows.
    let s = g.cmd_type(&rq::set_scanout(0, 1, rect(0, 0, 0, 4)));
    assert_eq!(s, p::RESP_ERR_INVALID_PARAMETER);
    for off in [2049, PAGE, u64::MAX, u64::MAX - 100] {
        let t = g.cmd_type(&rq::transfer_to_host_2d(1, rect(0, 0, w, h), off));
        assert_eq!(t, p::RESP_ERR_INVALID_PARAMETER, "offset {off}");
    }
    assert_eq!(snapshot(&g), before);
    assert_eq!(g.dev.scanout_flushes(), flushes);
}

#[test]
fn bad_backings_change_nothing() {
    let mut g = guest();
    let c = g.cmd_type(&rq::resource_create_2d(1, format::X8R8G8B8_UNORM, 32, 32));
    assert_eq!(c, p::RESP_OK_NODATA_2D);
    let before = snapshot(&g);
    let size = 32 * 32 * 4u32;
    let base = g.alloc_pages(2);
    let entry = |addr: u64, length: u32| MemEntry {
        addr,
        length,
        padding: 0,
    };
    let bad: Vec<Vec<MemEntry>> = vec![
        // Shorter than the resource, by one byte and by a lot.
        vec![entry(base, size - 1)],
        vec![entry(base, 16), entry(base + 4096, 16)],
        vec![],
        // Outside guest RAM, overflowing, empty entries.
        vec![entry(32 * MIB - 16, size)],
        vec![entry(u64::MAX - 8, size)],
        vec![entry(base, 0), entry(base, size)],
        // Overlapping itself.
        vec![
            entry(base, size / 2 + 8),
            entry(base + u64::from(size / 2), size / 2),
        ],
    ];
    for e in &bad {
        let c = g.backing_cmd(p::CMD_RESOURCE_ATTACH_BACKING, 1, e);
        assert_eq!(c, p::RESP_ERR_UNSPEC, "{e:?}");
        // Still no backing: a transfer has nothing to read.
        let t = g.cmd_type(&rq::transfer_to_host_2d(1, rect(0, 0, 1, 1), 0));
        assert_eq!(t, p::RESP_ERR_UNSPEC);
    }
    // A count larger than the entries sent, or than the device reads.
    let short = rq::backing(p::CMD_RESOURCE_ATTACH_BACKING, 1, 3, &[entry(base, size)]);
    assert_eq!(g.cmd_type(&short), p::RESP_ERR_UNSPEC);
    let huge = rq::backing(p::CMD_RESOURCE_ATTACH_BACKING, 1, u32::MAX, &[]);
    assert_eq!(g.cmd_type(&huge), p::RESP_ERR_INVALID_PARAMETER);
    // More entries than the resource has pages (+1): byte-sized entries would make the host
    // keep a record per guest byte. One page here, so 2 entries at most.
    let mut many: Vec<MemEntry> = (0..2).map(|i| entry(base + 2 * i, 1)).collect();
    many.push(entry(base + 4096, size));
    let c = g.backing_cmd(p::CMD_RESOURCE_ATTACH_BACKING, 1, &many);
    assert_eq!(c, p::RESP_ERR_INVALID_PARAMETER);
    assert_eq!(
        g.cmd_type(&rq::resource(p::CMD_RESOURCE_DETACH_BACKING, 1)),
        p::RESP_ERR_UNSPEC
    );
    assert_eq!(snapshot(&g), before);
    // Byte-granular backings work (virtio-gpu allows them), and may be longer.
    let ok_list = [entry(base + 100, 3000), entry(base + 3100, size)];
    let c = g.backing_cmd(p::CMD_RESOURCE_ATTACH_BACKING, 1, &ok_list);
    assert_eq!(c, p::RESP_OK_NODATA_2D);
    let again = g.backing_cmd(p::CMD_RESOURCE_ATTACH_BACKING, 1, &ok_list);
    assert_eq!(again, p::RESP_ERR_UNSPEC);
    // CLEAN of such a backing punches only the whole pages inside it.
    let ram = g.ram.resident_bytes();
    assert_eq!(g.obj_cmd(p::CMD_CLEAN, 1), p::RESP_OK_NODATA);
    assert!(ram - g.ram.resident_bytes() <= 2 * PAGE);
}

#[test]
fn scanout_ids_out_of_range() {
    let mut g = guest();
    framebuffer(&mut g, 1, 8, 8, &picture(8, 8, 0));
    let before = snapshot(&g);
    for s in [1u32, 16, u32::MAX] {
        let c = g.cmd_type(&rq::set_scanout(s, 1, rect(0, 0, 8, 8)));
        assert_eq!(c, p::RESP_ERR_INVALID_SCANOUT_ID);
        let c = g.cmd_type(&rq::set_scanout(s, 0, rect(0, 0, 0, 0)));
        assert_eq!(c, p::RESP_ERR_INVALID_SCANOUT_ID);
    }
    assert_eq!(snapshot(&g), before);
    // Resource 0 turns the scanout off.
    ok(&mut g, &rq::set_scanout(0, 1, rect(0, 0, 8, 8)));
    assert!(g.dev.scanout_image().is_some());
    ok(&mut g, &rq::set_scanout(0, 0, rect(0, 0, 0, 0)));
    assert!(g.dev.scanout_image().is_none());
    // Missing resources.
    let c = g.cmd_type(&rq::set_scanout(0, 99, rect(0, 0, 8, 8)));
    assert_eq!(c, p::RESP_ERR_INVALID_RESOURCE_ID);
    let c = g.cmd_type(&rq::resource_flush(99, rect(0, 0, 8, 8)));
    assert_eq!(c, p::RESP_ERR_INVALID_RESOURCE_ID);
}

#[test]
fn cursor_queue_commands() {
    let mut g = guest();
    framebuffer(&mut g, 0xdade, 64, 64, &picture(64, 64, 9));
    framebuffer(&mut g, 2, 32, 32, &picture(32, 32, 9));
    let cur = |cmd, s, id, x, y| rq::cursor(cmd, s, id, x, y, (3, 4));
    // Like virtio-drivers and Linux: no response buffer. The command still runs.
    let (used, _) = g.cursor_cmd(&cur(p::CMD_UPDATE_CURSOR, 0, 0xdade, 10, 20), 0);
    assert_eq!(used, 0);
    let d = g.dev.engine().display();
    assert_eq!(
        d.cursor().map(|c| (c.resource_id, c.hot_x, c.hot_y)),
        Some((0xdade, 3, 4))
    );
    assert_eq!(d.cursor_pos(), (10, 20));
    let (used, resp) = g.cursor_cmd(&cur(p::CMD_MOVE_CURSOR, 0, 0xdade, 30, 40), 24);
    assert_eq!(used, 24);
    assert_eq!(
        CtrlHdr::read_from(&resp).unwrap().type_,
        p::RESP_OK_NODATA_2D
    );
    assert_eq!(g.dev.engine().display().cursor_pos(), (30, 40));

    // Bad cursor commands: the spec's error, nothing changes.
    let before = snapshot(&g);
    let bad = [
        (
            cur(p::CMD_UPDATE_CURSOR, 0, 77, 1, 1),
            p::RESP_ERR_INVALID_RESOURCE_ID,
        ),
        (
            cur(p::CMD_MOVE_CURSOR, 0, 77, 1, 1),
            p::RESP_ERR_INVALID_RESOURCE_ID,
        ),
        (
            cur(p::CMD_UPDATE_CURSOR, 1, 0xdade, 1, 1),
            p::RESP_ERR_INVALID_SCANOUT_ID,
        ),
        (
            cur(p::CMD_MOVE_CURSOR, u32::MAX, 0xdade, 1, 1),
            p::RESP_ERR_INVALID_SCANOUT_ID,
        ),
        (
            cur(p::CMD_UPDATE_CURSOR, 0, 2, 1, 1),
            p::RESP_ERR_INVALID_PARAMETER,
        ),
        (
            CtrlHdr::new(p::CMD_UPDATE_CURSOR).as_bytes().to_vec(),
            p::RESP_ERR_UNSPEC,
        ),
        (rq::resource(p::CMD_RESOURCE_UNREF, 2), p::RESP_ERR_UNSPEC),
    ];
    for (req, want) in &bad {
        let (used, resp) = g.cursor_cmd(req, 24);
        assert_eq!(used, 24);
        assert_eq!(CtrlHdr::read_from(&resp).unwrap().type_, *want);
        g.cursor_cmd(req, 0);
    }
    assert_eq!(snapshot(&g), before);
    assert!(
        g.dev.engine().objects().get(2).is_ok(),
        "UNREF on the cursor queue did nothing"
    );
    // Cursor commands belong on the cursor queue.
    let c = g.cmd_type(&cur(p::CMD_MOVE_CURSOR, 0, 0xdade, 1, 1));
    assert_eq!(c, p::RESP_ERR_UNSPEC);
    // Unref of the cursor image hides the cursor; resource 0 hides it too.
    ok(&mut g, &rq::resource(p::CMD_RESOURCE_UNREF, 0xdade));
    assert!(g.dev.engine().display().cursor().is_none());
    let (used, _) = g.cursor_cmd(&cur(p::CMD_UPDATE_CURSOR, 0, 0, 5, 5), 24);
    assert_eq!(used, 24);
    assert!(g.dev.engine().display().cursor().is_none());
}

#[test]
fn a_plain_virtio_gpu_driver_gets_2d_but_not_the_extension() {
    let mut g = SimGuest::with_features(32 * MIB, 16 * MIB, false).unwrap();
    let data = picture(16, 8, 2);
    framebuffer(&mut g, 1, 16, 8, &data);
    ok(&mut g, &rq::transfer_to_host_2d(1, rect(0, 0, 16, 8), 0));
    ok(&mut g, &rq::set_scanout(0, 1, rect(0, 0, 16, 8)));
    assert_eq!(g.dev.scanout_image().unwrap().rgb, rgb_of_bgra(&data));
    assert_eq!(g.obj_cmd(p::CMD_CLEAN, 1), p::RESP_ERR_NOT_NEGOTIATED);
    assert_eq!(g.create(2, PAGE), p::RESP_ERR_NOT_NEGOTIATED);
    assert_eq!(
        g.cmd_type(CtrlHdr::new(p::CMD_NOP).as_bytes()),
        p::RESP_ERR_NOT_NEGOTIATED
    );
    // A reset forgets resources and the scanout.
    g.reinit();
    assert!(g.dev.scanout_image().is_none());
    assert_eq!(g.dev.engine().objects().len(), 0);
}

#[test]
fn resources_are_bounded_by_vram() {
    let mut g = SimGuest::new(32 * MIB, 4 * MIB).unwrap();
    let f = format::B8G8R8A8_UNORM;
    // 1 MiB each (512x512x4): four fit, the fifth does not.
    for id in 1..=4 {
        assert_eq!(
            g.cmd_type(&rq::resource_create_2d(id, f, 512, 512)),
            p::RESP_OK_NODATA_2D
        );
    }
    let before = snapshot(&g);
    assert_eq!(
        g.cmd_type(&rq::resource_create_2d(5, f, 512, 512)),
        p::RESP_ERR_OUT_OF_MEMORY
    );
    assert_eq!(
        g.cmd_type(&rq::resource_create_2d(5, f, 1, 1)),
        p::RESP_ERR_OUT_OF_MEMORY
    );
    assert_eq!(g.create(6, PAGE), p::RESP_OK_NODATA);
    assert_eq!(
        g.backing_cmd(p::CMD_ATTACH_BACKING, 6, &page_entries(0x60_0000, 1)),
        p::RESP_OK_NODATA
    );
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 6), p::RESP_ERR_OUT_OF_MEMORY);
    assert_eq!(g.obj_cmd(p::CMD_DESTROY, 6), p::RESP_OK_NODATA);
    assert_eq!(snapshot(&g), before);
    let st = g.dev.stats();
    assert_eq!((st.vram_used, st.objects_live), (4 * MIB, 4));
    assert!(g.dev.engine().vram().host_memory().resident_bytes() <= 4 * MIB);
}
