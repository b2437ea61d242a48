//! From a listing, or a row of the public file, to the model's features: parsing, the price
//! band training keeps, the seeded split, and the target encodings of brand and model.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serving::table::{CellError, Row, RowError, Table};
use serving::train;
use serving::Service;

use crate::listing::{Listing, COLORS, CONDITIONS, FUELS, TRANSMISSIONS, TYPES};

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
pub const FEATURES: &[&str] = &[
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

/// Listings outside this band are data-entry noise (1-dollar listings, six-figure typos).
pub const PRICE_BAND: (f64, f64) = (500.0, 100_000.0);
/// Prior weight of the target encodings: a model seen a handful of times leans on its brand.
const SMOOTHING: f64 = 10.0;

/// Smoothed mean price per category, learned on the training rows.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TargetEncoding {
    pub(crate) prior: f64,
    // Ordered, so the same training writes the same bytes.
    pub(crate) means: BTreeMap<String, f64>,
}

impl TargetEncoding {
    pub(crate) fn fit<'a>(keys: impl Iterator<Item = (&'a str, f64)>, prior: f64) -> Self {
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

pub(crate) fn brand_of(model: &str) -> String {
    model.split_whitespace().next().unwrap_or("").to_lowercase()
}

pub(crate) fn parse_listing(l: &Listing) -> Parsed {
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

fn parse_row(r: &Row<'_>) -> Result<(Parsed, f64), RowError> {
    let price = r.number("price")?;
    let model = r.text("model").to_lowercase();
    if model.is_empty() {
        return Err(r
            .error("model", "expected a model name, found a blank cell")
            .into());
    }
    // A row the API would refuse to answer is no row to learn from, nor to draw. Blank cells
    // are missing values, which training allows: only the values present are checked.
    let (model_year, cylinders) = (
        r.optional_whole_number("model_year")?,
        r.optional_whole_number("cylinders")?,
    );
    let odometer = r.optional_number("odometer")?;
    let as_asked = Listing {
        model_year: model_year.unwrap_or(2015),
        model: model.clone(),
        cylinders: cylinders.unwrap_or(4),
        odometer: odometer.unwrap_or(0.0),
        drive: None,
        is_4wd: None,
        ..Listing::example()
    };
    crate::CarVision::validate(&as_asked).map_err(|e| r.refused(e))?;
    let optional_category = |column: &str, allowed: &[&str]| -> Result<f64, CellError> {
        if r.text(column).is_empty() {
            Ok(f64::NAN)
        } else {
            r.category(column, allowed).map(|i| i as f64)
        }
    };
    let row = [
        model_year.map_or(f64::NAN, |y| y as f64),
        f64::NAN,
        f64::NAN,
        r.category("condition", CONDITIONS)? as f64,
        cylinders.map_or(f64::NAN, |c| c as f64),
        optional_category("fuel", FUELS)?,
        odometer.unwrap_or(f64::NAN),
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

pub(crate) fn encoded_row(p: &Parsed, brand: &TargetEncoding, model: &TargetEncoding) -> [f64; 11] {
    let brand_value = brand.get(&p.brand).unwrap_or(brand.prior);
    let mut row = p.row;
    row[1] = brand_value;
    row[2] = model.get(&p.model).unwrap_or(brand_value);
    row
}

pub(crate) fn fit_encodings(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brand_is_the_first_word() {
        assert_eq!(brand_of("ford f-150"), "ford");
        assert_eq!(brand_of("BMW X5"), "bmw");
    }
}
