//! The workloads the guest runs, chosen by the first word of its command line.

pub mod args;
pub mod basic;
pub mod bench;
pub mod checker;
pub mod concurrent;
pub mod display;
pub mod hostile;
pub mod object_checks;
pub mod objfuzz;
pub mod pressure;
pub mod selftest;
pub mod workload;
pub mod zerocopy;

use pvgpu_abi::boot_info::BootInfo;

use super::smp::{self, Job};

/// The guest's exit statuses (every check passed, a check failed, a command line the guest
/// does not understand), as the VMM and the tests know them.
pub use pvgpu_abi::exit_status::{FAILED as EXIT_FAILED, OK as EXIT_OK, USAGE as EXIT_USAGE};

const USAGE: &str = "usage: hello | exit N | selftest | workload [--objects N] [--mib M] \
                     [--copy|--no-clean] | zerocopy | pressure | concurrent | objfuzz [--ops N] [--seed S] | \
                     hostile | display [--no-clean] | bench-migrate [--mib M] [--object-mib S] [--fused] | \
                     bench-latency [--iters N] | scale [--objects N] | density [--mib M] | \
                     fault-ring0 [pf|ud|triple|emulator|stack] | fault-ring3 | \
                     stack-overflow | spin";

/// Runs the workload `args` names on vCPU 0 and returns the guest's exit status.
pub fn run(args: &[&str], info: &BootInfo) -> u8 {
    let (name, rest) = match args.split_first() {
        Some((n, r)) => (*n, r),
        None => ("hello", &[][..]),
    };
    if name == "selftest" {
        smp::post(Job::Selftest);
        return selftest::run(info);
    }
    if name == "hostile" && rest.is_empty() {
        return hostile::run(info);
    }
    let needs_gpu = matches!(
        name,
        "workload"
            | "zerocopy"
            | "pressure"
            | "concurrent"
            | "objfuzz"
            | "bench-migrate"
            | "bench-latency"
            | "scale"
            | "density"
    );
    if needs_gpu {
        if let Err(e) = crate::user::objects::ensure_started() {
            crate::println!("[pvgpu-guest] {name} needs the GPU device: {e}");
            smp::post(Job::Park);
            return EXIT_FAILED;
        }
    }
    if name == "concurrent" {
        smp::post(Job::Concurrent);
        let ok = concurrent::task(0, info.num_cpus);
        let failed = smp::wait_all(info.num_cpus - 1) + u32::from(!ok);
        crate::println!(
            "concurrent: {} of {} tasks passed",
            info.num_cpus - failed,
            info.num_cpus
        );
        return if failed == 0 { EXIT_OK } else { EXIT_FAILED };
    }
    smp::post(Job::Park);
    match (name, rest) {
        ("hello", []) => basic::hello(info),
        ("exit", [n]) => match n.parse::<u8>() {
            Ok(n) => n,
            Err(_) => usage(args),
        },
        ("fault-ring0", []) | ("fault-ring0", ["pf"]) => basic::fault_ring0(0),
        ("fault-ring0", ["ud"]) => basic::fault_ring0(1),
        ("fault-ring0", ["triple"]) => basic::fault_ring0(2),
        ("fault-ring0", ["emulator"]) => basic::fault_ring0(3),
        ("fault-ring0", ["stack"]) => basic::fault_ring0(4),
        ("fault-ring3", []) => basic::fault_ring3(),
        ("stack-overflow", []) => basic::stack_overflow(),
        ("spin", []) => basic::spin(),
        ("workload", rest) => workload::run(rest),
        ("display", rest) => display::run(rest, info),
        ("pressure", []) => pressure::run(),
        ("zerocopy", []) => zerocopy::run(),
        ("objfuzz", rest) => objfuzz::run(rest),
        ("bench-migrate", rest) => bench::migrate(rest),
        ("bench-latency", rest) => bench::latency(rest),
        ("scale", rest) => bench::scale(rest),
        ("density", rest) => bench::density(rest),
        _ => usage(args),
    }
}

fn usage(args: &[&str]) -> u8 {
    crate::println!("[pvgpu-guest] unknown command line {args:?}; {USAGE}");
    EXIT_USAGE
}
