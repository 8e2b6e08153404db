//! A hostile driver against the register window and the control queue, without KVM: rings
//! the device cannot use, a queue that feeds itself, punches that fail, answers that cannot be
//! delivered. The device must stay bounded and consistent.
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvgpu_abi::protocol::{self as p, CtrlHdr, Wire};
use pvgpu_abi::request;
use pvgpu_abi::virtio_mmio::{regs, status};
use pvgpu_device::memfd::MemFd;
use pvgpu_device::sim_driver::{start_driver, write_desc_at, QueueRings, RawDesc};
use pvgpu_device::{DeviceConfig, GuestRamPunch, PvgpuDevice};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap};

const RAM: u64 = 16 << 20;

fn w(dev: &mut PvgpuDevice, off: u64, v: u32) -> bool {
    dev.mmio_write(off, &v.to_le_bytes())
}

fn mem_and_dev(punch: Box<dyn GuestRamPunch + Send>) -> (GuestMemoryMmap, PvgpuDevice, Arc<MemFd>) {
    let ram = Arc::new(MemFd::new("r", RAM).unwrap());
    let file = ram.file().try_clone().unwrap();
    let mem = GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(0),
        RAM as usize,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap();
    let cfg = DeviceConfig::new(RAM, 4 << 20).unwrap();
    let dev = PvgpuDevice::new(cfg, punch).unwrap();
    (mem, dev, ram)
}

fn bring_up(dev: &mut PvgpuDevice, qsize: u32, desc: u64, avail: u64, used: u64) {
    let f: u64 = (1 << p::VIRTIO_F_VERSION_1) | (1 << p::VIRTIO_GPU_F_PVGPU_MEM);
    let rings = QueueRings {
        size: qsize as u16,
        desc,
        avail,
        used,
    };
    start_driver(|off, v| _ = w(dev, off, v), f, &rings);
    assert_eq!(
        dev.transport().status() & status::DRIVER_OK,
        status::DRIVER_OK
    );
}

fn desc(mem: &GuestMemoryMmap, table: u64, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
    let d = RawDesc {
        addr,
        len,
        flags,
        next,
    };
    write_desc_at(mem, table, i, d).unwrap();
}

struct Punch(Arc<MemFd>);
impl GuestRamPunch for Punch {
    fn punch(&self, gpa: u64, len: u64) -> std::io::Result<()> {
        self.0.punch(gpa, len)
    }
}

/// An avail ring at guest-physical 0 (virtio-queue's "unset") with work on it: the device
/// must say NEEDS_RESET rather than leave the work pending forever.
#[test]
fn avail_ring_at_gpa_zero_needs_reset() {
    let ram = Arc::new(MemFd::new("x", RAM).unwrap());
    let (mem, mut dev, _) = mem_and_dev(Box::new(Punch(ram)));
    bring_up(&mut dev, 16, 0x1000, 0x0, 0x2000);
    mem.write_obj(CtrlHdr::new(p::CMD_NOP), GuestAddress(0x3000))
        .unwrap();
    desc(&mem, 0x1000, 0, 0x3000, 24, 1, 1);
    desc(&mem, 0x1000, 1, 0x4000, 24, 2, 0);
    mem.write_obj(0u16, GuestAddress(4)).unwrap(); // ring[0] = head 0
    mem.write_obj(1u16, GuestAddress(2)).unwrap(); // avail.idx = 1
                                                   // What the VMM's queue worker does: process while work is pending.
    let mut rounds = 0;
    while dev.has_pending(&mem) && rounds < 100 {
        dev.process_queue(&mem).unwrap();
        rounds += 1;
    }
    assert_eq!(rounds, 1, "the worker would spin");
    assert!(!dev.transport().is_live());
    assert_ne!(dev.transport().status() & status::DEVICE_NEEDS_RESET, 0);
}

/// The response of CMD_STATS lands on the avail ring's idx field. After a device reset the
/// queue's next_avail is 0 again but stats.commands is not, so each STATS response moves
/// avail.idx ahead of next_avail and the queue feeds itself. One call must still return after
/// at most a queue's worth of chains, so the VMM's device thread can stop.
#[test]
fn a_self_feeding_queue_is_served_in_bounded_steps() {
    let ram = Arc::new(MemFd::new("x", RAM).unwrap());
    let (mem, mut dev, _) = mem_and_dev(Box::new(Punch(ram)));
    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const REQ: u64 = 0x4000;
    // First life: three NOPs, so stats.commands = 3.
    bring_up(&mut dev, 16, DESC, AVAIL, USED);
    mem.write_obj(CtrlHdr::new(p::CMD_NOP), GuestAddress(REQ))
        .unwrap();
    desc(&mem, DESC, 0, REQ, 24, 1, 1);
    desc(&mem, DESC, 1, 0x5000, 24, 2, 0);
    mem.write_obj(3u16, GuestAddress(AVAIL + 2)).unwrap();
    dev.process_queue(&mem).unwrap();
    assert_eq!(dev.stats().commands, 3);
    // Second life after a reset (status 0): next_avail = 0, commands still 3.
    mem.write_slice(&[0u8; 0x1000], GuestAddress(AVAIL))
        .unwrap();
    mem.write_slice(&[0u8; 0x1000], GuestAddress(USED)).unwrap();
    bring_up(&mut dev, 16, DESC, AVAIL, USED);
    let commands_off = 88u64; // offset of RespStats::commands
    let resp = AVAIL + 2 - commands_off;
    mem.write_obj(CtrlHdr::new(p::CMD_STATS), GuestAddress(REQ))
        .unwrap();
    desc(&mem, DESC, 0, REQ, 24, 1, 1);
    // Split the writable part: bytes 0..90 end exactly after avail.idx, the rest goes to
    // scratch, so only the low 16 bits of `commands` land in the ring.
    desc(&mem, DESC, 1, resp, 90, 2 | 1, 2);
    desc(
        &mem,
        DESC,
        2,
        0x6000,
        std::mem::size_of::<p::RespStats>() as u32 - 90,
        2,
        0,
    );
    mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
    let th = std::thread::spawn(move || {
        let before = dev.stats().commands;
        dev.process_queue(&mem).unwrap();
        dev.stats().commands - before
    });
    let t = Instant::now();
    while !th.is_finished() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(th.is_finished(), "process_queue did not return");
    let served = th.join().unwrap();
    assert!((1..=16).contains(&served), "{served} chains in one call");
}

/// A punch that fails on its second call.
struct FailSecond(Arc<MemFd>, std::sync::atomic::AtomicU32);
impl GuestRamPunch for FailSecond {
    fn punch(&self, gpa: u64, len: u64) -> std::io::Result<()> {
        if self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            return Err(std::io::Error::other("injected"));
        }
        self.0.punch(gpa, len)
    }
}

fn run1(
    mem: &GuestMemoryMmap,
    dev: &mut PvgpuDevice,
    n: u16,
    req: &[u8],
    resp_len: u32,
) -> (u32, u32) {
    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    mem.write_slice(req, GuestAddress(0x4000)).unwrap();
    mem.write_slice(&[0u8; 64], GuestAddress(0x8000)).unwrap();
    desc(mem, DESC, 0, 0x4000, req.len() as u32, 1, 1);
    desc(mem, DESC, 1, 0x8000, resp_len, 2, 0);
    mem.write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * u64::from(n % 16)))
        .unwrap();
    mem.write_obj(n + 1, GuestAddress(AVAIL + 2)).unwrap();
    dev.process_queue(mem).unwrap();
    let len: u32 = mem
        .read_obj(GuestAddress(USED + 4 + 8 * u64::from(n % 16) + 4))
        .unwrap();
    let ty: u32 = mem.read_obj(GuestAddress(0x8000)).unwrap();
    (ty, len)
}

/// A CLEAN whose host punch fails half way still succeeds for the guest (the data is in VRAM,
/// the object is CLEANED); the host keeps the page it could not punch, and counts it.
#[test]
fn a_failed_punch_does_not_fail_clean() {
    let ramfd = Arc::new(MemFd::new("x", RAM).unwrap());
    let (mem, mut dev, _) = mem_and_dev(Box::new(FailSecond(ramfd, 0.into())));
    bring_up(&mut dev, 16, 0x1000, 0x2000, 0x3000);
    let create = request::create(1, 0, 0x2000);
    assert_eq!(run1(&mem, &mut dev, 0, &create, 24).0, p::RESP_OK_NODATA);
    // Two non-adjacent pages -> two extents -> two punches.
    let mut att = p::ReqBacking {
        hdr: CtrlHdr::new(p::CMD_ATTACH_BACKING),
        object_id: 1,
        nr_entries: 2,
    }
    .as_bytes()
    .to_vec();
    for a in [0x10_0000u64, 0x20_0000] {
        att.extend_from_slice(
            p::MemEntry {
                addr: a,
                length: 0x1000,
                padding: 0,
            }
            .as_bytes(),
        );
    }
    assert_eq!(run1(&mem, &mut dev, 1, &att, 24).0, p::RESP_OK_NODATA);
    assert_eq!(
        run1(&mem, &mut dev, 2, &request::object(p::CMD_MIGRATE, 1), 32).0,
        p::RESP_OK_MIGRATE
    );
    let (ty, _) = run1(&mem, &mut dev, 3, &request::object(p::CMD_CLEAN, 1), 24);
    assert_eq!(ty, p::RESP_OK_NODATA);
    let o = dev.engine().objects().get(1).unwrap();
    assert_eq!(o.placement, pvgpu_device::object::Placement::Cleaned);
    assert!(o.backing.is_none());
    assert_eq!(dev.stats().bytes_cleaned, 0x1000);
    assert_eq!(dev.stats().punch_failures, 1);
    // The data is intact in VRAM.
    let crc = p::ReqRange {
        hdr: CtrlHdr::new(p::CMD_CHECKSUM),
        object_id: 1,
        padding: 0,
        offset: 0,
        length: 0x2000,
    };
    assert_eq!(
        run1(&mem, &mut dev, 4, crc.as_bytes(), 32).0,
        p::RESP_OK_CHECKSUM
    );
}

/// A response buffer too small for the answer: the command must not run (a DESTROY or CLEAN
/// nobody hears about would leave the driver's books wrong); used.len is 0.
#[test]
fn a_command_whose_answer_cannot_be_delivered_does_not_run() {
    let ramfd = Arc::new(MemFd::new("x", RAM).unwrap());
    let (mem, mut dev, _) = mem_and_dev(Box::new(Punch(ramfd)));
    bring_up(&mut dev, 16, 0x1000, 0x2000, 0x3000);
    let create = request::create(1, 0, 0x2000);
    assert_eq!(run1(&mem, &mut dev, 0, &create, 24).0, p::RESP_OK_NODATA);
    let (_, len) = run1(&mem, &mut dev, 1, &request::object(p::CMD_DESTROY, 1), 8);
    assert_eq!(len, 0);
    assert!(
        dev.engine().objects().get(1).is_ok(),
        "object destroyed without an answer"
    );
    assert_eq!(dev.stats().dropped_chains, 1);
    // With room for the answer it runs.
    assert_eq!(
        run1(&mem, &mut dev, 2, &request::object(p::CMD_DESTROY, 1), 24).0,
        p::RESP_OK_NODATA
    );
    assert!(dev.engine().objects().get(1).is_err());
}

/// Queues one chain at ring slot `n` (head 0): the request at 0x4000, then the writable
/// buffers `(addr, len)`; processes the queue and returns the used length.
fn run_chain(
    mem: &GuestMemoryMmap,
    dev: &mut PvgpuDevice,
    n: u16,
    req: &[u8],
    writable: &[(u64, u32)],
) -> u32 {
    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    mem.write_slice(req, GuestAddress(0x4000)).unwrap();
    desc(mem, DESC, 0, 0x4000, req.len() as u32, 1, 1);
    for (i, &(addr, len)) in writable.iter().enumerate() {
        let last = i + 1 == writable.len();
        let flags = if last { 2 } else { 2 | 1 };
        desc(mem, DESC, 1 + i as u64, addr, len, flags, 2 + i as u16);
    }
    mem.write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * u64::from(n % 16)))
        .unwrap();
    mem.write_obj(n + 1, GuestAddress(AVAIL + 2)).unwrap();
    dev.process_queue(mem).unwrap();
    mem.read_obj(GuestAddress(USED + 4 + 8 * u64::from(n % 16) + 4))
        .unwrap()
}

/// A response buffer outside guest memory: DESTROY, and CLEAN of a VRAM object, must not
/// run (nothing destroyed, nothing punched). A response split into a good 8-byte buffer and
/// one outside memory: nothing is written at all, and the command does not run either.
#[test]
fn a_response_buffer_outside_memory_means_the_command_does_not_run() {
    let ramfd = Arc::new(MemFd::new("x", RAM).unwrap());
    let (mem, mut dev, ram) = mem_and_dev(Box::new(Punch(ramfd)));
    let _ = ram;
    bring_up(&mut dev, 16, 0x1000, 0x2000, 0x3000);
    let good = [(0x8000u64, 64u32)];
    let outside = [(RAM + 0x1000, 64u32)];
    let split = [(0x8000u64, 8u32), (RAM - 8, 64u32)];
    let mut n = 0u16;
    let mut run = |mem: &GuestMemoryMmap, dev: &mut PvgpuDevice, req: &[u8], wr: &[(u64, u32)]| {
        let len = run_chain(mem, dev, n, req, wr);
        n += 1;
        len
    };
    assert_eq!(
        run(&mem, &mut dev, &request::create(1, 0, 0x2000), &good),
        24
    );
    // DESTROY answered into nowhere: not run.
    assert_eq!(
        run(
            &mem,
            &mut dev,
            &request::object(p::CMD_DESTROY, 1),
            &outside
        ),
        0
    );
    assert!(
        dev.engine().objects().get(1).is_ok(),
        "destroyed unanswered"
    );
    // A VRAM object whose pages hold data.
    mem.write_slice(&[0x5au8; 0x2000], GuestAddress(0x10_0000))
        .unwrap();
    let entries = [p::MemEntry {
        addr: 0x10_0000,
        length: 0x2000,
        padding: 0,
    }];
    assert_eq!(
        run(
            &mem,
            &mut dev,
            &request::backing(p::CMD_ATTACH_BACKING, 1, 1, &entries),
            &good
        ),
        24
    );
    assert_eq!(
        run(&mem, &mut dev, &request::object(p::CMD_MIGRATE, 1), &good),
        32
    );
    let cleaned = dev.stats().bytes_cleaned;
    assert_eq!(
        run(&mem, &mut dev, &request::object(p::CMD_CLEAN, 1), &outside),
        0
    );
    assert_eq!(
        dev.stats().bytes_cleaned,
        cleaned,
        "pages punched unanswered"
    );
    assert_eq!(
        dev.engine().objects().get(1).unwrap().placement,
        pvgpu_device::object::Placement::Vram
    );
    // Split: 8 good bytes, then a buffer running out of RAM. Nothing may be written.
    mem.write_slice(&[0xeeu8; 64], GuestAddress(0x8000))
        .unwrap();
    for req in [
        request::object(p::CMD_DESTROY, 1),
        request::object(p::CMD_CLEAN, 1),
    ] {
        assert_eq!(run(&mem, &mut dev, &req, &split), 0);
        let mut b = [0u8; 8];
        mem.read_slice(&mut b, GuestAddress(0x8000)).unwrap();
        assert_eq!(b, [0xee; 8], "part of a response was written");
    }
    let o = dev.engine().objects().get(1).unwrap();
    assert_eq!(o.placement, pvgpu_device::object::Placement::Vram);
    assert_eq!(dev.stats().bytes_cleaned, cleaned);
    // With a good buffer the same CLEAN runs.
    assert_eq!(
        run(&mem, &mut dev, &request::object(p::CMD_CLEAN, 1), &good),
        24
    );
    assert_eq!(dev.stats().bytes_cleaned, cleaned + 0x2000);
}

/// The whole queue names one big FILL (the same head in every slot, legal): a bounded step
/// does at most a few slices of it, the register window answers between steps, and the work
/// completes, correctly, over many steps. A reset in the middle of a MIGRATE drops it and
/// leaks no VRAM.
#[test]
fn a_queue_of_huge_fills_is_served_in_bounded_steps() {
    const BIG_RAM: u64 = 64 << 20;
    const VRAM: u64 = 64 << 20;
    const OBJ: u64 = 32 << 20;
    let ram = Arc::new(MemFd::new("r", BIG_RAM).unwrap());
    let file = ram.file().try_clone().unwrap();
    let mem = GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(0),
        BIG_RAM as usize,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap();
    let cfg = DeviceConfig::new(BIG_RAM, VRAM).unwrap();
    let mut dev = PvgpuDevice::new(cfg, Box::new(Punch(ram.clone()))).unwrap();
    // The used-wait port's watch follows the used index the guest sees, step by step.
    let watch = std::sync::Arc::new(pvgpu_device::UsedWatch::new());
    dev.set_used_watch(watch.clone());
    bring_up(&mut dev, 16, 0x1000, 0x2000, 0x3000);
    let good = [(0x8000u64, 64u32)];
    let pages = [p::MemEntry {
        addr: 16 << 20,
        length: OBJ as u32,
        padding: 0,
    }];
    let setup = [
        request::create(1, 0, OBJ),
        request::backing(p::CMD_ATTACH_BACKING, 1, 1, &pages),
    ];
    for (n, req) in setup.iter().enumerate() {
        assert_eq!(run_chain(&mem, &mut dev, n as u16, req, &good), 24);
    }
    assert_eq!(
        run_chain(
            &mem,
            &mut dev,
            2,
            &request::object(p::CMD_MIGRATE, 1),
            &good
        ),
        32
    );
    // Sixteen FILLs of the whole object, from one descriptor chain.
    mem.write_slice(&request::fill(1, 0, OBJ, 0x77), GuestAddress(0x4000))
        .unwrap();
    desc(&mem, 0x1000, 0, 0x4000, 48, 1, 1);
    desc(&mem, 0x1000, 1, 0x8000, 24, 2, 0);
    for slot in 0..16u64 {
        mem.write_obj(0u16, GuestAddress(0x2000 + 4 + 2 * slot))
            .unwrap();
    }
    let used0: u16 = mem.read_obj(GuestAddress(0x3002)).unwrap();
    mem.write_obj(used0.wrapping_add(16), GuestAddress(0x2002))
        .unwrap();
    let mut steps = 0;
    while dev.has_pending(&mem) {
        dev.process_queue_step(&mem).unwrap();
        steps += 1;
        let used: u16 = mem.read_obj(GuestAddress(0x3002)).unwrap();
        assert_eq!(watch.current(), used, "published after step {steps}");
        // The registers answer between steps (the VMM's vCPUs take the same lock).
        let mut id = [0u8; 4];
        dev.mmio_read(regs::DEVICE_ID, &mut id);
        assert_eq!(u32::from_le_bytes(id), 16);
        assert!(steps < 1000);
    }
    // 512 MiB of FILL in steps of at most 16 MiB.
    assert!(steps >= 32, "{steps} steps for 16 FILLs of 32 MiB");
    // The driver may notify again (the step that finished the last FILL used up its budget
    // exactly; notifications must not stay suppressed, or the driver would never notify).
    let used_flags: u16 = mem.read_obj(GuestAddress(0x3000)).unwrap();
    assert_eq!(used_flags & 1, 0, "VRING_USED_F_NO_NOTIFY left set");
    let used: u16 = mem.read_obj(GuestAddress(0x3002)).unwrap();
    assert_eq!(used, used0.wrapping_add(16));
    assert_eq!(watch.current(), used);
    assert!(
        !watch.wait_until(used.wrapping_add(1), std::time::Duration::from_millis(1)),
        "nothing new to wait for"
    );
    assert_eq!(dev.stats().errors, 0);
    let len = run_chain(&mem, &mut dev, used, &request::checksum(1, 0, OBJ), &good);
    assert_eq!(len, 32);
    let got: u32 = mem.read_obj(GuestAddress(0x8000 + 24)).unwrap();
    assert_eq!(got, pvgpu_abi::crc32c::crc32c(&vec![0x77; OBJ as usize]));

    // A MIGRATE cut short by a reset leaks no VRAM.
    mem.write_slice(&[0u8; 0x1000], GuestAddress(0x2000))
        .unwrap();
    mem.write_slice(&[0u8; 0x1000], GuestAddress(0x3000))
        .unwrap();
    bring_up(&mut dev, 16, 0x1000, 0x2000, 0x3000);
    assert_eq!(dev.stats().vram_used, 0);
    for (n, req) in setup.iter().enumerate() {
        assert_eq!(run_chain(&mem, &mut dev, n as u16, req, &good), 24);
    }
    mem.write_slice(&request::object(p::CMD_MIGRATE, 1), GuestAddress(0x4000))
        .unwrap();
    desc(&mem, 0x1000, 0, 0x4000, 32, 1, 1);
    desc(&mem, 0x1000, 1, 0x8000, 32, 2, 0);
    mem.write_obj(0u16, GuestAddress(0x2000 + 4 + 4)).unwrap();
    mem.write_obj(3u16, GuestAddress(0x2002)).unwrap();
    dev.process_queue_step(&mem).unwrap();
    assert!(dev.has_pending(&mem), "a 32 MiB MIGRATE done in one step");
    assert!(dev.engine().is_running());
    w(&mut dev, regs::STATUS, 0);
    assert_eq!(dev.stats().vram_used, 0);
    assert!(!dev.engine().is_running());
    assert!(!dev.has_pending(&mem));
}
