//! The contract between the pvgpu host (VMM and device model) and the pvgpu guest kernel.
//!
//! Everything both sides must agree on is defined here exactly once: the guest-physical
//! layout ([`layout`]), the boot-info block the VMM hands the guest ([`boot_info`]), the
//! device's wire protocol ([`protocol`]) and its checksum ([`crc32c`]). The crate is `no_std`
//! so the guest kernel can use it; with the `host` feature it also implements vm-memory's
//! `ByteValued` for the plain structs.
#![no_std]

pub mod boot_info;
pub mod crc32c;
pub mod exit_status;
pub mod layout;
pub mod pattern;
pub mod protocol;
#[cfg(feature = "alloc")]
pub mod request;
pub mod virtio_mmio;

#[cfg(feature = "alloc")]
extern crate alloc;

/// Implements vm-memory's `ByteValued` for plain `#[repr(C)]` structs (host side only).
#[macro_export]
#[doc(hidden)]
macro_rules! impl_byte_valued {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "host")]
            // SAFETY: the type is `#[repr(C)]`, made only of integers and arrays of integers,
            // has no padding (pinned by the layout tests) and every bit pattern is valid.
            unsafe impl vm_memory::ByteValued for $t {}
        )*
    };
}
