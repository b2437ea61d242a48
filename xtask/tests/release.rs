//! `cargo xtask release` against a real registry on this machine: Debian's `docker-registry`
//! (the CNCF distribution registry) run as a process on a loopback port, its storage in a
//! temporary folder. The workspace released is `fixtures/release`: one small API built into
//! an image, then scanned by the real Trivy. Ignored by default (a Docker engine, the registry
//! and Trivy); `cargo xtask ci` runs them in its e2e step.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use common::netns_engine::{Link, NetnsEngine, Options};
use common::registry::{Listen, Registry};
use common::{
    docker, docker_answers, fake_github_token, repo, stderr, stdout, xtask_in, FixtureImage,
};

fn image_id(reference: &str) -> Option<String> {
    let out = docker(&["image", "inspect", "--format", "{{.Id}}", reference]);
    out.status.success().then(|| stdout(&out).trim().to_owned())
}

/// Runs the real xtask binary in `dir`, the workspace it works on.
fn xtask(dir: &Path, args: &[&str]) -> Output {
    xtask_in(dir, args, &[])
}

/// The fixture workspace with its service named `service` and built on `base`; every image
/// the test leaves under that name is removed when dropped.
struct Workspace {
    dir: tempfile::TempDir,
    service: String,
}

fn copy_templated(from: &Path, to: &Path, replace: &dyn Fn(&str) -> String) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = replace(&entry.file_name().to_string_lossy());
        let target = to.join(name);
        if entry.path().is_dir() {
            copy_templated(&entry.path(), &target, replace);
        } else {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            std::fs::write(target, replace(&text)).unwrap();
        }
    }
}

impl Workspace {
    fn new(name: &str, base: &str) -> Self {
        let service = format!("{name}{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let fill = |text: &str| {
            text.replace("{{service}}", &service)
                .replace("{{base}}", base)
        };
        copy_templated(
            &repo().join("xtask/tests/fixtures/release"),
            dir.path(),
            &fill,
        );
        for file in [
            "trivy.yaml",
            ".trivyignore.yaml",
            "services/mlflow/service.toml",
        ] {
            let to = dir.path().join(file);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(repo().join(file), to).unwrap();
        }
        Self { dir, service }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn image(&self) -> String {
        format!("ml-mlops/{}:1.0.0", self.service)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        // Every tag of the service's images (the version, the revision, the registry's),
        // also of an image loaded back from its archive after the built one was removed.
        // By ID: an image pulled back by digest has its repository but no tag.
        let repository = format!("ml-mlops/{}", self.service);
        let listed = docker(&["image", "ls", "--format", "{{.Repository}} {{.ID}}"]);
        for line in stdout(&listed).lines() {
            let Some((name, id)) = line.split_once(' ') else {
                continue;
            };
            if name == repository || name.ends_with(&format!("/{repository}")) {
                docker(&["image", "rm", "--force", id]);
            }
        }
    }
}

#[test]
fn malformed_registries_and_tags_are_refused_before_any_work() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["release", "--registry", "https://ghcr.io/org"],
            "without a scheme",
        ),
        (
            &[
                "release",
                "--registry",
                "ghcr.io/org",
                "--tag",
                "1.0.0+build",
            ],
            "not a valid image tag",
        ),
        (
            &["release", "--registry", "ghcr.io/org", "--tag", "v9.9.9"],
            "the images are built and labelled as version 1.0.0",
        ),
    ];
    for (args, reason) in cases {
        let output = xtask(&repo(), args);
        assert!(!output.status.success(), "{args:?} passed");
        assert!(
            stderr(&output).contains(reason),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn a_dry_run_plans_build_scan_tag_push_and_check() {
    if !docker_answers() {
        common::skip("no Docker engine answers");
        return;
    }
    let ws = Workspace::new("reldry", "scratch");
    let output = xtask(
        ws.path(),
        &[
            "--dry-run",
            "release",
            &ws.service,
            "--registry",
            "127.0.0.1:5999/Team",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let plan = stdout(&output);
    let target = format!("127.0.0.1:5999/team/ml-mlops/{}:1.0.0", ws.service);
    for step in [
        // `docker build`, or `docker buildx build --load ...` where BuildKit's plugin is here.
        format!("--tag {}", ws.image()),
        "docker save --output".to_owned(),
        "trivy image --cache-dir".to_owned(),
        format!("docker tag '<the ID of {}>' {target}", ws.image()),
        format!("docker push {target}"),
        format!("docker manifest inspect --verbose --insecure {target}"),
    ] {
        assert!(plan.contains(&step), "{step:?} is not planned:\n{plan}");
    }
    assert!(image_id(&ws.image()).is_none(), "a dry run built");
}

#[test]
#[ignore = "needs a Docker engine and docker-registry; runs the real Trivy"]
fn release_pushes_the_scanned_image_and_the_registry_serves_it_back_by_digest() {
    if !docker_answers() {
        common::skip("no Docker engine answers");
        return;
    }
    let Some(registry) = Registry::start(Listen::Loopback) else {
        return;
    };
    let ws = Workspace::new("relok", "scratch");
    // Capitals in the namespace, as a GitHub owner may have: lowercased.
    let namespace = "Release-Test";
    let started = Instant::now();
    let output = xtask(
        ws.path(),
        &[
            "release",
            &ws.service,
            "--registry",
            &format!("{}/{namespace}", registry.host()),
        ],
    );
    eprintln!("released in {:.1} s", started.elapsed().as_secs_f64());
    assert!(output.status.success(), "{}", stderr(&output));

    let built = image_id(&ws.image()).expect("the image was built");
    let repository = format!("{}/release-test/ml-mlops/{}", registry.host(), ws.service);
    let report = stdout(&output);
    let scanned = report
        .lines()
        .find(|l| l.contains("trivy image"))
        .unwrap_or_else(|| panic!("no scan row:\n{report}"));
    assert!(scanned.contains("✓ pass"), "{report}");
    assert!(
        scanned.contains(&built["sha256:".len()..][..12]),
        "{report}"
    );

    // The record: the image ID that was scanned, pushed under the default tag (the version).
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path().join("target/xtask/reports/release-1.0.0.json"))
            .unwrap(),
    )
    .unwrap();
    let pushed = &record["images"][0];
    assert_eq!(pushed["image_id"], built);
    assert_eq!(pushed["tag"], format!("{repository}:1.0.0"));
    let digest = pushed["digest"].as_str().unwrap().to_owned();
    let reference = format!("{repository}@{digest}");
    assert_eq!(pushed["reference"], reference);
    assert!(
        report.contains(&reference),
        "the digest is not printed:\n{report}"
    );

    // The registry's own answer for the tag is that digest.
    let (status, served, _) = registry
        .get(&format!(
            "/v2/release-test/ml-mlops/{}/manifests/1.0.0",
            ws.service
        ))
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(served.as_deref(), Some(digest.as_str()));

    // Without the local registry tag, a pull by digest brings back the very image.
    let untagged = docker(&["image", "rm", &format!("{repository}:1.0.0")]);
    assert!(untagged.status.success(), "{}", stderr(&untagged));
    let pulled = docker(&["pull", &reference]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    assert_eq!(image_id(&reference).as_deref(), Some(built.as_str()));

    // verify-release: the registry serves what the record says, and the checksums cover it.
    let record_file = ws.path().join("target/xtask/reports/release-1.0.0.json");
    let record_arg = record_file.to_str().unwrap();
    let verified = xtask(ws.path(), &["verify-release", record_arg, "--checksums"]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert!(
        stdout(&verified).contains("✓ served as recorded"),
        "{}",
        stdout(&verified)
    );
    let sums = std::fs::read_to_string(ws.path().join("target/xtask/reports/SHA256SUMS")).unwrap();
    assert!(sums.contains("  release-1.0.0.json\n"), "{sums}");

    // Something else pushed over the tag: verify-release names it and fails.
    let tag = format!("{repository}:1.0.0");
    let other = FixtureImage::new(&tag, "app/other", "not the release\n");
    let pushed = docker(&["push", &tag]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    drop(other);
    let moved = xtask(ws.path(), &["verify-release", record_arg]);
    assert!(!moved.status.success());
    assert!(
        stderr(&moved).contains("something was pushed over the tag"),
        "{}",
        stderr(&moved)
    );
}

/// The release workflow's two halves: build and scan with no registry, then push exactly the
/// scanned archives (loaded by ID), building and scanning nothing.
#[test]
#[ignore = "needs a Docker engine and docker-registry; runs the real Trivy"]
fn release_in_two_halves_pushes_exactly_what_was_scanned() {
    if !docker_answers() {
        return common::skip("no Docker engine answers");
    }
    let Some(registry) = Registry::start(Listen::Loopback) else {
        return;
    };
    let ws = Workspace::new("halves", "scratch");
    let scanned = xtask(ws.path(), &["release", &ws.service, "--scan-only"]);
    assert!(scanned.status.success(), "{}", stderr(&scanned));
    let built = image_id(&ws.image()).expect("the image was built");
    let handed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path().join("target/xtask/reports/release-scanned.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(handed["images"][0]["image_id"], built);
    // The second half loads the archive: the local image may be gone by then.
    let removed = docker(&["image", "rm", "--force", &ws.image()]);
    assert!(removed.status.success(), "{}", stderr(&removed));

    let pushed = xtask(
        ws.path(),
        &[
            "release",
            &ws.service,
            "--from-scanned",
            "--registry",
            &registry.host(),
        ],
    );
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    assert!(
        !stderr(&pushed).contains("trivy image"),
        "the second half scanned again:\n{}",
        stderr(&pushed)
    );
    let record_file = ws.path().join("target/xtask/reports/release-1.0.0.json");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record_file).unwrap()).unwrap();
    assert_eq!(record["images"][0]["image_id"], built);
    assert!(record["scans"].as_array().is_some_and(|s| !s.is_empty()));
    let verified = xtask(
        ws.path(),
        &["verify-release", record_file.to_str().unwrap()],
    );
    assert!(verified.status.success(), "{}", stderr(&verified));
}

#[test]
#[ignore = "needs a Docker engine and docker-registry; runs the real Trivy"]
fn an_image_that_fails_its_scan_stops_the_release_and_nothing_is_pushed() {
    if !docker_answers() {
        common::skip("no Docker engine answers");
        return;
    }
    let Some(registry) = Registry::start(Listen::Loopback) else {
        return;
    };
    // A base image with a token planted in it, built from scratch with `docker import`.
    let base = format!("xtask-release-test/planted{}:1", std::process::id());
    // Declared first, dropped last: the image built on it goes before it.
    let _base = FixtureImage::new(
        &base,
        "etc/deploy.env",
        &format!("GITHUB_TOKEN={}\n", fake_github_token()),
    );
    let ws = Workspace::new("relsecret", &base);

    let output = xtask(
        ws.path(),
        &[
            "release",
            &ws.service,
            "--registry",
            &format!("{}/team", registry.host()),
            "--tag",
            "1.0.0-rc.1",
        ],
    );
    assert!(!output.status.success(), "the release passed");
    let report = stdout(&output);
    assert!(
        report.contains("CRITICAL github-pat GitHub Personal Access Token"),
        "{report}"
    );
    assert!(
        !report.contains(&fake_github_token()),
        "the report shows the secret"
    );
    let log = stderr(&output);
    assert!(
        log.contains("refusing to push: nothing was pushed"),
        "{log}"
    );
    assert!(!log.contains("▶ push"), "a push was started:\n{log}");

    // Nothing reached the registry, and nothing was tagged for it.
    assert!(
        image_id(&ws.image()).is_some(),
        "the candidate was not built"
    );
    assert_eq!(registry.repositories(), Vec::<String>::new());
    let tagged = docker(&[
        "images",
        "--quiet",
        "--filter",
        &format!("reference={}/*/*/*", registry.host()),
    ]);
    assert_eq!(
        stdout(&tagged).trim(),
        "",
        "an image was tagged for the registry"
    );
}

/// What `tar` holds as `member`, parsed as JSON.
fn archive_member(tar: &Path, member: &str) -> serde_json::Value {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(tar)
        .arg(member)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {}", tar.display(), stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An image archive as an engine with the classic store writes one (`docker save` of Docker
/// 20.10: `manifest.json`, the configuration, one uncompressed layer), of `reference`: one
/// layer holding `/etc/base-release`.
fn classic_store_archive(dir: &Path, reference: &str) -> std::path::PathBuf {
    use sha2::{Digest, Sha256};
    let tar_of = |members: &[(&str, &[u8])]| {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, content) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *content).unwrap();
        }
        builder.into_inner().unwrap()
    };
    let layer = tar_of(&[("etc/base-release", b"a base with an uncompressed layer\n")]);
    let diff_id = format!("{:x}", Sha256::digest(&layer));
    let architecture = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    let config = serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    })
    .to_string();
    let config_name = format!("{:x}.json", Sha256::digest(config.as_bytes()));
    let layer_name = format!("{diff_id}/layer.tar");
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [reference],
        "Layers": [layer_name],
    }])
    .to_string();
    let archive = tar_of(&[
        (&config_name, config.as_bytes()),
        (&layer_name, &layer),
        ("manifest.json", manifest.as_bytes()),
    ]);
    let path = dir.join("classic-base.tar");
    std::fs::write(&path, archive).unwrap();
    path
}

/// On an engine like GitHub's (Docker with the containerd image store, images built with
/// BuildKit), where an image ID is its manifest's digest: the release pushes exactly the image
/// Trivy scanned, in one go and in two halves, and the registry serves that very manifest.
/// The image is built on a base loaded from an archive of the classic store, so that its
/// archive mixes an uncompressed layer (the base's, kept as loaded) with BuildKit's gzip one:
/// Trivy misreads such an archive as a whole ("invalid tar header"), and reads its OCI layout.
#[test]
#[ignore = "needs root, docker-registry and Debian trixie's engine; runs the real Trivy"]
fn release_on_the_containerd_store_pushes_exactly_the_scanned_image() {
    let link = Link::private(1);
    let Some(engine) = NetnsEngine::start_or_skip(Options::like_github().with_link(link)) else {
        return;
    };
    let Some(registry) = Registry::start(Listen::BesideEngine(&engine)) else {
        return;
    };
    let base = format!("relctd-base{}:1", std::process::id());
    let scratch = tempfile::tempdir().unwrap();
    let loaded = engine
        .docker_command(&["load", "--quiet", "--input"])
        .arg(classic_store_archive(scratch.path(), &base))
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", stderr(&loaded));
    let ws = Workspace::new("relctd", &base);
    let image_id = |reference: &str| {
        let out = engine.docker(&["image", "inspect", "--format", "{{.Id}}", reference]);
        out.status.success().then(|| stdout(&out).trim().to_owned())
    };
    // The first half where downloads work (Trivy, if not cached yet): built and scanned on
    // that engine, over its socket. The namespace has no way out.
    let started = Instant::now();
    let scanned = engine.xtask_outside(
        ws.path(),
        &["--verbose", "release", &ws.service, "--scan-only"],
    );
    assert!(scanned.status.success(), "{}", stderr(&scanned));
    // Where the client has BuildKit's plugin, images are built with it.
    let said = format!("{}{}", stdout(&scanned), stderr(&scanned));
    assert!(said.contains("docker buildx build --load"), "{said}");
    let built = image_id(&ws.image()).expect("the image was built");
    let handed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path().join("target/xtask/reports/release-scanned.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(handed["images"][0]["image_id"], built);

    // What Trivy scanned: the archive's manifest is the built image's, its configuration the
    // one recorded.
    let tar = ws
        .path()
        .join(format!("target/xtask/images/{}.tar", ws.service));
    let index = archive_member(&tar, "index.json");
    assert_eq!(index["manifests"][0]["digest"], built);
    let config = archive_member(&tar, "manifest.json")[0]["Config"]
        .as_str()
        .unwrap()
        .replace("blobs/sha256/", "sha256:");
    assert_eq!(handed["images"][0]["config"], config);
    assert_ne!(
        config, built,
        "on this store an ID is not the configuration's digest"
    );
    // The base's layer as it was loaded, uncompressed; the one BuildKit added, gzip.
    let manifest = archive_member(&tar, &format!("blobs/sha256/{}", &built["sha256:".len()..]));
    let media_types: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        media_types,
        [
            "application/vnd.docker.image.rootfs.diff.tar",
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        ],
        "not the mix of compressions this test is about"
    );
    // Trivy read the unpacked layout, which is removed after the scan; the archive stays.
    assert!(!tar.with_extension("oci").exists());

    // In one go, inside the namespace (the registry is on the engine's loopback).
    let released = engine.xtask_in(
        ws.path(),
        &["release", &ws.service, "--registry", &registry.host()],
    );
    assert!(released.status.success(), "{}", stderr(&released));
    eprintln!(
        "MEASURED: release on the containerd store (scan-only, then scan and push) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path().join("target/xtask/reports/release-1.0.0.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["image_store"], "containerd");
    let pushed = &record["images"][0];
    assert_eq!(pushed["image_id"], built);
    assert_eq!(pushed["config"], config);
    // The registry's digest is the scanned image's own manifest, its configuration the scanned.
    assert_eq!(pushed["digest"], built);
    let (status, served, body) = registry
        .get(&format!("/v2/ml-mlops/{}/manifests/1.0.0", ws.service))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(served.as_deref(), Some(built.as_str()));
    let manifest: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(manifest["config"]["digest"], config);

    let record_file = ws.path().join("target/xtask/reports/release-1.0.0.json");
    let verified = engine.xtask_in(
        ws.path(),
        &["verify-release", record_file.to_str().unwrap()],
    );
    assert!(verified.status.success(), "{}", stderr(&verified));

    // The second half alone: the scanned archive, loaded with the local image gone.
    let removed = engine.docker(&["image", "rm", "--force", &built]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    let halves = engine.xtask_in(
        ws.path(),
        &[
            "release",
            &ws.service,
            "--from-scanned",
            "--registry",
            &registry.host(),
        ],
    );
    assert!(halves.status.success(), "{}", stderr(&halves));
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record_file).unwrap()).unwrap();
    assert_eq!(again["images"][0]["digest"], built);
    assert_eq!(again["images"][0]["config"], config);
}
