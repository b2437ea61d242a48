//! SARIF 2.1.0 logs of the findings, the format GitHub's code scanning reads: one log per tool,
//! and one merged log where a tool ran on several targets.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::findings::{Finding, Location, Severity};

/// SARIF's `security-severity`, which code scanning maps back onto the severities' names.
fn security_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "2.0",
        Severity::Unknown => "0.0",
    }
}

/// A SARIF 2.1.0 log of one tool's findings, for code scanning. Every result needs a place in
/// the repository: findings without one point at `fallback` (the file that was scanned).
pub fn log(tool: &str, uri: &str, findings: &[Finding], fallback: &str) -> Value {
    let mut rules: BTreeMap<&str, &Finding> = BTreeMap::new();
    for f in findings {
        rules.entry(f.id.as_str()).or_insert(f);
    }
    let index: BTreeMap<&str, usize> = rules.keys().enumerate().map(|(i, k)| (*k, i)).collect();
    let rules_json: Vec<Value> = rules
        .values()
        .map(|f| {
            json!({
                "id": f.id,
                "name": f.id,
                "shortDescription": { "text": f.title },
                "fullDescription": { "text": f.title },
                "help": { "text": f.help.clone().unwrap_or_else(|| f.title.clone()) },
                "properties": {
                    "security-severity": security_severity(f.severity),
                    "tags": ["security", f.severity.name()],
                },
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let location = f.location.clone().unwrap_or(Location {
                file: fallback.to_owned(),
                line: None,
            });
            let level = match f.severity {
                Severity::Critical | Severity::High => "error",
                Severity::Medium => "warning",
                _ => "note",
            };
            let help = f
                .help
                .as_ref()
                .map(|h| format!("\n{h}"))
                .unwrap_or_default();
            json!({
                "ruleId": f.id,
                "ruleIndex": index[f.id.as_str()],
                "level": level,
                "message": { "text": format!("{}: {}{help}", f.subject, f.title) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": location.file },
                        "region": { "startLine": location.line.unwrap_or(1) },
                    },
                }],
            })
        })
        .collect();
    json!({
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [{
            "tool": { "driver": { "name": tool, "informationUri": uri, "rules": rules_json } },
            "results": results,
        }],
    })
}

/// Merges SARIF logs of one tool (Trivy on each image) into one log with one run, so code
/// scanning takes them as one upload under one category.
pub fn merge(logs: Vec<Value>) -> Option<Value> {
    let mut logs = logs.into_iter();
    let mut merged = logs.next()?;
    let mut rule_ids: Vec<String> = rules(&merged)
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    for log in logs {
        let Some(run) = log["runs"].as_array().and_then(|r| r.first()) else {
            continue;
        };
        let their_rules = run["tool"]["driver"]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for rule in &their_rules {
            let id = rule["id"].as_str().unwrap_or_default().to_owned();
            if !rule_ids.contains(&id) {
                rule_ids.push(id);
                if let Some(rules) = merged["runs"][0]["tool"]["driver"]["rules"].as_array_mut() {
                    rules.push(rule.clone());
                }
            }
        }
        for result in run["results"].as_array().cloned().unwrap_or_default() {
            let mut result = result;
            if let Some(id) = result["ruleId"].as_str() {
                if let Some(i) = rule_ids.iter().position(|r| r == id) {
                    result["ruleIndex"] = json!(i);
                }
            }
            if let Some(results) = merged["runs"][0]["results"].as_array_mut() {
                results.push(result);
            }
        }
    }
    Some(merged)
}

fn rules(log: &Value) -> Vec<Value> {
    log["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(id: &str, severity: Severity) -> Finding {
        Finding::example(id, severity)
    }

    #[test]
    fn sarif_has_one_rule_per_id_and_a_location_for_every_result() {
        let mut located = finding("DS-0002", Severity::High);
        located.location = Some(Location {
            file: "services/x/Dockerfile".into(),
            line: Some(4),
        });
        let log = log(
            "compose rule",
            "https://example.invalid",
            &[
                located,
                finding("CVE-1", Severity::Low),
                finding("CVE-1", Severity::Low),
            ],
            "compose/docker-compose.demo.yml",
        );
        let run = &log["runs"][0];
        assert_eq!(run["tool"]["driver"]["rules"].as_array().unwrap().len(), 2);
        let results = run["results"].as_array().unwrap();
        assert_eq!(results.len(), 3);
        let uri = |i: usize| {
            results[i]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].clone()
        };
        assert_eq!(uri(0), "services/x/Dockerfile");
        assert_eq!(uri(1), "compose/docker-compose.demo.yml");
        assert_eq!(results[0]["level"], "error");
        let rule_index = results[1]["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(run["tool"]["driver"]["rules"][rule_index]["id"], "CVE-1");
    }

    #[test]
    fn merged_sarif_keeps_every_result_with_its_rule() {
        let a = log("Trivy", "u", &[finding("CVE-A", Severity::High)], "a");
        let b = log(
            "Trivy",
            "u",
            &[
                finding("CVE-B", Severity::Low),
                finding("CVE-A", Severity::High),
            ],
            "b",
        );
        let merged = merge(vec![a, b]).unwrap();
        let run = &merged["runs"][0];
        let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
        let results = run["results"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(results.len(), 3);
        for r in results {
            let i = r["ruleIndex"].as_u64().unwrap() as usize;
            assert_eq!(rules[i]["id"], r["ruleId"]);
        }
    }
}
