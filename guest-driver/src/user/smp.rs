//! Work for the secondary vCPUs: vCPU 0 posts a job; each other vCPU runs it on its own
//! data and reports back, or parks.

use core::sync::atomic::{AtomicU32, Ordering};

/// Jobs vCPU 0 can post.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Job {
    /// Nothing to do: halt.
    Park = 1,
    /// Run the self-test on this CPU's share of the user-map window.
    Selftest = 2,
    /// Run this CPU's task of the `concurrent` workload.
    Concurrent = 3,
}

static JOB: AtomicU32 = AtomicU32::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);

/// Posts `job` to every secondary vCPU (vCPU 0 only, once).
pub fn post(job: Job) {
    JOB.store(job as u32, Ordering::Release);
}

/// Waits until the `n` secondary vCPUs reported; returns how many failed.
pub fn wait_all(n: u32) -> u32 {
    while DONE.load(Ordering::Acquire) < n {
        core::hint::spin_loop();
    }
    FAILED.load(Ordering::Acquire)
}

/// The loop of every vCPU but 0.
pub fn secondary(cpu: usize) -> ! {
    let job = loop {
        match JOB.load(Ordering::Acquire) {
            0 => core::hint::spin_loop(),
            j => break j,
        }
    };
    let ok = if job == Job::Selftest as u32 {
        Some(super::workloads::selftest::run_on_cpu(cpu))
    } else if job == Job::Concurrent as u32 {
        Some(super::workloads::concurrent::task(
            cpu,
            super::boot_info().num_cpus,
        ))
    } else {
        None
    };
    if let Some(ok) = ok {
        if !ok {
            FAILED.fetch_add(1, Ordering::AcqRel);
        }
        DONE.fetch_add(1, Ordering::AcqRel);
    }
    super::sys::park()
}
