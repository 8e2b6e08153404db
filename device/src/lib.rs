//! The pvgpu device model: host memory files, and (with the device-model issue) the
//! virtio-mmio transport, VRAM, objects and commands. It does not depend on KVM.

pub mod memfd;
