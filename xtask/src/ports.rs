//! Who holds a TCP port: the old runbook's `lsof -i :PORT`, read straight from /proc.

use std::collections::HashSet;

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

/// Whether something listens on `port` on any local address.
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

/// The processes listening on `port`, if /proc lets us see them.
pub fn holders(port: u16) -> Vec<Holder> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                let target = target.to_string_lossy();
                target
                    .strip_prefix("socket:[")
                    .and_then(|rest| rest.strip_suffix(']'))
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| inodes.contains(&n))
            })
        });
        if holds {
            found.push(Holder {
                pid,
                command: command_line(pid),
            });
        }
    }
    found
}

/// A process's command line, shortened for a report.
pub fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let line = text.join(" ");
    if line.chars().count() > 100 {
        format!("{}…", line.chars().take(100).collect::<String>())
    } else if line.is_empty() {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    } else {
        line
    }
}

/// Names who holds `port`, and the container when the holder is Docker's port proxy.
pub fn describe(ctx: &crate::ctx::Ctx, port: u16) -> String {
    describe_holders(ctx, port, &holders(port))
}

/// Like [`describe`], for holders already looked up.
pub fn describe_holders(ctx: &crate::ctx::Ctx, port: u16, holders: &[Holder]) -> String {
    if holders.is_empty() {
        return format!("port {port} is in use (the holder is not visible from here)");
    }
    let names: Vec<String> = holders.iter().map(ToString::to_string).collect();
    let text = format!("port {port} is held by {}", names.join(", "));
    if !holders.iter().any(|h| h.command.contains("docker-proxy")) {
        return text;
    }
    let publishing = crate::runner::Step::new("docker").args([
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
    use super::*;

    #[test]
    fn names_this_process_as_the_holder_of_its_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(in_use(port));
        let holders = holders(port);
        assert_eq!(holders.len(), 1, "{holders:?}");
        assert_eq!(holders[0].pid, std::process::id());
        drop(listener);
        assert!(!in_use(port));
    }
}
