//! The devices on the guest's buses: port I/O and MMIO dispatch ([`bus`]), the 16550 console
//! ([`serial`]), the exit, phase and used-wait ports ([`exit_port`], [`phase_port`],
//! [`used_wait_port`]), the GPU wired to KVM ([`gpu`]: MMIO window, ioeventfd, irqfd, VRAM
//! memslot, device thread), how a thread serves the GPU's queues in bounded steps
//! ([`queue_steps`], also the vhost-user backend's), the scanout written as a PNG
//! ([`screenshot`]), and the limit on warnings a guest can cause at will ([`warn_limit`]).

pub mod bus;
pub mod exit_port;
pub mod gpu;
pub mod gpu_vhost_user;
pub mod phase_port;
pub mod queue_steps;
pub mod screenshot;
pub mod serial;
pub mod used_wait_port;
pub mod warn_limit;
