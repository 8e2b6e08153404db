//! Port I/O and MMIO dispatch: a [`Bus`] maps non-overlapping address ranges to
//! [`BusDevice`]s.
//!
//! The VMM has two buses, one for port I/O and one for MMIO. A vCPU exit becomes one
//! [`Bus::read`] or [`Bus::write`] of the exit's whole data: string port I/O (`rep outsb`,
//! `rep insb`) arrives as one access of count × size bytes, so a device whose registers are
//! bytes treats a longer access as a stream to the same register. MMIO accesses are 1 to 8
//! bytes. Accesses nobody claims read as all ones and are otherwise ignored.
//!
//! The bus is built before the vCPUs start and is then shared read-only (`Arc<Bus>`); each
//! device sits behind its own mutex, so vCPUs touching different devices do not contend.

use std::sync::{Arc, Mutex};

/// A device on a bus.
pub trait BusDevice: Send {
    /// Reads `data.len()` bytes at `offset` from the start of the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset` from the start of the device's range.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the bus and whoever else drives it (an event loop, stats).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors building a bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The new range is empty or wraps around.
    #[error("bus range {base:#x}+{len:#x} is empty or wraps")]
    BadRange {
        /// Start.
        base: u64,
        /// Length.
        len: u64,
    },
    /// The new range overlaps one already there.
    #[error("bus range {base:#x}+{len:#x} overlaps {other_base:#x}+{other_len:#x}")]
    Overlap {
        /// Start.
        base: u64,
        /// Length.
        len: u64,
        /// Start of the existing range.
        other_base: u64,
        /// Its length.
        other_len: u64,
    },
}

#[derive(Clone)]
struct Entry {
    base: u64,
    len: u64,
    device: SharedDevice,
}

/// Address ranges mapped to devices.
#[derive(Clone, Default)]
pub struct Bus {
    // Sorted by base, non-overlapping.
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| (e.base, e.len)))
            .finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[base, base + len)` to `device`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        if len == 0 || base.checked_add(len).is_none() {
            return Err(BusError::BadRange { base, len });
        }
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| base < e.base + e.len && e.base < base + len)
        {
            return Err(BusError::Overlap {
                base,
                len,
                other_base: e.base,
                other_len: e.len,
            });
        }
        let at = self.entries.partition_point(|e| e.base < base);
        self.entries.insert(at, Entry { base, len, device });
        Ok(())
    }

    /// The device at `addr` and the offset of `addr` in it. An access that starts inside a
    /// device's range belongs to that device (the device checks the length).
    fn find(&self, addr: u64) -> Option<(&Entry, u64)> {
        let i = self.entries.partition_point(|e| e.base <= addr);
        let e = self.entries.get(i.checked_sub(1)?)?;
        (addr - e.base < e.len).then(|| (e, addr - e.base))
    }

    /// Reads at `addr`. Returns false, with `data` set to all ones, if no device is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((e, off)) => {
                lock(&e.device).read(off, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Writes at `addr`. Returns false if no device is there (the write is dropped).
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((e, off)) => {
                lock(&e.device).write(off, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering it if another vCPU thread panicked while holding it (the device
/// state is still the best we have, and a panic is reported anyway).
pub fn lock(d: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    d.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads a little-endian value of 1 to 8 bytes (longer slices are cut, shorter zero-extended).
pub fn le_value(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        log: Vec<(char, u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
            self.log.push(('r', offset, data.to_vec()));
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.log.push(('w', offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatch_by_range() {
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        bus.insert(0x501, 1, b.clone()).unwrap();

        let mut d = [0u8; 1];
        assert!(bus.read(0x3fd, &mut d));
        assert_eq!(d, [5]);
        assert!(bus.write(0x3f8, b"hi\n"));
        assert!(bus.write(0x501, &[7, 0, 0, 0]));
        assert!(!bus.write(0x500, &[1]));
        assert!(!bus.write(0x502, &[1]));
        assert!(!bus.write(0x3f7, &[1]));
        let mut d = [0u8; 2];
        assert!(!bus.read(0x400, &mut d));
        assert_eq!(d, [0xff, 0xff]);

        let a = a.lock().unwrap();
        assert_eq!(a.log, [('r', 5, vec![5]), ('w', 0, b"hi\n".to_vec())]);
        assert_eq!(b.lock().unwrap().log, [('w', 0, vec![7, 0, 0, 0])]);
    }

    #[test]
    fn overlaps_and_bad_ranges_are_refused() {
        let d = || Arc::new(Mutex::new(Recorder::default())) as SharedDevice;
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x100, d()).unwrap();
        bus.insert(0x0f00, 0x100, d()).unwrap();
        bus.insert(0x1100, 0x100, d()).unwrap();
        assert!(matches!(
            bus.insert(0x10ff, 2, d()),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(0x0e00, 0x101, d()),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(0x0, 0x10000, d()),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(0x5000, 0, d()),
            Err(BusError::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert(u64::MAX, 2, d()),
            Err(BusError::BadRange { .. })
        ));
        bus.insert(u64::MAX - 1, 1, d()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(u64::MAX - 1, &mut b));
        assert!(!bus.read(u64::MAX, &mut b));
        assert!(bus.read(0x0f00, &mut b) && bus.read(0x11ff, &mut b));
        assert!(!bus.read(0x1200, &mut b) && !bus.read(0x0eff, &mut b));
    }

    #[test]
    fn le_values() {
        assert_eq!(le_value(&[7]), 7);
        assert_eq!(le_value(&[1, 2]), 0x0201);
        assert_eq!(le_value(&[0x2a, 0, 0, 0]), 42);
        assert_eq!(le_value(&[]), 0);
        assert_eq!(le_value(&[1; 10]), 0x0101_0101_0101_0101);
    }
}
