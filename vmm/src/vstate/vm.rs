//! One guest run, start to end: build the VM, load the guest, attach the GPU, start the vCPUs,
//! run the event loop until the end is decided, stop and join every vCPU thread, collect the
//! stats.
//!
//! [`run`] and [`run_with_output`] are the library entry points (the CLI, the integration
//! tests and the later `bench` and `demo` commands): they print nothing but the guest's serial
//! output and failure reports, and return a [`RunOutcome`] with the exit status and the stats.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_ioctls::Kvm;
use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::layout;
use vmm_sys_util::eventfd::EventFd;

use crate::cli::RunConfig;
use crate::devices::bus::Bus;
use crate::devices::exit_port::ExitDevice;
use crate::devices::gpu::{DeviceThread, FinalShot, Gpu};
use crate::devices::gpu_vhost_user::GpuVhostUser;
use crate::devices::phase_port::PhaseDevice;
use crate::devices::screenshot::Screenshot;
use crate::devices::serial::{ConsoleOut, SerialDevice};
use crate::devices::used_wait_port::UsedWaitDevice;
use crate::error::VmmError;
use crate::run::event_loop::EventLoop;
use crate::run::event_loop::Sampler;
use crate::run::fault_report::FaultReport;
use crate::run::state::{GuestEnd, RunState};
use crate::run::stats::{MemoryProbe, RunShape, RunStats, Timeline};
use crate::vstate::cpuid;
use crate::vstate::guest_ram::GuestRam;
use crate::vstate::loader;
use crate::vstate::long_mode;
use crate::vstate::vcpu::{self, EntryState, StartGate, VcpuShared, VcpuThread};

/// How long to wait for vCPU threads to leave KVM_RUN after the end is decided.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(2);
/// How often to repeat the kick while waiting.
const KICK_INTERVAL: Duration = Duration::from_millis(10);
/// How long the end of the run may wait for the device, for its final counters and for the
/// final screenshot (each).
pub const DEVICE_DEADLINE: Duration = Duration::from_millis(500);

/// The result of a run.
#[derive(Debug)]
pub struct RunOutcome {
    /// Why it ended.
    pub end: GuestEnd,
    /// Its statistics.
    pub stats: RunStats,
    /// vCPU threads that did not stop within [`JOIN_DEADLINE`] (normally 0).
    pub unjoined: usize,
    /// Failure reports of the vCPUs that failed (already printed to stderr).
    pub reports: Vec<FaultReport>,
}

impl RunOutcome {
    /// The VMM's exit status for this run (the guest's exit code, or 120..124 on failure).
    pub fn status(&self) -> i32 {
        self.end.status()
    }
}

/// Boots the guest described by `config` and runs it to the end. `timeline` starts at VMM
/// start. Serial output goes to stdout.
pub fn run(config: &RunConfig, timeline: Arc<Timeline>) -> Result<RunOutcome, VmmError> {
    run_with_output(config, timeline, Box::new(std::io::stdout()))
}

/// [`run`], with the guest's serial output going to `out` (e.g. a buffer a benchmark parses).
pub fn run_with_output(
    config: &RunConfig,
    timeline: Arc<Timeline>,
    out: Box<dyn Write + Send>,
) -> Result<RunOutcome, VmmError> {
    let kvm = Kvm::new().map_err(|e| VmmError::no_kvm(&e))?;
    // The one stable KVM API version; anything else is not KVM (e.g. /dev/kvm bound to a file).
    const KVM_API_VERSION: i32 = 12;
    let api = kvm.get_api_version();
    if api != KVM_API_VERSION {
        return Err(VmmError::NoKvm(format!(
            "/dev/kvm does not answer as KVM (API version {api}, expected {KVM_API_VERSION})"
        )));
    }
    let vm = kvm.create_vm().map_err(|source| VmmError::Kvm {
        what: "KVM_CREATE_VM",
        source,
    })?;

    let ram = GuestRam::new(config.mem_bytes, config.memory)?;
    ram.register(&vm)?;
    let mem = ram.memory();
    let kernel = loader::load_kernel(mem, ram.size(), &config.kernel)?;
    long_mode::write_gdt(mem).map_err(|source| VmmError::GuestMemory {
        what: "the boot GDT",
        source,
    })?;
    long_mode::write_page_tables(mem).map_err(|source| VmmError::GuestMemory {
        what: "the boot page tables",
        source,
    })?;
    let cmdline_len = loader::write_cmdline(mem, &config.cmdline)?;

    // MMIO: the GPU's register window; VRAM is the memslot after guest RAM's. Both memslots
    // go in before the irqchip (much cheaper on PVM; see Gpu::attach).
    let mut mmio = Bus::new();
    // With --gpu-socket the device model is in the backend process: only the register window
    // and the VRAM memslot are here.
    let mut split = match &config.gpu_socket {
        Some(path) => Some(GpuVhostUser::attach(
            &vm,
            &ram,
            ram.slots(),
            &mut mmio,
            path,
        )?),
        None => None,
    };
    let mut gpu = match (config.vram_bytes, &split) {
        (Some(vram), None) => Some(Gpu::attach(
            &vm,
            &ram,
            vram,
            config.zero_copy,
            config.display,
            ram.slots(),
            &mut mmio,
        )?),
        _ => None,
    };
    let probe = match (&gpu, &split) {
        (Some(g), _) => g.memory_probe(&ram)?,
        (None, Some(s)) => s.memory_probe(&ram)?,
        (None, None) => MemoryProbe::new(ram.host_memory().clone(), None),
    };
    let vram_size = gpu
        .as_ref()
        .map(Gpu::vram_size)
        .or(split.as_ref().map(GpuVhostUser::vram_size));

    vm.create_irq_chip().map_err(|source| VmmError::Kvm {
        what: "KVM_CREATE_IRQCHIP",
        source,
    })?;

    if let Some(g) = gpu.as_mut() {
        g.connect_irq(&vm)?;
    }
    if let Some(s) = split.as_mut() {
        s.connect_irq(&vm)?;
    }
    let state = Arc::new(RunState::new(config.vcpus)?);

    // Port I/O: serial, exit, phase and used-wait ports.
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::EventFd)?;
    if let Err(e) = vm.register_irqfd(&serial_irq, layout::SERIAL_IRQ) {
        log::warn!("serial IRQ not wired (irqfd: {e}); the UART works polled");
    }
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        serial_irq,
        ConsoleOut::new(out, timeline.clone()),
    )));
    let mut pio = Bus::new();
    pio.insert(
        u64::from(layout::SERIAL_PORT),
        u64::from(layout::SERIAL_PORT_LEN),
        serial.clone(),
    )?;
    pio.insert(
        u64::from(layout::EXIT_PORT),
        1,
        Arc::new(Mutex::new(ExitDevice::new(state.clone()))),
    )?;
    pio.insert(
        u64::from(layout::PHASE_PORT),
        1,
        Arc::new(Mutex::new(PhaseDevice::new(
            timeline.clone(),
            probe.clone(),
        ))),
    )?;
    pio.insert(
        u64::from(layout::USED_WAIT_PORT),
        2,
        Arc::new(Mutex::new(UsedWaitDevice::new(
            gpu.as_ref().map(Gpu::used_watch),
        ))),
    )?;

    let base_cpuid = cpuid::supported(&kvm)?;
    let entry = EntryState {
        entry: kernel.entry,
        boot_info: layout::BOOT_INFO_ADDR,
    };
    let mut fds = Vec::with_capacity(config.vcpus as usize);
    for i in 0..config.vcpus {
        fds.push(vcpu::create(&vm, i, &base_cpuid, entry)?);
    }
    let tsc_khz = fds
        .first()
        .and_then(|fd| fd.get_tsc_khz().ok())
        .map_or(0, u64::from);

    let info = BootInfo {
        num_cpus: config.vcpus,
        ram_size: ram.size(),
        cmdline_addr: layout::CMDLINE_ADDR,
        cmdline_len,
        kernel_start: kernel.start,
        kernel_end: kernel.end,
        tsc_khz,
        ..Default::default()
    };
    let info = match vram_size {
        Some(vram_size) => BootInfo {
            virtio_mmio_base: layout::VIRTIO_MMIO_BASE,
            virtio_mmio_size: layout::VIRTIO_MMIO_SIZE,
            virtio_mmio_irq: layout::VIRTIO_MMIO_IRQ,
            vram_base: layout::VRAM_BASE,
            vram_size,
            ..info
        },
        None => info,
    };
    loader::write_boot_info(mem, &info)?;

    vcpu::install_kick_handler()?;
    if config.seccomp.any() {
        crate::seccomp::install_sigsys_handler()?;
    }
    let mut event_loop = EventLoop::new(state.clone(), config.timeout)?;
    let screenshot = config
        .screenshot
        .clone()
        .map(|p| Arc::new(Mutex::new(Screenshot::new(p))));
    let device_thread = match gpu.as_mut() {
        Some(g) => DeviceThread::spawn(
            g,
            screenshot.clone(),
            crate::seccomp::Policy {
                screenshots: screenshot.is_some(),
                ..config.seccomp
            },
        )?,
        None => None,
    };
    if let Some(s) = &split {
        event_loop.add(Arc::new(Mutex::new(s.watch(state.clone())?)));
    }
    if let Some(every) = config.sample_interval {
        event_loop.add(Arc::new(Mutex::new(Sampler::new(
            every,
            probe.clone(),
            timeline.clone(),
        )?)));
    }

    let shared = VcpuShared {
        pio: Arc::new(pio),
        mmio: Arc::new(mmio),
        state: state.clone(),
        timeline: timeline.clone(),
        mem: mem.clone(),
        seccomp: config.seccomp,
    };
    let gate = Arc::new(StartGate::default());
    let mut handles = Vec::with_capacity(fds.len());
    for (i, fd) in (0u32..).zip(fds) {
        match vcpu::spawn(i, fd, shared.clone(), gate.clone()) {
            Ok(h) => handles.push(h),
            Err(e) => {
                state.finish(GuestEnd::VmmError(e.to_string()));
                break;
            }
        }
    }
    // Set-up is done: the main thread's own allow-list from here (`pvgpu run` only), before
    // the vCPUs pass the gate and the guest runs.
    if let Err(e) = config.seccomp.enter(crate::seccomp::ThreadKind::Main, 0) {
        state.finish(GuestEnd::VmmError(e.to_string()));
    }
    gate.open();

    let end = event_loop.run();
    let (unjoined, reports) = stop_vcpus(handles, JOIN_DEADLINE);
    // The device thread stops next, so the final device counters are read from a quiet device.
    drop(device_thread);
    if let (Some(g), Some(s), Some(path)) = (&gpu, &screenshot, &config.screenshot) {
        final_screenshot(g, s, path);
    }
    // Guest output first (ending any partial line), then the failure reports.
    if let Err(e) = serial.lock().unwrap_or_else(|p| p.into_inner()).finish() {
        log::debug!("flushing serial output: {e}");
    }
    for r in &reports {
        eprintln!("{r}");
    }
    if unjoined > 0 {
        eprintln!(
            "pvgpu: warning: {unjoined} vCPU thread(s) did not stop within {JOIN_DEADLINE:?}"
        );
    }

    let shape = RunShape {
        vcpus: config.vcpus,
        mem_bytes: config.mem_bytes,
        vram_size,
        sample_ms: config
            .sample_interval
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    let device_stats = match gpu.as_ref() {
        Some(g) => {
            let s = g.stats_within(DEVICE_DEADLINE);
            if s.is_none() {
                eprintln!(
                    "pvgpu: warning: the GPU device stayed busy for {DEVICE_DEADLINE:?}; its counters are not in the stats"
                );
            }
            s
        }
        None => None,
    };
    let stats = RunStats::collect(&timeline, &end, shape, probe.snapshot(), device_stats);
    // The queue worker and the GPU go before the VM (declared first, dropped last). The VRAM
    // mapping stays alive as long as any vCPU thread might run: one that did not stop above
    // still holds the MMIO bus, which holds the device.
    drop(event_loop);
    drop(gpu);
    drop(split);
    Ok(RunOutcome {
        end,
        stats,
        unjoined,
        reports,
    })
}

/// The screenshot at exit: what the scanout shows now, or a warning if nothing was ever shown
/// or the device stayed busy past [`DEVICE_DEADLINE`].
fn final_screenshot(gpu: &Gpu, shot: &Mutex<Screenshot>, path: &std::path::Path) {
    match gpu.final_screenshot(shot, DEVICE_DEADLINE) {
        Ok(FinalShot::Written | FinalShot::Blank { earlier: 1.. }) => {}
        Ok(FinalShot::Blank { earlier: 0 }) => eprintln!(
            "pvgpu: warning: --screenshot {}: the guest never showed anything on the \
             scanout; no picture written",
            path.display()
        ),
        Ok(FinalShot::Busy) => eprintln!(
            "pvgpu: warning: --screenshot {}: the GPU device stayed busy for \
             {DEVICE_DEADLINE:?}; no picture written at exit",
            path.display()
        ),
        Err(e) => eprintln!("pvgpu: warning: {e}"),
    }
}

/// Kicks every vCPU thread out of KVM_RUN until all have finished or `deadline` passes, then
/// joins the finished ones. Returns how many did not finish, and the failure reports.
pub fn stop_vcpus(handles: Vec<VcpuThread>, deadline: Duration) -> (usize, Vec<FaultReport>) {
    let until = Instant::now() + deadline;
    loop {
        let mut running = 0;
        for h in handles.iter().filter(|h| !h.is_finished()) {
            vcpu::kick(h);
            running += 1;
        }
        if running == 0 || Instant::now() >= until {
            break;
        }
        std::thread::sleep(KICK_INTERVAL);
    }
    let mut unjoined = 0;
    let mut reports = Vec::new();
    for h in handles {
        if !h.is_finished() {
            unjoined += 1;
            continue;
        }
        match h.join() {
            Ok(Some(r)) => reports.push(r),
            Ok(None) => {}
            Err(_) => log::error!("a vCPU thread panicked"),
        }
    }
    (unjoined, reports)
}
