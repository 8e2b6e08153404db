//! Long data work in bounded slices: FILL, COPY, CHECKSUM, MIGRATE and EVICT move at most
//! [`SLICE_BYTES`] per step, so a command over gigabytes of VRAM never holds the device (and
//! with it the vCPUs' register accesses and the end of the run) for longer than one slice.
//!
//! A [`Job`] is the data part of one command. The command engine checks the request and sets
//! the object up, the queue layer runs the job a budget at a time (the chain stays unused
//! meanwhile, so the guest cannot tell), and the engine commits the result when it is done.

use vm_memory::GuestMemory;

use crate::display::BackingMap;
use crate::guest_ram::Extent;
use crate::vram::{guest_checksum_append, Vram, VramError};

/// Most bytes one slice of a job moves (the default of `DeviceConfig::slice_bytes`).
pub const SLICE_BYTES: u64 = 4 << 20;

/// What a job does with its bytes.
#[derive(Debug, Clone)]
pub enum Work {
    /// VRAM `[at, at + len)` is set to `value`.
    Fill {
        /// VRAM offset.
        at: u64,
        /// The byte.
        value: u8,
    },
    /// VRAM `[src, src + len)` is moved to `[dst, dst + len)` (the ranges may overlap).
    Copy {
        /// Source VRAM offset.
        src: u64,
        /// Destination VRAM offset.
        dst: u64,
    },
    /// crc32c of VRAM `[at, at + len)`.
    VramChecksum {
        /// VRAM offset.
        at: u64,
    },
    /// crc32c of bytes `[offset, offset + len)` of the data in guest pages `extents`.
    GuestChecksum {
        /// The object's pages.
        extents: Vec<Extent>,
        /// Offset into the object.
        offset: u64,
    },
    /// Guest pages `extents`, in order, are copied to VRAM at `vram`.
    ToVram {
        /// The object's pages.
        extents: Vec<Extent>,
        /// VRAM offset.
        vram: u64,
    },
    /// VRAM at `vram` is copied into the guest pages `extents`, in order.
    ToGuest {
        /// The object's pages.
        extents: Vec<Extent>,
        /// VRAM offset.
        vram: u64,
    },
}

/// The data part of one command, `done` bytes of `len` through.
#[derive(Debug, Clone)]
pub struct Job {
    work: Work,
    len: u64,
    done: u64,
    crc: u32,
}

/// `n` bytes of the page runs `extents`, starting `skip` bytes in.
fn sub_extents(extents: &[Extent], skip: u64, n: u64) -> Vec<Extent> {
    BackingMap::new(extents).range(skip, n)
}

impl Job {
    /// A job of `len` bytes.
    pub fn new(work: Work, len: u64) -> Self {
        Job {
            work,
            len,
            done: 0,
            crc: 0,
        }
    }

    /// Whether every byte is done.
    pub fn finished(&self) -> bool {
        self.done >= self.len
    }

    /// The checksum so far (the result, once finished, of a checksum job).
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// Runs slices of at most `slice` bytes until the job is finished or `budget` bytes are
    /// used up (at least one slice runs if any work is left). Returns whether the job is
    /// finished.
    pub fn run<M: GuestMemory + ?Sized>(
        &mut self,
        vram: &Vram,
        mem: &M,
        slice: u64,
        budget: &mut u64,
    ) -> Result<bool, VramError> {
        loop {
            if self.finished() {
                return Ok(true);
            }
            let n = slice.max(1).min(self.len - self.done);
            self.slice(vram, mem, n)?;
            self.done += n;
            *budget = budget.saturating_sub(n);
            if *budget == 0 {
                return Ok(self.finished());
            }
        }
    }

    /// Does bytes `[done, done + n)`.
    fn slice<M: GuestMemory + ?Sized>(
        &mut self,
        vram: &Vram,
        mem: &M,
        n: u64,
    ) -> Result<(), VramError> {
        let d = self.done;
        match &self.work {
            Work::Fill { at, value } => vram.fill(at + d, n, *value),
            Work::Copy { src, dst } => {
                // Overlapping with the destination above the source: go from the end, so no
                // slice reads bytes an earlier slice already overwrote.
                let k = if dst > src { self.len - d - n } else { d };
                vram.copy_within(src + k, dst + k, n)
            }
            Work::VramChecksum { at } => {
                self.crc = vram.checksum_append(self.crc, at + d, n)?;
                Ok(())
            }
            Work::GuestChecksum { extents, offset } => {
                self.crc = guest_checksum_append(mem, self.crc, extents, offset + d, n)?;
                Ok(())
            }
            Work::ToVram { extents, vram: at } => {
                vram.copy_from_guest(mem, &sub_extents(extents, d, n), at + d)
            }
            Work::ToGuest { extents, vram: at } => {
                vram.copy_to_guest(mem, &sub_extents(extents, d, n), at + d)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    #[test]
    fn sub_extents_cut_at_any_byte() {
        let x = [
            Extent {
                gpa: 0x1000,
                len: 0x2000,
            },
            Extent {
                gpa: 0x8000,
                len: 0x1000,
            },
        ];
        assert_eq!(sub_extents(&x, 0, 0x3000), x.to_vec());
        assert_eq!(
            sub_extents(&x, 0x1800, 0x1000),
            vec![
                Extent {
                    gpa: 0x2800,
                    len: 0x800
                },
                Extent {
                    gpa: 0x8000,
                    len: 0x800
                }
            ]
        );
        assert!(sub_extents(&x, 0x3000, 0x1000).is_empty());
    }

    #[test]
    fn sliced_copy_is_a_memmove_both_ways() {
        let len = 3 * SLICE_BYTES + 4096;
        let v = Vram::new(8 * SLICE_BYTES).unwrap();
        for (src, dst) in [(0, 4096), (4096, 0), (0, SLICE_BYTES + 8192)] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
            // Write the pattern at src through a guest round trip-free path: fill + write.
            let ext = [Extent {
                gpa: 0,
                len: 1 << 20,
            }];
            for (i, chunk) in data.chunks(1 << 20).enumerate() {
                mem.write_slice(chunk, GuestAddress(0)).unwrap();
                let e = sub_extents(&ext, 0, chunk.len() as u64);
                v.copy_from_guest(&mem, &e, src + (i as u64) * (1 << 20))
                    .unwrap();
            }
            let mut job = Job::new(Work::Copy { src, dst }, len);
            let mut steps = 0;
            loop {
                let mut budget = SLICE_BYTES;
                steps += 1;
                if job.run(&v, &mem, SLICE_BYTES, &mut budget).unwrap() {
                    break;
                }
            }
            assert_eq!(steps, 4, "one slice per step");
            let mut back = vec![0u8; len as usize];
            v.read(dst, &mut back).unwrap();
            assert!(back == data, "copy {src:#x} -> {dst:#x}");
        }
    }

    #[test]
    fn sliced_checksum_equals_the_whole() {
        let v = Vram::new(4 * SLICE_BYTES).unwrap();
        v.fill(0, SLICE_BYTES, 3).unwrap();
        v.fill(SLICE_BYTES, 2 * SLICE_BYTES, 9).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut job = Job::new(Work::VramChecksum { at: 5 }, 3 * SLICE_BYTES - 5);
        let mut budget = 1;
        while !job.run(&v, &mem, SLICE_BYTES, &mut budget).unwrap() {
            budget = 1;
        }
        assert_eq!(
            job.crc(),
            v.checksum_append(0, 5, 3 * SLICE_BYTES - 5).unwrap()
        );
    }
}
