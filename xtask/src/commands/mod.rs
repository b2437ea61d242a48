//! One module per command, named after it: its arguments and what it does. Commands compose
//! the shared parts beside this folder; no command imports another.

pub mod backup;
pub mod bench;
pub mod ci;
pub mod completions;
pub mod compose;
pub mod demo;
pub mod deny;
pub mod deploy;
pub mod doctor;
pub mod down;
pub mod drift;
pub mod fuzz_api;
pub mod health;
pub mod images;
pub mod lint_workflows;
pub mod logs;
pub mod mlflow;
pub mod release;
pub mod restart;
pub mod restore;
pub mod retrain;
pub mod sbom;
pub mod scan;
pub mod smoke;
pub mod status;
pub mod tools;
pub mod up;
pub mod upgrade_deps;
pub mod verify_release;
