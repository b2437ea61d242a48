//! The model: a gradient-boosted regressor on the encoded features, with the target
//! encodings learned beside it; how it is trained, checked, asked, and explained.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serving::train::{
    self, BoosterParams, Features, GradientBooster, ObjectiveType, RegressionMetrics,
};
use serving::PredictionMeta;

use crate::features::{
    encoded_row, fit_encodings, in_band, load, parse_listing, split, Parsed, TargetEncoding,
    FEATURES, PRICE_BAND,
};
use crate::listing::{Listing, PricePrediction};

/// Folds of the out-of-fold target encodings of the training rows.
const ENCODING_FOLDS: usize = 5;

const PARAMS: BoosterParams = BoosterParams {
    iterations: 400,
    learning_rate: 0.1,
    max_depth: 6,
    l2: 1.0,
    min_leaf_weight: 5.0,
};

#[derive(Serialize, Deserialize)]
pub struct Model {
    pub(crate) booster: GradientBooster,
    pub(crate) brand: TargetEncoding,
    pub(crate) model: TargetEncoding,
}

/// Trains on the CSV at `data`; returns the model and its held-out metrics.
pub fn train(data: &Path, seed: u64) -> anyhow::Result<(Model, serde_json::Value)> {
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

/// Checks a model read from disk can be served.
pub fn check_model(model: &Model) -> anyhow::Result<()> {
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

/// The price of each listing.
pub fn predict(model: &Model, listings: &[Listing], meta: &PredictionMeta) -> Vec<PricePrediction> {
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

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
