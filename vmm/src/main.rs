//! `pvgpu`: the command-line front end of the VMM.

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use pvgpu::cli::{Cli, Command, RunArgs, RunConfig};
use pvgpu::run::state::STATUS_VMM_ERROR;
use pvgpu::run::stats::Timeline;

fn main() {
    // VMM start: every boot time is measured from here.
    let start = Instant::now();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .init();
    // Usage errors exit 2 (clap's convention); --help and --version exit 0.
    let cli = Cli::try_parse().unwrap_or_else(|e| e.exit());
    let status = match cli.command {
        Command::Run(args) => run(&args, start),
        Command::Bench(args) => pvgpu::tools::bench::main(&args),
        Command::Demo(args) => pvgpu::tools::demo::main(&args),
        Command::Device(args) => match pvgpu::vhost_backend::serve(&args) {
            Ok(()) => 0,
            Err(e) => fail(&e),
        },
    };
    std::process::exit(status);
}

fn run(args: &RunArgs, start: Instant) -> i32 {
    let config = match RunConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    // SIGINT, SIGTERM and SIGHUP end the run the orderly way (summary, stats, 128 + signal).
    if let Err(e) = pvgpu::run::signals::install() {
        return fail(&e);
    }
    let outcome = match pvgpu::vstate::vm::run(&config, Arc::new(Timeline::new(start))) {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    let mut status = outcome.end.status();
    if let Some(path) = &config.stats_json {
        if let Err(e) = outcome.stats.write(path) {
            eprintln!("pvgpu: error: cannot write {}: {e}", path.display());
            // The stats were asked for and are lost: not a success, whatever the guest said.
            if status == 0 {
                status = STATUS_VMM_ERROR;
            }
        }
    }
    if let pvgpu::run::state::GuestEnd::VmmError(e) = &outcome.end {
        eprintln!("pvgpu: error: {e}");
    }
    eprintln!("pvgpu: {}", outcome.stats.summary(&outcome.end));
    status
}

fn fail(e: &dyn std::fmt::Display) -> i32 {
    eprintln!("pvgpu: error: {e}");
    STATUS_VMM_ERROR
}
