//! SIGINT, SIGTERM and SIGHUP end a `pvgpu run` the orderly way: the handler records the
//! signal and wakes the event loop through an eventfd; the loop ends the run with
//! [`GuestEnd::Signal`](crate::run::state::GuestEnd::Signal), so the vCPUs are stopped, the
//! device thread is joined (bounded), and the summary line and the stats JSON (exit reason
//! `signal`) are written. The exit status is 128 + the signal number, as a shell reports a
//! process killed by it: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP.
//!
//! The handler only stores the signal number and writes the eventfd (both async-signal-safe).
//! A second signal while the run is ending changes nothing (SIGKILL still works).

use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use libc::{c_int, c_void, siginfo_t};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::register_signal_handler;

/// The signals that stop a run.
pub const STOP_SIGNALS: [c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Errors installing the handlers.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The eventfd could not be made.
    #[error("cannot create the signal eventfd: {0}")]
    EventFd(std::io::Error),
    /// sigaction failed.
    #[error("cannot install the {name} handler: {source}")]
    Handler {
        /// The signal.
        name: &'static str,
        /// The OS error.
        source: vmm_sys_util::errno::Error,
    },
}

/// The first stop signal received (0: none yet).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// The eventfd's descriptor, for the handler (-1 until installed).
static EVENT_FD: AtomicI32 = AtomicI32::new(-1);
/// The eventfd itself; it lives as long as the process.
static EVENT: OnceLock<EventFd> = OnceLock::new();

extern "C" fn on_stop_signal(sig: c_int, _: *mut siginfo_t, _: *mut c_void) {
    let _ = RECEIVED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    let fd = EVENT_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; `fd` is the process-lifetime eventfd and the
        // buffer is an 8-byte local. A full counter (EAGAIN) only means a wake-up is pending.
        unsafe { libc::write(fd, (&one as *const u64).cast::<c_void>(), 8) };
    }
}

/// The name of a signal, for messages.
pub fn name(sig: c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Installs the handlers for [`STOP_SIGNALS`] (idempotent). Call it before the run starts:
/// from then on those signals end the run instead of the process.
pub fn install() -> Result<(), SignalError> {
    if EVENT.get().is_none() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(SignalError::EventFd)?;
        let fd = evt.as_raw_fd();
        if EVENT.set(evt).is_ok() {
            EVENT_FD.store(fd, Ordering::SeqCst);
        }
    }
    for sig in STOP_SIGNALS {
        register_signal_handler(sig, on_stop_signal).map_err(|source| SignalError::Handler {
            name: name(sig),
            source,
        })?;
    }
    Ok(())
}

/// The eventfd the handler writes, if the handlers are installed (the event loop watches it).
pub fn event() -> Option<&'static EventFd> {
    if EVENT_FD.load(Ordering::SeqCst) >= 0 {
        EVENT.get()
    } else {
        None
    }
}

/// The first stop signal received, if any.
pub fn received() -> Option<c_int> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}
