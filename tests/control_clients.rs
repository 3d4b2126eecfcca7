//! The generated clients' own tests, against a live daemon: mcp-relay in front of the official
//! Python SDK server, its control plane on TCP (no token), and a second control plane over the
//! same sessions on a Unix socket with a bearer token. The Python client's pytest suite and the
//! TypeScript client's `node --test` suite get the addresses in `ADMIN_TEST_*`.

mod support;

use std::{path::Path, process::Stdio, time::Duration};

use support::{
    admin::UnixControl,
    peers::{Peer, python, repo_root},
    proxy_url, start_proxy,
};
use tokio::process::Command;

const TOKEN: &str = "client-test-token";
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `program args` in the repository root with the daemon's addresses; panics if it fails.
async fn run_suite(program: &Path, args: &[&str], env: &[(&str, String)]) {
    let mut cmd = Command::new(program);
    cmd.current_dir(repo_root())
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let status = tokio::time::timeout(SUITE_TIMEOUT, cmd.status())
        .await
        .unwrap_or_else(|_| panic!("{program:?} {args:?} timed out"))
        .unwrap_or_else(|e| panic!("spawn {program:?}: {e}"));
    assert!(
        status.success(),
        "{program:?} {args:?} failed ({status}); its output is above"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_typescript_clients_pass_against_a_live_daemon() {
    let server = Peer::py_server(&["--event-store"]).await;
    let proxy = start_proxy(&server.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("admin.sock");
    let unix = UnixControl::start(&socket, &proxy, Some(TOKEN));
    let env = [
        (
            "ADMIN_TEST_TARGET",
            proxy
                .admin_addr()
                .expect("the control plane listens on TCP")
                .to_string(),
        ),
        ("ADMIN_TEST_MCP_URL", proxy_url(&proxy)),
        ("ADMIN_TEST_SOCKET", socket.display().to_string()),
        ("ADMIN_TEST_TOKEN", TOKEN.to_owned()),
    ];

    run_suite(
        &python(),
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "clients/python",
        ],
        &env,
    )
    .await;

    let root = repo_root();
    let tsc = root.join("node_modules/.bin/tsc");
    assert!(tsc.exists(), "run `npm ci` (scripts/setup-peers.sh) first");
    run_suite(&tsc, &["-p", "clients/typescript"], &[]).await;
    run_suite(
        Path::new("node"),
        &[
            "--test",
            "--test-reporter=spec",
            "clients/typescript/dist/test/",
        ],
        &env,
    )
    .await;

    unix.stop().await;
    proxy.shutdown().await.expect("clean shutdown");
}
