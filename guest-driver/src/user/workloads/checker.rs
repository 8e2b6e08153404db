//! Counting and reporting checks, for the workloads made of many: `selftest` (one checker per
//! vCPU) and `hostile`. A check that fails prints one line, `<label> FAIL: <what>`; the caller
//! prints the summary from the counts.

use alloc::string::String;
use core::fmt;

/// Counts passed and failed checks and reports each failure.
pub struct Checker {
    label: String,
    passed: u32,
    failed: u32,
}

impl Checker {
    /// A checker whose failure lines start with `label`.
    pub fn new(label: String) -> Checker {
        Checker {
            label,
            passed: 0,
            failed: 0,
        }
    }

    /// Records one check.
    pub fn check(&mut self, ok: bool, what: fmt::Arguments) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            crate::println!("{} FAIL: {}", self.label, what);
        }
    }

    /// Checks that passed so far.
    pub fn passed(&self) -> u32 {
        self.passed
    }

    /// Checks that failed so far.
    pub fn failed(&self) -> u32 {
        self.failed
    }
}

/// `check!(checker, condition, "what", args...)`.
#[macro_export]
macro_rules! check {
    ($c:expr, $cond:expr, $($fmt:tt)*) => { $c.check($cond, format_args!($($fmt)*)) };
}
