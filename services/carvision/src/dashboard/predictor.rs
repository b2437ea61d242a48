//! `/predict`: a form with every field of `POST /predict`. The answer goes through the very
//! path of the API (the form becomes the JSON body the API would get: the same parsing,
//! validation and model), then is placed among similar listings and explained feature by
//! feature. A bad value is shown beside its field with the API's own message.

use std::collections::BTreeMap;

use maud::{html, Markup, Render};
use serde_json::{Map, Value};
use serving::axum::extract::State;
use serving::axum::http::{StatusCode, Uri};
use serving::axum::response::Response;
use serving::dashboard::chart::{Axis, BarList, BarRow, Format, Layer, Plot, Stroke};
use serving::dashboard::format::{count, miles, money, percent, signed_money};
use serving::dashboard::{self, figure, Field, InputKind, Pages, Unavailable};
use serving::error::ApiError;
use serving::{FieldError, Service};

use super::data::Market;
use super::overview::Histogram;
use super::stats;
use crate::features::{brand_of, FEATURES};
use crate::listing::{
    Listing, PricePrediction, COLORS, CONDITIONS, DRIVES, FUELS, TRANSMISSIONS, TYPES,
};
use crate::model::{explain, Explanation, Model};
use crate::CarVision;

/// Models suggested in the model field (most listed first).
const SUGGESTED_MODELS: usize = 500;
/// Similar listings are those this many model years either side.
const YEARS_AROUND: i64 = 2;
/// Fewest similar listings worth comparing with; below, the comparison widens.
const MIN_SIMILAR: usize = 10;
/// Features drawn in the explanation chart (all are in its table).
const DRAWN_CONTRIBUTIONS: usize = 8;

#[derive(Clone, Copy)]
enum Kind {
    /// A whole number in `min..=max`.
    Integer(f64, f64),
    /// A number in `min..=max`.
    Number(f64, f64),
    Text,
    Choice(&'static [&'static str]),
}

struct FormField {
    name: &'static str,
    label: &'static str,
    kind: Kind,
    hint: Option<&'static str>,
    required: bool,
}

const fn field(
    name: &'static str,
    label: &'static str,
    kind: Kind,
    hint: Option<&'static str>,
    required: bool,
) -> FormField {
    FormField {
        name,
        label,
        kind,
        hint,
        required,
    }
}

/// The request fields of `POST /predict`, named as in its JSON. Four-wheel drive (`is_4wd`)
/// is `drive` = 4wd: the API takes either for the same fact.
const FIELDS: [FormField; 10] = [
    field(
        "model_year",
        "Model year",
        Kind::Integer(1900.0, 2100.0),
        Some("Like 2015."),
        true,
    ),
    field(
        "model",
        "Make and model",
        Kind::Text,
        Some("Brand first, as listed (e.g. toyota camry); suggestions come from the listings."),
        true,
    ),
    field(
        "condition",
        "Condition",
        Kind::Choice(CONDITIONS),
        None,
        false,
    ),
    field(
        "cylinders",
        "Cylinders",
        Kind::Integer(2.0, 16.0),
        Some("2 to 16; blank means 4."),
        false,
    ),
    field("fuel", "Fuel", Kind::Choice(FUELS), None, false),
    field(
        "odometer",
        "Odometer (miles)",
        Kind::Number(0.0, 2_000_000.0),
        Some("Blank means 0."),
        false,
    ),
    field(
        "transmission",
        "Transmission",
        Kind::Choice(TRANSMISSIONS),
        None,
        false,
    ),
    field("type", "Body type", Kind::Choice(TYPES), None, false),
    field(
        "paint_color",
        "Paint colour",
        Kind::Choice(COLORS),
        None,
        false,
    ),
    field(
        "drive",
        "Drive",
        Kind::Choice(DRIVES),
        Some("4wd is four-wheel drive (the API's is_4wd)."),
        false,
    ),
];

/// The form as first shown: the API's example listing.
fn example_values() -> BTreeMap<&'static str, String> {
    let example = serde_json::to_value(CarVision::example_request()).unwrap_or_default();
    let mut values: BTreeMap<&'static str, String> = FIELDS
        .iter()
        .map(|f| {
            let text = match &example[f.name] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            (f.name, text)
        })
        .collect();
    if example["is_4wd"] == true {
        values.insert("drive", "4wd".into());
    }
    values
}

/// The JSON body `POST /predict` would get from the form, or the fields that are not numbers.
fn request_body(values: &BTreeMap<&'static str, String>) -> Result<Vec<u8>, Vec<FieldError>> {
    let mut body = Map::new();
    let mut errors = Vec::new();
    for f in &FIELDS {
        let text = values.get(f.name).map_or("", |v| v.trim());
        if text.is_empty() {
            if f.required {
                errors.push(FieldError::new(
                    f.name,
                    format!("enter the {}", f.label.to_lowercase()),
                ));
            }
            continue;
        }
        let value = match f.kind {
            Kind::Integer(..) | Kind::Number(..) => match text.replace(',', "").parse::<f64>() {
                // Whole numbers as JSON integers, so the API's integer fields take them.
                Ok(n) if n.is_finite() && n.fract() == 0.0 && n.abs() < 1e15 => {
                    Value::from(n as i64)
                }
                Ok(n) if n.is_finite() => Value::from(n),
                _ => {
                    errors.push(FieldError::new(
                        f.name,
                        format!("must be a number, got {}", serving::json::quote(text)),
                    ));
                    continue;
                }
            },
            Kind::Text | Kind::Choice(_) => Value::from(text),
        };
        body.insert(f.name.to_owned(), value);
    }
    if errors.is_empty() {
        Ok(serde_json::to_vec(&body).unwrap_or_default())
    } else {
        Err(errors)
    }
}

/// The listings a prediction is compared with, and how they were chosen.
struct Similar {
    scope: String,
    prices: Vec<f64>,
}

/// The listings of the same model within [`YEARS_AROUND`] model years; if too few, of the
/// same brand; then of any brand; then all. One pass over the rows, cheapest first, so each
/// set of prices comes sorted.
fn similar(market: &Market, listing: &Listing) -> Similar {
    let model = listing.model.trim().to_lowercase();
    let brand = brand_of(&model);
    let year = listing.model_year;
    let (model_id, brand_id) = (market.model_id(&model), market.brand_id(&brand));
    let mut sets: [Vec<f64>; 3] = Default::default();
    for &i in &market.by_price {
        let i = i as usize;
        let near = market.year[i].is_some_and(|y| (i64::from(y) - year).abs() <= YEARS_AROUND);
        if !near {
            continue;
        }
        let price = market.price[i];
        sets[2].push(price);
        if brand_id == Some(market.brand[i]) {
            sets[1].push(price);
            if model_id == Some(market.model[i]) {
                sets[0].push(price);
            }
        }
    }
    let years = format!(
        "model years {} to {}",
        year - YEARS_AROUND,
        year + YEARS_AROUND
    );
    let scopes = [
        format!("{model} listings of {years}"),
        format!("{brand} listings of {years}"),
        format!("listings of {years}"),
    ];
    for (scope, prices) in scopes.into_iter().zip(sets) {
        if prices.len() >= MIN_SIMILAR {
            return Similar { scope, prices };
        }
    }
    Similar {
        scope: "all listings".into(),
        prices: market
            .by_price
            .iter()
            .map(|&i| market.price[i as usize])
            .collect(),
    }
}

/// A feature of the listing in words, with its value.
fn feature_label(feature: &str, l: &Listing) -> String {
    let model = l.model.trim().to_lowercase();
    match feature {
        "model_year" => format!("Model year {}", l.model_year),
        "brand" => format!("Brand: {}", brand_of(&model)),
        "model" => format!("Model: {model}"),
        "condition" => format!("Condition: {}", CONDITIONS[l.condition as usize]),
        "cylinders" => format!("Cylinders: {}", l.cylinders),
        "fuel" => format!("Fuel: {}", FUELS[l.fuel as usize]),
        "odometer" => format!("Odometer: {}", miles(l.odometer)),
        "transmission" => format!("Transmission: {}", TRANSMISSIONS[l.transmission as usize]),
        "type" => format!("Body: {}", TYPES[l.body_type as usize]),
        "paint_color" => format!("Paint: {}", COLORS[l.paint_color as usize]),
        "is_4wd" => format!(
            "Four-wheel drive: {}",
            if l.four_wd().unwrap_or(false) {
                "yes"
            } else {
                "no"
            }
        ),
        other => other.to_owned(),
    }
}

/// What the page shows after a submission.
enum Outcome {
    Nothing,
    Priced {
        prediction: PricePrediction,
        listing: Listing,
    },
    Refused(Vec<FieldError>),
    Failed(String),
}

pub async fn page(
    State(pages): State<Pages<CarVision>>,
    uri: Uri,
) -> Result<Response, Unavailable<CarVision>> {
    let view = dashboard::view(&pages)?;
    let pairs = dashboard::query_pairs(&uri);
    let submitted = pairs
        .iter()
        .any(|(k, _)| FIELDS.iter().any(|f| f.name == k));
    let mut values = if submitted {
        BTreeMap::new()
    } else {
        example_values()
    };
    for (key, value) in pairs {
        if let Some(f) = FIELDS.iter().find(|f| f.name == key) {
            values.insert(f.name, value);
        }
    }
    let outcome = if !submitted {
        Outcome::Nothing
    } else {
        match request_body(&values) {
            Err(errors) => Outcome::Refused(errors),
            Ok(body) => match dashboard::predict(&pages, &view, &body) {
                Ok((listing, prediction)) => Outcome::Priced {
                    prediction,
                    listing,
                },
                Err(ApiError::Invalid(e)) => Outcome::Refused(vec![e]),
                Err(ApiError::Malformed(message) | ApiError::Internal(message)) => {
                    Outcome::Failed(message)
                }
                Err(e) => Outcome::Failed(format!("{e:?}")),
            },
        }
    };
    let errors: Vec<FieldError> = match &outcome {
        Outcome::Refused(errors) => errors.clone(),
        _ => Vec::new(),
    };
    let summary: Vec<(String, String, String)> = errors
        .iter()
        .map(|e| {
            let name = form_name(&e.field);
            (name.to_owned(), label_of(name).to_owned(), e.reason.clone())
        })
        .collect();
    let market = view.dashboard.market();
    let main = html! {
        p.lead {
            "Estimate a listing's price with the model the API serves: the form is sent through the same parsing, validation and model as "
            code { "POST /predict" } "."
        }
        @if let Some(summary) = dashboard::error_summary("The price cannot be estimated yet:", &summary) {
            (summary)
        }
        @if let Outcome::Failed(message) = &outcome {
            div.notice.error role="alert" { p { "The service could not answer: " (message) } }
        }
        (form(&values, &errors, market))
        @if let Outcome::Priced { prediction, listing } = &outcome {
            (result(prediction, listing, market, &view.model.model))
        }
    };
    Ok(dashboard::respond(
        StatusCode::OK,
        dashboard::page::<CarVision>("/predict", "Price predictor", Some(&view.model), main),
    ))
}

/// The form field an API error names (`is_4wd` is asked as `drive`).
fn form_name(field: &str) -> &str {
    match field {
        "is_4wd" => "drive",
        other => other,
    }
}

fn label_of(field: &str) -> &'static str {
    let name = form_name(field);
    FIELDS
        .iter()
        .find(|f| f.name == name)
        .map_or("The listing", |f| f.label)
}

fn form(values: &BTreeMap<&'static str, String>, errors: &[FieldError], market: &Market) -> Markup {
    // An error without a field of the form (there should be none) goes in the summary only.
    let error_of = |name: &str| {
        errors
            .iter()
            .find(|e| form_name(&e.field) == name)
            .map(|e| e.reason.as_str())
    };
    html! {
        form.predictor method="get" action="/predict" novalidate aria-label="Listing to price" {
            div.fields {
                @for f in &FIELDS {
                    @let kind = match f.kind {
                        Kind::Integer(min, max) => InputKind::Number { min, max, step: 1.0 },
                        Kind::Number(min, max) => InputKind::Number { min, max, step: 1.0 },
                        Kind::Text => InputKind::Text { list: Some("models") },
                        Kind::Choice(options) => InputKind::Select(options),
                    };
                    (Field {
                        name: f.name,
                        label: f.label,
                        kind,
                        value: values.get(f.name).map_or("", String::as_str),
                        hint: f.hint,
                        error: error_of(f.name),
                        required: f.required,
                    })
                }
            }
            datalist #models {
                @for m in market.models.iter().take(SUGGESTED_MODELS) {
                    option value=(m.name) {}
                }
            }
            div.actions {
                button type="submit" { "Estimate the price" }
                a href="/predict" { "Start again from the example" }
            }
        }
    }
}

fn result(
    prediction: &PricePrediction,
    listing: &Listing,
    market: &Market,
    model: &Model,
) -> Markup {
    let price = prediction.prediction;
    let similar = similar(market, listing);
    let cheaper = similar.prices.partition_point(|&p| p < price);
    let share_below = cheaper as f64 / similar.prices.len().max(1) as f64;
    let explanation = explain(model, listing);
    let mut features: Vec<(String, f64)> = FEATURES
        .iter()
        .zip(&explanation.contributions)
        .map(|(f, c)| (feature_label(f, listing), *c))
        .collect();
    features.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    let similar_median = stats::median(&similar.prices);
    html! {
        section.result aria-labelledby="result-heading" {
            h2 #result-heading { "Estimated price" }
            p.price #predicted-price data-value=(price) { (money(price)) }
            p {
                "A " (listing.model_year) " " (listing.model.trim().to_lowercase()) " in "
                (CONDITIONS[listing.condition as usize]) " condition with " (miles(listing.odometer))
                ", by model version " code { (prediction.model_version) } "."
            }
            p #placement data-value=(share_below) {
                "Dearer than " strong { (percent(share_below, 0)) } " of " (count(similar.prices.len() as f64))
                " similar listings (" (similar.scope) "), whose median is " (money(similar_median)) "."
            }
        }
        div.grid-2 {
            (placement(price, &similar))
            (contributions(&explanation, &features, price))
        }
    }
}

fn placement(price: f64, similar: &Similar) -> Markup {
    let histogram = Histogram::of(&similar.prices, 20);
    let median = stats::median(&similar.prices);
    let chart = Plot {
        id: "similar-chart".into(),
        title: "The estimate among similar listings".into(),
        description: format!(
            "Prices of {} {}: median {}; the estimate {}.",
            count(similar.prices.len() as f64),
            similar.scope,
            money(median),
            money(price)
        ),
        x: Axis::new("Price", Format::Money)
            .including(0.0)
            .including(price),
        y: Axis::new("Listings", Format::Count).including(0.0),
        layers: vec![
            Layer::Bars(histogram.bars()),
            Layer::Rule {
                x: price,
                label: format!("Estimate {}", money(price)),
                stroke: Stroke::Solid,
            },
            Layer::Rule {
                x: median,
                label: format!("Median {}", money(median)),
                stroke: Stroke::Dashed,
            },
        ],
    };
    let caption = html! {
        "Prices of " (similar.scope) ". The solid line is the estimate, the dashed line their median; the middle half lies from "
        (money(stats::quantile(&similar.prices, 0.25))) " to " (money(stats::quantile(&similar.prices, 0.75))) "."
    };
    let table = html! {
        table {
            tbody {
                tr { th scope="row" { "Similar listings" } td.num { (count(similar.prices.len() as f64)) } }
                tr { th scope="row" { "Lowest" } td.num { (money(similar.prices.first().copied().unwrap_or(f64::NAN))) } }
                tr { th scope="row" { "First quartile" } td.num { (money(stats::quantile(&similar.prices, 0.25))) } }
                tr { th scope="row" { "Median" } td.num { (money(median)) } }
                tr { th scope="row" { "Third quartile" } td.num { (money(stats::quantile(&similar.prices, 0.75))) } }
                tr { th scope="row" { "Highest" } td.num { (money(similar.prices.last().copied().unwrap_or(f64::NAN))) } }
                tr { th scope="row" { "The estimate" } td.num { (money(price)) } }
            }
        }
    };
    figure(
        "similar",
        "Among similar listings",
        chart.render(),
        caption,
        table,
    )
}

fn contributions(e: &Explanation, features: &[(String, f64)], price: f64) -> Markup {
    let chart = BarList {
        id: "contributions-chart".into(),
        title: "What moved the price most".into(),
        description: features
            .iter()
            .take(DRAWN_CONTRIBUTIONS)
            .map(|(label, c)| format!("{label} {}", signed_money(*c)))
            .collect::<Vec<_>>()
            .join("; "),
        rows: features
            .iter()
            .take(DRAWN_CONTRIBUTIONS)
            .map(|(label, c)| BarRow {
                label: label.clone(),
                value: *c,
                text: signed_money(*c),
            })
            .collect(),
    };
    let caption = html! {
        "Starting from the model's average estimate, " strong { (money(e.base)) } ", each feature of this listing adds (+, right) or takes away (−, left) "
        "this much; together they make " (money(e.raw)) "."
        @if e.raw < 0.0 { " The estimate is floored at " (money(price)) "." }
        " Exact Shapley values of the trees."
    };
    let table = html! {
        table #contributions {
            thead { tr { th scope="col" { "Feature" } th.num scope="col" { "Moves the price by" } } }
            tbody {
                tr { th scope="row" { "Average estimate (start)" } td.num data-value=(e.base) { (money(e.base)) } }
                @for (label, c) in features {
                    tr { th scope="row" { (label) } td.num data-value=(c) { (signed_money(*c)) } }
                }
                tr { th scope="row" { "Estimate" } td.num data-value=(e.raw) { (money(e.raw)) } }
            }
        }
    };
    figure(
        "explanation",
        "What moved the price",
        chart.render(),
        caption,
        table,
    )
}
