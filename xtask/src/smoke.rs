//! `cargo xtask smoke`: health of every service and one real prediction per API, with the
//! answer checked field by field against `[smoke]` in the service's `service.toml`.

use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::Value;

use crate::ctx::Ctx;
use crate::http;
use crate::stack::{Expectation, Service};

/// Check health and one real prediction per API; one line per failed check.
#[derive(clap::Args, Debug)]
pub struct Smoke {
    /// Only these services (default: all).
    pub services: Vec<String>,
}

/// One check's outcome.
pub struct Check {
    pub name: String,
    pub result: Result<String, String>,
}

/// Whether `value` meets `expect`; the reason if not.
fn check_field(answer: &Value, expect: &Expectation) -> Result<(), String> {
    let value = answer
        .get(&expect.field)
        .ok_or_else(|| format!("`{}` is missing", expect.field))?;
    if let Some([min, max]) = expect.range {
        match value.as_f64() {
            Some(v) if (min..=max).contains(&v) => {}
            _ => {
                return Err(format!(
                    "`{}` = {value} is not within {min}..={max}",
                    expect.field
                ))
            }
        }
    }
    if let Some(allowed) = &expect.one_of {
        let matches = allowed.iter().any(|a| match (a.as_f64(), value.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => a == value,
        });
        if !matches {
            return Err(format!(
                "`{}` = {value} is not one of {}",
                expect.field,
                Value::from(allowed.clone())
            ));
        }
    }
    if let Some(kind) = &expect.kind {
        let ok = match kind.as_str() {
            "string" => value.as_str().is_some_and(|s| !s.is_empty()),
            "number" => value.is_number(),
            "object" => value.as_object().is_some_and(|o| !o.is_empty()),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "`{}` = {value} is not a non-empty {kind}",
                expect.field
            ));
        }
    }
    Ok(())
}

fn health_check(ctx: &Ctx, service: &Service) -> Check {
    let url = ctx.health_url(service);
    let result = match http::get(&url, Duration::from_secs(5)) {
        Ok(a) if http::is_healthy(&a) => Ok(format!("{} healthy", a.status)),
        Ok(a) => Err(format!("answered {}: {}", a.status, a.body.trim())),
        Err(e) => Err(format!("unreachable: {e:#}")),
    };
    Check {
        name: format!("{} GET {}", service.name, service.health_path),
        result,
    }
}

fn prediction_check(ctx: &Ctx, service: &Service) -> Option<Check> {
    let smoke = service.smoke.as_ref()?;
    let url = ctx.url(service, &smoke.path);
    let result = match http::post_json(&url, &smoke.request, Duration::from_secs(10)) {
        Ok(a) if a.status == 200 => match a.json() {
            Some(answer) => smoke
                .expect
                .iter()
                .map(|e| check_field(&answer, e))
                .collect::<Result<Vec<()>, String>>()
                .map(|_| {
                    let shown: Vec<String> = smoke
                        .expect
                        .iter()
                        .filter(|e| e.kind.is_none())
                        .map(|e| format!("{}={}", e.field, answer[&e.field]))
                        .collect();
                    shown.join(" ")
                }),
            None => Err(format!("answered non-JSON: {}", a.body.trim())),
        },
        Ok(a) => Err(format!("answered {}: {}", a.status, a.body.trim())),
        Err(e) => Err(format!("unreachable: {e:#}")),
    };
    Some(Check {
        name: format!("{} POST {}", service.name, smoke.path),
        result,
    })
}

/// Runs the checks for `services`; prints one line each.
pub fn run_checks(ctx: &Ctx, services: &[&Service]) -> Vec<Check> {
    let mut checks = Vec::new();
    for service in services {
        ctx.runner.plan(format!("GET {}", ctx.health_url(service)));
        if let Some(smoke) = &service.smoke {
            ctx.runner.plan(format!(
                "POST {} {}",
                ctx.url(service, &smoke.path),
                smoke.request
            ));
            for e in &smoke.expect {
                ctx.runner.plan(format!("  expect {}", describe(e)));
            }
        }
        if ctx.dry_run() {
            continue;
        }
        checks.push(health_check(ctx, service));
        checks.extend(prediction_check(ctx, service));
    }
    for check in &checks {
        match &check.result {
            Ok(detail) => println!("✓ {}: {detail}", check.name),
            Err(why) => {
                println!("✗ {}: {why}", check.name);
                ctx.reporter.error(&format!("smoke: {}", check.name), why);
            }
        }
    }
    checks
}

fn describe(e: &Expectation) -> String {
    let mut parts = vec![format!("`{}`", e.field)];
    if let Some([a, b]) = e.range {
        parts.push(format!("in {a}..={b}"));
    }
    if let Some(one_of) = &e.one_of {
        let values: Vec<String> = one_of.iter().map(ToString::to_string).collect();
        parts.push(format!("one of {}", values.join(" | ")));
    }
    if let Some(kind) = &e.kind {
        parts.push(format!("a non-empty {kind}"));
    }
    parts.join(" ")
}

/// The names of the checks that failed.
pub fn failed(checks: &[Check]) -> Vec<&str> {
    checks
        .iter()
        .filter(|c| c.result.is_err())
        .map(|c| c.name.as_str())
        .collect()
}

pub fn summary(checks: &[Check]) -> String {
    let mut md = String::from("| check | result |\n|---|---|\n");
    for c in checks {
        let result = match &c.result {
            Ok(d) => format!("✅ {d}"),
            Err(e) => format!("❌ {e}"),
        };
        md.push_str(&format!(
            "| {} | {} |\n",
            c.name,
            result.replace('|', "\\|")
        ));
    }
    md
}

impl Smoke {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let services = ctx.stack.select(&self.services)?;
        let checks = run_checks(ctx, &services);
        ctx.reporter
            .summary(&format!("### Smoke checks\n\n{}", summary(&checks)));
        let failed = failed(&checks);
        if !failed.is_empty() {
            bail!(
                "{} of {} smoke checks failed: {}. Is the stack up (`cargo xtask status`)?",
                failed.len(),
                checks.len(),
                failed.join("; ")
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect(text: &str) -> Expectation {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn field_checks_accept_good_answers_and_explain_bad_ones() {
        let answer = json!({"p": 0.3, "risk": "LOW", "n": 1, "contrib": {"a": 1}});
        assert!(check_field(&answer, &expect("field = 'p'\nrange = [0.0, 1.0]")).is_ok());
        assert!(check_field(&answer, &expect("field = 'risk'\none_of = ['LOW', 'HIGH']")).is_ok());
        assert!(check_field(&answer, &expect("field = 'n'\none_of = [0, 1]")).is_ok());
        assert!(check_field(&answer, &expect("field = 'contrib'\nkind = 'object'")).is_ok());
        let err = check_field(&answer, &expect("field = 'p'\nrange = [0.5, 1.0]")).unwrap_err();
        assert_eq!(err, "`p` = 0.3 is not within 0.5..=1");
        let err = check_field(&answer, &expect("field = 'gone'\nkind = 'string'")).unwrap_err();
        assert_eq!(err, "`gone` is missing");
    }
}
