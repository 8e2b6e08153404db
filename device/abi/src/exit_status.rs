//! Exit statuses of `pvgpu run`: the guest's own (written to the exit device, the VMM exits
//! with them unchanged) and the VMM's, for a run the guest did not end itself. Defined once,
//! for the guest, the VMM and the integration tests.
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | every check passed ([`OK`]) |
//! | 1 | a check failed ([`FAILED`]); also an error of the VMM itself ([`VMM_ERROR`]) |
//! | 2 | a bad guest command line ([`USAGE`]); also a bad `pvgpu` command line ([`VMM_USAGE`]) |
//! | 64 + vector | a CPU exception the guest could not handle ([`guest_fault`]) |
//! | 100 | a fatal guest error, no exception behind it: bad boot info, panic ([`KERNEL_ERROR`]) |
//! | 120 | KVM internal error, e.g. an emulation failure ([`INTERNAL_ERROR`]) |
//! | 121 | triple fault ([`TRIPLE_FAULT`]) |
//! | 122 | failed VM entry ([`FAIL_ENTRY`]) |
//! | 123 | any other unexpected exit, or every vCPU halted ([`UNEXPECTED`]) |
//! | 124 | `--timeout` expired ([`TIMEOUT`]) |

/// Guest: every check passed.
pub const OK: u8 = 0;
/// Guest: a check failed.
pub const FAILED: u8 = 1;
/// Guest: a command line the guest does not understand.
pub const USAGE: u8 = 2;
/// Guest: a CPU exception at ring 0, or one at ring 3 nobody handled; the vector is added to
/// this base, so a #PF (14) exits with 78 (see [`guest_fault`]).
pub const GUEST_FAULT_BASE: u8 = 64;
/// Guest: a fatal error with no CPU exception behind it (bad boot info, panic).
pub const KERNEL_ERROR: u8 = 100;

/// VMM: an error of the VMM itself (no `/dev/kvm`, a bad kernel, bad sizes...).
pub const VMM_ERROR: u8 = 1;
/// VMM: a command line `pvgpu` does not understand (clap's usage error).
pub const VMM_USAGE: u8 = 2;
/// VMM: KVM_EXIT_INTERNAL_ERROR (suberror 1 is an emulation failure).
pub const INTERNAL_ERROR: u8 = 120;
/// VMM: a triple fault (KVM_EXIT_SHUTDOWN).
pub const TRIPLE_FAULT: u8 = 121;
/// VMM: KVM_EXIT_FAIL_ENTRY.
pub const FAIL_ENTRY: u8 = 122;
/// VMM: any other unexpected exit, a failed KVM_RUN, or every vCPU halting.
pub const UNEXPECTED: u8 = 123;
/// VMM: `--timeout` expired.
pub const TIMEOUT: u8 = 124;

/// The guest's status for CPU exception `vector` (0..=31; see [`vector`]).
pub const fn guest_fault(vector: u8) -> u8 {
    GUEST_FAULT_BASE + (vector & 31)
}

/// The CPU exception vectors the guest reports most.
pub mod vector {
    /// #BP, breakpoint (`int3`).
    pub const BP: u8 = 3;
    /// #UD, invalid opcode (`ud2`: also the guest's system call).
    pub const UD: u8 = 6;
    /// #DF, double fault.
    pub const DF: u8 = 8;
    /// #GP, general protection.
    pub const GP: u8 = 13;
    /// #PF, page fault.
    pub const PF: u8 = 14;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_and_vmm_statuses_do_not_collide() {
        // Every guest fault status lies below the guest's own fatal error and the VMM's range.
        const { assert!(guest_fault(31) < KERNEL_ERROR) };
        const { assert!(KERNEL_ERROR < INTERNAL_ERROR) };
        assert_eq!(guest_fault(vector::PF), 78);
        let vmm = [
            INTERNAL_ERROR,
            TRIPLE_FAULT,
            FAIL_ENTRY,
            UNEXPECTED,
            TIMEOUT,
        ];
        assert_eq!(vmm, [120, 121, 122, 123, 124]);
        for s in [OK, FAILED, USAGE, GUEST_FAULT_BASE, KERNEL_ERROR] {
            assert!(!vmm.contains(&s));
        }
    }
}
