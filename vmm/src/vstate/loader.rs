//! Loading the guest: the kernel ELF (through linux-loader), the command line and the
//! boot-info block.
//!
//! Guest RAM is a fresh memfd, so it reads as zeros: a segment's .bss (`p_memsz` beyond
//! `p_filesz`) needs no clearing, and is left untouched so that it costs no host pages.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use linux_loader::loader::{elf::Elf, KernelLoader};
use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::layout;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, ReadVolatile};

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 0x3e;
const PT_LOAD: u32 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const MAX_PHDRS: u16 = 64;

/// Errors loading the guest.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The kernel file cannot be opened or read.
    #[error("cannot read guest kernel {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not an x86-64 little-endian ELF64 file.
    #[error("guest kernel {path} is not an x86-64 ELF file ({why})")]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// A loadable segment lies outside `[KERNEL_MIN_ADDR, ram_size)`.
    #[error("guest kernel segment {start:#x}..{end:#x} lies outside {min:#x}..{ram:#x} (kernel area .. end of guest RAM)", min = layout::KERNEL_MIN_ADDR)]
    SegmentOutOfRange {
        /// Segment start (physical).
        start: u64,
        /// Segment end (physical, exclusive; u64::MAX on overflow).
        end: u64,
        /// Guest RAM size.
        ram: u64,
    },
    /// A PT_LOAD segment with file bytes but no memory size (linux-loader would still copy
    /// them, outside every checked range).
    #[error(
        "guest kernel segment at {start:#x} has {filesz:#x} file bytes but a memory size of 0"
    )]
    EmptySegmentWithData {
        /// Segment start (physical).
        start: u64,
        /// Its p_filesz.
        filesz: u64,
    },
    /// A PT_LOAD segment whose file bytes exceed its memory size (they would be copied past
    /// the checked span).
    #[error("guest kernel segment at {start:#x} has more file bytes ({filesz:#x}) than memory ({memsz:#x})")]
    FileLargerThanMemory {
        /// Segment start (physical).
        start: u64,
        /// Its p_filesz.
        filesz: u64,
        /// Its p_memsz.
        memsz: u64,
    },
    /// The entry point is not inside a loaded segment.
    #[error("guest kernel entry point {0:#x} is not inside a loaded segment")]
    BadEntry(u64),
    /// linux-loader refused the image.
    #[error("cannot load guest kernel {path}: {source}")]
    Load {
        /// The file.
        path: PathBuf,
        /// The loader's error.
        source: linux_loader::loader::Error,
    },
    /// The command line is too long.
    #[error("guest command line is {0} bytes; at most {max} fit", max = layout::CMDLINE_MAX)]
    CmdlineTooLong(usize),
    /// Writing into guest memory failed.
    #[error("cannot write {what} into guest memory: {source}")]
    GuestWrite {
        /// What was being written.
        what: &'static str,
        /// vm-memory's error.
        source: vm_memory::GuestMemoryError,
    },
}

/// Where the kernel landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedKernel {
    /// The ELF entry point (guest-physical = virtual under the identity map).
    pub entry: u64,
    /// Lowest loaded address.
    pub start: u64,
    /// One past the highest loaded address, .bss included.
    pub end: u64,
}

/// The checked layout of a kernel image: its PT_LOAD segments and entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayout {
    /// `[start, end)` of each PT_LOAD segment (physical, .bss included).
    pub segments: Vec<(u64, u64)>,
    /// The ELF entry point (e_entry), inside one of the segments.
    pub entry: u64,
}

impl ImageLayout {
    /// `[lowest start, highest end)` of the segments.
    pub fn span(&self) -> (u64, u64) {
        let start = self.segments.iter().map(|s| s.0).min().unwrap_or(0);
        let end = self.segments.iter().map(|s| s.1).max().unwrap_or(0);
        (start, end)
    }
}

/// Checks the headers of an x86-64 ELF image before anything is loaded: each PT_LOAD segment
/// lies in `[KERNEL_MIN_ADDR, ram_size)` and has no more file bytes than memory (none at all
/// for an empty one), and the entry point lies inside a segment (not in a gap between two).
/// `read_at` reads the file at an offset.
pub fn check_image(
    path: &Path,
    read_at: &dyn Fn(&mut [u8], u64) -> std::io::Result<()>,
    ram_size: u64,
) -> Result<ImageLayout, LoaderError> {
    let not_elf = |why| LoaderError::NotElf {
        path: path.to_owned(),
        why,
    };
    let mut eh = [0u8; EHDR_SIZE];
    read_at(&mut eh, 0).map_err(|_| not_elf("too short"))?;
    if eh[0..4] != ELF_MAGIC {
        return Err(not_elf("no ELF magic"));
    }
    if eh[4] != ELFCLASS64 || eh[5] != ELFDATA2LSB {
        return Err(not_elf("not 64-bit little-endian"));
    }
    if u16::from_le_bytes([eh[18], eh[19]]) != EM_X86_64 {
        return Err(not_elf("not x86-64"));
    }
    let entry = u64::from_le_bytes(eh[24..32].try_into().unwrap_or_default());
    let phoff = u64::from_le_bytes(eh[32..40].try_into().unwrap_or_default());
    let phentsize = u16::from_le_bytes([eh[54], eh[55]]);
    let phnum = u16::from_le_bytes([eh[56], eh[57]]);
    if usize::from(phentsize) != PHDR_SIZE || phnum == 0 || phnum > MAX_PHDRS {
        return Err(not_elf("bad program headers"));
    }
    let mut segments = Vec::new();
    for i in 0..u64::from(phnum) {
        let mut ph = [0u8; PHDR_SIZE];
        let off = phoff
            .checked_add(i * PHDR_SIZE as u64)
            .ok_or(not_elf("bad program headers"))?;
        read_at(&mut ph, off).map_err(|_| not_elf("truncated program headers"))?;
        let field = |o: usize| u64::from_le_bytes(ph[o..o + 8].try_into().unwrap_or_default());
        let p_type = u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]);
        let (paddr, filesz, memsz) = (field(24), field(32), field(40));
        if p_type != PT_LOAD {
            continue;
        }
        if memsz == 0 && filesz > 0 {
            return Err(LoaderError::EmptySegmentWithData {
                start: paddr,
                filesz,
            });
        }
        if filesz > memsz {
            return Err(LoaderError::FileLargerThanMemory {
                start: paddr,
                filesz,
                memsz,
            });
        }
        if memsz == 0 {
            continue;
        }
        let end = paddr.saturating_add(memsz);
        if paddr < layout::KERNEL_MIN_ADDR || end > ram_size {
            return Err(LoaderError::SegmentOutOfRange {
                start: paddr,
                end,
                ram: ram_size,
            });
        }
        segments.push((paddr, end));
    }
    if segments.is_empty() {
        return Err(not_elf("no loadable segment"));
    }
    let img = ImageLayout { segments, entry };
    if !img.contains(entry) {
        return Err(LoaderError::BadEntry(entry));
    }
    Ok(img)
}

impl ImageLayout {
    /// Whether `addr` lies inside one of the segments.
    pub fn contains(&self, addr: u64) -> bool {
        self.segments.iter().any(|&(s, e)| (s..e).contains(&addr))
    }
}

/// Loads the kernel ELF at `path` into guest memory.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    path: &Path,
) -> Result<LoadedKernel, LoaderError> {
    let read_err = |source| LoaderError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let headers = file.try_clone().map_err(read_err)?;
    load_image(
        mem,
        ram_size,
        path,
        &|buf, off| headers.read_exact_at(buf, off),
        &mut file,
    )
}

/// Loads a kernel ELF image into guest memory: [`check_image`] first (through `read_at`),
/// then linux-loader (through `image`, the same bytes). `path` names the image in errors.
pub fn load_image<F: Read + ReadVolatile + Seek>(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    path: &Path,
    read_at: &dyn Fn(&mut [u8], u64) -> std::io::Result<()>,
    image: &mut F,
) -> Result<LoadedKernel, LoaderError> {
    let img = check_image(path, read_at, ram_size)?;
    let (start, end) = img.span();
    let result = Elf::load(
        mem,
        None,
        image,
        Some(GuestAddress(layout::KERNEL_MIN_ADDR)),
    )
    .map_err(|source| LoaderError::Load {
        path: path.to_owned(),
        source,
    })?;
    let entry = result.kernel_load.0;
    if !img.contains(entry) {
        return Err(LoaderError::BadEntry(entry));
    }
    Ok(LoadedKernel { entry, start, end })
}

/// Writes the command line at CMDLINE_ADDR and returns its length.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<u64, LoaderError> {
    let bytes = cmdline.as_bytes();
    if bytes.len() as u64 > layout::CMDLINE_MAX {
        return Err(LoaderError::CmdlineTooLong(bytes.len()));
    }
    mem.write_slice(bytes, GuestAddress(layout::CMDLINE_ADDR))
        .map_err(|source| LoaderError::GuestWrite {
            what: "the command line",
            source,
        })?;
    Ok(bytes.len() as u64)
}

/// Writes the boot-info block at BOOT_INFO_ADDR.
pub fn write_boot_info(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<(), LoaderError> {
    mem.write_slice(&info.encode(), GuestAddress(layout::BOOT_INFO_ADDR))
        .map_err(|source| LoaderError::GuestWrite {
            what: "the boot info",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvgpu_abi::boot_info::BOOT_INFO_SIZE;
    use std::io::Write;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), layout::RAM_MIN as usize)]).unwrap()
    }

    /// A minimal ELF64: one PT_LOAD of `code` at `paddr` with `bss` extra bytes, entry at it.
    fn tiny_elf(paddr: u64, code: &[u8], bss: u64) -> Vec<u8> {
        elf(paddr, &[(paddr, code, code.len() as u64 + bss)])
    }

    /// An ELF64 with entry `entry` and PT_LOAD segments `(paddr, file bytes, p_memsz)`.
    pub(crate) fn elf(entry: u64, segs: &[(u64, &[u8], u64)]) -> Vec<u8> {
        let n = segs.len();
        let mut f = vec![0u8; EHDR_SIZE + n * PHDR_SIZE];
        f[0..4].copy_from_slice(&ELF_MAGIC);
        f[4] = ELFCLASS64;
        f[5] = ELFDATA2LSB;
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes()); // e_entry
        f[32..40].copy_from_slice(&(EHDR_SIZE as u64).to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
        f[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        f[56..58].copy_from_slice(&(n as u16).to_le_bytes());
        for (i, (paddr, code, memsz)) in segs.iter().enumerate() {
            let p = EHDR_SIZE + i * PHDR_SIZE;
            let off = f.len() as u64;
            f[p..p + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            f[p + 4..p + 8].copy_from_slice(&7u32.to_le_bytes());
            f[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
            f[p + 16..p + 24].copy_from_slice(&paddr.to_le_bytes());
            f[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
            f[p + 32..p + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
            f[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
            f.extend_from_slice(code);
        }
        f
    }

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let p = std::env::temp_dir().join(format!("pvgpu-loader-{}-{name}", std::process::id()));
        let mut f = File::create(&p).unwrap();
        f.write_all(bytes).unwrap();
        p
    }

    #[test]
    fn loads_an_elf_and_reports_its_span() {
        let m = mem();
        let p = temp_file("ok", &tiny_elf(0x20_0000, &[0xf4, 0xeb, 0xfe], 0x1000));
        let k = load_kernel(&m, layout::RAM_MIN, &p).unwrap();
        assert_eq!(
            k,
            LoadedKernel {
                entry: 0x20_0000,
                start: 0x20_0000,
                end: 0x20_1003
            }
        );
        let mut code = [0u8; 3];
        m.read_slice(&mut code, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(code, [0xf4, 0xeb, 0xfe]);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn refuses_non_elf_and_misplaced_segments() {
        let m = mem();
        let p = temp_file("text", b"#!/bin/sh\necho not a kernel\n");
        assert!(matches!(
            load_kernel(&m, layout::RAM_MIN, &p),
            Err(LoaderError::NotElf { .. })
        ));
        std::fs::remove_file(p).unwrap();
        let p = temp_file("empty", b"");
        assert!(matches!(
            load_kernel(&m, layout::RAM_MIN, &p),
            Err(LoaderError::NotElf { .. })
        ));
        std::fs::remove_file(p).unwrap();
        let p = temp_file("low", &tiny_elf(0x1000, &[0xf4], 0));
        assert!(matches!(
            load_kernel(&m, layout::RAM_MIN, &p),
            Err(LoaderError::SegmentOutOfRange { .. })
        ));
        std::fs::remove_file(p).unwrap();
        let p = temp_file("high", &tiny_elf(layout::RAM_MIN - 1, &[0xf4, 0xf4], 0));
        assert!(matches!(
            load_kernel(&m, layout::RAM_MIN, &p),
            Err(LoaderError::SegmentOutOfRange { .. })
        ));
        std::fs::remove_file(p).unwrap();
        assert!(matches!(
            load_kernel(&m, layout::RAM_MIN, Path::new("/nonexistent/kernel")),
            Err(LoaderError::Read { .. })
        ));
    }

    /// Three shapes linux-loader would load although our checks did not cover them: each is
    /// refused with its own error, and guest memory stays untouched.
    #[test]
    fn refuses_segments_and_entries_the_checks_did_not_cover() {
        let load = |name: &str, image: Vec<u8>| {
            let m = mem();
            let p = temp_file(name, &image);
            let r = load_kernel(&m, layout::RAM_MIN, &p);
            std::fs::remove_file(p).unwrap();
            let mut low = vec![0u8; 0x1000];
            m.read_slice(&mut low, GuestAddress(0)).unwrap();
            assert!(
                low.iter().all(|&b| b == 0),
                "{name}: loaded below the kernel area"
            );
            r
        };
        let code = [0x90u8; 64];
        // p_memsz 0 with file bytes, below the kernel area: linux-loader would copy them.
        let r = load(
            "memsz0",
            elf(0x20_0000, &[(0x20_0000, &code, 0x1000), (0x0, &code, 0)]),
        );
        assert!(
            matches!(
                r,
                Err(LoaderError::EmptySegmentWithData {
                    start: 0,
                    filesz: 64
                })
            ),
            "{r:?}"
        );
        // p_filesz > p_memsz: the bytes past p_memsz lie outside the checked span.
        let r = load("filesz", elf(0x20_0000, &[(0x20_0000, &code, 16)]));
        assert!(
            matches!(
                r,
                Err(LoaderError::FileLargerThanMemory {
                    filesz: 64,
                    memsz: 16,
                    ..
                })
            ),
            "{r:?}"
        );
        // The entry point in the gap between two segments.
        let r = load(
            "gap",
            elf(
                0x30_0000,
                &[(0x20_0000, &code, 0x1000), (0x40_0000, &code, 0x1000)],
            ),
        );
        assert!(matches!(r, Err(LoaderError::BadEntry(0x30_0000))), "{r:?}");
        // Each error is one line.
        for e in [
            LoaderError::EmptySegmentWithData {
                start: 0,
                filesz: 64,
            },
            LoaderError::FileLargerThanMemory {
                start: 0x20_0000,
                filesz: 64,
                memsz: 16,
            },
            LoaderError::BadEntry(0x30_0000),
        ] {
            assert!(!e.to_string().contains('\n'));
        }
        // Two segments with the entry in the second one load.
        let ok = load(
            "two",
            elf(
                0x40_0010,
                &[(0x20_0000, &code, 0x1000), (0x40_0000, &code, 0x1000)],
            ),
        )
        .unwrap();
        assert_eq!(
            (ok.entry, ok.start, ok.end),
            (0x40_0010, 0x20_0000, 0x40_1000)
        );
    }

    /// The fuzz target's seed corpus (vmm/fuzz/seeds/make_elf_loader_seeds.py): each seed,
    /// loaded into the target's 4 MiB guest, gets the outcome its name starts with, and
    /// writes nothing outside the span a load reports (nothing at all when our checks refuse).
    #[test]
    fn every_seed_gets_the_outcome_its_name_says() {
        const RAM: u64 = 4 << 20;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/elf_loader");
        let mut seen = std::collections::BTreeMap::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let data = std::fs::read(&path).unwrap();
            let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
            let read_at = |buf: &mut [u8], off: u64| -> std::io::Result<()> {
                let src = usize::try_from(off)
                    .ok()
                    .and_then(|o| data.get(o..o.checked_add(buf.len())?))
                    .ok_or(std::io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(src);
                Ok(())
            };
            let r = load_image(
                &m,
                RAM,
                &path,
                &read_at,
                &mut std::io::Cursor::new(&data[..]),
            );
            let outcome = match &r {
                Ok(_) => "ok",
                Err(LoaderError::NotElf { .. }) => "not-elf",
                Err(LoaderError::SegmentOutOfRange { .. }) => "segment-out-of-range",
                Err(LoaderError::EmptySegmentWithData { .. }) => "empty-segment-with-data",
                Err(LoaderError::FileLargerThanMemory { .. }) => "file-larger-than-memory",
                Err(LoaderError::BadEntry(_)) => "bad-entry",
                Err(LoaderError::Load { .. }) => "load",
                Err(e) => panic!("{name}: unexpected {e}"),
            };
            assert!(name.starts_with(&format!("{outcome}-")), "{name}: {r:?}");
            // Where the load may have written: the span it reports; after linux-loader's
            // refusal, the segments it copied before (inside the kernel area); after ours,
            // nowhere.
            let (lo, hi) = match &r {
                Ok(k) => (k.start, k.end),
                Err(LoaderError::Load { .. }) => (layout::KERNEL_MIN_ADDR, RAM),
                Err(_) => (RAM, RAM),
            };
            let mut all = vec![0u8; RAM as usize];
            m.read_slice(&mut all, GuestAddress(0)).unwrap();
            let outside = |a: usize| a < lo as usize || a >= hi as usize;
            let stray = all
                .iter()
                .enumerate()
                .position(|(a, &b)| b != 0 && outside(a));
            assert!(
                stray.is_none(),
                "{name}: written at {stray:#x?} outside {lo:#x}..{hi:#x}"
            );
            if name.starts_with("ok-") {
                assert!(all.iter().any(|&b| b != 0), "{name}: nothing loaded");
            }
            *seen.entry(outcome).or_insert(0) += 1;
        }
        // Every outcome is seeded, valid images most.
        assert_eq!(seen.len(), 7, "{seen:?}");
        assert!(seen["ok"] >= 15, "{seen:?}");
    }

    #[test]
    fn writes_cmdline_and_boot_info() {
        let m = mem();
        assert_eq!(write_cmdline(&m, "exit 7").unwrap(), 6);
        let mut b = [0u8; 6];
        m.read_slice(&mut b, GuestAddress(layout::CMDLINE_ADDR))
            .unwrap();
        assert_eq!(&b, b"exit 7");
        let long = "y".repeat(layout::CMDLINE_MAX as usize + 1);
        assert!(matches!(
            write_cmdline(&m, &long),
            Err(LoaderError::CmdlineTooLong(_))
        ));
        assert!(write_cmdline(&m, &long[1..]).is_ok());

        let info = BootInfo {
            num_cpus: 2,
            ram_size: layout::RAM_MIN,
            cmdline_addr: layout::CMDLINE_ADDR,
            cmdline_len: 6,
            kernel_start: 0x20_0000,
            kernel_end: 0x20_1000,
            tsc_khz: 1234,
            ..Default::default()
        };
        write_boot_info(&m, &info).unwrap();
        let mut raw = [0u8; BOOT_INFO_SIZE];
        m.read_slice(&mut raw, GuestAddress(layout::BOOT_INFO_ADDR))
            .unwrap();
        assert_eq!(BootInfo::decode(&raw), Ok(info));
    }
}
