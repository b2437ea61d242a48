//! Hardening of compose files, which Trivy does not read: every service runs as a non-root
//! user, on a read-only root file system, with all capabilities dropped, no privilege
//! escalation, pids and memory limits, no privileged mode or host network, no secret written
//! into its environment, and ports published on the loopback interface only.
//!
//! Severities follow the harm: what hands out the host or a secret is CRITICAL, what opens the
//! door to it (root, host network, all interfaces, capabilities, privilege escalation) is HIGH
//! and fails the scan; a writable root file system and missing limits are MEDIUM.

use std::path::Path;

use anyhow::{Context, Result};
use serde_yaml_ng::{Mapping, Value};

use super::findings::{Finding, Location, Severity};

pub const SCANNER: &str = "compose rule";

/// The rules, for the SARIF log and the docs: id, severity, what it wants.
pub const RULES: [(&str, Severity, &str); 10] = [
    (
        "compose-privileged",
        Severity::Critical,
        "not `privileged: true`",
    ),
    (
        "compose-secret-in-environment",
        Severity::Critical,
        "no literal secret in `environment`",
    ),
    (
        "compose-host-network",
        Severity::High,
        "not `network_mode: host`",
    ),
    (
        "compose-root-user",
        Severity::High,
        "`user:` set to a non-root user",
    ),
    (
        "compose-port-all-interfaces",
        Severity::High,
        "ports published on 127.0.0.1 only",
    ),
    ("compose-capabilities", Severity::High, "`cap_drop: [ALL]`"),
    (
        "compose-privilege-escalation",
        Severity::High,
        "`security_opt: [no-new-privileges:true]`",
    ),
    (
        "compose-writable-root",
        Severity::Medium,
        "`read_only: true`",
    ),
    (
        "compose-no-pids-limit",
        Severity::Medium,
        "a pids limit (`pids_limit` or `deploy.resources.limits.pids`)",
    ),
    (
        "compose-no-memory-limit",
        Severity::Medium,
        "a memory limit (`mem_limit` or `deploy.resources.limits.memory`)",
    ),
];

fn severity_of(id: &str) -> Severity {
    RULES
        .iter()
        .find(|(rule, _, _)| *rule == id)
        .map(|(_, s, _)| *s)
        .expect("a known rule")
}

/// Checks the compose file at `path` (shown relative to `root`).
pub fn check_file(root: &Path, path: &Path) -> Result<Vec<Finding>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    check(root, path, &text)
}

pub fn check(root: &Path, path: &Path, text: &str) -> Result<Vec<Finding>> {
    let doc: Value = serde_yaml_ng::from_str(text)
        .with_context(|| format!("{} is not valid YAML", path.display()))?;
    let Some(services) = doc.get("services").and_then(Value::as_mapping) else {
        return Ok(Vec::new());
    };
    let lines = Lines::new(text);
    let mut findings = Vec::new();
    for (name, service) in services {
        let name = name.as_str().unwrap_or("?");
        let Some(service) = service.as_mapping() else {
            continue;
        };
        let block = lines.service_block(name);
        let mut flag = |id: &str, key: Option<&str>, title: String, help: &str| {
            let line = key
                .and_then(|k| lines.find_in(block, k))
                .or(block.map(|(start, _)| start));
            findings.push(Finding {
                id: id.to_owned(),
                severity: severity_of(id),
                title,
                subject: format!("service {name}"),
                help: Some(help.to_owned()),
                location: Some(Location::new(root, path, line)),
            });
        };
        check_service(service, &mut flag);
    }
    Ok(findings)
}

fn get<'a>(service: &'a Mapping, key: &str) -> Option<&'a Value> {
    service.get(Value::String(key.to_owned()))
}

fn is_true(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Sequence(items)) => items.iter().filter_map(scalar).collect(),
        Some(other) => scalar(other).into_iter().collect(),
        None => Vec::new(),
    }
}

fn limit(service: &Mapping, key: &str, deploy_key: &str) -> bool {
    get(service, key).is_some()
        || get(service, "deploy")
            .and_then(|d| d.get("resources"))
            .and_then(|r| r.get("limits"))
            .and_then(|l| l.get(deploy_key))
            .is_some()
}

fn check_service(service: &Mapping, flag: &mut impl FnMut(&str, Option<&str>, String, &str)) {
    if is_true(get(service, "privileged")) {
        flag(
            "compose-privileged",
            Some("privileged"),
            "runs privileged: it has every capability and every device of the host".into(),
            "remove `privileged: true`; grant the one capability it needs with `cap_add`",
        );
    }
    if get(service, "network_mode").and_then(Value::as_str) == Some("host") {
        flag(
            "compose-host-network",
            Some("network_mode"),
            "shares the host's network stack (`network_mode: host`)".into(),
            "use the stack's network and publish ports on 127.0.0.1",
        );
    }
    match get(service, "user").and_then(scalar) {
        None => flag(
            "compose-root-user",
            None,
            "has no `user:`: it runs as the image's user, root unless the image says otherwise"
                .into(),
            "set `user: \"10001:10001\"` (or another non-root uid)",
        ),
        Some(user) if is_root(&user) => flag(
            "compose-root-user",
            Some("user"),
            format!("runs as root (`user: {user}`)"),
            "set `user: \"10001:10001\"` (or another non-root uid)",
        ),
        Some(_) => {}
    }
    if !is_true(get(service, "read_only")) {
        flag(
            "compose-writable-root",
            None,
            "its root file system is writable".into(),
            "set `read_only: true`; give it a `tmpfs` or a volume where it must write",
        );
    }
    if !strings(get(service, "cap_drop"))
        .iter()
        .any(|c| c.eq_ignore_ascii_case("ALL"))
    {
        flag(
            "compose-capabilities",
            Some("cap_drop"),
            "keeps Docker's default capabilities".into(),
            "set `cap_drop: [ALL]` (and `cap_add` only what it needs)",
        );
    }
    if !strings(get(service, "security_opt"))
        .iter()
        .any(|o| no_new_privileges(o))
    {
        flag(
            "compose-privilege-escalation",
            Some("security_opt"),
            "may gain privileges (setuid binaries, file capabilities)".into(),
            "set `security_opt: [\"no-new-privileges:true\"]`",
        );
    }
    if !limit(service, "pids_limit", "pids") {
        flag(
            "compose-no-pids-limit",
            None,
            "has no pids limit: a fork bomb takes the host down".into(),
            "set `pids_limit` (or `deploy.resources.limits.pids`)",
        );
    }
    if !limit(service, "mem_limit", "memory") {
        flag(
            "compose-no-memory-limit",
            None,
            "has no memory limit".into(),
            "set `mem_limit` (or `deploy.resources.limits.memory`)",
        );
    }
    for (name, value) in environment(get(service, "environment")) {
        if looks_secret(&name) && is_literal(&value) {
            flag(
                "compose-secret-in-environment",
                Some(&name),
                format!("writes a secret into its environment: {name} has a literal value"),
                "pass it from the host (`NAME: ${NAME}`), or as a file under /run/secrets",
            );
        }
    }
    for port in ports(get(service, "ports")) {
        if let Some(published) = all_interfaces(&port) {
            flag(
                "compose-port-all-interfaces",
                Some("ports"),
                format!("publishes {published} on every interface of the host"),
                "bind it to the loopback interface: \"127.0.0.1:HOST:CONTAINER\"",
            );
        }
    }
}

fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or("").trim();
    name == "root" || name == "0"
}

fn no_new_privileges(option: &str) -> bool {
    let option = option.trim();
    option == "no-new-privileges"
        || ["no-new-privileges:true", "no-new-privileges=true"]
            .iter()
            .any(|o| option.eq_ignore_ascii_case(o))
}

/// `environment:` as a map or as a list of `NAME=value`.
fn environment(value: Option<&Value>) -> Vec<(String, String)> {
    match value {
        Some(Value::Mapping(map)) => map
            .iter()
            .filter_map(|(k, v)| {
                let value = if v.is_null() {
                    String::new()
                } else {
                    scalar(v)?
                };
                Some((k.as_str()?.to_owned(), value))
            })
            .collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (item.to_owned(), String::new()),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Names that hold secrets: a part PASSWORD, PASSWD, TOKEN, SECRET, or one ending in KEY.
/// `*_FILE` variables name a file, not a secret.
fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if upper.ends_with("_FILE") {
        return false;
    }
    upper.split(['_', '-', '.']).any(|part| {
        ["PASSWORD", "PASSWD", "TOKEN", "SECRET"]
            .iter()
            .any(|word| part.contains(word))
            || part.ends_with("KEY")
    })
}

/// A value written in the file rather than passed from the host (`${VAR}`, `$VAR`) or empty.
fn is_literal(value: &str) -> bool {
    let value = value.trim();
    !value.is_empty() && !value.starts_with('$')
}

/// `ports:` entries: short strings or long-syntax maps, as (host ip, published port) pairs;
/// an empty host ip means every interface.
fn ports(value: Option<&Value>) -> Vec<(String, String)> {
    let Some(Value::Sequence(items)) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| match item {
            Value::Mapping(map) => {
                let field = |k: &str| map.get(Value::String(k.into())).and_then(scalar);
                let published = field("published")?;
                Some((field("host_ip").unwrap_or_default(), published))
            }
            other => {
                let spec = scalar(other)?;
                let parts = split_port(&spec);
                match parts.len() {
                    // "8000": a container port Docker publishes on a random host port.
                    1 => Some((String::new(), "a random port".into())),
                    2 => Some((String::new(), parts[0].clone())),
                    _ => Some((parts[0].clone(), parts[1].clone())),
                }
            }
        })
        .collect()
}

/// Splits `HOST_IP:HOST:CONTAINER/proto` at the colons outside `${...}` and `[...]`.
fn split_port(spec: &str) -> Vec<String> {
    let spec = spec.split('/').next().unwrap_or(spec);
    let mut parts = vec![String::new()];
    let mut depth = 0;
    for c in spec.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ':' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().expect("never empty").push(c);
    }
    parts
}

/// The published port, when `port` is reachable from other machines.
fn all_interfaces((host_ip, published): &(String, String)) -> Option<String> {
    let ip = host_ip.trim_matches(['[', ']']);
    let loopback = ip == "localhost" || ip == "::1" || ip.starts_with("127.");
    (!loopback).then(|| format!("port {published}"))
}

/// Line numbers, to put a finding on the line that says it (or the service's first line).
struct Lines<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            lines: text.lines().collect(),
        }
    }

    fn indent(line: &str) -> usize {
        line.len() - line.trim_start().len()
    }

    /// The service's block: its first line and the line after its last (1-based, exclusive).
    fn service_block(&self, name: &str) -> Option<(u32, u32)> {
        let services = self
            .lines
            .iter()
            .position(|l| l.trim_end() == "services:")?;
        let mut start = None;
        let mut indent = 0;
        for (i, line) in self.lines.iter().enumerate().skip(services + 1) {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            if Self::indent(line) == 0 {
                return start.map(|s| (s, i as u32 + 1));
            }
            match start {
                None => {
                    let key = line.trim().trim_end_matches(':').trim_matches(['"', '\'']);
                    if key == name && line.trim_end().ends_with(':') {
                        start = Some(i as u32 + 1);
                        indent = Self::indent(line);
                    }
                }
                Some(s) if Self::indent(line) <= indent => return Some((s, i as u32 + 1)),
                Some(_) => {}
            }
        }
        start.map(|s| (s, self.lines.len() as u32 + 1))
    }

    /// The first line in `block` that sets `key` (`key:` or `- key=` in a list).
    fn find_in(&self, block: Option<(u32, u32)>, key: &str) -> Option<u32> {
        let (start, end) = block?;
        (start + 1..end).find(|&n| {
            let line = self.lines[n as usize - 1].trim_start();
            let line = line.strip_prefix("- ").unwrap_or(line);
            line.starts_with(&format!("{key}:")) || line.starts_with(&format!("{key}="))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> (std::path::PathBuf, Vec<Finding>) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let path = root.join("xtask/tests/fixtures/compose").join(name);
        let findings = check_file(root, &path).unwrap();
        (path, findings)
    }

    fn ids_of(findings: &[Finding], service: &str) -> Vec<String> {
        let mut ids: Vec<String> = findings
            .iter()
            .filter(|f| f.subject == format!("service {service}"))
            .map(|f| f.id.clone())
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_hardened_compose_file_passes() {
        let (_, findings) = fixture("hardened.yml");
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn every_missing_hardening_is_flagged_on_its_line() {
        let (_, findings) = fixture("unhardened.yml");
        assert_eq!(
            ids_of(&findings, "root"),
            [
                "compose-capabilities",
                "compose-no-memory-limit",
                "compose-no-pids-limit",
                "compose-port-all-interfaces",
                "compose-privilege-escalation",
                "compose-root-user",
                "compose-writable-root",
            ]
        );
        let privileged = ids_of(&findings, "privileged");
        for id in [
            "compose-privileged",
            "compose-host-network",
            "compose-root-user",
        ] {
            assert!(privileged.contains(&id.to_owned()), "{privileged:?}");
        }
        assert_eq!(
            ids_of(&findings, "leaky"),
            [
                "compose-capabilities",
                "compose-port-all-interfaces",
                "compose-privilege-escalation",
                "compose-secret-in-environment",
            ]
        );
        let at = |id: &str, service: &str| {
            findings
                .iter()
                .find(|f| f.id == id && f.subject == format!("service {service}"))
                .and_then(|f| f.location.as_ref())
                .map(|l| (l.file.clone(), l.line))
                .unwrap()
        };
        let file = "xtask/tests/fixtures/compose/unhardened.yml".to_owned();
        assert_eq!(at("compose-root-user", "root"), (file.clone(), Some(5)));
        assert_eq!(
            at("compose-privileged", "privileged"),
            (file.clone(), Some(10))
        );
        assert_eq!(
            at("compose-secret-in-environment", "leaky"),
            (file.clone(), Some(22))
        );
        // Missing keys point at the service itself.
        assert_eq!(at("compose-writable-root", "root"), (file, Some(3)));
        let secret = findings
            .iter()
            .find(|f| f.id == "compose-secret-in-environment")
            .unwrap();
        assert!(
            !secret.title.contains("not-a-real-token"),
            "the value leaked"
        );
        assert_eq!(secret.severity, Severity::Critical);
    }

    #[test]
    fn port_specs_are_read_with_their_interpolations() {
        let spec = |s: &str| ports(Some(&Value::Sequence(vec![Value::String(s.into())])));
        assert_eq!(
            spec("127.0.0.1:${BANKCHURN_HOST_PORT:-8001}:8000"),
            [(
                "127.0.0.1".to_owned(),
                "${BANKCHURN_HOST_PORT:-8001}".to_owned()
            )]
        );
        assert_eq!(spec("8001:8000/tcp"), [(String::new(), "8001".to_owned())]);
        assert!(all_interfaces(&spec("[::1]:8001:8000")[0]).is_none());
        assert!(all_interfaces(&spec("0.0.0.0:8001:8000")[0]).is_some());
    }

    #[test]
    fn secret_names_are_told_from_their_neighbours() {
        for name in [
            "DB_PASSWORD",
            "API_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "APIKEY",
            "ssh-key",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in [
            "MODEL_DIR",
            "KEYBOARD",
            "API_TOKEN_FILE",
            "MLFLOW_TRACKING_URI",
        ] {
            assert!(!looks_secret(name), "{name}");
        }
        assert!(!is_literal("${DB_PASSWORD}"));
        assert!(!is_literal(""));
        assert!(is_literal("hunter2"));
    }

    #[test]
    fn the_generated_compose_file_is_checked_without_error() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let findings = check_file(root, &root.join("compose/docker-compose.demo.yml")).unwrap();
        // It publishes on 127.0.0.1 only, runs as 10001 and holds no secret.
        for id in [
            "compose-port-all-interfaces",
            "compose-root-user",
            "compose-secret-in-environment",
            "compose-privileged",
            "compose-host-network",
        ] {
            assert!(findings.iter().all(|f| f.id != id), "{id}: {findings:#?}");
        }
    }
}
