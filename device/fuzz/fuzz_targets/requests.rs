//! Fuzzes the request path: arbitrary register writes, raw descriptor chains (loops, bad
//! directions, indirect tables, wild addresses), corrupted ring indices, raw request bytes,
//! and well-formed commands with fuzzed fields (the extension's, virtio-gpu's 2D commands and
//! the cursor queue's), against one simulated guest per input, on the memory the input's first
//! byte picks: shared memfds (pages copied), anonymous 4 KiB pages or anonymous huge pages
//! (pages moved with userfaultfd, in whole 2 MiB pages where they line up).
//! The device must never panic, and its bookkeeping must stay consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvgpu_abi::protocol::{self as p, CtrlHdr, MemEntry, Rect, Wire};
use pvgpu_abi::request as rq;
use pvgpu_device::object::Placement;
use pvgpu_device::sim_driver::{
    backing_request, RawDesc, SimGuest, DATA_START, QSIZE, SCRATCH_START,
};
use pvgpu_device::{MemoryBackend, ZeroCopy};
use vm_memory::{Bytes, GuestAddress};

const RAM: u64 = 16 << 20;
const VRAM: u64 = 8 << 20;
const HUGE: u64 = 2 << 20;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from(self.u32()?) | (u64::from(self.u32()?) << 32))
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    /// A length or offset: usually small and page-ish, sometimes wild.
    fn size(&mut self) -> Option<u64> {
        Some(match self.u8()? % 5 {
            0 => u64::from(self.u8()? % 8) * 4096,
            1 => u64::from(self.u16()?),
            2 => u64::from(self.u8()?),
            3 => u64::from(self.u8()? % 4) * HUGE,
            _ => self.u64()?,
        })
    }
    /// A guest address: usually in the data area, sometimes anywhere.
    fn addr(&mut self) -> Option<u64> {
        Some(match self.u8()? % 5 {
            0 | 1 => DATA_START + u64::from(self.u8()?) * 4096,
            2 => u64::from(self.u32()?),
            3 => DATA_START.next_multiple_of(HUGE) + u64::from(self.u8()? % 4) * HUGE,
            _ => self.u64()?,
        })
    }
    fn id(&mut self) -> Option<u32> {
        Some(match self.u8()? {
            b @ 0..=250 => u32::from(b % 4),
            _ => self.u32()?,
        })
    }
}

fn entries(inp: &mut Input) -> Option<Vec<MemEntry>> {
    let n = inp.u8()? % 8;
    (0..n)
        .map(|_| {
            Some(MemEntry {
                addr: inp.addr()?,
                length: match inp.u8()? % 4 {
                    0 => 4096,
                    1 => 8192,
                    2 => HUGE as u32,
                    _ => inp.u32()?,
                },
                padding: 0,
            })
        })
        .collect()
}

/// A pixel count: usually small, sometimes 0, huge or 2^32-1.
fn dim(inp: &mut Input) -> Option<u32> {
    Some(match inp.u8()? % 4 {
        0 | 1 => u32::from(inp.u8()? % 64),
        2 => u32::from(inp.u16()?),
        _ => inp.u32()?,
    })
}

fn rect(inp: &mut Input) -> Option<Rect> {
    Some(Rect {
        x: dim(inp)?,
        y: dim(inp)?,
        width: dim(inp)?,
        height: dim(inp)?,
    })
}

/// A virtio-gpu 2D or cursor request with fuzzed fields.
fn command_2d(inp: &mut Input) -> Option<Vec<u8>> {
    Some(match inp.u8()? % 10 {
        0 => rq::header(p::CMD_GET_DISPLAY_INFO),
        1 => {
            let format = match inp.u8()? % 3 {
                0 => p::format::B8G8R8A8_UNORM,
                1 => p::format::ALL[usize::from(inp.u8()? % 8)],
                _ => inp.u32()?,
            };
            rq::resource_create_2d(inp.id()?, format, dim(inp)?, dim(inp)?)
        }
        2 => rq::resource(p::CMD_RESOURCE_UNREF, inp.id()?),
        3 => rq::set_scanout(inp.u8()? as u32 % 3, inp.id()?, rect(inp)?),
        4 => rq::resource_flush(inp.id()?, rect(inp)?),
        5 => rq::transfer_to_host_2d(inp.id()?, rect(inp)?, inp.size()?),
        6 => {
            let id = inp.id()?;
            backing_request(p::CMD_RESOURCE_ATTACH_BACKING, id, &entries(inp)?)
        }
        7 => rq::resource(p::CMD_RESOURCE_DETACH_BACKING, inp.id()?),
        8 => rq::get_edid(inp.u8()? as u32 % 3),
        _ => {
            let cmd = if inp.u8()? % 2 == 0 {
                p::CMD_UPDATE_CURSOR
            } else {
                p::CMD_MOVE_CURSOR
            };
            rq::cursor(
                cmd,
                inp.u8()? as u32 % 3,
                inp.id()?,
                dim(inp)?,
                dim(inp)?,
                (dim(inp)?, dim(inp)?),
            )
        }
    })
}

fn command(inp: &mut Input) -> Option<Vec<u8>> {
    let hdr = CtrlHdr {
        flags: u32::from(inp.u8()? & 3),
        fence_id: u64::from(inp.u8()?),
        ..CtrlHdr::new(0)
    };
    let h = |t| CtrlHdr { type_: t, ..hdr };
    // The commands that name one object and nothing else.
    let object = |inp: &mut Input, t| {
        let r = p::ReqObject {
            hdr: h(t),
            object_id: inp.id()?,
            padding: 0,
        };
        Some(r.as_bytes().to_vec())
    };
    let sel = inp.u8()? % 19;
    Some(match sel {
        0 => h(p::CMD_NOP).as_bytes().to_vec(),
        1 => h(p::CMD_GET_INFO).as_bytes().to_vec(),
        2 => p::ReqCreate {
            hdr: h(p::CMD_CREATE),
            object_id: inp.id()?,
            flags: 0,
            size: inp.size()?,
        }
        .as_bytes()
        .to_vec(),
        3 => object(inp, p::CMD_DESTROY)?,
        4 => {
            let id = inp.id()?;
            backing_request(p::CMD_ATTACH_BACKING, id, &entries(inp)?)
        }
        5 => object(inp, p::CMD_MIGRATE)?,
        6 => object(inp, p::CMD_CLEAN)?,
        7 => {
            let id = inp.id()?;
            backing_request(p::CMD_EVICT, id, &entries(inp)?)
        }
        8 => p::ReqFill {
            hdr: h(p::CMD_FILL),
            object_id: inp.id()?,
            value: u32::from(inp.u8()?),
            offset: inp.size()?,
            length: inp.size()?,
        }
        .as_bytes()
        .to_vec(),
        9 => p::ReqCopy {
            hdr: h(p::CMD_COPY),
            dst_id: inp.id()?,
            src_id: inp.id()?,
            dst_offset: inp.size()?,
            src_offset: inp.size()?,
            length: inp.size()?,
        }
        .as_bytes()
        .to_vec(),
        10 => p::ReqRange {
            hdr: h(p::CMD_CHECKSUM),
            object_id: inp.id()?,
            padding: 0,
            offset: inp.size()?,
            length: inp.size()?,
        }
        .as_bytes()
        .to_vec(),
        11 => h(p::CMD_STATS).as_bytes().to_vec(),
        18 => object(inp, p::CMD_MIGRATE_CLEAN)?,
        12 | 13 => {
            let cmd = if sel == 12 { p::CMD_READ } else { p::CMD_WRITE };
            let object_id = inp.id()?;
            let offset = inp.size()?;
            let e = entries(inp)?;
            let mut v = p::ReqTransfer {
                hdr: h(cmd),
                object_id,
                nr_entries: e.len() as u32,
                offset,
            }
            .as_bytes()
            .to_vec();
            for x in &e {
                v.extend_from_slice(x.as_bytes());
            }
            v
        }
        _ => {
            let mut c = command_2d(inp)?;
            // The same type, with the fuzzed flags and fence.
            let fenced = h(CtrlHdr::read_from(&c)?.type_);
            c[..core::mem::size_of::<CtrlHdr>()].copy_from_slice(fenced.as_bytes());
            c
        }
    })
}

fn step(g: &mut SimGuest, inp: &mut Input) -> Option<()> {
    match inp.u8()? % 9 {
        // One bounded step only: a long command stays in flight into the next steps
        // (register writes, resets, more requests).
        8 => {
            let c = command(inp)?;
            let _ = g.mem.write_slice(&c, GuestAddress(SCRATCH_START + 0x1000));
            g.write_desc(
                200,
                RawDesc {
                    addr: SCRATCH_START + 0x1000,
                    len: c.len() as u32,
                    flags: 1,
                    next: 201,
                },
            );
            g.write_desc(
                201,
                RawDesc {
                    addr: SCRATCH_START + 0x2000,
                    len: 64,
                    flags: 2,
                    next: 0,
                },
            );
            for _ in 0..=(inp.u8()? % 4) {
                g.push_avail(200);
            }
            if g.w32(pvgpu_device::QUEUE_NOTIFY_OFFSET, 0) {
                for _ in 0..=(inp.u8()? % 3) {
                    let _ = g.dev.process_queue_step(&g.mem);
                }
            }
        }
        // Well-formed command with fuzzed fields, possibly truncated.
        0..=2 => {
            let mut c = command(inp)?;
            if inp.u8()? == 0 {
                let n = usize::from(inp.u8()?) % (c.len() + 1);
                c.truncate(n);
            }
            g.cmd(&c);
        }
        // Raw request bytes.
        3 => {
            let n = usize::from(inp.u16()? % 512);
            let raw = inp.bytes(n).to_vec();
            g.cmd(&raw);
        }
        // A raw chain of descriptors, then notify.
        4 => {
            let n = inp.u8()? % 6 + 1;
            for i in 0..n {
                let d = RawDesc {
                    addr: match inp.u8()? % 3 {
                        0 => SCRATCH_START + u64::from(inp.u16()?),
                        1 => inp.addr()?,
                        _ => u64::from(inp.u8()?) * 16 + pvgpu_device::sim_driver::DESC_ADDR,
                    },
                    len: match inp.u8()? % 3 {
                        0 => u32::from(inp.u8()?),
                        1 => 48,
                        _ => inp.u32()?,
                    },
                    flags: u16::from(inp.u8()? & 7),
                    next: match inp.u8()? % 2 {
                        0 => u16::from(i + 1),
                        _ => inp.u16()?,
                    },
                };
                g.write_desc(u16::from(i), d);
            }
            // Put a request header in the scratch area for chains that point there.
            let c = command(inp)?;
            let _ = g.mem.write_slice(&c, GuestAddress(SCRATCH_START));
            let head = inp.u16()? % (QSIZE + 2);
            g.push_avail(head);
            g.notify();
            g.take_used();
        }
        // Register write (including status changes, queue reconfiguration, resets).
        5 => {
            let off = u64::from(inp.u8()?) * 4;
            let v = inp.u32()?;
            if g.w32(off, v) {
                let _ = g.dev.process_queue(&g.mem);
            }
            let _ = g.r32(off);
            if inp.u8()? % 4 == 0 {
                g.reinit();
            }
        }
        // Corrupt the avail index, then notify.
        6 => {
            let v = inp.u16()?;
            let _ = g
                .mem
                .write_obj(v, GuestAddress(pvgpu_device::sim_driver::AVAIL_ADDR + 2));
            g.notify();
            g.reinit();
        }
        // A cursor-queue request (2D or cursor command, possibly truncated), with or without a
        // response buffer.
        7 => {
            let mut c = command_2d(inp)?;
            if inp.u8()? == 0 {
                let n = usize::from(inp.u8()?) % (c.len() + 1);
                c.truncate(n);
            }
            let resp = u32::from(inp.u8()?) % 3 * 12;
            g.cursor_cmd(&c, resp);
        }
        // Guest writes data.
        _ => {
            let a = inp.addr()?;
            let n = usize::from(inp.u8()?) * 16;
            let data = inp.bytes(n).to_vec();
            let _ = g.mem.write_slice(&data, GuestAddress(a));
        }
    }
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let backend = match inp.u8().unwrap_or(0) % 3 {
        0 => MemoryBackend::Shared,
        1 => MemoryBackend::Anonymous { thp: false },
        _ => MemoryBackend::Anonymous { thp: true },
    };
    // Small slices, so FILL/COPY/CHECKSUM/MIGRATE/EVICT of more than a few pages stay in
    // flight across bounded steps: a page, or a sixteenth of a huge page (a move slice is then
    // one 2 MiB page, so whole ones can move as such).
    let slice = if inp.u8().unwrap_or(0) % 2 == 0 {
        4096
    } else {
        HUGE / pvgpu_device::job::MOVE_SLICES
    };
    let Ok(mut g) = SimGuest::with_backend_and_slices(RAM, VRAM, backend, ZeroCopy::Auto, slice)
    else {
        return;
    };
    for _ in 0..64 {
        if step(&mut g, &mut inp).is_none() {
            break;
        }
    }
    // A command in flight on a control queue the driver stopped waits for it: a reset must
    // drop it.
    if g.dev.engine().is_running() {
        use pvgpu_abi::virtio_mmio::regs;
        g.w32(regs::QUEUE_SEL, 0);
        if g.r32(regs::QUEUE_READY) == 0 {
            g.w32(regs::STATUS, 0);
            assert!(
                !g.dev.engine().is_running(),
                "a reset leaves a command in flight"
            );
        }
    }
    // Finish what is in flight; it must end.
    let mut rounds = 0;
    while g.dev.engine().is_running() {
        let _ = g.dev.process_queue_step(&g.mem);
        rounds += 1;
        assert!(rounds < 100_000, "a job does not end");
    }
    // Bookkeeping invariants.
    let e = g.dev.engine();
    let in_vram: u64 = e
        .objects()
        .iter()
        .filter(|o| o.placement != Placement::System)
        .map(|o| o.size)
        .sum();
    assert_eq!(in_vram, e.stats().vram_used);
    for o in e.objects().iter() {
        assert_eq!(o.vram_offset.is_some(), o.placement != Placement::System);
        assert_eq!(
            o.placement == Placement::Cleaned,
            o.backing.is_none() && o.vram_offset.is_some()
        );
    }
    // What the scanout shows can always be read back, within the display mode's bounds.
    if let Some(img) = g.dev.scanout_image() {
        assert_eq!(img.rgb.len(), img.width as usize * img.height as usize * 3);
    }
    assert!(g.ram.resident_bytes() <= RAM);
    assert!(g.dev.vram().host_memory().resident_bytes() <= VRAM);
});
