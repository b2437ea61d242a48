//! MLflow's REST API as the end-to-end tests read it: every run, every registered version and
//! each model's champion, to compare a store before and after a backup and restore.
#![allow(dead_code, clippy::disallowed_methods)]

use std::collections::BTreeSet;

use serde_json::{json, Value};

/// The registered models of the demo.
pub const MODELS: [&str; 3] = [
    "BankChurn-Classifier",
    "CarVision-Regressor",
    "TelecomAI-Classifier",
];

pub struct Mlflow {
    pub url: String,
}

/// `(model, version, run id)` of every registered version, and `(model, version)` of each
/// model's champion.
pub type Registry = (
    BTreeSet<(String, String, String)>,
    BTreeSet<(String, String)>,
);

impl Mlflow {
    pub fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}/api/2.0/mlflow/{path}", self.url);
        let response = if method == "GET" {
            let query = body
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap()));
            agent.get(&url).query_pairs(query).call()
        } else {
            agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.to_string())
        }
        .unwrap();
        let text = response.into_body().read_to_string().unwrap();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Every run id of every experiment.
    pub fn runs(&self) -> BTreeSet<String> {
        let experiments = self.call("POST", "experiments/search", json!({"max_results": 100}));
        let ids: Vec<Value> = experiments["experiments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["experiment_id"].clone())
            .collect();
        let runs = self.call(
            "POST",
            "runs/search",
            json!({"experiment_ids": ids, "max_results": 1000}),
        );
        runs["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["info"]["run_id"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn registry(&self) -> Registry {
        let mut versions = BTreeSet::new();
        let mut champions = BTreeSet::new();
        for model in MODELS {
            let found = self.call(
                "GET",
                "model-versions/search",
                json!({"filter": format!("name='{model}'")}),
            );
            for v in found["model_versions"].as_array().into_iter().flatten() {
                versions.insert((
                    model.to_owned(),
                    v["version"].as_str().unwrap().to_owned(),
                    v["run_id"].as_str().unwrap().to_owned(),
                ));
            }
            let champion = self.call(
                "GET",
                "registered-models/alias",
                json!({"name": model, "alias": "champion"}),
            );
            if let Some(v) = champion["model_version"]["version"].as_str() {
                champions.insert((model.to_owned(), v.to_owned()));
            }
        }
        (versions, champions)
    }
}
