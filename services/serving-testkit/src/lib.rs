//! What every service must do, as tests it calls with its own inputs, so a new service is
//! covered by one short test file. A dev-dependency only: the serving library carries no test
//! code.
//!
//! - [`api`]: the HTTP API in-process, through the router (every endpoint, every kind of bad
//!   input, the metrics), and models trained for it;
//! - [`binary`]: the real binary on real sockets (healthcheck, reload on SIGHUP, a slowloris,
//!   SIGTERM, the dashboard's port, bad training data);
//! - [`mlflow`]: a throwaway MLflow server, a proxy that cuts it off, and what tracked
//!   training must record;
//! - [`net`], [`wait`]: free ports, a raw HTTP peer, the kernel's view of a connection, and
//!   waiting on a condition.

pub mod api;
pub mod binary;
pub mod drift;
pub mod mlflow;
pub mod net;
pub mod skip;
pub mod wait;

pub use api::{
    call, conformance, title_is_the_service_tomls, train_into, trained_dashboard, trained_router,
    training_is_deterministic, without_model,
};
pub use binary::{
    dashboard_follows_the_model, dashboard_port_is_refused, degenerate_data_is_refused, get,
    reload_on_sighup, serve_and_healthcheck, serve_command, shared_port_copies,
    slowloris_and_sigterm, snapshot,
};
pub use drift::{drift_is_measured, profiles_are_optional_but_checked};
pub use net::free_port;
pub use skip::skip;
pub use wait::{poll_until, wait_until};
