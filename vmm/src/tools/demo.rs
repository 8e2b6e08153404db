//! `pvgpu demo`: boots a guest that runs `workload` in phases (fill, MIGRATE_CLEAN, touch,
//! destroy), forwards its progress lines, prints host memory at each phase, then boots the
//! same workload on the copy path (`--copy`: MIGRATE, then CLEAN) as the baseline, and draws
//! both into the host-memory plot ([`crate::tools::plot`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use pvgpu_abi::layout::{self, phase};

use crate::run::stats::{PhaseMark, RunStats};
use crate::tools::bench::guest::{run_guest, GuestSpec};
use crate::tools::bench::{resolve_kernel, BenchError, Plan};
use crate::tools::measure::{ratio, MIB};
use crate::tools::plot::{Baseline, Level, Marker, MemoryPlot, PlotError, Point};

/// Default `--out`.
pub const DEFAULT_OUT: &str = "pvgpu-demo.png";

/// Options of `pvgpu demo`.
#[derive(Debug, Args, Clone, PartialEq, Eq)]
pub struct DemoArgs {
    /// Where to write the plot of host memory over time
    #[arg(long, value_name = "PATH", default_value = DEFAULT_OUT)]
    pub out: PathBuf,
    /// The guest kernel ELF [default: images/out/pvgpu-guest]
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Number of objects
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub objects: u64,
    /// Their total size in MiB
    #[arg(long, value_name = "M", default_value_t = 256)]
    pub mib: u64,
}

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The kernel could not be found or the guest failed.
    #[error(transparent)]
    Run(#[from] BenchError),
    /// The plot could not be drawn.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// Bad sizes.
    #[error("--objects and --mib must be at least 1, and --mib at most {max}")]
    Sizes {
        /// The largest --mib.
        max: u64,
    },
}

/// The largest `--mib`: its guest needs three times that in RAM.
pub const MAX_MIB: u64 = layout::RAM_MAX / 3 / (1 << 20);

/// `pvgpu demo`. Returns the exit status.
pub fn main(args: &DemoArgs) -> i32 {
    match demo(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pvgpu demo: error: {e}");
            1
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB)
}

fn demo(args: &DemoArgs) -> Result<(), DemoError> {
    if args.objects == 0 || args.mib == 0 || args.mib > MAX_MIB {
        return Err(DemoError::Sizes { max: MAX_MIB });
    }
    let kernel = resolve_kernel(args.kernel.as_deref()).map_err(BenchError::from)?;
    let mut spec = GuestSpec::new(
        format!("workload --objects {} --mib {}", args.objects, args.mib),
        Plan::mem_for(args.mib),
    );
    spec.vram_bytes = (args.mib << 20)
        .max(layout::VRAM_DEFAULT)
        .next_multiple_of(layout::LARGE_PAGE_SIZE);
    spec.sample = Some(Duration::from_millis(5));
    println!(
        "pvgpu demo: a guest with {} of RAM creates {} GPU objects ({} MiB), fills them, \
         moves them into VRAM with MIGRATE_CLEAN (the host moves their guest pages, never \
         holding two copies), touches them (they fault back), and destroys them. Then the \
         same with the copy path (MIGRATE, then CLEAN) as the baseline.",
        crate::size::format_size(spec.mem_bytes),
        args.objects,
        args.mib
    );
    println!("pvgpu demo: booting `{}` ...", spec.cmdline);
    let g = run_guest(&kernel, &spec, true)?;
    let copy_spec = GuestSpec {
        cmdline: format!("{} --copy", spec.cmdline),
        ..spec.clone()
    };
    println!(
        "pvgpu demo: booting `{}` (the baseline) ...",
        copy_spec.cmdline
    );
    let base = run_guest(&kernel, &copy_spec, false)?;
    print!("{}", report(&g.stats, Some(&base.stats)));
    let plot = plot_of(&g.stats, Some(&base.stats), args.objects, args.mib);
    plot.draw_png(&args.out)?;
    println!(
        "pvgpu demo: wrote {} (host memory over time, phases marked)",
        args.out.display()
    );
    Ok(())
}

fn host(p: &PhaseMark) -> u64 {
    p.mem.guest_ram_bytes + p.mem.vram_bytes
}

/// The short report: host memory at each phase, what clean gave back, and the peaks during
/// migrate and clean of this run and of the `baseline` (copy path) run.
pub fn report(stats: &RunStats, baseline: Option<&RunStats>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nhost memory at each phase (resident bytes the host really holds):"
    );
    let _ = writeln!(
        out,
        "  {:<14} {:>8}  {:>11}  {:>11}  {:>11}",
        "phase", "time", "guest RAM", "VRAM", "total"
    );
    for p in &stats.phases {
        let _ = writeln!(
            out,
            "  {:<14} {:>6.2} s  {:>11}  {:>11}  {:>11}",
            format!("{}. {}", p.phase, phase::name(p.phase)),
            p.t_ms / 1e3,
            mib(p.mem.guest_ram_bytes),
            mib(p.mem.vram_bytes),
            mib(host(p))
        );
    }
    if let (Some(filled), Some(cleaned)) = (stats.phase(phase::FILLED), stats.phase(phase::CLEANED))
    {
        let freed = filled
            .mem
            .guest_ram_bytes
            .saturating_sub(cleaned.mem.guest_ram_bytes);
        let cleaned_bytes = stats.device.as_ref().map_or(0, |d| d.bytes_cleaned);
        let _ = writeln!(
            out,
            "clean: guest RAM fell by {} (the device cleaned {}); total host memory {} -> {}",
            mib(freed),
            mib(cleaned_bytes),
            mib(host(filled)),
            mib(host(cleaned))
        );
        // Per object byte: VRAM after clean holds exactly the objects.
        let obj = cleaned.mem.vram_bytes as f64;
        let peak = |s: &RunStats| {
            s.peak_host_between(phase::FILLED, phase::CLEANED)
                .and_then(|p| ratio(p as f64, obj))
        };
        if let (Some(top), Some(after)) = (peak(stats), ratio(host(cleaned) as f64, obj)) {
            let _ = writeln!(
                out,
                "       host bytes per object byte: peak {top:.2}x during migrate and clean, \
                 {after:.2}x after (virtio-gpu keeps both copies: 2x)"
            );
        }
        if let Some(b) = baseline.and_then(peak) {
            let _ = writeln!(
                out,
                "       the copy path (MIGRATE, then CLEAN) peaked at {b:.2}x: both copies until CLEAN"
            );
        }
        if let Some(d) = &stats.device {
            let _ = writeln!(
                out,
                "       pages moved, not copied: {} ({} copied)",
                mib(d.bytes_moved),
                mib(d.bytes_move_copied)
            );
        }
    }
    out
}

/// The plot of a `workload` run's stats, with the `baseline` run's total beside it (its time
/// shifted so that both runs' "filled" markers line up).
pub fn plot_of(
    stats: &RunStats,
    baseline: Option<&RunStats>,
    objects: u64,
    mib_total: u64,
) -> MemoryPlot {
    let mut points: Vec<Point> = stats
        .samples
        .iter()
        .map(|s| Point {
            t_s: s.t_ms / 1e3,
            mem: s.mem,
        })
        .collect();
    points.extend(stats.phases.iter().map(|p| Point {
        t_s: p.t_ms / 1e3,
        mem: p.mem,
    }));
    let markers = stats
        .phases
        .iter()
        .map(|p| Marker {
            t_s: p.t_ms / 1e3,
            label: phase::name(p.phase).to_owned(),
            highlight: p.phase == phase::CLEANED,
        })
        .collect();
    let note = stats
        .phase(phase::FILLED)
        .zip(stats.phase(phase::CLEANED))
        .map(|(f, c)| {
            format!(
                "MIGRATE_CLEAN: the pages move into VRAM:\n-{} of guest RAM, never two copies\n(the data lives on in VRAM)",
                mib(f.mem.guest_ram_bytes.saturating_sub(c.mem.guest_ram_bytes))
            )
        });
    let baseline = baseline.and_then(|b| {
        let shift = stats.phase(phase::FILLED)?.t_ms - b.phase(phase::FILLED)?.t_ms;
        let host = |m: &crate::run::stats::MemSnapshot| m.guest_ram_bytes + m.vram_bytes;
        Some(Baseline {
            label: "total, copy path (MIGRATE, then CLEAN)".to_owned(),
            points: b
                .samples
                .iter()
                .map(|s| ((s.t_ms + shift) / 1e3, host(&s.mem)))
                .chain(
                    b.phases
                        .iter()
                        .map(|p| ((p.t_ms + shift) / 1e3, host(&p.mem))),
                )
                .filter(|(t, _)| *t >= 0.0)
                .collect(),
        })
    });
    let object_bytes = mib_total << 20;
    MemoryPlot {
        title: format!(
            "pvgpu demo: host memory while one guest works on {objects} GPU objects ({mib_total} MiB)"
        ),
        note,
        points,
        markers,
        levels: vec![
            Level {
                bytes: object_bytes,
                label: format!("1x the object data ({mib_total} MiB): one copy"),
            },
            Level {
                bytes: 2 * object_bytes,
                label: "2x: two copies (guest pages + VRAM), what virtio-gpu keeps".to_owned(),
            },
        ],
        baseline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::state::GuestEnd;
    use crate::run::stats::{MemSnapshot, RunShape, Sample, Timeline};
    use std::time::Instant;

    fn stats() -> RunStats {
        let t = Timeline::new(Instant::now());
        let m = |g: u64, v: u64| MemSnapshot {
            guest_ram_bytes: g << 20,
            vram_bytes: v << 20,
            ..Default::default()
        };
        for (n, ms, g, v) in [
            (1, 500.0, 257, 0),
            (2, 700.0, 257, 256),
            (3, 800.0, 1, 256),
            (4, 1400.0, 257, 0),
            (5, 1450.0, 257, 0),
        ] {
            t.add_phase(PhaseMark {
                phase: n,
                t_ms: ms,
                mem: m(g, v),
            });
        }
        t.add_sample(Sample {
            t_ms: 10.0,
            mem: m(0, 0),
        });
        RunStats::collect(
            &t,
            &GuestEnd::Exit(0),
            RunShape {
                vcpus: 1,
                mem_bytes: 768 << 20,
                vram_size: Some(256 << 20),
                sample_ms: 10,
            },
            m(257, 0),
            Some(pvgpu_device::DeviceStats {
                bytes_cleaned: 256 << 20,
                bytes_moved: 512 << 20,
                ..Default::default()
            }),
        )
    }

    #[test]
    fn report_shows_every_phase_and_the_drop() {
        let s = stats();
        let r = report(&s, Some(&s));
        for needle in [
            "1. filled",
            "3. cleaned",
            "5. destroyed",
            "513.0 MiB",
            "clean: guest RAM fell by 256.0 MiB (the device cleaned 256.0 MiB)",
            "peak 2.00x during migrate and clean, 1.00x after",
            "the copy path (MIGRATE, then CLEAN) peaked at 2.00x",
            "pages moved, not copied: 512.0 MiB (0.0 MiB copied)",
        ] {
            assert!(r.contains(needle), "{needle} missing:\n{r}");
        }
    }

    #[test]
    fn plot_has_the_phases_and_the_samples() {
        let s = stats();
        let p = plot_of(&s, Some(&s), 64, 256);
        assert_eq!(p.baseline.as_ref().map(|b| b.points.len()), Some(6));
        assert_eq!(p.points.len(), 6);
        assert_eq!(p.markers.len(), 5);
        assert_eq!(p.markers.iter().filter(|m| m.highlight).count(), 1);
        assert_eq!(p.markers[2].label, "cleaned");
        assert!(p.note.as_deref().is_some_and(|n| n.contains("-256.0 MiB")));
    }
}
