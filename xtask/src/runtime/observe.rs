//! What the stack looks like now, for either runtime: one row per service (`status`, `demo`)
//! and the health and smoke checks (`health`, `smoke`, `demo`), each checked field by field
//! against `[smoke]` in the service's `service.toml`.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use crate::ctx::Ctx;
use crate::runtime::Runtime;
use crate::stack::{Endpoint, Expectation, Service};
use crate::util::{http, table};

#[derive(Debug, Serialize)]
pub struct Row {
    pub service: String,
    pub container: String,
    /// `running` or `stopped`.
    pub state: String,
    /// What the service answers on its published port: `healthy`, `unhealthy` or `unknown`
    /// (not running).
    pub health: String,
    /// The runtime's own verdict where it has one (docker's healthcheck: `starting`,
    /// `healthy`, `unhealthy`), which lags behind by up to its probe interval.
    pub runtime_health: Option<String>,
    /// As `docker ps` words it: `Up 3 minutes (healthy)`.
    pub status: String,
    pub ports: String,
    pub url: String,
    /// The model an API serves: its version, and its registry version and alias when it was
    /// registered (`3f2a9c1e0b4d, BankChurn-Classifier v2 @champion`).
    pub model: Option<String>,
}

/// What a health answer says of the served model.
fn served_model(health: &Value) -> Option<String> {
    let version = health.get("model_version")?.as_str()?;
    let registry = match (
        health.get("registry_model").and_then(Value::as_str),
        health.get("registry_version").and_then(|v| {
            v.as_str()
                .map(str::to_owned)
                .or_else(|| v.as_u64().map(|n| n.to_string()))
        }),
    ) {
        (Some(model), Some(v)) => {
            let alias = health
                .get("registry_alias")
                .and_then(Value::as_str)
                .map(|a| format!(" @{a}"))
                .unwrap_or_default();
            format!(", {model} v{v}{alias}")
        }
        _ => String::new(),
    };
    Some(format!("{version}{registry}"))
}

/// `5 seconds`, `3 minutes`, `2 hours`, as docker says it.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = match s {
        0..=1 => return "Less than a second".into(),
        2..=59 => (s, "second"),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

pub fn row(ctx: &Ctx, runtime: &dyn Runtime, service: &Service) -> Result<Row> {
    let state = runtime.state(ctx, service)?;
    let answer = state
        .running
        .then(|| http::get(&ctx.health_url(service), Duration::from_secs(2)).ok())
        .flatten();
    // Every listener must answer healthy (an API and its dashboard).
    let others_healthy = || {
        service
            .endpoints()
            .iter()
            .skip(1)
            .all(|e| http::healthy(&ctx.endpoint_health_url(e), Duration::from_secs(2)))
    };
    let health = match (&answer, state.running) {
        (_, false) => "unknown",
        (Some(a), true) if http::is_healthy(a) && others_healthy() => "healthy",
        (_, true) => "unhealthy",
    }
    .to_owned();
    let model = answer
        .as_ref()
        .and_then(|a| a.json())
        .and_then(|json| served_model(&json));
    let status = if state.running {
        let up = state
            .since
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map_or_else(String::new, |d| format!(" {}", human(d)));
        match &state.health {
            // Docker's healthcheck has not caught up (or disagrees): say both.
            Some(docker) if *docker != health => format!("Up{up} ({health}; docker: {docker})"),
            _ => format!("Up{up} ({health})"),
        }
    } else {
        "Not running".into()
    };
    Ok(Row {
        service: service.name.clone(),
        container: ctx.container(service),
        state: if state.running { "running" } else { "stopped" }.into(),
        health,
        runtime_health: state.health,
        status,
        ports: state.ports,
        url: ctx.url(service, ""),
        model,
    })
}

pub fn rows(ctx: &Ctx, runtime: &dyn Runtime) -> Result<Vec<Row>> {
    ctx.stack
        .services
        .iter()
        .map(|s| row(ctx, runtime, s))
        .collect()
}

pub fn render(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.container.clone(),
                r.status.clone(),
                r.ports.clone(),
                r.url.clone(),
                r.model.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table::text(&["NAMES", "STATUS", "PORTS", "URL", "MODEL"], &cells)
}

/// The table as markdown, for the GitHub step summary.
pub fn markdown(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.container.clone(),
                r.status.clone(),
                r.url.clone(),
                r.model.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table::markdown(&["service", "status", "url", "model"], &cells)
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

/// Where the checks reach a service: an address (the host's loopback, or a swarm node
/// publishing a task's ports) and the port of each endpoint there (its published port, or the
/// spare port `dev` started a candidate version on).
pub struct Reach<'a> {
    pub host: &'a str,
    pub port_of: &'a dyn Fn(&Endpoint) -> u16,
}

pub const LOOPBACK: &str = "127.0.0.1";

impl Reach<'_> {
    fn url(&self, endpoint: &Endpoint, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, (self.port_of)(endpoint))
    }

    /// How a check is named: with the address it went to, unless that is the loopback.
    fn named(&self, name: String) -> String {
        if self.host == LOOPBACK {
            name
        } else {
            format!("{name} on {}", self.host)
        }
    }
}

fn health_check(reach: &Reach, service: &Service, endpoint: &Endpoint) -> Check {
    let url = reach.url(endpoint, &endpoint.health_path);
    let result = match http::get(&url, Duration::from_secs(5)) {
        Ok(a) if http::is_healthy(&a) => Ok(format!("{} healthy", a.status)),
        Ok(a) => Err(format!("answered {}: {}", a.status, a.body.trim())),
        Err(e) => Err(format!("unreachable: {e:#}")),
    };
    Check {
        name: reach.named(format!(
            "{} GET {}",
            service.label(endpoint),
            endpoint.health_path
        )),
        result,
    }
}

/// A page a person opens (a dashboard's `/`): 200 and an HTML document.
fn page_check(reach: &Reach, service: &Service, endpoint: &Endpoint) -> Check {
    let result = match http::get(&reach.url(endpoint, "/"), Duration::from_secs(10)) {
        Ok(a) if a.status == 200 && a.body.to_ascii_lowercase().contains("<html") => {
            Ok(format!("200, {} bytes of HTML", a.body.len()))
        }
        Ok(a) => Err(format!(
            "answered {} without an HTML page: {}",
            a.status,
            a.body.chars().take(200).collect::<String>()
        )),
        Err(e) => Err(format!("unreachable: {e:#}")),
    };
    Check {
        name: reach.named(format!("{} GET /", service.label(endpoint))),
        result,
    }
}

fn prediction_check(reach: &Reach, service: &Service) -> Option<Check> {
    let smoke = service.smoke.as_ref()?;
    let url = reach.url(&service.endpoints()[0], &smoke.path);
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
        name: reach.named(format!("{} POST {}", service.name, smoke.path)),
        result,
    })
}

/// Runs the checks for `services`; prints one line each.
pub fn run_checks(ctx: &Ctx, services: &[&Service]) -> Vec<Check> {
    run_checks_on(ctx, services, &|_| vec![LOOPBACK.to_owned()])
}

/// Runs the checks for `services` on each address `hosts` names for a service (a swarm
/// publishing ports on each task's node), at its published ports; prints one line each.
pub fn run_checks_on(
    ctx: &Ctx,
    services: &[&Service],
    hosts: &dyn Fn(&Service) -> Vec<String>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for service in services {
        let endpoints = service.endpoints();
        for endpoint in &endpoints {
            ctx.runner
                .plan(format!("GET {}", ctx.endpoint_health_url(endpoint)));
            if endpoint.role.is_some() {
                ctx.runner.plan(format!(
                    "GET {}  # an HTML page",
                    ctx.endpoint_url(endpoint, "/")
                ));
            }
        }
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
        for host in hosts(service) {
            let reach = Reach {
                host: &host,
                port_of: &|e| ctx.endpoint_port(e),
            };
            checks.extend(checks_at(&reach, service));
        }
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

/// The health, prediction and page checks of `service` where `reach` says, without
/// printing them.
pub fn checks_at(reach: &Reach, service: &Service) -> Vec<Check> {
    let endpoints = service.endpoints();
    let mut checks: Vec<Check> = endpoints
        .iter()
        .map(|e| health_check(reach, service, e))
        .collect();
    checks.extend(prediction_check(reach, service));
    for endpoint in endpoints.iter().filter(|e| e.role.is_some()) {
        checks.push(page_check(reach, service, endpoint));
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
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            let result = match &c.result {
                Ok(d) => format!("✅ {d}"),
                Err(e) => format!("❌ {e}"),
            };
            vec![c.name.clone(), result]
        })
        .collect();
    table::markdown(&["check", "result"], &rows)
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_served_model_is_named_with_its_registry_version() {
        let plain = json!({"model_version": "3f2a9c1e0b4d"});
        assert_eq!(served_model(&plain).unwrap(), "3f2a9c1e0b4d");
        let registered = json!({"model_version": "3f2a", "registry_model": "BankChurn-Classifier",
            "registry_version": "2", "registry_alias": "champion"});
        assert_eq!(
            served_model(&registered).unwrap(),
            "3f2a, BankChurn-Classifier v2 @champion"
        );
        assert!(served_model(&json!({"status": "OK"})).is_none());
    }

    #[test]
    fn durations_read_like_docker_ps() {
        assert_eq!(human(Duration::from_secs(1)), "Less than a second");
        assert_eq!(human(Duration::from_secs(45)), "45 seconds");
        assert_eq!(human(Duration::from_secs(60)), "1 minute");
        assert_eq!(human(Duration::from_secs(7300)), "2 hours");
    }

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
