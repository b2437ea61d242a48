//! The stack a campaign breaks: its services as `service.toml` describes them, on either
//! runtime, and what is left of it afterwards.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Output};

use serde_json::Value;

use crate::common::{self, docker_stdout, stderr, Stack};

pub const APIS: [&str; 3] = ["bankchurn", "carvision", "telecom"];

/// What the campaign needs of one service's `service.toml`.
pub struct ServiceInfo {
    pub container: String,
    pub host_port: u16,
    /// Every port it publishes: its own, and its dashboard's where it has one.
    pub ports: Vec<u16>,
    /// The smoke request: path and JSON body.
    pub smoke: Option<(String, Value)>,
}

pub fn service(name: &str) -> ServiceInfo {
    let path = common::repo()
        .join("services")
        .join(name)
        .join("service.toml");
    let table: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let smoke = table.get("smoke").map(|smoke| {
        (
            smoke["path"].as_str().unwrap().to_owned(),
            serde_json::to_value(&smoke["request"]).unwrap(),
        )
    });
    let port = |t: &toml::Table| u16::try_from(t["host_port"].as_integer().unwrap()).unwrap();
    let host_port = port(&table);
    let ports = std::iter::once(host_port)
        .chain(table.get("dashboard").and_then(|d| d.as_table()).map(port))
        .collect();
    ServiceInfo {
        container: table["container"].as_str().unwrap().to_owned(),
        host_port,
        ports,
        smoke,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Docker,
    Local,
}

/// One campaign's stack: a stack directory of its own, on the fixed ports (docker) or on
/// free ones (local).
pub struct Target {
    pub runtime: Runtime,
    pub stack: Stack,
}

impl Target {
    pub fn new(runtime: Runtime) -> Self {
        let mut stack = Stack::new();
        if runtime == Runtime::Docker {
            // The containers have fixed names, so their ports are the published ones.
            stack.port_offset = 0;
        }
        Self { runtime, stack }
    }

    pub fn name(&self) -> &'static str {
        match self.runtime {
            Runtime::Docker => "docker",
            Runtime::Local => "local",
        }
    }

    pub fn xtask(&self, args: &[&str]) -> Output {
        let mut full = vec!["--runtime", self.name()];
        full.extend_from_slice(args);
        self.stack.xtask(&full)
    }

    pub fn spawn_xtask(&self, args: &[&str]) -> Child {
        let mut full = vec!["--runtime", self.name()];
        full.extend_from_slice(args);
        self.stack.spawn_xtask(&full)
    }

    pub fn port(&self, name: &str) -> u16 {
        self.stack.port(service(name).host_port)
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port(name)))
    }

    pub fn model_dir(&self, api: &str) -> PathBuf {
        self.stack.path().join("models").join(api)
    }

    /// The host pid of the service's main process.
    pub fn pid(&self, name: &str) -> i32 {
        match self.runtime {
            Runtime::Docker => docker_stdout(&[
                "inspect",
                "--format",
                "{{.State.Pid}}",
                &service(name).container,
            ])
            .parse()
            .unwrap(),
            Runtime::Local => {
                let file = self.stack.path().join(format!(".xtask/run/{name}.pid"));
                std::fs::read_to_string(&file)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
                    .lines()
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            }
        }
    }

    /// SIGHUP to the service: `docker kill --signal HUP`, or to the local pid.
    pub fn hangup(&self, name: &str) {
        match self.runtime {
            Runtime::Docker => {
                docker_stdout(&["kill", "--signal", "HUP", &service(name).container]);
            }
            Runtime::Local => common::signal(self.pid(name), "HUP"),
        }
    }

    /// How often docker restarted the service's container (0 on the local runtime).
    pub fn restarts(&self, api: &str) -> u64 {
        match self.runtime {
            Runtime::Docker => docker_stdout(&[
                "inspect",
                "--format",
                "{{.RestartCount}}",
                &service(api).container,
            ])
            .parse()
            .unwrap_or(0),
            Runtime::Local => 0,
        }
    }

    /// Whether any container (docker) or process (local) of the stack is left.
    pub fn leftovers(&self) -> Vec<String> {
        match self.runtime {
            Runtime::Docker => stack_containers(),
            Runtime::Local => {
                let mut left: Vec<String> = self
                    .stack
                    .pids()
                    .into_iter()
                    .filter(|&pid| common::pid_alive(pid))
                    .map(|pid| format!("pid {pid}"))
                    .collect();
                for name in ["mlflow"].into_iter().chain(APIS) {
                    for base in service(name).ports {
                        let port = self.stack.port(base);
                        if !common::port_free(port) {
                            left.push(format!("port {port} ({name})"));
                        }
                    }
                }
                left
            }
        }
    }
}

/// Stops the stack whatever happened, so the campaign never leaves it running.
pub struct Teardown<'a>(pub &'a Target);

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        let down = self.0.xtask(&["down"]);
        if !down.status.success() {
            eprintln!("teardown: down failed:\n{}", stderr(&down));
        }
    }
}

/// The stack's containers that exist, running or not.
pub fn stack_containers() -> Vec<String> {
    ["mlflow"]
        .into_iter()
        .chain(APIS)
        .map(|name| service(name).container)
        .filter(|c| {
            !docker_stdout(&["ps", "--all", "--quiet", "--filter", &format!("name=^{c}$")])
                .is_empty()
        })
        .collect()
}
