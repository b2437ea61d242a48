//! `cargo xtask deploy swarm` on a real Docker Swarm: copies of this machine's engine in network
//! namespaces of their own (never the shared engine), first a one-node swarm, then two nodes
//! (a worker joined over a link between the namespaces, then lost), the stack's images
//! released with `cargo xtask release` to Debian's `docker-registry` and pulled by the nodes
//! by digest. This kernel has no IPVS: the stack is published `dnsrr-host`.
//!
//! Ignored by default (root, a Docker engine, the registry); `cargo xtask ci` runs it in its
//! e2e-swarm step. Everything it makes (the namespace, its engine, the registry, the release
//! record and the tags the release left on this machine's engine) goes when it ends.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns_engine::{Link, NetnsEngine, Options};
use common::postgres::PostgresCluster;
use common::registry::{Listen, Registry};
use common::{docker, docker_answers, repo, stderr, stdout};

/// The tag the test releases under: its own, so no real release record is overwritten.
const TAG: &str = "1.0.0-e2e-swarm";

/// What `cargo xtask release` left outside the test's folders: its record, its image archives'
/// report, and the registry tags on this machine's engine. Removed when dropped.
struct Released {
    record: PathBuf,
    registry: String,
}

impl Drop for Released {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.record);
        let listed = docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
        for image in stdout(&listed).lines() {
            if image.starts_with(&format!("{}/", self.registry)) && image.ends_with(TAG) {
                docker(&["image", "rm", image]);
            }
        }
    }
}

/// The real xtask binary, run inside the node's namespace against its engine, on the stack
/// in `stack_dir`.
fn xtask_on(engine: &NetnsEngine, stack_dir: &Path, args: &[&str]) -> Output {
    let mut command = engine.command(env!("CARGO_BIN_EXE_xtask"));
    command.env_remove("XTASK_PORT_OFFSET");
    common::run_xtask(command, &repo(), args, &[("XTASK_STACK_DIR", stack_dir)])
}

fn healthy(url: &str) -> bool {
    ureq::get(url)
        .config()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .call()
        .is_ok_and(|r| r.status() == 200)
}

/// A paced load generator: GETs of one URL at a fixed rate, each on a connection of its own
/// (a failure is any answer but 200, or none), until finished.
struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<LoadReport>,
}

#[derive(Debug)]
struct LoadReport {
    sent: u64,
    failed: u64,
    /// The first few failures, for the assertion's message.
    errors: Vec<String>,
}

impl Load {
    /// Requests a second: paced, so the connections (and the ports they leave in TIME_WAIT)
    /// stay few.
    const RATE: u32 = 100;

    fn start(url: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let url = url.to_owned();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut report = LoadReport {
                    sent: 0,
                    failed: 0,
                    errors: Vec::new(),
                };
                let started = Instant::now();
                let every = Duration::from_secs(1) / Self::RATE;
                while !stop.load(Ordering::SeqCst) {
                    // Pacing, not synchronization: the next request's slot.
                    let due = started + every * u32::try_from(report.sent).unwrap_or(u32::MAX);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    report.sent += 1;
                    let answer = ureq::get(&url)
                        .config()
                        .timeout_global(Some(Duration::from_secs(5)))
                        .http_status_as_error(false)
                        .build()
                        .call();
                    let failure = match answer {
                        Ok(r) if r.status() == 200 => None,
                        Ok(r) => Some(format!("status {}", r.status())),
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(failure) = failure {
                        report.failed += 1;
                        if report.errors.len() < 5 {
                            report.errors.push(format!(
                                "{:.2}s: {failure}",
                                started.elapsed().as_secs_f64()
                            ));
                        }
                    }
                }
                report
            })
        };
        Self { stop, thread }
    }

    fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// The host pid of one running task's process of `service` (the node shares this machine's
/// pid namespace; only its network is its own).
fn task_pid(engine: &NetnsEngine, service: &str) -> Option<(String, i32)> {
    let filter = format!("label=com.docker.swarm.service.name=ml-mlops_{service}");
    let ids = engine.docker(&["ps", "--quiet", "--filter", &filter]);
    let id = stdout(&ids).lines().next()?.to_owned();
    let pid = engine.docker(&["inspect", "--format", "{{.State.Pid}}", &id]);
    let pid = stdout(&pid).trim().parse().ok().filter(|&p: &i32| p > 0)?;
    Some((id, pid))
}

#[test]
#[ignore = "needs root, a Docker engine and docker-registry; run by `cargo xtask ci` (e2e-swarm)"]
fn a_swarm_of_one_then_two_nodes_runs_the_released_digests_heals_and_is_removed() {
    if !docker_answers() {
        common::skip("no Docker engine answers");
        return;
    }
    let Some(registry) = Registry::start(Listen::EveryAddress) else {
        return;
    };
    let link = Link::private(0);
    let mut options = Options::machine().with_link(link);
    // The node pulls over the link: plain HTTP to this one registry, as to a loopback one.
    options.daemon_config.insert(
        "insecure-registries".into(),
        serde_json::json!([format!("{}:{}", link.host, registry.port)]),
    );
    let Some(engine) = NetnsEngine::start_or_skip(options) else {
        return;
    };

    // Release: this machine's engine builds (or reuses) and scans the images, pushes them,
    // and records their digests. It holds the default image tags: the docker lock.
    let pushed_to = format!("127.0.0.1:{}", registry.port);
    let released = Released {
        record: repo().join(format!("target/xtask/reports/release-{TAG}.json")),
        registry: pushed_to.clone(),
    };
    let started = Instant::now();
    let release = Command::new("flock")
        .arg("/tmp/xtask-docker.lock")
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(["release", "--registry", &pushed_to, "--tag", TAG])
        .current_dir(repo())
        .env_remove("GITHUB_ACTIONS")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(
        release.status.success(),
        "release failed:\n{}{}",
        stdout(&release),
        stderr(&release)
    );
    eprintln!(
        "MEASURED: release (build or reuse, scan, push) in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let init = engine.docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    assert!(init.status.success(), "{}", stderr(&init));

    let stack = tempfile::tempdir().unwrap();
    let record = released.record.to_str().unwrap().to_owned();
    let nodes_reach = format!("{}:{}", link.host, registry.port);
    let deploy = [
        "deploy",
        "swarm",
        "--release",
        &record,
        "--registry",
        &nodes_reach,
        "--publishing",
        "dnsrr-host",
        "--replicas",
        "1",
    ];
    let started = Instant::now();
    let deployed = xtask_on(&engine, stack.path(), &deploy);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    eprintln!(
        "MEASURED: deploy swarm (one node, models trained first) to healthy and smoke-checked in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Exactly the recorded digests run, pulled from the registry the node reaches.
    let record_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&released.record).unwrap()).unwrap();
    for image in record_json["images"].as_array().unwrap() {
        let service = image["service"].as_str().unwrap();
        let spec = engine.docker(&[
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
            &format!("ml-mlops_{service}"),
        ]);
        assert_eq!(
            stdout(&spec).trim(),
            format!(
                "{nodes_reach}/ml-mlops/{service}@{}",
                image["digest"].as_str().unwrap()
            )
        );
    }

    let status = xtask_on(&engine, stack.path(), &["--runtime", "swarm", "status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let table = stdout(&status);
    for service in ["mlflow", "bankchurn", "carvision", "telecom"] {
        assert!(
            table.contains(&format!("ml-mlops_{service}.1")),
            "no task row of {service}:\n{table}"
        );
    }
    for args in [
        &["--runtime", "swarm", "health"][..],
        &["--runtime", "swarm", "smoke"][..],
    ] {
        let out = xtask_on(&engine, stack.path(), args);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // kill -9 of a task's process: the swarm replaces the task, and the port answers again.
    let url = format!("http://{}:8001/health", link.engine);
    assert!(healthy(&url), "{url} does not answer from the host");
    let (killed, pid) = task_pid(&engine, "bankchurn").expect("a bankchurn task runs");
    let killed_at = Instant::now();
    common::signal(pid, "KILL");
    common::wait_for(
        "a new bankchurn task to answer healthy",
        Duration::from_secs(120),
        Duration::from_millis(100),
        || {
            let replaced = task_pid(&engine, "bankchurn").is_some_and(|(id, _)| id != killed);
            (replaced && healthy(&url)).then_some(())
        },
    );
    eprintln!(
        "MEASURED: task kill -9 to a new task healthy on its port in {:.1}s",
        killed_at.elapsed().as_secs_f64()
    );

    // A rolling update (`restart` on a swarm replaces the tasks as an update of the image or
    // the model would) under a paced load. The new task listens beside the old one on the
    // node's port (SO_REUSEPORT) and the old one stops once the new one is healthy,
    // finishing its requests: not one may fail. The kernel hands the connections still
    // queued on a closing listener to the other one (net.ipv4.tcp_migrate_req, a setting of
    // each node's network namespace, which the README asks operators to turn on).
    let migrate = engine
        .command("sysctl")
        .args(["-qw", "net.ipv4.tcp_migrate_req=1"])
        .output()
        .unwrap();
    assert!(migrate.status.success(), "{}", stderr(&migrate));
    let load = Load::start(&url);
    let started = Instant::now();
    let restarted = xtask_on(
        &engine,
        stack.path(),
        &["--runtime", "swarm", "restart", "bankchurn"],
    );
    let took = started.elapsed();
    let report = load.finish();
    assert!(restarted.status.success(), "{}", stderr(&restarted));
    eprintln!(
        "MEASURED: rolling update of bankchurn (dnsrr-host: host network, shared port, start-first; 1 task) in {:.1}s under a paced load of {}/s: {} requests sent, {} failed",
        took.as_secs_f64(),
        Load::RATE,
        report.sent,
        report.failed
    );
    assert!(report.sent > 0);
    assert_eq!(
        report.failed, 0,
        "requests failed during the update: {report:?}"
    );

    // Retraining on a swarm: a one-off container of the deployed image on the stack's network
    // (MLflow tracks the run), then the tasks replaced to serve the new model.
    let retrained = xtask_on(
        &engine,
        stack.path(),
        &["--runtime", "swarm", "retrain", "bankchurn", "--seed", "7"],
    );
    assert!(retrained.status.success(), "{}", stderr(&retrained));
    let served = common::current_version(&stack.path().join("models/bankchurn"));
    let health = ureq::get(&url)
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(health.contains(&served), "{health} does not serve {served}");

    // A deploy whose new tasks never become healthy: telecom's image pushed as bankchurn's,
    // where it refuses bankchurn's model. The swarm rolls the update back; the command says
    // so and fails, and the recorded image serves again.
    let mut broken = record_json.clone();
    let images = broken["images"].as_array_mut().unwrap();
    let recorded = |service: &str| {
        images
            .iter()
            .find(|i| i["service"] == service)
            .unwrap()
            .clone()
    };
    let (telecom, bankchurn) = (recorded("telecom"), recorded("bankchurn"));
    let impostor = format!("{pushed_to}/ml-mlops/bankchurn:impostor-{TAG}");
    for args in [
        &["tag", telecom["tag"].as_str().unwrap(), &impostor][..],
        &["push", &impostor][..],
    ] {
        let out = docker(args);
        assert!(out.status.success(), "docker {args:?}: {}", stderr(&out));
    }
    for image in images.iter_mut().filter(|i| i["service"] == "bankchurn") {
        image["digest"] = telecom["digest"].clone();
    }
    let broken_record = stack.path().join("release-broken.json");
    std::fs::write(&broken_record, broken.to_string()).unwrap();
    let mut broken_deploy = deploy;
    broken_deploy[3] = broken_record.to_str().unwrap();
    // Under load too: a task without its model does not listen on the shared port, so the
    // old task answers every request while the new one fails and the update is rolled back.
    let load = Load::start(&url);
    let started = Instant::now();
    let failed = xtask_on(&engine, stack.path(), &broken_deploy);
    let took = started.elapsed();
    let report = load.finish();
    assert!(
        !failed.status.success(),
        "a deploy that never gets healthy succeeded"
    );
    let why = stderr(&failed);
    assert!(
        why.contains("ml-mlops_bankchurn failed and the swarm rolled it back"),
        "{why}"
    );
    eprintln!(
        "MEASURED: a deploy whose new task never became healthy was rolled back and reported in {:.1}s, under a paced load: {} requests sent, {} failed",
        took.as_secs_f64(),
        report.sent,
        report.failed
    );
    assert_eq!(
        report.failed, 0,
        "requests failed during the failed update: {report:?}"
    );
    let spec = engine.docker(&[
        "service",
        "inspect",
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        "ml-mlops_bankchurn",
    ]);
    assert!(
        stdout(&spec)
            .trim()
            .ends_with(bankchurn["digest"].as_str().unwrap()),
        "{}",
        stdout(&spec)
    );
    common::wait_for(
        "bankchurn to answer healthy after the rollback",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || healthy(&url).then_some(()),
    );

    let down = xtask_on(&engine, stack.path(), &["--runtime", "swarm", "down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    let left = engine.docker(&["service", "ls", "--quiet"]);
    assert_eq!(stdout(&left).trim(), "", "services left after down");
    let networks = engine.docker(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        !stdout(&networks).contains("ml-mlops-network"),
        "{}",
        stdout(&networks)
    );

    // MLflow on PostgreSQL: a cluster on this machine, at the host's end of the link.
    on_postgresql(&engine, link, &deploy, stack.path());

    // Two nodes: a second engine joins as a worker over a link of their own, the stack is
    // deployed across both, and the worker is lost.
    two_nodes_survive_losing_the_worker(&engine, &registry, link, &deploy, stack.path());
    // The engines, their namespaces and the registry go when dropped; so do the record and
    // tags.
}

/// The one-node swarm's stack deployed again with MLflow on a PostgreSQL cluster of this
/// machine, which listens at the host's end of the node's link (an address the node's
/// containers and the toolkit in the node's namespace both reach) and admits the node's
/// address, where the node's traffic leaves it (masqueraded). A loopback URI is refused; the
/// stack file holds the URI without the password; a retrained model is registered in the
/// database; backup, the database lost, restore, down.
fn on_postgresql(engine: &NetnsEngine, link: Link, deploy: &[&str], stack_dir: &Path) {
    let phase = Instant::now();
    let host = link.host.to_string();
    let node = format!("{}/32", link.engine);
    let cluster = match PostgresCluster::start_admitting(&[&host], &[&node]) {
        Ok(cluster) => cluster,
        Err(why) => return common::skip(why),
    };
    let uri = cluster.uri_at(&host);
    // In the environment, not the arguments: the test's log shows those.
    let xtask = |uri: &str, args: &[&str]| {
        let mut command = engine.command(env!("CARGO_BIN_EXE_xtask"));
        command.env_remove("XTASK_PORT_OFFSET");
        let output = common::run_xtask(
            command,
            &repo(),
            args,
            &[
                ("XTASK_STACK_DIR", stack_dir),
                ("XTASK_MLFLOW_BACKEND", Path::new(uri)),
            ],
        );
        for text in [stdout(&output), stderr(&output)] {
            assert!(!text.contains(cluster.password), "{text}");
        }
        output
    };
    let swarm = |args: &[&str]| {
        let mut full = vec!["--runtime", "swarm"];
        full.extend_from_slice(args);
        xtask(&uri, &full)
    };

    let loopback = xtask(&cluster.uri(), deploy);
    assert!(!loopback.status.success(), "a loopback database deployed");
    assert!(
        stderr(&loopback).contains("an address every node"),
        "{}",
        stderr(&loopback)
    );

    let started = Instant::now();
    let deployed = xtask(&uri, deploy);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    eprintln!(
        "MEASURED: deploy swarm with MLflow on PostgreSQL to healthy and smoke-checked in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let file = std::fs::read_to_string(stack_dir.join(".xtask/swarm/stack.yml")).unwrap();
    assert!(
        file.contains(&format!(
            "postgresql://postgres@{host}:{}/mlflow",
            cluster.port
        )) && file.contains("PGPASSWORD: ${PGPASSWORD:-}")
            && !file.contains(cluster.password),
        "{file}"
    );
    // `docker stack deploy` filled the password in from its environment.
    let env = engine.docker(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
        "ml-mlops_mlflow",
    ]);
    assert!(
        stdout(&env).contains(&format!("PGPASSWORD={}", cluster.password)),
        "{}",
        stdout(&env)
    );
    for args in [&["status"][..], &["health"][..], &["smoke"][..]] {
        let out = swarm(args);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // A run tracked and a model registered, in PostgreSQL.
    let retrained = swarm(&["retrain", "bankchurn", "--seed", "11", "--register-model"]);
    assert!(retrained.status.success(), "{}", stderr(&retrained));
    let registry =
        || cluster.query("SELECT name, version FROM model_versions ORDER BY name, version::int");
    let registered = registry();
    assert!(
        !registered.trim().is_empty(),
        "no model version in PostgreSQL"
    );
    let runs = cluster.query("SELECT count(*) FROM runs");
    assert_ne!(runs.trim(), "0", "no run in PostgreSQL");

    let archive = stack_dir.join("pg-backup.tar.gz");
    let backup = swarm(&["backup", "--out", archive.to_str().unwrap()]);
    assert!(backup.status.success(), "{}", stderr(&backup));
    // The database lost: the stack down, the database dropped and made again, empty.
    let down = swarm(&["down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    cluster.database("dropdb");
    cluster.database("createdb");
    let started = Instant::now();
    let restore = swarm(&["restore", archive.to_str().unwrap(), "--yes"]);
    assert!(restore.status.success(), "{}", stderr(&restore));
    eprintln!(
        "MEASURED: restore of the PostgreSQL store to a healthy swarm stack in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // The backed-up registry is back; coming up, the stack registers the models it lacked
    // (those trained before, under the SQLite store).
    let restored = registry();
    for version in registered.lines() {
        assert!(
            restored.lines().any(|l| l == version),
            "{version} lost in the restore: {restored}"
        );
    }
    let runs_now: u64 = cluster
        .query("SELECT count(*) FROM runs")
        .trim()
        .parse()
        .unwrap();
    assert!(
        runs_now >= runs.trim().parse().unwrap(),
        "runs lost: {runs_now}"
    );
    let health = swarm(&["health"]);
    assert!(health.status.success(), "{}", stderr(&health));

    let down = swarm(&["down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    let left = engine.docker(&["service", "ls", "--quiet"]);
    assert_eq!(stdout(&left).trim(), "", "services left after down");
    eprintln!(
        "MEASURED: the PostgreSQL phase (cluster, refusal, deploy, retrain, backup, restore, down) in {:.1}s",
        phase.elapsed().as_secs_f64()
    );
}

/// A veth pair between two engines' namespaces, `10.214.X.1` and `.2`; it goes with them.
fn link_namespaces(a: &NetnsEngine, b: &NetnsEngine) -> (String, String) {
    let block = std::process::id() % 16_000;
    let (a_addr, b_addr) = (
        format!("10.{}.{}.1", 214 + block / 4000, (block % 4000) / 16),
        format!("10.{}.{}.2", 214 + block / 4000, (block % 4000) / 16),
    );
    let (a_end, b_end) = (format!("xs{block}a"), format!("xs{block}b"));
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
    };
    ip(&[
        "link", "add", &a_end, "type", "veth", "peer", "name", &b_end,
    ]);
    ip(&["link", "set", &a_end, "netns", &a.netns]);
    ip(&["link", "set", &b_end, "netns", &b.netns]);
    for (engine, end, addr) in [(a, &a_end, &a_addr), (b, &b_end, &b_addr)] {
        ip(&[
            "-n",
            &engine.netns,
            "addr",
            "add",
            &format!("{addr}/30"),
            "dev",
            end,
        ]);
        ip(&["-n", &engine.netns, "link", "set", end, "up"]);
    }
    (a_addr, b_addr)
}

/// Whether the swarm has seen the worker go, runs all `tasks` of the stack healthy on the
/// manager, and `health` passes there. (Until the manager notices, it still counts the lost
/// node's tasks as running: `health` alone would pass at once.)
fn node_loss_recovered(manager: &NetnsEngine, stack_dir: &Path, tasks: usize) -> bool {
    let worker = manager.docker(&[
        "node",
        "ls",
        "--filter",
        "role=worker",
        "--format",
        "{{.Status}}",
    ]);
    if stdout(&worker).trim() != "Down" {
        return false;
    }
    let healthy = manager.docker(&[
        "ps",
        "--quiet",
        "--filter",
        "label=com.docker.stack.namespace=ml-mlops",
        "--filter",
        "health=healthy",
    ]);
    if stdout(&healthy).lines().count() < tasks {
        return false;
    }
    let out = xtask_on(manager, stack_dir, &["--runtime", "swarm", "health"]);
    out.status.success()
}

fn two_nodes_survive_losing_the_worker(
    manager: &NetnsEngine,
    registry: &Registry,
    manager_link: Link,
    deploy: &[&str],
    stack_dir: &Path,
) {
    let leave = manager.docker(&["swarm", "leave", "--force"]);
    assert!(leave.status.success(), "{}", stderr(&leave));
    let link = Link::private(1);
    let mut options = Options::machine().with_link(link);
    options
        .daemon_config
        .insert("insecure-registries".into(), serde_json::json!([deploy[5]]));
    let Some(worker) = NetnsEngine::start_or_skip(options) else {
        return;
    };
    // The images name the registry at the host's end of the manager's link, where the worker
    // has no route (its namespace knows its own link and the manager's only): every pull
    // there failed, the swarm moved the task to the manager, and the worker ended up with
    // nothing. The host answers for that address on the worker's link as well.
    let before = Command::new("ip")
        .args(["-n", &worker.netns, "route", "get"])
        .arg(manager_link.host.to_string())
        .output()
        .unwrap();
    eprintln!(
        "the registry's address from the worker, without a route of its own: {}{}",
        stdout(&before).trim(),
        stderr(&before).trim()
    );
    let route = Command::new("ip")
        .args(["-n", &worker.netns, "route", "add"])
        .arg(format!("{}/32", manager_link.host))
        .args(["via", &link.host.to_string()])
        .output()
        .unwrap();
    assert!(route.status.success(), "{}", stderr(&route));
    let (manager_addr, worker_addr) = link_namespaces(manager, &worker);
    let init = manager.docker(&["swarm", "init", "--advertise-addr", &manager_addr]);
    assert!(init.status.success(), "{}", stderr(&init));
    let token = manager.docker(&["swarm", "join-token", "--quiet", "worker"]);
    let joined = worker.docker(&[
        "swarm",
        "join",
        "--advertise-addr",
        &worker_addr,
        "--token",
        stdout(&token).trim(),
        &format!("{manager_addr}:2377"),
    ]);
    assert!(joined.status.success(), "{}", stderr(&joined));
    // The scheduler places tasks only on nodes it counts as ready: a deploy right after the
    // join can put every task on the manager.
    common::wait_for(
        "the worker to be ready in the swarm",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let nodes = manager.docker(&["node", "ls", "--format", "{{.Status}}"]);
            let ready = stdout(&nodes).lines().filter(|s| *s == "Ready").count();
            (ready == 2).then_some(())
        },
    );

    // Two tasks per API: the scheduler spreads a service's tasks over the nodes first, so
    // each node runs one of each (tasks sharing a node's port, once the worker is lost).
    let mut deploy = deploy.to_vec();
    let replicas = deploy.iter().position(|a| *a == "--replicas").unwrap() + 1;
    deploy[replicas] = "2";
    let started = Instant::now();
    let deployed = xtask_on(manager, stack_dir, &deploy);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    eprintln!(
        "MEASURED: deploy swarm on two nodes (2 tasks per API) to healthy and smoke-checked in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let placed = manager.docker(&[
        "stack",
        "ps",
        "--no-trunc",
        "--format",
        "{{.Name}} {{.Node}} {{.CurrentState}} {{.Error}}",
        "ml-mlops",
    ]);
    eprintln!("tasks:\n{}{}", stdout(&placed), stderr(&placed));
    let on_worker = worker.docker(&["ps", "--format", "{{.Names}}"]);
    let moved: Vec<String> = stdout(&on_worker).lines().map(str::to_owned).collect();
    eprintln!("tasks on the worker: {moved:?}");
    for api in ["bankchurn", "carvision", "telecom"] {
        assert!(
            moved
                .iter()
                .any(|t| t.starts_with(&format!("ml-mlops_{api}."))),
            "the worker runs no task of {api}: {moved:?}\n{}",
            stdout(&placed)
        );
    }
    assert!(
        !moved.iter().any(|t| t.starts_with("ml-mlops_mlflow")),
        "MLflow left the node holding its store"
    );
    // Something MLflow must keep: an experiment, made through its REST API on the manager.
    let created = manager
        .command("curl")
        .args(["-sf", "-X", "POST", "-H", "Content-Type: application/json"])
        .args(["-d", r#"{"name":"survives-node-loss"}"#])
        .arg("http://127.0.0.1:5000/api/2.0/mlflow/experiments/create")
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));

    // The worker is lost: its engine stops and its namespace goes.
    let lost_at = Instant::now();
    drop(worker);
    common::wait_for(
        "every service healthy on the manager again",
        Duration::from_secs(180),
        Duration::from_millis(500),
        || node_loss_recovered(manager, stack_dir, 1 + 3 * 2).then_some(()),
    );
    eprintln!(
        "MEASURED: node loss ({} task(s) on it) to the node seen down, its tasks replaced and every service healthy on the remaining node in {:.1}s",
        moved.len(),
        lost_at.elapsed().as_secs_f64()
    );
    let kept = manager
        .command("curl")
        .args(["-sf", "http://127.0.0.1:5000/api/2.0/mlflow/experiments/get-by-name?experiment_name=survives-node-loss"])
        .output()
        .unwrap();
    assert!(
        kept.status.success(),
        "MLflow lost the experiment: {}",
        stderr(&kept)
    );

    let down = xtask_on(manager, stack_dir, &["--runtime", "swarm", "down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    let _ = registry;
}
