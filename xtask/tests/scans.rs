//! The scans with the real tools: cargo-deny, Trivy, hadolint, actionlint, zizmor and
//! check-jsonschema, installed at their pinned versions into the toolkit's cache (`cargo xtask
//! tools --install` first: the first install takes minutes, so these tests are ignored by
//! default and `.ci/run` runs them on purpose). Only Trivy's vulnerability database and the
//! RustSec advisory database come from the internet: an advisory database is made here, and
//! the vulnerability report format is covered by a fixture in the unit tests.
//!
//! Most tests build a small workspace of their own (the toolkit works on the workspace it is
//! run from): a planted token, a root Dockerfile, unhardened compose files, a crate under a
//! licence the policy refuses. The repository's own workflows and dependencies are checked by
//! the pipeline's `lint-workflows` and `deny` steps, not again here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{copy_dir, fake_github_token, repo, stderr, stdout, xtask_in, FixtureImage};

fn fixtures() -> PathBuf {
    repo().join("xtask/tests/fixtures")
}

/// Runs the real xtask binary in `dir` (the workspace it works on).
fn xtask(dir: &Path, args: &[&str]) -> Output {
    xtask_in(dir, args, &[])
}

/// The table row of `target` and `scanner`.
fn row<'a>(report: &'a str, target: &str, scanner: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(target) && l.contains(scanner))
        .unwrap_or_else(|| panic!("no row for {target} / {scanner}:\n{report}"))
}

/// A workspace of the test's own, with the repository's policy files (deny.toml, trivy.yaml)
/// and the stack's service.toml files, and a Rust workspace that breaks deny.toml.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // What makes a folder the toolkit's workspace.
        std::fs::create_dir_all(root.join("xtask")).unwrap();
        std::fs::write(
            root.join("xtask/Cargo.toml"),
            "# marks the workspace root\n",
        )
        .unwrap();
        for service in std::fs::read_dir(repo().join("services"))
            .unwrap()
            .flatten()
        {
            let toml = service.path().join("service.toml");
            if toml.is_file() {
                let to = root.join("services").join(service.file_name());
                std::fs::create_dir_all(&to).unwrap();
                std::fs::copy(toml, to.join("service.toml")).unwrap();
            }
        }
        for file in ["deny.toml", "trivy.yaml", "trivy-secrets.yaml"] {
            std::fs::copy(repo().join(file), root.join(file)).unwrap();
        }
        std::fs::write(root.join(".trivyignore.yaml"), "secrets: []\n").unwrap();
        copy_dir(&fixtures().join("deny-violations"), root);
        // A repository: the secret scan reads its tracked files (and its history).
        git(root, &["init", "--quiet", "--initial-branch", "main"]);
        let ws = Self { dir };
        ws.commit("the workspace");
        ws
    }

    /// Commits everything in the workspace.
    fn commit(&self, message: &str) {
        git(self.path(), &["add", "--all"]);
        git(
            self.path(),
            &["commit", "--quiet", "--allow-empty", "-m", message],
        );
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, file: &str, text: &str) {
        let path = self.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn plant_token(&self) {
        self.write(
            "src/settings.py",
            &format!(
                "# deploy settings\nGITHUB_TOKEN = \"{}\"\n",
                fake_github_token()
            ),
        );
        self.commit("settings");
    }

    fn ignore_token(&self, expires: &str) {
        self.write(
            ".trivyignore.yaml",
            &format!(
                "secrets:\n  - id: github-pat\n    paths: [\"src/settings.py\"]\n    expired_at: {expires}\n    statement: a revoked token kept for a migration test\n"
            ),
        );
    }
}

#[test]
fn tools_install_plans_every_pinned_version_into_the_cache_and_writes_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let empty = cache.path().join("cache");
    let output = xtask(
        &repo(),
        &[
            "--dry-run",
            "--cache-dir",
            empty.to_str().unwrap(),
            "tools",
            "--install",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let plan = stdout(&output);
    assert!(
        plan.contains("$ python3 -m venv $CACHE/python-tools"),
        "{plan}"
    );
    for pinned in [
        "--require-hashes --no-deps -r $CACHE/python-tools/tools.lock",
        "cargo install --locked --version 0.20.2 --config profile.release.opt-level=1 --config profile.release.lto=false --config profile.release.codegen-units=16 --root $CACHE/cargo-tools cargo-deny",
        "cargo install --locked --version 0.13.13 --config profile.release.opt-level=1 --config profile.release.lto=false --config profile.release.codegen-units=16 --root $CACHE/cargo-tools cargo-edit",
    ] {
        assert!(plan.contains(pinned), "{pinned} not planned:\n{plan}");
    }
    assert!(!empty.exists(), "a dry run wrote into the cache");
}

#[test]
fn a_tool_on_path_is_used_only_at_the_pinned_version_and_an_ignored_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = |name: &str, says: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho '{says}'\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    fake("hadolint", "Haskell Dockerfile Linter 2.15.1");
    fake("zizmor", "zizmor 1.0.0");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let empty_cache = dir.path().join("cache");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["--cache-dir", empty_cache.to_str().unwrap(), "tools"])
        .current_dir(repo())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let report = stdout(&output);
    let hadolint = row(&report, "hadolint", "2.15.1");
    assert!(
        hadolint.contains("(PATH copy of the pinned version)"),
        "{report}"
    );
    assert!(
        hadolint.contains(&bin.join("hadolint").display().to_string()),
        "{report}"
    );
    let zizmor = row(&report, "zizmor", "1.32.0");
    assert!(
        zizmor.contains("missing: installs on first use"),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "ignoring zizmor 1.0.0 on PATH ({}): not the pinned version, zizmor 1.32.0 is pinned",
            bin.join("zizmor").display()
        )),
        "{report}"
    );
}

#[test]
#[ignore = "runs the real cargo-deny"]
fn deny_names_a_disallowed_licence_and_a_wildcard_dependency() {
    let manifest = fixtures().join("deny-violations/Cargo.toml");
    let output = xtask(
        &repo(),
        &[
            "deny",
            "--offline",
            "--manifest-path",
            manifest.to_str().unwrap(),
        ],
    );
    assert!(!output.status.success(), "the fixture passed");
    let report = stdout(&output);
    let licence = report
        .lines()
        .find(|l| l.contains("licenses/rejected"))
        .unwrap_or_else(|| panic!("no licence finding:\n{report}"));
    assert!(licence.contains("gpl-helper 0.1.0"), "{licence}");
    assert!(licence.contains("GPL-3.0-only"), "{licence}");
    assert!(
        licence.contains("xtask/tests/fixtures/deny-violations/gpl-helper/Cargo.toml:5"),
        "{licence}"
    );
    let wildcard = report
        .lines()
        .find(|l| l.contains("bans/wildcard"))
        .unwrap_or_else(|| panic!("no wildcard finding:\n{report}"));
    assert!(
        wildcard.contains("xtask/tests/fixtures/deny-violations/Cargo.toml:13"),
        "{wildcard}"
    );
    assert!(report.contains("bans FAILED (1)"), "{report}");
    assert!(report.contains("licenses FAILED (1)"), "{report}");
    assert!(
        stderr(&output).contains("cargo xtask deny failed"),
        "{}",
        stderr(&output)
    );
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

/// deny.toml with the advisory database at `db_path`.
fn deny_config_with_db(dir: &Path, db_path: &Path) -> PathBuf {
    let policy = std::fs::read_to_string(repo().join("deny.toml")).unwrap();
    let config = policy.replacen(
        "[advisories]\n",
        &format!("[advisories]\ndb-path = \"{}\"\n", db_path.display()),
        1,
    );
    assert_ne!(config, policy, "deny.toml has no [advisories] table");
    let path = dir.join("deny.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
#[ignore = "runs the real cargo-deny"]
fn deny_reports_an_advisory_from_a_local_advisory_database() {
    let dir = tempfile::tempdir().unwrap();
    // RustSec's layout: a git clone named after the database's URL, one Markdown file per
    // advisory under crates/<crate>/, TOML front matter.
    let db = dir.path().join("advisory-dbs");
    let clone = db.join("advisory-db-3157b0e258782691");
    copy_dir(&fixtures().join("advisory-db"), &clone);
    git(&clone, &["init", "--quiet", "--initial-branch", "main"]);
    git(&clone, &["add", "."]);
    git(&clone, &["commit", "--quiet", "-m", "one advisory"]);
    let config = deny_config_with_db(dir.path(), &db);

    let output = xtask(&repo(), &["deny", "--config", config.to_str().unwrap()]);
    assert!(!output.status.success(), "the advisory was not reported");
    let report = stdout(&output);
    let line = report
        .lines()
        .find(|l| l.contains("advisories/RUSTSEC-2099-0001"))
        .unwrap_or_else(|| panic!("no advisory finding:\n{report}"));
    assert!(line.contains("humantime 2.4.0"), "{line}");
    assert!(line.contains("Cargo.lock:"), "{line}");
    assert!(report.contains("advisories FAILED (1)"), "{report}");
    // The clone has no remote: it cannot be updated, and the report says it used it as is.
    assert!(
        report.contains("could not be updated") && report.contains("local copy"),
        "{report}"
    );
}

#[test]
#[ignore = "runs the real cargo-deny"]
fn without_an_advisory_database_advisories_fail_only_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let config = deny_config_with_db(dir.path(), &dir.path().join("empty"));
    let config = config.to_str().unwrap();

    let relaxed = xtask(&repo(), &["deny", "--offline", "--config", config]);
    assert!(relaxed.status.success(), "{}", stderr(&relaxed));
    let report = stdout(&relaxed);
    assert!(report.contains("advisories NOT CHECKED"), "{report}");
    assert!(
        report
            .contains("advisories not checked: the RustSec advisory database could not be fetched"),
        "{report}"
    );

    let strict = xtask(
        &repo(),
        &[
            "deny",
            "--offline",
            "--require-advisories",
            "--config",
            config,
        ],
    );
    assert!(
        !strict.status.success(),
        "a missing database passed --require-advisories"
    );
    assert!(
        stdout(&strict).contains("✗ fail (required check skipped)"),
        "{}",
        stdout(&strict)
    );
}

#[test]
#[ignore = "runs the real Trivy, hadolint and cargo-deny"]
fn scan_finds_a_planted_token_a_root_dockerfile_an_unhardened_compose_file_and_a_bad_licence() {
    let ws = Workspace::new();
    ws.plant_token();
    copy_dir(
        &fixtures().join("dockerfiles/root-user"),
        &ws.path().join("docker"),
    );
    copy_dir(&fixtures().join("compose"), &ws.path().join("compose"));

    let summary = ws.path().join("summary.md");
    let output = xtask_in(
        ws.path(),
        &["scan", "--skip-images"],
        &[
            ("GITHUB_ACTIONS", Path::new("true")),
            ("GITHUB_STEP_SUMMARY", &summary),
        ],
    );
    assert!(!output.status.success(), "the scan passed");
    let report = stdout(&output);
    // Under GitHub Actions: annotations on the lines, and the table in the step summary.
    let annotations = stderr(&output);
    assert!(
        annotations.contains("::error file=src/settings.py,line=2,title=CRITICAL github-pat::"),
        "{annotations}"
    );
    assert!(
        annotations.contains("::error file=docker/Dockerfile,line=4,title=HIGH DS-0002::"),
        "{annotations}"
    );
    let markdown = std::fs::read_to_string(&summary).unwrap();
    assert!(
        markdown.contains("| tracked files | trivy secrets | 1 | 0 |"),
        "{markdown}"
    );

    let secrets = row(&report, "tracked files", "trivy secrets");
    assert!(secrets.contains("✗ fail"), "{secrets}");
    let token = report
        .lines()
        .find(|l| l.contains("github-pat"))
        .unwrap_or_else(|| panic!("the token was not reported:\n{report}"));
    assert!(token.starts_with("CRITICAL github-pat"), "{token}");
    assert!(token.contains("src/settings.py:2"), "{token}");
    assert!(
        !report.contains(&fake_github_token()),
        "the report shows the secret"
    );

    let root_user = report
        .lines()
        .find(|l| l.contains("DS-0002"))
        .unwrap_or_else(|| panic!("the root Dockerfile was not reported:\n{report}"));
    assert!(root_user.starts_with("HIGH DS-0002"), "{root_user}");
    assert!(root_user.contains("docker/Dockerfile:4"), "{root_user}");
    assert!(
        row(&report, "Dockerfiles", "hadolint").contains("✓ pass"),
        "{report}"
    );

    let unhardened = row(&report, "compose/unhardened.yml", "compose rule");
    assert!(unhardened.contains("✗ fail"), "{unhardened}");
    assert!(
        row(&report, "compose/hardened.yml", "compose rule").contains("✓ pass"),
        "{report}"
    );
    assert!(report.contains("compose-privileged"), "{report}");

    let deny = row(&report, "Rust dependencies", "cargo-deny");
    assert!(deny.contains("✗ fail (2 at HIGH or above)"), "{deny}");

    // Reports for people and for code scanning.
    let reports = ws.path().join("target/xtask/reports");
    for file in [
        "summary.json",
        "json/trivy-fs.json",
        "json/trivy-config.json",
        "sarif/trivy-fs.sarif",
        "sarif/trivy-secrets.sarif",
        "sarif/trivy-config.sarif",
        "sarif/hadolint.sarif",
        "sarif/compose.sarif",
        "sarif/cargo-deny.sarif",
    ] {
        assert!(reports.join(file).is_file(), "no {file}");
    }
    let sarif: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reports.join("sarif/trivy-secrets.sarif")).unwrap(),
    )
    .unwrap();
    assert_eq!(sarif["runs"][0]["results"][0]["ruleId"], "github-pat");
}

#[test]
#[ignore = "runs the real Trivy"]
fn an_ignore_entry_hides_its_finding_until_it_expires() {
    let ws = Workspace::new();
    ws.plant_token();

    ws.ignore_token("2999-12-31");
    let hidden = xtask(ws.path(), &["scan", "--skip-images"]);
    let report = stdout(&hidden);
    let fs = row(&report, "tracked files", "trivy secrets");
    assert!(fs.contains("✓ pass") && fs.contains("1 ignored"), "{fs}");

    ws.ignore_token("2020-01-31");
    let expired = xtask(ws.path(), &["scan", "--skip-images"]);
    assert!(!expired.status.success());
    let report = stdout(&expired);
    assert!(
        row(&report, "tracked files", "trivy secrets").contains("✗ fail"),
        "{report}"
    );
    assert!(
        report.contains("secrets github-pat expired on 2020-01-31: it no longer hides its finding"),
        "{report}"
    );

    // An entry without a reason is refused outright.
    ws.write(
        ".trivyignore.yaml",
        "secrets:\n  - id: github-pat\n    expired_at: 2999-12-31\n",
    );
    let refused = xtask(ws.path(), &["scan", "--skip-images"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("needs a `statement`"),
        "{}",
        stderr(&refused)
    );
}

#[test]
#[ignore = "runs the real Trivy"]
fn secrets_are_found_in_markdown_tests_fixtures_and_history_but_not_in_an_allowed_fake() {
    let ws = Workspace::new();
    let token = fake_github_token();
    let line = format!("GITHUB_TOKEN={token}\n");
    // Where Trivy's built-in allow rules or trivy.yaml's skip-dirs looked away.
    ws.write(
        "docs/setup.md",
        &format!("# Setup\n\n```sh\nexport {line}```\n"),
    );
    ws.write("services/api/tests/deploy.env", &line);
    ws.write("xtask/tests/fixtures/ci/deploy.env", &line);
    // A fake one on purpose, allowed by its path with a reason.
    ws.write("xtask/tests/fixtures/ci/fake.env", &line);
    let secrets_config = std::fs::read_to_string(repo().join("trivy-secrets.yaml"))
        .unwrap()
        .replace(
            "allow-rules: []",
            "allow-rules:\n  - id: fake-ci-token\n    description: a token made up for this test\n    path: '^xtask/tests/fixtures/ci/fake\\.env$'",
        );
    ws.write("trivy-secrets.yaml", &secrets_config);
    ws.commit("keys in three places");
    // Committed, then deleted: only the history has it.
    ws.write("deploy/old.env", &line);
    ws.commit("a key");
    std::fs::remove_file(ws.path().join("deploy/old.env")).unwrap();
    ws.commit("the key removed");

    let output = xtask(ws.path(), &["scan", "--secrets-only", "--history", "HEAD"]);
    assert!(!output.status.success(), "the scan passed");
    let report = stdout(&output);
    let found: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("github-pat"))
        .collect();
    for place in [
        "docs/setup.md:4",
        "services/api/tests/deploy.env:1",
        "xtask/tests/fixtures/ci/deploy.env:1",
        "deploy/old.env:1",
    ] {
        assert!(
            found.iter().any(|l| l.contains(place)),
            "{place} not reported:\n{report}"
        );
    }
    assert!(
        found.iter().any(|l| l.contains("deploy/old.env in commit")),
        "{report}"
    );
    assert!(
        !found.iter().any(|l| l.contains("fake.env")),
        "the allowed fake was reported:\n{report}"
    );
    assert!(!report.contains(&token), "the report shows the secret");
    for target in ["tracked files", "history HEAD"] {
        assert!(
            row(&report, target, "trivy secrets").contains("✗ fail"),
            "{target}:\n{report}"
        );
    }
    let err = stderr(&output);
    assert!(
        err.contains("Remove each secret found and rotate it"),
        "{err}"
    );
    assert!(!err.contains(".trivyignore.yaml"), "{err}");
}

/// Replaces the workspace's stack with two fixture services, named so no real image is
/// touched: an API and an MLflow. Returns their names.
fn fixture_stack(ws: &Workspace, tag: &str) -> (String, String) {
    let suffix = format!("{tag}{}", std::process::id());
    let api = format!("fixtureapi{suffix}");
    let mlflow = format!("fixturemlflow{suffix}");
    std::fs::remove_dir_all(ws.path().join("services")).unwrap();
    ws.write(
        &format!("services/{mlflow}/service.toml"),
        "title = \"MLflow\"\ncontainer = \"fixture-mlflow\"\nkind = \"mlflow\"\nhost_port = 5000\n\
         container_port = 5000\nhealth_path = \"/health\"\n\n[mlflow]\nversion = \"3.17.2\"\nschema_revision = \"dc11669786a5\"\n",
    );
    ws.write(
        &format!("services/{api}/service.toml"),
        &std::fs::read_to_string(repo().join("services/telecom/service.toml"))
            .unwrap()
            .replace("telecom-api", "fixture-api"),
    );
    (api, mlflow)
}

#[test]
#[ignore = "needs a Docker engine and runs the real Trivy"]
fn scan_saves_and_scans_each_image_and_names_the_missing_ones() {
    if !common::docker_answers() {
        return common::skip("no Docker engine answers");
    }
    let ws = Workspace::new();
    // The API's image holds a token; MLflow's is not built.
    let (api, mlflow) = fixture_stack(&ws, "scan");
    let image = format!("ml-mlops/{api}:1.0.0");
    let fixture = FixtureImage::new(
        &image,
        "app/config.env",
        &format!("GITHUB_TOKEN={}\n", fake_github_token()),
    );
    let output = xtask(ws.path(), &["scan"]);
    drop(fixture);
    assert!(!output.status.success());
    let report = stdout(&output);
    assert!(
        row(&report, "repository", "trivy fs").contains("✓ pass"),
        "{report}"
    );
    let scanned = row(&report, &image, "trivy image");
    assert!(scanned.contains("✗ fail"), "{scanned}");
    assert!(
        report.contains("CRITICAL github-pat GitHub Personal Access Token in /app/config.env")
            || report
                .contains("CRITICAL github-pat GitHub Personal Access Token in app/config.env"),
        "{report}"
    );
    let missing = row(&report, &format!("ml-mlops/{mlflow}:1.0.0"), "trivy image");
    assert!(missing.contains("✗ error"), "{missing}");
    assert!(
        report.contains("run `cargo xtask images` first"),
        "{report}"
    );
    let reports = ws.path().join("target/xtask/reports");
    assert!(reports
        .join(format!("json/trivy-image-{api}.json"))
        .is_file());
    assert!(reports.join("sarif/trivy-image.sarif").is_file());
}

#[test]
#[ignore = "needs a Docker engine and runs the real Trivy"]
fn sbom_writes_cyclonedx_for_each_image_and_for_the_workspace() {
    if !common::docker_answers() {
        return common::skip("no Docker engine answers");
    }
    let ws = Workspace::new();
    let (api, mlflow) = fixture_stack(&ws, "sbom");
    let _images: Vec<FixtureImage> = [&api, &mlflow]
        .iter()
        .map(|name| FixtureImage::new(&format!("ml-mlops/{name}:1.0.0"), "app/README", "hello\n"))
        .collect();
    let output = xtask(ws.path(), &["sbom"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = ws.path().join("target/xtask/reports/sbom");
    for name in [api.as_str(), mlflow.as_str(), "workspace"] {
        let path = dir.join(format!("{name}.cdx.json"));
        let sbom: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(sbom["bomFormat"], "CycloneDX", "{}", path.display());
    }
    let workspace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("workspace.cdx.json")).unwrap())
            .unwrap();
    let components = workspace["components"].as_array().unwrap();
    assert!(
        components.iter().any(|c| c["name"] == "anyhow"),
        "the workspace's crates are not listed"
    );
}

#[test]
#[ignore = "runs the real actionlint, zizmor and check-jsonschema"]
fn lint_workflows_names_what_is_wrong_with_a_workflow() {
    let ws = Workspace::new();
    ws.write(
        ".github/workflows/bad.yml",
        "name: bad\non:\n  pull_request_target:\njobs:\n  build:\n    runs-on: ubuntu-latest\n    \
         steps:\n      - uses: actions/checkout@v4\n        with:\n          ref: ${{ github.event.pull_request.head.sha }}\n      \
         - run: echo \"${{ github.event.pull_request.title }}\"\n      - run: cargo xtask no-such-command\n",
    );
    ws.write(
        ".github/workflows/schema.yml",
        "name: schema\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    stepz: []\n",
    );
    // A CI matrix that left a group of the pipeline out and names one it does not have.
    ws.write(
        ".github/workflows/ci.yml",
        "name: ci\non: push\npermissions: {}\njobs:\n  pipeline:\n    runs-on: ubuntu-latest\n    \
         strategy:\n      matrix:\n        group: [checks, tests, containers, nightly]\n    \
         steps:\n      - run: cargo xtask ci --steps \"${{ matrix.group }}\"\n",
    );
    let output = xtask(ws.path(), &["lint-workflows"]);
    assert!(!output.status.success());
    let report = stdout(&output);
    for scanner in [
        "actionlint",
        "zizmor",
        "check-jsonschema",
        "cargo xtask commands",
        "ci matrix = pipeline groups",
    ] {
        assert!(
            row(&report, ".github/workflows", scanner).contains("✗ fail"),
            "{scanner}:\n{report}"
        );
    }
    assert!(report.contains("zizmor/artipacked"), "{report}");
    assert!(report.contains(".github/workflows/bad.yml:"), "{report}");
    assert!(report.contains("'stepz' was unexpected"), "{report}");
    assert!(
        report.contains("unrecognized subcommand 'no-such-command'"),
        "{report}"
    );
    assert!(
        report.contains("`echo VALUE` is not a `cargo xtask` command"),
        "{report}"
    );
    assert!(
        report.contains("the pipeline's group `host` is not in the matrix"),
        "{report}"
    );
    assert!(
        report.contains("`nightly` in the matrix is no group of the pipeline"),
        "{report}"
    );
}

#[test]
#[ignore = "runs the real Trivy"]
fn the_vulnerability_report_fixture_is_in_trivys_own_format() {
    // Trivy reads it back: the parser's fixture is what Trivy itself writes.
    let tools = xtask(&repo(), &["tools", "--install"]);
    assert!(tools.status.success());
    let trivy = dirs_cache().join("python-tools/bin/trivy");
    let converted = Command::new(trivy)
        .args(["convert", "--format", "table", "--quiet"])
        .arg(fixtures().join("trivy/image-report.json"))
        .output()
        .unwrap();
    assert!(
        converted.status.success(),
        "{}",
        String::from_utf8_lossy(&converted.stderr)
    );
    let table = String::from_utf8_lossy(&converted.stdout);
    assert!(table.contains("CVE-2024-45491"), "{table}");
    assert!(
        table.contains("Total: 4 (UNKNOWN: 0, LOW: 1, MEDIUM: 1, HIGH: 1, CRITICAL: 1)"),
        "{table}"
    );
}

/// The toolkit's cache, as `Ctx` finds it.
fn dirs_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("XTASK_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap()
        .join("ml-mlops-xtask")
}
