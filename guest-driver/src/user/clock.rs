//! Time for ring 3: the TSC, scaled by the frequency the VMM put in the boot info.

/// Raw TSC.
pub fn ticks() -> u64 {
    // SAFETY: rdtsc only reads the time-stamp counter (allowed at ring 3: CR4.TSD is clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC ticks per microsecond (a 1 GHz guess if the VMM did not say).
fn ticks_per_us() -> u64 {
    match super::boot_info().tsc_khz {
        0 => 1000,
        khz => (khz / 1000).max(1),
    }
}

/// Microseconds since an earlier [`ticks`] reading.
pub fn us_since(start: u64) -> u64 {
    ticks().wrapping_sub(start) / ticks_per_us()
}

/// Whether `us` microseconds have passed since `start`.
pub fn expired(start: u64, us: u64) -> bool {
    us_since(start) >= us
}
