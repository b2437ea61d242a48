//! BankChurn: will this bank customer leave? A gradient-boosted classifier on the columns of
//! the public `Churn_Modelling.csv`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serving::promotion::{Gate, GateKind};
use serving::synth::{
    self,
    rand::Rng,
    rand_distr::{Distribution, Normal},
};
use serving::table::Table;
use serving::train::{
    self, BinaryTraining, BoosterParams, ExplainingBooster, Features, GradientBooster,
    ObjectiveType, Selection,
};
use serving::{check_non_negative, check_range, FieldError, Manifest, PredictionMeta, Service};
use utoipa::ToSchema;

/// The public file's columns, in order.
pub const COLUMNS: [&str; 14] = [
    "RowNumber",
    "CustomerId",
    "Surname",
    "CreditScore",
    "Geography",
    "Gender",
    "Age",
    "Tenure",
    "Balance",
    "NumOfProducts",
    "HasCrCard",
    "IsActiveMember",
    "EstimatedSalary",
    "Exited",
];
/// The model's inputs: every column but the identifiers and the target.
const FEATURES: &[&str] = &[
    "CreditScore",
    "Geography",
    "Gender",
    "Age",
    "Tenure",
    "Balance",
    "NumOfProducts",
    "HasCrCard",
    "IsActiveMember",
    "EstimatedSalary",
];
const GEOGRAPHIES: &[&str] = &["France", "Spain", "Germany"];
const GENDERS: &[&str] = &["Male", "Female"];

const PARAMS: BoosterParams = BoosterParams {
    iterations: 200,
    learning_rate: 0.1,
    max_depth: 3,
    l2: 1.0,
    min_leaf_weight: 1.0,
};

pub struct BankChurn;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Geography {
    France,
    Spain,
    Germany,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Gender {
    Male,
    Female,
}

/// One bank customer. Integers may be written `3` or `3.0`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
#[schema(example = json!(BankChurn::example_request()))]
pub struct Customer {
    #[schema(minimum = 300, maximum = 850)]
    #[serde(deserialize_with = "serving::json::integer")]
    pub credit_score: i64,
    pub geography: Geography,
    pub gender: Gender,
    #[schema(minimum = 18, maximum = 100)]
    #[serde(deserialize_with = "serving::json::integer")]
    pub age: i64,
    /// Years with the bank.
    #[schema(minimum = 0, maximum = 10)]
    pub tenure: f64,
    #[schema(minimum = 0)]
    pub balance: f64,
    #[schema(minimum = 1, maximum = 4)]
    #[serde(deserialize_with = "serving::json::integer")]
    pub num_of_products: i64,
    /// 0 | 1
    #[schema(minimum = 0, maximum = 1)]
    #[serde(deserialize_with = "serving::json::integer")]
    pub has_cr_card: i64,
    /// 0 | 1
    #[schema(minimum = 0, maximum = 1)]
    #[serde(deserialize_with = "serving::json::integer")]
    pub is_active_member: i64,
    #[schema(minimum = 0)]
    pub estimated_salary: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
}

impl RiskLevel {
    pub fn of(probability: f64) -> Self {
        if probability < 0.3 {
            Self::Low
        } else if probability < 0.7 {
            Self::Medium
        } else {
            Self::High
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Low => "LOW",
            Self::Medium => "MEDIUM",
            Self::High => "HIGH",
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChurnPrediction {
    pub churn_probability: f64,
    /// 1 when `churn_probability >= 0.5`.
    pub churn_prediction: u8,
    /// LOW below 0.3, MEDIUM below 0.7, else HIGH.
    pub risk_level: RiskLevel,
    /// |p - 0.5| * 2
    pub confidence: f64,
    /// How much each input moved this customer's churn probability, read off the model's
    /// trees: `base_probability` plus these is `churn_probability`.
    #[schema(value_type = BTreeMap<String, f64>)]
    pub feature_contributions: FeatureContributions,
    /// The probability before any input is considered.
    pub base_probability: f64,
    pub model_version: String,
    pub prediction_timestamp: String,
}

/// How much each input moved one customer's churn probability, by feature: a JSON object in
/// the names' order, as a map writes it, held as an array in the model's feature order (the
/// hot path allocates no name).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureContributions([f64; FEATURES.len()]);

/// Positions in [`FEATURES`], in the order of the names.
const FEATURES_BY_NAME: [usize; FEATURES.len()] = [3, 5, 0, 9, 2, 1, 7, 8, 6, 4];

impl FeatureContributions {
    /// From one contribution per feature, in [`FEATURES`] order.
    fn from_model(contributions: &[f64]) -> Self {
        let mut values = [0.0; FEATURES.len()];
        values.copy_from_slice(&contributions[..FEATURES.len()]);
        Self(values)
    }

    /// The contribution of `feature`, e.g. `Age`.
    pub fn get(&self, feature: &str) -> Option<f64> {
        FEATURES
            .iter()
            .position(|f| *f == feature)
            .map(|i| self.0[i])
    }
}

impl Serialize for FeatureContributions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(FEATURES.len()))?;
        for i in FEATURES_BY_NAME {
            map.serialize_entry(FEATURES[i], &self.0[i])?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for FeatureContributions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let by_name = BTreeMap::<String, f64>::deserialize(deserializer)?;
        let mut values = [0.0; FEATURES.len()];
        for (value, feature) in values.iter_mut().zip(FEATURES) {
            *value = *by_name
                .get(*feature)
                .ok_or_else(|| serde::de::Error::missing_field(feature))?;
        }
        if by_name.len() != FEATURES.len() {
            return Err(serde::de::Error::custom(format!(
                "expected the contributions of {}",
                FEATURES.join(", ")
            )));
        }
        Ok(Self(values))
    }
}

#[derive(Serialize, Deserialize)]
pub struct Model {
    booster: GradientBooster,
    training: BinaryTraining,
    /// The booster laid out for answering with contributions; made at the first prediction
    /// (the canary every loaded model answers), never stored.
    #[serde(skip)]
    explaining: OnceLock<ExplainingBooster>,
}

fn feature_row(geography: usize, gender: usize, c: [f64; 8]) -> [f64; 10] {
    let [credit, age, tenure, balance, products, card, active, salary] = c;
    [
        credit,
        geography as f64,
        gender as f64,
        age,
        tenure,
        balance,
        products,
        card,
        active,
        salary,
    ]
}

fn request_row(c: &Customer) -> [f64; 10] {
    // The codes are the positions in GEOGRAPHIES and GENDERS, as `load` reads them.
    let geography = match c.geography {
        Geography::France => 0,
        Geography::Spain => 1,
        Geography::Germany => 2,
    };
    let gender = match c.gender {
        Gender::Male => 0,
        Gender::Female => 1,
    };
    feature_row(
        geography,
        gender,
        [
            c.credit_score as f64,
            c.age as f64,
            c.tenure,
            c.balance,
            c.num_of_products as f64,
            c.has_cr_card as f64,
            c.is_active_member as f64,
            c.estimated_salary,
        ],
    )
}

/// Reads the public file's layout into features and the `Exited` target.
pub fn load(path: &Path) -> anyhow::Result<(Features, Vec<f64>)> {
    let mut x = Features::new(FEATURES);
    let mut y = Vec::new();
    Table::open(path, &COLUMNS)?
        .for_each_row(|r| {
            let geography = r.category("Geography", GEOGRAPHIES)?;
            let gender = r.category("Gender", GENDERS)?;
            // Blank in about 9% of the public file: the booster routes missing values itself.
            let tenure = r.optional_number("Tenure")?;
            let (has_cr_card, is_active_member) = (r.flag("HasCrCard")?, r.flag("IsActiveMember")?);
            let label = r.flag("Exited")?;
            let customer = Customer {
                credit_score: r.whole_number("CreditScore")?,
                geography: [Geography::France, Geography::Spain, Geography::Germany][geography],
                gender: [Gender::Male, Gender::Female][gender],
                age: r.whole_number("Age")?,
                // A blank tenure is missing, which training allows and the API does not ask.
                tenure: tenure.unwrap_or(0.0),
                balance: r.number("Balance")?,
                num_of_products: r.whole_number("NumOfProducts")?,
                has_cr_card: has_cr_card as i64,
                is_active_member: is_active_member as i64,
                estimated_salary: r.number("EstimatedSalary")?,
            };
            // A row the API would refuse to answer is no row to learn from.
            BankChurn::validate(&customer).map_err(|e| r.refused(e))?;
            let mut row = request_row(&customer);
            row[4] = tenure.unwrap_or(f64::NAN);
            x.push(&row);
            y.push(label);
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((x, y))
}

impl Service for BankChurn {
    const MANIFEST: Manifest = serving::service_manifest!();
    const DESCRIPTION: &'static str =
        "Predicts whether a bank customer will churn (leave the bank).";
    const FEATURES: &'static [&'static str] = FEATURES;
    // The old API's batch took `{"customers": [...]}`.
    const BATCH_ALIAS: Option<&'static str> = Some("customers");
    const DEFAULT_ROWS: usize = 10_000;
    const REGISTERED_MODEL: &'static str = "BankChurn-Classifier";
    // The old portfolio's promotion thresholds: F1 0.50 and ROC AUC 0.75.
    const PROMOTION_GATES: &'static [Gate] = &[
        Gate::new(GateKind::MinF1, 0.50),
        Gate::new(GateKind::MinAuc, 0.75),
    ];

    type Model = Model;
    type Request = Customer;
    type Response = ChurnPrediction;
    type Dashboard = serving::dashboard::NoDashboard;

    fn generate_data(rows: usize, seed: u64, out: &mut dyn Write) -> anyhow::Result<()> {
        let mut rng = synth::rng(seed);
        let credit = Normal::new(650.0f64, 96.0)?;
        let balance = Normal::new(119_000.0f64, 30_000.0)?;
        let age_spread = Normal::new(0.0f64, 1.0)?;
        writeln!(out, "{}\r", COLUMNS.join(","))?;
        for i in 0..rows {
            let geography = *synth::pick(&mut rng, &[(0usize, 0.50), (1, 0.25), (2, 0.25)]);
            let female = synth::chance(&mut rng, 0.45);
            // Right-skewed ages around 39, as in the public file.
            let age = (38.0
                + 9.5 * age_spread.sample(&mut rng)
                + rng.gen_range(0.0..6.0f64).powi(2) * 0.5)
                .round()
                .clamp(18.0, 92.0);
            let credit_score = credit.sample(&mut rng).round().clamp(350.0, 850.0);
            let tenure = rng.gen_range(0..=10) as f64;
            // Germans almost never hold a zero balance; elsewhere about half do.
            let zero_balance = synth::chance(&mut rng, if geography == 2 { 0.02 } else { 0.48 });
            let bal = if zero_balance {
                0.0
            } else {
                synth::round_to(balance.sample(&mut rng).max(3_000.0), 2)
            };
            let products = *synth::pick(
                &mut rng,
                &[(1u8, 0.508), (2, 0.459), (3, 0.027), (4, 0.006)],
            );
            let card = synth::chance(&mut rng, 0.70);
            let active = synth::chance(&mut rng, 0.515);
            let salary = synth::round_to(rng.gen_range(11.58..199_992.48), 2);

            let age_effect = 0.15 * (age - 38.0) - 0.0035 * (age - 38.0).max(0.0).powi(2);
            let product_effect = match products {
                1 => 0.0,
                2 => -1.8,
                3 => 2.8,
                _ => 5.0,
            };
            let logit = -1.75
                + age_effect
                + if geography == 2 { 0.75 } else { 0.0 }
                + if female { 0.5 } else { 0.0 }
                - if active { 1.1 } else { 0.0 }
                + product_effect
                + if bal > 0.0 {
                    0.25 + (bal - 119_000.0) / 400_000.0
                } else {
                    0.0
                }
                - 0.0007 * (credit_score - 650.0)
                + 0.03 * (tenure - 5.0).abs() * if active { 0.0 } else { 1.0 };
            let exited = synth::chance(&mut rng, train::sigmoid(logit));

            let tenure_cell = if synth::chance(&mut rng, 0.09) {
                String::new()
            } else {
                format!("{tenure:.1}")
            };
            writeln!(
                out,
                "{},{},{},{},{},{},{},{},{:?},{},{},{},{:?},{}\r",
                i + 1,
                15_565_701 + rng.gen_range(0..250_000) as u64,
                SURNAMES[rng.gen_range(0..SURNAMES.len())],
                credit_score,
                GEOGRAPHIES[geography],
                if female { "Female" } else { "Male" },
                age,
                tenure_cell,
                bal,
                products,
                u8::from(card),
                u8::from(active),
                salary,
                u8::from(exited),
            )?;
        }
        Ok(())
    }

    fn train(data: &Path, seed: u64) -> anyhow::Result<(Model, serde_json::Value)> {
        let (x, y) = load(data)?;
        let (booster, training, metrics) =
            train::train_binary_classifier(PARAMS, &x, &y, "Exited", Selection::F1, seed)?;
        let model = Model {
            booster,
            training,
            explaining: OnceLock::new(),
        };
        Ok((model, metrics))
    }

    fn check_model(model: &Model) -> anyhow::Result<()> {
        train::check_booster(&model.booster, ObjectiveType::LogLoss, FEATURES.len())
    }

    fn validate(c: &Customer) -> Result<(), FieldError> {
        check_range("CreditScore", c.credit_score as f64, 300.0, 850.0)?;
        check_range("Age", c.age as f64, 18.0, 100.0)?;
        check_range("Tenure", c.tenure, 0.0, 10.0)?;
        check_non_negative("Balance", c.balance)?;
        check_range("NumOfProducts", c.num_of_products as f64, 1.0, 4.0)?;
        check_range("HasCrCard", c.has_cr_card as f64, 0.0, 1.0)?;
        check_range("IsActiveMember", c.is_active_member as f64, 0.0, 1.0)?;
        check_non_negative("EstimatedSalary", c.estimated_salary)
    }

    fn predict(
        model: &Model,
        customers: &[Customer],
        meta: &PredictionMeta,
    ) -> Vec<ChurnPrediction> {
        customers
            .iter()
            .map(|c| {
                let explained = model
                    .explaining
                    .get_or_init(|| ExplainingBooster::new(&model.booster))
                    .explain(&request_row(c));
                let p = train::sigmoid(explained.log_odds);
                ChurnPrediction {
                    churn_probability: p,
                    churn_prediction: u8::from(p >= 0.5),
                    risk_level: RiskLevel::of(p),
                    confidence: (p - 0.5).abs() * 2.0,
                    feature_contributions: FeatureContributions::from_model(
                        &explained.contributions,
                    ),
                    base_probability: explained.base,
                    model_version: meta.model_version.clone(),
                    prediction_timestamp: meta.timestamp.clone(),
                }
            })
            .collect()
    }

    fn prediction_label(response: &ChurnPrediction) -> Option<(&'static str, &'static str)> {
        Some(("risk_level", response.risk_level.label()))
    }

    fn example_request() -> Customer {
        Customer {
            credit_score: 619,
            geography: Geography::France,
            gender: Gender::Female,
            age: 42,
            tenure: 2.0,
            balance: 0.0,
            num_of_products: 1,
            has_cr_card: 1,
            is_active_member: 1,
            estimated_salary: 101_348.88,
        }
    }
}

const SURNAMES: &[&str] = &[
    "Hargrave",
    "Hill",
    "Onio",
    "Boni",
    "Mitchell",
    "Chu",
    "Bartlett",
    "Obinna",
    "He",
    "Bearce",
    "Andrews",
    "Kay",
    "Chin",
    "Scott",
    "Goforth",
    "Romeo",
    "Henderson",
    "Muldrow",
    "Hao",
    "McDonald",
    "Dellucci",
    "Gerasimov",
    "Mosman",
    "Yen",
    "Maclean",
    "Young",
    "Nebechi",
    "McWilliams",
    "Lucciano",
    "Azikiwe",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contributions_are_written_as_a_map_by_name_and_read_back() {
        let mut names: Vec<&str> = FEATURES.to_vec();
        names.sort_unstable();
        let by_name: Vec<&str> = FEATURES_BY_NAME.iter().map(|&i| FEATURES[i]).collect();
        assert_eq!(by_name, names);

        let values: Vec<f64> = (0..FEATURES.len()).map(|i| i as f64 / 10.0).collect();
        let contributions = FeatureContributions::from_model(&values);
        let as_map: BTreeMap<String, f64> = FEATURES
            .iter()
            .map(|f| f.to_string())
            .zip(values.iter().copied())
            .collect();
        // Byte for byte what the map wrote.
        assert_eq!(
            serde_json::to_string(&contributions).unwrap(),
            serde_json::to_string(&as_map).unwrap()
        );
        let back: FeatureContributions =
            serde_json::from_str(&serde_json::to_string(&contributions).unwrap()).unwrap();
        assert_eq!(back, contributions);
        assert_eq!(contributions.get("Age"), Some(0.3));
        assert!(serde_json::from_str::<FeatureContributions>(r#"{"Age": 1.0}"#).is_err());
    }
}
