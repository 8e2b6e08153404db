//! Long data work in bounded slices: FILL, COPY, CHECKSUM, READ, WRITE, MIGRATE,
//! MIGRATE_CLEAN, EVICT and TRANSFER_TO_HOST_2D do at most [`SLICE_BYTES`] per step (a slice
//! that moves pages, [`MOVE_SLICES`] times that), so a command over gigabytes never holds the
//! device (and with it the vCPUs' register accesses and the end of the run) for longer than
//! one slice.
//!
//! A [`Job`] is the data part of one command. The command engine checks the request and sets
//! the object up, the queue layer runs the job a budget at a time (the chain stays unused
//! meanwhile, so the guest cannot tell), and the engine commits the result when it is done.

use vm_memory::{GuestMemory, Permissions};

use crate::backend::HUGE_PAGE;
use crate::display::BackingMap;
use crate::guest_ram::{Extent, GuestRamPunch};
use crate::page_mover::{MoveCounts, PageMover};
use crate::vram::{guest_checksum_append, guest_slices, Vram, VramError};

/// Most bytes one slice of a job copies (the default of `DeviceConfig::slice_bytes`).
pub const SLICE_BYTES: u64 = 4 << 20;

/// A slice that moves pages (UFFDIO_MOVE: no byte is copied) is this many slices long: 64 MiB
/// with the default slices, about 2 ms with 4 KiB pages here, and it counts as that many
/// slices against a step's budget. Huge pages move 15 to 40 times faster (64 MiB in 50 to
/// 130 µs, less than one copied slice takes), so the whole 2 MiB pages of a slice (those
/// aligned on both sides, on memory that asks for huge pages) count a sixteenth, and a step
/// moves several slices: a batch of four MIGRATE_CLEANs of 64 MiB objects is one step, not
/// four, each ending with a wake-up of the driver. Where pages cannot move, the slices are
/// the ordinary ones.
pub const MOVE_SLICES: u64 = 16;

/// What a row of [`Work::Rows`] counts against the budget at least: setting a row up (finding
/// its guest pages, one copy call) costs about as much as copying this many bytes, so a
/// rectangle of narrow rows is not done a slice's worth of rows at a time.
pub const ROW_COST: u64 = 2048;

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
        /// The guest pages.
        extents: Vec<Extent>,
        /// VRAM offset.
        vram: u64,
    },
    /// VRAM at `vram` is copied into the guest pages `extents`, in order.
    ToGuest {
        /// The guest pages.
        extents: Vec<Extent>,
        /// VRAM offset.
        vram: u64,
    },
    /// Guest pages `extents`, in order, move to VRAM at `vram` (copied where they cannot, see
    /// [`PageMover`]); each slice discards its VRAM range first, so the pages can move in.
    MoveToVram {
        /// The guest pages.
        extents: Vec<Extent>,
        /// VRAM offset.
        vram: u64,
    },
    /// VRAM at `vram` moves into the guest pages `extents`, in order (copied where it cannot);
    /// each slice discards its guest pages first (they are overwritten whole).
    MoveToGuest {
        /// The guest pages.
        extents: Vec<Extent>,
        /// VRAM offset.
        vram: u64,
    },
    /// Rows of `row` bytes, `stride` bytes apart, from byte `src` on of the data in guest
    /// memory `extents`, are copied to VRAM at `vram`, also `stride` apart (a rectangle of a
    /// 2D resource). The job's length is the rows' bytes, `row` × rows.
    Rows {
        /// The backing (byte-granular runs).
        extents: Vec<Extent>,
        /// Offset of the first row in the backing.
        src: u64,
        /// VRAM offset of the first row.
        vram: u64,
        /// Bytes from one row to the next, on both sides.
        stride: u64,
        /// Bytes of each row (at most `stride`, more than 0).
        row: u64,
    },
}

/// What a job works on.
pub struct Env<'a, M: GuestMemory + ?Sized> {
    /// VRAM.
    pub vram: &'a Vram,
    /// Guest memory.
    pub mem: &'a M,
    /// Moves pages (the move work).
    pub mover: &'a mut PageMover,
    /// Discards guest pages (before VRAM pages move into them).
    pub punch: &'a dyn GuestRamPunch,
}

/// The data part of one command, `done` bytes of `len` through.
#[derive(Debug, Clone)]
pub struct Job {
    work: Work,
    len: u64,
    done: u64,
    crc: u32,
    moves: MoveCounts,
}

/// The bytes of the `len` bytes at host address `src`, moving to host address `dst`, that are
/// whole 2 MiB pages on both sides (what can move as huge pages).
fn huge_part(src: u64, dst: u64, len: u64) -> u64 {
    if src % HUGE_PAGE != dst % HUGE_PAGE {
        return 0;
    }
    let start = src.next_multiple_of(HUGE_PAGE);
    let end = (src + len) / HUGE_PAGE * HUGE_PAGE;
    end.saturating_sub(start)
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
            moves: MoveCounts::default(),
        }
    }

    /// Whether every byte is done.
    pub fn finished(&self) -> bool {
        self.done >= self.len
    }

    /// Bytes of the job.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the job has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The checksum so far (the result, once finished, of a checksum job).
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// Bytes the move work moved and copied so far.
    pub fn moves(&self) -> MoveCounts {
        self.moves
    }

    /// Runs slices of at most `slice` bytes until the job is finished or `budget` bytes are
    /// used up (at least one slice runs if any work is left). Returns whether the job is
    /// finished.
    pub fn run<M: GuestMemory + ?Sized>(
        &mut self,
        env: &mut Env<'_, M>,
        slice: u64,
        budget: &mut u64,
    ) -> Result<bool, VramError> {
        loop {
            if self.finished() {
                return Ok(true);
            }
            let (n, cost) = self.next_slice(slice.max(1), env);
            self.slice(env, n)?;
            self.done += n;
            *budget = budget.saturating_sub(cost);
            if *budget == 0 {
                return Ok(self.finished());
            }
        }
    }

    /// How many bytes the next slice does, and what it counts against the budget.
    fn next_slice<M: GuestMemory + ?Sized>(&self, slice: u64, env: &Env<'_, M>) -> (u64, u64) {
        let left = self.len - self.done;
        match &self.work {
            Work::MoveToVram { extents, vram } | Work::MoveToGuest { extents, vram }
                if env.mover.can_move() =>
            {
                let n = slice.saturating_mul(MOVE_SLICES).min(left);
                if !env.mover.moves_huge_pages() {
                    return (n, n);
                }
                // Only whole 2 MiB pages that line up on both sides can move as huge pages;
                // the rest moves 4 KiB at a time and counts in full.
                let runs = sub_extents(extents, self.done, n);
                // Bad pages fail the slice itself; here they only count in full.
                let Ok(slices) = guest_slices(env.mem, &runs, Permissions::Read) else {
                    return (n, n);
                };
                let mut at = env.vram.host_addr() as u64 + vram + self.done;
                let mut cost = 0u64;
                for s in slices {
                    let len = s.len() as u64;
                    let huge = huge_part(s.ptr_guard().as_ptr() as u64, at, len);
                    cost += (len - huge) + huge.div_ceil(MOVE_SLICES);
                    at += len;
                }
                (n, cost.max(1))
            }
            // Whole rows, each counted as at least ROW_COST (a row longer than a slice is cut
            // like any other run of bytes, below).
            Work::Rows { row, .. } if *row < slice => {
                let per_row = (*row).max(ROW_COST);
                let rows = (slice / per_row).max(1);
                let n = rows.saturating_mul(*row).min(left);
                (n, n.div_ceil(*row).saturating_mul(per_row))
            }
            _ => {
                let n = slice.min(left);
                (n, n)
            }
        }
    }

    /// Does bytes `[done, done + n)`.
    fn slice<M: GuestMemory + ?Sized>(
        &mut self,
        env: &mut Env<'_, M>,
        n: u64,
    ) -> Result<(), VramError> {
        let d = self.done;
        let (vram, mem) = (env.vram, env.mem);
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
            Work::MoveToVram { extents, vram: at } => {
                if env.mover.can_move() {
                    // A page present there is copied instead, so a failure only costs time.
                    if let Err(e) = vram.make_missing(at + d, n) {
                        log::debug!("discarding VRAM {:#x}+{n:#x}: {e}", at + d);
                    }
                }
                let c = env
                    .mover
                    .to_vram(mem, &sub_extents(extents, d, n), vram, at + d)?;
                self.moves.add(c);
                Ok(())
            }
            Work::MoveToGuest { extents, vram: at } => {
                let dst = sub_extents(extents, d, n);
                if env.mover.can_move() {
                    // As above: a page that stays present is copied.
                    for x in &dst {
                        if let Err(e) = env.punch.punch(x.gpa, x.len) {
                            log::debug!("discarding guest pages {x:?}: {e}");
                        }
                    }
                }
                let c = env.mover.to_guest(mem, &dst, vram, at + d)?;
                self.moves.add(c);
                Ok(())
            }
            Work::Rows {
                extents,
                src,
                vram: at,
                stride,
                row,
            } => {
                let map = BackingMap::new(extents);
                let end = d + n;
                let mut pos = d;
                while pos < end {
                    // Row `i`, from byte `k` of it.
                    let (i, k) = (pos / row, pos % row);
                    let m = (row - k).min(end - pos);
                    let off = i * stride + k;
                    vram.copy_from_guest(mem, &map.range(src + off, m), at + off)?;
                    pos += m;
                }
                Ok(())
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::page_mover::ZeroCopy;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    struct NoPunch;
    impl GuestRamPunch for NoPunch {
        fn punch(&self, _: u64, _: u64) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `job` in steps of `budget` bytes; returns the number of steps.
    fn run_in_steps(job: &mut Job, v: &Vram, mem: &GuestMemoryMmap, budget: u64) -> usize {
        let mut mover = PageMover::new(MemoryBackend::Shared, ZeroCopy::CopyOnly);
        let mut env = Env {
            vram: v,
            mem,
            mover: &mut mover,
            punch: &NoPunch,
        };
        let mut steps = 0;
        loop {
            let mut b = budget;
            steps += 1;
            if job.run(&mut env, SLICE_BYTES, &mut b).unwrap() {
                return steps;
            }
        }
    }

    #[test]
    fn huge_part_is_the_whole_2mib_pages_aligned_on_both_sides() {
        const H: u64 = HUGE_PAGE;
        assert_eq!(huge_part(4 * H, 8 * H, 3 * H), 3 * H);
        // Starting inside a huge page on both sides, the same way: the whole ones between.
        assert_eq!(huge_part(4 * H + 4096, 8 * H + 4096, 3 * H), 2 * H);
        // Misaligned against each other: none can move whole.
        assert_eq!(huge_part(4 * H + 4096, 8 * H, 3 * H), 0);
        // Shorter than a huge page, or past its end only.
        assert_eq!(huge_part(4 * H, 8 * H, H - 4096), 0);
        assert_eq!(huge_part(4 * H + 4096, 8 * H + 4096, H), 0);
    }

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
            let steps = run_in_steps(&mut job, &v, &mem, SLICE_BYTES);
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
        assert_eq!(run_in_steps(&mut job, &v, &mem, 1), 3);
        assert_eq!(
            job.crc(),
            v.checksum_append(0, 5, 3 * SLICE_BYTES - 5).unwrap()
        );
    }

    #[test]
    fn rows_in_slices_land_where_whole_rows_would() {
        const MIB: u64 = 1 << 20;
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 40 * MIB as usize)]).unwrap();
        let byte = |gpa: u64| (gpa.wrapping_mul(7) ^ (gpa >> 13)) as u8;
        let all: Vec<u8> = (0..40 * MIB).map(byte).collect();
        mem.write_slice(&all, GuestAddress(0)).unwrap();
        // Two runs, the first of an odd length, so rows straddle them.
        let extents = vec![
            Extent {
                gpa: 0x1000,
                len: 12 * MIB + 5,
            },
            Extent {
                gpa: 16 * MIB,
                len: 20 * MIB,
            },
        ];
        let gpa_of = |o: u64| match o < 12 * MIB + 5 {
            true => 0x1000 + o,
            false => 16 * MIB + (o - 12 * MIB - 5),
        };
        // (stride, row, rows, steps of SLICE_BYTES): rows shorter than a slice go whole,
        // counted as at least ROW_COST each; a row longer than a slice is cut.
        let cases = [
            (3000, 1000, 9000, 9000u64.div_ceil(SLICE_BYTES / ROW_COST)),
            (2 * SLICE_BYTES, SLICE_BYTES + 100, 3, 4),
            (64, 4, 100_000, 100_000u64.div_ceil(SLICE_BYTES / ROW_COST)),
        ];
        for (stride, row, rows, want_steps) in cases {
            let v = Vram::new(32 * MIB).unwrap();
            let (src, at) = (7, 4096);
            let work = Work::Rows {
                extents: extents.clone(),
                src,
                vram: at,
                stride,
                row,
            };
            let mut job = Job::new(work, row * rows);
            let steps = run_in_steps(&mut job, &v, &mem, SLICE_BYTES);
            assert_eq!(steps as u64, want_steps, "stride {stride}, row {row}");
            let span = (rows - 1) * stride + row;
            let mut got = vec![0u8; span as usize];
            v.read(at, &mut got).unwrap();
            for (i, b) in got.iter().enumerate() {
                let i = i as u64;
                let want = match i % stride < row {
                    true => byte(gpa_of(src + i)),
                    false => 0,
                };
                assert_eq!(*b, want, "byte {i} (stride {stride}, row {row})");
            }
        }
    }
}
