//! Fuzzes the kernel ELF loader (our header checks, then linux-loader) with arbitrary
//! images. It must never panic, and whatever it accepts or refuses, it must never write
//! guest memory outside the kernel area: below `KERNEL_MIN_ADDR` nothing, and after a
//! successful load nothing outside the span it reports; the entry point lies in that span.
//! Seed corpus: `vmm/fuzz/seeds/elf_loader/` (from `seeds/make_elf_loader_seeds.py`);
//! dictionary: `vmm/fuzz/elf_loader.dict` (see device/README.md, "The kernel ELF loader").
#![no_main]

use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pvgpu::vstate::loader::load_image;
use pvgpu_abi::layout::KERNEL_MIN_ADDR;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// A small guest: 4 MiB, the kernel area is [2 MiB, 4 MiB).
const RAM: u64 = 4 << 20;

fn mem() -> &'static GuestMemoryMmap {
    static MEM: OnceLock<GuestMemoryMmap> = OnceLock::new();
    MEM.get_or_init(|| {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).expect("guest memory")
    })
}

/// A page of zeros.
const ZEROS: [u8; 4096] = [0; 4096];

/// Whether guest memory `[from, to)` reads as zeros. A page at a time through one buffer, each
/// compared with memcmp: a byte loop (traced comparison by comparison under the fuzzer) and a
/// fresh 4 MiB buffer per input made each input take several milliseconds.
fn zero(m: &GuestMemoryMmap, from: u64, to: u64) -> bool {
    let mut buf = [0u8; ZEROS.len()];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        m.read_slice(&mut buf[..n], GuestAddress(at)).expect("read");
        if buf[..n] != ZEROS[..n] {
            return false;
        }
        at += n as u64;
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let m = mem();
    let read_at = |buf: &mut [u8], off: u64| -> std::io::Result<()> {
        let start = usize::try_from(off).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= data.len())
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&data[start..end]);
        Ok(())
    };
    let mut image = Cursor::new(data);
    let r = load_image(m, RAM, Path::new("fuzz-input"), &read_at, &mut image);
    assert!(
        zero(m, 0, KERNEL_MIN_ADDR),
        "written below the kernel area: {r:?}"
    );
    if let Ok(k) = r {
        assert!(
            KERNEL_MIN_ADDR <= k.start && k.start < k.end && k.end <= RAM,
            "{k:?}"
        );
        assert!((k.start..k.end).contains(&k.entry), "{k:?}");
        assert!(zero(m, k.end, RAM), "written past the span: {k:?}");
        assert!(
            zero(m, KERNEL_MIN_ADDR, k.start),
            "written before the span: {k:?}"
        );
    }
    // Clean up the kernel area for the next input (below it nothing was written: checked).
    for page in (KERNEL_MIN_ADDR..RAM).step_by(ZEROS.len()) {
        m.write_slice(&ZEROS, GuestAddress(page)).expect("write");
    }
});
