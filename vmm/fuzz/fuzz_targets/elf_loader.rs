//! Fuzzes the kernel ELF loader (our header checks, then linux-loader) with arbitrary
//! images. It must never panic, and whatever it accepts or refuses, it must never write
//! guest memory outside the kernel area: below `KERNEL_MIN_ADDR` nothing, and after a
//! successful load nothing outside the span it reports; the entry point lies in that span.
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

fn zero(m: &GuestMemoryMmap, from: u64, to: u64) -> bool {
    let mut buf = vec![0u8; (to.saturating_sub(from)) as usize];
    m.read_slice(&mut buf, GuestAddress(from)).expect("read");
    buf.iter().all(|&b| b == 0)
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
    assert!(zero(m, 0, KERNEL_MIN_ADDR), "written below the kernel area: {r:?}");
    if let Ok(k) = r {
        assert!(KERNEL_MIN_ADDR <= k.start && k.start < k.end && k.end <= RAM, "{k:?}");
        assert!((k.start..k.end).contains(&k.entry), "{k:?}");
        assert!(zero(m, k.end, RAM), "written past the span: {k:?}");
        assert!(zero(m, KERNEL_MIN_ADDR, k.start), "written before the span: {k:?}");
    }
    // Clean up for the next input.
    let zeros = vec![0u8; (RAM - KERNEL_MIN_ADDR) as usize];
    m.write_slice(&zeros, GuestAddress(KERNEL_MIN_ADDR)).expect("write");
});
