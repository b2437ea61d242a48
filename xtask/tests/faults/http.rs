//! HTTP from the outside, by hand: the load generator must know whether a request was sent
//! before its connection broke, which a client library hides.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::common;
use crate::target::service;

/// Reads one HTTP/1.1 response (status, body, whether the server closes the connection).
pub fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, Vec<u8>, bool)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let length: usize = header("content-length:")
        .and_then(|v| v.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let closes = header("connection:").is_some_and(|v| v == "close");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, buf[head_end..head_end + length].to_vec(), closes))
}

pub fn request_bytes(method: &str, path: &str, body: Option<&Value>, close: bool) -> Vec<u8> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One request on a fresh connection: status and JSON body.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&request_bytes(method, path, body, true))?;
    let (status, body, _) = read_response(&mut stream)?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

pub fn health(addr: SocketAddr) -> std::io::Result<(u16, Value)> {
    call(addr, "GET", "/health", None, Duration::from_secs(1))
}

pub fn is_healthy(addr: SocketAddr) -> bool {
    health(addr).is_ok_and(|(status, body)| status == 200 && body["status"] == "healthy")
}

/// Polls `/health` until `accept` says yes and returns that answer; panics with the last
/// answer after `timeout`.
pub fn wait_health(
    addr: SocketAddr,
    what: &str,
    timeout: Duration,
    accept: impl Fn(u16, &Value) -> bool,
) -> Value {
    let mut last = String::new();
    let answer = common::poll::until(timeout, Duration::from_millis(20), || {
        match health(addr) {
            Ok((status, body)) if accept(status, &body) => return Some(body),
            Ok((status, body)) => last = format!("{status} {body}"),
            Err(e) => last = e.to_string(),
        }
        None
    });
    answer.unwrap_or_else(|| panic!("{addr}: no {what} within {timeout:?}; last: {last}"))
}

/// The smoke request of `api`, answered 200.
pub fn predict_ok(addr: SocketAddr, api: &str) -> bool {
    let (path, body) = service(api).smoke.unwrap();
    call(addr, "POST", &path, Some(&body), Duration::from_secs(5))
        .is_ok_and(|(status, _)| status == 200)
}
