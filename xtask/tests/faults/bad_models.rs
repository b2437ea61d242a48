//! Bad models: a real model edited into a lie (cut short, or a tree made cyclic), published as
//! a version the way `train` would. Signalled (SIGHUP) to a running API it is refused and the
//! old model kept; an API started on it alone answers 503 and stays up.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{self, copy_dir, current_version, docker_stdout, point_current_at, wait_for};
use crate::http::{call, health, predict_ok, wait_health};
use crate::target::{service, Runtime, Target};

/// Puts the good model back as `current`, removes the bad versions and signals the service,
/// whatever the case did: the next case finds the stack serving.
struct Restore<'a> {
    target: &'a Target,
    api: &'a str,
    good: String,
    bad: Vec<String>,
}

impl<'a> Restore<'a> {
    fn new(target: &'a Target, api: &'a str) -> Self {
        let good = current_version(&target.model_dir(api));
        Self {
            target,
            api,
            good,
            bad: Vec::new(),
        }
    }
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let model_dir = self.target.model_dir(self.api);
        point_current_at(&model_dir, &self.good);
        for bad in &self.bad {
            let _ = std::fs::remove_dir_all(model_dir.join("versions").join(bad));
        }
        self.target.hangup(self.api);
    }
}

/// A corrupt and a cyclic model published and signalled: refused with the reason, the old model
/// kept; the good one back and signalled again: served.
pub fn refused_on_reload(target: &Target, api: &str) -> String {
    let addr = target.addr(api);
    let model_dir = target.model_dir(api);
    let mut restore = Restore::new(target, api);
    let good = restore.good.clone();
    let before = wait_health(addr, "a healthy answer", Duration::from_secs(10), |s, _| {
        s == 200
    });
    assert_eq!(before["model_version"], good.as_str());
    let (cyclic, cycle) = cyclic_model(&model_dir);
    let lies = [
        (
            "corrupt (truncated) model",
            truncated_model(&model_dir),
            "not a valid",
        ),
        ("cyclic tree", cyclic, "reached twice"),
    ];
    let mut seen = Vec::new();
    for (what, bytes, reason) in lies {
        let bad = publish_bad_version(&model_dir, &bytes);
        restore.bad.push(bad.clone());
        target.hangup(api);
        let refused = wait_health(addr, "a refusal", Duration::from_secs(10), |_, h| {
            h["last_reload"]["status"] == "refused"
                && h["last_reload"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(&bad))
        });
        let why = refused["last_reload"]["reason"]
            .as_str()
            .unwrap()
            .to_owned();
        eprintln!("{api}: the {what} ({bad}) was refused: {why}");
        assert!(
            why.contains(reason),
            "refused, but not for the {what}: {why}"
        );
        assert_eq!(
            refused["model_version"],
            good.as_str(),
            "the old model is not served"
        );
        assert_eq!(refused["status"], "healthy");
        assert!(
            predict_ok(addr, api),
            "{api} stopped predicting after refusing the {what}"
        );
        seen.push(format!("{what} refused"));
        point_current_at(&model_dir, &good);
    }
    eprintln!("({cycle})");
    // The good model back, signalled: the same version again.
    drop(restore);
    let back = wait_health(
        addr,
        "the good model again",
        Duration::from_secs(10),
        |s, h| s == 200 && h["last_reload"]["status"] == "unchanged",
    );
    assert_eq!(back["model_version"], good.as_str());
    format!("{}; old model {good} kept", seen.join(", "))
}

/// A service started on a corrupt model only: up, answering 503 with the reason, not
/// crashing; the good model back and SIGHUP: healthy.
pub fn start_on_a_corrupt_model(target: &Target, api: &str) -> String {
    match target.runtime {
        Runtime::Docker => {
            let mut restore = Restore::new(target, api);
            let bad = publish_bad_version(
                &target.model_dir(api),
                &truncated_model(&target.model_dir(api)),
            );
            restore.bad.push(bad.clone());
            let container = service(api).container;
            docker_stdout(&["restart", "--time", "10", &container]);
            let addr = target.addr(api);
            let answer = wait_health(addr, "a 503", Duration::from_secs(30), |s, _| s == 503);
            assert_eq!(answer["last_reload"]["status"], "refused", "{answer}");
            // Still the same container run a few health checks later: not crash-looping.
            let state = || {
                docker_stdout(&[
                    "inspect",
                    "--format",
                    "{{.State.Status}} restarts={{.RestartCount}} since={{.State.StartedAt}}",
                    &container,
                ])
            };
            let first = state();
            let checks_seen = health_checks(&container);
            wait_for(
                &format!("two more of docker's health checks of {container}"),
                Duration::from_secs(60),
                Duration::from_millis(100),
                || {
                    let new = health_checks(&container)
                        .into_iter()
                        .filter(|c| !checks_seen.contains(c))
                        .count();
                    (new >= 2).then_some(())
                },
            );
            assert_eq!(state(), first, "the container did not stay up");
            assert!(first.starts_with("running "), "{first}");
            let (status, body) = health(addr).unwrap();
            assert_eq!(status, 503, "{body}");
            // The good model back and SIGHUP: served without a restart.
            drop(restore);
            wait_health(addr, "healthy again", Duration::from_secs(10), |s, _| {
                s == 200
            });
            format!(
                "503, stayed up over 2 health checks; corrupt {bad} refused; healthy after SIGHUP"
            )
        }
        Runtime::Local => {
            // The service binary itself, on a model directory holding only a corrupt model.
            let dir = tempfile::tempdir().unwrap();
            let model_dir = dir.path().join("model");
            let good_dir = target.model_dir(api);
            let good = current_version(&good_dir);
            std::fs::create_dir_all(model_dir.join("versions")).unwrap();
            copy_dir(
                &good_dir.join("versions").join(&good),
                &model_dir.join("versions").join(&good),
            );
            point_current_at(&model_dir, &good);
            let bad = publish_bad_version(&model_dir, &truncated_model(&model_dir));
            let port = common::free_port();
            let mut server = KillOnDrop(
                common::serve_command(api, port, &model_dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let answer = wait_health(addr, "a 503", Duration::from_secs(10), |s, _| s == 503);
            assert_eq!(answer["last_reload"]["status"], "refused", "{answer}");
            // It answers requests after refusing its model, and is still running.
            let (path, body) = service(api).smoke.unwrap();
            let (status, error) =
                call(addr, "POST", &path, Some(&body), Duration::from_secs(2)).unwrap();
            assert_eq!(
                (status, error["error"].as_str()),
                (503, Some("model_not_loaded"))
            );
            assert!(
                server.0.try_wait().unwrap().is_none(),
                "the service exited on a corrupt model"
            );
            point_current_at(&model_dir, &good);
            common::signal(server.0.id() as i32, "HUP");
            let healthy = wait_health(addr, "healthy", Duration::from_secs(10), |s, _| s == 200);
            assert_eq!(healthy["model_version"], good.as_str());
            format!(
                "503 model_not_loaded, still running; corrupt {bad} refused; healthy after SIGHUP"
            )
        }
    }
}

/// A child process killed when dropped, whatever the case's assertions did: the campaign
/// goes on after a failed case.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// When each health check docker keeps for `container` started (its last five).
fn health_checks(container: &str) -> Vec<String> {
    let log: Value = serde_json::from_str(&docker_stdout(&[
        "inspect",
        "--format",
        "{{json .State.Health.Log}}",
        container,
    ]))
    .unwrap_or(Value::Null);
    log.as_array()
        .into_iter()
        .flatten()
        .filter_map(|check| check["Start"].as_str().map(str::to_owned))
        .collect()
}

/// Publishes `model_json` as the served version, with the served model's metrics (so only its
/// content can be refused).
fn publish_bad_version(model_dir: &Path, model_json: &[u8]) -> String {
    let served = model_dir.join("current/metrics.json");
    let metrics: Value = serde_json::from_slice(&std::fs::read(served).unwrap()).unwrap();
    common::publish_version(model_dir, model_json, metrics)
}

/// The served model with the first split node of its first tree made its own child: a cycle
/// a tree walk would spin in forever.
fn cyclic_model(model_dir: &Path) -> (Vec<u8>, String) {
    let mut artifact: Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("current/model.json")).unwrap())
            .unwrap();
    let nodes = find_nodes(&mut artifact["model"]).expect("a trained model has tree nodes");
    let (index, node) = nodes
        .iter_mut()
        .enumerate()
        .find(|(_, n)| n["is_leaf"] == false)
        .expect("a tree with a split");
    node["left_child"] = json!(index);
    (
        serde_json::to_vec(&artifact).unwrap(),
        format!("node {index} points to itself"),
    )
}

/// The first `nodes` array of the first tree, wherever the service keeps its booster.
fn find_nodes(value: &mut Value) -> Option<&mut Vec<Value>> {
    if value.get("trees").is_some_and(Value::is_array) {
        return value["trees"][0]["nodes"].as_array_mut();
    }
    match value {
        Value::Object(map) => map.values_mut().find_map(find_nodes),
        _ => None,
    }
}

/// The first half of the served model: what a copy cut short leaves.
fn truncated_model(model_dir: &Path) -> Vec<u8> {
    let bytes = std::fs::read(model_dir.join("current/model.json")).unwrap();
    bytes[..bytes.len() / 2].to_vec()
}
