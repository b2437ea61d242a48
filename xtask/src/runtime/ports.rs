//! Who holds a TCP port: the old runbook's `lsof -i :PORT`. Read straight from `/proc` on
//! Linux; elsewhere (macOS) asked of `lsof` itself.

use std::collections::HashSet;

use crate::ctx::Ctx;
use crate::runner::{Runner, Step};

/// A process listening on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.command, self.pid)
    }
}

/// Whether something listens on `port` on any local address (or keeps us from binding it).
pub fn in_use(port: u16) -> bool {
    !listening_inodes(port).is_empty() || std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
}

/// Socket inodes listening on `port`, from /proc/net/tcp and tcp6.
fn listening_inodes(port: u16) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT, st 0A is LISTEN, inode is field 9.
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let listening = *state == "0A";
            let on_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening && on_port {
                if let Ok(inode) = inode.parse() {
                    inodes.insert(inode);
                }
            }
        }
    }
    inodes
}

/// The pids listening on `port`, from `/proc`: the sockets' inodes, then which process holds
/// a file descriptor on one of them. `None` where there is no `/proc`.
fn listener_pids_from_procfs(port: u16) -> Option<Vec<u32>> {
    let procs = std::fs::read_dir("/proc").ok()?;
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return Some(Vec::new());
    }
    let pids = procs
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
            let holds = fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|target| {
                    target
                        .to_string_lossy()
                        .strip_prefix("socket:[")
                        .and_then(|rest| rest.strip_suffix(']'))
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| inodes.contains(&n))
                })
            });
            holds.then_some(pid)
        })
        .collect();
    Some(pids)
}

/// The pids listening on `port`, from `lsof` (the reading used where there is no `/proc`).
fn listener_pids_from_lsof(runner: &Runner, port: u16) -> Vec<u32> {
    let lsof = Step::new("lsof").args(["-nP", &format!("-iTCP:{port}"), "-sTCP:LISTEN", "-t"]);
    let mut pids: Vec<u32> = runner
        .query_stdout(&lsof)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The processes listening on `port`, as far as this user can see them.
pub fn holders(runner: &Runner, port: u16) -> Vec<Holder> {
    let pids = if cfg!(target_os = "linux") {
        listener_pids_from_procfs(port)
    } else {
        None
    }
    .unwrap_or_else(|| listener_pids_from_lsof(runner, port));
    if pids.is_empty() {
        return Vec::new();
    }
    let processes = runner.processes();
    pids.into_iter()
        .map(|pid| {
            let command = processes
                .iter()
                .find(|p| p.pid == pid)
                .map(|p| shorten(&p.command))
                .unwrap_or_default();
            Holder { pid, command }
        })
        .collect()
}

/// A command line, shortened for a report.
fn shorten(line: &str) -> String {
    if line.chars().count() > 100 {
        format!("{}…", line.chars().take(100).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// Names who holds `port`, and the container when the holder is Docker's port proxy.
pub fn describe(ctx: &Ctx, port: u16) -> String {
    describe_holders(ctx, port, &holders(&ctx.runner, port))
}

/// Like [`describe`], for holders already looked up.
pub fn describe_holders(ctx: &Ctx, port: u16, holders: &[Holder]) -> String {
    if holders.is_empty() {
        return format!("port {port} is in use (the holder is not visible from here)");
    }
    let names: Vec<String> = holders.iter().map(ToString::to_string).collect();
    let text = format!("port {port} is held by {}", names.join(", "));
    if !holders.iter().any(|h| h.command.contains("docker-proxy")) {
        return text;
    }
    let publishing = Step::new("docker").args([
        "ps",
        "--filter",
        &format!("publish={port}"),
        "--format",
        "{{.Names}}",
    ]);
    match ctx.runner.query_stdout(&publishing) {
        Some(names) if !names.is_empty() => {
            let names = names.split_whitespace().collect::<Vec<_>>().join(", ");
            format!("{text}, publishing container {names}")
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn names_this_process_as_the_holder_of_its_listener() {
        let runner = Runner::for_tests();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(in_use(port));
        // This process, and at most a child another test forks meanwhile, which holds the
        // socket from its fork to its exec.
        let holders = holders(&runner, port);
        let ours = holders.iter().find(|h| h.pid == std::process::id());
        assert!(ours.is_some_and(|h| !h.command.is_empty()), "{holders:?}");
        // The reading used on macOS finds the same process.
        if which::which("lsof").is_ok() {
            assert!(listener_pids_from_lsof(&runner, port).contains(&std::process::id()));
        }
        drop(listener);
        // Free once that child, if any, has exec'd and so closed its copy.
        let freed =
            crate::util::poll::until(Duration::from_secs(10), Duration::from_millis(10), || {
                (!in_use(port) && super::holders(&runner, port).is_empty()).then_some(())
            });
        assert!(
            freed.is_some(),
            "port {port} still held after its listener was dropped"
        );
    }
}
