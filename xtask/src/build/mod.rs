//! Building and shipping: the service binaries, the container images and the MLflow image's
//! base and wheels, the Docker engine that builds them, and the registries they are pushed to.

pub mod binaries;
pub mod engine;
pub mod images;
pub mod mlflow_base;
pub mod registry;

use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes` as lowercase hex: the toolkit's cache keys and fingerprints (stable
/// across Rust releases, unlike `DefaultHasher`).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha256_of_a_known_text() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
