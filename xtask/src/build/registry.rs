//! Container registries as `release` addresses them: `HOST[:PORT][/NAMESPACE]`, image tags,
//! and the digests that `docker push` and `docker manifest inspect` report.

use anyhow::{bail, Result};
use serde_json::Value;

/// Where images are pushed: a host (and port) and an optional namespace, lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// `ghcr.io`, `127.0.0.1:5000`.
    pub host: String,
    /// `my-org`, `my-org/team`; empty for none.
    pub namespace: String,
}

/// A path component of an image name, as the distribution spec allows it:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &part[start..i];
        let dashes = separator.bytes().all(|b| b == b'-');
        if !(separator == "." || separator == "_" || separator == "__" || dashes) {
            return false;
        }
    }
    true
}

fn is_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    let name_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    // Without a dot or a port, Docker takes the first word for a Docker Hub namespace.
    let is_a_host = name.contains('.') || port.is_some() || name == "localhost";
    port_ok && name_ok && is_a_host
}

impl Registry {
    /// Parses `HOST[:PORT][/NAMESPACE]`, lowercased (ghcr.io refuses capitals, and GitHub
    /// owners may have them).
    pub fn parse(text: &str) -> Result<Self> {
        if text.contains("://") {
            bail!("--registry {text}: give HOST[:PORT][/NAMESPACE] without a scheme, e.g. ghcr.io/my-org");
        }
        let lower = text.trim().trim_end_matches('/').to_ascii_lowercase();
        let (host, namespace) = match lower.split_once('/') {
            Some((host, namespace)) => (host.to_owned(), namespace.to_owned()),
            None => (lower.clone(), String::new()),
        };
        if !is_host(&host) {
            bail!(
                "--registry {text}: {host:?} is not a registry host (a name with a dot, a port, \
                 or localhost: ghcr.io, 127.0.0.1:5000)"
            );
        }
        if let Some(bad) = namespace
            .split('/')
            .find(|part| !namespace.is_empty() && !is_path_component(part))
        {
            bail!(
                "--registry {text}: {bad:?} is not a valid namespace component (lowercase letters \
                 and digits, separated by one `.`, `_`, `__` or dashes)"
            );
        }
        Ok(Self { host, namespace })
    }

    /// `HOST/NAMESPACE/IMAGE`.
    pub fn repository(&self, image: &str) -> String {
        if self.namespace.is_empty() {
            format!("{}/{image}", self.host)
        } else {
            format!("{}/{}/{image}", self.host, self.namespace)
        }
    }

    /// A registry on this machine's loopback: Docker talks plain HTTP to those by default,
    /// and `docker manifest` needs `--insecure` to do the same.
    pub fn is_loopback(&self) -> bool {
        let name = self.host.rsplit_once(':').map_or(&*self.host, |(n, _)| n);
        name == "localhost" || name.starts_with("127.")
    }
}

impl std::fmt::Display for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.host)
        } else {
            write!(f, "{}/{}", self.host, self.namespace)
        }
    }
}

/// An image tag as Docker accepts it: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<()> {
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if !valid {
        bail!(
            "--tag {tag:?} is not a valid image tag (letters, digits, `_`, `.` and `-`, at most \
             128, not starting with `.` or `-`)"
        );
    }
    Ok(())
}

fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The digest `docker push` reports: its last `TAG: digest: sha256:... size: N` line.
pub fn pushed_digest(output: &str) -> Option<String> {
    output.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once("digest: ")?;
        let digest = rest.split_whitespace().next()?;
        is_digest(digest).then(|| digest.to_owned())
    })
}

/// What the registry holds under a tag, from `docker manifest inspect --verbose`: the
/// manifest's digest and the image configuration's digest (the image ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteManifest {
    pub digest: String,
    pub config: Option<String>,
}

pub fn remote_manifest(json: &str) -> Result<RemoteManifest> {
    let value: Value = serde_json::from_str(json)?;
    // A single image is an object; a manifest list is an array of them.
    let entry = match &value {
        Value::Array(entries) if entries.len() == 1 => &entries[0],
        Value::Array(entries) => bail!(
            "the registry holds a manifest list of {} images under this tag, not one image",
            entries.len()
        ),
        other => other,
    };
    let digest = entry["Descriptor"]["digest"]
        .as_str()
        .filter(|d| is_digest(d))
        .map(str::to_owned);
    let Some(digest) = digest else {
        bail!("`docker manifest inspect` named no digest");
    };
    let config = entry["SchemaV2Manifest"]["config"]["digest"]
        .as_str()
        .or_else(|| entry["OCIManifest"]["config"]["digest"].as_str())
        .map(str::to_owned);
    Ok(RemoteManifest { digest, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_lowercased_and_split_into_host_and_namespace() {
        let ghcr = Registry::parse("ghcr.io/My-Org").unwrap();
        assert_eq!(ghcr.host, "ghcr.io");
        assert_eq!(ghcr.namespace, "my-org");
        assert_eq!(
            ghcr.repository("ml-mlops/bankchurn"),
            "ghcr.io/my-org/ml-mlops/bankchurn"
        );
        assert!(!ghcr.is_loopback());

        let local = Registry::parse("127.0.0.1:5000/").unwrap();
        assert_eq!(local.to_string(), "127.0.0.1:5000");
        assert_eq!(local.repository("ml-mlops/x"), "127.0.0.1:5000/ml-mlops/x");
        assert!(local.is_loopback());
        assert!(Registry::parse("localhost/team/sub").unwrap().is_loopback());
    }

    #[test]
    fn malformed_registries_are_refused_with_the_reason() {
        for (text, reason) in [
            ("https://ghcr.io/org", "without a scheme"),
            ("myorg/images", "not a registry host"),
            ("ghcr.io:http/org", "not a registry host"),
            ("ghcr.io/org/-bad", "not a valid namespace component"),
            ("ghcr.io/a..b", "not a valid namespace component"),
        ] {
            let error = Registry::parse(text).unwrap_err().to_string();
            assert!(error.contains(reason), "{text}: {error}");
        }
        assert!(is_path_component("a__b-c--d.e"));
        assert!(!is_path_component("a___b"));
    }

    #[test]
    fn tags_follow_dockers_rule() {
        for good in ["1.0.0", "v1.2.3-rc.1", "latest", "1.0.0_build"] {
            check_tag(good).unwrap();
        }
        for bad in ["", "-x", ".x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_pushed_digest_is_read_from_dockers_output() {
        let output = "The push refers to repository [127.0.0.1:45123/test/tiny]\n\
                      9e40279cdf3f: Preparing\n9e40279cdf3f: Pushed\n\
                      t1: digest: sha256:5b6fa7edad5acbcbec8fa746765a03f77d18436740483d4d87d338d71e8352a0 size: 523\n";
        assert_eq!(
            pushed_digest(output).as_deref(),
            Some("sha256:5b6fa7edad5acbcbec8fa746765a03f77d18436740483d4d87d338d71e8352a0")
        );
        assert_eq!(pushed_digest("t1: digest: sha256:short size: 1"), None);
    }

    #[test]
    fn the_remote_manifest_names_its_digest_and_image_config() {
        let json = r#"{
            "Ref": "127.0.0.1:45123/test/tiny:t1",
            "Descriptor": {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "digest": "sha256:5b6fa7edad5acbcbec8fa746765a03f77d18436740483d4d87d338d71e8352a0",
                "size": 523
            },
            "SchemaV2Manifest": {
                "config": {
                    "digest": "sha256:af1cef5e781025483f11eeaf5914fa60e9ade77153286c15b6086ee49e946347"
                }
            }
        }"#;
        assert_eq!(
            remote_manifest(json).unwrap(),
            RemoteManifest {
                digest: "sha256:5b6fa7edad5acbcbec8fa746765a03f77d18436740483d4d87d338d71e8352a0"
                    .into(),
                config: Some(
                    "sha256:af1cef5e781025483f11eeaf5914fa60e9ade77153286c15b6086ee49e946347"
                        .into()
                ),
            }
        );
        assert!(remote_manifest("[{}, {}]").is_err());
    }
}
