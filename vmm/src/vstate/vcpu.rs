//! vCPUs: setting one up for 64-bit entry, its thread and run loop, exit decoding, and the
//! signal that kicks it out of KVM_RUN.
//!
//! Stopping: the event loop decides the end ([`RunState::finish`] sets the stop flag), then
//! [`kick`]s every vCPU thread with [`kick_signal`]. The signal handler sets `immediate_exit`
//! in the thread's own `kvm_run`, so a signal that lands just before KVM_RUN still makes it
//! return at once (EINTR) instead of being lost; the loop then sees the stop flag.

use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use kvm_bindings::{kvm_fpu, kvm_mp_state, kvm_regs, kvm_run, CpuId, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use libc::{c_int, c_void, siginfo_t};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::devices::bus::Bus;
use crate::run::fault_report::FaultReport;
use crate::run::state::{FaultKind, GuestEnd, RunState};
use crate::run::stats::Timeline;
use crate::vstate::cpuid::{self, CpuidError};
use crate::vstate::long_mode;

/// Errors creating or starting a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// KVM_CREATE_VCPU failed.
    #[error("cannot create vCPU {index}: {source}")]
    Create {
        /// The vCPU.
        index: u32,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
    /// Setting CPUID failed.
    #[error(transparent)]
    Cpuid(#[from] CpuidError),
    /// A register ioctl failed.
    #[error("cannot set {what} of vCPU {index}: {source}")]
    Setup {
        /// Which registers.
        what: &'static str,
        /// The vCPU.
        index: u32,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    /// The thread could not be spawned.
    #[error("cannot start the thread of vCPU {index}: {source}")]
    Spawn {
        /// The vCPU.
        index: u32,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The signal that kicks vCPU threads out of KVM_RUN.
pub fn kick_signal() -> c_int {
    SIGRTMIN()
}

thread_local! {
    // This thread's kvm_run, while a vCPU runs on it; null otherwise.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn handle_kick(_: c_int, _: *mut siginfo_t, _: *mut c_void) {
    let _ = KVM_RUN.try_with(|p| {
        let run = p.get();
        if !run.is_null() {
            // SAFETY: `run` is this thread's vCPU kvm_run mapping; it is set by the vCPU
            // thread only while it owns the VcpuFd (which keeps the mapping alive) and is
            // cleared before the VcpuFd is dropped. A volatile byte store is
            // async-signal-safe, and KVM reads immediate_exit on entry to KVM_RUN.
            unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*run).immediate_exit), 1) };
        }
    });
}

/// Installs the kick signal handler (once, before any vCPU thread starts).
pub fn install_kick_handler() -> Result<(), VcpuError> {
    register_signal_handler(kick_signal(), handle_kick).map_err(VcpuError::Signal)
}

/// Sends the kick signal to a vCPU thread.
pub fn kick<T>(handle: &JoinHandle<T>) {
    if let Err(e) = handle.kill(kick_signal()) {
        log::debug!("kicking a vCPU thread: {e}");
    }
}

/// Where a vCPU starts.
#[derive(Debug, Clone, Copy)]
pub struct EntryState {
    /// RIP: the kernel entry point.
    pub entry: u64,
    /// RDI: the boot-info address.
    pub boot_info: u64,
}

/// Creates vCPU `index` and sets it up to enter 64-bit mode at `entry` with RDI = boot info
/// and RSI = `index`.
pub fn create(
    vm: &VmFd,
    index: u32,
    base_cpuid: &CpuId,
    entry: EntryState,
) -> Result<VcpuFd, VcpuError> {
    let fd = vm
        .create_vcpu(u64::from(index))
        .map_err(|source| VcpuError::Create { index, source })?;
    let setup = |what| {
        move |source| VcpuError::Setup {
            what,
            index,
            source,
        }
    };
    cpuid::set(&fd, base_cpuid, index)?;

    let mut sregs = fd.get_sregs().map_err(setup("special registers"))?;
    long_mode::configure_sregs(&mut sregs);
    fd.set_sregs(&sregs).map_err(setup("special registers"))?;

    let regs = kvm_regs {
        rip: entry.entry,
        rdi: entry.boot_info,
        rsi: u64::from(index),
        rsp: 0,
        rflags: 2,
        ..Default::default()
    };
    fd.set_regs(&regs).map_err(setup("registers"))?;

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    fd.set_fpu(&fpu).map_err(setup("FPU state"))?;

    // With the in-kernel LAPIC every vCPU but 0 would wait for INIT/SIPI; ours all start at
    // the entry point together.
    fd.set_mp_state(kvm_mp_state {
        mp_state: KVM_MP_STATE_RUNNABLE,
    })
    .map_err(setup("MP state"))?;
    Ok(fd)
}

/// Holds vCPU threads until every one has been started, so that all begin together.
#[derive(Debug, Default)]
pub struct StartGate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl StartGate {
    /// Lets every waiting thread go.
    pub fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = self.cv.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// What every vCPU thread shares.
#[derive(Clone)]
pub struct VcpuShared {
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// The run's end state.
    pub state: Arc<RunState>,
    /// The boot timeline.
    pub timeline: Arc<Timeline>,
    /// Guest memory, for failure reports.
    pub mem: GuestMemoryMmap,
}

/// A vCPU thread; it yields the failure report if the guest failed on this vCPU.
pub type VcpuThread = JoinHandle<Option<FaultReport>>;

/// Starts vCPU `index` on its own thread; it waits at `gate` before its first KVM_RUN.
pub fn spawn(
    index: u32,
    fd: VcpuFd,
    shared: VcpuShared,
    gate: Arc<StartGate>,
) -> Result<VcpuThread, VcpuError> {
    std::thread::Builder::new()
        .name(format!("vcpu{index}"))
        .spawn(move || {
            let vcpu = Vcpu { index, fd, shared };
            gate.wait();
            vcpu.run()
        })
        .map_err(|source| VcpuError::Spawn { index, source })
}

struct Vcpu {
    index: u32,
    fd: VcpuFd,
    shared: VcpuShared,
}

/// What one KVM_RUN came to.
enum Step {
    Continue,
    Interrupted,
    Halted,
    InternalError,
    Fault(FaultKind, Vec<String>),
}

/// Clears this thread's kvm_run pointer when dropped, before the VcpuFd is dropped.
struct KickGuard;

impl Drop for KickGuard {
    fn drop(&mut self) {
        let _ = KVM_RUN.try_with(|p| p.set(std::ptr::null_mut()));
    }
}

/// Ends the run if the vCPU thread panics, so that the VMM does not wait for the timeout.
struct PanicGuard {
    index: u32,
    state: Arc<RunState>,
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.state.finish(GuestEnd::VmmError(format!(
                "vCPU {} thread panicked",
                self.index
            )));
        }
    }
}

impl Vcpu {
    /// Runs until the run ends; returns the failure report if this vCPU failed.
    fn run(mut self) -> Option<FaultReport> {
        let _panic = PanicGuard {
            index: self.index,
            state: self.shared.state.clone(),
        };
        let run_ptr: *mut kvm_run = self.fd.get_kvm_run();
        KVM_RUN.with(|p| p.set(run_ptr));
        let _kick = KickGuard;

        if self.index == 0 {
            self.shared.timeline.mark_entry();
        }
        while !self.shared.state.stopping() {
            match self.step() {
                Step::Continue => {}
                Step::Interrupted => {
                    // A kick: the loop condition decides. Clear it so a spurious signal
                    // does not spin us.
                    self.fd.set_kvm_immediate_exit(0);
                }
                Step::Halted => {
                    log::debug!("vCPU {} halted", self.index);
                    self.shared.state.vcpu_halted();
                    return None;
                }
                Step::InternalError => {
                    let (suberror, details) = self.internal_error();
                    return Some(self.fail(FaultKind::InternalError { suberror }, details));
                }
                Step::Fault(kind, details) => return Some(self.fail(kind, details)),
            }
        }
        None
    }

    fn step(&mut self) -> Step {
        let shared = &self.shared;
        match self.fd.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                if !shared.pio.write(u64::from(port), data) {
                    log::debug!(
                        "vCPU {}: write to unknown port {port:#x}: {data:02x?}",
                        self.index
                    );
                }
                Step::Continue
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                if !shared.pio.read(u64::from(port), data) {
                    log::debug!("vCPU {}: read of unknown port {port:#x}", self.index);
                }
                Step::Continue
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !shared.mmio.read(addr, data) {
                    log::debug!(
                        "vCPU {}: MMIO read of {addr:#x} ({} bytes)",
                        self.index,
                        data.len()
                    );
                }
                Step::Continue
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !shared.mmio.write(addr, data) {
                    log::debug!("vCPU {}: MMIO write of {addr:#x}: {data:02x?}", self.index);
                }
                Step::Continue
            }
            Ok(VcpuExit::Intr) => Step::Interrupted,
            Ok(VcpuExit::Hlt) => Step::Halted,
            Ok(VcpuExit::Shutdown) => Step::Fault(FaultKind::TripleFault, Vec::new()),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Step::Fault(
                FaultKind::FailEntry { reason },
                vec![format!(
                    "hardware entry failure reason {reason:#x} on host CPU {cpu}"
                )],
            ),
            Ok(VcpuExit::InternalError) => Step::InternalError,
            Ok(other) => Step::Fault(FaultKind::Unexpected(format!("{other:?}")), Vec::new()),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Step::Interrupted,
            Err(e) => Step::Fault(
                FaultKind::Unexpected(format!("KVM_RUN failed: {e}")),
                Vec::new(),
            ),
        }
    }

    /// KVM's suberror and data words for KVM_EXIT_INTERNAL_ERROR.
    fn internal_error(&mut self) -> (u32, Vec<String>) {
        let run = self.fd.get_kvm_run();
        // SAFETY: the last KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, so `internal` is the
        // union member KVM filled in; it is plain integers.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        let mut details = Vec::new();
        if n > 0 {
            let words: Vec<String> = internal.data[..n]
                .iter()
                .map(|d| format!("{d:#x}"))
                .collect();
            details.push(format!("KVM data: {}", words.join(" ")));
        }
        (internal.suberror, details)
    }

    /// Captures the failure report and ends the run (the main thread prints the report once
    /// the serial output is flushed).
    fn fail(&self, kind: FaultKind, details: Vec<String>) -> FaultReport {
        let report = FaultReport::capture(
            &self.fd,
            &self.shared.mem,
            self.index,
            kind.describe(),
            details,
        );
        self.shared.state.finish(GuestEnd::Fault {
            vcpu: self.index,
            kind,
        });
        report
    }
}
