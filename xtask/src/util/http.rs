//! Talking HTTP to the stack from the host: health probes and smoke requests.

use std::time::Duration;

use anyhow::{Context, Result};

/// A plain answer: status code and body text.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        // A 503 is an answer to report, not an error to bail on.
        .http_status_as_error(false)
        .build()
        .into()
}

fn read(response: ureq::http::Response<ureq::Body>) -> Result<Answer> {
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .read_to_string()
        .context("unreadable response body")?;
    Ok(Answer { status, body })
}

pub fn get(url: &str, timeout: Duration) -> Result<Answer> {
    read(
        agent(timeout)
            .get(url)
            .call()
            .with_context(|| format!("GET {url}"))?,
    )
}

pub fn post_json(url: &str, body: &serde_json::Value, timeout: Duration) -> Result<Answer> {
    let response = agent(timeout)
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .with_context(|| format!("POST {url}"))?;
    read(response)
}

/// Whether a health answer means ready: 200, and for the APIs `"status": "healthy"` with a
/// loaded model (MLflow answers a plain `OK`).
pub fn is_healthy(answer: &Answer) -> bool {
    if answer.status != 200 {
        return false;
    }
    match answer.json() {
        Some(v) if v.is_object() => v["status"] == "healthy" && v["model_loaded"] == true,
        _ => true,
    }
}

/// Whether `url` answers healthy within `timeout`.
pub fn healthy(url: &str, timeout: Duration) -> bool {
    get(url, timeout).is_ok_and(|a| is_healthy(&a))
}
