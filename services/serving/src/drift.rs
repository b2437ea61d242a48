//! Data drift, measured by the service itself: every model version carries a reference
//! profile of its training data ([`Profile`], the version file [`PROFILE_FILE`]), and the
//! service counts the rows it predicts on into the same bins ([`Monitor`]), so `GET /drift`
//! can compare the two with the population stability index (PSI).
//!
//! The features are the request's own fields, read through its `Serialize` impl (no service
//! code): a number is binned by the training data's deciles, a string (an enum's variant
//! included) by its training categories, the rarest of them pooled as `other`. A field the
//! training file has no column for is not profiled.
//!
//! Counting is on the hot path of every prediction: one relaxed atomic increment per feature
//! and one per row, no lock, no allocation, and memory fixed by the profile (at most
//! [`BINS`] bins or [`MAX_CATEGORIES`] + 1 per feature).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::ser::{self, Impossible, Serialize};
use serde::{Deserialize, Serialize as SerializeDerive};
use utoipa::ToSchema;

use crate::artifact::VersionFile;

/// The version file holding the reference profile, beside `model.json`.
pub const PROFILE_FILE: &str = "drift_profile.json";
/// The profile format this build writes and reads.
pub const PROFILE_FORMAT: u32 = 1;
/// Bins of a numeric feature: its training deciles (fewer when values repeat).
pub const BINS: usize = 10;
/// Categories of a categorical feature kept by name; the rest are `other`.
pub const MAX_CATEGORIES: usize = 20;
/// The name of the pooled rare categories.
pub const OTHER: &str = "other";
/// Below this PSI a feature is `stable`.
pub const STABLE_BELOW: f64 = 0.1;
/// Above this PSI a feature is `drifted` (between the two, `moderate`).
pub const DRIFTED_ABOVE: f64 = 0.25;
/// Rows counted before any verdict but `insufficient_data`: with fewer, sampling noise alone
/// gives a PSI of about (bins - 1) / rows, which reaches 0.1 for a 20-category feature at
/// 200 rows.
pub const MIN_ROWS: u64 = 500;
/// A share of 0 in either distribution counts as this much, so that the PSI stays finite.
const EPSILON: f64 = 1e-4;

/// The reference profile of one model version's training data.
#[derive(Debug, Clone, PartialEq, SerializeDerive, Deserialize)]
pub struct Profile {
    pub format: u32,
    /// Rows of the training file.
    pub rows: u64,
    /// In the order the request serializes its fields.
    pub features: Vec<FeatureProfile>,
}

#[derive(Debug, Clone, PartialEq, SerializeDerive, Deserialize)]
pub struct FeatureProfile {
    pub name: String,
    #[serde(flatten)]
    pub reference: Reference,
}

/// How one feature's values fall into bins, and the training share of each bin.
#[derive(Debug, Clone, PartialEq, SerializeDerive, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reference {
    /// Bin `i` holds the values above `edges[i - 1]` up to `edges[i]`; the first has no
    /// lower edge, the last no upper one: `edges.len() + 1` shares.
    Numeric { edges: Vec<f64>, shares: Vec<f64> },
    /// One share per category, then the share of every other value (`other`).
    Categorical {
        categories: Vec<String>,
        shares: Vec<f64>,
    },
}

impl Reference {
    fn bins(&self) -> usize {
        match self {
            Self::Numeric { edges, .. } => edges.len() + 1,
            Self::Categorical { categories, .. } => categories.len() + 1,
        }
    }

    fn shares(&self) -> &[f64] {
        match self {
            Self::Numeric { shares, .. } | Self::Categorical { shares, .. } => shares,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Numeric { .. } => "numeric",
            Self::Categorical { .. } => "categorical",
        }
    }

    /// The bin `value` falls in, if it is of this feature's kind.
    fn bin(&self, value: Value<'_>) -> Option<usize> {
        match (self, value) {
            (Self::Numeric { edges, .. }, Value::Number(x)) if !x.is_nan() => {
                Some(edges.partition_point(|edge| *edge < x))
            }
            (Self::Categorical { categories, .. }, Value::Text(text)) => Some(
                categories
                    .iter()
                    .position(|c| c == text)
                    .unwrap_or(categories.len()),
            ),
            _ => None,
        }
    }
}

/// One field's value as the request serializes it.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Number(f64),
    Text(&'a str),
}

/// What a profiled feature is, from how the example request serializes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Numeric,
    Categorical,
}

/// The fields of `example` and the kind of each, in serialization order.
fn layout<T: Serialize>(example: &T) -> Vec<(&'static str, Kind)> {
    let mut fields = Vec::new();
    let _ = example.serialize(FieldWalker(|name: &'static str, value: Value<'_>| {
        let kind = match value {
            Value::Number(_) => Kind::Numeric,
            Value::Text(_) => Kind::Categorical,
        };
        fields.push((name, kind));
    }));
    fields
}

impl Profile {
    /// The profile of the training file `data` as the API would see its rows: each row read
    /// as a request like `example` (see [`requests_from_csv`]), the ones `accept` refuses
    /// left out, and each request field that has a column in the file profiled.
    pub fn from_csv<T: Serialize + DeserializeOwned>(
        data: &Path,
        example: &T,
        accept: impl Fn(&T) -> bool,
    ) -> Result<Option<Self>> {
        let (columns, rows) = requests_from_csv(data, example)?;
        let fields: Vec<(&'static str, Kind)> = layout(example)
            .into_iter()
            .filter(|(name, _)| columns.iter().any(|c| c == name))
            .collect();
        if fields.is_empty() {
            return Ok(None);
        }
        let mut numbers: Vec<Vec<f64>> = vec![Vec::new(); fields.len()];
        let mut categories: Vec<HashMap<String, u64>> = vec![HashMap::new(); fields.len()];
        let mut counted = 0u64;
        for row in rows {
            let Ok(request) = row else { continue };
            if !accept(&request) {
                continue;
            }
            counted += 1;
            let _ = request.serialize(FieldWalker(|name: &'static str, value: Value<'_>| {
                let Some(i) = fields.iter().position(|(field, _)| *field == name) else {
                    return;
                };
                match (fields[i].1, value) {
                    (Kind::Numeric, Value::Number(x)) if x.is_finite() => numbers[i].push(x),
                    (Kind::Categorical, Value::Text(text)) => {
                        *categories[i].entry(text.to_owned()).or_default() += 1
                    }
                    _ => {}
                }
            }));
        }
        let features = fields
            .iter()
            .enumerate()
            .filter_map(|(i, (name, kind))| {
                let reference = match kind {
                    Kind::Numeric => numeric_reference(std::mem::take(&mut numbers[i]))?,
                    Kind::Categorical => categorical_reference(std::mem::take(&mut categories[i]))?,
                };
                Some(FeatureProfile {
                    name: (*name).to_owned(),
                    reference,
                })
            })
            .collect::<Vec<_>>();
        if features.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            format: PROFILE_FORMAT,
            rows: counted,
            features,
        }))
    }

    /// Checks a profile read from disk before it is counted against: the format, and for
    /// each feature a field of the request (`example`) of the same kind, sorted finite edges
    /// and one share per bin, adding up to 1.
    pub fn check<T: Serialize>(&self, example: &T) -> Result<()> {
        anyhow::ensure!(
            self.format == PROFILE_FORMAT,
            "{PROFILE_FILE} has format {}, this build reads format {PROFILE_FORMAT}: retrain the model",
            self.format
        );
        let fields = layout(example);
        for feature in &self.features {
            let name = &feature.name;
            let kind = match feature.reference {
                Reference::Numeric { .. } => Kind::Numeric,
                Reference::Categorical { .. } => Kind::Categorical,
            };
            anyhow::ensure!(
                fields.iter().any(|(field, k)| field == name && *k == kind),
                "{PROFILE_FILE} profiles feature {name} as {}, which is no such field of this service's requests",
                feature.reference.kind()
            );
            let shares = feature.reference.shares();
            anyhow::ensure!(
                shares.len() == feature.reference.bins(),
                "{PROFILE_FILE}: feature {name} has {} shares for {} bins",
                shares.len(),
                feature.reference.bins()
            );
            anyhow::ensure!(
                shares.iter().all(|s| s.is_finite() && *s >= 0.0)
                    && (shares.iter().sum::<f64>() - 1.0).abs() < 1e-6,
                "{PROFILE_FILE}: the shares of feature {name} are not a distribution"
            );
            match &feature.reference {
                Reference::Numeric { edges, .. } => anyhow::ensure!(
                    edges.iter().all(|e| e.is_finite()) && edges.windows(2).all(|w| w[0] < w[1]),
                    "{PROFILE_FILE}: the bin edges of feature {name} are not finite and increasing"
                ),
                Reference::Categorical { categories, .. } => anyhow::ensure!(
                    categories.len() <= MAX_CATEGORIES * 4,
                    "{PROFILE_FILE}: feature {name} has {} categories",
                    categories.len()
                ),
            }
        }
        Ok(())
    }
}

/// The rows of the CSV file `data` as requests like `example`, and the request fields the
/// file has a column for. Each field of `example` is taken from the column of the same name
/// (a number parsed, a flag from 0/1, a text as it is); a blank cell leaves the field out,
/// as a client with no value would, so the request's default applies or it is refused; a
/// field with no column keeps the example's value. A row that is no valid request is an
/// `Err` (the API would refuse it).
pub fn requests_from_csv<T: Serialize + DeserializeOwned>(
    data: &Path,
    example: &T,
) -> Result<(Vec<String>, impl Iterator<Item = Result<T>>)> {
    let example = match serde_json::to_value(example)? {
        serde_json::Value::Object(fields) => fields,
        _ => anyhow::bail!("a request is not a JSON object"),
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(data)
        .with_context(|| format!("cannot read {}", data.display()))?;
    let headers = reader.headers()?.clone();
    let columns: Vec<(String, usize)> = example
        .keys()
        .filter_map(|field| Some((field.clone(), headers.iter().position(|h| h == field)?)))
        .collect();
    let names = columns.iter().map(|(name, _)| name.clone()).collect();
    let path = data.to_owned();
    let rows = reader.into_records().map(move |record| {
        let record = record.with_context(|| format!("cannot read {}", path.display()))?;
        let mut item = example.clone();
        for (field, column) in &columns {
            let cell = record.get(*column).unwrap_or("");
            if cell.is_empty() {
                item.remove(field);
                continue;
            }
            let value = match &example[field] {
                // An integer stays one, for a field that takes only integers.
                serde_json::Value::Number(_) => cell
                    .parse::<i64>()
                    .map(serde_json::Number::from)
                    .ok()
                    .or_else(|| {
                        cell.parse::<f64>()
                            .ok()
                            .and_then(serde_json::Number::from_f64)
                    })
                    .map(serde_json::Value::Number),
                serde_json::Value::Bool(_) => cell.parse::<f64>().ok().map(|x| (x != 0.0).into()),
                _ => Some(cell.into()),
            };
            match value {
                Some(value) => item[field] = value,
                None => anyhow::bail!("{field} is not a number: {cell:?}"),
            }
        }
        Ok(serde_json::from_value(serde_json::Value::Object(item))?)
    });
    Ok((names, rows))
}

/// The profile of the training file `data` as the version file `train` stores beside the
/// model; `None` when no request field has a column in the file.
pub fn version_file<T: Serialize + DeserializeOwned>(
    data: &Path,
    example: &T,
    accept: impl Fn(&T) -> bool,
) -> Result<Option<VersionFile>> {
    let Some(profile) = Profile::from_csv(data, example, accept)
        .with_context(|| format!("profiling {} for drift failed", data.display()))?
    else {
        return Ok(None);
    };
    Ok(Some(VersionFile::new(
        PROFILE_FILE,
        serde_json::to_vec_pretty(&profile)?,
    )))
}

/// Decile edges of `values` (the repeated ones once) and the share of values in each bin.
fn numeric_reference(mut values: Vec<f64>) -> Option<Reference> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    // Edge q is the largest value of the lowest q tenths.
    let mut edges: Vec<f64> = (1..BINS)
        .map(|q| values[(q * n / BINS).saturating_sub(1)])
        .collect();
    edges.dedup();
    // A value equal to the largest value is in the last bin but one; an edge at the maximum
    // would leave the last bin empty in training, so the top edge goes.
    if edges.last() == values.last() && edges.len() > 1 {
        edges.pop();
    }
    let mut counts = vec![0u64; edges.len() + 1];
    for x in &values {
        counts[edges.partition_point(|edge| edge < x)] += 1;
    }
    let shares = counts.iter().map(|c| *c as f64 / n as f64).collect();
    Some(Reference::Numeric { edges, shares })
}

/// The [`MAX_CATEGORIES`] most frequent categories (by name on ties) and their shares, then
/// the share of the rest.
fn categorical_reference(counts: HashMap<String, u64>) -> Option<Reference> {
    let total: u64 = counts.values().sum();
    if total == 0 {
        return None;
    }
    let mut by_count: Vec<(String, u64)> = counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let rest: u64 = by_count.iter().skip(MAX_CATEGORIES).map(|(_, c)| c).sum();
    by_count.truncate(MAX_CATEGORIES);
    let mut shares: Vec<f64> = by_count
        .iter()
        .map(|(_, c)| *c as f64 / total as f64)
        .collect();
    shares.push(rest as f64 / total as f64);
    Some(Reference::Categorical {
        categories: by_count.into_iter().map(|(name, _)| name).collect(),
        shares,
    })
}

/// The population stability index of `counts` (live, `rows` in all) against `shares`.
pub fn psi(shares: &[f64], counts: &[u64], rows: u64) -> f64 {
    if rows == 0 {
        return 0.0;
    }
    shares
        .iter()
        .zip(counts)
        .map(|(expected, count)| {
            let expected = expected.max(EPSILON);
            let actual = (*count as f64 / rows as f64).max(EPSILON);
            (actual - expected) * (actual / expected).ln()
        })
        .sum()
}

/// A feature's verdict by its PSI: `stable`, `moderate` or `drifted`.
pub fn verdict_of(psi: f64, drifted_above: f64) -> &'static str {
    if psi > drifted_above {
        "drifted"
    } else if psi >= STABLE_BELOW.min(drifted_above) {
        "moderate"
    } else {
        "stable"
    }
}

/// The live counts of one model version against its profile. Made when the model is loaded,
/// so a reload to another version starts from zero.
pub struct Monitor {
    profile: Profile,
    /// Where each feature's bins start in a shard.
    offsets: Box<[usize]>,
    /// A shard's counters (every feature's bins, then the rows) and the padding after them.
    stride: usize,
    /// [`SHARDS`] shards of counters one after the other, each thread counting into its own:
    /// one set shared by all would have the cores take each other's cache lines on every
    /// request (7.5% of `/predict`'s throughput on 2 cores, against under 1% of its
    /// instructions).
    counters: Box<[AtomicU64]>,
}

/// Shards of counters per monitor: threads take them in turn, so up to this many count
/// without sharing a cache line.
const SHARDS: usize = 16;

/// Counters (of 8 bytes) between two shards' counters: 128 bytes, so that neither the line
/// the last counter of one shard is on nor the one the CPU fetches beside it holds any of the
/// next shard's.
const SHARD_GAP: usize = 16;

thread_local! {
    /// This thread's shard, taken in turn by the threads that count.
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

impl Monitor {
    pub fn new(profile: Profile) -> Self {
        let mut offsets = Vec::with_capacity(profile.features.len());
        let mut bins = 0;
        for feature in &profile.features {
            offsets.push(bins);
            bins += feature.reference.bins();
        }
        // The bins, the rows counter, then the gap.
        let stride = bins + 1 + SHARD_GAP;
        Self {
            profile,
            offsets: offsets.into(),
            stride,
            counters: (0..SHARDS * stride).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counter `index` of a shard, summed over the shards.
    fn total(&self, index: usize) -> u64 {
        (0..SHARDS)
            .map(|shard| self.counters[shard * self.stride + index].load(Ordering::Relaxed))
            .sum()
    }

    /// Where a shard's rows counter is.
    fn rows_index(&self) -> usize {
        self.stride - SHARD_GAP - 1
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Counts one predicted row. Lock-free and allocation-free: the hot path.
    pub fn observe<T: Serialize>(&self, item: &T) {
        let features = &self.profile.features;
        let shard = &self.counters[SHARD.with(|s| *s) * self.stride..][..self.stride];
        let mut next = 0;
        let _ = item.serialize(FieldWalker(|name: &'static str, value: Value<'_>| {
            // The fields come in the profile's order, so the next feature is nearly always
            // the one; a skipped optional field or an unprofiled one costs a scan.
            let index = if features.get(next).is_some_and(|f| f.name == name) {
                next
            } else if let Some(i) = features.iter().position(|f| f.name == name) {
                i
            } else {
                return;
            };
            next = index + 1;
            if let Some(bin) = features[index].reference.bin(value) {
                shard[self.offsets[index] + bin].fetch_add(1, Ordering::Relaxed);
            }
        }));
        shard[self.rows_index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Rows counted since the model was loaded.
    pub fn rows(&self) -> u64 {
        self.total(self.rows_index())
    }

    /// Each feature's name, PSI and the rows counted for it.
    pub fn psi(&self) -> Vec<(&str, &'static str, f64, u64)> {
        self.profile
            .features
            .iter()
            .zip(self.offsets.iter())
            .map(|(feature, &offset)| {
                let counts: Vec<u64> = (0..feature.reference.bins())
                    .map(|bin| self.total(offset + bin))
                    .collect();
                let rows = counts.iter().sum();
                (
                    feature.name.as_str(),
                    feature.reference.kind(),
                    psi(feature.reference.shares(), &counts, rows),
                    rows,
                )
            })
            .collect()
    }

    /// The report `GET /drift` answers.
    pub fn report(&self) -> (String, Vec<FeatureDrift>) {
        let rows = self.rows();
        let features: Vec<FeatureDrift> = self
            .psi()
            .into_iter()
            .map(|(name, kind, psi, rows)| FeatureDrift {
                feature: name.to_owned(),
                kind: kind.to_owned(),
                psi: (psi * 1e6).round() / 1e6,
                rows,
                verdict: if rows < MIN_ROWS {
                    "insufficient_data"
                } else {
                    verdict_of(psi, DRIFTED_ABOVE)
                }
                .to_owned(),
            })
            .collect();
        let overall = if rows < MIN_ROWS {
            "insufficient_data"
        } else {
            ["drifted", "moderate"]
                .into_iter()
                .find(|v| features.iter().any(|f| f.verdict == *v))
                .unwrap_or("stable")
        };
        (overall.to_owned(), features)
    }
}

/// `GET /drift`: the live traffic since the model was loaded against its training data.
#[derive(Debug, Clone, SerializeDerive, Deserialize, ToSchema)]
pub struct DriftReport {
    pub service: String,
    pub model_version: Option<String>,
    /// `stable`, `moderate`, `drifted` (the worst feature's), `insufficient_data` (fewer than
    /// `min_rows` rows counted), `no_reference` (the model has no profile) or `off` (the
    /// service counts no rows: `serve --drift-counting false`).
    pub verdict: String,
    /// Why there is no verdict, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Rows predicted on since the model was loaded.
    pub rows: u64,
    pub thresholds: Thresholds,
    /// Rows of the training file the profile describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_rows: Option<u64>,
    pub features: Vec<FeatureDrift>,
}

/// The PSI thresholds of the verdicts and the rows a verdict needs.
#[derive(Debug, Clone, SerializeDerive, Deserialize, ToSchema)]
pub struct Thresholds {
    /// A PSI below this is `stable`.
    pub stable_below: f64,
    /// A PSI above this is `drifted`; in between, `moderate`.
    pub drifted_above: f64,
    /// Rows counted before any verdict but `insufficient_data`.
    pub min_rows: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            stable_below: STABLE_BELOW,
            drifted_above: DRIFTED_ABOVE,
            min_rows: MIN_ROWS,
        }
    }
}

/// One feature's drift.
#[derive(Debug, Clone, SerializeDerive, Deserialize, ToSchema)]
pub struct FeatureDrift {
    pub feature: String,
    /// `numeric` or `categorical`.
    pub kind: String,
    /// The population stability index of the live rows against the training rows.
    pub psi: f64,
    /// Live rows counted for this feature (a row without the field is not).
    pub rows: u64,
    /// `stable`, `moderate`, `drifted` or `insufficient_data`.
    pub verdict: String,
}

/// The methods of a serializer for the shapes neither walker reads (bytes, units, lists,
/// maps, variants with data): each is [`Skip`].
macro_rules! not_a_plain_value {
    () => {
        fn serialize_bytes(self, _: &[u8]) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_unit(self) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_unit_struct(self, _: &'static str) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_newtype_variant<T: ?Sized + Serialize>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Skip> {
            Err(Skip)
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Skip> {
            Err(Skip)
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Skip> {
            Err(Skip)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Skip> {
            Err(Skip)
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Skip> {
            Err(Skip)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Skip> {
            Err(Skip)
        }
    };
}

/// The methods of a serializer for the shapes it does not walk: each is [`Skip`].
macro_rules! not_a_struct {
    () => {
        fn serialize_bool(self, _: bool) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_i8(self, _: i8) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_i16(self, _: i16) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_i32(self, _: i32) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_i64(self, _: i64) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_u8(self, _: u8) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_u16(self, _: u16) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_u32(self, _: u32) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_u64(self, _: u64) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_f32(self, _: f32) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_f64(self, _: f64) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_char(self, _: char) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_str(self, _: &str) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_none(self) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_unit_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
        ) -> Result<(), Skip> {
            Err(Skip)
        }
        fn serialize_newtype_struct<T: ?Sized + Serialize>(
            self,
            _: &'static str,
            _: &T,
        ) -> Result<(), Skip> {
            Err(Skip)
        }
        not_a_plain_value! {}
    };
}

/// A serializer that hands each top-level field of a struct to a closure as a number or a
/// text, and ignores everything else. It never allocates.
struct FieldWalker<F>(F);

/// Nothing this module reports: a value that is not a number or a text.
#[derive(Debug)]
struct Skip;

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a plain value")
    }
}

impl std::error::Error for Skip {}

impl ser::Error for Skip {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Skip
    }
}

impl<F: FnMut(&'static str, Value<'_>)> ser::SerializeStruct for FieldWalker<F> {
    type Ok = ();
    type Error = Skip;

    fn serialize_field<V: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &V,
    ) -> Result<(), Skip> {
        // A field that is not a plain value (a list, a map) is not profiled.
        let _ = value.serialize(ValueProbe {
            key,
            sink: &mut self.0,
        });
        Ok(())
    }

    fn end(self) -> Result<(), Skip> {
        Ok(())
    }
}

/// Only a struct is walked; any other shape is [`Skip`].
impl<F: FnMut(&'static str, Value<'_>)> ser::Serializer for FieldWalker<F> {
    type Ok = ();
    type Error = Skip;
    type SerializeSeq = Impossible<(), Skip>;
    type SerializeTuple = Impossible<(), Skip>;
    type SerializeTupleStruct = Impossible<(), Skip>;
    type SerializeTupleVariant = Impossible<(), Skip>;
    type SerializeMap = Impossible<(), Skip>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Skip>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Skip> {
        Ok(self)
    }

    not_a_struct! {}
}

/// Serializes one field's value into the closure, as a number or a text.
struct ValueProbe<'s, F> {
    key: &'static str,
    sink: &'s mut F,
}

impl<F: FnMut(&'static str, Value<'_>)> ValueProbe<'_, F> {
    fn number(self, x: f64) -> Result<(), Skip> {
        (self.sink)(self.key, Value::Number(x));
        Ok(())
    }

    fn text(self, text: &str) -> Result<(), Skip> {
        (self.sink)(self.key, Value::Text(text));
        Ok(())
    }
}

impl<F: FnMut(&'static str, Value<'_>)> ser::Serializer for ValueProbe<'_, F> {
    type Ok = ();
    type Error = Skip;
    type SerializeSeq = Impossible<(), Skip>;
    type SerializeTuple = Impossible<(), Skip>;
    type SerializeTupleStruct = Impossible<(), Skip>;
    type SerializeTupleVariant = Impossible<(), Skip>;
    type SerializeMap = Impossible<(), Skip>;
    type SerializeStruct = Impossible<(), Skip>;
    type SerializeStructVariant = Impossible<(), Skip>;

    fn serialize_bool(self, v: bool) -> Result<(), Skip> {
        self.number(f64::from(u8::from(v)))
    }
    fn serialize_i8(self, v: i8) -> Result<(), Skip> {
        self.number(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Skip> {
        self.number(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Skip> {
        self.number(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Skip> {
        self.number(v as f64)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Skip> {
        self.number(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Skip> {
        self.number(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Skip> {
        self.number(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Skip> {
        self.number(v as f64)
    }
    fn serialize_f32(self, v: f32) -> Result<(), Skip> {
        self.number(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Skip> {
        self.number(v)
    }
    fn serialize_char(self, v: char) -> Result<(), Skip> {
        self.text(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), Skip> {
        self.text(v)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Skip> {
        self.text(variant)
    }
    fn serialize_none(self) -> Result<(), Skip> {
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Skip> {
        value.serialize(self)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Skip> {
        value.serialize(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Skip> {
        Err(Skip)
    }

    not_a_plain_value! {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Row {
        #[serde(rename = "Age")]
        age: i64,
        colour: Colour,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flag: Option<bool>,
        tags: Vec<String>,
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Colour {
        Red,
        Blue,
    }

    fn row(age: i64, colour: Colour) -> Row {
        Row {
            age,
            colour,
            flag: None,
            tags: vec!["x".into()],
        }
    }

    fn profile_of(csv: &str) -> Profile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.csv");
        std::fs::write(&path, csv).unwrap();
        let example = Row {
            flag: Some(true),
            ..row(40, Colour::Red)
        };
        Profile::from_csv(&path, &example, |_| true)
            .unwrap()
            .unwrap()
    }

    fn training_csv() -> String {
        let mut csv = String::from("id,Age,colour,flag,other\n");
        for i in 0..1000 {
            let colour = if i % 4 == 0 { "blue" } else { "red" };
            csv.push_str(&format!("{i},{},{colour},,x\n", 20 + i % 50));
        }
        csv
    }

    #[test]
    fn the_request_fields_with_a_column_are_profiled_by_kind() {
        let profile = profile_of(&training_csv());
        profile.check(&row(1, Colour::Red)).unwrap();
        let names: Vec<&str> = profile.features.iter().map(|f| f.name.as_str()).collect();
        // `flag` is blank in every row, `tags` is a list, `id` and `other` are no fields.
        assert_eq!(names, ["Age", "colour"]);
        let Reference::Numeric { edges, shares } = &profile.features[0].reference else {
            panic!("Age is numeric")
        };
        assert_eq!(edges.len(), 9, "{edges:?}");
        assert!(shares.iter().all(|s| (s - 0.1).abs() < 0.02), "{shares:?}");
        let Reference::Categorical { categories, shares } = &profile.features[1].reference else {
            panic!("colour is categorical")
        };
        assert_eq!(categories, &["red", "blue"]);
        assert_eq!(shares, &[0.75, 0.25, 0.0]);
        assert_eq!(profile.rows, 1000);
    }

    #[test]
    fn psi_is_zero_on_the_reference_and_grows_with_a_shift() {
        let monitor = Monitor::new(profile_of(&training_csv()));
        for i in 0..1000 {
            let colour = if i % 4 == 0 {
                Colour::Blue
            } else {
                Colour::Red
            };
            monitor.observe(&row(20 + i % 50, colour));
        }
        let (verdict, features) = monitor.report();
        assert_eq!(verdict, "stable");
        assert!(
            features.iter().all(|f| f.psi < 1e-9 && f.rows == 1000),
            "{features:?}"
        );

        let shifted = Monitor::new(monitor.profile().clone());
        for i in 0..1000 {
            // Blue 45% of the time instead of 25%.
            let colour = if i % 20 < 9 {
                Colour::Blue
            } else {
                Colour::Red
            };
            shifted.observe(&row(35 + i % 50, colour));
        }
        let (verdict, features) = shifted.report();
        assert_eq!(verdict, "drifted");
        assert_eq!(features[0].verdict, "drifted", "{features:?}");
        assert_eq!(features[1].verdict, "moderate", "{features:?}");
    }

    #[test]
    fn fewer_rows_than_the_minimum_give_no_verdict() {
        let monitor = Monitor::new(profile_of(&training_csv()));
        for _ in 0..MIN_ROWS - 1 {
            monitor.observe(&row(99, Colour::Blue));
        }
        assert_eq!(monitor.report().0, "insufficient_data");
        monitor.observe(&row(99, Colour::Blue));
        assert_eq!(monitor.report().0, "drifted");
    }

    #[test]
    fn counts_are_exact_under_concurrent_observers() {
        let monitor = Monitor::new(profile_of(&training_csv()));
        let (threads, each) = (8, 20_000);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let monitor = &monitor;
                scope.spawn(move || {
                    for i in 0..each {
                        monitor.observe(&row(20 + (i + t) % 50, Colour::Red));
                    }
                });
            }
        });
        let total = (threads * each) as u64;
        assert_eq!(monitor.rows(), total);
        for (name, _, _, rows) in monitor.psi() {
            assert_eq!(rows, total, "{name}");
        }
    }

    #[test]
    fn a_profile_for_other_fields_or_with_bad_shares_is_refused() {
        let profile = profile_of(&training_csv());
        let mut renamed = profile.clone();
        renamed.features[0].name = "Height".into();
        let err = renamed.check(&row(1, Colour::Red)).unwrap_err();
        assert!(err.to_string().contains("no such field"), "{err}");
        let mut bad = profile.clone();
        if let Reference::Categorical { shares, .. } = &mut bad.features[1].reference {
            shares[0] = 0.9;
        }
        let err = bad.check(&row(1, Colour::Red)).unwrap_err();
        assert!(err.to_string().contains("not a distribution"), "{err}");
        let mut unsorted = profile;
        if let Reference::Numeric { edges, .. } = &mut unsorted.features[0].reference {
            edges.swap(0, 1);
        }
        assert!(unsorted.check(&row(1, Colour::Red)).is_err());
    }

    #[test]
    fn rare_categories_are_pooled_as_other() {
        let mut csv = String::from("colour\n");
        for i in 0..100 {
            csv.push_str(&format!("c{}\n", i % (MAX_CATEGORIES + 5)));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, csv).unwrap();
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Item {
            colour: String,
        }
        let profile = Profile::from_csv(
            &path,
            &Item {
                colour: "c0".into(),
            },
            |_| true,
        )
        .unwrap()
        .unwrap();
        let Reference::Categorical { categories, shares } = &profile.features[0].reference else {
            panic!()
        };
        assert_eq!(categories.len(), MAX_CATEGORIES);
        assert!(shares[MAX_CATEGORIES] > 0.0);
        let monitor = Monitor::new(profile.clone());
        monitor.observe(&Item {
            colour: "never seen".into(),
        });
        let counts = monitor.psi();
        assert_eq!(counts[0].3, 1);
    }
}
