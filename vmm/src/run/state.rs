//! How a run ends, and the state the vCPU threads, the devices and the event loop share to
//! decide it.
//!
//! The first cause to arrive wins: a guest exit-port write, a vCPU failure, the timeout, or
//! every vCPU halting. Deciding the end sets the stop flag (vCPU threads check it before
//! every KVM_RUN) and wakes the event loop through an eventfd.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use pvgpu_abi::exit_status;
use vmm_sys_util::eventfd::EventFd;

// The VMM's exit statuses, as i32 for `std::process::exit`; the numbers are defined once, in
// `pvgpu_abi::exit_status` (shared with the guest and the tests).
/// Exit status for a KVM internal error (e.g. an emulation failure).
pub const STATUS_INTERNAL_ERROR: i32 = exit_status::INTERNAL_ERROR as i32;
/// Exit status for a triple fault (KVM_EXIT_SHUTDOWN).
pub const STATUS_TRIPLE_FAULT: i32 = exit_status::TRIPLE_FAULT as i32;
/// Exit status for KVM_EXIT_FAIL_ENTRY.
pub const STATUS_FAIL_ENTRY: i32 = exit_status::FAIL_ENTRY as i32;
/// Exit status for any other unexpected exit, a failed KVM_RUN, or every vCPU halting.
pub const STATUS_UNEXPECTED: i32 = exit_status::UNEXPECTED as i32;
/// Exit status when `--timeout` expires.
pub const STATUS_TIMEOUT: i32 = exit_status::TIMEOUT as i32;
/// Exit status for an error of the VMM itself.
pub const STATUS_VMM_ERROR: i32 = exit_status::VMM_ERROR as i32;

/// A vCPU failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// KVM_EXIT_INTERNAL_ERROR; suberror 1 is an emulation failure.
    InternalError {
        /// KVM's suberror.
        suberror: u32,
    },
    /// KVM_EXIT_SHUTDOWN: a triple fault.
    TripleFault,
    /// KVM_EXIT_FAIL_ENTRY.
    FailEntry {
        /// The hardware entry failure reason.
        reason: u64,
    },
    /// Anything else: an exit this VMM does not handle, or KVM_RUN failing.
    Unexpected(String),
}

impl FaultKind {
    /// A short description for people.
    pub fn describe(&self) -> String {
        match self {
            FaultKind::InternalError { suberror: 1 } => {
                "emulation failure (KVM_EXIT_INTERNAL_ERROR, suberror 1)".to_owned()
            }
            FaultKind::InternalError { suberror } => {
                format!("KVM internal error (KVM_EXIT_INTERNAL_ERROR, suberror {suberror})")
            }
            FaultKind::TripleFault => "triple fault (KVM_EXIT_SHUTDOWN)".to_owned(),
            FaultKind::FailEntry { reason } => {
                format!("VM entry failed (KVM_EXIT_FAIL_ENTRY, reason {reason:#x})")
            }
            FaultKind::Unexpected(what) => format!("unexpected exit: {what}"),
        }
    }
}

/// Why the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestEnd {
    /// The guest wrote this status to the exit port.
    Exit(u8),
    /// A vCPU failed.
    Fault {
        /// The vCPU.
        vcpu: u32,
        /// How.
        kind: FaultKind,
    },
    /// Every vCPU halted without writing the exit port.
    AllHalted,
    /// `--timeout` expired.
    Timeout(Duration),
    /// The VMM itself failed while the guest ran.
    VmmError(String),
}

impl GuestEnd {
    /// The VMM's exit status.
    pub fn status(&self) -> i32 {
        match self {
            GuestEnd::Exit(code) => i32::from(*code),
            GuestEnd::Fault { kind, .. } => match kind {
                FaultKind::InternalError { .. } => STATUS_INTERNAL_ERROR,
                FaultKind::TripleFault => STATUS_TRIPLE_FAULT,
                FaultKind::FailEntry { .. } => STATUS_FAIL_ENTRY,
                FaultKind::Unexpected(_) => STATUS_UNEXPECTED,
            },
            GuestEnd::AllHalted => STATUS_UNEXPECTED,
            GuestEnd::Timeout(_) => STATUS_TIMEOUT,
            GuestEnd::VmmError(_) => STATUS_VMM_ERROR,
        }
    }

    /// A stable machine-readable name (the stats' `guest.exit_reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            GuestEnd::Exit(_) => "exit",
            GuestEnd::Fault { kind, .. } => match kind {
                FaultKind::InternalError { suberror: 1 } => "emulation-failure",
                FaultKind::InternalError { .. } => "internal-error",
                FaultKind::TripleFault => "triple-fault",
                FaultKind::FailEntry { .. } => "fail-entry",
                FaultKind::Unexpected(_) => "unexpected-exit",
            },
            GuestEnd::AllHalted => "all-vcpus-halted",
            GuestEnd::Timeout(_) => "timeout",
            GuestEnd::VmmError(_) => "vmm-error",
        }
    }

    /// A short description for the summary line.
    pub fn describe(&self) -> String {
        match self {
            GuestEnd::Exit(code) => format!("guest exit {code}"),
            GuestEnd::Fault { vcpu, kind } => format!("vCPU {vcpu}: {}", kind.describe()),
            GuestEnd::AllHalted => "every vCPU halted without an exit".to_owned(),
            GuestEnd::Timeout(d) => format!("guest timed out after {} s", d.as_secs()),
            GuestEnd::VmmError(e) => format!("VMM error: {e}"),
        }
    }
}

/// Errors creating the run state.
#[derive(Debug, thiserror::Error)]
#[error("cannot create an eventfd: {0}")]
pub struct RunStateError(std::io::Error);

/// What the vCPU threads, the devices and the event loop share.
#[derive(Debug)]
pub struct RunState {
    end: Mutex<Option<GuestEnd>>,
    stop: AtomicBool,
    evt: EventFd,
    running: AtomicU32,
}

impl RunState {
    /// A run with `vcpus` vCPUs, not ended.
    pub fn new(vcpus: u32) -> Result<Self, RunStateError> {
        Ok(RunState {
            end: Mutex::new(None),
            stop: AtomicBool::new(false),
            evt: EventFd::new(libc::EFD_NONBLOCK).map_err(RunStateError)?,
            running: AtomicU32::new(vcpus),
        })
    }

    /// Ends the run with `end`, unless it has already ended. Returns whether this call decided
    /// the end.
    pub fn finish(&self, end: GuestEnd) -> bool {
        let decided = {
            let mut slot = self.end.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(end);
                true
            } else {
                false
            }
        };
        self.stop.store(true, Ordering::SeqCst);
        // A full counter still wakes the loop, so a write error changes nothing.
        let _ = self.evt.write(1);
        decided
    }

    /// Whether vCPUs should stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// How the run ended, if it has.
    pub fn end(&self) -> Option<GuestEnd> {
        self.end.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The eventfd that is signalled when the run ends.
    pub fn event(&self) -> &EventFd {
        &self.evt
    }

    /// A vCPU halted for good; the last one to do so ends the run.
    pub fn vcpu_halted(&self) {
        if self.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.finish(GuestEnd::AllHalted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_end_wins() {
        let s = RunState::new(2).unwrap();
        assert!(!s.stopping());
        assert_eq!(s.end(), None);
        assert!(s.finish(GuestEnd::Exit(7)));
        assert!(!s.finish(GuestEnd::Timeout(Duration::from_secs(1))));
        assert!(s.stopping());
        assert_eq!(s.end(), Some(GuestEnd::Exit(7)));
        assert!(s.event().read().unwrap() >= 1);
    }

    #[test]
    fn all_halted_needs_every_vcpu() {
        let s = RunState::new(2).unwrap();
        s.vcpu_halted();
        assert_eq!(s.end(), None);
        s.vcpu_halted();
        assert_eq!(s.end(), Some(GuestEnd::AllHalted));
    }

    #[test]
    fn statuses_are_distinct() {
        let ends = [
            GuestEnd::Fault {
                vcpu: 0,
                kind: FaultKind::InternalError { suberror: 1 },
            },
            GuestEnd::Fault {
                vcpu: 0,
                kind: FaultKind::TripleFault,
            },
            GuestEnd::Fault {
                vcpu: 0,
                kind: FaultKind::FailEntry { reason: 0 },
            },
            GuestEnd::Fault {
                vcpu: 0,
                kind: FaultKind::Unexpected("x".into()),
            },
            GuestEnd::Timeout(Duration::from_secs(2)),
        ];
        let st: Vec<i32> = ends.iter().map(GuestEnd::status).collect();
        assert_eq!(st, [120, 121, 122, 123, 124]);
        assert_eq!(GuestEnd::Exit(7).status(), 7);
        assert_eq!(GuestEnd::AllHalted.status(), 123);
        assert_eq!(GuestEnd::VmmError("x".into()).status(), 1);
        assert_eq!(ends[4].describe(), "guest timed out after 2 s");
        assert_eq!(ends[1].reason(), "triple-fault");
    }
}
