//! `healthcheck --url URL`: the container HEALTHCHECK. Images have no curl, so this speaks just
//! enough HTTP/1.0 over a plain socket to fetch one small JSON body.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Splits `http://host:port/path` into its parts.
fn parse_url(url: &str) -> Result<(String, u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse()
                .with_context(|| format!("{url:?}: bad port {p:?}"))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() {
        bail!("{url:?}: no host");
    }
    Ok((host.to_owned(), port, path.to_owned()))
}

/// Fetches `url` and returns the status code and body.
pub fn get(url: &str, timeout: Duration) -> Result<(u16, String)> {
    let (host, port, path) = parse_url(url)?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream
        .take(1 << 20)
        .read_to_end(&mut response)
        .with_context(|| format!("no complete answer from {url}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{url} did not answer HTTP"))?;
    Ok((status, body.to_owned()))
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
    use super::parse_url;

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8001/health").unwrap(),
            ("127.0.0.1".into(), 8001, "/health".into())
        );
        assert_eq!(
            parse_url("http://api").unwrap(),
            ("api".into(), 80, "/".into())
        );
        assert!(parse_url("https://x/health").is_err());
    }
}
