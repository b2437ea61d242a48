//! The campaign's harness: cases run one after another, each caught (its panic fails the case,
//! not the campaign) and recorded in the summary table printed at the end.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

struct Row {
    case: String,
    runtime: &'static str,
    observed: String,
    result: String,
}

pub struct Campaign {
    runtime: &'static str,
    rows: Vec<Row>,
}

impl Campaign {
    pub fn new(runtime: &'static str) -> Self {
        Self {
            runtime,
            rows: Vec::new(),
        }
    }

    /// Runs one case; its panic fails the case, not the campaign. Whether it passed.
    pub fn case(&mut self, name: &str, body: impl FnOnce() -> String) -> bool {
        eprintln!("\n=== case: {name} ({})", self.runtime);
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(body));
        let took = started.elapsed();
        let (observed, result) = match outcome {
            Ok(observed) => (observed, "PASSED".to_owned()),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                (
                    String::new(),
                    format!("FAILED: {}", why.lines().next().unwrap_or("")),
                )
            }
        };
        eprintln!(
            "=== {name} ({}): {result} in {took:.1?}; {observed}",
            self.runtime
        );
        let passed = result == "PASSED";
        self.rows.push(Row {
            case: name.to_owned(),
            runtime: self.runtime,
            observed,
            result,
        });
        passed
    }

    pub fn skip(&mut self, name: &str, why: &str) {
        crate::common::skip(format!("{name} ({}): {why}", self.runtime));
        self.rows.push(Row {
            case: name.to_owned(),
            runtime: self.runtime,
            observed: String::new(),
            result: format!("SKIPPED: {why}"),
        });
    }

    /// Prints the summary table, then fails if any case did.
    pub fn finish(self) {
        let header = ["CASE", "RUNTIME", "OBSERVED", "RESULT"];
        let cells: Vec<[String; 4]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.case.clone(),
                    r.runtime.to_owned(),
                    r.observed.clone(),
                    r.result.clone(),
                ]
            })
            .collect();
        let widths: Vec<usize> = (0..4)
            .map(|i| {
                cells
                    .iter()
                    .map(|c| c[i].chars().count())
                    .chain([header[i].len()])
                    .max()
                    .unwrap()
            })
            .collect();
        let line = |cols: [&str; 4]| {
            let padded: Vec<String> = cols
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            padded.join("  ").trim_end().to_owned()
        };
        let mut table = format!(
            "\nFault campaign summary ({})\n{}\n",
            self.runtime,
            line(header)
        );
        for c in &cells {
            table.push_str(&line([&c[0], &c[1], &c[2], &c[3]]));
            table.push('\n');
        }
        eprintln!("{table}");
        let failed: Vec<&str> = self
            .rows
            .iter()
            .filter(|r| r.result.starts_with("FAILED"))
            .map(|r| r.case.as_str())
            .collect();
        assert!(failed.is_empty(), "failed cases: {}", failed.join(", "));
    }
}
