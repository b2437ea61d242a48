//! `/market`: prices by model year, age, mileage and condition, for the listings the filters
//! keep. The filters are the page's query string, so a view's address can be shared.

use std::collections::BTreeMap;

use maud::{html, Markup, Render};
use serving::axum::extract::State;
use serving::axum::http::{StatusCode, Uri};
use serving::axum::response::Response;
use serving::dashboard::chart::{Axis, BarList, BarRow, Format, Layer, Plot, Stroke};
use serving::dashboard::format::{count, miles, money, percent};
use serving::dashboard::{self, figure, key_figure, Field, InputKind, Pages, Unavailable};

use super::data::Market;
use super::overview::years;
use super::stats;
use crate::listing::CONDITIONS;
use crate::CarVision;

/// A model year or age is drawn only with at least this many listings behind its median.
pub const MIN_GROUP: usize = 5;
/// Points in the price-against-mileage chart.
pub const SAMPLE: usize = 500;
/// Brands offered as filters (most listed first); any brand in the data is accepted.
const BRAND_CHOICES: usize = 60;
const MILEAGE_BANDS: [(f64, f64); 6] = [
    (0.0, 25_000.0),
    (25_000.0, 50_000.0),
    (50_000.0, 100_000.0),
    (100_000.0, 150_000.0),
    (150_000.0, 200_000.0),
    (200_000.0, f64::INFINITY),
];

/// The filters of the page, as asked and as applied.
#[derive(Debug, Default)]
pub struct Filters {
    pub min_price: Option<f64>,
    pub max_price: Option<f64>,
    pub from_year: Option<u16>,
    pub to_year: Option<u16>,
    /// Brand ids; empty means every brand.
    pub brands: Vec<u32>,
    /// What was typed, shown again in the form.
    typed: BTreeMap<&'static str, String>,
    /// The brands asked for, as given.
    asked_brands: Vec<String>,
    /// (field, label, message) of each filter that could not be applied.
    pub errors: Vec<(String, String, String)>,
}

const FIELDS: [(&str, &str); 4] = [
    ("min_price", "Lowest price ($)"),
    ("max_price", "Highest price ($)"),
    ("from_year", "Model year from"),
    ("to_year", "Model year to"),
];

fn label_of(name: &str) -> &'static str {
    FIELDS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("Brands", |(_, l)| l)
}

impl Filters {
    /// Reads the filters from the query; a filter that cannot be read is left out and says why.
    pub fn parse(pairs: &[(String, String)], market: &Market) -> Self {
        let mut f = Filters::default();
        for (name, value) in pairs {
            let value = value.trim();
            if name == "brand" {
                if value.is_empty() {
                    continue;
                }
                let brand = value.to_lowercase();
                match market.brand_id(&brand) {
                    Some(id) if !f.brands.contains(&id) => f.brands.push(id),
                    Some(_) => {}
                    None => f.error(
                        "brands",
                        format!("no listing is of brand \"{value}\"; left out"),
                    ),
                }
                f.asked_brands.push(brand);
            } else if let Some(&(field, _)) = FIELDS.iter().find(|(n, _)| n == name) {
                f.typed.insert(field, value.to_owned());
            }
        }
        // A price past the dearest listing selects nothing and is not one anyone means
        // (1e308 would show as $18,446,744,073,709,551,615): refused, saying the range.
        let highest = market
            .by_price
            .last()
            .map_or(0.0, |&i| market.price[i as usize].ceil());
        let price = |f: &mut Filters, field: &'static str| -> Option<f64> {
            let text = f.typed.get(field)?.replace([',', '$'], "");
            match text.parse::<f64>() {
                _ if text.is_empty() => None,
                Ok(v) if v.is_finite() && (0.0..=highest).contains(&v) => Some(v),
                Ok(v) if v.is_finite() && v > highest => {
                    f.error(
                        field,
                        format!(
                            "the dearest listing is {}: enter a price from $0 to that",
                            money(highest)
                        ),
                    );
                    None
                }
                _ => {
                    f.error(field, "enter a price in whole dollars, like 15000".into());
                    None
                }
            }
        };
        f.min_price = price(&mut f, "min_price");
        f.max_price = price(&mut f, "max_price");
        if let (Some(lo), Some(hi)) = (f.min_price, f.max_price) {
            if hi < lo {
                f.error(
                    "max_price",
                    format!("must be at least the lowest price, {}", money(lo)),
                );
                f.max_price = None;
            }
        }
        let year = |f: &mut Filters, field: &'static str| -> Option<u16> {
            let text = f.typed.get(field)?.clone();
            match text.parse::<u16>() {
                _ if text.is_empty() => None,
                Ok(y) if (1900..=2100).contains(&y) => Some(y),
                _ => {
                    f.error(field, "enter a year from 1900 to 2100, like 2012".into());
                    None
                }
            }
        };
        f.from_year = year(&mut f, "from_year");
        f.to_year = year(&mut f, "to_year");
        if let (Some(lo), Some(hi)) = (f.from_year, f.to_year) {
            if hi < lo {
                f.error("to_year", format!("must be {lo} or later"));
                f.to_year = None;
            }
        }
        f
    }

    fn error(&mut self, field: &str, message: String) {
        self.errors
            .push((field.to_owned(), label_of(field).to_owned(), message));
    }

    fn error_of(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _, _)| f == field)
            .map(|(_, _, m)| m.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.min_price.is_none()
            && self.max_price.is_none()
            && self.from_year.is_none()
            && self.to_year.is_none()
            && self.brands.is_empty()
    }

    /// The listings the filters keep, cheapest first. A listing without a model year is kept
    /// only while no year filter is set.
    pub fn apply(&self, market: &Market) -> Vec<usize> {
        let years = self.from_year.is_some() || self.to_year.is_some();
        market
            .by_price
            .iter()
            .map(|&i| i as usize)
            .filter(|&i| {
                let price = market.price[i];
                self.min_price.is_none_or(|lo| price >= lo)
                    && self.max_price.is_none_or(|hi| price <= hi)
                    && (!years
                        || market.year[i].is_some_and(|y| {
                            self.from_year.is_none_or(|lo| y >= lo)
                                && self.to_year.is_none_or(|hi| y <= hi)
                        }))
                    && (self.brands.is_empty() || self.brands.contains(&market.brand[i]))
            })
            .collect()
    }

    /// The filters in words, for captions.
    fn describe(&self, market: &Market) -> String {
        let mut parts = Vec::new();
        match (self.min_price, self.max_price) {
            (Some(lo), Some(hi)) => parts.push(format!("priced {} to {}", money(lo), money(hi))),
            (Some(lo), None) => parts.push(format!("priced from {}", money(lo))),
            (None, Some(hi)) => parts.push(format!("priced up to {}", money(hi))),
            (None, None) => {}
        }
        match (self.from_year, self.to_year) {
            (Some(lo), Some(hi)) => parts.push(format!("model years {lo} to {hi}")),
            (Some(lo), None) => parts.push(format!("model year {lo} or later")),
            (None, Some(hi)) => parts.push(format!("model year {hi} or earlier")),
            (None, None) => {}
        }
        if !self.brands.is_empty() {
            let names: Vec<&str> = self
                .brands
                .iter()
                .map(|&b| market.brands[b as usize].name.as_str())
                .collect();
            parts.push(format!("brands {}", names.join(", ")));
        }
        if parts.is_empty() {
            "all listings".into()
        } else {
            parts.join("; ")
        }
    }
}

/// The prices of `rows` grouped by a key. `rows` come cheapest first, so each group is
/// sorted as it is collected.
fn prices_by<K: Ord + Copy>(
    rows: &[usize],
    key: impl Fn(usize) -> Option<K>,
    price: &[f64],
) -> BTreeMap<K, Vec<f64>> {
    let mut groups: BTreeMap<K, Vec<f64>> = BTreeMap::new();
    for &i in rows {
        if let Some(k) = key(i) {
            groups.entry(k).or_default().push(price[i]);
        }
    }
    groups
}

/// Median prices by a key, with how many listings each median stands on.
fn medians_by<K: Ord + Copy>(
    rows: &[usize],
    key: impl Fn(usize) -> Option<K>,
    price: &[f64],
) -> Vec<(K, usize, f64)> {
    prices_by(rows, key, price)
        .into_iter()
        .map(|(k, sorted)| (k, sorted.len(), stats::median(&sorted)))
        .collect()
}

/// Everything the page draws, for the listings the filters keep.
pub struct MarketView {
    pub matching: usize,
    pub median: f64,
    pub median_age: f64,
    /// (model year, listings, median price).
    pub by_year: Vec<(u16, usize, f64)>,
    /// (age in years, listings, median price).
    pub by_age: Vec<(u16, usize, f64)>,
    /// (miles, price) of every `sample_step`-th listing with a known odometer.
    pub sample: Vec<(f64, f64)>,
    pub with_odometer: usize,
    pub sample_step: usize,
    /// (from, to, listings, median price) per mileage band.
    pub by_mileage: Vec<(f64, f64, usize, f64)>,
    /// (condition, listings, first quartile, median, third quartile), worst to best.
    pub by_condition: Vec<(&'static str, usize, f64, f64, f64)>,
}

impl MarketView {
    /// What the page draws for `rows`, which come cheapest first (see [`Filters::apply`]).
    pub fn of(market: &Market, rows: &[usize]) -> Self {
        debug_assert!(rows
            .windows(2)
            .all(|w| market.price[w[0]] <= market.price[w[1]]));
        let prices: Vec<f64> = rows.iter().map(|&i| market.price[i]).collect();
        let ages = stats::sorted(rows.iter().filter_map(|&i| market.age[i].map(f64::from)));
        let with_odometer: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&i| market.odometer[i].is_finite())
            .collect();
        let sample_step = with_odometer.len().div_ceil(SAMPLE).max(1);
        let sample = with_odometer
            .iter()
            .step_by(sample_step)
            .map(|&i| (f64::from(market.odometer[i]), market.price[i]))
            .collect();
        let mut mileage = prices_by(
            &with_odometer,
            |i| {
                let miles = f64::from(market.odometer[i]);
                MILEAGE_BANDS
                    .iter()
                    .position(|&(lo, hi)| miles >= lo && miles < hi)
            },
            &market.price,
        );
        let by_mileage = MILEAGE_BANDS
            .iter()
            .enumerate()
            .map(|(band, &(lo, hi))| {
                let sorted = mileage.remove(&band).unwrap_or_default();
                (lo, hi, sorted.len(), stats::median(&sorted))
            })
            .collect();
        let by_condition = prices_by(rows, |i| Some(market.condition[i]), &market.price)
            .into_iter()
            .map(|(c, sorted)| {
                (
                    CONDITIONS[c as usize],
                    sorted.len(),
                    stats::quantile(&sorted, 0.25),
                    stats::median(&sorted),
                    stats::quantile(&sorted, 0.75),
                )
            })
            .collect();
        Self {
            matching: rows.len(),
            median: stats::median(&prices),
            median_age: stats::median(&ages),
            by_year: medians_by(rows, |i| market.year[i], &market.price),
            by_age: medians_by(rows, |i| market.age[i], &market.price),
            with_odometer: with_odometer.len(),
            sample,
            sample_step,
            by_mileage,
            by_condition,
        }
    }
}

pub async fn page(
    State(pages): State<Pages<CarVision>>,
    uri: Uri,
) -> Result<Response, Unavailable<CarVision>> {
    let view = dashboard::view(&pages)?;
    let market = view.dashboard.market();
    let filters = Filters::parse(&dashboard::query_pairs(&uri), market);
    let filtered;
    let m = if filters.is_empty() {
        &view.dashboard.unfiltered
    } else {
        filtered = MarketView::of(market, &filters.apply(market));
        &filtered
    };
    let scope = filters.describe(market);
    let main = html! {
        p.lead { "Prices across the listings the served model was trained on. The filters apply to every chart below and stay in the page's address, so a view can be bookmarked or shared." }
        @if let Some(summary) = dashboard::error_summary("Some filters could not be applied:", &filters.errors) {
            (summary)
        }
        (filter_form(&filters, market))
        p #matching role="status" data-value=(m.matching) {
            "Showing " strong { (count(m.matching as f64)) } " of " (count(market.len() as f64)) " listings: " (scope) "."
        }
        @if m.matching == 0 {
            div.notice { p { "No listing matches these filters. Widen them, or " a href="/market" { "clear them" } "." } }
        } @else {
            dl.figures {
                (key_figure("matching", "Listings", &count(m.matching as f64), m.matching as f64, None))
                (key_figure("median_price", "Median price", &money(m.median), m.median, None))
                (key_figure("median_age", "Median vehicle age", &years(m.median_age), m.median_age, None))
            }
            div.grid-2 {
                (median_by_year(m))
                (depreciation(m))
                (price_vs_mileage(m))
                (by_condition(m))
            }
        }
    };
    Ok(dashboard::respond(
        StatusCode::OK,
        dashboard::page::<CarVision>("/market", "Market", Some(&view.model), main),
    ))
}

fn filter_form(f: &Filters, market: &Market) -> Markup {
    let typed = |name: &str| f.typed.get(name).map_or("", String::as_str);
    let price_field = |name: &'static str, label: &'static str| Field {
        name,
        label,
        kind: InputKind::Number {
            min: 0.0,
            max: 100_000.0,
            step: 1.0,
        },
        value: typed(name),
        hint: None,
        error: f.error_of(name),
        required: false,
    };
    let year_field = |name: &'static str, label: &'static str| Field {
        name,
        label,
        kind: InputKind::Number {
            min: 1900.0,
            max: 2100.0,
            step: 1.0,
        },
        value: typed(name),
        hint: None,
        error: f.error_of(name),
        required: false,
    };
    let brand_error = f.error_of("brands");
    html! {
        form.filters method="get" action="/market" novalidate aria-label="Filters" {
            div.fields {
                (price_field("min_price", "Lowest price ($)"))
                (price_field("max_price", "Highest price ($)"))
                (year_field("from_year", "Model year from"))
                (year_field("to_year", "Model year to"))
            }
            fieldset.brands #brands aria-describedby=[brand_error.map(|_| "brands-error")] {
                legend { "Brands" }
                span.hint { "None ticked means every brand." }
                @if let Some(error) = brand_error {
                    span.field-error #brands-error { "Error: " (error) }
                }
                div.options {
                    @for brand in market.brands.iter().take(BRAND_CHOICES) {
                        label {
                            input type="checkbox" name="brand" value=(brand.name)
                                checked[f.asked_brands.contains(&brand.name)];
                            (brand.name) " (" (count(brand.count as f64)) ")"
                        }
                    }
                }
            }
            div.actions {
                button type="submit" { "Apply filters" }
                @if !f.is_empty() || !f.errors.is_empty() {
                    a href="/market" { "Clear the filters" }
                }
            }
        }
    }
}

fn median_by_year(m: &MarketView) -> Markup {
    let drawn: Vec<(f64, f64)> = m
        .by_year
        .iter()
        .filter(|g| g.1 >= MIN_GROUP)
        .map(|&(y, _, p)| (f64::from(y), p))
        .collect();
    let dearest = m
        .by_year
        .iter()
        .filter(|g| g.1 >= MIN_GROUP)
        .max_by(|a, b| a.2.total_cmp(&b.2));
    let chart = Plot {
        id: "median-by-year-chart".into(),
        title: "Median price by model year".into(),
        description: match dearest {
            Some((y, n, p)) => format!(
                "Median price per model year with at least {MIN_GROUP} listings; the highest is {} for {y} ({} listings).",
                money(*p),
                count(*n as f64)
            ),
            None => format!("No model year has {MIN_GROUP} listings."),
        },
        x: Axis::new("Model year", Format::Year),
        y: Axis::new("Median price", Format::Money).including(0.0),
        layers: vec![Layer::Line {
            points: drawn,
            stroke: Stroke::Solid,
        }],
    };
    let caption = html! {
        "Each point is the median price of one model year with at least " (MIN_GROUP) " listings."
        @if let Some((y, _, p)) = dearest {
            " Highest: " strong { (money(*p)) } " for " (y) "."
        }
    };
    let table = html! {
        table {
            thead { tr { th scope="col" { "Model year" } th.num scope="col" { "Listings" } th.num scope="col" { "Median price" } } }
            tbody {
                @for (y, n, p) in m.by_year.iter().rev() {
                    tr { th scope="row" { (y) } td.num { (count(*n as f64)) } td.num data-value=(p) { (money(*p)) } }
                }
            }
        }
    };
    figure(
        "median-by-year",
        "Median price by model year",
        chart.render(),
        caption,
        table,
    )
}

fn depreciation(m: &MarketView) -> Markup {
    let groups: Vec<&(u16, usize, f64)> = m.by_age.iter().filter(|g| g.1 >= MIN_GROUP).collect();
    let start = groups.first().map(|g| (g.0, g.2));
    let retained = |price: f64| start.map_or(f64::NAN, |(_, p0)| price / p0);
    // How much value is left at ten years, or at the oldest age with enough listings.
    let later = groups
        .iter()
        .find(|g| g.0 == 10)
        .or(groups.last())
        .filter(|g| start.is_some_and(|(a0, _)| g.0 > a0));
    let summary = match (start, later) {
        (Some((a0, p0)), Some(g)) => format!(
            "The median falls from {} at {} to {} at {}: {} of the value kept.",
            money(p0),
            years(f64::from(a0)),
            money(g.2),
            years(f64::from(g.0)),
            percent(retained(g.2), 0)
        ),
        (Some((a0, p0)), None) => format!("Median {} at {}.", money(p0), years(f64::from(a0))),
        _ => format!("No age has {MIN_GROUP} listings."),
    };
    let chart = Plot {
        id: "depreciation-chart".into(),
        title: "Median price by vehicle age".into(),
        description: summary.clone(),
        x: Axis::new("Vehicle age (years)", Format::Count).including(0.0),
        y: Axis::new("Median price", Format::Money).including(0.0),
        layers: vec![Layer::Line {
            points: groups.iter().map(|g| (f64::from(g.0), g.2)).collect(),
            stroke: Stroke::Solid,
        }],
    };
    let caption = html! {
        "Vehicle age is the listing's year minus its model year; ages with at least " (MIN_GROUP) " listings. "
        (summary)
    };
    let table = html! {
        table {
            thead { tr { th scope="col" { "Age (years)" } th.num scope="col" { "Listings" } th.num scope="col" { "Median price" } th.num scope="col" { "Of the youngest" } } }
            tbody {
                @for (age, n, p) in &m.by_age {
                    tr {
                        th scope="row" { (age) } td.num { (count(*n as f64)) } td.num { (money(*p)) }
                        td.num { @if *n >= MIN_GROUP { (percent(retained(*p), 0)) } @else { "too few" } }
                    }
                }
            }
        }
    };
    figure(
        "depreciation",
        "Depreciation by vehicle age",
        chart.render(),
        caption,
        table,
    )
}

fn price_vs_mileage(m: &MarketView) -> Markup {
    let chart = Plot {
        id: "mileage-chart".into(),
        title: "Price against mileage".into(),
        description: format!(
            "{} listings, every {} of the {} with a known odometer; median price by mileage band in the table.",
            count(m.sample.len() as f64),
            ordinal(m.sample_step),
            count(m.with_odometer as f64)
        ),
        x: Axis::new("Odometer (miles)", Format::Miles).including(0.0),
        y: Axis::new("Price", Format::Money).including(0.0),
        layers: vec![Layer::Points(m.sample.clone())],
    };
    let caption = html! {
        "A sample of " (count(m.sample.len() as f64)) " listings (every " (ordinal(m.sample_step)) " of the "
        (count(m.with_odometer as f64)) " with a known odometer)."
        @if let (Some(first), Some(last)) = (m.by_mileage.iter().find(|b| b.2 > 0), m.by_mileage.iter().rev().find(|b| b.2 > 0)) {
            " Median price " strong { (money(first.3)) } " under " (miles(first.1)) ", " strong { (money(last.3)) } " from " (miles(last.0)) "."
        }
    };
    let table = html! {
        table {
            thead { tr { th scope="col" { "Mileage" } th.num scope="col" { "Listings" } th.num scope="col" { "Median price" } } }
            tbody {
                @for (lo, hi, n, p) in &m.by_mileage {
                    tr {
                        th scope="row" { @if hi.is_finite() { (miles(*lo)) " to under " (miles(*hi)) } @else { (miles(*lo)) " and more" } }
                        td.num { (count(*n as f64)) } td.num { (money(*p)) }
                    }
                }
            }
        }
    };
    figure(
        "price-mileage",
        "Price against mileage",
        chart.render(),
        caption,
        table,
    )
}

fn by_condition(m: &MarketView) -> Markup {
    let chart = BarList {
        id: "condition-chart".into(),
        title: "Median price by condition".into(),
        description: m
            .by_condition
            .iter()
            .map(|(c, n, _, p, _)| format!("{c}: {} ({} listings)", money(*p), count(*n as f64)))
            .collect::<Vec<_>>()
            .join("; "),
        rows: m
            .by_condition
            .iter()
            .rev()
            .map(|(c, n, _, p, _)| BarRow {
                label: (*c).into(),
                value: *p,
                text: format!("{} · {} listings", money(*p), count(*n as f64)),
            })
            .collect(),
    };
    let caption = html! { "Best condition first; the table gives the middle half of prices (first to third quartile)." };
    let table = html! {
        table {
            thead { tr { th scope="col" { "Condition" } th.num scope="col" { "Listings" } th.num scope="col" { "First quartile" } th.num scope="col" { "Median" } th.num scope="col" { "Third quartile" } } }
            tbody {
                @for (c, n, q1, p, q3) in m.by_condition.iter().rev() {
                    tr { th scope="row" { (c) } td.num { (count(*n as f64)) } td.num { (money(*q1)) } td.num { (money(*p)) } td.num { (money(*q3)) } }
                }
            }
        }
    };
    figure(
        "by-condition",
        "Price by condition",
        chart.render(),
        caption,
        table,
    )
}

fn ordinal(n: usize) -> String {
    match n {
        1 => "one".into(),
        n => {
            let suffix = match (n % 10, n % 100) {
                (1, r) if r != 11 => "st",
                (2, r) if r != 12 => "nd",
                (3, r) if r != 13 => "rd",
                _ => "th",
            };
            format!("{n}{suffix}")
        }
    }
}
