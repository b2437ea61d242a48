//! `/`: the market at a glance, from every listing the model was trained on.

use maud::{html, Markup, Render};
use serving::axum::extract::State;
use serving::axum::http::StatusCode;
use serving::axum::response::Response;
use serving::dashboard::chart::{Axis, BarList, BarRow, Format, Layer, Plot, Stroke};
use serving::dashboard::format::{count, money, percent};
use serving::dashboard::{self, figure, key_figure, Pages, Unavailable};

use super::data::Market;
use super::stats;
use crate::CarVision;

/// Bins the price histogram aims for.
const PRICE_BINS: usize = 40;
/// Brands in the top list.
const TOP_BRANDS: usize = 10;

/// The overview's numbers, computed once per model version.
pub struct Summary {
    pub listings: usize,
    pub mean: f64,
    pub median: f64,
    pub std_dev: f64,
    pub q1: f64,
    pub q3: f64,
    pub median_age: f64,
    /// Listings whose age is known (model year and listing date both readable).
    pub aged: usize,
    pub histogram: Histogram,
    /// (brand, listings, median price), most listed first.
    pub top_brands: Vec<(String, usize, f64)>,
    pub by_year: Vec<(u16, usize)>,
    pub unknown_year: usize,
    pub segments: Vec<Segment>,
}

/// Counts of prices in equal bins from zero; what lies past the last bin is counted apart.
pub struct Histogram {
    pub width: f64,
    pub bins: Vec<usize>,
    pub above: usize,
}

impl Histogram {
    /// About `target` bins up to the 99th percentile of `sorted`, so a few very dear
    /// listings do not squeeze every other bar into the left edge.
    pub fn of(sorted: &[f64], target: usize) -> Self {
        let top = stats::quantile(sorted, 0.99).max(1.0);
        let width = stats::nice_width(top, target);
        let n = ((top / width).ceil() as usize).max(1);
        let mut bins = vec![0; n];
        let mut above = 0;
        for &price in sorted {
            match ((price / width).floor() as usize, price) {
                (i, _) if i < n => bins[i] += 1,
                _ => above += 1,
            }
        }
        Self { width, bins, above }
    }

    pub fn end(&self) -> f64 {
        self.width * self.bins.len() as f64
    }

    pub fn bars(&self) -> Vec<(f64, f64, f64)> {
        self.bins
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let lo = self.width * i as f64;
                (lo, lo + self.width, c as f64)
            })
            .collect()
    }

    pub fn table(&self) -> Markup {
        html! {
            table {
                thead { tr { th scope="col" { "Price from" } th scope="col" { "to under" } th.num scope="col" { "Listings" } } }
                tbody {
                    @for (lo, hi, c) in self.bars() {
                        tr { td { (money(lo)) } td { (money(hi)) } td.num { (count(c)) } }
                    }
                    @if self.above > 0 {
                        tr { td { (money(self.end())) } td { "and above (not drawn)" } td.num { (count(self.above as f64)) } }
                    }
                }
            }
        }
    }
}

/// A price segment: economy (the cheapest quarter), mid (the middle half), premium (the
/// dearest quarter).
pub struct Segment {
    pub name: &'static str,
    pub rule: String,
    pub count: usize,
    pub median: f64,
}

impl Summary {
    pub fn of(market: &Market) -> Self {
        let sorted = stats::sorted(market.price.iter().copied());
        let ages = stats::sorted(market.age.iter().flatten().map(|&a| f64::from(a)));
        let (q1, q3) = (
            stats::quantile(&sorted, 0.25),
            stats::quantile(&sorted, 0.75),
        );

        let mut per_brand: Vec<Vec<f64>> = vec![Vec::new(); market.brands.len()];
        for (&b, &p) in market.brand.iter().zip(&market.price) {
            per_brand[b as usize].push(p);
        }
        // Brands are ordered most listed first.
        let top_brands = market
            .brands
            .iter()
            .zip(per_brand)
            .take(TOP_BRANDS)
            .map(|(brand, prices)| {
                let prices = stats::sorted(prices.into_iter());
                (brand.name.clone(), brand.count, stats::median(&prices))
            })
            .collect();

        let mut by_year = std::collections::BTreeMap::<u16, usize>::new();
        for year in market.year.iter().flatten() {
            *by_year.entry(*year).or_default() += 1;
        }
        let known: usize = by_year.values().sum();

        let segment = |name, rule: String, keep: &dyn Fn(f64) -> bool| {
            let prices: Vec<f64> = sorted.iter().copied().filter(|&p| keep(p)).collect();
            Segment {
                name,
                rule,
                count: prices.len(),
                median: stats::median(&prices),
            }
        };
        let segments = vec![
            segment(
                "Economy",
                format!("up to {} (the first quartile)", money(q1)),
                &|p| p <= q1,
            ),
            segment(
                "Mid",
                format!("over {} up to {}", money(q1), money(q3)),
                &|p| p > q1 && p <= q3,
            ),
            segment(
                "Premium",
                format!("over {} (the third quartile)", money(q3)),
                &|p| p > q3,
            ),
        ];
        Self {
            listings: sorted.len(),
            mean: stats::mean(&sorted),
            median: stats::median(&sorted),
            std_dev: stats::std_dev(&sorted),
            q1,
            q3,
            median_age: stats::median(&ages),
            aged: ages.len(),
            histogram: Histogram::of(&sorted, PRICE_BINS),
            top_brands,
            by_year: by_year.into_iter().collect(),
            unknown_year: market.len() - known,
            segments,
        }
    }

    /// Price volatility: the standard deviation over the mean.
    pub fn volatility(&self) -> f64 {
        self.std_dev / self.mean
    }
}

pub fn years(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0} years")
    } else {
        format!("{value:.1} years")
    }
}

pub async fn page(
    State(pages): State<Pages<CarVision>>,
) -> Result<Response, Unavailable<CarVision>> {
    let view = dashboard::view(&pages)?;
    let market = view.dashboard.market();
    let s = &view.dashboard.overview;
    let main = html! {
        p.lead {
            "All " (count(s.listings as f64)) " listings the served model was trained on, priced from $500 to $100,000."
            @if market.outside_band > 0 {
                " The file's other " (count(market.outside_band as f64)) " rows are priced outside that band (placeholders and typos) and are left out here, as training leaves them out."
            }
        }
        dl.figures {
            (key_figure("listings", "Listings", &count(s.listings as f64), s.listings as f64, None))
            (key_figure("mean_price", "Average price", &money(s.mean), s.mean, None))
            (key_figure("median_price", "Median price", &money(s.median), s.median, None))
            (key_figure("median_age", "Median vehicle age", &years(s.median_age), s.median_age,
                Some(&format!("listing year minus model year; {} listings", count(s.aged as f64)))))
            (key_figure("price_volatility", "Price volatility", &percent(s.volatility(), 0), s.volatility(),
                Some(&format!("standard deviation {} over the mean", money(s.std_dev)))))
        }
        div.grid-2 {
            (price_histogram(s))
            (top_brands(s))
            (listings_by_year(s))
            (segments(s))
        }
    };
    Ok(dashboard::respond(
        StatusCode::OK,
        dashboard::page::<CarVision>("/", "Market overview", Some(&view.model), main),
    ))
}

fn price_histogram(s: &Summary) -> Markup {
    let h = &s.histogram;
    let chart = Plot {
        id: "price-histogram-chart".into(),
        title: "Listings by price".into(),
        description: format!(
            "A histogram of prices in bins of {}: mean {}, median {}.",
            money(h.width),
            money(s.mean),
            money(s.median)
        ),
        x: Axis::new("Price", Format::Money).including(0.0),
        y: Axis::new("Listings", Format::Count).including(0.0),
        layers: vec![
            Layer::Bars(h.bars()),
            Layer::Rule {
                x: s.median,
                label: format!("Median {}", money(s.median)),
                stroke: Stroke::Solid,
            },
            Layer::Rule {
                x: s.mean,
                label: format!("Mean {}", money(s.mean)),
                stroke: Stroke::Dashed,
            },
        ],
    };
    let caption = html! {
        "Bins of " (money(h.width)) ". The solid line is the median, " strong { (money(s.median)) }
        "; the dashed line the mean, " strong { (money(s.mean)) } "."
        @if h.above > 0 {
            " The " (count(h.above as f64)) " listings from " (money(h.end())) " up (the dearest 1%) are in the table, not drawn."
        }
    };
    figure(
        "price-histogram",
        "Price distribution",
        chart.render(),
        caption,
        h.table(),
    )
}

fn top_brands(s: &Summary) -> Markup {
    let rows = s
        .top_brands
        .iter()
        .map(|(brand, n, _)| BarRow {
            label: brand.clone(),
            value: *n as f64,
            text: count(*n as f64),
        })
        .collect();
    let chart = BarList {
        id: "top-brands-chart".into(),
        title: "Top brands by listings".into(),
        description: s
            .top_brands
            .iter()
            .map(|(b, n, _)| format!("{b} {}", count(*n as f64)))
            .collect::<Vec<_>>()
            .join(", "),
        rows,
    };
    let caption = match s.top_brands.first() {
        Some((brand, n, _)) => html! {
            "The " (s.top_brands.len()) " most listed brands. " strong { (brand) } " leads with "
            (count(*n as f64)) " listings (" (percent(*n as f64 / s.listings as f64, 1)) ")."
        },
        None => html! { "No brands." },
    };
    let table = html! {
        table {
            thead { tr { th scope="col" { "Brand" } th.num scope="col" { "Listings" } th.num scope="col" { "Share" } th.num scope="col" { "Median price" } } }
            tbody {
                @for (brand, n, median) in &s.top_brands {
                    tr { th scope="row" { (brand) } td.num { (count(*n as f64)) } td.num { (percent(*n as f64 / s.listings as f64, 1)) } td.num { (money(*median)) } }
                }
            }
        }
    };
    figure(
        "top-brands",
        "Top 10 brands",
        chart.render(),
        caption,
        table,
    )
}

fn listings_by_year(s: &Summary) -> Markup {
    let chart = Plot {
        id: "by-year-chart".into(),
        title: "Listings by model year".into(),
        description: match s.by_year.iter().max_by_key(|(_, n)| *n) {
            Some((year, n)) => format!(
                "Counts per model year from {} to {}; the most listed year is {year} with {}.",
                s.by_year[0].0,
                s.by_year[s.by_year.len() - 1].0,
                count(*n as f64)
            ),
            None => "No model years.".into(),
        },
        x: Axis::new("Model year", Format::Year),
        y: Axis::new("Listings", Format::Count).including(0.0),
        layers: vec![Layer::Bars(
            s.by_year
                .iter()
                .map(|&(y, n)| (f64::from(y) - 0.5, f64::from(y) + 0.5, n as f64))
                .collect(),
        )],
    };
    let caption = html! {
        @if let Some((year, n)) = s.by_year.iter().max_by_key(|(_, n)| *n) {
            "Most listings are of model year " strong { (year) } " (" (count(*n as f64)) ")."
        }
        @if s.unknown_year > 0 {
            " " (count(s.unknown_year as f64)) " listings give no model year."
        }
    };
    let table = html! {
        table {
            thead { tr { th scope="col" { "Model year" } th.num scope="col" { "Listings" } } }
            tbody {
                @for (year, n) in s.by_year.iter().rev() {
                    tr { th scope="row" { (year) } td.num { (count(*n as f64)) } }
                }
                @if s.unknown_year > 0 {
                    tr { th scope="row" { "not given" } td.num { (count(s.unknown_year as f64)) } }
                }
            }
        }
    };
    figure(
        "by-year",
        "Listings by model year",
        chart.render(),
        caption,
        table,
    )
}

fn segments(s: &Summary) -> Markup {
    let chart = BarList {
        id: "segments-chart".into(),
        title: "Listings by price segment".into(),
        description: s
            .segments
            .iter()
            .map(|g| {
                format!(
                    "{} ({}): {} listings, median {}",
                    g.name,
                    g.rule,
                    count(g.count as f64),
                    money(g.median)
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        rows: s
            .segments
            .iter()
            .map(|g| BarRow {
                label: g.name.into(),
                value: g.count as f64,
                text: format!("{} · median {}", count(g.count as f64), money(g.median)),
            })
            .collect(),
    };
    let caption = html! {
        "Split at the quartiles: economy up to " strong { (money(s.q1)) } ", premium over "
        strong { (money(s.q3)) } ", mid between."
    };
    let table = html! {
        table {
            thead { tr { th scope="col" { "Segment" } th scope="col" { "Prices" } th.num scope="col" { "Listings" } th.num scope="col" { "Median price" } } }
            tbody {
                @for g in &s.segments {
                    tr data-segment=(g.name) { th scope="row" { (g.name) } td { (g.rule) } td.num data-value=(g.count) { (count(g.count as f64)) } td.num { (money(g.median)) } }
                }
            }
        }
    };
    figure("segments", "Price segments", chart.render(), caption, table)
}
