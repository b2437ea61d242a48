//! An API's `GET /drift` report, read and judged: shared by `drift` (the tables) and
//! `retrain --if-drifted` (the decision).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{http, table};

/// A service's drift report as `/drift` answers it, its verdicts judged again when a
/// threshold of the caller's own is given.
#[derive(Debug, Clone)]
pub struct Report {
    pub service: String,
    pub body: Value,
}

impl Report {
    /// Reads `url` (an API's `/drift`) and, with `threshold`, judges each feature that has
    /// enough rows against it instead of the service's `drifted_above`.
    pub fn fetch(service: &str, url: &str, threshold: Option<f64>) -> Result<Self> {
        let answer = http::get(url, Duration::from_secs(10))
            .with_context(|| format!("{service} does not answer at {url}"))?;
        let Some(mut body) = answer.json().filter(|_| answer.status == 200) else {
            bail!(
                "{service} answered {url} with {} {}: is its model loaded (`cargo xtask health {service}`), and is it a build that measures drift?",
                answer.status,
                answer.body.trim()
            );
        };
        if let Some(threshold) = threshold {
            rejudge(&mut body, threshold);
        }
        Ok(Self {
            service: service.to_owned(),
            body,
        })
    }

    /// `stable`, `moderate`, `drifted`, `insufficient_data` or `no_reference`.
    pub fn verdict(&self) -> &str {
        self.body["verdict"].as_str().unwrap_or("unknown")
    }

    pub fn drifted(&self) -> bool {
        self.verdict() == "drifted"
    }

    /// `bankchurn: drifted (model 3f2a…, 812 rows; PSI drifted above 0.25)`, then the table.
    pub fn text(&self) -> String {
        let mut out = self.headline();
        if let Some(reason) = self.body["reason"].as_str() {
            out.push_str(&format!("\n  {reason}"));
        }
        if !self.rows().is_empty() {
            out.push('\n');
            out.push_str(&table::text(&HEADERS, &self.rows()));
        }
        out
    }

    /// The same as a markdown section, for GitHub's step summary.
    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n", self.headline());
        if let Some(reason) = self.body["reason"].as_str() {
            out.push_str(&format!("{reason}\n\n"));
        }
        if !self.rows().is_empty() {
            out.push_str(&table::markdown(&HEADERS, &self.rows()));
        }
        out
    }

    fn headline(&self) -> String {
        let b = &self.body;
        format!(
            "{}: {} (model {}, {} rows; PSI stable below {}, drifted above {}, at least {} rows)",
            self.service,
            self.verdict(),
            b["model_version"].as_str().unwrap_or("?"),
            b["rows"],
            b["thresholds"]["stable_below"],
            b["thresholds"]["drifted_above"],
            b["thresholds"]["min_rows"],
        )
    }

    fn rows(&self) -> Vec<Vec<String>> {
        self.body["features"]
            .as_array()
            .map(|features| {
                features
                    .iter()
                    .map(|f| {
                        vec![
                            f["feature"].as_str().unwrap_or("?").to_owned(),
                            format!("{:.4}", f["psi"].as_f64().unwrap_or(f64::NAN)),
                            f["rows"].to_string(),
                            f["verdict"].as_str().unwrap_or("?").to_owned(),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

const HEADERS: [&str; 4] = ["feature", "PSI", "rows", "verdict"];

/// Judges each feature with enough rows against `threshold` (drifted above it, moderate from
/// the service's stable bound or the threshold, whichever is lower), and the whole report by
/// its worst feature.
fn rejudge(body: &mut Value, threshold: f64) {
    let stable_below = body["thresholds"]["stable_below"]
        .as_f64()
        .unwrap_or(0.1)
        .min(threshold);
    let min_rows = body["thresholds"]["min_rows"].as_u64().unwrap_or(0);
    body["thresholds"]["drifted_above"] = threshold.into();
    let overall = body["verdict"].as_str().unwrap_or_default().to_owned();
    let Some(features) = body["features"].as_array_mut() else {
        return;
    };
    for feature in features.iter_mut() {
        if feature["rows"].as_u64().unwrap_or(0) < min_rows {
            continue;
        }
        let psi = feature["psi"].as_f64().unwrap_or(0.0);
        feature["verdict"] = if psi > threshold {
            "drifted"
        } else if psi >= stable_below {
            "moderate"
        } else {
            "stable"
        }
        .into();
    }
    if matches!(overall.as_str(), "stable" | "moderate" | "drifted") {
        let worst = ["drifted", "moderate"]
            .into_iter()
            .find(|v| features.iter().any(|f| f["verdict"] == *v))
            .unwrap_or("stable");
        body["verdict"] = worst.into();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body() -> Value {
        json!({
            "service": "api", "model_version": "abc", "verdict": "moderate", "rows": 900,
            "thresholds": {"stable_below": 0.1, "drifted_above": 0.25, "min_rows": 500},
            "features": [
                {"feature": "Age", "kind": "numeric", "psi": 0.2, "rows": 900, "verdict": "moderate"},
                {"feature": "Tenure", "kind": "numeric", "psi": 0.01, "rows": 900, "verdict": "stable"}
            ]
        })
    }

    #[test]
    fn a_lower_threshold_judges_again() {
        let mut b = body();
        rejudge(&mut b, 0.15);
        assert_eq!(b["verdict"], "drifted");
        assert_eq!(b["features"][0]["verdict"], "drifted");
        assert_eq!(b["features"][1]["verdict"], "stable");
        assert_eq!(b["thresholds"]["drifted_above"], 0.15);
        let mut b = body();
        rejudge(&mut b, 0.5);
        assert_eq!(b["verdict"], "moderate");
    }

    #[test]
    fn too_few_rows_stay_without_a_verdict() {
        let mut b = body();
        b["verdict"] = "insufficient_data".into();
        b["features"][0]["rows"] = 10.into();
        b["features"][0]["verdict"] = "insufficient_data".into();
        rejudge(&mut b, 0.01);
        assert_eq!(b["verdict"], "insufficient_data");
        assert_eq!(b["features"][0]["verdict"], "insufficient_data");
    }

    #[test]
    fn the_table_has_a_row_per_feature() {
        let report = Report {
            service: "api".into(),
            body: body(),
        };
        let text = report.text();
        assert!(
            text.starts_with("api: moderate (model abc, 900 rows"),
            "{text}"
        );
        assert!(
            text.contains("Age       0.2000   900    moderate"),
            "{text}"
        );
        assert!(report
            .markdown()
            .contains("| Tenure | 0.0100 | 900 | stable |"));
    }
}
