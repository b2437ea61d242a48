//! `/metrics`: requests by method, endpoint and status, their latency, and predictions by
//! the service's own label. Every label value comes from a fixed set, so no request can add
//! a series.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::limits::Cut;

type Labels = Vec<(&'static str, &'static str)>;

/// The service's metrics, registered under its name as the prefix.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    predictions: Family<Labels, Counter>,
}

impl Metrics {
    pub fn new(prefix: &str) -> Self {
        let mut registry = Registry::with_prefix(prefix);
        let requests = Family::<Labels, Counter>::default();
        // 0.1 ms to about 3 s.
        let duration = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0001, 2.5, 12))) as fn() -> Histogram,
        );
        let predictions = Family::<Labels, Counter>::default();
        registry.register("requests", "HTTP requests served", requests.clone());
        registry.register_with_unit(
            "request_duration",
            "HTTP request latency",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register("predictions", "Predictions made", predictions.clone());
        Self {
            registry,
            requests,
            duration,
            predictions,
        }
    }

    /// The OpenMetrics text of every series.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// Counts one prediction under `label`, e.g. `("risk_level", "HIGH")`.
    pub fn count_prediction(&self, label: (&'static str, &'static str)) {
        self.predictions.get_or_create(&vec![label]).inc();
    }

    fn record(
        &self,
        method: &'static str,
        endpoint: &'static str,
        status: &'static str,
        seconds: f64,
    ) {
        self.duration
            .get_or_create(&vec![("method", method), ("endpoint", endpoint)])
            .observe(seconds);
        self.requests
            .get_or_create(&vec![
                ("method", method),
                ("endpoint", endpoint),
                ("status", status),
            ])
            .inc();
    }
}

/// A label value from a fixed set.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

const ENDPOINTS: &[&str] = &[
    "/",
    "/health",
    "/metrics",
    "/openapi.json",
    "/predict",
    "/predict_batch",
    "/docs",
    "/docs/",
    "/docs/{*rest}",
    "/redoc",
];

fn endpoint_label(path: Option<&MatchedPath>) -> &'static str {
    path.and_then(|p| ENDPOINTS.iter().find(|e| **e == p.as_str()))
        .copied()
        .unwrap_or("other")
}

fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        301..=308 => "3xx",
        400 => "400",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        422 => "422",
        431 => "431",
        500 => "500",
        503 => "503",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// Middleware of the API's routes: each request counted and timed under its route.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let endpoint = endpoint_label(request.extensions().get::<MatchedPath>());
    timed(&metrics, endpoint, request, next).await
}

/// The endpoint label of every request to the dashboard's port.
const DASHBOARD_ENDPOINT: &str = "dashboard";

/// Middleware of the dashboard's routes: all under one endpoint label.
pub async fn track_dashboard(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    timed(&metrics, DASHBOARD_ENDPOINT, request, next).await
}

async fn timed(
    metrics: &Metrics,
    endpoint: &'static str,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = status_label(response.status());
    metrics.record(method, endpoint, status, elapsed.as_secs_f64());
    match response.extensions().get::<Cut>() {
        Some(Cut::Panicked(panic)) => {
            tracing::error!(method, endpoint, panic, "a handler panicked");
        }
        Some(Cut::TimedOut(limit)) => {
            tracing::warn!(
                method,
                endpoint,
                seconds = limit.as_secs_f64(),
                "request timed out"
            );
        }
        None => {}
    }
    tracing::debug!(
        method,
        endpoint,
        status,
        micros = elapsed.as_micros() as u64,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_a_fixed_set() {
        assert_eq!(method_label(&Method::from_bytes(b"FOO").unwrap()), "other");
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(endpoint_label(None), "other");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), "4xx");
    }
}
