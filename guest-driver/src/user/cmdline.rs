//! The guest command line: the VMM's guest arguments, separated by spaces.

use alloc::vec::Vec;

use pvgpu_abi::boot_info::BootInfo;

/// The command line split into words.
pub fn args(info: &BootInfo) -> Vec<&'static str> {
    let len = info.cmdline_len.min(pvgpu_abi::layout::CMDLINE_MAX) as usize;
    // SAFETY: the VMM wrote `len` bytes at cmdline_addr, a read-only page for ring 3 that
    // never changes.
    let raw = unsafe { core::slice::from_raw_parts(info.cmdline_addr as *const u8, len) };
    core::str::from_utf8(raw)
        .unwrap_or("")
        .split_ascii_whitespace()
        .collect()
}
