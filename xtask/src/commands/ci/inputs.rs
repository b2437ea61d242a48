//! What each pipeline step's result depends on: files of the repository (globs), the pinned
//! tools it runs (`xtask/tools.toml`), and facts of the machine the pipeline measures (the
//! Docker engine, the compose front-ends, the images, Trivy's database, the Rust toolchain).
//! `cargo xtask ci --changed` skips a step when all of them are as they were at its last pass.
//!
//! A step declared nowhere here has no inputs and is never skipped: a new step runs every
//! time until someone declares what it reads. What a declaration forgets, `--verify-skips`
//! finds (it reruns skipped steps at random and names the undeclared file that changed).

/// A fact of the machine a step's result depends on, measured when the pipeline starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fact {
    /// `rustc -vV` and `RUSTFLAGS`.
    Toolchain,
    /// The Docker engine's version, storage driver and image store (`docker info`).
    Engine,
    /// The compose front-ends installed and their versions.
    ComposeFrontends,
    /// The IDs of the stack's images in the engine (absent ones too): what a step consumes,
    /// or what it builds (a missing image makes `images` run again).
    Images,
    /// The date of Trivy's vulnerability database in the cache, or that it is due for an
    /// update (then the scan runs, and updates it).
    TrivyDb,
    /// Python 3's version (MLflow's virtual environment).
    Python,
    /// Today's date (UTC): for what the pipeline downloads afresh and cannot date itself
    /// (RustSec advisories, the crates.io index), so the step runs at least once a day.
    Day,
    /// The version a program prints (`PROGRAM --version`), for system packages a step uses.
    Program(&'static str),
}

impl Fact {
    /// The fact's name, as `--explain` shows it and the state records it.
    pub fn name(self) -> String {
        match self {
            Fact::Toolchain => "rust toolchain".into(),
            Fact::Engine => "docker engine".into(),
            Fact::ComposeFrontends => "compose front-ends".into(),
            Fact::Images => "image IDs".into(),
            Fact::TrivyDb => "trivy database".into(),
            Fact::Python => "python".into(),
            Fact::Day => "day".into(),
            Fact::Program(program) => format!("program {program}"),
        }
    }
}

/// What one step declares.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inputs {
    /// Globs over the repository's paths: `*` and `?` within one folder's name, `**` any
    /// number of folders.
    pub files: &'static [&'static [&'static str]],
    /// Names of `xtask/tools.toml`'s tools: their pins.
    pub tools: &'static [&'static str],
    pub facts: &'static [Fact],
}

impl Inputs {
    /// Whether the step declares anything at all; one that does not is never skipped.
    pub fn declared(&self) -> bool {
        !(self.files.is_empty() && self.tools.is_empty() && self.facts.is_empty())
    }

    pub fn globs(&self) -> impl Iterator<Item = &'static str> {
        self.files.iter().flat_map(|set| set.iter().copied())
    }
}

/// How cargo builds anything in the workspace: manifests, lock file, configuration.
const CARGO: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    ".cargo/**",
    "rust-toolchain",
    "rust-toolchain.toml",
    "clippy.toml",
    ".clippy.toml",
];
/// The toolkit's binary, which steps run as children: its sources, what it includes at
/// compile time, the crate it depends on, and the `service.toml` files it reads at start.
const XTASK_BINARY: &[&str] = &[
    "xtask/Cargo.toml",
    "xtask/src/**",
    "xtask/tools.toml",
    "xtask/tools.lock",
    "xtask/tests/fixtures/mlflow-schema.db",
    "services/mlflow-client/**",
    "services/*/service.toml",
];
/// What every end-to-end suite of the toolkit compiles besides its own file.
const XTASK_SUITES: &[&str] = &["xtask/tests/common/**", "xtask/tests/fixtures/**"];
/// Every service: the APIs, their shared library and test kit, the MLflow image recipe.
const SERVICES: &[&str] = &["services/**"];
/// The compose file the docker runtime runs.
const COMPOSE: &[&str] = &["compose/**"];
/// The scanners' policies.
const SCAN_POLICY: &[&str] = &["trivy.yaml", "trivy-secrets.yaml", ".trivyignore.yaml"];

/// One file.
macro_rules! file {
    ($path:literal) => {
        &[$path] as &[&str]
    };
}

/// The inputs `step` declares; nothing for a step not named here (never skipped).
pub fn inputs_of(step: &str) -> Inputs {
    use Fact::*;
    match step {
        "fmt" => Inputs {
            files: &[&["**/*.rs", "**/Cargo.toml", "rustfmt.toml", ".rustfmt.toml"]],
            tools: &[],
            facts: &[Toolchain],
        },
        "clippy" => Inputs {
            files: &[CARGO, &["xtask/**"], SERVICES],
            tools: &[],
            facts: &[Toolchain],
        },
        // The unit and integration tests also hold the README, the compose file, the
        // workflows and the policies against the code (the contract tests).
        "test" => Inputs {
            files: &[
                CARGO,
                &["xtask/**"],
                SERVICES,
                COMPOSE,
                // deploy/k8s: the committed render, checked against the stack.
                &["deploy/**"],
                SCAN_POLICY,
                file!("README.md"),
                &[".github/**", "deny.toml", ".gitignore"],
            ],
            tools: &[],
            facts: &[Toolchain, Engine],
        },
        "add-a-service" => Inputs {
            files: &[CARGO, &["xtask/**"], SERVICES, COMPOSE, &["deploy/**"]],
            tools: &[],
            facts: &[Toolchain],
        },
        "lint-workflows" => Inputs {
            files: &[CARGO, XTASK_BINARY, &[".github/**"]],
            tools: &["actionlint", "zizmor", "check-jsonschema"],
            facts: &[Toolchain],
        },
        "deny" => Inputs {
            files: &[CARGO, XTASK_BINARY, &["**/Cargo.toml", "deny.toml"]],
            tools: &["cargo-deny"],
            facts: &[Toolchain, Day],
        },
        "fuzz-api" => Inputs {
            files: &[CARGO, XTASK_BINARY, SERVICES],
            tools: &["schemathesis"],
            facts: &[Toolchain, Python],
        },
        "images" => Inputs {
            files: &[CARGO, XTASK_BINARY, SERVICES, COMPOSE],
            tools: &[],
            facts: &[Toolchain, Engine, Images],
        },
        // The repository scan reads every file.
        "scan" => Inputs {
            files: &[&["**"]],
            tools: &["trivy", "hadolint"],
            facts: &[Toolchain, Engine, Images, TrivyDb],
        },
        "demo" => Inputs {
            files: &[CARGO, XTASK_BINARY, SERVICES, COMPOSE],
            tools: &[],
            facts: &[Toolchain, Engine, ComposeFrontends, Images],
        },
        "e2e-local" => Inputs {
            files: &[
                CARGO,
                XTASK_BINARY,
                XTASK_SUITES,
                SERVICES,
                file!("xtask/tests/e2e_local.rs"),
            ],
            tools: &[],
            facts: &[Toolchain, Python],
        },
        // Builds a copy of the workspace's sources, so every service's sources count.
        "e2e-dev" => Inputs {
            files: &[
                CARGO,
                XTASK_BINARY,
                XTASK_SUITES,
                SERVICES,
                file!("xtask/tests/dev_loop.rs"),
            ],
            tools: &[],
            facts: &[Toolchain],
        },
        "e2e-mlflow" => Inputs {
            files: &[
                CARGO,
                XTASK_BINARY,
                XTASK_SUITES,
                SERVICES,
                file!("xtask/tests/e2e_mlflow.rs"),
            ],
            tools: &[],
            facts: &[Toolchain, Python],
        },
        "e2e-drift" => Inputs {
            files: &[
                CARGO,
                XTASK_BINARY,
                XTASK_SUITES,
                SERVICES,
                file!("xtask/tests/e2e_drift.rs"),
            ],
            tools: &[],
            facts: &[Toolchain, Python],
        },
        // CarVision's own test: the other APIs are not in it.
        "e2e-dashboard" => Inputs {
            files: &[
                CARGO,
                &[
                    "services/carvision/**",
                    "services/serving/**",
                    "services/serving-testkit/**",
                    "services/mlflow-client/**",
                    "services/mlflow/service.toml",
                ],
            ],
            tools: &[],
            facts: &[Toolchain, Program("chromium"), Program("chromedriver")],
        },
        "e2e-upgrades" => Inputs {
            files: &[
                CARGO,
                XTASK_BINARY,
                XTASK_SUITES,
                file!("xtask/tests/upgrade_deps.rs"),
            ],
            tools: &["cargo-edit", "uv"],
            // The upgrades ask crates.io for what is new.
            facts: &[Toolchain, Day],
        },
        "e2e-docker-images" => Inputs {
            files: &[
                CARGO,
                XTASK_BINARY,
                XTASK_SUITES,
                SERVICES,
                COMPOSE,
                file!("xtask/tests/e2e_docker.rs"),
            ],
            tools: &[],
            facts: &[Toolchain, Engine],
        },
        docker if docker.starts_with("e2e-docker-") => Inputs {
            files: &[
                CARGO,
                XTASK_BINARY,
                XTASK_SUITES,
                SERVICES,
                COMPOSE,
                file!("xtask/tests/e2e_docker.rs"),
            ],
            tools: &[],
            facts: &[Toolchain, Engine, ComposeFrontends],
        },
        "e2e-fresh-machine" => Inputs {
            files: &[
                CARGO,
                XTASK_BINARY,
                XTASK_SUITES,
                SERVICES,
                COMPOSE,
                file!("xtask/tests/e2e_fresh_machine.rs"),
            ],
            tools: &[],
            facts: &[Toolchain, Engine, Python],
        },
        "e2e-scans" => Inputs {
            files: &[
                CARGO,
                XTASK_BINARY,
                XTASK_SUITES,
                SCAN_POLICY,
                file!("xtask/tests/scans.rs"),
            ],
            tools: &["trivy", "hadolint", "cargo-deny"],
            facts: &[Toolchain, Engine],
        },
        "e2e-release" => Inputs {
            files: &[
                CARGO,
                XTASK_BINARY,
                XTASK_SUITES,
                SERVICES,
                SCAN_POLICY,
                file!("xtask/tests/release.rs"),
            ],
            tools: &["trivy"],
            facts: &[Toolchain, Engine, Program("docker-registry")],
        },
        // The container suites on a second engine the tests start (from Debian trixie's
        // packages, cached): what they build, scan, run and release; this machine's engine
        // lends it the MLflow image's Python base. Its scan of the stack's images reads the
        // vulnerability database, as `scan` does.
        "e2e-engine-containerd" => Inputs {
            files: &[
                CARGO,
                XTASK_BINARY,
                XTASK_SUITES,
                SERVICES,
                COMPOSE,
                SCAN_POLICY,
                file!("xtask/tests/e2e_engine.rs"),
                file!("xtask/tests/release.rs"),
            ],
            tools: &["trivy"],
            facts: &[
                Toolchain,
                Engine,
                Python,
                Program("docker-registry"),
                TrivyDb,
            ],
        },
        // The render comes from the binary (service.toml files, the manifests' module); the
        // overlay case reads the committed one.
        "e2e-k8s" => Inputs {
            files: &[
                CARGO,
                XTASK_BINARY,
                XTASK_SUITES,
                SCAN_POLICY,
                &["deploy/**"],
                file!("xtask/tests/k8s_manifests.rs"),
            ],
            tools: &["kubernetes-validate", "trivy"],
            facts: &[Toolchain, Program("kubectl")],
        },
        "e2e-faults" => Inputs {
            files: &[
                CARGO,
                XTASK_BINARY,
                XTASK_SUITES,
                SERVICES,
                COMPOSE,
                &["xtask/tests/faults/**"],
            ],
            tools: &[],
            facts: &[Toolchain, Engine, Python],
        },
        // The demo's clean-up: skipped with the demo (and run whenever a step before it ran,
        // see `ci::Ci::run`).
        "down" => inputs_of("demo"),
        _ => Inputs::default(),
    }
}

/// Whether `path` (a repository path, `/`-separated) matches `glob`.
pub fn glob_matches(glob: &str, path: &str) -> bool {
    let pattern: Vec<&str> = glob.split('/').collect();
    let parts: Vec<&str> = path.split('/').collect();
    segments_match(&pattern, &parts)
}

fn segments_match(pattern: &[&str], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((&"**", rest)) => (0..=parts.len()).any(|skip| segments_match(rest, &parts[skip..])),
        Some((first, rest)) => parts.split_first().is_some_and(|(part, others)| {
            name_matches(first.as_bytes(), part.as_bytes()) && segments_match(rest, others)
        }),
    }
}

/// `*` and `?` within one name.
fn name_matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| name_matches(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && name_matches(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && name_matches(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pipeline's steps (one docker suite per compose front-end).
    const STEPS: &[&str] = &[
        "fmt",
        "clippy",
        "test",
        "add-a-service",
        "lint-workflows",
        "deny",
        "fuzz-api",
        "images",
        "scan",
        "demo",
        "e2e-local",
        "e2e-dev",
        "e2e-mlflow",
        "e2e-drift",
        "e2e-dashboard",
        "e2e-upgrades",
        "e2e-docker-images",
        "e2e-docker-plugin",
        "e2e-docker-legacy",
        "e2e-fresh-machine",
        "e2e-scans",
        "e2e-release",
        "e2e-engine-containerd",
        "e2e-k8s",
        "e2e-faults",
    ];

    #[test]
    fn globs_match_names_and_folders() {
        assert!(glob_matches("**/*.rs", "main.rs"));
        assert!(glob_matches("**/*.rs", "xtask/src/commands/ci.rs"));
        assert!(!glob_matches("**/*.rs", "xtask/src/ci.rsx"));
        assert!(glob_matches(
            "services/**",
            "services/bankchurn/src/main.rs"
        ));
        assert!(!glob_matches("services/**", "servicesx/a"));
        assert!(glob_matches(
            "services/*/service.toml",
            "services/telecom/service.toml"
        ));
        assert!(!glob_matches(
            "services/*/service.toml",
            "services/a/b/service.toml"
        ));
        assert!(glob_matches("rust-toolchain?toml", "rust-toolchain.toml"));
        assert!(glob_matches("**", "README.md"));
        assert!(!glob_matches("README.md", "docs/README.md"));
    }

    #[test]
    fn a_step_declared_nowhere_is_never_skipped() {
        assert!(!inputs_of("e2e-some-new-suite").declared());
        assert!(inputs_of("fmt").declared());
        assert!(inputs_of("e2e-docker-plugin")
            .facts
            .contains(&Fact::ComposeFrontends));
    }

    /// The steps a change to `path` reruns.
    fn steps_reading(path: &str) -> Vec<&'static str> {
        STEPS
            .iter()
            .copied()
            .filter(|step| inputs_of(step).globs().any(|glob| glob_matches(glob, path)))
            .collect()
    }

    #[test]
    fn a_change_reruns_only_the_steps_that_read_it() {
        assert_eq!(steps_reading("README.md"), ["test", "scan"]);
        assert_eq!(steps_reading("docs/operations.md"), ["scan"]);
        let bankchurn = steps_reading("services/bankchurn/src/lib.rs");
        let carvision = steps_reading("services/carvision/src/lib.rs");
        let shared = steps_reading("services/serving/src/lib.rs");
        eprintln!("a change to services/bankchurn/src/lib.rs reruns {bankchurn:?}");
        eprintln!("a change to services/serving/src/lib.rs reruns {shared:?}");
        for step in [
            "lint-workflows",
            "deny",
            "e2e-upgrades",
            "e2e-scans",
            "e2e-dashboard",
        ] {
            assert!(!bankchurn.contains(&step), "{step} reads bankchurn");
        }
        assert!(carvision.contains(&"e2e-dashboard"));
        assert!(shared.contains(&"e2e-dashboard"));
        for step in ["clippy", "test", "images", "scan", "demo", "e2e-mlflow"] {
            assert!(bankchurn.contains(&step), "{step} does not read bankchurn");
        }
        assert_eq!(
            steps_reading(".github/workflows/ci.yml"),
            ["test", "lint-workflows", "scan"]
        );
    }

    /// A glob that matches no file of the repository is a typo, or names a file that moved:
    /// the step would no longer see it change. Optional configuration files are the exception.
    #[test]
    fn every_declared_glob_matches_a_file_of_the_repository() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let mut files = Vec::new();
        collect(root, root, &mut files);
        let optional = [
            "rust-toolchain",
            "rust-toolchain.toml",
            "clippy.toml",
            ".clippy.toml",
            "rustfmt.toml",
            ".rustfmt.toml",
        ];
        for step in STEPS {
            for glob in inputs_of(step).globs() {
                assert!(
                    optional.contains(&glob) || files.iter().any(|f| glob_matches(glob, f)),
                    "step {step}: {glob} matches no file"
                );
            }
        }
    }

    fn collect(root: &std::path::Path, dir: &std::path::Path, files: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name == "target" || name == ".git" {
                continue;
            }
            if path.is_dir() {
                collect(root, &path, files);
            } else {
                files.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
}
