//! The loss curve of a run as a standalone SVG, drawn by hand from `metrics.jsonl`: training
//! loss per step, held-out loss where measured, with axes, ticks, labels and a legend. An SVG
//! opens in any browser and diffs as text; a plotting crate would add a large dependency for one
//! chart. Tick spacing is the usual 1–2–5 "nice numbers" rule (Heckbert, Graphics Gems I, 1990).

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Result, TrainingError};
use crate::metrics::{StepMetrics, read_metrics};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 432.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 56.0;
const TRAINING_COLOUR: &str = "#1f77b4";
const HELD_OUT_COLOUR: &str = "#d62728";

/// Reads `metrics_path` and writes the loss curve to `svg_path`.
pub fn write_loss_plot(metrics_path: &Path, svg_path: &Path, title: &str) -> Result<()> {
    let records = read_metrics(metrics_path)?;
    let svg = loss_curve_svg(&records, title)?;
    std::fs::write(svg_path, svg).map_err(TrainingError::io(svg_path))
}

/// The SVG text of the loss curve of `records`. Non-finite losses are left out of the lines.
pub fn loss_curve_svg(records: &[StepMetrics], title: &str) -> Result<String> {
    let training: Vec<(f64, f64)> = records
        .iter()
        .map(|r| (r.step as f64, r.loss))
        .filter(|(_, loss)| loss.is_finite())
        .collect();
    let held_out: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| r.held_out_loss.map(|loss| (r.step as f64, loss)))
        .filter(|(_, loss)| loss.is_finite())
        .collect();
    let all = || training.iter().chain(&held_out);
    let (Some(step_range), Some(loss_range)) = (
        range(all().map(|point| point.0)),
        range(all().map(|point| point.1)),
    ) else {
        return Err(TrainingError::InvalidValue {
            field: "records",
            value: format!("{} lines", records.len()),
            reason: "no finite loss to plot",
        });
    };
    let frame = Frame {
        x_ticks: nice_ticks(step_range),
        y_ticks: nice_ticks(loss_range),
    };
    let series = [
        ("training loss", TRAINING_COLOUR, &training),
        ("held-out loss", HELD_OUT_COLOUR, &held_out),
    ];
    let series: Vec<_> = series
        .into_iter()
        .filter(|(_, _, points)| !points.is_empty())
        .collect();

    let mut svg = String::new();
    // Writing to a String cannot fail; the results of `writeln!` are ignored for that reason.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    frame.write_grid(&mut svg);
    Frame::write_axes(&mut svg);
    for (label, colour, points) in &series {
        let coordinates: Vec<String> = points
            .iter()
            .map(|&(step, loss)| format!("{:.2},{:.2}", frame.x(step), frame.y(loss)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline class="series" data-label="{label}" points="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#,
            coordinates.join(" ")
        );
    }
    write_legend(
        &mut svg,
        series.iter().map(|(label, colour, _)| (*label, *colour)),
    );
    svg.push_str("</svg>\n");
    Ok(svg)
}

const PLOT_WIDTH: f64 = WIDTH - LEFT - RIGHT;
const PLOT_HEIGHT: f64 = HEIGHT - TOP - BOTTOM;

/// The data ranges (the outer ticks) and the mapping from data to pixels.
struct Frame {
    x_ticks: Vec<f64>,
    y_ticks: Vec<f64>,
}

impl Frame {
    fn x(&self, step: f64) -> f64 {
        let (low, high) = (self.x_ticks[0], self.x_ticks[self.x_ticks.len() - 1]);
        LEFT + (step - low) / (high - low) * PLOT_WIDTH
    }

    fn y(&self, loss: f64) -> f64 {
        let (low, high) = (self.y_ticks[0], self.y_ticks[self.y_ticks.len() - 1]);
        TOP + (high - loss) / (high - low) * PLOT_HEIGHT
    }

    /// Light grid lines at every tick, with the tick labels.
    fn write_grid(&self, svg: &mut String) {
        for &tick in &self.x_ticks {
            let position = self.x(tick);
            let _ = writeln!(
                svg,
                r##"<line x1="{position:.2}" y1="{TOP}" x2="{position:.2}" y2="{}" stroke="#e0e0e0"/>"##,
                TOP + PLOT_HEIGHT
            );
            let _ = writeln!(
                svg,
                r#"<text x="{position:.2}" y="{}" text-anchor="middle">{}</text>"#,
                TOP + PLOT_HEIGHT + 18.0,
                format_tick(tick)
            );
        }
        for &tick in &self.y_ticks {
            let position = self.y(tick);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{position:.2}" x2="{}" y2="{position:.2}" stroke="#e0e0e0"/>"##,
                LEFT + PLOT_WIDTH
            );
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{:.2}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                position + 4.0,
                format_tick(tick)
            );
        }
    }

    /// The left and bottom axes and their labels.
    fn write_axes(svg: &mut String) {
        let _ = writeln!(
            svg,
            r#"<polyline points="{LEFT},{TOP} {LEFT},{bottom} {right},{bottom}" fill="none" stroke="black"/>"#,
            bottom = TOP + PLOT_HEIGHT,
            right = LEFT + PLOT_WIDTH
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">step</text>"#,
            LEFT + PLOT_WIDTH / 2.0,
            HEIGHT - 14.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="18" y="{0}" text-anchor="middle" transform="rotate(-90 18 {0})">loss</text>"#,
            TOP + PLOT_HEIGHT / 2.0
        );
    }
}

/// A colour swatch and a label per series, top right inside the plot.
fn write_legend<'a>(svg: &mut String, entries: impl Iterator<Item = (&'a str, &'a str)>) {
    for (index, (label, colour)) in entries.enumerate() {
        let row = TOP + 14.0 + 18.0 * index as f64;
        let start = LEFT + PLOT_WIDTH - 130.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{start}" y1="{row}" x2="{}" y2="{row}" stroke="{colour}" stroke-width="2"/>"#,
            start + 24.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{label}</text>"#,
            start + 30.0,
            row + 4.0
        );
    }
}

fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |range, value| match range {
        None => Some((value, value)),
        Some((low, high)) => Some((low.min(value), high.max(value))),
    })
}

/// Tick positions covering `(low, high)` at a 1, 2 or 5 × 10^k spacing, about five of them.
fn nice_ticks((low, high): (f64, f64)) -> Vec<f64> {
    // A flat line still needs an axis with some height.
    let (low, high) = if high > low {
        (low, high)
    } else {
        (low - 0.5, high + 0.5)
    };
    let rough = (high - low) / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let spacing = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|multiple| multiple * magnitude)
        .find(|spacing| *spacing >= rough)
        .unwrap_or(10.0 * magnitude);
    let first = (low / spacing).floor();
    let last = (high / spacing).ceil();
    (0..=(last - first) as usize)
        .map(|index| (first + index as f64) * spacing)
        .collect()
}

fn format_tick(value: f64) -> String {
    // Enough decimals for the spacing, and no "-0".
    let rounded = (value * 1e6).round() / 1e6;
    let text = format!("{rounded}");
    if text == "-0" { "0".to_owned() } else { text }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: u64, loss: f64, held_out_loss: Option<f64>) -> StepMetrics {
        StepMetrics {
            step,
            loss,
            learning_rate: 1e-3,
            grad_norm: 1.0,
            tokens: 10,
            tokens_per_s: 100.0,
            elapsed_s: 1.0,
            held_out_loss,
            extra: serde_json::Map::new(),
        }
    }

    fn polyline_points(svg: &str, label: &str) -> usize {
        let marker = format!(r#"data-label="{label}" points=""#);
        let start = svg.find(&marker).unwrap() + marker.len();
        let end = start + svg[start..].find('"').unwrap();
        svg[start..end].split(' ').count()
    }

    #[test]
    fn one_point_per_step_and_per_held_out_measurement() {
        let records: Vec<_> = (1..=23)
            .map(|step| {
                record(
                    step,
                    5.0 / step as f64,
                    (step % 5 == 0).then_some(4.0 / step as f64),
                )
            })
            .collect();
        let svg = loss_curve_svg(&records, "sft <tiny>").unwrap();
        assert_eq!(polyline_points(&svg, "training loss"), 23);
        assert_eq!(polyline_points(&svg, "held-out loss"), 4);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("sft &lt;tiny&gt;"));
        // Every element opened is closed: XML-ish balance of tags.
        let opened = svg.matches('<').count();
        let self_closed = svg.matches("/>").count();
        let closing = svg.matches("</").count();
        assert_eq!(opened, self_closed + 2 * closing);
        assert!(svg.contains(">step</text>") && svg.contains(">loss</text>"));
    }

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        assert_eq!(nice_ticks((1.0, 23.0)), [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]);
        assert_eq!(nice_ticks((0.21, 4.9)), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        // A flat line gets an axis around it.
        let flat = nice_ticks((2.0, 2.0));
        assert!(flat[0] <= 1.5 && flat[flat.len() - 1] >= 2.5, "{flat:?}");
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        let error = loss_curve_svg(&[record(1, f64::NAN, None)], "x").unwrap_err();
        assert_eq!(
            error.to_string(),
            "records = 1 lines: no finite loss to plot"
        );
    }
}
