//! `serve-floor` (hidden): the floor the serving path is measured against by `cargo xtask
//! bench`. axum and hyper's HTTP/1 on a tokio runtime built as `serve` builds it, with TCP_NODELAY
//! as `serve` sets it, and nothing of ours: axum's own server instead of our connection loop
//! (its limits and timers count as the service's cost), no middleware, no body reading, no
//! parsing, no model. `POST /predict` answers a fixed JSON body of a given size, `GET
//! /health` a plain `OK`.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::http::header;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;

/// A JSON object of exactly `size` bytes, at least the 14 of `{"padding":""}`.
pub fn constant_body(size: usize) -> Bytes {
    let frame = r#"{"padding":""}"#;
    assert!(
        size >= frame.len(),
        "a JSON body of {size} bytes is shorter than {frame}"
    );
    let padding = "x".repeat(size.saturating_sub(frame.len()));
    Bytes::from(format!(r#"{{"padding":"{padding}"}}"#))
}

/// Serves the constant answer on `addr` until the process is stopped.
pub fn serve(addr: SocketAddr, body_bytes: usize) -> Result<()> {
    let body = constant_body(body_bytes);
    let app = Router::new()
        .route(
            "/predict",
            post(move || {
                let body = body.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route("/health", get(|| async { "OK" }));
    // The runtime `serve` builds.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!(%addr, body_bytes, "floor server listening");
        // As `serve` does: answers leave at once instead of waiting on Nagle's algorithm.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_json_of_the_asked_size() {
        for size in [14, 20, 300, 1200] {
            let body = constant_body(size);
            assert_eq!(body.len(), size);
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(value["padding"].is_string());
        }
    }
}
