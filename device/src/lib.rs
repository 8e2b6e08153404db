//! The pvgpu GPU memory device model: a virtio-gpu device on the virtio-mmio transport whose
//! extension commands manage GPU memory objects that move between guest pages and VRAM, and
//! whose CLEAN command gives the guest pages of an object back to the host.
//!
//! It does not depend on KVM: the VMM plugs it in through [`PvgpuDevice`] (register window,
//! queue processing, VRAM memfd, [`InterruptSink`], [`GuestRamPunch`]). The wire protocol is
//! `pvgpu_abi::protocol`, shared with the guest.
//!
//! One concern per module: [`transport`] (registers), [`queue`] (descriptor chains),
//! [`commands`] (requests → responses), [`object`] (life cycle), [`vram`] (VRAM memory and
//! copies), [`vram_alloc`] (VRAM ranges), [`job`] (long data work in slices), [`guest_ram`] (RAM ranges, page lists, punching), [`backing_index`] (which pages back
//! which object),
//! [`stats`] (counters), [`memfd`], [`backend`] (anonymous or shared host memory for guest RAM
//! and VRAM), [`page_mover`] (moving pages instead of copying them), [`uffd`] and
//! [`uffd_sys`] (userfaultfd).

pub mod backend;
pub mod backing_index;
pub mod commands;
pub mod device;
pub mod display;
pub mod edid;
pub mod guest_ram;
pub mod job;
pub mod memfd;
pub mod object;
pub mod page_mover;
pub mod queue;
pub mod sim_driver;
pub mod stats;
pub mod transport;
pub mod uffd;
pub mod uffd_sys;
pub mod used_watch;
pub mod vram;
pub mod vram_alloc;

pub use backend::{HostMemory, MemoryBackend};
pub use commands::{CommandEngine, CommandError, DeviceConfig};
pub use device::{DeviceError, InterruptSink, PvgpuDevice, QUEUE_NOTIFY_OFFSET};
pub use display::{DisplayMode, ScanoutImage};
pub use guest_ram::{GuestRamPunch, RamRanges};
pub use page_mover::ZeroCopy;
pub use stats::DeviceStats;
pub use used_watch::UsedWatch;
