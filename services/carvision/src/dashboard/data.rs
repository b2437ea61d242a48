//! The dashboard's data: the listings the model was trained on, read from the copy of the
//! training file stored in its model version, kept column by column; and the model's errors
//! on its held-out listings, recomputed from them.

use std::collections::HashMap;

use serving::loaded::Loaded;
use serving::train::{self, Features, RegressionMetrics};

use super::stats;
use crate::features::{column, encoded_row, in_band, read_rows, split, Parsed, FEATURES};
use crate::listing::CONDITIONS;
use crate::model::Model;

/// The listings priced within the training band, one vector per column.
pub struct Market {
    /// Rows priced outside the band, which training drops and the pages leave out.
    pub outside_band: usize,
    pub price: Vec<f64>,
    pub year: Vec<Option<u16>>,
    /// Years between the model year and the year of the listing, when both are known.
    pub age: Vec<Option<u16>>,
    /// Miles; NaN when blank.
    pub odometer: Vec<f32>,
    /// Index into `brands`.
    pub brand: Vec<u32>,
    /// Index into `models`.
    pub model: Vec<u32>,
    /// Index into the conditions, worst (salvage) to best (new).
    pub condition: Vec<u8>,
    /// Brands, most listed first.
    pub brands: Vec<Name>,
    /// Models, most listed first.
    pub models: Vec<Name>,
    /// Every row, cheapest first: visiting rows in this order collects any group's prices
    /// already sorted, so the pages' medians and quartiles need no sorting.
    pub by_price: Vec<u32>,
    brand_index: HashMap<String, u32>,
    model_index: HashMap<String, u32>,
}

/// A brand or model and how often it is listed.
pub struct Name {
    pub name: String,
    pub count: usize,
}

/// What the model got wrong on its held-out listings, by price band.
pub struct Evaluation {
    pub test_rows: usize,
    pub metrics: RegressionMetrics,
    pub bands: Vec<BandErrors>,
}

pub struct BandErrors {
    pub label: &'static str,
    pub count: usize,
    pub mae: f64,
    /// Mean of predicted minus actual: above zero, the model prices this band too high.
    pub bias: f64,
    /// Mean absolute error over the actual price, as a fraction.
    pub mape: f64,
}

/// Actual-price bands the errors are broken down by: upper bounds, exclusive.
const PRICE_BANDS: [(&str, f64); 5] = [
    ("under $5k", 5_000.0),
    ("$5k to $10k", 10_000.0),
    ("$10k to $20k", 20_000.0),
    ("$20k to $35k", 35_000.0),
    ("$35k and up", f64::INFINITY),
];

/// Interns names, counting them, then orders them most listed first.
#[derive(Default)]
struct Names {
    index: HashMap<String, u32>,
    names: Vec<(String, usize)>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.index.get(name) {
            self.names[id as usize].1 += 1;
            return id;
        }
        let id = self.names.len() as u32;
        self.index.insert(name.to_owned(), id);
        self.names.push((name.to_owned(), 1));
        id
    }

    /// The names most listed first (ties alphabetical), and each old id's new one.
    fn finish(self) -> (Vec<Name>, HashMap<String, u32>, Vec<u32>) {
        let mut order: Vec<usize> = (0..self.names.len()).collect();
        order.sort_by(|&a, &b| {
            let (na, nb) = (&self.names[a], &self.names[b]);
            nb.1.cmp(&na.1).then_with(|| na.0.cmp(&nb.0))
        });
        let mut renumber = vec![0; order.len()];
        for (new, &old) in order.iter().enumerate() {
            renumber[old] = new as u32;
        }
        let names: Vec<Name> = order
            .iter()
            .map(|&old| Name {
                name: self.names[old].0.clone(),
                count: self.names[old].1,
            })
            .collect();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i as u32))
            .collect();
        (names, index, renumber)
    }
}

impl Market {
    /// Reads the stored training file; returns the market and the kept rows' features,
    /// which only [`Evaluation::compute`] needs.
    pub fn read(csv: Vec<u8>) -> anyhow::Result<(Self, Vec<Parsed>)> {
        let mut parsed = Vec::new();
        let mut prices = Vec::new();
        let mut posted = Vec::new();
        read_rows(csv, |listing, price, year| {
            parsed.push(listing);
            prices.push(price);
            posted.push(year);
        })?;
        let rows_read = prices.len();
        let keep = in_band(&prices);
        let mut kept = Vec::with_capacity(keep.len());
        let mut parsed: Vec<Option<Parsed>> = parsed.into_iter().map(Some).collect();
        let (mut brands, mut models) = (Names::default(), Names::default());
        let n = keep.len();
        let mut market = Market {
            outside_band: rows_read - n,
            price: Vec::with_capacity(n),
            year: Vec::with_capacity(n),
            age: Vec::with_capacity(n),
            odometer: Vec::with_capacity(n),
            brand: Vec::with_capacity(n),
            model: Vec::with_capacity(n),
            condition: Vec::with_capacity(n),
            brands: Vec::new(),
            models: Vec::new(),
            by_price: Vec::new(),
            brand_index: HashMap::new(),
            model_index: HashMap::new(),
        };
        for i in keep {
            let listing = parsed[i].take().expect("each row kept once");
            let row = &listing.row;
            let year = Some(row[column::MODEL_YEAR])
                .filter(|y| y.is_finite() && (0.0..=f64::from(u16::MAX)).contains(y))
                .map(|y| y.round() as u16);
            market.price.push(prices[i]);
            market.year.push(year);
            market.age.push(match (year, posted[i]) {
                (Some(year), Some(posted)) => Some((posted - i32::from(year)).max(0) as u16),
                _ => None,
            });
            market.odometer.push(row[column::ODOMETER] as f32);
            market.brand.push(brands.id(&listing.brand));
            market.model.push(models.id(&listing.model));
            market
                .condition
                .push(row[column::CONDITION].clamp(0.0, (CONDITIONS.len() - 1) as f64) as u8);
            kept.push(listing);
        }
        let (names, index, renumber) = brands.finish();
        market
            .brand
            .iter_mut()
            .for_each(|b| *b = renumber[*b as usize]);
        (market.brands, market.brand_index) = (names, index);
        let (names, index, renumber) = models.finish();
        market
            .model
            .iter_mut()
            .for_each(|m| *m = renumber[*m as usize]);
        (market.models, market.model_index) = (names, index);
        let mut order: Vec<u32> = (0..market.price.len() as u32).collect();
        order.sort_by(|&a, &b| market.price[a as usize].total_cmp(&market.price[b as usize]));
        market.by_price = order;
        Ok((market, kept))
    }

    pub fn len(&self) -> usize {
        self.price.len()
    }

    pub fn is_empty(&self) -> bool {
        self.price.is_empty()
    }

    pub fn brand_id(&self, name: &str) -> Option<u32> {
        self.brand_index.get(name).copied()
    }

    pub fn model_id(&self, name: &str) -> Option<u32> {
        self.model_index.get(name).copied()
    }
}

impl Evaluation {
    /// Predicts the held-out listings again (the same split of the same rows, with the seed
    /// the model was trained with) and measures the errors, overall and by price band.
    pub fn compute(model: &Loaded<Model>, market: &Market, kept: &[Parsed]) -> Self {
        let (_, test) = split(kept.len(), model.seed);
        let m = &model.model;
        let mut x = Features::new(FEATURES);
        for &i in &test {
            x.push(&encoded_row(&kept[i], &m.brand, &m.model));
        }
        let all: Vec<usize> = (0..test.len()).collect();
        let predicted = train::predict_rows(&m.booster, &x, &all);
        let actual: Vec<f64> = test.iter().map(|&i| market.price[i]).collect();
        let metrics = RegressionMetrics::compute(&actual, &predicted);
        let mut lower = 0.0;
        let bands = PRICE_BANDS
            .iter()
            .map(|&(label, upper)| {
                let errors: Vec<(f64, f64)> = actual
                    .iter()
                    .zip(&predicted)
                    .filter(|(a, _)| **a >= lower && **a < upper)
                    .map(|(a, p)| (p - a, *a))
                    .collect();
                lower = upper;
                let absolute: Vec<f64> = errors.iter().map(|(e, _)| e.abs()).collect();
                BandErrors {
                    label,
                    count: errors.len(),
                    mae: stats::mean(&absolute),
                    bias: stats::mean(&errors.iter().map(|(e, _)| *e).collect::<Vec<_>>()),
                    mape: stats::mean(&errors.iter().map(|(e, a)| e.abs() / a).collect::<Vec<_>>()),
                }
            })
            .collect();
        Evaluation {
            test_rows: test.len(),
            metrics,
            bands,
        }
    }
}
