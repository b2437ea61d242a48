//! Small pieces every part uses: progress and tables for people and CI logs, HTTP probes,
//! polling with a deadline, and the backup archive's format.

pub mod archive;
pub mod http;
pub mod poll;
pub mod progress;
pub mod table;
