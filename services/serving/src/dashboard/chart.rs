//! Charts drawn on the server as inline SVG: a plot with numeric axes (bars on intervals,
//! lines, points and labelled marker lines) and a horizontal bar chart of named rows, which
//! may be negative.
//!
//! Every chart names itself to assistive technology (`role="img"`, a `<title>` and a
//! `<desc>` with its key numbers) and tells nothing by colour alone: marker lines differ by
//! dash pattern and carry their label, bars carry their value as text. The pages put the
//! numbers behind each chart in a table beside it.

use std::fmt::Write;

use maud::{html, Markup, Render};

use super::format;

/// How an axis prints its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `$12k`, `$1.5k`, `$800`.
    Money,
    /// `12,500`.
    Count,
    /// `2015`: whole numbers without separators.
    Year,
    /// `45k mi`.
    Miles,
}

impl Format {
    fn tick(self, value: f64) -> String {
        match self {
            Format::Money => format::money_short(value),
            Format::Count => format::count(value),
            Format::Year => format!("{value:.0}"),
            Format::Miles => format!("{} mi", format::short(value)),
        }
    }

    fn integral(self) -> bool {
        matches!(self, Format::Year | Format::Count)
    }
}

/// An axis: its title, how it prints numbers, and the range it must show.
#[derive(Debug, Clone)]
pub struct Axis {
    pub label: String,
    pub format: Format,
    /// Values the axis must reach beyond the data (e.g. 0 for bars).
    pub include: Vec<f64>,
}

impl Axis {
    pub fn new(label: impl Into<String>, format: Format) -> Self {
        Self {
            label: label.into(),
            format,
            include: Vec::new(),
        }
    }

    /// The axis also spans `value`.
    pub fn including(mut self, value: f64) -> Self {
        self.include.push(value);
        self
    }
}

/// How a marker line is drawn; each has its own pattern, so none needs colour to be told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stroke {
    Solid,
    Dashed,
}

impl Stroke {
    fn dasharray(self) -> Option<&'static str> {
        match self {
            Stroke::Solid => None,
            Stroke::Dashed => Some("7 4"),
        }
    }
}

/// What a plot draws, in order (later layers on top).
#[derive(Debug, Clone)]
pub enum Layer {
    /// Bars from `x0` to `x1`, `y` high (a histogram, counts per year).
    Bars(Vec<(f64, f64, f64)>),
    /// A line through the points, each marked with a dot.
    Line {
        points: Vec<(f64, f64)>,
        stroke: Stroke,
    },
    /// A cloud of points.
    Points(Vec<(f64, f64)>),
    /// A vertical line at `x` with its label written at the top.
    Rule {
        x: f64,
        label: String,
        stroke: Stroke,
    },
}

/// A chart with numeric axes.
#[derive(Debug, Clone)]
pub struct Plot {
    /// Unique on the page: the prefix of the chart's element ids.
    pub id: String,
    pub title: String,
    /// The chart in words, with its key numbers (read by screen readers).
    pub description: String,
    pub x: Axis,
    pub y: Axis,
    pub layers: Vec<Layer>,
}

// The drawing's own units; at the pages' usual column width one unit is about one pixel,
// so the 13-unit text reads at the size of the captions around it.
const WIDTH: f64 = 540.0;
const HEIGHT: f64 = 300.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 48.0;
/// Room for the rotated y-axis title left of the tick labels.
const Y_TITLE: f64 = 26.0;

/// About how wide `text` is drawn at the charts' 13-unit font, generously (DejaVu Sans, a
/// wide font, is what a bare Linux falls back to).
fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * 8.2
}

/// A number written into SVG with one decimal, without allocating.
struct N(f64);

impl Render for N {
    fn render_to(&self, buffer: &mut String) {
        let _ = write!(buffer, "{:.1}", self.0);
    }
}

/// The round number (1, 2, 2.5 or 5 times a power of ten) at or just above `raw` (> 0).
pub fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = match raw / magnitude {
        n if n <= 1.0 => 1.0,
        n if n <= 2.0 => 2.0,
        n if n <= 2.5 => 2.5,
        n if n <= 5.0 => 5.0,
        _ => 10.0,
    };
    step * magnitude
}

/// Ticks at round numbers covering `lo..=hi`: the nice bounds and the ticks.
fn ticks(lo: f64, hi: f64, integral: bool) -> (f64, f64, Vec<f64>) {
    let (lo, hi) = if hi - lo < f64::EPSILON * hi.abs().max(1.0) {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo, hi)
    };
    let mut step = nice_step((hi - lo) / 5.0);
    if integral {
        step = step.round().max(1.0);
    }
    let start = (lo / step).floor() * step;
    let end = (hi / step).ceil() * step;
    let count = ((end - start) / step).round() as usize;
    let values = (0..=count).map(|i| start + step * i as f64).collect();
    (start, end, values)
}

fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

impl Plot {
    fn xs(&self) -> impl Iterator<Item = f64> + '_ {
        self.layers.iter().flat_map(|layer| -> Vec<f64> {
            match layer {
                Layer::Bars(bars) => bars.iter().flat_map(|b| [b.0, b.1]).collect(),
                Layer::Line { points, .. } | Layer::Points(points) => {
                    points.iter().map(|p| p.0).collect()
                }
                Layer::Rule { x, .. } => vec![*x],
            }
        })
    }

    fn ys(&self) -> impl Iterator<Item = f64> + '_ {
        self.layers.iter().flat_map(|layer| -> Vec<f64> {
            match layer {
                Layer::Bars(bars) => bars.iter().map(|b| b.2).collect(),
                Layer::Line { points, .. } | Layer::Points(points) => {
                    points.iter().map(|p| p.1).collect()
                }
                Layer::Rule { .. } => Vec::new(),
            }
        })
    }
}

impl Render for Plot {
    fn render(&self) -> Markup {
        let x_extent = extent(self.xs().chain(self.x.include.iter().copied()));
        let y_extent = extent(self.ys().chain(self.y.include.iter().copied()));
        let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) = (x_extent, y_extent) else {
            return html! { p.empty { "No data to draw." } };
        };
        let (x0, x1, x_ticks) = ticks(x_lo, x_hi, self.x.format.integral());
        let (y0, y1, y_ticks) = ticks(y_lo, y_hi, self.y.format.integral());
        let widest = y_ticks
            .iter()
            .map(|y| text_width(&self.y.format.tick(*y)))
            .fold(0.0, f64::max);
        let left = Y_TITLE + widest + 10.0;
        let plot_w = WIDTH - left - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let sx = |x: f64| left + (x - x0) / (x1 - x0) * plot_w;
        let sy = |y: f64| TOP + plot_h - (y - y0) / (y1 - y0) * plot_h;
        let title_id = format!("{}-title", self.id);
        let desc_id = format!("{}-desc", self.id);
        // Every other x label when they would crowd.
        let x_every = if x_ticks.len() > 9 { 2 } else { 1 };
        html! {
            svg.chart xmlns="http://www.w3.org/2000/svg" viewBox={"0 0 " (WIDTH) " " (HEIGHT)}
                role="img" aria-labelledby={(title_id) " " (desc_id)} {
                title id=(title_id) { (self.title) }
                desc id=(desc_id) { (self.description) }
                g.grid {
                    @for y in &y_ticks {
                        line x1=(N(left)) x2=(N(WIDTH - RIGHT)) y1=(N(sy(*y))) y2=(N(sy(*y))) {}
                        text.tick x=(N(left - 6.0)) y=(N(sy(*y) + 4.5)) text-anchor="end" { (self.y.format.tick(*y)) }
                    }
                    @for (i, x) in x_ticks.iter().enumerate() {
                        @if i % x_every == 0 {
                            @let label = self.x.format.tick(*x);
                            // The last label ends at its tick rather than past the edge.
                            @let anchor = if sx(*x) + text_width(&label) / 2.0 > WIDTH { "end" } else { "middle" };
                            text.tick x=(N(sx(*x))) y=(N(TOP + plot_h + 18.0)) text-anchor=(anchor) { (label) }
                        }
                    }
                }
                line.axis x1=(N(left)) x2=(N(WIDTH - RIGHT)) y1=(N(TOP + plot_h)) y2=(N(TOP + plot_h)) {}
                line.axis x1=(N(left)) x2=(N(left)) y1=(N(TOP)) y2=(N(TOP + plot_h)) {}
                text.axis-label x=(N(left + plot_w / 2.0)) y=(N(HEIGHT - 6.0)) text-anchor="middle" { (self.x.label) }
                text.axis-label x="16" y=(N(TOP + plot_h / 2.0)) text-anchor="middle"
                    transform={"rotate(-90 16 " (N(TOP + plot_h / 2.0)) ")"} { (self.y.label) }
                @for layer in &self.layers {
                    @match layer {
                        Layer::Bars(bars) => {
                            g.bars {
                                @for (a, b, y) in bars {
                                    @let top = sy(y.max(y0));
                                    @let base = sy(0f64.clamp(y0, y1));
                                    rect x=(N(sx(*a) + 0.5)) y=(N(top.min(base)))
                                        width=(N((sx(*b) - sx(*a) - 1.0).max(1.0))) height=(N((base - top).abs())) {}
                                }
                            }
                        }
                        Layer::Line { points, stroke } => {
                            path.line d=(path_through(points, &sx, &sy)) stroke-dasharray=[stroke.dasharray()] {}
                            g.dots {
                                @for (x, y) in points {
                                    circle cx=(N(sx(*x))) cy=(N(sy(*y))) r="3" {}
                                }
                            }
                        }
                        Layer::Points(points) => {
                            g.points {
                                @for (x, y) in points {
                                    circle cx=(N(sx(*x))) cy=(N(sy(*y))) r="2.2" {}
                                }
                            }
                        }
                        Layer::Rule { x, label, stroke } => {
                            @let at = sx(*x);
                            @let right_half = at > left + plot_w * 0.6;
                            g.rule {
                                line x1=(N(at)) x2=(N(at)) y1=(N(TOP - 4.0)) y2=(N(TOP + plot_h)) stroke-dasharray=[stroke.dasharray()] {}
                                text x=(N(if right_half { at - 4.0 } else { at + 4.0 }))
                                    y=(N(TOP - 12.0 + 14.0 * f64::from(u8::from(*stroke != Stroke::Solid))))
                                    text-anchor=(if right_half { "end" } else { "start" }) { (label) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An SVG path through `points`, scaled to the plot.
fn path_through(points: &[(f64, f64)], sx: &dyn Fn(f64) -> f64, sy: &dyn Fn(f64) -> f64) -> String {
    let mut d = String::with_capacity(points.len() * 16);
    for (i, (x, y)) in points.iter().enumerate() {
        let _ = write!(
            d,
            "{}{:.1},{:.1}",
            if i == 0 { "M" } else { " L" },
            sx(*x),
            sy(*y)
        );
    }
    d
}

/// One row of a [`BarList`].
#[derive(Debug, Clone)]
pub struct BarRow {
    pub label: String,
    pub value: f64,
    /// The value as written beside the bar.
    pub text: String,
}

/// Named rows as horizontal bars, longest first if the caller sorts them; negative values
/// extend left of a zero line (contributions that lower a price).
#[derive(Debug, Clone)]
pub struct BarList {
    pub id: String,
    pub title: String,
    pub description: String,
    pub rows: Vec<BarRow>,
}

const ROW_H: f64 = 26.0;

impl Render for BarList {
    fn render(&self) -> Markup {
        if self.rows.is_empty() {
            return html! { p.empty { "No data to draw." } };
        }
        let height = ROW_H * self.rows.len() as f64 + 8.0;
        let lo = self.rows.iter().map(|r| r.value).fold(0.0, f64::min);
        let hi = self.rows.iter().map(|r| r.value).fold(0.0, f64::max);
        let span = (hi - lo).max(f64::MIN_POSITIVE);
        // Room for the longest label, and for the values written beyond the bars' ends.
        let label_w = self
            .rows
            .iter()
            .map(|r| text_width(&r.label) + 12.0)
            .fold(40.0, f64::max)
            .min(WIDTH * 0.42);
        let value_w = self
            .rows
            .iter()
            .map(|r| text_width(&r.text) * 1.1 + 10.0)
            .fold(24.0, f64::max);
        let left_room = if lo < 0.0 { value_w } else { 0.0 };
        let right_room = if hi > 0.0 { value_w } else { 0.0 };
        let track = (WIDTH - label_w - left_room - right_room).max(40.0);
        let zero = label_w + left_room + (-lo) / span * track;
        let scale = |v: f64| v / span * track;
        let title_id = format!("{}-title", self.id);
        let desc_id = format!("{}-desc", self.id);
        html! {
            svg.chart.bar-list xmlns="http://www.w3.org/2000/svg" viewBox={"0 0 " (WIDTH) " " (N(height))}
                role="img" aria-labelledby={(title_id) " " (desc_id)} {
                title id=(title_id) { (self.title) }
                desc id=(desc_id) { (self.description) }
                @for (i, row) in self.rows.iter().enumerate() {
                    @let y = 4.0 + ROW_H * i as f64;
                    @let w = scale(row.value.abs()).max(1.0);
                    @let x = if row.value < 0.0 { zero - w } else { zero };
                    text.label x=(N(label_w - 8.0)) y=(N(y + 17.0)) text-anchor="end" { (row.label) }
                    rect.bar.negative[row.value < 0.0] x=(N(x)) y=(N(y + 3.0)) width=(N(w)) height=(N(ROW_H - 6.0)) {}
                    @if row.value < 0.0 {
                        text.value x=(N(x - 6.0)) y=(N(y + 17.0)) text-anchor="end" { (row.text) }
                    } @else {
                        text.value x=(N(x + w + 6.0)) y=(N(y + 17.0)) { (row.text) }
                    }
                }
                @if lo < 0.0 {
                    line.axis x1=(N(zero)) x2=(N(zero)) y1="0" y2=(N(height)) {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let (lo, hi, t) = ticks(512.0, 97_000.0, false);
        assert_eq!((lo, hi), (0.0, 100_000.0));
        assert_eq!(
            t,
            vec![0.0, 20_000.0, 40_000.0, 60_000.0, 80_000.0, 100_000.0]
        );
        let (_, _, years) = ticks(2015.0, 2017.0, true);
        assert!(years.iter().all(|y| y.fract() == 0.0), "{years:?}");
        let (lo, hi, _) = ticks(5.0, 5.0, false);
        assert!(lo < 5.0 && hi > 5.0);
    }

    #[test]
    fn a_plot_names_itself_and_draws_every_layer() {
        let plot = Plot {
            id: "prices".into(),
            title: "Prices".into(),
            description: "Median $9,000 <b>".into(),
            x: Axis::new("Price", Format::Money),
            y: Axis::new("Listings", Format::Count).including(0.0),
            layers: vec![
                Layer::Bars(vec![(0.0, 1000.0, 3.0), (1000.0, 2000.0, 5.0)]),
                Layer::Rule {
                    x: 1500.0,
                    label: "Median".into(),
                    stroke: Stroke::Dashed,
                },
            ],
        }
        .render()
        .into_string();
        assert!(plot.contains(r#"role="img" aria-labelledby="prices-title prices-desc""#));
        assert!(plot.contains("&lt;b&gt;"), "text is escaped: {plot}");
        assert_eq!(plot.matches("<rect").count(), 2);
        assert!(plot.contains(r#"stroke-dasharray="7 4""#));
        assert!(!plot.contains("NaN"));
    }

    #[test]
    fn negative_bars_extend_left_of_zero() {
        let bars = BarList {
            id: "c".into(),
            title: "Contributions".into(),
            description: String::new(),
            rows: vec![
                BarRow {
                    label: "year".into(),
                    value: 300.0,
                    text: "+$300".into(),
                },
                BarRow {
                    label: "miles".into(),
                    value: -100.0,
                    text: "−$100".into(),
                },
            ],
        }
        .render()
        .into_string();
        assert!(bars.contains(r#"class="bar negative""#), "{bars}");
        assert!(bars.contains("−$100"));
    }
}
