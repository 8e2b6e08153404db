//! pvgpu's VMM: a small KVM virtual machine monitor that boots the pvgpu guest kernel.
//!
//! The binary (`src/main.rs`) is a thin CLI over [`vstate::vm::run`], [`tools::bench`] and
//! [`tools::demo`]; the integration tests reuse this library. The modules, grouped by concern:
//!
//! - [`cli`] and [`size`]: the command line;
//! - [`vstate`]: the VM itself: guest RAM, kernel loading, long mode, CPUID, vCPUs, and `vm`,
//!   which puts a run together;
//! - [`devices`]: the buses and what sits on them: serial, exit and phase ports, the GPU;
//! - [`run`]: the event loop, how a run ends, statistics and failure reports;
//! - [`tools`]: `pvgpu bench`, `pvgpu demo`, the plot and the measurement helpers;
//! - [`seccomp`]: the per-thread seccomp allow-lists and the SIGSYS report;
//! - [`atomic_file`]: output files written through a temporary name (never half-written);
//! - [`error`]: the VMM's error type.

pub mod atomic_file;
pub mod cli;
pub mod devices;
pub mod error;
pub mod run;
pub mod seccomp;
pub mod size;
pub mod tools;
pub mod vhost_backend;
pub mod vstate;

pub use error::VmmError;
pub use vstate::vm::{run_with_output, RunOutcome};
