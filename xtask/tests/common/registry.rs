//! Debian's `docker-registry` (the CNCF distribution registry) as a process on a free port,
//! its storage in a temporary folder: what `release` pushes to and deployments pull from in
//! the tests. Stopped, with its storage, when dropped.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::netns_engine::NetnsEngine;

/// Where the registry listens.
pub enum Listen<'a> {
    /// This machine's 127.0.0.1: Docker trusts it without TLS.
    Loopback,
    /// Every address of this machine: this engine pushes on loopback, the nodes of a swarm
    /// in other namespaces pull over their links.
    EveryAddress,
    /// In `engine`'s namespace on all its addresses: the engine pushes to its own 127.0.0.1,
    /// the test asks over the engine's link.
    BesideEngine(&'a NetnsEngine),
}

pub struct Registry {
    process: Child,
    pub port: u16,
    /// The address the test reaches it at: loopback, or the engine's end of its link.
    reach: Ipv4Addr,
    _storage: tempfile::TempDir,
}

impl Registry {
    /// `None` (after saying SKIPPED) when the `docker-registry` binary is not installed.
    pub fn start(listen: Listen) -> Option<Self> {
        let Ok(binary) = which::which("docker-registry") else {
            super::skip("docker-registry is not installed (apt-get install docker-registry)");
            return None;
        };
        let storage = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {listen}:{port}\n",
                storage.path().join("data").display(),
                listen = match listen {
                    Listen::Loopback => "127.0.0.1",
                    Listen::EveryAddress | Listen::BesideEngine(_) => "0.0.0.0",
                },
            ),
        )
        .unwrap();
        let (mut command, reach) = match listen {
            Listen::Loopback | Listen::EveryAddress => (Command::new(binary), Ipv4Addr::LOCALHOST),
            Listen::BesideEngine(engine) => (
                engine.command(binary),
                engine.options.link.expect("the engine has a link").engine,
            ),
        };
        let process = command
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Self {
            process,
            port,
            reach,
            _storage: storage,
        };
        super::wait_for(
            "the registry to answer",
            Duration::from_secs(15),
            Duration::from_millis(100),
            || registry.get("/v2/"),
        );
        Some(registry)
    }

    /// `127.0.0.1:PORT`, where this machine's engine (or the one beside it) pushes.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A GET on the registry's API: the status, the `Docker-Content-Digest` header and the
    /// body. `None` while nothing listens.
    pub fn get(&self, path: &str) -> Option<(u16, Option<String>, String)> {
        TcpStream::connect((self.reach, self.port)).ok()?;
        let response = ureq::get(format!("http://{}:{}{path}", self.reach, self.port))
            .header(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json, \
                 application/vnd.oci.image.manifest.v1+json",
            )
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .ok()?;
        let status = response.status().as_u16();
        let digest = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.into_body().read_to_string().unwrap_or_default();
        Some((status, digest, body))
    }

    pub fn repositories(&self) -> Vec<String> {
        let (_, _, body) = self.get("/v2/_catalog").unwrap();
        let catalog: serde_json::Value = serde_json::from_str(&body).unwrap();
        catalog["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
