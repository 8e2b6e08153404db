//! The device part of `selftest`: every command and every state transition, with data
//! checked both by CPU reads and by the device's CHECKSUM.

use alloc::vec;
use alloc::vec::Vec;

use crate::user::page_runs::PageRuns;

use pvgpu_abi::crc32c::crc32c;
use pvgpu_abi::layout::PAGE_SIZE;
use pvgpu_abi::protocol as p;

use super::checker::Checker;
use crate::check;
use crate::user::gpu::Cmd;
use crate::user::objects::{self as obj, Handle, ObjError, Placement, Task};

/// Bytes of the object the checks use (16 pages).
const SIZE: u64 = 16 * PAGE_SIZE;
/// Views made and dropped in a row, by all vCPUs together: more than ring 0 has page-table
/// pages, so a leak shows.
const VIEW_CHURN: u64 = 600;

/// A byte pattern unique to `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn read_all(task: Task, h: Handle, len: usize) -> Option<Vec<u8>> {
    let mut b = vec![0; len];
    obj::read_at(task, h, 0, &mut b).ok().map(|_| b)
}

/// The response type of a raw command sent straight to the device.
fn raw_status(c: Cmd) -> u32 {
    let mut cs = [c];
    let _ = obj::submit_raw(&mut cs);
    cs[0].status().map_or(0, |h| h.type_)
}

fn obj_cmd(cmd: u32, id: u32) -> Cmd {
    Cmd::raw(pvgpu_abi::request::object(cmd, id), 64)
}

/// Runs the checks for task `task`.
pub fn run(c: &mut Checker, task: Task) {
    let data = pattern(SIZE as usize, 0x5eed + task as u64);
    let want = crc32c(&data);
    let Ok(h) = obj::create(task, SIZE) else {
        check!(c, false, "create an object");
        return;
    };
    check!(
        c,
        obj::placement(task, h) == Ok(Placement::System),
        "new object is SYSTEM"
    );
    check!(c, obj::size(task, h) == Ok(SIZE), "size");
    check!(
        c,
        read_all(task, h, SIZE as usize).is_some_and(|b| b.iter().all(|&x| x == 0)),
        "new object reads zero"
    );
    check!(c, obj::write_at(task, h, 0, &data).is_ok(), "write_at");
    check!(
        c,
        read_all(task, h, SIZE as usize).as_deref() == Some(&data[..]),
        "read_at after write_at (SYSTEM)"
    );
    check!(
        c,
        obj::checksum(task, h, 0, SIZE) == Ok(want),
        "device checksum of SYSTEM data"
    );
    check!(
        c,
        obj::write_at(task, h, SIZE - 1, &[0, 0]) == Err(ObjError::OutOfRange),
        "write past the end refused"
    );

    // Transitions the state machine forbids, straight to the device.
    check!(
        c,
        raw_status(obj_cmd(p::CMD_CLEAN, h.0)) == p::RESP_ERR_INVALID_STATE,
        "device: CLEAN of SYSTEM"
    );
    check!(
        c,
        raw_status(Cmd::evict(h.0, &PageRuns::default())) == p::RESP_ERR_INVALID_STATE,
        "device: EVICT of SYSTEM"
    );
    check!(
        c,
        obj::clean(task, h) == Err(ObjError::WrongPlacement(Placement::System)),
        "driver: clean of SYSTEM"
    );

    // SYSTEM -> VRAM.
    let mapped = obj::map(task, h);
    check!(c, mapped.is_ok(), "map");
    let va = mapped.unwrap_or(0);
    check!(c, obj::migrate(task, h).is_ok(), "migrate");
    check!(
        c,
        obj::placement(task, h) == Ok(Placement::Vram),
        "VRAM after migrate"
    );
    check!(
        c,
        obj::checksum(task, h, 0, SIZE) == Ok(want),
        "device checksum of VRAM data"
    );
    check!(
        c,
        read_all(task, h, SIZE as usize).as_deref() == Some(&data[..]),
        "read_at through the VRAM window"
    );
    check!(
        c,
        raw_status(obj_cmd(p::CMD_MIGRATE, h.0)) == p::RESP_ERR_INVALID_STATE,
        "device: MIGRATE twice"
    );

    // VRAM -> CLEANED: the pages go back to the allocator only after the fence.
    let before = obj::counters().task_pages_cleaned[task];
    check!(c, obj::clean(task, h).is_ok(), "clean");
    let freed = obj::counters().task_pages_cleaned[task] - before;
    check!(
        c,
        freed == SIZE / PAGE_SIZE,
        "clean gives the pages back ({freed} pages)"
    );
    check!(
        c,
        obj::placement(task, h) == Ok(Placement::Cleaned),
        "CLEANED after clean"
    );
    check!(
        c,
        raw_status(obj_cmd(p::CMD_CLEAN, h.0)) == p::RESP_ERR_INVALID_STATE,
        "device: CLEAN twice"
    );
    check!(
        c,
        obj::checksum(task, h, 0, SIZE) == Ok(want),
        "device checksum of CLEANED data"
    );
    check!(
        c,
        read_all(task, h, SIZE as usize).as_deref() == Some(&data[..]),
        "read_at of CLEANED data"
    );

    // Device-side FILL and COPY on VRAM, seen by CPU reads and CHECKSUM.
    let mut expect = data.clone();
    check!(c, obj::fill(task, h, 100, 300, 0xab).is_ok(), "fill");
    expect[100..400].fill(0xab);
    check!(
        c,
        obj::copy(task, h, 5000, h, 0, 1000).is_ok(),
        "copy within the object"
    );
    expect.copy_within(0..1000, 5000);
    check!(
        c,
        read_all(task, h, SIZE as usize).as_deref() == Some(&expect[..]),
        "fill and copy seen by read_at"
    );
    check!(
        c,
        obj::checksum(task, h, 0, SIZE) == Ok(crc32c(&expect)),
        "fill and copy seen by checksum"
    );
    check!(
        c,
        obj::checksum(task, h, 100, 300) == Ok(crc32c(&expect[100..400])),
        "checksum of a sub-range"
    );

    // write_at on a CLEANED object goes to VRAM.
    check!(
        c,
        obj::write_at(task, h, 8, b"pvgpu").is_ok(),
        "write_at into VRAM"
    );
    expect[8..13].copy_from_slice(b"pvgpu");
    check!(
        c,
        obj::checksum(task, h, 0, SIZE) == Ok(crc32c(&expect)),
        "write_at into VRAM seen by checksum"
    );

    // Demand paging: touching the view of a CLEANED object faults it back.
    let faults = obj::counters().task_faults[task];
    if va != 0 {
        // SAFETY: `va` is this object's view, SIZE bytes long; the read faults and is resolved
        // by evicting the object into fresh pages.
        let first = unsafe { (va as *const u8).add(8).read_volatile() };
        check!(c, first == b'p', "read through the view after clean");
        check!(
            c,
            obj::counters().task_faults[task] == faults + 1,
            "one fault brought the object back"
        );
        check!(
            c,
            obj::placement(task, h) == Ok(Placement::System),
            "SYSTEM after the fault"
        );
        // SAFETY: the view is now present and writable.
        let view = unsafe { core::slice::from_raw_parts_mut(va as *mut u8, SIZE as usize) };
        check!(c, view == &expect[..], "every byte through the view");
        view[0] = 0x42;
        expect[0] = 0x42;
        check!(
            c,
            obj::checksum(task, h, 0, SIZE) == Ok(crc32c(&expect)),
            "write through the view seen by the device"
        );
    }

    // VRAM -> SYSTEM by evict, into the object's own pages.
    check!(c, obj::migrate(task, h).is_ok(), "migrate again");
    check!(c, obj::fill(task, h, 0, 16, 0x11).is_ok(), "fill in VRAM");
    expect[..16].fill(0x11);
    check!(c, obj::evict(task, h).is_ok(), "evict");
    check!(
        c,
        obj::placement(task, h) == Ok(Placement::System),
        "SYSTEM after evict"
    );
    check!(
        c,
        read_all(task, h, SIZE as usize).as_deref() == Some(&expect[..]),
        "evict brought VRAM data back"
    );
    check!(
        c,
        obj::evict(task, h) == Err(ObjError::WrongPlacement(Placement::System)),
        "evict of SYSTEM refused"
    );

    // read_at and write_at between objects' views (which fault, outside the object lock).
    if let (Ok(h3), true) = (obj::create(task, SIZE), va != 0) {
        check!(
            c,
            obj::migrate(task, h).is_ok() && obj::clean(task, h).is_ok(),
            "clean the first object again"
        );
        // SAFETY: `va` is the first object's view (absent now: reading it faults it back).
        let src = unsafe { core::slice::from_raw_parts(va as *const u8, SIZE as usize) };
        check!(
            c,
            obj::write_at(task, h3, 0, src).is_ok(),
            "write_at from a view that faults"
        );
        check!(
            c,
            read_all(task, h3, SIZE as usize).as_deref() == Some(&expect[..]),
            "data copied from the view"
        );
        check!(
            c,
            obj::migrate(task, h).is_ok() && obj::clean(task, h).is_ok(),
            "clean it once more"
        );
        // SAFETY: as above, now as the destination of a read.
        let dst = unsafe { core::slice::from_raw_parts_mut(va as *mut u8, SIZE as usize) };
        check!(
            c,
            obj::read_at(task, h3, 0, dst).is_ok(),
            "read_at into a view that faults"
        );
        check!(
            c,
            obj::placement(task, h) == Ok(Placement::System),
            "the view faulted its object back"
        );
        check!(
            c,
            obj::checksum(task, h, 0, SIZE) == Ok(crc32c(&expect)),
            "data intact after the round trip"
        );
        check!(c, obj::close(task, h3).is_ok(), "close the third object");
    }

    // A second object: COPY between objects.
    if let Ok(h2) = obj::create(task, SIZE) {
        let ok = obj::migrate(task, h2).is_ok() && obj::migrate(task, h).is_ok();
        check!(c, ok, "migrate two objects");
        check!(
            c,
            obj::copy(task, h2, 0, h, 0, SIZE).is_ok(),
            "copy between objects"
        );
        check!(
            c,
            obj::checksum(task, h2, 0, SIZE) == Ok(crc32c(&expect)),
            "copy between objects seen by checksum"
        );
        check!(c, obj::close(task, h2).is_ok(), "close the second object");
    }

    // Views come and go without using up page tables or address space. The vCPUs share ring
    // 0's page-table pool, so together they still go past its size.
    let churn = VIEW_CHURN / u64::from(crate::user::boot_info().num_cpus.max(1));
    let mut churn_ok = true;
    for i in 0..churn {
        let step = obj::create(task, PAGE_SIZE).and_then(|h| {
            let va = obj::map(task, h)?;
            // SAFETY: a present, writable one-page view.
            unsafe { (va as *mut u64).write_volatile(i) };
            obj::unmap(task, h)?;
            obj::close(task, h)
        });
        if let Err(e) = step {
            crate::println!("[selftest cpu {task}] view churn failed at {i}: {e}");
            churn_ok = false;
            break;
        }
    }
    check!(c, churn_ok, "{churn} views made and dropped");

    let stats = obj::device_stats();
    check!(
        c,
        stats.is_ok_and(|s| s.bytes_cleaned >= SIZE && s.bytes_migrated >= 2 * SIZE),
        "device stats count the traffic"
    );

    check!(c, obj::close(task, h).is_ok(), "close");
    check!(
        c,
        obj::placement(task, h) == Err(ObjError::BadHandle),
        "use after close refused"
    );
    check!(
        c,
        raw_status(obj_cmd(p::CMD_DESTROY, h.0)) == p::RESP_ERR_INVALID_OBJECT_ID,
        "device: DESTROY twice"
    );
    check!(
        c,
        raw_status(obj_cmd(0x0aff, h.0)) == p::RESP_ERR_UNKNOWN_COMMAND,
        "device: unknown command"
    );
}
