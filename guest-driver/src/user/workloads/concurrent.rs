//! `concurrent`: one task per vCPU, each with its own objects through the whole life cycle at
//! once. No task can name another's objects.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use pvgpu_abi::crc32c::crc32c;
use pvgpu_abi::layout::MAX_VCPUS;

use super::workload::{check_view, fill_view};
use crate::user::objects::{self as obj, Handle, ObjError, Placement, Task};

/// Objects per task.
const OBJECTS: u64 = 8;
/// Bytes per object.
const SIZE: u64 = 1 << 20;

/// One object id published by each task, for the ownership checks.
static PUBLISHED: [AtomicU32; MAX_VCPUS as usize] =
    [const { AtomicU32::new(0) }; MAX_VCPUS as usize];
static READY: AtomicU32 = AtomicU32::new(0);

/// The task of vCPU `task`; true if every check passed.
pub fn task(task: Task, ncpu: u32) -> bool {
    match run(task, ncpu) {
        Ok(()) => {
            crate::println!("[concurrent cpu {task}] PASS");
            true
        }
        Err(e) => {
            crate::println!("[concurrent cpu {task}] FAIL: {e}");
            // Keep the others from waiting for us forever.
            READY.fetch_add(1, Ordering::AcqRel);
            false
        }
    }
}

fn run(task: Task, ncpu: u32) -> Result<(), &'static str> {
    let mut objs: Vec<(Handle, u64, u32)> = Vec::new();
    for i in 0..OBJECTS {
        let seed = (task as u64) << 32 | i;
        let h = obj::create(task, SIZE).map_err(|_| "create")?;
        let va = obj::map(task, h).map_err(|_| "map")?;
        fill_view(va, SIZE, seed);
        // SAFETY: the view is present (SYSTEM) and SIZE bytes long.
        let crc = crc32c(unsafe { core::slice::from_raw_parts(va as *const u8, SIZE as usize) });
        objs.push((h, va, crc));
    }
    let hs: Vec<Handle> = objs.iter().map(|o| o.0).collect();
    obj::migrate_many(task, &hs).map_err(|_| "migrate")?;
    obj::clean_many(task, &hs).map_err(|_| "clean")?;
    for (h, _, crc) in &objs {
        if obj::placement(task, *h) != Ok(Placement::Cleaned)
            || obj::checksum(task, *h, 0, SIZE) != Ok(*crc)
        {
            return Err("object not CLEANED with its data");
        }
    }
    // Ownership: publish one handle, wait for the others, and try theirs.
    PUBLISHED[task].store(hs[0].0, Ordering::Release);
    READY.fetch_add(1, Ordering::AcqRel);
    while READY.load(Ordering::Acquire) < ncpu {
        core::hint::spin_loop();
    }
    for (other, id) in PUBLISHED.iter().enumerate().take(ncpu as usize) {
        let id = id.load(Ordering::Acquire);
        if other == task || id == 0 {
            continue;
        }
        let h = Handle(id);
        let mut b = [0u8; 8];
        let refused = [
            obj::read_at(task, h, 0, &mut b),
            obj::write_at(task, h, 0, &b),
            obj::evict(task, h),
            obj::close(task, h),
            obj::map(task, h).map(|_| ()),
        ];
        if refused.iter().any(|r| *r != Err(ObjError::NotOwner)) {
            return Err("another task's object was reachable");
        }
        // Nor can a task pass itself off as the owner.
        let posing = [
            obj::read_at(other, h, 0, &mut b),
            obj::close(other, h),
            obj::create(other, SIZE).map(|_| ()),
        ];
        if posing.iter().any(|r| *r != Err(ObjError::NotOwner)) {
            return Err("a task acted as another task");
        }
    }
    for (i, (_, va, _)) in objs.iter().enumerate() {
        if check_view(*va, SIZE, (task as u64) << 32 | i as u64).is_some() {
            return Err("data differs after faulting back");
        }
    }
    for (h, _, _) in &objs {
        obj::close(task, *h).map_err(|_| "close")?;
    }
    Ok(())
}
