//! Child processes and what the harness reads about them from `/proc`: RSS (`VmRSS`) and open
//! descriptors. Every child is held by a [`ChildGuard`] that kills it (and, for nginx, its
//! workers) when dropped, so a failed or panicking run leaves nothing behind.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use crate::error::{Context as _, Result, bail};

/// A running child process, killed on drop.
pub struct ChildGuard {
    pub name: &'static str,
    child: Child,
    /// Where its stderr goes (shown when it fails).
    pub log: Option<PathBuf>,
    /// Ask it to stop with this signal first (nginx: TERM, so the master stops its workers).
    graceful: Option<&'static str>,
}

impl ChildGuard {
    pub fn new(name: &'static str, child: Child, log: Option<PathBuf>) -> Self {
        Self {
            name,
            child,
            log,
            graceful: None,
        }
    }

    pub fn graceful(mut self, signal: &'static str) -> Self {
        self.graceful = Some(signal);
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if it has exited, with the end of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited ({status}){}",
                self.name,
                self.log.as_deref().map(log_tail).unwrap_or_default()
            ),
            Err(e) => bail!("{}: waiting on it: {e}", self.name),
        }
    }

    /// Waits until `addr` accepts connections (or the child dies, or `limit` passes).
    pub async fn wait_listening(&mut self, addr: SocketAddr, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!(
                    "{} did not listen on {addr} within {} s{}",
                    self.name,
                    limit.as_secs(),
                    self.log.as_deref().map(log_tail).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id();
        // Its children (nginx workers) are found before the parent goes.
        let children = child_pids(pid);
        if let Some(signal) = self.graceful {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{signal}"), &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for c in children {
            if Path::new(&format!("/proc/{c}")).exists() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &c.to_string()])
                    .status();
            }
        }
    }
}

/// The last lines of a log file, as a suffix for an error message.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n    ");
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last lines of {}:\n    {tail}", path.display())
    }
}

#[path = "../shared/proc_status.rs"]
mod proc_status;
pub use proc_status::rss_bytes;

/// Open descriptors of a process.
pub fn fd_count(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// The processes whose parent is `pid` (nginx's workers).
pub fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            // /proc/<p>/stat: "pid (comm) state ppid …"; comm may contain spaces or ')'.
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// RSS and descriptors of a process and its children together (nginx master + workers).
pub fn tree_usage(pid: u32) -> (u64, u64) {
    let mut pids = vec![pid];
    pids.extend(child_pids(pid));
    pids.iter()
        .fold((0, 0), |(r, f), &p| (r + rss_bytes(p), f + fd_count(p)))
}

/// A port free on 127.0.0.1 right now (the child binds it a moment later).
pub fn free_addr() -> Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port on 127.0.0.1")
}

/// Runs a command and returns its trimmed stdout and stderr together (for version strings).
pub fn command_output(program: &str, args: &[&str]) -> String {
    match std::process::Command::new(program).args(args).output() {
        Ok(out) => {
            let mut s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let err = String::from_utf8_lossy(&out.stderr);
            if s.is_empty() {
                s = err.trim().to_owned();
            }
            s
        }
        Err(e) => format!("({program}: {e})"),
    }
}
