//! What bounds each request, on the API's port and the dashboard's alike: the size of its
//! head, its total time, and a panic in its handler. Each answers with the router's own
//! rendering of an [`ErrorBody`] (JSON for the API, a page for the dashboard), and marks the
//! answer with a [`Cut`] so that the request's log line says what happened.

use std::any::Any;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::BoxError;
use tower::layer::util::{Identity, Stack};
use tower::timeout::TimeoutLayer;
use tower::ServiceBuilder;
use tower_http::catch_panic::{CatchPanicLayer, ResponseForPanic};

use crate::api::ErrorBody;
use crate::error::ApiError;

/// Limits on each request, enforced by the router (the connection limits are in `server`).
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest body accepted: a 1000-item batch, pretty-printed, fits with room to spare.
    pub body_bytes: usize,
    /// Time to receive the whole body once the headers are in.
    pub body_timeout: Duration,
    /// Time for the whole request, from its headers to the answer.
    pub request_timeout: Duration,
    /// Most bytes of request line and headers together.
    pub header_bytes: usize,
    /// Most memory held by request bodies still arriving in pieces, all connections
    /// together; past it such a request is refused with a 503 (see [`BodyBudget`]).
    pub buffered_body_bytes: usize,
    /// Most dashboard pages being drawn or waiting to be at once; past it a 503 page with
    /// `Retry-After`. The dashboard's `/health` is not counted.
    pub dashboard_in_flight: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            body_bytes: 1 << 20,
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            header_bytes: 16 << 10,
            buffered_body_bytes: 64 << 20,
            dashboard_in_flight: 8,
        }
    }
}

/// The memory that request bodies arriving in pieces may hold together: a slow client's
/// body is buffered until it is complete, and many of them must not outgrow the container.
#[derive(Debug)]
pub struct BodyBudget {
    held: AtomicUsize,
    limit: usize,
}

impl BodyBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            held: AtomicUsize::new(0),
            limit,
        }
    }

    /// A share of the budget for one body, empty at first and given back when dropped.
    pub fn hold(&self) -> BodyHold<'_> {
        BodyHold {
            budget: self,
            bytes: 0,
        }
    }
}

/// One body's share of a [`BodyBudget`].
pub struct BodyHold<'a> {
    budget: &'a BodyBudget,
    bytes: usize,
}

impl BodyHold<'_> {
    /// Takes `more` bytes, or refuses the request with a 503 if the budget has no room.
    pub fn grow(&mut self, more: usize) -> Result<(), ApiError> {
        let budget = self.budget;
        let before = budget.held.fetch_add(more, Ordering::Relaxed);
        if before + more > budget.limit {
            budget.held.fetch_sub(more, Ordering::Relaxed);
            tracing::warn!(
                held = before,
                limit = budget.limit,
                "request refused: bodies still arriving hold the most memory allowed"
            );
            return Err(ApiError::Overloaded(format!(
                "requests still sending their bodies hold {} MiB, the most this service buffers; retry shortly",
                budget.limit >> 20
            )));
        }
        self.bytes += more;
        Ok(())
    }
}

impl Drop for BodyHold<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.held.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

/// How a router renders an error it raises itself.
pub type RenderError = fn(StatusCode, ErrorBody) -> Response;

/// Why the bounds answered a request instead of its handler; set on the answer's extensions.
#[derive(Debug, Clone)]
pub enum Cut {
    /// The handler panicked, saying this.
    Panicked(String),
    /// The request took longer than this.
    TimedOut(Duration),
}

/// The bounds of `limits` on a request's handling, as one layer to stack under the router's
/// own: a request still running after `request_timeout` is a 408 that closes its connection,
/// and a panic a 500; the service goes on. (The head is checked before, by
/// [`refuse_large_head`].)
#[allow(clippy::type_complexity)]
pub fn bounds(
    limits: RequestLimits,
    render: RenderError,
) -> ServiceBuilder<
    Stack<
        CatchPanicLayer<PanicAnswer>,
        Stack<
            TimeoutLayer,
            Stack<
                HandleErrorLayer<
                    impl Fn(BoxError) -> Ready<Response> + Clone + Send + Sync + 'static,
                    (),
                >,
                Identity,
            >,
        >,
    >,
> {
    let timeout = limits.request_timeout;
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |error: BoxError| {
            ready(timed_out(render, timeout, error))
        }))
        .timeout(timeout)
        .layer(CatchPanicLayer::custom(PanicAnswer(render)))
}

/// The answer to a handler's panic, rendered by the router's own error rendering.
#[derive(Clone, Copy)]
pub struct PanicAnswer(RenderError);

impl ResponseForPanic for PanicAnswer {
    type ResponseBody = axum::body::Body;

    fn response_for_panic(&mut self, panic: Box<dyn Any + Send + 'static>) -> Response {
        panicked(self.0, panic)
    }
}

/// The 431 of a request whose line and headers take more than `limit` bytes.
pub fn refuse_large_head(limit: usize, request: &Request, render: RenderError) -> Option<Response> {
    let head_bytes = head_bytes(request);
    (head_bytes > limit).then(|| {
        render(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorBody::new(
                "headers_too_large",
                format!(
                    "the request line and headers take {head_bytes} bytes; at most {limit} are accepted"
                ),
            ),
        )
    })
}

/// The bytes of the request's target and headers, as sent (each header line's `: ` and CRLF
/// counted).
fn head_bytes(request: &Request) -> usize {
    let uri = request.uri();
    let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    target
        + request
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
}

fn panicked(render: RenderError, panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    let mut response = render(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorBody::new(
            "internal_error",
            "the service failed on this request; it is logged",
        ),
    );
    response.extensions_mut().insert(Cut::Panicked(what));
    response
}

fn timed_out(render: RenderError, limit: Duration, error: BoxError) -> Response {
    if !error.is::<tower::timeout::error::Elapsed>() {
        // Nothing inside fails but by timing out; should it, it is ours to answer for.
        let mut response = render(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorBody::new(
                "internal_error",
                "the service failed on this request; it is logged",
            ),
        );
        response
            .extensions_mut()
            .insert(Cut::Panicked(error.to_string()));
        return response;
    }
    let mut response = render(
        StatusCode::REQUEST_TIMEOUT,
        ErrorBody::new(
            "timeout",
            format!("the request took longer than {} s", limit.as_secs_f64()),
        ),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response.extensions_mut().insert(Cut::TimedOut(limit));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn the_head_counts_the_target_and_every_header_line() {
        let request = Request::builder()
            .uri("/predict?x=1")
            .header("host", "example")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            head_bytes(&request),
            "/predict?x=1".len() + "host: example\r\n".len()
        );
        let absolute = Request::builder()
            .uri("http://example:8000/health")
            .body(Body::empty())
            .unwrap();
        assert_eq!(head_bytes(&absolute), absolute.uri().to_string().len());
    }
}
