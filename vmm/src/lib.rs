//! pvgpu's VMM: a small KVM virtual machine monitor that boots the pvgpu guest kernel.
//!
//! The binary (`src/main.rs`) is a thin CLI over [`vm::run`], [`bench`] and [`demo`]; the
//! integration tests reuse this library.
//!
//! One concern per module: [`cli`] and [`size`] (command line), [`guest_ram`] (memfd-backed
//! RAM), [`loader`] (ELF, command line, boot info), [`long_mode`] (GDT, page tables, special
//! registers), [`cpuid`], [`vcpu`] (threads, run loop, exits, kicks), [`bus`] (port I/O and
//! MMIO dispatch), [`serial`], [`exit_device`] (exit and phase ports), [`gpu`] (the pvgpu
//! device wired to KVM: MMIO window, ioeventfd, irqfd, VRAM memslot), [`event_loop`],
//! [`run_state`] (how a run ends, exit statuses), [`report`] (failure dumps), [`stats`],
//! [`error`], and [`vm`] which puts them together. On top: [`bench`] (`pvgpu bench`), [`demo`]
//! (`pvgpu demo`), [`plot`] (the host-memory PNG), [`screenshot`] (the scanout as a PNG) and
//! [`measure`] (percentiles, ratios).

pub mod bench;
pub mod bus;
pub mod cli;
pub mod cpuid;
pub mod demo;
pub mod error;
pub mod event_loop;
pub mod exit_device;
pub mod gpu;
pub mod guest_ram;
pub mod loader;
pub mod long_mode;
pub mod measure;
pub mod plot;
pub mod report;
pub mod run_state;
pub mod screenshot;
pub mod serial;
pub mod size;
pub mod stats;
pub mod vcpu;
pub mod vm;

pub use error::VmmError;
pub use vm::{run, run_with_output, RunOutcome};
