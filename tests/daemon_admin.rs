//! The control plane as configured, through the real binary: `--admin-socket` puts it on a Unix
//! socket, `MCP_RELAY_ADMIN_TOKEN` makes every call need the bearer token, and `check-config`
//! never prints the token.

mod support;

use std::{process::Stdio, time::Duration};

use support::peers::grpcurl;
use tokio::process::Command;

const TOKEN: &str = "s3cret-admin-token";

#[tokio::test]
async fn admin_socket_and_token_come_from_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("admin.sock");
    let mut relay = Command::new(env!("CARGO_BIN_EXE_mcp-relay"))
        .args(["serve", "--upstream", "http://127.0.0.1:9/mcp"])
        .args(["--listen", "127.0.0.1:0", "--no-metrics"])
        .arg("--admin-socket")
        .arg(&socket)
        .env("MCP_RELAY_ADMIN_TOKEN", TOKEN)
        .env_remove("MCP_RELAY_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mcp-relay");
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "control socket not up within 5 s");
    let addr = socket.to_str().expect("utf-8 path");
    let unix = ["-unix", "-authority", "localhost"];
    let auth = format!("authorization: Bearer {TOKEN}");

    let mut with_token = unix.to_vec();
    with_token.extend(["-H", auth.as_str(), "--", "list"]);
    let (ok, out, err) = grpcurl(addr, &with_token).await;
    assert!(ok, "with the token: {err}");
    assert!(out.contains("mcprelay.admin.v1.SessionService"), "{out}");

    let mut without = unix.to_vec();
    without.extend([
        "-d",
        "{}",
        "--",
        "mcprelay.admin.v1.SessionService/ListSessions",
    ]);
    let (ok, _, err) = grpcurl(addr, &without).await;
    assert!(
        !ok && err.contains("Unauthenticated"),
        "without the token: {err}"
    );

    let check = Command::new(env!("CARGO_BIN_EXE_mcp-relay"))
        .args(["check-config", "--upstream", "http://127.0.0.1:9/mcp"])
        .env("MCP_RELAY_ADMIN_TOKEN", TOKEN)
        .env_remove("MCP_RELAY_CONFIG")
        .output()
        .await
        .expect("check-config");
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{printed}");
    assert!(printed.contains("admin_token = \"********\""), "{printed}");
    assert!(!printed.contains(TOKEN));

    relay.start_kill().expect("stop mcp-relay");
    relay.wait().await.expect("wait");
}
