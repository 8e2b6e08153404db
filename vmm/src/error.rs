//! The VMM's top-level error: every module's error, each shown as one line.

use crate::cli::ConfigError;
use crate::devices::bus::BusError;
use crate::devices::gpu::GpuError;
use crate::run::event_loop::EventLoopError;
use crate::run::state::RunStateError;
use crate::run::stats::RunStatsError;
use crate::vstate::cpuid::CpuidError;
use crate::vstate::guest_ram::GuestRamError;
use crate::vstate::loader::LoaderError;
use crate::vstate::vcpu::VcpuError;

/// Anything that stops the VMM before or around the guest run (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// A bad command-line value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// /dev/kvm cannot be opened.
    #[error("{0}")]
    NoKvm(String),
    /// A KVM ioctl failed while building the VM.
    #[error("{what} failed: {source}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
    /// Guest RAM.
    #[error(transparent)]
    GuestRam(#[from] GuestRamError),
    /// Loading the guest.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Writing boot structures into guest memory.
    #[error("cannot write {what} into guest memory: {source}")]
    GuestMemory {
        /// What.
        what: &'static str,
        /// vm-memory's error.
        source: vm_memory::GuestMemoryError,
    },
    /// CPUID.
    #[error(transparent)]
    Cpuid(#[from] CpuidError),
    /// vCPU setup.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// Device wiring.
    #[error("device bus: {0}")]
    Bus(#[from] BusError),
    /// An eventfd could not be made.
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    /// The run state.
    #[error(transparent)]
    RunState(#[from] RunStateError),
    /// The event loop.
    #[error(transparent)]
    EventLoop(#[from] EventLoopError),
    /// The GPU device.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// The seccomp filters could not be set up.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// The vhost-user GPU (`--gpu-socket`) could not be attached.
    #[error(transparent)]
    GpuVhostUser(#[from] crate::devices::gpu_vhost_user::GpuVhostUserError),
    /// Host-memory accounting.
    #[error(transparent)]
    Stats(#[from] RunStatsError),
}

impl VmmError {
    /// Explains a failure to open /dev/kvm.
    pub fn no_kvm(e: &kvm_ioctls::Error) -> Self {
        let why = match e.errno() {
            libc::ENOENT => "/dev/kvm does not exist (is KVM enabled on this host?)".to_owned(),
            libc::EACCES | libc::EPERM => {
                "no permission to open /dev/kvm (run as root or join the kvm group)".to_owned()
            }
            _ => format!("cannot open /dev/kvm: {e}"),
        };
        VmmError::NoKvm(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_open_errors_are_explained() {
        let e = VmmError::no_kvm(&kvm_ioctls::Error::new(libc::ENOENT)).to_string();
        assert!(e.contains("/dev/kvm does not exist"), "{e}");
        let e = VmmError::no_kvm(&kvm_ioctls::Error::new(libc::EACCES)).to_string();
        assert!(e.contains("no permission"), "{e}");
        assert!(!e.contains('\n'));
    }
}
