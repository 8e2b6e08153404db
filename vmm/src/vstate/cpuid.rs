//! Guest CPUID: what KVM supports, with each vCPU's APIC id filled in.
//!
//! Setting CPUID is required on PVM: without it EFER.SCE and other bits are reserved and
//! writing them faults.

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};

/// Errors setting CPUID.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// KVM_GET_SUPPORTED_CPUID failed.
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    GetSupported(kvm_ioctls::Error),
    /// KVM_SET_CPUID2 failed.
    #[error("KVM_SET_CPUID2 on vCPU {index} failed: {source}")]
    Set {
        /// The vCPU.
        index: u32,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
}

/// What the host KVM supports.
pub fn supported(kvm: &Kvm) -> Result<CpuId, CpuidError> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(CpuidError::GetSupported)
}

/// `base` with the APIC id of vCPU `index`: leaf 1 EBX[31:24], and the x2APIC id (EDX) of
/// every sub-leaf of the topology leaves 0xb and 0x1f.
pub fn for_vcpu(base: &CpuId, index: u32) -> CpuId {
    let mut c = base.clone();
    for e in c.as_mut_slice() {
        match e.function {
            1 => e.ebx = (e.ebx & 0x00ff_ffff) | ((index & 0xff) << 24),
            0xb | 0x1f => e.edx = index,
            _ => {}
        }
    }
    c
}

/// Sets the CPUID of vCPU `index`.
pub fn set(vcpu: &VcpuFd, base: &CpuId, index: u32) -> Result<(), CpuidError> {
    vcpu.set_cpuid2(&for_vcpu(base, index))
        .map_err(|source| CpuidError::Set { index, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn apic_ids_are_patched() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 0,
                eax: 0xd,
                ebx: 0x1234,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xab12_3456,
                ecx: 0x8000_0000,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 0,
                edx: 0,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                edx: 0,
                ..Default::default()
            },
        ];
        let base = CpuId::from_entries(&entries).unwrap();
        let c = for_vcpu(&base, 5);
        let s = c.as_slice();
        assert_eq!(s[0].ebx, 0x1234);
        assert_eq!(s[1].ebx, 0x0512_3456);
        assert_eq!(s[1].ecx, 0x8000_0000);
        assert_eq!((s[2].edx, s[3].edx), (5, 5));
        // The base is untouched.
        assert_eq!(base.as_slice()[1].ebx, 0xab12_3456);
    }
}
