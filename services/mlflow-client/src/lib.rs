//! A blocking client for the REST API of an MLflow tracking server (measured against MLflow
//! 3.17): experiments, runs, artifacts through the server's artifact proxy, and the model
//! registry.
//!
//! Every call has a time limit, so nothing hangs. A call is retried, with a doubling wait, only
//! when no connection could be made at all: the server never saw the request, so even a
//! `runs/create` cannot happen twice. An answer, 4xx or 5xx included, is never retried; MLflow's
//! own `{"error_code", "message"}` reaches the caller as it is, with the call that failed.
//!
//! Only `http://` URIs: the stack's MLflow is plain HTTP on the machine or the compose network,
//! and a TLS stack would add its build time and size to every service binary.

mod client;
mod error;
mod wire;

pub use client::{artifact_proxy_path, Client, ClientOptions};
pub use error::{Error, Result};
pub use wire::*;
