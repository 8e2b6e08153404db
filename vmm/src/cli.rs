//! The command line: `pvgpu run [OPTIONS] [-- GUEST ARGS...]`, and its validation into a
//! [`RunConfig`].
//!
//! clap handles the syntax (a usage error exits 2); [`RunConfig::from_args`] checks the values
//! (a bad value is a one-line [`ConfigError`], and the binary exits 1). `pvgpu bench` and
//! `pvgpu demo` take their options from [`crate::tools::bench::BenchArgs`] and
//! [`crate::tools::demo::DemoArgs`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pvgpu_abi::layout;
use pvgpu_device::display::{DisplayError, DisplayMode};
use pvgpu_device::{MemoryBackend, ZeroCopy};

use crate::size::{format_size, parse_size, SizeError};

/// The kernel image used when `--kernel` is not given, relative to the repository root.
pub const DEFAULT_KERNEL: &str = "images/out/pvgpu-guest";
/// Default `--timeout` in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;
/// Largest `--timeout` in seconds (about 136 years; the timerfd refuses times past 2^63 ns
/// from its clock's epoch, so larger values are a usage error instead of "Invalid argument").
pub const MAX_TIMEOUT_SECS: u64 = u32::MAX as u64;
/// Default `--sample-ms`: how often host memory is sampled into the stats.
pub const DEFAULT_SAMPLE_MS: u64 = 50;

/// pvgpu: a small KVM VMM with a paravirtual GPU memory device.
#[derive(Debug, Parser)]
#[command(name = "pvgpu", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot the guest kernel and run it until it exits, faults or times out.
    Run(RunArgs),
    /// Measure pvgpu against its baselines (migrate, reclaim, latency, boot, scale, density)
    Bench(crate::tools::bench::BenchArgs),
    /// Run a workload that fills, migrates, cleans and touches objects, and plot host memory
    Demo(crate::tools::demo::DemoArgs),
    /// Serve the GPU device model as a vhost-user backend on a unix socket (no KVM)
    Device(crate::vhost_backend::DeviceArgs),
}

/// Options of `pvgpu run`.
#[derive(Debug, Args, Clone, PartialEq, Eq)]
pub struct RunArgs {
    /// The guest kernel ELF [default: images/out/pvgpu-guest]
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Guest RAM, e.g. 256M or 1G (a multiple of 2 MiB, 16M..3G)
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub mem: String,
    /// Number of vCPUs (1..=8)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub vcpus: u32,
    /// Stop the guest after SECS seconds (exit 124); 0 means never; at most 4294967295
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_TIMEOUT_SECS,
        value_parser = clap::value_parser!(u64).range(0..=MAX_TIMEOUT_SECS)
    )]
    pub timeout: u64,
    /// Write run statistics as JSON to PATH at exit
    #[arg(long, value_name = "PATH")]
    pub stats_json: Option<PathBuf>,
    /// VRAM of the GPU device, e.g. 256M or 4G (a multiple of 2 MiB, 2M..64G)
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "256M",
        conflicts_with = "no_gpu"
    )]
    pub vram: String,
    /// Run without the GPU device: no virtio-mmio window, no VRAM
    #[arg(long)]
    pub no_gpu: bool,
    /// Sample host memory into the stats every N ms; 0 means never
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SAMPLE_MS)]
    pub sample_ms: u64,
    /// Host memory of guest RAM and VRAM: anonymous (pages move between them, no copy) or
    /// shared (memfds another process can map; MIGRATE_CLEAN copies and punches)
    #[arg(long, value_name = "KIND", value_enum, default_value_t = MemoryKind::Anonymous)]
    pub memory: MemoryKind,
    /// Anonymous memory without transparent huge pages (4 KiB pages only)
    #[arg(long)]
    pub no_thp: bool,
    /// Testing: the device refuses every N-th page it would move, so the copy fallback runs
    #[arg(long, value_name = "N", hide = true)]
    pub test_refuse_every: Option<u64>,
    /// The GPU's scanout resolution, WIDTHxHEIGHT (each 1..=4095)
    #[arg(
        long,
        value_name = "WxH",
        default_value = "1280x800",
        conflicts_with = "no_gpu"
    )]
    pub display: String,
    /// Write the scanout as a PNG to PATH when the guest flushes it (at most every 200 ms)
    /// and at exit
    #[arg(long, value_name = "PATH", conflicts_with = "no_gpu")]
    pub screenshot: Option<PathBuf>,
    /// Use the GPU served by a vhost-user backend on this socket (`pvgpu device --socket
    /// PATH`); VRAM and display are the backend's
    #[arg(long, value_name = "PATH", conflicts_with_all = ["no_gpu", "vram", "display", "screenshot", "no_thp"])]
    pub gpu_socket: Option<PathBuf>,
    /// Run without the seccomp filters (every thread is filtered by default; for debugging)
    #[arg(long)]
    pub no_seccomp: bool,
    /// DEBUG ONLY: make THREAD's first system call after its seccomp filter a forbidden one
    /// (shows, and lets the tests check, how a forbidden call ends the run)
    #[arg(
        long,
        value_name = "THREAD",
        hide = true,
        conflicts_with = "no_seccomp"
    )]
    pub debug_forbidden_syscall: Option<crate::seccomp::ThreadKind>,
    /// The guest's command line (e.g. `-- exit 7`, `-- hello`, `-- selftest`)
    #[arg(last = true, value_name = "GUEST ARGS")]
    pub guest_args: Vec<String>,
}

/// `--memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MemoryKind {
    /// Anonymous private memory (MADV_HUGEPAGE unless --no-thp).
    Anonymous,
    /// memfds mapped MAP_SHARED.
    Shared,
}

impl MemoryKind {
    /// The device crate's backend for this kind.
    pub fn backend(self, thp: bool) -> MemoryBackend {
        match self {
            MemoryKind::Anonymous => MemoryBackend::Anonymous { thp },
            MemoryKind::Shared => MemoryBackend::Shared,
        }
    }
}

/// A bad command-line value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--mem` is not a size.
    #[error("--mem: {0}")]
    MemSize(#[from] SizeError),
    /// `--mem` is out of range or misaligned.
    #[error("--mem {given}: guest RAM must be a multiple of 2 MiB between {min} and {max}")]
    MemRange {
        /// What was given.
        given: String,
        /// RAM_MIN, formatted.
        min: String,
        /// RAM_MAX, formatted.
        max: String,
    },
    /// `--vram` is not a size.
    #[error("--vram: {0}")]
    VramSize(SizeError),
    /// `--vram` is out of range or misaligned.
    #[error("--vram {given}: VRAM must be a multiple of 2 MiB between 2 MiB and {max}")]
    VramRange {
        /// What was given.
        given: String,
        /// VRAM_MAX, formatted.
        max: String,
    },
    /// `--display` is not WIDTHxHEIGHT.
    #[error("--display {0}: expected WIDTHxHEIGHT, e.g. 1280x800")]
    DisplaySyntax(String),
    /// `--display` is out of range.
    #[error("--display {given}: {source}")]
    DisplayRange {
        /// What was given.
        given: String,
        /// Why.
        source: DisplayError,
    },
    /// `--screenshot` names a file in a directory that does not exist.
    #[error("--screenshot {0}: its directory does not exist")]
    ScreenshotDir(PathBuf),
    /// `--vcpus` out of range.
    #[error("--vcpus {0}: must be between 1 and {max}", max = layout::MAX_VCPUS)]
    Vcpus(u32),
    /// The kernel image is not where it was looked for.
    #[error("guest kernel not found (looked at {looked}); build it with images/build.sh or pass --kernel PATH")]
    KernelNotFound {
        /// The paths tried.
        looked: String,
    },
    /// An explicit `--kernel` that does not exist.
    #[error("guest kernel {0} not found")]
    KernelMissing(PathBuf),
    /// The guest command line does not fit.
    #[error("guest command line is {len} bytes; at most {max} fit", max = layout::CMDLINE_MAX)]
    CmdlineTooLong {
        /// Its length.
        len: usize,
    },
}

/// Validated settings for one `pvgpu run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    /// The guest kernel ELF.
    pub kernel: PathBuf,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest time limit, if any.
    pub timeout: Option<Duration>,
    /// Where to write the stats JSON.
    pub stats_json: Option<PathBuf>,
    /// The guest command line (the guest args joined with single spaces).
    pub cmdline: String,
    /// VRAM in bytes, or `None` for `--no-gpu` (no device at all).
    pub vram_bytes: Option<u64>,
    /// How often to sample host memory into the stats, if at all.
    pub sample_interval: Option<Duration>,
    /// Which threads run under a seccomp filter.
    pub seccomp: crate::seccomp::Policy,
    /// The host memory behind guest RAM and VRAM.
    pub memory: MemoryBackend,
    /// Whether the device moves pages (a test hook makes it refuse some).
    pub zero_copy: ZeroCopy,
    /// The scanout's mode.
    pub display: DisplayMode,
    /// Where to write the scanout as a PNG, if anywhere.
    pub screenshot: Option<PathBuf>,
    /// The vhost-user GPU backend's socket: the device model runs there, not in this process.
    pub gpu_socket: Option<PathBuf>,
}

impl RunConfig {
    /// The settings of a plain `pvgpu run --kernel KERNEL` (256 MiB RAM, 1 vCPU, the default
    /// timeout, 256 MiB VRAM, sampling every 50 ms, no stats file, empty command line), for
    /// library callers such as benchmarks, which then change what they need.
    pub fn with_defaults(kernel: PathBuf) -> Self {
        RunConfig {
            kernel,
            mem_bytes: layout::RAM_DEFAULT,
            vcpus: 1,
            timeout: Some(Duration::from_secs(DEFAULT_TIMEOUT_SECS)),
            stats_json: None,
            cmdline: String::new(),
            vram_bytes: Some(layout::VRAM_DEFAULT),
            sample_interval: Some(Duration::from_millis(DEFAULT_SAMPLE_MS)),
            // The caller's main thread goes on after the run: filter the run's own threads.
            seccomp: crate::seccomp::Policy::THREADS,
            memory: MemoryBackend::DEFAULT_VMM,
            zero_copy: ZeroCopy::Auto,
            display: DisplayMode::default(),
            screenshot: None,
            gpu_socket: None,
        }
    }

    /// Checks the values of `pvgpu run` and finds the kernel.
    pub fn from_args(args: &RunArgs) -> Result<Self, ConfigError> {
        let mem_bytes = parse_mem(&args.mem)?;
        let vram_bytes = if args.no_gpu {
            None
        } else {
            Some(parse_vram(&args.vram)?)
        };
        if args.vcpus == 0 || args.vcpus > layout::MAX_VCPUS {
            return Err(ConfigError::Vcpus(args.vcpus));
        }
        let display = parse_display(&args.display)?;
        if let Some(p) = &args.screenshot {
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
            if dir.is_some_and(|d| !d.is_dir()) || p.file_name().is_none() {
                return Err(ConfigError::ScreenshotDir(p.clone()));
            }
        }
        let cmdline = args.guest_args.join(" ");
        if cmdline.len() as u64 > layout::CMDLINE_MAX {
            return Err(ConfigError::CmdlineTooLong { len: cmdline.len() });
        }
        let kernel = match &args.kernel {
            Some(p) if p.is_file() => p.clone(),
            Some(p) => return Err(ConfigError::KernelMissing(p.clone())),
            None => find_default_kernel(&default_kernel_candidates())?,
        };
        Ok(RunConfig {
            kernel,
            mem_bytes,
            vcpus: args.vcpus,
            timeout: (args.timeout > 0).then(|| Duration::from_secs(args.timeout)),
            stats_json: args.stats_json.clone(),
            cmdline,
            vram_bytes,
            sample_interval: (args.sample_ms > 0).then(|| Duration::from_millis(args.sample_ms)),
            seccomp: crate::seccomp::Policy::from_flags(
                crate::seccomp::Policy::PROCESS,
                args.no_seccomp,
                args.debug_forbidden_syscall,
            ),
            // The backend process maps guest RAM: --gpu-socket needs shared memory.
            memory: if args.gpu_socket.is_some() {
                MemoryBackend::Shared
            } else {
                args.memory.backend(!args.no_thp)
            },
            zero_copy: args
                .test_refuse_every
                .map_or(ZeroCopy::Auto, |n| ZeroCopy::RefuseEvery(n.max(1))),
            display,
            screenshot: args.screenshot.clone(),
            gpu_socket: args.gpu_socket.clone(),
        })
    }
}

/// Parses and checks `--display WxH`.
pub fn parse_display(s: &str) -> Result<DisplayMode, ConfigError> {
    let syntax = || ConfigError::DisplaySyntax(s.to_owned());
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(syntax)?;
    let w: u32 = w.trim().parse().map_err(|_| syntax())?;
    let h: u32 = h.trim().parse().map_err(|_| syntax())?;
    DisplayMode::new(w, h).map_err(|source| ConfigError::DisplayRange {
        given: s.to_owned(),
        source,
    })
}

/// Parses and checks `--mem`.
pub fn parse_mem(s: &str) -> Result<u64, ConfigError> {
    let bytes = parse_size(s)?;
    if !(layout::RAM_MIN..=layout::RAM_MAX).contains(&bytes)
        || !bytes.is_multiple_of(layout::LARGE_PAGE_SIZE)
    {
        return Err(ConfigError::MemRange {
            given: s.to_owned(),
            min: format_size(layout::RAM_MIN),
            max: format_size(layout::RAM_MAX),
        });
    }
    Ok(bytes)
}

/// Parses and checks `--vram`: a multiple of 2 MiB (the guest maps the window with large
/// pages), at least 2 MiB, at most `layout::VRAM_MAX`.
pub fn parse_vram(s: &str) -> Result<u64, ConfigError> {
    let bytes = parse_size(s).map_err(ConfigError::VramSize)?;
    if !(layout::LARGE_PAGE_SIZE..=layout::VRAM_MAX).contains(&bytes)
        || !bytes.is_multiple_of(layout::LARGE_PAGE_SIZE)
    {
        return Err(ConfigError::VramRange {
            given: s.to_owned(),
            max: format_size(layout::VRAM_MAX),
        });
    }
    Ok(bytes)
}

/// Where the default kernel is looked for, in order: the current directory, then relative to
/// the executable (`target/<profile>/pvgpu` → `../../images/out/`), then the source tree this
/// binary was built from.
pub fn default_kernel_candidates() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from(DEFAULT_KERNEL)];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        v.push(dir.join("../..").join(DEFAULT_KERNEL));
    }
    v.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(DEFAULT_KERNEL),
    );
    v
}

/// The first candidate that is a file.
pub fn find_default_kernel(candidates: &[PathBuf]) -> Result<PathBuf, ConfigError> {
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| ConfigError::KernelNotFound {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("pvgpu").chain(args.iter().copied()))?;
        match cli.command {
            Command::Run(r) => Ok(r),
            other => panic!("not a run: {other:?}"),
        }
    }

    fn this_file() -> String {
        // Any existing file will do as a "kernel" for config validation.
        concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml").to_owned()
    }

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let r = parse(&["run"]).unwrap();
        assert_eq!(r.kernel, None);
        assert_eq!(r.mem, "256M");
        assert_eq!(r.vcpus, 1);
        assert_eq!(r.timeout, DEFAULT_TIMEOUT_SECS);
        assert_eq!(r.stats_json, None);
        assert!(r.guest_args.is_empty());
        assert_eq!(r.vram, "256M");
        assert!(!r.no_gpu);
        assert_eq!(r.sample_ms, DEFAULT_SAMPLE_MS);
        let mut r = r;
        r.kernel = Some(PathBuf::from(this_file()));
        let c = RunConfig::from_args(&r).unwrap();
        assert_eq!(c.vram_bytes, Some(layout::VRAM_DEFAULT));
        assert_eq!(c.sample_interval, Some(Duration::from_millis(50)));
        // `pvgpu run` filters every thread; library callers only the run's own threads.
        assert_eq!(c.seccomp, crate::seccomp::Policy::PROCESS);
        assert_eq!(
            c,
            RunConfig {
                seccomp: crate::seccomp::Policy::PROCESS,
                ..RunConfig::with_defaults(PathBuf::from(this_file()))
            }
        );
        assert!(!r.no_seccomp);
        r.no_seccomp = true;
        let c = RunConfig::from_args(&r).unwrap();
        assert_eq!(c.seccomp, crate::seccomp::Policy::OFF);
    }

    #[test]
    fn seccomp_flags_of_run_and_device() {
        use crate::seccomp::{Policy, ThreadKind};
        let device = |extra: &[&str]| -> Result<Policy, clap::Error> {
            let args = ["pvgpu", "device", "--socket", "/tmp/s.sock"];
            let cli = Cli::try_parse_from(args.iter().chain(extra).copied())?;
            match cli.command {
                Command::Device(d) => Ok(d.seccomp()),
                other => panic!("not a device: {other:?}"),
            }
        };
        assert_eq!(device(&[]).unwrap(), Policy::BACKEND);
        assert_eq!(device(&["--no-seccomp"]).unwrap(), Policy::OFF);
        assert_eq!(
            device(&["--debug-forbidden-syscall"]).unwrap().provoke,
            Some(ThreadKind::Backend)
        );
        assert!(device(&["--no-seccomp", "--debug-forbidden-syscall"]).is_err());
        // The backend's list is not a thread of `run`.
        assert!(parse(&["run", "--debug-forbidden-syscall", "backend"]).is_err());
        let r = parse(&[
            "run",
            "--kernel",
            &this_file(),
            "--debug-forbidden-syscall",
            "vcpu",
        ]);
        let c = RunConfig::from_args(&r.unwrap()).unwrap();
        assert_eq!(c.seccomp.provoke, Some(ThreadKind::Vcpu));
        assert!(c.seccomp.main && c.seccomp.threads);
    }

    #[test]
    fn gpu_flags() {
        let k = this_file();
        let cfg = |extra: &[&str]| {
            let mut a = vec!["run", "--kernel", &k];
            a.extend_from_slice(extra);
            RunConfig::from_args(&parse(&a).unwrap())
        };
        assert_eq!(cfg(&["--vram", "1G"]).unwrap().vram_bytes, Some(1 << 30));
        assert_eq!(cfg(&["--vram", "2M"]).unwrap().vram_bytes, Some(2 << 20));
        assert_eq!(
            cfg(&["--vram", "64G"]).unwrap().vram_bytes,
            Some(layout::VRAM_MAX)
        );
        let c = cfg(&["--no-gpu", "--sample-ms", "0"]).unwrap();
        assert_eq!(c.vram_bytes, None);
        assert_eq!(c.sample_interval, None);
        assert_eq!(
            cfg(&["--sample-ms", "7"]).unwrap().sample_interval,
            Some(Duration::from_millis(7))
        );
        for bad in ["0", "1M", "3M", "4097K", "66G", "128G"] {
            let e = cfg(&["--vram", bad]).unwrap_err();
            assert!(matches!(e, ConfigError::VramRange { .. }), "{bad}: {e}");
            let msg = e.to_string();
            assert!(!msg.contains('\n') && msg.starts_with("--vram "), "{msg}");
        }
        assert!(matches!(
            cfg(&["--vram", "lots"]),
            Err(ConfigError::VramSize(_))
        ));
        // The memory backend: anonymous with huge pages unless told otherwise.
        assert_eq!(
            cfg(&[]).unwrap().memory,
            MemoryBackend::Anonymous { thp: true }
        );
        assert_eq!(
            cfg(&["--no-thp"]).unwrap().memory,
            MemoryBackend::Anonymous { thp: false }
        );
        assert_eq!(
            cfg(&["--memory", "shared"]).unwrap().memory,
            MemoryBackend::Shared
        );
        assert!(parse(&["run", "--memory", "hugetlb"]).is_err());
        assert_eq!(cfg(&[]).unwrap().zero_copy, ZeroCopy::Auto);
        assert_eq!(
            cfg(&["--test-refuse-every", "3"]).unwrap().zero_copy,
            ZeroCopy::RefuseEvery(3)
        );
        // --no-gpu with an explicit --vram is a usage error; the default does not conflict.
        assert!(parse(&["run", "--no-gpu", "--vram", "1G"]).is_err());
        assert!(parse(&["run", "--no-gpu", "--display", "640x480"]).is_err());
        assert!(parse(&["run", "--no-gpu", "--screenshot", "/tmp/x.png"]).is_err());
        let c = cfg(&["--display", "640x480", "--screenshot", "/tmp/x.png"]).unwrap();
        assert_eq!((c.display.width(), c.display.height()), (640, 480));
        assert_eq!(c.screenshot, Some(PathBuf::from("/tmp/x.png")));
        assert_eq!(cfg(&["--display", "4095X1"]).unwrap().display.width(), 4095);
        for bad in ["640", "640x", "x480", "axb", "640x480x2", "1x-5", ""] {
            let e = cfg(&["--display", bad]).unwrap_err();
            assert!(matches!(e, ConfigError::DisplaySyntax(_)), "{bad}: {e}");
        }
        for bad in ["0x480", "4096x480", "640x0", "640x99999"] {
            let e = cfg(&["--display", bad]).unwrap_err();
            assert!(matches!(e, ConfigError::DisplayRange { .. }), "{bad}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
        for bad in ["/nonexistent/dir/x.png", "/"] {
            let e = cfg(&["--screenshot", bad]).unwrap_err();
            assert!(matches!(e, ConfigError::ScreenshotDir(_)), "{bad}: {e}");
        }
        assert!(cfg(&["--screenshot", "relative.png"]).is_ok());
        assert!(parse(&["run", "--sample-ms", "-1"]).is_err());
    }

    #[test]
    fn all_options_and_guest_args() {
        let k = this_file();
        let r = parse(&[
            "run",
            "--kernel",
            &k,
            "--mem",
            "1G",
            "--vcpus",
            "4",
            "--timeout",
            "0",
            "--stats-json",
            "/tmp/s.json",
            "--vram",
            "512M",
            "--sample-ms",
            "10",
            "--",
            "workload",
            "--objects",
            "64",
        ])
        .unwrap();
        assert_eq!(r.guest_args, ["workload", "--objects", "64"]);
        let c = RunConfig::from_args(&r).unwrap();
        assert_eq!(c.mem_bytes, 1 << 30);
        assert_eq!(c.vcpus, 4);
        assert_eq!(c.timeout, None);
        assert_eq!(c.cmdline, "workload --objects 64");
        assert_eq!(c.kernel, PathBuf::from(k));
        assert_eq!(c.stats_json, Some(PathBuf::from("/tmp/s.json")));
        assert_eq!(c.vram_bytes, Some(512 << 20));
        assert_eq!(c.sample_interval, Some(Duration::from_millis(10)));
    }

    #[test]
    fn usage_errors_come_from_clap() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["run", "--vcpus", "two"]).is_err());
        assert!(parse(&["run", "--timeout", "-1"]).is_err());
        assert!(parse(&["run", "--timeout", "9223372036854775808"]).is_err());
        assert!(parse(&["run", "--timeout", "4294967296"]).is_err());
        assert!(parse(&["run", "--timeout", "4294967295"]).is_ok());
        assert!(parse(&["run", "--bogus"]).is_err());
        assert!(parse(&["run", "stray"]).is_err());
        assert!(parse(&["fly"]).is_err());
    }

    #[test]
    fn value_errors_are_config_errors() {
        let k = this_file();
        let cfg = |extra: &[&str]| {
            let mut a = vec!["run", "--kernel", &k];
            a.extend_from_slice(extra);
            RunConfig::from_args(&parse(&a).unwrap())
        };
        assert!(cfg(&[]).is_ok());
        assert!(matches!(
            cfg(&["--mem", "lots"]),
            Err(ConfigError::MemSize(_))
        ));
        assert!(matches!(
            cfg(&["--mem", "8M"]),
            Err(ConfigError::MemRange { .. })
        ));
        assert!(matches!(
            cfg(&["--mem", "17M"]),
            Err(ConfigError::MemRange { .. })
        ));
        assert!(matches!(
            cfg(&["--mem", "4G"]),
            Err(ConfigError::MemRange { .. })
        ));
        assert!(matches!(cfg(&["--vcpus", "0"]), Err(ConfigError::Vcpus(0))));
        assert!(matches!(cfg(&["--vcpus", "9"]), Err(ConfigError::Vcpus(9))));
        assert!(cfg(&["--vcpus", "8", "--mem", "3G"]).is_ok());
        let long = "x".repeat(layout::CMDLINE_MAX as usize + 1);
        assert!(matches!(
            cfg(&["--", &long]),
            Err(ConfigError::CmdlineTooLong { .. })
        ));
        let missing = RunConfig::from_args(&parse(&["run", "--kernel", "/nonexistent/k"]).unwrap());
        assert!(matches!(missing, Err(ConfigError::KernelMissing(_))));
    }

    #[test]
    fn default_kernel_search_reports_where_it_looked() {
        let c = vec![
            PathBuf::from("/nonexistent/a"),
            PathBuf::from("/nonexistent/b"),
        ];
        let e = find_default_kernel(&c).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/a, /nonexistent/b"), "{e}");
        assert!(e.contains("images/build.sh"), "{e}");
        let c = vec![PathBuf::from("/nonexistent/a"), PathBuf::from(this_file())];
        assert_eq!(find_default_kernel(&c).unwrap(), PathBuf::from(this_file()));
        assert!(default_kernel_candidates()[0].ends_with(DEFAULT_KERNEL));
    }
}
