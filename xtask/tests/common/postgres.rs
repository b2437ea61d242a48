//! A throwaway PostgreSQL cluster (Debian's `postgresql`, or one on PATH) for the tests of
//! MLflow on PostgreSQL, on the local and the docker runtime.
#![allow(dead_code, clippy::disallowed_methods)]

/// A throwaway PostgreSQL cluster in a temporary folder, on a free port, run by the
/// `postgres` user when the test runs as root (PostgreSQL refuses root); stopped when dropped.
pub struct PostgresCluster {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    pub password: &'static str,
}

impl PostgresCluster {
    /// `None` (and the reason) when no PostgreSQL server is installed: Debian's newest under
    /// /usr/lib/postgresql (off PATH), else the one on PATH (Homebrew's, other systems').
    pub fn start() -> Result<Self, String> {
        Self::start_listening(&[])
    }

    /// As [`Self::start`], also listening on `addresses` (the docker bridge's gateway, where
    /// containers reach this machine) and admitting, with the password, connections from the
    /// networks Docker gives containers: its default address pools, 172.16.0.0/12 and
    /// 192.168.0.0/16. Docker hands them out in turn, freed or not, so after a dozen networks
    /// (a CI run makes more) a stack's network is in 192.168.0.0/16.
    pub fn start_listening(addresses: &[&str]) -> Result<Self, String> {
        let docker_networks: &[&str] = if addresses.is_empty() {
            &[]
        } else {
            &["172.16.0.0/12", "192.168.0.0/16"]
        };
        Self::start_admitting(addresses, docker_networks)
    }

    /// As [`Self::start`], also listening on `addresses` and admitting, with the password,
    /// connections from `networks` (CIDR: a swarm node's address, Docker's networks).
    pub fn start_admitting(addresses: &[&str], networks: &[&str]) -> Result<Self, String> {
        let debian = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
            .max();
        let on_path = || {
            let initdb = which::which("initdb").ok()?;
            let bin = initdb.parent()?.to_owned();
            bin.join("pg_ctl").is_file().then_some(bin)
        };
        let bin = debian.or_else(on_path).ok_or(
            "PostgreSQL is not installed: no initdb and pg_ctl under /usr/lib/postgresql or on \
             PATH (apt-get install postgresql)",
        )?;
        let dir = tempfile::tempdir().unwrap();
        let as_root = rustix::process::geteuid().is_root();
        if as_root {
            let chowned = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            if !chowned.success() {
                return Err(
                    "running as root, and there is no postgres user to run PostgreSQL as".into(),
                );
            }
        }
        // `@` and `:` in the password: the URI must carry it percent-encoded.
        let cluster = Self {
            bin,
            dir,
            port: super::free_port(),
            password: "s3cret@pg:x",
        };
        let pwfile = cluster.dir.path().join("pwfile");
        std::fs::write(&pwfile, cluster.password).unwrap();
        if as_root {
            std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pwfile)
                .status()
                .unwrap();
        }
        let data = cluster.dir.path().join("data");
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--pwfile",
                pwfile.to_str().unwrap(),
            ],
        );
        if !networks.is_empty() {
            let hba = data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).unwrap();
            for network in networks {
                text.push_str(&format!("host all all {network} scram-sha-256\n"));
            }
            std::fs::write(&hba, text).unwrap();
        }
        let listen = std::iter::once("127.0.0.1")
            .chain(addresses.iter().copied())
            .collect::<Vec<_>>()
            .join(",");
        let options = format!(
            "-p {} -k {} -c listen_addresses='{listen}'",
            cluster.port,
            cluster.dir.path().display()
        );
        let log = cluster.dir.path().join("log");
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        cluster.database("createdb");
        Ok(cluster)
    }

    /// The server's log, whose last lines say why a client was refused.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let status = if rustix::process::geteuid().is_root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .current_dir(self.dir.path())
                .status()
        } else {
            std::process::Command::new(&program).args(args).status()
        }
        .unwrap();
        assert!(status.success(), "{} {args:?} failed", program.display());
    }

    /// `createdb` or `dropdb` of the `mlflow` database, through the socket.
    pub fn database(&self, tool: &str) {
        let port = self.port.to_string();
        let socket = self.dir.path().to_str().unwrap().to_owned();
        self.run(
            tool,
            &["-h", &socket, "-p", &port, "-U", "postgres", "mlflow"],
        );
    }

    /// PostgreSQL's client `program` as this test's user, over TCP with the password.
    pub fn client(&self, program: &str, args: &[&str]) {
        let status = self.over_tcp(program).args(args).status().unwrap();
        assert!(status.success(), "{program} {args:?} failed");
    }

    /// `program` connecting as `postgres` to this cluster over TCP, with the password.
    fn over_tcp(&self, program: &str) -> std::process::Command {
        let mut command = std::process::Command::new(self.bin.join(program));
        command
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .env("PGPASSWORD", self.password);
        command
    }

    /// `psql`'s unaligned, tuples-only output of `sql` on the `mlflow` database, over TCP.
    pub fn query(&self, sql: &str) -> String {
        let out = self
            .over_tcp("psql")
            .args(["-d", "mlflow", "-At", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql -c {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The stack's `--mlflow-backend`: over TCP, with the password.
    pub fn uri(&self) -> String {
        self.uri_at("127.0.0.1")
    }

    /// The stack's `--mlflow-backend` with the server at `host`, one of its listen addresses.
    pub fn uri_at(&self, host: &str) -> String {
        format!(
            "postgresql://postgres:{}@{host}:{}/mlflow",
            self.password.replace('@', "%40").replace(':', "%3A"),
            self.port
        )
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }
}

/// A stack whose MLflow runs on `cluster`, driven through `xtask --runtime RUNTIME`.
pub struct OnPostgres<'a> {
    pub stack: &'a super::Stack,
    pub cluster: &'a PostgresCluster,
    pub runtime: &'static str,
}

impl OnPostgres<'_> {
    /// `xtask --runtime RUNTIME ARGS...` with `XTASK_MLFLOW_BACKEND` naming the cluster.
    pub fn xtask(&self, args: &[&str]) -> std::process::Output {
        let mut full = vec!["--runtime", self.runtime];
        full.extend_from_slice(args);
        let uri = self.cluster.uri();
        self.stack.xtask_with_env(
            &full,
            &[("XTASK_MLFLOW_BACKEND", std::path::Path::new(&uri))],
        )
    }

    /// Fails when `output` shows the password, or any part of it.
    pub fn never_shows_the_password(&self, output: &std::process::Output) {
        for text in [super::stdout(output), super::stderr(output)] {
            assert!(
                !text.contains(self.cluster.password) && !text.contains("s3cret"),
                "{text}"
            );
        }
    }

    /// The database lost and brought back: the stack down, the database dropped and made
    /// again, empty, then `restore` of `archive`; MLflow must show the same runs and
    /// registry as before.
    pub fn lose_then_restore(
        &self,
        archive: &std::path::Path,
        mlflow: &super::mlflow_api::Mlflow,
        runs: &std::collections::BTreeSet<String>,
        registry: &super::mlflow_api::Registry,
    ) {
        let down = self.xtask(&["down"]);
        assert!(down.status.success(), "{}", super::stderr(&down));
        self.cluster.database("dropdb");
        self.cluster.database("createdb");

        let started = std::time::Instant::now();
        let restore = self.xtask(&["restore", archive.to_str().unwrap(), "--yes"]);
        assert!(restore.status.success(), "{}", super::stderr(&restore));
        eprintln!(
            "MEASURED: restore of the PostgreSQL store to a healthy {} stack took {:.1?}",
            self.runtime,
            started.elapsed()
        );
        self.never_shows_the_password(&restore);
        assert_eq!(&mlflow.runs(), runs, "the runs differ after restore");
        assert_eq!(
            &mlflow.registry(),
            registry,
            "the registry differs after restore"
        );
    }
}
