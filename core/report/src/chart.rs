//! The charts, drawn with plotters into SVG text that the page puts inline, shaped after the
//! nested-KVM article's figures:
//!
//! - `shell_loop`, `boot`: a bar per target in level order at its median, the fastest to the
//!   slowest run as a whisker, the step over the level below written on it.
//! - `sha256` and any other kind timed in runs: every run as a point per target, the median as a
//!   line across them.
//! - Where the article published steps (`shell_loop`): a second chart of each step over the level
//!   below, measured beside the article's.
//! - `block_read`: cold and hot throughput against the file's size, a line per target.
//!
//! A network benchmark has no chart: its matrix is a table (see [`crate::html`]). Text goes through
//! plotters' SVG backend as `<text>` elements: with plotters' font features off it measures text
//! with a rough estimate and never loads a font, so labels are placed with room to spare.

use std::collections::{BTreeMap, BTreeSet};

use plotters::coord::ranged1d::AsRangedCoord;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use crate::article;
use crate::results::{meta_str, Benchmark, Row};
use crate::text::{bytes, percent, value};

/// One chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// A whole `<svg>` element.
    pub svg: String,
    /// What the colours mean: a CSS colour and its label, for the page to put under the chart.
    pub legend: Vec<(String, String)>,
    /// One line on how to read it.
    pub caption: String,
}

/// Why a chart could not be drawn.
pub type DrawError = Box<dyn std::error::Error + Send + Sync>;

type Root<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Columns<'a, 'b, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 420;
const FONT: &str = "sans-serif";
const MARGIN_TOP: u32 = 20;
const NAMES_PX: u32 = 62;
/// How much room the labels over a column take, in pixels.
const LABELS_PX: f64 = 64.0;
/// The height of the plotting area of a chart with columns.
const PLOT_PX: f64 = (HEIGHT - MARGIN_TOP - NAMES_PX) as f64;

const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);
const MUTED: RGBColor = RGBColor(0x70, 0x70, 0x70);
const ARTICLE: RGBColor = RGBColor(0xb8, 0xb8, 0xb8);
const GRID: RGBColor = RGBColor(0xe6, 0xe6, 0xe6);

/// The charts of `b`: none when its kind has no chart or nothing of the shape it draws.
pub fn charts(b: &Benchmark) -> Result<Vec<Chart>, DrawError> {
    if b.is_matrix() {
        return Ok(vec![]);
    }
    let mut out = match b.kind.as_str() {
        "shell_loop" | "boot" => vec![medians(b)?],
        "block_read" => throughput(b)?.into_iter().collect(),
        "network" => vec![],
        _ => vec![runs(b)?],
    };
    if article::has_figures(&b.kind) && b.rows.iter().any(|r| r.summary.vs_below.is_some()) {
        out.push(steps(b)?);
    }
    Ok(out)
}

/// How a target runs, as a colour: the machine itself, under KVM, or emulated.
fn colour(row: &Row) -> (RGBColor, &'static str) {
    match (row.level, row.acceleration.as_deref()) {
        (0, _) => (RGBColor(0x33, 0x4e, 0x7a), "level 0: the machine itself"),
        (_, Some("kvm")) => (RGBColor(0x3b, 0x8e, 0xd0), "kvm: hardware-assisted"),
        (_, Some("tcg")) => (RGBColor(0xe0, 0x7b, 0x39), "tcg: emulated"),
        _ => (RGBColor(0x99, 0x99, 0x99), "acceleration not recorded"),
    }
}

fn css(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// Text of `size` (plotters writes 1/1.24 of it as the SVG font size) anchored at `h`, `v`.
fn style(size: f64, weight: FontStyle, colour: RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    let mut st = TextStyle::from((FONT, size, weight).into_font()).pos(Pos::new(h, v));
    st.color = colour.to_backend_color();
    st
}

/// The legend of the colours `rows` use, in level order.
fn legend<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in rows {
        let (c, label) = colour(r);
        if !out.iter().any(|(_, l)| l == label) {
            out.push((css(c), label.to_string()));
        }
    }
    out
}

/// A chart with a column per row on x (-0.5 to n - 0.5, unlabelled: [`names`] labels it) and `y`.
fn columns<'a, 'b, Y: AsRangedCoord<Value = f64>>(
    root: &'a Root<'b>,
    n: usize,
    y: Y,
) -> Result<Columns<'a, 'b, Y::CoordDescType>, DrawError> {
    Ok(ChartBuilder::on(root)
        .margin_top(MARGIN_TOP)
        .margin_right(24)
        .margin_left(8)
        .x_label_area_size(NAMES_PX)
        .y_label_area_size(92)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, y)?)
}

/// The top of a linear y axis whose highest figure is `top`, with room over it for the labels.
fn linear_top(top: f64) -> f64 {
    if top > 0.0 {
        top / (1.0 - LABELS_PX / PLOT_PX)
    } else {
        1.0
    }
}

/// An axis tick of `unit` on an axis up to `max`: `250 ms`, `2.5 s`, `600 s`, `3000 MB/s`.
fn tick(v: f64, max: f64, unit: &str) -> String {
    match unit {
        "s" if max < 1.0 => format!("{:.0} ms", v * 1000.0),
        "s" if max < 10.0 => format!("{v:.1} s"),
        "s" => format!("{v:.0} s"),
        _ => format!("{v:.0} {unit}"),
    }
}

/// Two lines under each column: the target, then its level and how that level runs.
fn names<Y: Ranged<ValueType = f64>>(
    chart: &mut Columns<'_, '_, Y>,
    rows: &[&Row],
    bottom: f64,
) -> Result<(), DrawError> {
    let slot_chars =
        (chart.plotting_area().dim_in_pixel().0 as f64 / rows.len().max(1) as f64 / 7.5) as usize;
    for (i, r) in rows.iter().enumerate() {
        let how = match (r.level, r.acceleration.as_deref()) {
            (0, _) => "level 0".to_string(),
            (l, Some(a)) => format!("level {l} · {a}"),
            (l, None) => format!("level {l}"),
        };
        chart.draw_series(std::iter::once(
            EmptyElement::at((i as f64, bottom))
                + Text::new(
                    shorten(&r.target, slot_chars),
                    (0, 9),
                    style(16.0, FontStyle::Normal, INK, HPos::Center, VPos::Top),
                )
                + Text::new(how, (0, 28), style(15.0, FontStyle::Normal, MUTED, HPos::Center, VPos::Top)),
        ))?;
    }
    Ok(())
}

/// `s` cut to `max` characters with an ellipsis in the middle, so both its type and name show.
fn shorten(s: &str, max: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= max || max < 5 {
        return s.to_string();
    }
    let head = (max - 1) / 2;
    let tail = max - 1 - head;
    chars[..head].iter().chain(['…'].iter()).chain(chars[chars.len() - tail..].iter()).collect()
}

/// Lines of text over `at`, the first nearest: each its text, size, weight and colour.
fn over<Y: Ranged<ValueType = f64>>(
    chart: &mut Columns<'_, '_, Y>,
    at: (f64, f64),
    lines: Vec<(String, f64, FontStyle, RGBColor)>,
) -> Result<(), DrawError> {
    let mut dy = -8;
    for (text, size, weight, c) in lines {
        chart.draw_series(std::iter::once(
            EmptyElement::at(at)
                + Text::new(text, (0, dy), style(size, weight, c, HPos::Center, VPos::Bottom)),
        ))?;
        dy -= 19;
    }
    Ok(())
}

/// The median and the step over the level below, over column `i`.
fn median_labels<Y: Ranged<ValueType = f64>>(
    chart: &mut Columns<'_, '_, Y>,
    i: usize,
    r: &Row,
) -> Result<(), DrawError> {
    let s = &r.summary;
    let mut lines = vec![(value(s.median, &s.unit), 15.0, FontStyle::Normal, INK)];
    if let Some(vs) = s.vs_below {
        lines.push((format!("{} vs level below", percent(vs)), 16.0, FontStyle::Bold, INK));
    }
    over(chart, (i as f64, s.max), lines)
}

/// A plain linear mesh with time or throughput ticks on y.
fn mesh<'a, 'b>(
    chart: &mut Columns<'a, 'b, RangedCoordf64>,
    y_max: f64,
    unit: &str,
    desc: &str,
) -> Result<(), DrawError> {
    let unit = unit.to_string();
    let y_label = move |v: &f64| tick(*v, y_max, &unit);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(6)
        .max_light_lines(0)
        .y_label_formatter(&y_label)
        .y_desc(desc)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 15))
        .bold_line_style(GRID)
        .draw()?;
    Ok(())
}

/// `shell_loop` and `boot`: a bar per target at its median, with the fastest to slowest run.
fn medians(b: &Benchmark) -> Result<Chart, DrawError> {
    let unit = b.rows[0].summary.unit.clone();
    let y_max = linear_top(b.rows.iter().map(|r| r.summary.max).fold(0.0, f64::max));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = columns(&root, b.rows.len(), 0.0..y_max)?;
        mesh(&mut chart, y_max, &unit, "median")?;
        for (i, r) in b.rows.iter().enumerate() {
            let (c, _) = colour(r);
            let (x, s) = (i as f64, &r.summary);
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x - 0.28, 0.0), (x + 0.28, s.median)],
                c.filled(),
            )))?;
            if s.max > s.min {
                let whisker = INK.stroke_width(2);
                chart.draw_series([
                    PathElement::new(vec![(x, s.min), (x, s.max)], whisker),
                    PathElement::new(vec![(x - 0.04, s.min), (x + 0.04, s.min)], whisker),
                    PathElement::new(vec![(x - 0.04, s.max), (x + 0.04, s.max)], whisker),
                ])?;
            }
            median_labels(&mut chart, i, r)?;
        }
        names(&mut chart, &b.rows.iter().collect::<Vec<_>>(), 0.0)?;
        root.present()?;
    }
    Ok(Chart {
        svg,
        legend: legend(&b.rows),
        caption: format!(
            "Median {} per target in level order; the whisker spans the fastest to the slowest run; the \
             percentage is the median over the median one level down on the same path.",
            if b.kind == "boot" { "boot time (define to ready)" } else { "time" }
        ),
    })
}

/// Every run as a point per target, the median as a line across them.
fn runs(b: &Benchmark) -> Result<Chart, DrawError> {
    let unit = b.rows[0].summary.unit.clone();
    let y_max = linear_top(b.rows.iter().map(|r| r.summary.max).fold(0.0, f64::max));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = columns(&root, b.rows.len(), 0.0..y_max)?;
        mesh(&mut chart, y_max, &unit, "each run")?;
        for (i, r) in b.rows.iter().enumerate() {
            let (c, _) = colour(r);
            let x = i as f64;
            let values = &r.summary.values;
            let n = values.len().max(1) as f64;
            // The runs spread a little across the column in the order they ran, so that equal
            // values stay apart.
            let spread = (0.4 / n).min(0.05);
            let m = r.summary.median;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x - 0.3, m), (x + 0.3, m)],
                INK.stroke_width(2),
            )))?;
            chart.draw_series(values.iter().enumerate().map(|(k, v)| {
                Circle::new((x + (k as f64 - (n - 1.0) / 2.0) * spread, *v), 5, c.mix(0.8).filled())
            }))?;
            median_labels(&mut chart, i, r)?;
        }
        names(&mut chart, &b.rows.iter().collect::<Vec<_>>(), 0.0)?;
        root.present()?;
    }
    Ok(Chart {
        svg,
        legend: legend(&b.rows),
        caption: "Every measured run as a point, per target in level order; the line is the median, the \
                  percentage the median over the median one level down on the same path."
            .into(),
    })
}

/// Each step over the level below: the measured one beside the article's, on a log scale of the
/// ratio (a step that doubles the time is as tall wherever it is).
fn steps(b: &Benchmark) -> Result<Chart, DrawError> {
    let rows: Vec<&Row> = b.rows.iter().filter(|r| r.summary.vs_below.is_some()).collect();
    let pairs: Vec<(f64, Option<f64>)> =
        rows.iter().map(|r| (r.summary.vs_below.unwrap_or(1.0), article::step(&b.kind, r.level))).collect();
    let all = pairs.iter().flat_map(|(m, a)| [Some(*m), *a]).flatten();
    let (lo, hi) = all.fold((1.0_f64, 1.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo = lo / 1.15;
    // Room over the highest bar for its labels, on the log scale.
    let hi = lo * (hi * 1.05 / lo).powf(1.0 / (1.0 - LABELS_PX / PLOT_PX));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        // Ticks where a reader counts steps: no change, +25%, +50%, double, and so on.
        let ticks: Vec<f64> =
            [0.25, 0.5, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0]
                .into_iter()
                .filter(|t| (lo..hi).contains(t))
                .collect();
        let mut chart = columns(&root, rows.len(), (lo..hi).log_scale().with_key_points(ticks))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(8)
            .max_light_lines(0)
            .y_label_formatter(&|v| percent(*v))
            .y_desc("step over the level below")
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .bold_line_style(GRID)
            .draw()?;
        for (i, (r, (measured, published))) in rows.iter().zip(&pairs).enumerate() {
            let x = i as f64;
            let (c, _) = colour(r);
            let (left, right) = if published.is_some() { (x - 0.3, x) } else { (x - 0.15, x + 0.15) };
            chart.draw_series(std::iter::once(Rectangle::new(
                [(left, 1.0), (left + 0.28, *measured)],
                c.filled(),
            )))?;
            let lines = vec![
                (percent(*measured), 16.0, FontStyle::Bold, INK),
                ("measured".to_string(), 14.0, FontStyle::Normal, MUTED),
            ];
            over(&mut chart, (left + 0.14, measured.max(1.0)), lines)?;
            if let Some(a) = published {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(right + 0.02, 1.0), (right + 0.3, *a)],
                    ARTICLE.filled(),
                )))?;
                let lines = vec![
                    (percent(*a), 16.0, FontStyle::Bold, MUTED),
                    ("article".to_string(), 14.0, FontStyle::Normal, MUTED),
                ];
                over(&mut chart, (right + 0.16, a.max(1.0)), lines)?;
            }
        }
        // The line of no change.
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(-0.5, 1.0), (rows.len() as f64 - 0.5, 1.0)],
            INK.stroke_width(1),
        )))?;
        names(&mut chart, &rows, lo)?;
        root.present()?;
    }
    let mut legend = legend(rows.iter().copied());
    legend.push((css(ARTICLE), "article".into()));
    Ok(Chart {
        svg,
        legend,
        caption: format!(
            "Each target's median over the median one level down on the same path, beside the step into \
             the same level that {} published (log scale).",
            article::SOURCE
        ),
    })
}

/// `block_read`: throughput against size for the cold and the hot read, a line per target; none
/// when no sample has that shape.
fn throughput(b: &Benchmark) -> Result<Option<Chart>, DrawError> {
    // metric -> target -> size -> values
    let mut series: BTreeMap<&str, BTreeMap<&str, BTreeMap<u64, Vec<f64>>>> = BTreeMap::new();
    for s in &b.samples {
        let metric = s.metric.as_str();
        let target = meta_str(s, "target");
        let size = s.metadata.get("size_bytes").and_then(Value::as_u64).filter(|s| *s > 0);
        if let (true, Some(target), Some(size)) =
            (matches!(metric, "block_read_cold" | "block_read_hot"), target, size)
        {
            series
                .entry(metric)
                .or_default()
                .entry(target)
                .or_default()
                .entry(size)
                .or_default()
                .push(s.value);
        }
    }
    if series.is_empty() {
        return Ok(None);
    }
    let palette = [
        RGBColor(0x33, 0x4e, 0x7a),
        RGBColor(0x3b, 0x8e, 0xd0),
        RGBColor(0xe0, 0x7b, 0x39),
        RGBColor(0x4c, 0xa6, 0x6b),
        RGBColor(0xa3, 0x4c, 0xa6),
        RGBColor(0xc9, 0x3c, 0x3c),
    ];
    let colour_of = |target: &str| {
        let i = b.rows.iter().position(|r| r.target == target).unwrap_or(b.rows.len());
        palette[i % palette.len()]
    };
    let by_size = || series.values().flat_map(|t| t.values());
    let sizes: BTreeSet<u64> = by_size().flat_map(|s| s.keys().copied()).collect();
    let (lo, hi) = (sizes.first().copied().unwrap_or(1), sizes.last().copied().unwrap_or(1));
    let (lo, hi) = (lo as f64 / 1.6, hi as f64 * 1.6);
    // Ticks at the sizes read, not at round powers of ten.
    let ticks: Vec<f64> = sizes.iter().map(|s| *s as f64).collect();
    let y_max = by_size().flat_map(|s| s.values()).flatten().fold(1.0, |m: f64, v| m.max(*v)) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        for (panel, metric) in root.split_evenly((1, 2)).iter().zip(["block_read_cold", "block_read_hot"]) {
            let title =
                if metric.ends_with("cold") { "cold (from the disk)" } else { "hot (from the page cache)" };
            let mut chart = ChartBuilder::on(panel)
                .caption(title, (FONT, 18))
                .margin(12)
                .margin_right(28)
                .x_label_area_size(44)
                .y_label_area_size(84)
                .build_cartesian_2d((lo..hi).log_scale().with_key_points(ticks.clone()), 0.0..y_max)?;
            chart
                .configure_mesh()
                .x_label_formatter(&|v| bytes(*v))
                .max_light_lines(0)
                .y_label_formatter(&|v| format!("{v:.0} MB/s"))
                .x_desc("size")
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 14))
                .bold_line_style(GRID)
                .draw()?;
            for (target, by_size) in series.get(metric).into_iter().flatten() {
                let c = colour_of(target);
                let points: Vec<(f64, f64)> = by_size
                    .iter()
                    .map(|(size, v)| (*size as f64, nestform_types::bench::median(v)))
                    .collect();
                chart.draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?;
                chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))?;
            }
        }
        root.present()?;
    }
    let legend = b
        .rows
        .iter()
        .map(|r| (css(colour_of(&r.target)), format!("{} (level {})", r.target, r.level)))
        .collect();
    Ok(Some(Chart {
        svg,
        legend,
        caption: "Median throughput (higher is better) reading a file of each size, on a log scale of \
                  size: cold is the first read from the disk, hot the read again from the page cache."
            .into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_targets_keep_their_type_and_name() {
        assert_eq!(shorten("nested_guest.guest1", 30), "nested_guest.guest1");
        assert_eq!(shorten("nested_guest.a_very_long_name", 11), "neste…_name");
    }

    #[test]
    fn ticks_keep_one_unit_along_an_axis() {
        assert_eq!((tick(0.0, 0.5, "s"), tick(0.25, 0.5, "s")), ("0 ms".into(), "250 ms".into()));
        assert_eq!((tick(0.0, 5.0, "s"), tick(2.5, 5.0, "s")), ("0.0 s".into(), "2.5 s".into()));
        assert_eq!((tick(0.0, 700.0, "s"), tick(600.0, 700.0, "s")), ("0 s".into(), "600 s".into()));
        assert_eq!(tick(2900.0, 3000.0, "MB/s"), "2900 MB/s");
    }
}
