//! Dependencies: the external tools the toolkit runs, pinned in `xtask/tools.toml`, and the
//! lock files `upgrade-deps` rewrites and compares.

pub mod lockfiles;
pub mod tools;
