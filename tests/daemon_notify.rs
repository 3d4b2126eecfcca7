//! The built binary under a fake service manager: readiness, status, watchdog and stopping
//! notifications on a `NOTIFY_SOCKET` the test owns, in front of the official Python SDK
//! server, with signals sent as systemd sends them.

mod support;

use http::{Method, StatusCode};
use support::{
    daemon_proc::{NotifySocket, PROC_WAIT, RelayProcess, addrs_of_ready_status, status_of},
    http::{Client, read_full},
    peers::Peer,
};

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"daemon-notify-test","version":"0"}}}"#;

fn listen_args(upstream: &str) -> Vec<String> {
    [
        "--upstream",
        upstream,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--log-target",
        "stderr",
        "--shutdown-grace-secs",
        "2",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test]
async fn ready_comes_once_every_listener_accepts_and_stopping_at_sigterm_then_a_clean_exit() {
    let upstream = Peer::py_server(&[]).await;
    let mut notify = NotifySocket::bind();
    let args = listen_args(&upstream.url());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut relay = RelayProcess::spawn(&notify, &args, &[("RUST_LOG", "debug")]);

    let ready = notify.wait_for("READY=1", PROC_WAIT).await;
    let status = status_of(&ready).expect("READY=1 comes with a STATUS= line");
    let (data, admin, metrics) = addrs_of_ready_status(status);
    let metrics = metrics.expect("a metrics listener");

    // At READY=1 every listener already accepts, and each plane answers.
    for addr in [data, admin, metrics] {
        tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{addr} refused a connection after READY=1: {e}"));
    }
    let client = Client::new();
    let url = format!("http://{data}/mcp");
    let answer = client
        .post_read(
            &url,
            &[("authorization", "Bearer sekrit-token-0123456789")],
            INITIALIZE,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(answer.header("mcp-session-id").is_some());
    for path in ["healthz", "readyz"] {
        let answer = read_full(
            client
                .send(Method::GET, &format!("http://{metrics}/{path}"), &[], "")
                .await,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "/{path}");
    }

    relay.signal("TERM").await;
    let stopping = notify.wait_for("STOPPING=1", PROC_WAIT).await;
    assert!(
        status_of(&stopping).is_some_and(|s| s.starts_with("Draining")),
        "{stopping:?}"
    );
    let exit = relay.exit(PROC_WAIT).await;
    assert!(exit.success(), "clean exit after SIGTERM: {exit}");
    let log = relay.stderr();
    assert!(log.contains("mcp-relay stopped"), "{log}");
    assert!(
        !log.contains("sekrit-token"),
        "the Authorization header reached the log:\n{log}"
    );
    let stopped = notify.wait_for("STATUS=Stopped", PROC_WAIT).await;
    assert!(!stopped.contains("READY=1"));
}

#[tokio::test]
async fn watchdog_pings_arrive_when_the_unit_enables_the_watchdog() {
    let upstream = Peer::py_server(&[]).await;
    let mut notify = NotifySocket::bind();
    let args = listen_args(&upstream.url());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // 400 ms: the daemon pings every 200 ms.
    let mut relay = RelayProcess::spawn(&notify, &args, &[("WATCHDOG_USEC", "400000")]);
    notify.wait_for("READY=1", PROC_WAIT).await;
    notify.wait_for("WATCHDOG=1", PROC_WAIT).await;
    notify.wait_for("WATCHDOG=1", PROC_WAIT).await;
    relay.signal("INT").await;
    notify.wait_for("STOPPING=1", PROC_WAIT).await;
    assert!(relay.exit(PROC_WAIT).await.success());
}

#[tokio::test]
async fn a_bad_configuration_exits_with_status_2_before_readiness() {
    let mut notify = NotifySocket::bind();
    let mut relay = RelayProcess::spawn(&notify, &["--upstream", "ftp://tls.invalid/"], &[]);
    let exit = relay.exit(PROC_WAIT).await;
    assert_eq!(exit.code(), Some(2), "{}", relay.stderr());
    assert!(
        relay.stderr().contains("proxy.upstream"),
        "{}",
        relay.stderr()
    );
    // The process is gone: whatever it sent is queued on the socket, and READY=1 is not.
    let sent = notify.drain();
    assert!(!sent.iter().any(|m| m.contains("READY=1")), "{sent:?}");
}
