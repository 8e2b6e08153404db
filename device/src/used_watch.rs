//! Waiting for the device's answers without spinning.
//!
//! The device publishes the control queue's used index here each time it has handled
//! requests; a waiter (the VMM's used-wait port, on a vCPU thread) blocks until the index
//! reaches the one the driver waits for (its whole batch answered), with a deadline. It is
//! only a hint: the driver always re-checks its used ring, so a missed or early wake-up costs
//! time, never correctness.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The last used index the device published, and waiters for it to reach theirs.
#[derive(Debug, Default)]
pub struct UsedWatch {
    idx: Mutex<u16>,
    changed: Condvar,
    waits: AtomicU64,
}

impl UsedWatch {
    /// A watch at used index 0 (a queue's index after reset).
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, u16> {
        // The value is a plain number: a holder that panicked cannot leave it half-written.
        self.idx.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the device's used index `idx`, waking every waiter if it changed.
    pub fn publish(&self, idx: u16) {
        let mut cur = self.lock();
        if *cur != idx {
            *cur = idx;
            self.changed.notify_all();
        }
    }

    /// The last published used index.
    pub fn current(&self) -> u16 {
        *self.lock()
    }

    /// How many waits found their index not reached yet and blocked.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Blocks until the published used index reaches `target` (counting modulo 2^16: it has
    /// reached it when it is at most 32,767 past it) or `timeout` passes. Returns whether it
    /// reached it.
    pub fn wait_until(&self, target: u16, timeout: Duration) -> bool {
        let reached = |i: &u16| (i.wrapping_sub(target) as i16) >= 0;
        let cur = self.lock();
        if reached(&cur) {
            return true;
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        let (cur, _) = self
            .changed
            .wait_timeout_while(cur, timeout, |i| !reached(i))
            .unwrap_or_else(|p| p.into_inner());
        reached(&cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn returns_at_once_when_the_index_already_moved() {
        let w = UsedWatch::new();
        w.publish(3);
        let t = Instant::now();
        assert!(w.wait_until(2, Duration::from_secs(5)));
        assert!(w.wait_until(3, Duration::from_secs(5)));
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(w.waits(), 0, "it did not block");
    }

    #[test]
    fn times_out_when_nothing_is_published() {
        let w = UsedWatch::new();
        w.publish(7);
        w.publish(7);
        let t = Instant::now();
        assert!(!w.wait_until(8, Duration::from_millis(20)));
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert_eq!(w.waits(), 1);
    }

    #[test]
    fn a_publish_wakes_the_waiter() {
        let w = Arc::new(UsedWatch::new());
        let w2 = w.clone();
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            (w2.wait_until(2, Duration::from_secs(10)), t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(30));
        // One answer of the two waited for does not wake it for good; the second does.
        w.publish(1);
        std::thread::sleep(Duration::from_millis(30));
        w.publish(2);
        let (moved, took) = waiter.join().unwrap();
        assert!(moved);
        assert!(
            took < Duration::from_secs(5),
            "woken by the publish, not the deadline"
        );
        assert_eq!(w.current(), 2);
        // Modulo 2^16: 0xfffe is reached by 1.
        assert!(w.wait_until(0xfffe, Duration::ZERO));
    }
}
