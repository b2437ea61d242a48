//! CarVision: what is this used car worth? A gradient-boosted regressor on the columns of the
//! public `vehicles_us.csv`, and a dashboard of the market it was trained on (`dashboard`).

pub mod dashboard;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serving::promotion::{Gate, GateKind};
use serving::synth::{
    self,
    rand::Rng,
    rand_distr::{Distribution, Gamma, LogNormal},
};
use serving::table::{CellError, Row, Table};
use serving::train::{
    self, BoosterParams, Features, GradientBooster, ObjectiveType, RegressionMetrics,
};
use serving::{check_range, FieldError, Manifest, PredictionMeta, Service};
use utoipa::ToSchema;

pub const COLUMNS: [&str; 13] = [
    "price",
    "model_year",
    "model",
    "condition",
    "cylinders",
    "fuel",
    "odometer",
    "transmission",
    "type",
    "paint_color",
    "is_4wd",
    "date_posted",
    "days_listed",
];
const FEATURES: &[&str] = &[
    "model_year",
    "brand",
    "model",
    "condition",
    "cylinders",
    "fuel",
    "odometer",
    "transmission",
    "type",
    "paint_color",
    "is_4wd",
];
/// A request field's allowed values as an enum, and the same values as the list the CSV
/// loader checks; a value's code (what the trees see) is its position in the list.
macro_rules! categories {
    ($(#[$doc:meta])* $name:ident, $all:ident, default $default:ident, [$($variant:ident = $text:tt),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        pub enum $name {
            $(
                #[serde(rename = $text)]
                #[allow(non_camel_case_types)]
                $variant,
            )+
        }
        const $all: &[&str] = &[$($text),+];
        impl $name {
            // Every category but `Drive` is a model feature.
            #[allow(dead_code)]
            fn code(self) -> f64 {
                self as usize as f64
            }
        }
        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }
    };
}

categories!(
    /// Worst to best, so the code is an ordinal the trees can split on.
    Condition, CONDITIONS, default Good,
    [Salvage = "salvage", Fair = "fair", Good = "good", Excellent = "excellent", LikeNew = "like new", New = "new"]
);
categories!(Fuel, FUELS, default Gas, [Gas = "gas", Diesel = "diesel", Hybrid = "hybrid", Electric = "electric", Other = "other"]);
categories!(Transmission, TRANSMISSIONS, default Automatic, [Automatic = "automatic", Manual = "manual", Other = "other"]);
categories!(
    BodyType, TYPES, default Sedan,
    [
        Suv = "SUV", Truck = "truck", Sedan = "sedan", Pickup = "pickup", Coupe = "coupe",
        Wagon = "wagon", MiniVan = "mini-van", Hatchback = "hatchback", Van = "van",
        Convertible = "convertible", Other = "other", Offroad = "offroad", Bus = "bus",
    ]
);
categories!(
    Color, COLORS, default White,
    [
        White = "white", Black = "black", Silver = "silver", Grey = "grey", Blue = "blue",
        Red = "red", Green = "green", Brown = "brown", Custom = "custom", Yellow = "yellow",
        Orange = "orange", Purple = "purple",
    ]
);
categories!(
    /// Which wheels drive the car, as the old API took it; the model sees four-wheel drive or not.
    Drive, DRIVES, default Fwd, [Fwd = "fwd", Rwd = "rwd", FourWd = "4wd"]
);

/// Listings outside this band are data-entry noise (1-dollar listings, six-figure typos).
const PRICE_BAND: (f64, f64) = (500.0, 100_000.0);
/// Prior weight of the target encodings: a model seen a handful of times leans on its brand.
const SMOOTHING: f64 = 10.0;
const ENCODING_FOLDS: usize = 5;

const PARAMS: BoosterParams = BoosterParams {
    iterations: 400,
    learning_rate: 0.1,
    max_depth: 6,
    l2: 1.0,
    min_leaf_weight: 5.0,
};

pub struct CarVision;

/// Longest `model` accepted: the public file's longest is under 40 characters.
const MAX_MODEL_CHARS: usize = 100;

fn model_name<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    serving::json::bounded_text(deserializer, MAX_MODEL_CHARS)
}

fn default_cylinders() -> i64 {
    4
}

/// Optional, but never `null`: the schema says so.
fn present_flag<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<bool>, D::Error> {
    serving::json::flag(deserializer).map(Some)
}

/// Newest model year accepted: next year's models are on sale this year.
fn newest_model_year() -> i64 {
    current_year() + 1
}

fn model_year_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1900))
        .maximum(Some(newest_model_year()))
        .description(Some("Year of the model; `2015` or `2015.0`."))
        .build()
}

fn four_wd_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
    let schema = AnyOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .enum_values(Some([0, 1])),
        )
        .description(Some(
            "Four-wheel drive: true/false, or 1/0 as the public file writes it. Must agree with `drive` when both are given.",
        ))
        .build();
    utoipa::openapi::Schema::AnyOf(schema)
}

/// A used-car listing, as the old API took it: only `model_year` and `model` are required;
/// the rest default as there. Integers may be written `6` or `6.0`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!(CarVision::example_request()))]
pub struct Listing {
    #[serde(deserialize_with = "serving::json::integer")]
    #[schema(schema_with = model_year_schema)]
    pub model_year: i64,
    /// Brand then model, e.g. `ford f-150`; the first word is the brand.
    #[serde(deserialize_with = "model_name")]
    #[schema(min_length = 1, max_length = 100, pattern = "[A-Za-z0-9]")]
    pub model: String,
    #[serde(default)]
    #[schema(default = "good")]
    pub condition: Condition,
    #[serde(
        default = "default_cylinders",
        deserialize_with = "serving::json::integer"
    )]
    #[schema(minimum = 2, maximum = 16, default = 4)]
    pub cylinders: i64,
    #[serde(default)]
    #[schema(default = "gas")]
    pub fuel: Fuel,
    /// Miles.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2000000, default = 0)]
    pub odometer: f64,
    #[serde(default)]
    #[schema(default = "automatic")]
    pub transmission: Transmission,
    #[serde(rename = "type", default)]
    #[schema(default = "sedan")]
    pub body_type: BodyType,
    #[serde(default)]
    #[schema(default = "white")]
    pub paint_color: Color,
    /// fwd (the default), rwd or 4wd; `null` means the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive: Option<Drive>,
    #[serde(
        default,
        deserialize_with = "present_flag",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = four_wd_schema)]
    pub is_4wd: Option<bool>,
}

impl Listing {
    /// Four-wheel drive, from `drive` or `is_4wd`, which must agree when both are given.
    pub fn four_wd(&self) -> Result<bool, FieldError> {
        match (self.drive, self.is_4wd) {
            (Some(drive), Some(flag)) if (drive == Drive::FourWd) != flag => Err(FieldError::new(
                "is_4wd",
                format!(
                    "is {flag} but drive is {:?}: give one, or make them agree",
                    DRIVES[drive as usize]
                ),
            )),
            (Some(drive), _) => Ok(drive == Drive::FourWd),
            (None, flag) => Ok(flag.unwrap_or(false)),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PricePrediction {
    /// Estimated price in US dollars.
    pub prediction: f64,
    pub model_version: String,
}

/// Smoothed mean price per category, learned on the training rows.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TargetEncoding {
    prior: f64,
    // Ordered, so the same training writes the same bytes.
    means: BTreeMap<String, f64>,
}

impl TargetEncoding {
    fn fit<'a>(keys: impl Iterator<Item = (&'a str, f64)>, prior: f64) -> Self {
        let mut sums: HashMap<String, (f64, f64)> = HashMap::new();
        for (key, price) in keys {
            let e = sums.entry(key.to_owned()).or_default();
            e.0 += price;
            e.1 += 1.0;
        }
        let means = sums
            .into_iter()
            .map(|(k, (sum, n))| (k, (sum + SMOOTHING * prior) / (n + SMOOTHING)))
            .collect();
        Self { prior, means }
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.means.get(key).copied()
    }
}

#[derive(Serialize, Deserialize)]
pub struct Model {
    booster: GradientBooster,
    brand: TargetEncoding,
    model: TargetEncoding,
}

/// A listing reduced to what the features need, before the target encodings.
pub struct Parsed {
    pub(crate) brand: String,
    pub(crate) model: String,
    /// The numeric features, with NaN for the two encoded slots.
    pub(crate) row: [f64; 11],
}

/// Where each feature sits in a [`Parsed`] row.
pub(crate) mod column {
    pub const MODEL_YEAR: usize = 0;
    pub const CONDITION: usize = 3;
    pub const ODOMETER: usize = 6;
}

fn brand_of(model: &str) -> String {
    model.split_whitespace().next().unwrap_or("").to_lowercase()
}

fn parse_listing(l: &Listing) -> Parsed {
    let model = l.model.trim().to_lowercase();
    Parsed {
        brand: brand_of(&model),
        row: [
            l.model_year as f64,
            f64::NAN,
            f64::NAN,
            l.condition.code(),
            l.cylinders as f64,
            l.fuel.code(),
            l.odometer,
            l.transmission.code(),
            l.body_type.code(),
            l.paint_color.code(),
            // Validated before predicting; a contradiction never gets here.
            f64::from(u8::from(l.four_wd().unwrap_or(false))),
        ],
        model,
    }
}

fn parse_row(r: &Row<'_>) -> Result<(Parsed, f64), CellError> {
    let price = r.number("price")?;
    let model = r.text("model").to_lowercase();
    if model.is_empty() {
        return Err(r.error("model", "expected a model name, found a blank cell"));
    }
    let optional_category = |column: &str, allowed: &[&str]| -> Result<f64, CellError> {
        if r.text(column).is_empty() {
            Ok(f64::NAN)
        } else {
            r.category(column, allowed).map(|i| i as f64)
        }
    };
    let row = [
        r.optional_number("model_year")?.unwrap_or(f64::NAN),
        f64::NAN,
        f64::NAN,
        r.category("condition", CONDITIONS)? as f64,
        r.optional_number("cylinders")?.unwrap_or(f64::NAN),
        optional_category("fuel", FUELS)?,
        r.optional_number("odometer")?.unwrap_or(f64::NAN),
        optional_category("transmission", TRANSMISSIONS)?,
        optional_category("type", TYPES)?,
        optional_category("paint_color", COLORS)?,
        // 1.0 or blank; blank means no.
        r.optional_number("is_4wd")?.unwrap_or(0.0),
    ];
    Ok((
        Parsed {
            brand: brand_of(&model),
            model,
            row,
        },
        price,
    ))
}

/// Reads the public file's layout: the listings and their prices, outliers included.
pub fn load(path: &Path) -> anyhow::Result<(Vec<Parsed>, Vec<f64>)> {
    let (mut listings, mut prices) = (Vec::new(), Vec::new());
    Table::open(path, &COLUMNS)?
        .for_each_row(|r| {
            let (listing, price) = parse_row(r)?;
            listings.push(listing);
            prices.push(price);
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((listings, prices))
}

/// Reads the rows of a CSV held in memory as [`load`] reads a file, calling `each` with the
/// year the listing was posted too (`None` when `date_posted` has no readable year: training
/// never reads that column, so nothing else may reject it).
pub(crate) fn read_rows(
    bytes: Vec<u8>,
    mut each: impl FnMut(Parsed, f64, Option<i32>),
) -> anyhow::Result<()> {
    Table::from_reader(Box::new(std::io::Cursor::new(bytes)), &COLUMNS)?.for_each_row(|r| {
        let (listing, price) = parse_row(r)?;
        let posted = r
            .text("date_posted")
            .get(..4)
            .and_then(|y| y.parse::<i32>().ok())
            .filter(|y| (1900..=2200).contains(y));
        each(listing, price, posted);
        Ok(())
    })?;
    Ok(())
}

/// The rows training keeps: those priced within the band, in file order.
pub(crate) fn in_band(prices: &[f64]) -> Vec<usize> {
    (0..prices.len())
        .filter(|&i| (PRICE_BAND.0..=PRICE_BAND.1).contains(&prices[i]))
        .collect()
}

/// The seeded split of the `n` kept rows into training and held-out rows.
pub(crate) fn split(n: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    train::random_split(n, 0.2, seed)
}

fn encoded_row(p: &Parsed, brand: &TargetEncoding, model: &TargetEncoding) -> [f64; 11] {
    let brand_value = brand.get(&p.brand).unwrap_or(brand.prior);
    let mut row = p.row;
    row[1] = brand_value;
    row[2] = model.get(&p.model).unwrap_or(brand_value);
    row
}

fn fit_encodings(
    listings: &[Parsed],
    prices: &[f64],
    idx: &[usize],
) -> (TargetEncoding, TargetEncoding) {
    let prior = idx.iter().map(|&i| prices[i]).sum::<f64>() / idx.len() as f64;
    let brand = TargetEncoding::fit(
        idx.iter().map(|&i| (listings[i].brand.as_str(), prices[i])),
        prior,
    );
    let model = TargetEncoding::fit(
        idx.iter().map(|&i| (listings[i].model.as_str(), prices[i])),
        prior,
    );
    (brand, model)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

impl Service for CarVision {
    const MANIFEST: Manifest = serving::service_manifest!();
    const DESCRIPTION: &'static str = "Estimates the market price of a used car from its listing.";
    const FEATURES: &'static [&'static str] = FEATURES;
    const DEFAULT_ROWS: usize = 51_525;
    const REGISTERED_MODEL: &'static str = "CarVision-Regressor";
    // The old portfolio's promotion thresholds: R² 0.70 and RMSE $6,000.
    const PROMOTION_GATES: &'static [Gate] = &[
        Gate::new(GateKind::MinR2, 0.70),
        Gate::new(GateKind::MaxRmse, 6000.0),
    ];

    type Model = Model;
    type Request = Listing;
    type Response = PricePrediction;
    type Dashboard = dashboard::CarVisionDashboard;

    fn generate_data(rows: usize, seed: u64, out: &mut dyn Write) -> anyhow::Result<()> {
        let mut rng = synth::rng(seed);
        let age_dist = Gamma::new(2.2f64, 3.7)?;
        let price_noise = LogNormal::new(0.0f64, 0.2)?;
        let mileage_noise = LogNormal::new(0.0f64, 0.35)?;
        let listed = Gamma::new(1.6f64, 24.0)?;
        writeln!(out, "{}", COLUMNS.join(","))?;
        for _ in 0..rows {
            let car = &CARS[rng.gen_range(0..CARS.len())];
            let age = age_dist.sample(&mut rng).min(55.0).floor();
            let model_year = 2019.0 - age;
            let odometer = (age.max(0.3) * 11_500.0 * mileage_noise.sample(&mut rng)
                + rng.gen_range(0.0..4_000.0))
            .round();
            let condition = match age {
                a if a < 1.0 && synth::chance(&mut rng, 0.3) => "new",
                a if a < 4.0 && synth::chance(&mut rng, 0.25) => "like new",
                _ => synth::pick(
                    &mut rng,
                    &[
                        ("excellent", 0.48),
                        ("good", 0.43),
                        ("fair", 0.07),
                        ("salvage", 0.02),
                    ],
                ),
            };
            let condition_factor = match condition {
                "new" => 1.2,
                "like new" => 1.1,
                "excellent" => 1.0,
                "good" => 0.86,
                "fair" => 0.5,
                _ => 0.3,
            };
            let fuel = if car.body == "truck" || car.body == "pickup" {
                *synth::pick(
                    &mut rng,
                    &[("gas", 0.78), ("diesel", 0.21), ("other", 0.01)],
                )
            } else {
                *synth::pick(
                    &mut rng,
                    &[
                        ("gas", 0.96),
                        ("hybrid", 0.025),
                        ("electric", 0.005),
                        ("diesel", 0.005),
                        ("other", 0.005),
                    ],
                )
            };
            let four_wd = synth::chance(&mut rng, car.four_wd);
            let transmission = *synth::pick(
                &mut rng,
                &[("automatic", 0.91), ("manual", 0.055), ("other", 0.035)],
            );
            let mut price = car.new_price
                * 0.86f64.powf(age)
                * condition_factor
                * (-odometer / 300_000.0).exp()
                * if four_wd { 1.1 } else { 1.0 }
                * if fuel == "diesel" { 1.3 } else { 1.0 }
                * if transmission == "manual" { 0.93 } else { 1.0 }
                * price_noise.sample(&mut rng);
            price = price.max(800.0).round();
            // The public file's outliers: placeholder prices and extra digits.
            if synth::chance(&mut rng, 0.01) {
                price = 1.0;
            } else if synth::chance(&mut rng, 0.002) {
                price *= 100.0;
            }
            let blank_or = |rng: &mut synth::SynthRng, p: f64, text: String| {
                if synth::chance(rng, p) {
                    String::new()
                } else {
                    text
                }
            };
            let year_cell = blank_or(&mut rng, 0.07, format!("{model_year:.1}"));
            let cylinders_cell = blank_or(&mut rng, 0.10, format!("{:.1}", car.cylinders));
            let odometer_cell = blank_or(&mut rng, 0.15, format!("{odometer:.1}"));
            let color = COLORS[rng.gen_range(0..COLORS.len())];
            let color_cell = blank_or(&mut rng, 0.18, color.to_owned());
            let day = rng.gen_range(0..365);
            writeln!(
                out,
                "{price},{year_cell},{},{condition},{cylinders_cell},{fuel},{odometer_cell},{transmission},{},{color_cell},{},{},{}",
                car.model,
                car.body,
                if four_wd { "1.0" } else { "" },
                date_after_2018_05_01(day),
                listed.sample(&mut rng).round() as u32,
            )?;
        }
        Ok(())
    }

    fn train(data: &Path, seed: u64) -> anyhow::Result<(Model, serde_json::Value)> {
        let (all_listings, all_prices) = load(data)?;
        let keep = in_band(&all_prices);
        train::ensure_enough_rows(
            keep.len(),
            &format!(
                "listings priced within ${}..=${} (of {} rows)",
                PRICE_BAND.0,
                PRICE_BAND.1,
                all_prices.len()
            ),
        )?;
        let (listings, prices): (Vec<Parsed>, Vec<f64>) = {
            let mut pairs: Vec<Option<Parsed>> = all_listings.into_iter().map(Some).collect();
            keep.iter()
                .map(|&i| (pairs[i].take().expect("each row kept once"), all_prices[i]))
                .unzip()
        };
        let (train_idx, test_idx) = split(prices.len(), seed);

        // Out-of-fold encodings for the training rows, so the booster never sees a row's own
        // price inside its features; the test rows and serving use encodings from all of them.
        let mut x_rows = vec![[0.0; 11]; prices.len()];
        for held_out in train::folds(&train_idx, None, ENCODING_FOLDS, seed) {
            let fit: Vec<usize> = train_idx
                .iter()
                .copied()
                .filter(|i| held_out.binary_search(i).is_err())
                .collect();
            let (brand, model) = fit_encodings(&listings, &prices, &fit);
            for &i in &held_out {
                x_rows[i] = encoded_row(&listings[i], &brand, &model);
            }
        }
        let (brand, model) = fit_encodings(&listings, &prices, &train_idx);
        for &i in &test_idx {
            x_rows[i] = encoded_row(&listings[i], &brand, &model);
        }
        let mut x = Features::new(FEATURES);
        x_rows.iter().for_each(|r| x.push(r));

        let weights = vec![1.0; prices.len()];
        let booster = train::fit_booster(
            ObjectiveType::SquaredLoss,
            PARAMS,
            &x,
            &train_idx,
            &prices,
            &weights,
            seed,
        )?;
        let predicted = train::predict_rows(&booster, &x, &test_idx);
        let truth: Vec<f64> = test_idx.iter().map(|&i| prices[i]).collect();
        let test = RegressionMetrics::compute(&truth, &predicted);
        let baseline_price = median(&mut train_idx.iter().map(|&i| prices[i]).collect::<Vec<_>>());
        let baseline = RegressionMetrics::compute(&truth, &vec![baseline_price; truth.len()]);
        let metrics = serde_json::json!({
            "model": "gradient boosting (forust-ml)",
            "params": PARAMS,
            "rows": all_prices.len(),
            "rows_outside_price_band": all_prices.len() - prices.len(),
            "price_band": PRICE_BAND,
            "train_rows": train_idx.len(),
            "test_rows": test_idx.len(),
            "rmse": test.rmse,
            "mae": test.mae,
            "r2": test.r2,
            "mape": test.mape,
            "baseline": { "strategy": "median price", "price": baseline_price, "rmse": baseline.rmse, "mae": baseline.mae, "r2": baseline.r2, "mape": baseline.mape },
        });
        Ok((
            Model {
                booster,
                brand,
                model,
            },
            metrics,
        ))
    }

    fn check_model(model: &Model) -> anyhow::Result<()> {
        train::check_booster(&model.booster, ObjectiveType::SquaredLoss, FEATURES.len())?;
        let encodings = [&model.brand, &model.model];
        anyhow::ensure!(
            encodings
                .iter()
                .all(|e| e.prior.is_finite() && e.means.values().all(|m| m.is_finite())),
            "a target encoding holds a non-finite price"
        );
        Ok(())
    }

    fn validate(l: &Listing) -> Result<(), FieldError> {
        check_range(
            "model_year",
            l.model_year as f64,
            1900.0,
            newest_model_year() as f64,
        )?;
        if !l.model.chars().any(|c| c.is_ascii_alphanumeric()) {
            return Err(FieldError::new(
                "model",
                "must name the car, e.g. \"ford f-150\"",
            ));
        }
        check_range("cylinders", l.cylinders as f64, 2.0, 16.0)?;
        check_range("odometer", l.odometer, 0.0, 2_000_000.0)?;
        l.four_wd().map(|_| ())
    }

    fn request_schema_extras() -> Option<serde_json::Value> {
        // `drive` and `is_4wd` must agree when both are given.
        Some(serde_json::json!({
            "not": {
                "anyOf": [
                    {
                        "required": ["drive", "is_4wd"],
                        "properties": { "drive": { "const": "4wd" }, "is_4wd": { "enum": [false, 0] } }
                    },
                    {
                        "required": ["drive", "is_4wd"],
                        "properties": { "drive": { "enum": ["fwd", "rwd"] }, "is_4wd": { "enum": [true, 1] } }
                    }
                ]
            }
        }))
    }

    fn predict(model: &Model, listings: &[Listing], meta: &PredictionMeta) -> Vec<PricePrediction> {
        listings
            .iter()
            .map(|l| {
                let row = encoded_row(&parse_listing(l), &model.brand, &model.model);
                let price = train::predict_one(&model.booster, &row).max(0.0);
                PricePrediction {
                    prediction: (price * 100.0).round() / 100.0,
                    model_version: meta.model_version.clone(),
                }
            })
            .collect()
    }

    fn example_request() -> Listing {
        Listing {
            model_year: 2015,
            model: "ford f-150".into(),
            condition: Condition::Excellent,
            cylinders: 6,
            fuel: Fuel::Gas,
            odometer: 80_000.0,
            transmission: Transmission::Automatic,
            body_type: BodyType::Truck,
            paint_color: Color::White,
            drive: None,
            is_4wd: Some(true),
        }
    }
}

/// How each feature moved one listing's price: exact Shapley values of the trees (forust's
/// `Shapley` contributions on the raw prediction), in dollars.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// What the model predicts before looking at this listing: its average prediction.
    pub base: f64,
    /// One per feature, in [`Service::FEATURES`] order; `base` plus all of them is `raw`.
    pub contributions: Vec<f64>,
    /// The model's raw output (the price before it is floored at zero).
    pub raw: f64,
}

/// Explains the prediction for `listing` (which must be valid: see [`Service::validate`]).
pub fn explain(model: &Model, listing: &Listing) -> Explanation {
    let row = encoded_row(&parse_listing(listing), &model.brand, &model.model);
    let (contributions, base) = train::shapley_contributions(&model.booster, &row);
    Explanation {
        raw: base + contributions.iter().sum::<f64>(),
        base,
        contributions,
    }
}

fn current_year() -> i64 {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as f64;
    1970 + (days / 365.2425).floor() as i64
}

/// `YYYY-MM-DD`, `day` days after 2018-05-01 (the public file's listing window).
fn date_after_2018_05_01(day: u32) -> String {
    const MONTHS: [(u32, u32, u32); 12] = [
        (2018, 5, 31),
        (2018, 6, 30),
        (2018, 7, 31),
        (2018, 8, 31),
        (2018, 9, 30),
        (2018, 10, 31),
        (2018, 11, 30),
        (2018, 12, 31),
        (2019, 1, 31),
        (2019, 2, 28),
        (2019, 3, 31),
        (2019, 4, 30),
    ];
    let mut left = day % 365;
    for (year, month, len) in MONTHS {
        if left < len {
            return format!("{year}-{month:02}-{:02}", left + 1);
        }
        left -= len;
    }
    unreachable!("the months add up to 365 days")
}

struct Car {
    model: &'static str,
    body: &'static str,
    new_price: f64,
    four_wd: f64,
    cylinders: f64,
}

const fn car(
    model: &'static str,
    body: &'static str,
    new_price: f64,
    four_wd: f64,
    cylinders: f64,
) -> Car {
    Car {
        model,
        body,
        new_price,
        four_wd,
        cylinders,
    }
}

const CARS: &[Car] = &[
    car("ford f-150", "truck", 40_000.0, 0.65, 8.0),
    car("ford f-250 sd", "truck", 52_000.0, 0.75, 8.0),
    car("ford focus", "sedan", 19_000.0, 0.0, 4.0),
    car("ford escape", "SUV", 26_000.0, 0.4, 4.0),
    car("ford explorer", "SUV", 34_000.0, 0.5, 6.0),
    car("ford mustang", "coupe", 30_000.0, 0.0, 8.0),
    car("ford transit connect", "van", 27_000.0, 0.0, 4.0),
    car("chevrolet silverado 1500", "truck", 41_000.0, 0.65, 8.0),
    car("chevrolet malibu", "sedan", 23_000.0, 0.0, 4.0),
    car("chevrolet equinox", "SUV", 26_000.0, 0.3, 4.0),
    car("chevrolet tahoe", "SUV", 52_000.0, 0.6, 8.0),
    car("chevrolet camaro", "coupe", 30_000.0, 0.0, 8.0),
    car("toyota camry", "sedan", 25_000.0, 0.0, 4.0),
    car("toyota corolla", "sedan", 20_000.0, 0.0, 4.0),
    car("toyota tacoma", "pickup", 32_000.0, 0.6, 6.0),
    car("toyota rav4", "SUV", 27_000.0, 0.4, 4.0),
    car("toyota prius", "hatchback", 25_000.0, 0.0, 4.0),
    car("honda accord", "sedan", 25_000.0, 0.0, 4.0),
    car("honda civic", "sedan", 21_000.0, 0.0, 4.0),
    car("honda cr-v", "SUV", 27_000.0, 0.4, 4.0),
    car("honda odyssey", "mini-van", 32_000.0, 0.0, 6.0),
    car("ram 1500", "pickup", 42_000.0, 0.6, 8.0),
    car("gmc sierra 1500", "truck", 44_000.0, 0.6, 8.0),
    car("jeep wrangler", "SUV", 33_000.0, 1.0, 6.0),
    car("jeep grand cherokee", "SUV", 37_000.0, 0.7, 6.0),
    car("nissan altima", "sedan", 24_000.0, 0.0, 4.0),
    car("nissan rogue", "SUV", 26_000.0, 0.3, 4.0),
    car("subaru outback", "wagon", 28_000.0, 1.0, 4.0),
    car("subaru impreza", "hatchback", 21_000.0, 1.0, 4.0),
    car("dodge grand caravan", "mini-van", 28_000.0, 0.0, 6.0),
    car("dodge charger", "sedan", 30_000.0, 0.0, 6.0),
    car("hyundai sonata", "sedan", 23_000.0, 0.0, 4.0),
    car("hyundai elantra", "sedan", 19_000.0, 0.0, 4.0),
    car("kia sorento", "SUV", 28_000.0, 0.3, 4.0),
    car("bmw x5", "SUV", 60_000.0, 0.9, 6.0),
    car("mercedes-benz sprinter 2500", "van", 45_000.0, 0.0, 6.0),
    car("volkswagen jetta", "sedan", 21_000.0, 0.0, 4.0),
    car("chrysler 300", "sedan", 32_000.0, 0.1, 6.0),
    car("cadillac escalade", "SUV", 76_000.0, 0.6, 8.0),
    car("buick enclave", "SUV", 41_000.0, 0.3, 6.0),
    car("acura tl", "sedan", 34_000.0, 0.0, 6.0),
    car("mazda mx-5 miata", "convertible", 28_000.0, 0.0, 4.0),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_cover_the_listing_year() {
        assert_eq!(date_after_2018_05_01(0), "2018-05-01");
        assert_eq!(date_after_2018_05_01(31), "2018-06-01");
        assert_eq!(date_after_2018_05_01(364), "2019-04-30");
    }

    #[test]
    fn brand_is_the_first_word() {
        assert_eq!(brand_of("ford f-150"), "ford");
        assert_eq!(brand_of("BMW X5"), "bmw");
    }
}
