//! The host-memory plot of `pvgpu demo`: resident guest RAM, VRAM and their total over time,
//! with the guest's phases as labelled vertical lines, and optionally a baseline run's total
//! (the copy path) beside it, drawn with plotters into a PNG.
//!
//! Text is drawn with ab_glyph and a font compiled into the binary (Ubuntu Light, from the
//! `epaint_default_fonts` crate), so the plot needs no fontconfig and no system fonts.
//! (plotters' ab_glyph renderer ignores each glyph's left side bearing, which leaves visible
//! gaps after narrow glyphs in a monospaced font; a proportional font hides it.)

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use crate::run::stats::MemSnapshot;
use crate::tools::measure::MIB;

/// The picture's size in pixels.
pub const SIZE: (u32, u32) = (1400, 800);

/// Errors of the plot.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// There is nothing to draw.
    #[error("no host-memory samples to plot")]
    NoData,
    /// The built-in font could not be registered.
    #[error("the built-in font could not be loaded")]
    Font,
    /// plotters failed (drawing or writing the PNG).
    #[error("cannot draw {path}: {message}")]
    Draw {
        /// The PNG.
        path: String,
        /// plotters' error.
        message: String,
    },
}

/// Host memory at one moment of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Seconds since VMM start.
    pub t_s: f64,
    /// Host memory then.
    pub mem: MemSnapshot,
}

/// A phase marker to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Seconds since VMM start.
    pub t_s: f64,
    /// Its label, e.g. `cleaned`.
    pub label: String,
    /// Whether to make it stand out (the "cleaned" marker).
    pub highlight: bool,
}

/// What to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlot {
    /// The title.
    pub title: String,
    /// A line of explanation drawn inside the plot near the highlighted marker, if any.
    pub note: Option<String>,
    /// Host memory over time (any order; sorted before drawing).
    pub points: Vec<Point>,
    /// The phases.
    pub markers: Vec<Marker>,
    /// Horizontal reference levels, e.g. 1x and 2x the object bytes.
    pub levels: Vec<Level>,
    /// Another run's total to draw beside this one (e.g. the copy path), if any.
    pub baseline: Option<Baseline>,
}

/// A baseline run's total host memory, already on this plot's time axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// Its legend entry.
    pub label: String,
    /// (seconds, bytes), any order.
    pub points: Vec<(f64, u64)>,
}

/// A horizontal reference line.
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    /// Where, in bytes.
    pub bytes: u64,
    /// Its label, drawn above the line at the right.
    pub label: String,
}

const FONT: &str = "sans-serif";

/// One data series: legend name, colour, stroke width, points.
type Line<'a> = (&'a str, RGBColor, u32, Vec<(f64, f64)>);

fn register_font() -> Result<(), PlotError> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

const GUEST_RAM: RGBColor = RGBColor(31, 119, 180);
const VRAM: RGBColor = RGBColor(230, 120, 20);
const TOTAL: RGBColor = RGBColor(20, 20, 20);
const MARKER: RGBColor = RGBColor(150, 150, 150);
const HIGHLIGHT: RGBColor = RGBColor(200, 30, 30);
const BASELINE: RGBColor = RGBColor(170, 170, 170);

fn mib(b: u64) -> f64 {
    b as f64 / MIB
}

impl MemoryPlot {
    /// Draws the plot into a PNG at `path`.
    pub fn draw_png(&self, path: &Path) -> Result<(), PlotError> {
        register_font()?;
        let err = |e: &dyn std::fmt::Display| PlotError::Draw {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let mut pts = self.points.clone();
        pts.retain(|p| p.t_s.is_finite());
        if pts.is_empty() {
            return Err(PlotError::NoData);
        }
        pts.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        let mut base: Vec<(f64, f64)> = self
            .baseline
            .iter()
            .flat_map(|b| b.points.iter())
            .filter(|(t, _)| t.is_finite())
            .map(|&(t, b)| (t, mib(b)))
            .collect();
        base.sort_by(|a, b| a.0.total_cmp(&b.0));
        let t_end = pts
            .iter()
            .map(|p| p.t_s)
            .chain(self.markers.iter().map(|m| m.t_s))
            .chain(base.iter().map(|p| p.0))
            .fold(0.0f64, f64::max)
            .max(0.01);
        let peak = pts
            .iter()
            .map(|p| mib(p.mem.guest_ram_bytes + p.mem.vram_bytes))
            .chain(base.iter().map(|p| p.1))
            .fold(1.0f64, f64::max);
        // Head room above the peak for the phase labels and the legend.
        let y_max = (peak * 1.32).ceil();

        let root = BitMapBackend::new(path, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, (FONT, 30))
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..t_end * 1.06, 0.0..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("time since the VM started (seconds)")
            .y_desc("host memory (MiB)")
            .axis_desc_style((FONT, 22))
            .label_style((FONT, 18))
            .light_line_style(RGBColor(240, 240, 240))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_label_formatter(&|x| format!("{x:.1}"))
            .draw()
            .map_err(|e| err(&e))?;

        // Reference levels and phase markers first, under the data. The level labels and the
        // note go just right of the highlighted marker (the clean), where the lines are flat.
        let annotate_x = self
            .markers
            .iter()
            .find(|m| m.highlight)
            .map_or(t_end * 0.5, |m| m.t_s + t_end * 0.01);
        for l in &self.levels {
            let y = mib(l.bytes);
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, y), (t_end * 1.06, y)],
                    3,
                    6,
                    RGBColor(120, 120, 120).stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    l.label.clone(),
                    (annotate_x, y + y_max * 0.015),
                    (FONT, 17)
                        .into_font()
                        .color(&RGBColor(90, 90, 90))
                        .pos(Pos::new(HPos::Left, VPos::Bottom)),
                )))
                .map_err(|e| err(&e))?;
        }
        let label_font = (FONT, 19).into_font();
        for (i, m) in self.markers.iter().enumerate() {
            let color = if m.highlight { HIGHLIGHT } else { MARKER };
            let style = ShapeStyle {
                color: color.to_rgba(),
                filled: false,
                stroke_width: if m.highlight { 3 } else { 2 },
            };
            chart
                .draw_series(DashedLineSeries::new(
                    [(m.t_s, 0.0), (m.t_s, y_max * 0.82)],
                    8,
                    5,
                    style,
                ))
                .map_err(|e| err(&e))?;
            // Three label rows in turn, so close markers (MIGRATE_CLEAN puts "migrated" and
            // "cleaned" right after "filled") do not overlap.
            let row = [0.945, 0.895, 0.845][i % 3];
            let text = format!("{}. {}", i + 1, m.label);
            let style = label_font.clone().color(&color);
            chart
                .draw_series(std::iter::once(Text::new(
                    text,
                    (m.t_s, y_max * row),
                    style.pos(Pos::new(HPos::Center, VPos::Center)),
                )))
                .map_err(|e| err(&e))?;
        }

        let series = |f: fn(&MemSnapshot) -> u64| -> Vec<(f64, f64)> {
            pts.iter().map(|p| (p.t_s, mib(f(&p.mem)))).collect()
        };
        if let Some(b) = &self.baseline {
            chart
                .draw_series(LineSeries::new(base, BASELINE.stroke_width(3)))
                .map_err(|e| err(&e))?
                .label(b.label.clone())
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], BASELINE.stroke_width(3))
                });
        }
        let lines: [Line; 3] = [
            (
                "total (guest RAM + VRAM)",
                TOTAL,
                4,
                series(|m| m.guest_ram_bytes + m.vram_bytes),
            ),
            (
                "guest RAM (resident pages)",
                GUEST_RAM,
                3,
                series(|m| m.guest_ram_bytes),
            ),
            ("VRAM (resident pages)", VRAM, 3, series(|m| m.vram_bytes)),
        ];
        for (name, color, width, data) in lines {
            chart
                .draw_series(LineSeries::new(data, color.stroke_width(width)))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(width))
                });
        }

        if let Some(note) = &self.note {
            for (i, line) in note.lines().enumerate() {
                chart
                    .draw_series(std::iter::once(Text::new(
                        line.to_owned(),
                        (annotate_x, y_max * (0.64 - i as f64 * 0.05)),
                        (FONT, 22).into_font().color(&HIGHLIGHT),
                    )))
                    .map_err(|e| err(&e))?;
            }
        }

        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .margin(10)
            .label_font((FONT, 19))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(g: u64, v: u64) -> MemSnapshot {
        MemSnapshot {
            guest_ram_bytes: g << 20,
            vram_bytes: v << 20,
            ..Default::default()
        }
    }

    #[test]
    fn draws_a_png_with_text() {
        let plot = MemoryPlot {
            title: "test plot".into(),
            note: Some("clean: -256 MiB\nsecond line".into()),
            points: [(0.0, 0, 0), (0.5, 256, 0), (0.7, 256, 256), (0.9, 1, 256)]
                .into_iter()
                .map(|(t, g, v)| Point {
                    t_s: t,
                    mem: snap(g, v),
                })
                .collect(),
            levels: vec![Level {
                bytes: 256 << 20,
                label: "1x".into(),
            }],
            markers: vec![
                Marker {
                    t_s: 0.5,
                    label: "filled".into(),
                    highlight: false,
                },
                Marker {
                    t_s: 0.9,
                    label: "cleaned".into(),
                    highlight: true,
                },
            ],
            baseline: Some(Baseline {
                label: "copy path".into(),
                points: vec![
                    (0.0, 0),
                    (0.5, 256 << 20),
                    (0.8, 512 << 20),
                    (1.0, 256 << 20),
                ],
            }),
        };
        let path = std::env::temp_dir().join(format!("pvgpu-plot-{}.png", std::process::id()));
        plot.draw_png(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
    }

    #[test]
    fn no_points_is_an_error() {
        let plot = MemoryPlot {
            title: String::new(),
            note: None,
            points: vec![],
            markers: vec![],
            levels: vec![],
            baseline: None,
        };
        assert!(matches!(
            plot.draw_png(Path::new("/nonexistent/x.png")),
            Err(PlotError::NoData)
        ));
    }
}
