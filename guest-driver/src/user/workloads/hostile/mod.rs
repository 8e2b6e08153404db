//! `hostile`: the guest attacks its own GPU. Malformed requests go through the control queue,
//! and each must come back as an error (or, where the chain leaves no room for a response, be
//! dropped with used length 0, or make the device signal DEVICE_NEEDS_RESET). The VMM must
//! stay up and the guest must never hang. Afterwards the driver is restarted and the selftest
//! runs in the same boot, so the device is shown to still work.
//!
//! 1. **Command level** ([`commands`]), through the normal driver: each one-call case is a row
//!    of a table, naming the exact response the protocol defines.
//! 2. **Descriptor level** ([`descriptors`]), which virtio-drivers' queue cannot produce: a
//!    hand-driven queue ([`raw_queue`]) posts malformed chains and rings, one table row each.
//! 3. **Recovery** (here): [`objects::reinit`] restarts the driver, a few plain commands and an
//!    object round trip must work, then the selftest runs.
//!
//! Every case is counted by one [`Checker`], as the selftest's checks are.

mod commands;
mod descriptors;
mod raw_queue;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::crc32c::crc32c;
use pvgpu_abi::layout::PAGE_SIZE;
use pvgpu_abi::protocol::{self as p, CtrlHdr};
use pvgpu_abi::request::header as hdr_only;

use self::commands::expect;
use super::checker::Checker;
use super::{selftest, EXIT_FAILED, EXIT_OK};
use crate::check;
use crate::user::objects;
use crate::user::smp::{self, Job};

/// Size of the request and response header.
const HDR: usize = core::mem::size_of::<CtrlHdr>();
/// Fills response buffers, so bytes the device did not write can be told apart.
const SENTINEL: u8 = 0xa5;

/// `n` bytes of a pattern unique to `seed`.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8))
        .collect()
}

/// The driver is back: plain commands and an object round trip work.
fn recovery(c: &mut Checker, info: &BootInfo) -> bool {
    let restarted = objects::reinit(info);
    check!(c, restarted.is_ok(), "restart the driver: {restarted:?}");
    if restarted.is_err() {
        return false;
    }
    let before = c.failed();
    expect(
        c,
        "nop after restart",
        hdr_only(p::CMD_NOP),
        p::RESP_OK_NODATA,
    );
    expect(
        c,
        "get_info after restart",
        hdr_only(p::CMD_GET_INFO),
        p::RESP_OK_INFO,
    );
    let s = expect(
        c,
        "stats after restart",
        hdr_only(p::CMD_STATS),
        p::RESP_OK_STATS,
    );
    let live = s.response::<p::RespStats>().map(|s| s.objects_live);
    check!(
        c,
        live == Some(0),
        "no objects survive the reset: objects_live {live:?}"
    );
    let task = 0;
    let data = pattern(3 * PAGE_SIZE as usize, 0x5a);
    let round_trip = (|| -> Result<bool, objects::ObjError> {
        let h = objects::create(task, data.len() as u64)?;
        objects::write_at(task, h, 0, &data)?;
        objects::migrate(task, h)?;
        objects::clean(task, h)?;
        let crc = objects::checksum(task, h, 0, data.len() as u64)?;
        let mut back = vec![0u8; data.len()];
        objects::evict(task, h)?;
        objects::read_at(task, h, 0, &mut back)?;
        objects::close(task, h)?;
        Ok(crc == crc32c(&data) && back == data)
    })();
    check!(
        c,
        round_trip == Ok(true),
        "object round trip after restart: {round_trip:?}"
    );
    c.failed() == before
}

/// vCPU 0: runs every case, then the selftest; exit 0 only if all passed.
pub fn run(info: &BootInfo) -> u8 {
    let mut c = Checker::new(String::from("hostile:"));
    if !objects::available() {
        crate::println!("hostile: FAIL: no GPU device");
        smp::post(Job::Park);
        return EXIT_FAILED;
    }
    commands::run(&mut c, info);
    let after_commands = (c.passed(), c.failed());
    crate::println!(
        "hostile: command level: {} passed, {} failed",
        after_commands.0,
        after_commands.1
    );
    // The object layer's driver stays idle while the descriptor level drives the device.
    descriptors::run(&mut c, info);
    crate::println!(
        "hostile: descriptor level: {} passed, {} failed",
        c.passed() - after_commands.0,
        c.failed() - after_commands.1
    );
    let works = recovery(&mut c, info);
    let total = c.passed() + c.failed();
    if c.failed() == 0 && works {
        crate::println!("hostile: PASS ({} of {total} cases)", c.passed());
    } else {
        crate::println!("hostile: FAIL ({} of {total} cases failed)", c.failed());
    }
    // The selftest, in the same boot, on every vCPU.
    smp::post(Job::Selftest);
    let selftest = selftest::run(info);
    if c.failed() == 0 && works && selftest == EXIT_OK {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}
