//! The virtual machine's state: guest RAM ([`guest_ram`]), the kernel loader ([`loader`]: ELF,
//! command line, boot info), long mode ([`long_mode`]: GDT, page tables, special registers),
//! [`cpuid`], the vCPUs ([`vcpu`]: threads, run loop, exits, kicks), and [`vm`], which puts a
//! whole run together.

pub mod cpuid;
pub mod guest_ram;
pub mod loader;
pub mod long_mode;
pub mod vcpu;
pub mod vm;
