//! `healthcheck --url URL`: the container HEALTHCHECK. Images have no curl; the binary asks
//! with the HTTP client it links for MLflow already.

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Largest health answer read: a few hundred bytes are expected.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// The header naming the copy of a server that answered (`serve --shared-port`).
pub const INSTANCE_HEADER: &str = "x-serving-instance";

/// This process's container, as a name a server and its healthcheck both see: the pid
/// namespace (a healthcheck runs in its container's). `None` where /proc does not say.
pub fn instance() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(link.to_string_lossy().into_owned())
}

/// An answer: status code, body, and the copy that answered, when it said.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub instance: Option<String>,
}

/// Fetches `url` (plain `http://` only) on a connection of its own.
fn fetch(url: &str, timeout: Duration) -> Result<Answer> {
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
    let instance = answer
        .headers()
        .get(INSTANCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = answer
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_string()
        .with_context(|| format!("no complete answer from {url}"))?;
    Ok(Answer {
        status,
        body,
        instance,
    })
}

/// Succeeds only if `url` answers 200 with `"status": "healthy"` and a loaded model, from
/// the server of this container: copies sharing a port (`serve --shared-port`) name
/// themselves, and an answer from another copy is not this one's health. The kernel hands
/// each new connection to any copy, so another one is opened until this copy answers or the
/// time is up.
pub fn check(url: &str, timeout: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    let own = instance();
    let mut others = 0;
    let Answer { status, body, .. } = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let answer = fetch(url, left.max(Duration::from_millis(100)))?;
        let from_another =
            matches!((&answer.instance, &own), (Some(theirs), Some(own)) if theirs != own);
        if !from_another {
            break answer;
        }
        others += 1;
        if std::time::Instant::now() >= deadline {
            bail!(
                "{url} answered {others} time(s), each time from another copy sharing the port ({}), never from this container's server",
                answer.instance.unwrap_or_default()
            );
        }
    };
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
        let err = fetch("https://x/health", Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(err.to_string().contains("only http://"), "{err}");
        let err = fetch("http://", Duration::from_secs(1)).err().unwrap();
        assert!(
            err.to_string().contains("no answer from http://"),
            "{err:#}"
        );
    }

    /// A server answering healthy on a loopback port, naming itself `instance` in
    /// `x-serving-instance` when given, to every connection until the test ends.
    fn answering(instance: Option<String>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = [0u8; 1024];
                let _ = stream.read(&mut head);
                let body = r#"{"status":"healthy","model_loaded":true}"#;
                let named = instance
                    .as_ref()
                    .map(|i| format!("{INSTANCE_HEADER}: {i}\r\n"))
                    .unwrap_or_default();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{named}connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    #[test]
    fn an_answer_from_another_copy_on_the_port_is_not_this_ones_health() {
        let Some(own) = instance() else {
            return; // no /proc: copies cannot be told apart, and are not
        };
        check(&answering(Some(own)), Duration::from_secs(2)).unwrap();
        // Servers that do not name themselves are alone on their port.
        check(&answering(None), Duration::from_secs(2)).unwrap();
        let started = std::time::Instant::now();
        let err = check(
            &answering(Some("pid:[1]".into())),
            Duration::from_millis(500),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("from another copy sharing the port"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
