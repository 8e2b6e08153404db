//! A hostile driver against the register window and the control queue, without KVM: rings
//! the device cannot use, a queue that feeds itself, punches that fail, answers that cannot be
//! delivered. The device must stay bounded and consistent.
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvgpu_abi::protocol::{self as p, CtrlHdr, Wire};
use pvgpu_abi::request;
use pvgpu_abi::virtio_mmio::status;
use pvgpu_device::memfd::MemFd;
use pvgpu_device::sim_driver::{start_driver, QueueRings};
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
    let a = table + 16 * i;
    mem.write_obj(addr, GuestAddress(a)).unwrap();
    mem.write_obj(len, GuestAddress(a + 8)).unwrap();
    mem.write_obj(flags, GuestAddress(a + 12)).unwrap();
    mem.write_obj(next, GuestAddress(a + 14)).unwrap();
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
