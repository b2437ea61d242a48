//! `/metrics`: requests by method, endpoint and status, their latency, and predictions by
//! the service's own label. Every label value comes from a fixed set, so no request can add
//! a series.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use prometheus_client::encoding::text::{encode_eof, encode_registry};

use crate::drift::Monitor;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::limits::Cut;

type Label = (&'static str, &'static str);

/// The method label's values; anything else is `other`.
const METHODS: [&str; 8] = [
    "GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];

/// The API's routes as labels, then `other` (no route) and `dashboard` (the dashboard's port).
const ENDPOINTS: [&str; 13] = [
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
    "/drift",
    "other",
    "dashboard",
];
const DOCS_REST: usize = 8;
const OTHER_ENDPOINT: usize = 11;
/// The endpoint label of every request to the dashboard's port.
pub const DASHBOARD_ENDPOINT: usize = 12;

const STATUSES: [&str; 13] = [
    "200", "3xx", "400", "404", "405", "408", "413", "422", "431", "500", "503", "4xx", "5xx",
];

/// The service's metrics, registered under its name as the prefix.
pub struct Metrics {
    registry: Registry,
    requests: Family<[Label; 3], Counter>,
    duration: Family<[Label; 2], Histogram>,
    predictions: Family<[Label; 1], Counter>,
    /// Each series of `requests` and `duration` once a request has made it, by label
    /// positions: counting then touches no lock and no hash map.
    request_counters: Box<[OnceLock<Counter>]>,
    duration_histograms: Box<[OnceLock<Histogram>]>,
    /// The `predictions` series of the first labels seen (a service has a handful).
    prediction_counters: [OnceLock<(Label, Counter)>; 16],
}

impl Metrics {
    pub fn new(prefix: &str) -> Self {
        let mut registry = Registry::with_prefix(prefix);
        let requests = Family::<[Label; 3], Counter>::default();
        // 0.1 ms to about 3 s.
        let duration = Family::<[Label; 2], Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0001, 2.5, 12))) as fn() -> Histogram,
        );
        let predictions = Family::<[Label; 1], Counter>::default();
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
            request_counters: empty_cells(METHODS.len() * ENDPOINTS.len() * STATUSES.len()),
            duration_histograms: empty_cells(METHODS.len() * ENDPOINTS.len()),
            prediction_counters: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The OpenMetrics text of every series, with the served model's drift when it counts
    /// any: `model_feature_psi{feature}` and `model_drift_rows`, unprefixed (the names
    /// dashboards and alerts share across services), computed now from the counts.
    pub fn encode(&self, drift: Option<&Monitor>) -> Result<String, std::fmt::Error> {
        use std::fmt::Write;
        let mut text = String::new();
        encode_registry(&mut text, &self.registry)?;
        if let Some(monitor) = drift {
            text.push_str("# HELP model_feature_psi Population stability index of the rows predicted on since the model was loaded against its training data, per feature.\n");
            text.push_str("# TYPE model_feature_psi gauge\n");
            for (feature, _, psi, _) in monitor.psi() {
                writeln!(
                    text,
                    "model_feature_psi{{feature=\"{}\"}} {psi}",
                    feature.replace(['"', '\\', '\n'], "_")
                )?;
            }
            text.push_str("# HELP model_drift_rows Rows predicted on since the model was loaded, counted for drift.\n");
            text.push_str("# TYPE model_drift_rows gauge\n");
            writeln!(text, "model_drift_rows {}", monitor.rows())?;
        }
        encode_eof(&mut text)?;
        Ok(text)
    }

    /// Counts one prediction under `label`, e.g. `("risk_level", "HIGH")`.
    pub fn count_prediction(&self, label: Label) {
        for cell in &self.prediction_counters {
            let (seen, counter) = cell.get_or_init(|| {
                let counter = self.predictions.get_or_create(&[label]).clone();
                (label, counter)
            });
            if *seen == label {
                counter.inc();
                return;
            }
        }
        // More labels than cells: straight to the family.
        self.predictions.get_or_create(&[label]).inc();
    }

    fn record(&self, method: usize, endpoint: usize, status: usize, seconds: f64) {
        let (m, e, s) = (METHODS[method], ENDPOINTS[endpoint], STATUSES[status]);
        let series = method * ENDPOINTS.len() + endpoint;
        self.duration_histograms[series]
            .get_or_init(|| {
                self.duration
                    .get_or_create(&[("method", m), ("endpoint", e)])
                    .clone()
            })
            .observe(seconds);
        self.request_counters[series * STATUSES.len() + status]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&[("method", m), ("endpoint", e), ("status", s)])
                    .clone()
            })
            .inc();
    }

    /// Runs `answer`, the handling of a request with `method` to `endpoint` (an index of
    /// [`endpoint_of`]), timing and counting it under its final status and logging what the
    /// bounds cut.
    pub async fn observe(
        &self,
        method: &Method,
        endpoint: usize,
        answer: impl Future<Output = Response>,
    ) -> Response {
        let started = Instant::now();
        let method = method_index(method);
        let response = answer.await;
        let elapsed = started.elapsed();
        let status = status_index(response.status());
        self.record(method, endpoint, status, elapsed.as_secs_f64());
        let (method, endpoint, status) = (METHODS[method], ENDPOINTS[endpoint], STATUSES[status]);
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
}

fn empty_cells<T>(n: usize) -> Box<[OnceLock<T>]> {
    (0..n).map(|_| OnceLock::new()).collect()
}

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::HEAD => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The endpoint label of a request to the API: the route its path matches, or `other`. Read
/// off the path (the routes are fixed, and `/docs/` is the only prefix) rather than from
/// axum's `MatchedPath`, which costs every request an extension map.
pub fn endpoint_of(request: &Request) -> usize {
    let path = request.uri().path();
    ENDPOINTS[..OTHER_ENDPOINT]
        .iter()
        .position(|e| *e == path)
        .or_else(|| {
            (path.len() > "/docs/".len() && path.starts_with("/docs/")).then_some(DOCS_REST)
        })
        .unwrap_or(OTHER_ENDPOINT)
}

fn status_index(status: StatusCode) -> usize {
    match status.as_u16() {
        200 => 0,
        301..=308 => 1,
        400 => 2,
        404 => 3,
        405 => 4,
        408 => 5,
        413 => 6,
        422 => 7,
        431 => 8,
        500 => 9,
        503 => 10,
        s if s < 500 => 11,
        _ => 12,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn labels_come_from_a_fixed_set() {
        let method = |m: &Method| METHODS[method_index(m)];
        assert_eq!(method(&Method::from_bytes(b"FOO").unwrap()), "other");
        assert_eq!(method(&Method::POST), "POST");
        let endpoint = |uri: &str| {
            let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
            ENDPOINTS[endpoint_of(&request)]
        };
        assert_eq!(endpoint("/predict"), "/predict");
        assert_eq!(endpoint("/predict?x=1"), "/predict");
        assert_eq!(endpoint("/predict/"), "other");
        assert_eq!(endpoint("/docs"), "/docs");
        assert_eq!(endpoint("/docs/"), "/docs/");
        assert_eq!(endpoint("/docs/swagger-ui.css"), "/docs/{*rest}");
        assert_eq!(endpoint("/random/1"), "other");
        assert_eq!(ENDPOINTS[DASHBOARD_ENDPOINT], "dashboard");
        assert_eq!(STATUSES[status_index(StatusCode::IM_A_TEAPOT)], "4xx");
        assert_eq!(STATUSES[status_index(StatusCode::BAD_GATEWAY)], "5xx");
        assert_eq!(
            STATUSES[status_index(StatusCode::UNPROCESSABLE_ENTITY)],
            "422"
        );
    }

    #[test]
    fn a_cached_series_counts_in_the_registry() {
        let metrics = Metrics::new("svc");
        for _ in 0..3 {
            metrics.record(1, 4, 0, 0.001);
        }
        metrics.record(1, 4, 7, 0.001);
        let text = metrics.encode(None).unwrap();
        assert!(
            text.contains(
                r#"svc_requests_total{method="POST",endpoint="/predict",status="200"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"svc_requests_total{method="POST",endpoint="/predict",status="422"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"svc_request_duration_seconds_count{method="POST",endpoint="/predict"} 4"#
            ),
            "{text}"
        );
    }

    #[test]
    fn predictions_count_under_every_label_past_the_cached_ones() {
        let metrics = Metrics::new("svc");
        let names: Vec<&'static str> = (0..20)
            .map(|i| &*Box::leak(format!("v{i}").into_boxed_str()))
            .collect();
        for round in 0..3 {
            for (i, name) in names.iter().enumerate() {
                if i <= round * 9 {
                    metrics.count_prediction(("plan", name));
                }
            }
        }
        let text = metrics.encode(None).unwrap();
        assert!(
            text.contains(r#"svc_predictions_total{plan="v0"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"svc_predictions_total{plan="v9"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"svc_predictions_total{plan="v18"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"plan="v19""#), "{text}");
    }
}
