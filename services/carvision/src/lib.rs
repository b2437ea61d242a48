//! CarVision: what is this used car worth? A gradient-boosted regressor on the columns of the
//! public `vehicles_us.csv`, and a dashboard of the market it was trained on (`dashboard`).
//!
//! [`listing`] is the API's request and answer, [`features`] turns listings and CSV rows into
//! the model's inputs, [`model`] trains and asks the booster, [`synthetic`] writes a data set
//! like the public one from the cars of [`catalogue`]; the [`Service`] implementation below
//! puts them together.

pub mod catalogue;
pub mod dashboard;
pub mod features;
pub mod listing;
pub mod model;
pub mod synthetic;

use std::io::Write;
use std::path::Path;

use serving::promotion::{Gate, GateKind};
use serving::{check_range, FieldError, Manifest, PredictionMeta, Service};

pub use features::{load, COLUMNS};
pub use listing::{Listing, PricePrediction};
pub use model::{explain, Explanation, Model};

use features::FEATURES;
use listing::newest_model_year;

pub struct CarVision;

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
        synthetic::write(rows, seed, out)
    }

    fn train(data: &Path, seed: u64) -> anyhow::Result<(Model, serde_json::Value)> {
        model::train(data, seed)
    }

    fn check_model(model: &Model) -> anyhow::Result<()> {
        model::check_model(model)
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
        model::predict(model, listings, meta)
    }

    fn example_request() -> Listing {
        Listing::example()
    }
}
