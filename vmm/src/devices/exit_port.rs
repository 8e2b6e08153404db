//! The exit port: the guest's status becomes the VMM's.

use std::sync::Arc;

use crate::devices::bus::{le_value, BusDevice};
use crate::devices::warn_limit::WarnLimit;
use crate::run::state::{GuestEnd, RunState};

/// EXIT_PORT: a 1-, 2- or 4-byte write of N ends the run with status N & 0xff.
pub struct ExitDevice {
    state: Arc<RunState>,
    malformed: WarnLimit,
}

impl ExitDevice {
    /// An exit port that ends `state`.
    pub fn new(state: Arc<RunState>) -> Self {
        ExitDevice {
            state,
            malformed: WarnLimit::new(),
        }
    }
}

impl BusDevice for ExitDevice {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if matches!(data.len(), 1 | 2 | 4) {
            let code = (le_value(data) & 0xff) as u8;
            log::debug!("guest wrote exit status {code}");
            self.state.finish(GuestEnd::Exit(code));
        } else if let Some(more) = self.malformed.count() {
            log::warn!(
                "ignoring a {}-byte write to the exit port{more}",
                data.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_port_ends_the_run() {
        let s = Arc::new(RunState::new(1).unwrap());
        let mut d = ExitDevice::new(s.clone());
        d.write(0, &[1, 2, 3]);
        assert_eq!(s.end(), None);
        d.write(0, &[0x07, 0x01, 0, 0]);
        assert_eq!(s.end(), Some(GuestEnd::Exit(7)));
    }

    #[test]
    fn exit_port_takes_bytes_and_words() {
        for data in [&[42u8][..], &[42, 0][..], &[42, 0, 0, 0][..]] {
            let s = Arc::new(RunState::new(1).unwrap());
            ExitDevice::new(s.clone()).write(0, data);
            assert_eq!(s.end(), Some(GuestEnd::Exit(42)));
        }
    }
}
