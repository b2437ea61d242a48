//! Which processes run, and in which process group: read from `/proc` on Linux, from `ps`
//! elsewhere (macOS), so the local runtime's liveness checks work on both. Both readings are
//! compiled everywhere and tested against each other on Linux.

use std::path::Path;

use super::{Runner, Step};

/// One process, as much as the local runtime needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub pgid: u32,
    /// Exited but not yet reaped: holds no ports, and some init processes (in containers,
    /// sandboxes) are slow to reap them.
    pub zombie: bool,
    /// The command line, arguments separated by spaces.
    pub command: String,
}

impl Process {
    pub fn is_live(&self) -> bool {
        !self.zombie
    }
}

/// Every process, from `/proc`; `None` where there is no `/proc`.
pub fn from_procfs() -> Option<Vec<Process>> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let list: Vec<Process> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(procfs_process)
        .collect();
    (!list.is_empty()).then_some(list)
}

/// One process from `/proc/PID`, if it exists.
pub fn procfs_process(pid: u32) -> Option<Process> {
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // After the parenthesised command come: state, ppid, pgrp, ...
    let mut fields = stat.rsplit_once(") ")?.1.split_whitespace();
    let state = fields.next()?;
    let pgid = fields.nth(1)?.parse().ok()?;
    let raw = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let command = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Some(Process {
        pid,
        pgid,
        zombie: state == "Z",
        command,
    })
}

/// Parses `ps -A -o pid=,pgid=,stat=,command=`.
fn parse_ps(text: &str) -> Vec<Process> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let pid = words.next()?.parse().ok()?;
            let pgid = words.next()?.parse().ok()?;
            let stat = words.next()?;
            Some(Process {
                pid,
                pgid,
                zombie: stat.starts_with('Z'),
                command: words.collect::<Vec<_>>().join(" "),
            })
        })
        .collect()
}

impl Runner {
    /// Every process, from `ps` (the reading used where there is no `/proc`).
    pub fn processes_from_ps(&self) -> Vec<Process> {
        let ps = Step::new("ps").args(["-ww", "-A", "-o", "pid=,pgid=,stat=,command="]);
        self.query_stdout(&ps)
            .map(|text| parse_ps(&text))
            .unwrap_or_default()
    }

    pub fn processes(&self) -> Vec<Process> {
        if cfg!(target_os = "linux") {
            if let Some(list) = from_procfs() {
                return list;
            }
        }
        self.processes_from_ps()
    }

    /// The live process `pid`, if it runs `program` (pids get reused).
    pub fn running(&self, pid: u32, program: &str) -> Option<Process> {
        let process = if cfg!(target_os = "linux") && Path::new("/proc/self").exists() {
            procfs_process(pid)
        } else {
            self.processes_from_ps().into_iter().find(|p| p.pid == pid)
        }?;
        (process.is_live() && process.command.contains(program)).then_some(process)
    }

    /// Whether any live process remains in the process group `pgid`.
    pub fn group_alive(&self, pgid: u32) -> bool {
        self.processes()
            .iter()
            .any(|p| p.pgid == pgid && p.is_live())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_lines_parse() {
        let list = parse_ps("  1   1 Ss   /sbin/init splash\n 42  40 Z+   \n");
        assert_eq!(
            list,
            [
                Process {
                    pid: 1,
                    pgid: 1,
                    zombie: false,
                    command: "/sbin/init splash".into()
                },
                Process {
                    pid: 42,
                    pgid: 40,
                    zombie: true,
                    command: String::new()
                },
            ]
        );
    }

    #[test]
    fn procfs_and_ps_agree_on_this_process() {
        let me = std::process::id();
        let runner = Runner::for_tests();
        let from_ps = runner.processes_from_ps();
        let mine = from_ps.iter().find(|p| p.pid == me).expect("ps lists us");
        let pgid = rustix::process::getpgrp().as_raw_nonzero().get() as u32;
        assert_eq!(mine.pgid, pgid);
        assert!(mine.is_live());
        if let Some(procfs) = procfs_process(me) {
            assert_eq!(procfs.pgid, mine.pgid);
            assert_eq!(procfs.command, mine.command);
        }
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_string_lossy();
        assert!(runner.running(me, &name).is_some());
        assert!(runner.running(me, "no-such-program").is_none());
        assert!(runner.group_alive(pgid));
    }
}
