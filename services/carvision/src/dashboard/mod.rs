//! The CarVision Dashboard (`serve --dashboard-port`, 8501 in the stack): the used-car
//! market the served model was trained on, the model against its baseline, and a price
//! predictor that asks the same model the API serves.
//!
//! `train` stores the training file itself in each model version (`training_data.csv`,
//! checked against its SHA-256 in `metrics.json`); loading a model reads it back, keeps
//! the listings priced within the training band column by column, and recomputes the model's
//! held-out errors from them. Pages are drawn per request from those columns.

mod data;
mod market;
mod model_page;
mod overview;
mod predictor;
mod stats;

use std::path::Path;

use serving::artifact::VersionFile;
use serving::axum::routing::get;
use serving::axum::Router;
use serving::dashboard::{Dashboard, Pages};
use serving::loaded::Loaded;

use crate::CarVision;

pub use data::{Evaluation, Market};

/// The copy of the training file in each model version.
pub const DATA_FILE: &str = "training_data.csv";

/// The dashboard of one model version: its market and its held-out errors.
pub struct CarVisionDashboard {
    market: Market,
    overview: overview::Summary,
    /// The market page without filters, its most visited view.
    unfiltered: market::MarketView,
    evaluation: Evaluation,
}

impl CarVisionDashboard {
    pub fn market(&self) -> &Market {
        &self.market
    }

    pub fn evaluation(&self) -> &Evaluation {
        &self.evaluation
    }
}

impl Dashboard<CarVision> for CarVisionDashboard {
    const TITLE: &'static str = "CarVision Dashboard";
    const PAGES: &'static [(&'static str, &'static str)] = &[
        ("/", "Overview"),
        ("/market", "Market"),
        ("/model", "Model"),
        ("/predict", "Price predictor"),
    ];

    fn version_files(training_data: &Path) -> anyhow::Result<Vec<VersionFile>> {
        let bytes = std::fs::read(training_data)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", training_data.display()))?;
        Ok(vec![VersionFile::new(DATA_FILE, bytes)])
    }

    fn load(model: &Loaded<crate::model::Model>) -> anyhow::Result<Self> {
        let csv = model.read_version_file(DATA_FILE)?;
        let (market, kept) = Market::read(csv).map_err(|e| {
            anyhow::anyhow!("{DATA_FILE} of model version {}: {e:#}", model.version)
        })?;
        anyhow::ensure!(
            !market.is_empty(),
            "{DATA_FILE} has no listing priced within the training band"
        );
        let evaluation = Evaluation::compute(model, &market, &kept);
        drop(kept);
        let overview = overview::Summary::of(&market);
        let all: Vec<usize> = market.by_price.iter().map(|&i| i as usize).collect();
        let unfiltered = market::MarketView::of(&market, &all);
        Ok(Self {
            market,
            overview,
            unfiltered,
            evaluation,
        })
    }

    fn routes() -> Router<Pages<CarVision>> {
        Router::new()
            .route("/", get(overview::page))
            .route("/market", get(market::page))
            .route("/model", get(model_page::page))
            .route("/predict", get(predictor::page))
    }
}
