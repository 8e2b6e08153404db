//! A vCPU that rewrites a descriptor while the device walks its chain: the flag that says
//! "indirect table" must be decided by the same read that the walk uses, so a chain is either
//! refused as indirect or served as a plain chain, never followed into a table the device did
//! not check.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use pvgpu_abi::protocol as p;
use pvgpu_abi::request;
use pvgpu_abi::virtio_mmio::desc::{F_INDIRECT as INDIRECT, F_NEXT as NEXT, F_WRITE as WRITE};
use pvgpu_device::memfd::MemFd;
use pvgpu_device::sim_driver::{start_driver, write_desc_at, QueueRings, RawDesc};
use pvgpu_device::{DeviceConfig, PvgpuDevice};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap};

const RAM: u64 = 16 << 20;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const TABLE: u64 = 0x6000;
const CREATE: u64 = 0x5000;
const QSIZE: u16 = 16;

fn desc(mem: &GuestMemoryMmap, table: u64, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
    let d = RawDesc {
        addr,
        len,
        flags,
        next,
    };
    write_desc_at(mem, table, i, d).unwrap();
}

#[test]
fn a_flag_flipped_during_the_walk_never_reaches_an_indirect_table() {
    let ram = Arc::new(MemFd::new("r", RAM).unwrap());
    let file = ram.file().try_clone().unwrap();
    let mem = GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(0),
        RAM as usize,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap();
    let cfg = DeviceConfig::new(RAM, 4 << 20).unwrap();
    let mut dev = PvgpuDevice::new(cfg, Box::new(ram.clone())).unwrap();
    let f: u64 = (1 << p::VIRTIO_F_VERSION_1) | (1 << p::VIRTIO_GPU_F_PVGPU_MEM);
    let rings = QueueRings {
        size: QSIZE,
        desc: DESC,
        avail: AVAIL,
        used: USED,
    };
    start_driver(
        |off, v| _ = dev.mmio_write(off, &v.to_le_bytes()),
        f,
        &rings,
    );
    // The indirect table: CREATE object 9, then a response buffer. Never to be followed.
    let create = request::create(9, 0, 0x1000);
    mem.write_slice(&create, GuestAddress(CREATE)).unwrap();
    desc(&mem, TABLE, 0, CREATE, create.len() as u32, NEXT, 1);
    desc(&mem, TABLE, 1, 0x9000, 64, WRITE, 0);
    // Descriptor 0 names the table's bytes; as a plain buffer they are a request the device
    // refuses (an unknown type). Descriptor 1 is the chain's own response buffer.
    desc(&mem, DESC, 0, TABLE, 32, NEXT, 1);
    desc(&mem, DESC, 1, 0x8000, 64, WRITE, 0);
    for slot in 0..u64::from(QSIZE) {
        mem.write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
    }
    // A racing "vCPU" flips descriptor 0 between a plain and an indirect descriptor.
    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicU64::new(0));
    let flipper = {
        let mem = mem.clone();
        let stop = stop.clone();
        let flips = flips.clone();
        std::thread::spawn(move || {
            let at = GuestAddress(DESC + 12);
            while !stop.load(Ordering::Relaxed) {
                mem.write_obj(INDIRECT, at).unwrap();
                mem.write_obj(NEXT, at).unwrap();
                flips.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while flips.load(Ordering::Relaxed) < 1000 {
        std::thread::yield_now();
    }
    let mut idx = 0u16;
    let start = std::time::Instant::now();
    let mut rounds = 0u32;
    while start.elapsed() < std::time::Duration::from_millis(1500) {
        idx = idx.wrapping_add(QSIZE);
        mem.write_obj(idx, GuestAddress(AVAIL + 2)).unwrap();
        dev.process_queue(&mem).unwrap();
        rounds += 1;
        if dev.engine().objects().get(9).is_ok() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    let used: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
    assert_eq!(used, idx, "every chain was used");
    assert!(
        dev.engine().objects().get(9).is_err(),
        "a request inside an indirect table ran (after {rounds} rounds of {QSIZE} chains)"
    );
    // The device saw both shapes: refusals of the indirect one, errors for the plain one.
    assert_eq!(dev.stats().errors, dev.stats().commands);
}
