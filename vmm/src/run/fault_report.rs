//! Failure reports: what a vCPU looked like when the guest failed.
//!
//! Printed to stderr for emulation failures, triple faults, failed entries and unexpected
//! exits: the reason, the vCPU, RIP, the general registers, the control registers, CS/SS and
//! the instruction bytes at RIP.

use std::fmt;

use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// How many instruction bytes to show.
pub const CODE_BYTES: usize = 16;

/// The bytes at RIP, or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeBytes {
    /// Read from guest-physical `gpa`.
    Read {
        /// Where RIP translated to.
        gpa: u64,
        /// The bytes (fewer than CODE_BYTES at the end of RAM).
        bytes: Vec<u8>,
    },
    /// Not available.
    Unavailable(String),
}

/// A snapshot of a failed vCPU.
#[derive(Debug, Clone)]
pub struct FaultReport {
    /// The vCPU index.
    pub vcpu: u32,
    /// What happened.
    pub what: String,
    /// Extra lines (e.g. KVM's internal-error data).
    pub details: Vec<String>,
    /// General registers, if they could be read.
    pub regs: Result<kvm_regs, String>,
    /// Special registers, if they could be read.
    pub sregs: Result<kvm_sregs, String>,
    /// The instruction bytes at RIP.
    pub code: CodeBytes,
}

impl FaultReport {
    /// Reads the registers and the code at RIP of `fd`.
    pub fn capture(
        fd: &VcpuFd,
        mem: &GuestMemoryMmap,
        vcpu: u32,
        what: String,
        details: Vec<String>,
    ) -> Self {
        let regs = fd.get_regs().map_err(|e| e.to_string());
        let sregs = fd.get_sregs().map_err(|e| e.to_string());
        let code = match &regs {
            Ok(r) => read_code(fd, mem, r.rip),
            Err(e) => CodeBytes::Unavailable(format!("no registers: {e}")),
        };
        FaultReport {
            vcpu,
            what,
            details,
            regs,
            sregs,
            code,
        }
    }
}

/// Translates `rip` with KVM_TRANSLATE and reads CODE_BYTES bytes there.
fn read_code(fd: &VcpuFd, mem: &GuestMemoryMmap, rip: u64) -> CodeBytes {
    let gpa = match fd.translate_gva(rip) {
        Ok(t) if t.valid != 0 => t.physical_address,
        Ok(_) => return CodeBytes::Unavailable(format!("RIP {rip:#x} is not mapped")),
        Err(e) => return CodeBytes::Unavailable(format!("cannot translate RIP {rip:#x}: {e}")),
    };
    read_guest_bytes(mem, gpa)
}

/// Reads up to CODE_BYTES bytes at `gpa`, stopping at the end of guest memory.
pub fn read_guest_bytes(mem: &GuestMemoryMmap, gpa: u64) -> CodeBytes {
    let mut bytes = Vec::with_capacity(CODE_BYTES);
    for i in 0..CODE_BYTES as u64 {
        let Some(a) = gpa.checked_add(i) else { break };
        match mem.read_obj::<u8>(GuestAddress(a)) {
            Ok(b) => bytes.push(b),
            Err(_) => break,
        }
    }
    if bytes.is_empty() {
        CodeBytes::Unavailable(format!("{gpa:#x} is outside guest RAM"))
    } else {
        CodeBytes::Read { gpa, bytes }
    }
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pvgpu: guest failure on vCPU {}: {}",
            self.vcpu, self.what
        )?;
        for d in &self.details {
            writeln!(f, "  {d}")?;
        }
        match &self.regs {
            Ok(r) => {
                writeln!(f, "  rip={:#018x} rflags={:#010x}", r.rip, r.rflags)?;
                let gprs = [
                    ("rax", r.rax),
                    ("rbx", r.rbx),
                    ("rcx", r.rcx),
                    ("rdx", r.rdx),
                    ("rsi", r.rsi),
                    ("rdi", r.rdi),
                    ("rbp", r.rbp),
                    ("rsp", r.rsp),
                    ("r8", r.r8),
                    ("r9", r.r9),
                    ("r10", r.r10),
                    ("r11", r.r11),
                    ("r12", r.r12),
                    ("r13", r.r13),
                    ("r14", r.r14),
                    ("r15", r.r15),
                ];
                for row in gprs.chunks(4) {
                    let line: Vec<String> = row
                        .iter()
                        .map(|(n, v)| format!("{n:>3}={v:#018x}"))
                        .collect();
                    writeln!(f, "  {}", line.join(" "))?;
                }
            }
            Err(e) => writeln!(f, "  registers unavailable: {e}")?,
        }
        match &self.sregs {
            Ok(s) => {
                writeln!(
                    f,
                    "  cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                    s.cr0, s.cr2, s.cr3, s.cr4, s.efer
                )?;
                writeln!(
                    f,
                    "  cs={:#06x} (dpl {}, l {}) ss={:#06x} gdt={:#x}/{:#x} idt={:#x}/{:#x}",
                    s.cs.selector,
                    s.cs.dpl,
                    s.cs.l,
                    s.ss.selector,
                    s.gdt.base,
                    s.gdt.limit,
                    s.idt.base,
                    s.idt.limit
                )?;
            }
            Err(e) => writeln!(f, "  special registers unavailable: {e}")?,
        }
        match &self.code {
            CodeBytes::Read { gpa, bytes } => {
                let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write!(f, "  code at rip (gpa {gpa:#x}): {}", hex.join(" "))
            }
            CodeBytes::Unavailable(why) => write!(f, "  code at rip: unavailable ({why})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_everything() {
        let regs = kvm_regs {
            rip: 0x20_0010,
            rax: 1,
            r15: 0xdead,
            rflags: 2,
            ..Default::default()
        };
        let mut sregs = kvm_sregs {
            cr0: 0x8005_0033,
            ..Default::default()
        };
        sregs.cs.selector = 8;
        sregs.ss.selector = 0x10;
        let r = FaultReport {
            vcpu: 1,
            what: "triple fault (KVM_EXIT_SHUTDOWN)".into(),
            details: vec!["suberror 1".into()],
            regs: Ok(regs),
            sregs: Ok(sregs),
            code: CodeBytes::Read {
                gpa: 0x20_0010,
                bytes: vec![0x0f, 0x0b],
            },
        };
        let s = r.to_string();
        for want in [
            "vCPU 1: triple fault",
            "suberror 1",
            "rip=0x0000000000200010",
            "rax=0x0000000000000001",
            "r15=0x000000000000dead",
            "cr0=0x80050033",
            "cs=0x0008",
            "ss=0x0010",
            "code at rip (gpa 0x200010): 0f 0b",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
    }

    #[test]
    fn code_reads_stop_at_the_end_of_ram() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        m.write_slice(&[0x90; 4], GuestAddress(0xffc)).unwrap();
        assert_eq!(
            read_guest_bytes(&m, 0xffc),
            CodeBytes::Read {
                gpa: 0xffc,
                bytes: vec![0x90; 4]
            }
        );
        assert!(matches!(
            read_guest_bytes(&m, 0x1000),
            CodeBytes::Unavailable(_)
        ));
        assert!(matches!(
            read_guest_bytes(&m, u64::MAX),
            CodeBytes::Unavailable(_)
        ));
    }
}
