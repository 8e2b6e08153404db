//! The used-wait port: a driver that has submitted commands blocks here, in the VMM, until the
//! device answers, instead of spinning in guest mode.
//!
//! Spinning costs more than CPU time on a host that moves guest pages: each huge page that
//! MIGRATE_CLEAN moves changes the VMM's page tables, and every CPU running a vCPU of this VM
//! in guest mode must be interrupted and flushed for it (about 80 µs a page on PVM against a
//! few µs with the vCPU asleep). A vCPU waiting here is asleep.

use std::sync::Arc;
use std::time::Duration;

use pvgpu_abi::layout::USED_WAIT_MAX_US;
use pvgpu_device::UsedWatch;

use crate::devices::bus::{le_value, BusDevice};
use crate::devices::warn_limit::WarnLimit;

/// USED_WAIT_PORT: a 2-byte write of the used index the driver waits for blocks until the
/// device's reaches it, for at most `USED_WAIT_MAX_US`. Without an in-process device (no GPU,
/// or the device in another process) it returns at once and the driver spins.
pub struct UsedWaitDevice {
    watch: Option<Arc<UsedWatch>>,
    malformed: WarnLimit,
}

impl UsedWaitDevice {
    /// A port that waits on `watch`, if there is one.
    pub fn new(watch: Option<Arc<UsedWatch>>) -> Self {
        UsedWaitDevice {
            watch,
            malformed: WarnLimit::new(),
        }
    }
}

impl BusDevice for UsedWaitDevice {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != 0 || data.len() != 2 {
            if let Some(more) = self.malformed.count() {
                log::warn!(
                    "ignoring a {}-byte write to the used-wait port{more}",
                    data.len()
                );
            }
            return;
        }
        if let Some(w) = &self.watch {
            let target = le_value(data) as u16;
            w.wait_until(target, Duration::from_micros(USED_WAIT_MAX_US));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn blocks_until_the_device_answers_or_the_deadline() {
        let w = Arc::new(UsedWatch::new());
        let mut d = UsedWaitDevice::new(Some(w.clone()));
        // Nothing answered: the deadline ends the wait.
        let t = Instant::now();
        d.write(0, &1u16.to_le_bytes());
        assert!(t.elapsed() >= Duration::from_micros(USED_WAIT_MAX_US));
        assert_eq!(w.waits(), 1);
        // The answer is already there: no wait.
        w.publish(1);
        d.write(0, &1u16.to_le_bytes());
        assert_eq!(w.waits(), 1);
        // A malformed write is ignored, and a port without a device never blocks.
        d.write(0, &[1]);
        d.write(0, &[1, 0, 0, 0]);
        assert_eq!(w.waits(), 1);
        assert_eq!(d.malformed.seen(), 2, "counted (and logged only at first)");
        let mut none = UsedWaitDevice::new(None);
        let t = Instant::now();
        none.write(0, &9u16.to_le_bytes());
        assert!(t.elapsed() < Duration::from_micros(USED_WAIT_MAX_US));
    }
}
