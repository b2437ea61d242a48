//! Building and shipping: the service binaries, the container images and the MLflow image's
//! base and wheels, the Docker engine that builds them, and the registries they are pushed to.

pub mod binaries;
pub mod engine;
pub mod images;
pub mod mlflow_base;
pub mod registry;
pub mod release_record;
