//! The built `mcp-relay` binary as a child process, as systemd would run it: its own
//! `NOTIFY_SOCKET` (a Unix datagram socket the test reads), signals sent with `kill`, stderr
//! collected for assertions, and every wait bounded.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::UnixDatagram,
    process::{Child, Command},
};

/// Upper bound for any single wait on the daemon process; never a performance assertion.
pub const PROC_WAIT: Duration = Duration::from_secs(30);

/// A `NOTIFY_SOCKET` the test owns: a bound Unix datagram socket in a temporary directory.
pub struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
    /// Every message received so far, in order.
    pub received: Vec<String>,
}

impl NotifySocket {
    pub fn bind() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Self {
            _dir: dir,
            path,
            socket,
            received: Vec::new(),
        }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &PathBuf {
        &self.path
    }

    /// Receives messages until one has a line equal to `line` (e.g. `READY=1`); returns that
    /// message. Panics after `wait`.
    pub async fn wait_for(&mut self, line: &str, wait: Duration) -> String {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut buf = vec![0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no `{line}` within {wait:?}; received so far: {:?}",
                        self.received
                    )
                })
                .expect("read the notify socket");
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.received.push(message.clone());
            if message.lines().any(|l| l == line) {
                return message;
            }
        }
    }
}

impl NotifySocket {
    /// Every message queued now, without waiting.
    pub fn drain(&mut self) -> Vec<String> {
        let mut buf = vec![0u8; 4096];
        let mut out = Vec::new();
        while let Ok(n) = self.socket.try_recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.received.extend(out.iter().cloned());
        out
    }
}

/// The `STATUS=` line of a notification, if any.
pub fn status_of(message: &str) -> Option<&str> {
    message.lines().find_map(|l| l.strip_prefix("STATUS="))
}

/// The addresses in the readiness status `Serving MCP on <data> (admin <admin>, metrics
/// <metrics>)`.
pub fn addrs_of_ready_status(status: &str) -> (SocketAddr, SocketAddr, Option<SocketAddr>) {
    let rest = status
        .strip_prefix("Serving MCP on ")
        .unwrap_or_else(|| panic!("unexpected readiness status {status:?}"));
    let (data, rest) = rest
        .split_once(" (admin ")
        .expect("admin address in status");
    let (admin, rest) = rest
        .split_once(", metrics ")
        .expect("metrics address in status");
    let metrics = rest.trim_end_matches(')');
    (
        data.parse().expect("data address"),
        admin.parse().expect("admin address"),
        (metrics != "off").then(|| metrics.parse().expect("metrics address")),
    )
}

/// A running `mcp-relay` process; killed when dropped.
pub struct RelayProcess {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
}

impl RelayProcess {
    /// Runs `mcp-relay serve <args>` with `NOTIFY_SOCKET` set and extra `env`, its
    /// environment otherwise free of systemd's and mcp-relay's variables.
    pub fn spawn(notify: &NotifySocket, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-relay"));
        cmd.arg("serve").args(args);
        for (key, _) in std::env::vars() {
            if key.starts_with("MCP_RELAY_")
                || key.starts_with("LISTEN_")
                || key.starts_with("WATCHDOG_")
                || key == "JOURNAL_STREAM"
                || key == "RUST_LOG"
            {
                cmd.env_remove(key);
            }
        }
        cmd.env("NOTIFY_SOCKET", notify.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn mcp-relay");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let stderr_task = tokio::spawn({
            let stderr = stderr.clone();
            async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("mcp-relay: {line}");
                    let mut all = stderr.lock();
                    all.push_str(&line);
                    all.push('\n');
                }
            }
        });
        Self {
            child,
            stderr,
            stderr_task: Some(stderr_task),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("mcp-relay is running")
    }

    /// Sends `signal` (`TERM`, `INT`, …) with `kill`.
    pub async fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit and its stderr to be read to the end (panics after
    /// `wait`).
    pub async fn exit(&mut self, wait: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + wait;
        let status = tokio::time::timeout_at(deadline, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("mcp-relay did not exit within {wait:?}"))
            .expect("wait for mcp-relay");
        if let Some(task) = self.stderr_task.take() {
            tokio::time::timeout_at(deadline, task)
                .await
                .expect("mcp-relay's stderr closes when it exits")
                .expect("stderr reader");
        }
        status
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().clone()
    }
}
