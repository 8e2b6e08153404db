//! The phase port: timestamped markers with host memory, for the stats.

use std::sync::Arc;

use crate::devices::bus::{le_value, BusDevice};
use crate::devices::warn_limit::WarnLimit;
use crate::run::stats::{MemoryProbe, PhaseMark, Timeline};

/// PHASE_PORT: a 4-byte write of N records phase marker N with the time and host memory
/// (guest RAM, VRAM, RSS).
///
/// The snapshot is taken here, in the writing vCPU's exit handler, before that vCPU resumes:
/// it shows host memory exactly as it stood when the guest reached the marker (e.g. after a
/// CLEAN whose fence the guest has already seen complete).
pub struct PhaseDevice {
    timeline: Arc<Timeline>,
    probe: MemoryProbe,
    malformed: WarnLimit,
}

impl PhaseDevice {
    /// A phase port recording into `timeline`, measuring with `probe`.
    pub fn new(timeline: Arc<Timeline>, probe: MemoryProbe) -> Self {
        PhaseDevice {
            timeline,
            probe,
            malformed: WarnLimit::new(),
        }
    }
}

impl BusDevice for PhaseDevice {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if data.len() != 4 {
            if let Some(more) = self.malformed.count() {
                log::warn!(
                    "ignoring a {}-byte write to the phase port{more}",
                    data.len()
                );
            }
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
    use crate::run::stats::tests::touch;
    use pvgpu_device::{HostMemory, MemoryBackend};
    use std::time::Instant;

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
