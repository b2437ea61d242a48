//! `healthcheck --url URL`: the container HEALTHCHECK. Images have no curl; the binary asks
//! with the HTTP client it links for MLflow already.

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Largest health answer read: a few hundred bytes are expected.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// Fetches `url` (plain `http://` only) and returns the status code and body.
pub fn get(url: &str, timeout: Duration) -> Result<(u16, String)> {
    anyhow::ensure!(
        url.starts_with("http://"),
        "{url:?}: only http:// URLs are supported"
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        // A 503 is an answer to report, not a transport error.
        .http_status_as_error(false)
        .build()
        .into();
    let mut answer = agent
        .get(url)
        .header("accept", "application/json")
        .call()
        .with_context(|| format!("no answer from {url}"))?;
    let status = answer.status().as_u16();
    let body = answer
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_string()
        .with_context(|| format!("no complete answer from {url}"))?;
    Ok((status, body))
}

/// Succeeds only if `url` answers 200 with `"status": "healthy"` and a loaded model.
pub fn check(url: &str, timeout: Duration) -> Result<()> {
    let (status, body) = get(url, timeout)?;
    let health: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let healthy = status == 200 && health["status"] == "healthy" && health["model_loaded"] == true;
    if !healthy {
        bail!("{url} answered {status}: {}", body.trim());
    }
    println!("{}", body.trim());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_is_asked() {
        let err = get("https://x/health", Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("only http://"), "{err}");
        let err = get("http://", Duration::from_secs(1)).unwrap_err();
        assert!(
            err.to_string().contains("no answer from http://"),
            "{err:#}"
        );
    }
}
