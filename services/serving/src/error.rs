//! Everything a request can fail with, and the JSON answer each failure gives: one
//! [`ErrorBody`] shape whatever the status.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::ErrorBody;
use crate::json::BodyError;
use crate::validation::FieldError;

/// An error answer: `status` with `body` as JSON.
pub fn error_response(status: StatusCode, body: ErrorBody) -> Response {
    (status, Json(body)).into_response()
}

/// Everything a handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    Invalid(FieldError),
    /// The body is not parseable JSON at all.
    Malformed(String),
    ModelNotLoaded,
    PayloadTooLarge(usize),
    BodyTimeout(Duration),
    BodyUnreadable(String),
    /// Too much is in progress to take this request now: a 503 with `Retry-After`.
    Overloaded(String),
    /// Our fault, not the client's; logged where it happens.
    Internal(String),
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e.field {
            Some(field) => ApiError::Invalid(FieldError {
                field,
                reason: e.message,
            }),
            None => ApiError::Malformed(e.message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Invalid(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorBody {
                    error: "invalid_request".into(),
                    field: Some(e.field),
                    message: e.reason,
                },
            ),
            ApiError::Malformed(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorBody::new("invalid_request", message),
            ),
            ApiError::ModelNotLoaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorBody::new(
                    "model_not_loaded",
                    "no model is loaded: train one (`train --model-dir DIR`), then send the service SIGHUP",
                ),
            ),
            ApiError::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorBody::new(
                    "payload_too_large",
                    format!("the body is larger than {limit} bytes"),
                ),
            ),
            ApiError::BodyTimeout(limit) => (
                StatusCode::REQUEST_TIMEOUT,
                ErrorBody::new(
                    "timeout",
                    format!("the body did not arrive within {} s", limit.as_secs_f64()),
                ),
            ),
            ApiError::BodyUnreadable(message) => (
                StatusCode::BAD_REQUEST,
                ErrorBody::new("bad_request", format!("cannot read the body: {message}")),
            ),
            ApiError::Overloaded(message) => {
                let mut response = error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorBody::new("overloaded", message),
                );
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
                return response;
            }
            ApiError::Internal(message) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorBody::new("internal_error", message),
            ),
        };
        error_response(status, body)
    }
}
