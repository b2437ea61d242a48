//! Why a call to MLflow failed, and how an answer becomes that reason.

use std::fmt;

use serde::Deserialize;

/// Why a call to MLflow failed.
#[derive(Debug)]
pub enum Error {
    /// The tracking URI cannot be used.
    InvalidUri { uri: String, reason: String },
    /// MLflow answered with an error of its own.
    Api {
        call: String,
        status: u16,
        error_code: String,
        message: String,
    },
    /// The answer was not what MLflow gives: another server, or a proxy in between.
    Unexpected {
        call: String,
        status: u16,
        detail: String,
    },
    /// No connection could be made, on any attempt.
    Unreachable {
        call: String,
        attempts: u32,
        source: ureq::Error,
    },
    /// The connection failed or timed out once the request may already have been received.
    Transport { call: String, source: ureq::Error },
    /// A new model version did not become READY.
    NotReady {
        model: String,
        version: String,
        detail: String,
    },
}

impl Error {
    /// MLflow's `error_code`, e.g. `RESOURCE_DOES_NOT_EXIST`, when MLflow answered with one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Self::Api { error_code, .. } => Some(error_code),
            _ => None,
        }
    }

    /// True when the server could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUri { uri, reason } => write!(f, "MLflow tracking URI {uri:?}: {reason}"),
            Self::Api {
                call,
                status,
                error_code,
                message,
            } => write!(
                f,
                "MLflow {call} failed (HTTP {status}): {error_code}: {message}"
            ),
            Self::Unexpected {
                call,
                status,
                detail,
            } => write!(
                f,
                "MLflow {call}: unexpected answer (HTTP {status}): {detail}"
            ),
            Self::Unreachable {
                call,
                attempts,
                source,
            } => write!(
                f,
                "MLflow {call}: cannot connect ({source}; {attempts} attempt{})",
                if *attempts == 1 { "" } else { "s" }
            ),
            Self::Transport { call, source } => write!(f, "MLflow {call}: {source}"),
            Self::NotReady {
                model,
                version,
                detail,
            } => write!(
                f,
                "MLflow model {model} version {version} is not READY: {detail}"
            ),
        }
    }
}

// The message already holds the transport error's text, so `source()` stays `None`: error
// chains would print it twice.
impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True when `error` happened before any byte of the request could reach the server.
pub(crate) fn is_connect_error(error: &ureq::Error) -> bool {
    use std::io::ErrorKind;
    match error {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        ureq::Error::Io(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::AddrNotAvailable
        ),
        _ => false,
    }
}

/// Reads an MLflow error answer: `{"error_code": ..., "message": ...}`.
#[derive(Deserialize)]
struct ErrorAnswer {
    error_code: String,
    #[serde(default)]
    message: String,
}

pub(crate) fn error_from_answer(call: String, status: u16, body: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorAnswer>(body) {
        Ok(answer) => Error::Api {
            call,
            status,
            error_code: answer.error_code,
            message: answer.message,
        },
        Err(_) => Error::Unexpected {
            call,
            status,
            detail: excerpt(body),
        },
    }
}

/// The start of a body, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}
