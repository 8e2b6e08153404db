//! READ and WRITE: copies between guest pages and an object's VRAM for guests that cannot map
//! VRAM (Linux under User-Mode Linux). Data is checked byte for byte in guest memory and by
//! CHECKSUM; every bad value gets its error and changes nothing.

mod common;

use common::{pattern, PAGE};
use pvgpu_abi::protocol::{self as p, MemEntry};
use pvgpu_abi::request;
use pvgpu_device::sim_driver::{page_entries, SimGuest};
use vm_memory::{Bytes, GuestAddress};

const MIB: u64 = 1 << 20;

/// A guest with object 1 of `pages` pages holding `data`, migrated and cleaned.
fn cleaned_object(pages: u64, data: &[u8]) -> SimGuest {
    let mut g = SimGuest::new(32 * MIB, 16 * MIB).unwrap();
    let base = g.alloc_pages(pages);
    g.mem.write_slice(data, GuestAddress(base)).unwrap();
    assert_eq!(g.create(1, pages * PAGE), p::RESP_OK_NODATA);
    assert_eq!(
        g.backing_cmd(p::CMD_ATTACH_BACKING, 1, &page_entries(base, pages)),
        p::RESP_OK_NODATA
    );
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 1), p::RESP_OK_MIGRATE);
    assert_eq!(g.obj_cmd(p::CMD_CLEAN, 1), p::RESP_OK_NODATA);
    g
}

#[test]
fn read_and_write_a_cleaned_object_through_scattered_pages() {
    let data = pattern(16 * PAGE as usize, 5);
    let mut g = cleaned_object(16, &data);
    let ram_before = g.ram.resident_bytes();

    // READ pages 3..7 into two scattered buffers (reverse order in guest memory).
    let buf = g.alloc_pages(8);
    let entries = [
        MemEntry {
            addr: buf + 6 * PAGE,
            length: 2 * PAGE as u32,
            padding: 0,
        },
        MemEntry {
            addr: buf,
            length: 2 * PAGE as u32,
            padding: 0,
        },
    ];
    assert_eq!(
        g.transfer(p::CMD_READ, 1, 3 * PAGE, &entries),
        p::RESP_OK_NODATA
    );
    let mut got = vec![0u8; 2 * PAGE as usize];
    g.mem
        .read_slice(&mut got, GuestAddress(buf + 6 * PAGE))
        .unwrap();
    assert_eq!(got, data[3 * PAGE as usize..5 * PAGE as usize]);
    g.mem.read_slice(&mut got, GuestAddress(buf)).unwrap();
    assert_eq!(got, data[5 * PAGE as usize..7 * PAGE as usize]);

    // WRITE new data over page 15 (the last one): CHECKSUM sees it, placement unchanged.
    let new = pattern(PAGE as usize, 99);
    g.mem.write_slice(&new, GuestAddress(buf)).unwrap();
    assert_eq!(
        g.transfer(p::CMD_WRITE, 1, 15 * PAGE, &page_entries(buf, 1)),
        p::RESP_OK_NODATA
    );
    let mut want = data.clone();
    want[15 * PAGE as usize..].copy_from_slice(&new);
    assert_eq!(g.checksum(1, 0, 16 * PAGE), Ok(crc32c::crc32c(&want)));
    let o = g.dev.engine().objects().get(1).unwrap();
    assert_eq!(o.placement, p::Placement::Cleaned);
    assert!(o.backing.is_none(), "transfer pages are not attached");

    // The object's cleaned pages were not touched: guest RAM grew by the buffer pages only.
    let grown = g.ram.resident_bytes() - ram_before;
    assert!(grown <= 8 * PAGE, "guest RAM grew by {grown}");

    // EVICT brings the written data back.
    let fresh = g.alloc_pages(16);
    assert_eq!(
        g.backing_cmd(p::CMD_EVICT, 1, &page_entries(fresh, 16)),
        p::RESP_OK_NODATA
    );
    let mut back = vec![0u8; want.len()];
    g.mem.read_slice(&mut back, GuestAddress(fresh)).unwrap();
    assert_eq!(back, want);
    let s = g.dev.stats();
    assert_eq!((s.bytes_read, s.bytes_written), (4 * PAGE, PAGE));
}

#[test]
fn write_to_a_vram_object_makes_vram_authoritative() {
    let mut g = SimGuest::new(32 * MIB, 16 * MIB).unwrap();
    let base = g.alloc_pages(4);
    let data = pattern(4 * PAGE as usize, 1);
    g.mem.write_slice(&data, GuestAddress(base)).unwrap();
    assert_eq!(g.create(7, 4 * PAGE), p::RESP_OK_NODATA);
    assert_eq!(
        g.backing_cmd(p::CMD_ATTACH_BACKING, 7, &page_entries(base, 4)),
        p::RESP_OK_NODATA
    );
    // SYSTEM objects have no VRAM data to transfer.
    let buf = g.alloc_pages(1);
    for cmd in [p::CMD_READ, p::CMD_WRITE] {
        assert_eq!(
            g.transfer(cmd, 7, 0, &page_entries(buf, 1)),
            p::RESP_ERR_INVALID_STATE
        );
    }
    assert_eq!(g.obj_cmd(p::CMD_MIGRATE, 7), p::RESP_OK_MIGRATE);
    g.mem
        .write_slice(&[0xee; PAGE as usize], GuestAddress(buf))
        .unwrap();
    assert_eq!(
        g.transfer(p::CMD_WRITE, 7, PAGE, &page_entries(buf, 1)),
        p::RESP_OK_NODATA
    );
    // EVICT back into the object's own pages carries the write.
    assert_eq!(
        g.cmd_type(&request::backing(p::CMD_EVICT, 7, 0, &[])),
        p::RESP_OK_NODATA
    );
    let mut back = vec![0u8; PAGE as usize];
    g.mem
        .read_slice(&mut back, GuestAddress(base + PAGE))
        .unwrap();
    assert_eq!(back, vec![0xee; PAGE as usize]);
}

#[test]
fn hostile_transfers_are_refused_and_change_nothing() {
    let data = pattern(4 * PAGE as usize, 7);
    let mut g = cleaned_object(4, &data);
    let want = crc32c::crc32c(&data);
    let buf = g.alloc_pages(2);
    let ent = |addr, length| MemEntry {
        addr,
        length,
        padding: 0,
    };
    let ram_end = 32 * MIB;
    for cmd in [p::CMD_READ, p::CMD_WRITE] {
        // Bad pages.
        for bad in [
            vec![ent(buf + 1, 4096)],
            vec![ent(buf, 100)],
            vec![ent(buf, 0)],
            vec![ent(ram_end, 4096)],
            vec![ent(ram_end - 4096, 8192)],
            vec![ent(!0xfff, 4096)],
            vec![ent(pvgpu_abi::layout::VIRTIO_MMIO_BASE, 4096)],
            vec![ent(pvgpu_abi::layout::VRAM_BASE, 4096)],
        ] {
            assert_eq!(
                g.transfer(cmd, 1, 0, &bad),
                p::RESP_ERR_BAD_BACKING,
                "{cmd:#x} {bad:x?}"
            );
        }
        // Ranges: past the end, overflowing, unaligned offset, nothing at all.
        let one = page_entries(buf, 1);
        let two = page_entries(buf, 2);
        assert_eq!(g.transfer(cmd, 1, 4 * PAGE, &one), p::RESP_ERR_OUT_OF_RANGE);
        assert_eq!(g.transfer(cmd, 1, 3 * PAGE, &two), p::RESP_ERR_OUT_OF_RANGE);
        assert_eq!(g.transfer(cmd, 1, !0xfff, &one), p::RESP_ERR_OUT_OF_RANGE);
        assert_eq!(g.transfer(cmd, 1, 1, &one), p::RESP_ERR_INVALID_PARAMETER);
        assert_eq!(g.transfer(cmd, 1, 0, &[]), p::RESP_ERR_INVALID_PARAMETER);
        // Ids.
        assert_eq!(g.transfer(cmd, 0, 0, &one), p::RESP_ERR_INVALID_OBJECT_ID);
        assert_eq!(g.transfer(cmd, 9, 0, &one), p::RESP_ERR_INVALID_OBJECT_ID);
        // nr_entries beyond the request, beyond the limit; a bare header.
        let mut r = request::transfer(cmd, 1, 0, 2, &one);
        assert_eq!(g.cmd_type(&r), p::RESP_ERR_BAD_REQUEST);
        r[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(g.cmd_type(&r), p::RESP_ERR_INVALID_PARAMETER);
        assert_eq!(g.cmd_type(&request::header(cmd)), p::RESP_ERR_BAD_REQUEST);
    }
    assert_eq!(g.checksum(1, 0, 4 * PAGE), Ok(want));
    let s = g.dev.stats();
    assert_eq!((s.bytes_read, s.bytes_written), (0, 0));
}
