//! The exit port (the guest's status becomes the VMM's) and the phase port (timestamped
//! markers for the stats).

use std::sync::Arc;

use pvgpu_device::memfd::MemFd;

use crate::bus::{le_value, BusDevice};
use crate::run_state::{GuestEnd, RunState};
use crate::stats::{rss_bytes, PhaseMark, Timeline};

/// EXIT_PORT: a 1-, 2- or 4-byte write of N ends the run with status N & 0xff.
pub struct ExitDevice {
    state: Arc<RunState>,
}

impl ExitDevice {
    /// An exit port that ends `state`.
    pub fn new(state: Arc<RunState>) -> Self {
        ExitDevice { state }
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
        } else {
            log::warn!("ignoring a {}-byte write to the exit port", data.len());
        }
    }
}

/// PHASE_PORT: a 4-byte write of N records phase marker N (time, guest RAM, RSS).
pub struct PhaseDevice {
    timeline: Arc<Timeline>,
    guest_ram: Arc<MemFd>,
}

impl PhaseDevice {
    /// A phase port recording into `timeline`, measuring `guest_ram`.
    pub fn new(timeline: Arc<Timeline>, guest_ram: Arc<MemFd>) -> Self {
        PhaseDevice {
            timeline,
            guest_ram,
        }
    }
}

impl BusDevice for PhaseDevice {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if data.len() != 4 {
            log::warn!("ignoring a {}-byte write to the phase port", data.len());
            return;
        }
        let phase = le_value(data) as u32;
        self.timeline.add_phase(PhaseMark {
            phase,
            t_ms: self.timeline.now_ms(),
            guest_ram_bytes: self.guest_ram.allocated_bytes().unwrap_or(0),
            rss_bytes: rss_bytes(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

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

    #[test]
    fn phase_port_records_markers() {
        let t = Arc::new(Timeline::new(Instant::now()));
        let m = Arc::new(MemFd::new("t", 1 << 20).unwrap());
        let mut d = PhaseDevice::new(t.clone(), m);
        d.write(0, &3u32.to_le_bytes());
        d.write(0, &[1]);
        d.write(0, &0x1_0000u32.to_le_bytes());
        let p = t.phases();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].phase, p[1].phase), (3, 0x1_0000));
        assert_eq!(p[0].guest_ram_bytes, 0);
        assert!(p[0].rss_bytes > 0 && p[1].t_ms >= p[0].t_ms);
    }
}
