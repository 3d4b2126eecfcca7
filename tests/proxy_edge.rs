//! Limits at the edge (issue 11, item 4): what the proxy refuses before the upstream hears of a
//! request — a foreign `Host` (421), repeated singleton headers (400), an `Origin` that only
//! looks like loopback (403), an unknown `MCP-Protocol-Version` (400, -32022, nothing stored) —
//! and that its own error answers carry no internal text (which goes to the log instead).

mod support;

use http::StatusCode;
use mcp_relay::daemon::Daemon;
use support::{
    daemon_proc::{PROC_WAIT, RelayProcess},
    http::{Answer, Client},
    peers::Peer,
    proxy_url, start_proxy, start_proxy_with,
    upstream::{Reply, TestUpstream},
};

const LEGACY: &str = "2025-11-25";
const MODERN: &str = "2026-07-28";

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"proxy-edge-test","version":"0"}}}"#;
const INITIALIZE_RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"test-upstream","version":"0"}}}"#;
const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
const MODERN_CALL: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

async fn proxied() -> (TestUpstream, Daemon, String, Client) {
    let upstream = TestUpstream::start().await;
    let proxy = start_proxy(&upstream.url()).await;
    let url = proxy_url(&proxy);
    (upstream, proxy, url, Client::new())
}

fn error_code(answer: &Answer) -> i64 {
    answer.json()["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error.code in {:?}", answer.text()))
}

/// The upstream never received anything (it would have recorded the request first).
fn assert_untouched(upstream: &TestUpstream) {
    let seen = upstream.requests();
    assert!(seen.is_empty(), "the upstream saw {seen:?}");
}

#[tokio::test]
async fn a_foreign_host_gets_421_with_a_json_rpc_error_and_never_reaches_the_upstream() {
    let (upstream, _proxy, url, client) = proxied().await;
    for host in [
        "evil.example.com",
        "evil.example.com:8080",
        "localhost.evil.example.com",
        "127.0.0.1.nip.io",
    ] {
        let answer = client.post_read(&url, &[("host", host)], TOOLS_LIST).await;
        assert_eq!(
            answer.status,
            StatusCode::MISDIRECTED_REQUEST,
            "Host {host}"
        );
        assert_eq!(error_code(&answer), -32600, "Host {host}");
        assert_eq!(answer.json()["jsonrpc"], "2.0");
    }
    assert_untouched(&upstream);
}

#[tokio::test]
async fn the_python_sdk_servers_rebinding_check_is_not_bypassed_through_the_proxy() {
    let upstream = Peer::py_server(&[]).await;
    let client = Client::new();
    // The SDK server itself refuses a foreign Host (its DNS-rebinding protection) ...
    let direct = client
        .post_read(&upstream.url(), &[("host", "evil.example.com")], INITIALIZE)
        .await;
    assert!(
        direct.status.is_client_error(),
        "the SDK server answered {} to a foreign Host",
        direct.status
    );
    // ... and so does the proxy in front of it, which writes its own Host upstream.
    let proxy = start_proxy(&upstream.url()).await;
    let answer = client
        .post_read(
            &proxy_url(&proxy),
            &[("host", "evil.example.com")],
            INITIALIZE,
        )
        .await;
    assert_eq!(answer.status, StatusCode::MISDIRECTED_REQUEST);
    assert!(answer.header("mcp-session-id").is_none());
    assert!(proxy.manager().is_empty());
    // The Host the SDK clients send still works.
    let port = proxy.data_addr().port();
    let localhost = format!("localhost:{port}");
    let answer = client
        .post_read(&proxy_url(&proxy), &[("host", &localhost)], INITIALIZE)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

#[tokio::test]
async fn listed_hosts_and_star_are_allowed() {
    let upstream = TestUpstream::start().await;
    let listed = start_proxy_with(&upstream.url(), |c| {
        c.proxy.allowed_hosts = vec!["mcp.example.com".into(), "api.example.com:8443".into()];
    })
    .await;
    let client = Client::new();
    let url = proxy_url(&listed);
    for (host, status) in [
        ("MCP.Example.com:443", StatusCode::OK),
        ("api.example.com:8443", StatusCode::OK),
        ("127.0.0.1:9", StatusCode::OK),
        ("api.example.com:8444", StatusCode::MISDIRECTED_REQUEST),
        ("evil.example.com", StatusCode::MISDIRECTED_REQUEST),
    ] {
        if status == StatusCode::OK {
            upstream.push(Reply::json(
                r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[]}}"#,
            ));
        }
        let answer = client.post_read(&url, &[("host", host)], TOOLS_LIST).await;
        assert_eq!(answer.status, status, "Host {host}");
    }
    assert_eq!(upstream.requests().len(), 3);

    let any = start_proxy_with(&upstream.url(), |c| {
        c.proxy.allowed_hosts = vec!["*".into()]
    })
    .await;
    upstream.push(Reply::json(
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[]}}"#,
    ));
    let answer = client
        .post_read(
            &proxy_url(&any),
            &[("host", "anything.example")],
            TOOLS_LIST,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn repeated_singleton_headers_get_400_and_never_reach_the_upstream() {
    let (upstream, _proxy, url, client) = proxied().await;
    let cases: [&[(&str, &str)]; 4] = [
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-method", "tools/list"),
            ("mcp-name", "echo"),
        ],
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
            ("mcp-name", "rm-rf"),
        ],
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
            ("origin", "http://localhost:3000"),
            ("origin", "http://evil.example"),
        ],
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-protocol-version", MODERN),
        ],
    ];
    for headers in cases {
        let answer = client.post_read(&url, headers, MODERN_CALL).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{headers:?}");
        assert!(answer.json()["error"]["code"].is_i64(), "{headers:?}");
    }
    assert_untouched(&upstream);
}

#[tokio::test]
async fn an_origin_with_loopback_user_info_is_not_loopback_and_gets_403() {
    let (upstream, _proxy, url, client) = proxied().await;
    for origin in [
        "http://localhost:80@evil.com",
        "http://127.0.0.1@evil.com",
        "http://localhost.evil.com",
    ] {
        let answer = client
            .post_read(&url, &[("origin", origin)], TOOLS_LIST)
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "Origin {origin}");
    }
    assert_untouched(&upstream);
}

#[tokio::test]
async fn an_unknown_protocol_version_gets_400_unsupported_and_is_not_stored() {
    let (upstream, proxy, url, client) = proxied().await;
    upstream.push(Reply::json(INITIALIZE_RESULT).session_id("UPSTREAM-1"));
    let answer = client.post_read(&url, &[], INITIALIZE).await;
    assert_eq!(answer.status, StatusCode::OK);
    let sid = answer
        .header("mcp-session-id")
        .expect("a session")
        .to_owned();
    upstream.wait_for_requests(1).await;

    let junk = "x".repeat(30_000);
    for version in [junk.as_str(), "2025-13-45", "2025-11-25, 2025-06-18", ""] {
        let headers = [
            ("mcp-session-id", sid.as_str()),
            ("mcp-protocol-version", version),
        ];
        let answer = client.post_read(&url, &headers, TOOLS_LIST).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "version {:.20}",
            version
        );
        assert_eq!(error_code(&answer), -32022);
        assert_eq!(answer.json()["id"], 2);
        let supported = answer.json()["error"]["data"]["supported"].clone();
        for known in ["2024-11-05", LEGACY, MODERN] {
            assert!(
                supported
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v == known)),
                "{known} in data.supported: {supported}"
            );
        }
        assert!(answer.text().len() < 1024, "the junk is not echoed back");
    }
    let session = proxy.manager().get(&sid).expect("the session lives on");
    assert_eq!(&*session.protocol_version(), LEGACY, "no junk was recorded");
    assert_eq!(
        upstream.requests().len(),
        1,
        "only initialize reached the upstream"
    );

    // Without a session, nothing is created either; a modern `_meta` version is checked too.
    let answer = client
        .post_read(&url, &[("mcp-protocol-version", "1999-01-01")], INITIALIZE)
        .await;
    assert_eq!(error_code(&answer), -32022);
    let future_meta = MODERN_CALL.replace(MODERN, "2099-01-01");
    let answer = client.post_read(&url, &[], &future_meta).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&answer), -32022);
    assert_eq!(proxy.manager().len(), 1);
    assert_eq!(upstream.requests().len(), 1);
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test]
async fn a_502_and_a_503_carry_a_short_message_and_the_request_id_and_the_log_the_detail() {
    let dead_upstream = format!("http://127.0.0.1:{}/mcp", closed_port());
    let dead_redis = format!("redis://127.0.0.1:{}", closed_port());
    let mut notify = support::daemon_proc::NotifySocket::bind();
    let args = [
        "--upstream",
        &dead_upstream,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--no-metrics",
        "--log-target",
        "stderr",
        "--shutdown-grace-secs",
        "1",
    ];
    let env = [
        ("MCP_RELAY_STORE__BACKEND", "redis"),
        ("MCP_RELAY_STORE__URL", dead_redis.as_str()),
        ("MCP_RELAY_STORE__TIMEOUT_MS", "200"),
        ("RUST_LOG", "mcp_relay=info"),
    ];
    let mut relay = RelayProcess::spawn(&notify, &args, &env);
    let ready = notify.wait_for("READY=1", PROC_WAIT).await;
    let status = support::daemon_proc::status_of(&ready).expect("a STATUS= line");
    let (data, _, _) = support::daemon_proc::addrs_of_ready_status(status);
    let url = format!("http://{data}/mcp");
    let client = Client::new();

    let internal = [
        "refused",
        "os error",
        "redis",
        "tcp",
        "connect",
        "127.0.0.1",
    ];
    let body = r#"{"jsonrpc":"2.0","id":"req-502","method":"tools/list"}"#;
    let answer = client.post_read(&url, &[], body).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.json()["id"], "req-502");
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_lowercase();
    for word in internal {
        assert!(
            !message.contains(word),
            "502 message {message:?} carries {word:?}"
        );
    }

    // A session id of the proxy's shape that this process does not hold: looked up in the
    // store, which cannot answer.
    let headers = [
        ("mcp-session-id", "AAAAAAAAAAAAAAAAAAAAAA"),
        ("mcp-protocol-version", LEGACY),
    ];
    let body = r#"{"jsonrpc":"2.0","id":"req-503","method":"tools/list"}"#;
    let answer = client.post_read(&url, &headers, body).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text()
    );
    assert_eq!(answer.json()["id"], "req-503");
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_lowercase();
    for word in internal {
        assert!(
            !message.contains(word),
            "503 message {message:?} carries {word:?}"
        );
    }

    relay.signal("TERM").await;
    relay.exit(PROC_WAIT).await;
    let log = relay.stderr();
    for request_id in ["req-502", "req-503"] {
        let line = log
            .lines()
            .find(|l| l.contains(request_id))
            .unwrap_or_else(|| panic!("no log line names {request_id}:\n{log}"));
        assert!(
            line.to_lowercase().contains("refused"),
            "the log keeps the detail: {line}"
        );
    }
}

#[tokio::test]
async fn a_non_loopback_listener_without_allowed_hosts_exits_2_and_allow_host_admits_that_host() {
    let mut notify = support::daemon_proc::NotifySocket::bind();
    let upstream = format!("http://127.0.0.1:{}/mcp", closed_port());
    let base = [
        "--upstream",
        upstream.as_str(),
        "--listen",
        "0.0.0.0:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--no-metrics",
        "--log-target",
        "stderr",
    ];
    let mut relay = RelayProcess::spawn(&notify, &base, &[]);
    let exit = relay.exit(PROC_WAIT).await;
    assert_eq!(exit.code(), Some(2), "{}", relay.stderr());
    assert!(
        relay.stderr().contains("proxy.allowed_hosts"),
        "{}",
        relay.stderr()
    );

    let mut args = base.to_vec();
    args.extend(["--allow-host", "mcp.example.com"]);
    let mut relay = RelayProcess::spawn(&notify, &args, &[]);
    let ready = notify.wait_for("READY=1", PROC_WAIT).await;
    let status = support::daemon_proc::status_of(&ready).expect("a STATUS= line");
    let (data, _, _) = support::daemon_proc::addrs_of_ready_status(status);
    let url = format!("http://127.0.0.1:{}/mcp", data.port());
    let client = Client::new();
    let refused = client
        .post_read(&url, &[("host", "evil.example.com")], TOOLS_LIST)
        .await;
    assert_eq!(refused.status, StatusCode::MISDIRECTED_REQUEST);
    // The listed Host passes admission (and meets the dead upstream: 502).
    let admitted = client
        .post_read(&url, &[("host", "mcp.example.com")], TOOLS_LIST)
        .await;
    assert_eq!(
        admitted.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        admitted.text()
    );
    relay.signal("TERM").await;
    relay.exit(PROC_WAIT).await;
}
