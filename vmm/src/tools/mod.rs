//! The tools built on the VMM: `pvgpu bench` ([`bench`]), `pvgpu demo` ([`demo`]), the
//! host-memory plot ([`plot`]) and the statistics they share ([`measure`]: percentiles,
//! ratios).

pub mod bench;
pub mod demo;
pub mod measure;
pub mod plot;
