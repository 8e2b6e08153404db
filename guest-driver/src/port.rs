//! The VMM ports: the serial console and the exit device (both rings), the phase marker and
//! the used-wait device (ring 3).
//!
//! The VMM's 16550 needs no set-up to transmit, and polling its line status before every
//! byte (what the uart_16550 crate does) costs two VM exits a byte: 120 µs at ring 3 on PVM.
//! So a whole buffer goes out with one `rep outsb`, which KVM turns into as few exits as it
//! can. The TSS I/O bitmap lets ring 3 use these ports directly.

use pvgpu_abi::layout::{EXIT_PORT, SERIAL_PORT};

/// Writes `bytes` to the serial console.
pub fn serial_write(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    // SAFETY: `rep outsb` reads `rcx` bytes from `rsi`, which is exactly `bytes`; port I/O to
    // the console has no memory effects. DF is clear (the ABI guarantees it).
    unsafe {
        core::arch::asm!(
            "rep outsb",
            in("dx") SERIAL_PORT,
            inout("rsi") bytes.as_ptr() => _,
            inout("rcx") bytes.len() => _,
            options(nostack, readonly, preserves_flags)
        );
    }
}

/// Tells the VMM the guest is done with `status`; the VMM stops every vCPU.
pub fn exit(status: u8) -> ! {
    // SAFETY: a write to the exit device; the VMM ends the VM on it.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") EXIT_PORT, in("al") status, options(nomem, nostack));
    }
    // The VMM stops us; should it not, spin rather than run on.
    loop {
        core::hint::spin_loop();
    }
}

/// Tells the VMM that guest phase `n` begins (it snapshots host memory).
pub fn phase(n: u32) {
    // SAFETY: a 4-byte write to the phase-marker device, which only records it.
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            in("dx") pvgpu_abi::layout::PHASE_PORT,
            in("eax") n,
            options(nomem, nostack, preserves_flags)
        );
    }
}

/// Blocks in the VMM until the device's control-queue used index reaches `target` (modulo
/// 2^16), or about a millisecond passes. A hint: the caller re-checks its used ring either way.
pub fn wait_used(target: u16) {
    // SAFETY: a 2-byte write to the used-wait device, which only waits.
    unsafe {
        core::arch::asm!(
            "out dx, ax",
            in("dx") pvgpu_abi::layout::USED_WAIT_PORT,
            in("ax") target,
            options(nomem, nostack, preserves_flags)
        );
    }
}

/// A `core::fmt::Write` that collects into a fixed buffer and flushes it to the serial port
/// when full and on drop, so a formatted line costs one `rep outsb`.
pub struct LineWriter {
    buf: [u8; 256],
    len: usize,
}

impl LineWriter {
    /// An empty writer.
    pub const fn new() -> Self {
        LineWriter {
            buf: [0; 256],
            len: 0,
        }
    }

    /// Sends what is buffered.
    pub fn flush(&mut self) {
        serial_write(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Default for LineWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Write for LineWriter {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.flush();
    }
}
