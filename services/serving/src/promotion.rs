//! The gates `train --promote` checks before it moves the `champion` alias to a new model
//! version: a held-out metric each, bounded from below (F1, ROC AUC, R², accuracy) or from
//! above (RMSE), with a service's defaults that the command line can change.

use std::fmt;

use serde_json::Value;

/// The alias `--promote` moves to a version that passes every gate.
pub const CHAMPION_ALIAS: &str = "champion";

/// A held-out metric a promotion gate bounds, and the flag that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateKind {
    MinF1,
    MinAuc,
    MinR2,
    MaxRmse,
    MinAccuracy,
}

impl GateKind {
    pub fn flag(self) -> &'static str {
        match self {
            Self::MinF1 => "--min-f1",
            Self::MinAuc => "--min-auc",
            Self::MinR2 => "--min-r2",
            Self::MaxRmse => "--max-rmse",
            Self::MinAccuracy => "--min-accuracy",
        }
    }

    /// The field of `metrics.json` the gate reads.
    pub fn metric(self) -> &'static str {
        match self {
            Self::MinF1 => "f1",
            Self::MinAuc => "roc_auc",
            Self::MinR2 => "r2",
            Self::MaxRmse => "rmse",
            Self::MinAccuracy => "accuracy",
        }
    }

    fn is_upper_bound(self) -> bool {
        self == Self::MaxRmse
    }
}

/// One promotion gate: a metric and its threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    pub kind: GateKind,
    pub threshold: f64,
}

impl Gate {
    pub const fn new(kind: GateKind, threshold: f64) -> Self {
        Self { kind, threshold }
    }

    pub fn check(self, metrics: &Value) -> GateCheck {
        let value = metrics[self.kind.metric()].as_f64();
        let passed = value.is_some_and(|v| {
            if self.kind.is_upper_bound() {
                v <= self.threshold
            } else {
                v >= self.threshold
            }
        });
        GateCheck {
            gate: self,
            value,
            passed,
        }
    }
}

/// A gate checked against a model's metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateCheck {
    pub gate: Gate,
    pub value: Option<f64>,
    pub passed: bool,
}

impl fmt::Display for GateCheck {
    /// `--min-auc 0.99: roc_auc 0.8312 failed`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Gate { kind, threshold } = self.gate;
        let verdict = if self.passed { "passed" } else { "failed" };
        match self.value {
            Some(v) => write!(
                f,
                "{} {threshold}: {} {v:.4} {verdict}",
                kind.flag(),
                kind.metric()
            ),
            None => write!(
                f,
                "{} {threshold}: no {} {verdict}",
                kind.flag(),
                kind.metric()
            ),
        }
    }
}

/// The help of `--promote`, with the service's gates.
pub fn promote_help(defaults: &[Gate]) -> String {
    let gates: Vec<String> = defaults
        .iter()
        .map(|g| format!("{} {}", g.kind.flag(), g.threshold))
        .collect();
    format!(
        "Register, then move the `{CHAMPION_ALIAS}` alias to the new version if every promotion \
         gate passes (by default {}); otherwise exit non-zero and keep serving the previous model",
        if gates.is_empty() {
            "none".to_owned()
        } else {
            gates.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gates_bound_from_the_right_side_and_name_themselves() {
        let metrics = json!({"roc_auc": 0.83, "rmse": 3550.0});
        let auc = Gate::new(GateKind::MinAuc, 0.99).check(&metrics);
        assert!(!auc.passed);
        assert_eq!(auc.to_string(), "--min-auc 0.99: roc_auc 0.8300 failed");
        assert!(Gate::new(GateKind::MinAuc, 0.75).check(&metrics).passed);
        assert!(Gate::new(GateKind::MaxRmse, 6000.0).check(&metrics).passed);
        assert!(!Gate::new(GateKind::MaxRmse, 3000.0).check(&metrics).passed);
        let absent = Gate::new(GateKind::MinR2, 0.7).check(&metrics);
        assert!(!absent.passed);
        assert_eq!(absent.to_string(), "--min-r2 0.7: no r2 failed");
    }
}
