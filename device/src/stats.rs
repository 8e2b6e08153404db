//! Device counters, serialisable for the VMM's JSON stats file and reported to the guest by
//! the STATS command.

use std::collections::BTreeMap;

use serde::Serialize;

/// Errors from the stats module (none can happen today; kept for the one-enum-per-module rule).
#[derive(Debug, thiserror::Error)]
pub enum DeviceStatsError {
    /// Serialising failed.
    #[error("cannot serialise stats: {0}")]
    Serialize(String),
}

/// Per-command-type counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CommandCount {
    /// Requests of this type.
    pub count: u64,
    /// Of which got an error response.
    pub errors: u64,
}

/// The device counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceStats {
    /// Live objects.
    pub objects_live: u64,
    /// Most live objects at once.
    pub objects_peak: u64,
    /// Objects ever created.
    pub objects_created: u64,
    /// Bytes brought guest → VRAM by MIGRATE and MIGRATE_CLEAN (copied or moved).
    pub bytes_migrated: u64,
    /// Guest bytes given back by CLEAN and MIGRATE_CLEAN.
    pub bytes_cleaned: u64,
    /// Bytes brought VRAM → guest by EVICT (copied or moved).
    pub bytes_evicted: u64,
    /// Bytes that MIGRATE_CLEAN and EVICT moved between guest RAM and VRAM without copying
    /// (UFFDIO_MOVE).
    pub bytes_moved: u64,
    /// Bytes that MIGRATE_CLEAN and EVICT copied where a move was not possible (the shared
    /// backend, an older kernel, or pages the kernel refused to move).
    pub bytes_move_copied: u64,
    /// Nanoseconds MIGRATE_CLEAN commands took in the device, from each one's start to its
    /// answer (moving or copying, in bounded steps, and discarding the guest pages; wall
    /// time, the short gaps between steps included), for the device-side throughput.
    pub migrate_clean_ns: u64,
    /// Times the driver waited for an answer on the used-wait port instead of spinning (a vCPU
    /// blocked in the VMM; only with the device in the VMM's process).
    pub used_waits: u64,
    /// Bytes copied VRAM → guest pages by READ.
    pub bytes_read: u64,
    /// Bytes copied guest pages → VRAM by WRITE.
    pub bytes_written: u64,
    /// VRAM bytes given back to the host (punched) when freed.
    pub vram_bytes_punched: u64,
    /// VRAM size.
    pub vram_size: u64,
    /// VRAM bytes allocated to objects.
    pub vram_used: u64,
    /// Most VRAM bytes allocated at once.
    pub vram_peak: u64,
    /// Requests handled (all types).
    pub commands: u64,
    /// Requests that got an error response.
    pub errors: u64,
    /// Descriptor chains that could not be answered (no or too small response buffer).
    pub dropped_chains: u64,
    /// Guest-RAM ranges CLEAN could not punch (a host failure: the data is safe in VRAM, the
    /// host just keeps those pages).
    pub punch_failures: u64,
    /// RESOURCE_FLUSHes that succeeded.
    pub flushes: u64,
    /// Bytes copied guest → VRAM by TRANSFER_TO_HOST_2D.
    pub bytes_transferred: u64,
    /// Queue notifications handled.
    pub notifications: u64,
    /// Interrupts raised.
    pub interrupts: u64,
    /// Per command type (by name; unknown types are counted as "unknown").
    pub by_command: BTreeMap<&'static str, CommandCount>,
}

impl DeviceStats {
    /// Counts one request of `name`, failed or not.
    pub fn count_command(&mut self, name: &'static str, failed: bool) {
        self.commands += 1;
        let c = self.by_command.entry(name).or_default();
        c.count += 1;
        if failed {
            self.errors += 1;
            c.errors += 1;
        }
    }

    /// Records the live-object count.
    pub fn set_objects(&mut self, live: u64) {
        self.objects_live = live;
        self.objects_peak = self.objects_peak.max(live);
    }

    /// Records VRAM use.
    pub fn set_vram_used(&mut self, used: u64) {
        self.vram_used = used;
        self.vram_peak = self.vram_peak.max(used);
    }

    /// The counters as JSON.
    pub fn to_json(&self) -> Result<String, DeviceStatsError> {
        serde_json::to_string(self).map_err(|e| DeviceStatsError::Serialize(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_peaks() {
        let mut s = DeviceStats::default();
        s.count_command("clean", false);
        s.count_command("clean", true);
        s.count_command("unknown", true);
        s.set_objects(3);
        s.set_objects(1);
        s.set_vram_used(100);
        s.set_vram_used(50);
        assert_eq!((s.commands, s.errors), (3, 2));
        assert_eq!(
            s.by_command["clean"],
            CommandCount {
                count: 2,
                errors: 1
            }
        );
        assert_eq!((s.objects_live, s.objects_peak), (1, 3));
        assert_eq!((s.vram_used, s.vram_peak), (50, 100));
        let j = s.to_json().unwrap();
        assert!(j.contains("\"objects_peak\":3"), "{j}");
        assert!(j.contains("\"clean\":{\"count\":2,\"errors\":1}"), "{j}");
    }
}
