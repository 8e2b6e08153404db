//! The exit port (the guest's status becomes the VMM's) and the phase port (timestamped
//! markers with host memory, for the stats).

use std::sync::Arc;

use crate::bus::{le_value, BusDevice};
use crate::run_state::{GuestEnd, RunState};
use crate::stats::{MemoryProbe, PhaseMark, Timeline};

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

/// PHASE_PORT: a 4-byte write of N records phase marker N with the time and host memory
/// (guest RAM, VRAM, RSS).
///
/// The snapshot is taken here, in the writing vCPU's exit handler, before that vCPU resumes:
/// it shows host memory exactly as it stood when the guest reached the marker (e.g. after a
/// CLEAN whose fence the guest has already seen complete).
pub struct PhaseDevice {
    timeline: Arc<Timeline>,
    probe: MemoryProbe,
}

impl PhaseDevice {
    /// A phase port recording into `timeline`, measuring with `probe`.
    pub fn new(timeline: Arc<Timeline>, probe: MemoryProbe) -> Self {
        PhaseDevice { timeline, probe }
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
        let t_ms = self.timeline.now_ms();
        let mem = self.probe.snapshot();
        log::debug!("phase {phase} at {t_ms:.1} ms: {mem:?}");
        if !self.timeline.add_phase(PhaseMark { phase, t_ms, mem }) {
            log::debug!("phase marker {phase} dropped: too many markers");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::touch;
    use pvgpu_device::{HostMemory, MemoryBackend};
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
        let m = Arc::new(HostMemory::new(MemoryBackend::DEFAULT_VMM, "t", 1 << 20).unwrap());
        let vram = Arc::new(HostMemory::new(MemoryBackend::Shared, "v", 1 << 20).unwrap());
        let probe = MemoryProbe::new(m.clone(), Some(vram.clone()));
        let mut d = PhaseDevice::new(t.clone(), probe);
        d.write(0, &3u32.to_le_bytes());
        d.write(0, &[1]);
        // The snapshot is taken at the write: state changes after it do not show.
        touch(&vram, 0, 8192);
        d.write(0, &0x1_0000u32.to_le_bytes());
        touch(&m, 0, 4096);
        let p = t.phases();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].phase, p[1].phase), (3, 0x1_0000));
        assert_eq!((p[0].mem.guest_ram_bytes, p[0].mem.vram_bytes), (0, 0));
        assert_eq!((p[1].mem.guest_ram_bytes, p[1].mem.vram_bytes), (0, 8192));
        assert!(p[0].mem.rss_bytes > 0 && p[1].t_ms >= p[0].t_ms);
    }
}
