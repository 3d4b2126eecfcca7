//! Edges of routes and pools (issue 13) found in review: a session id used on another route, an
//! endpoint that is alive but slow to accept, an endpoint removed by a reload, a route named by a
//! reload. Each upstream is one whose behaviour is exact: the Rust test upstream, or a raw
//! listener.

mod support;

use std::time::Duration;

use http::{StatusCode, Uri};
use mcp_relay::{
    config::{Config, RouteConfig},
    daemon::Daemon,
    proxy::route::Failure,
};
use support::{
    http::Client,
    pool::{route, start_routes, url_of},
    upstream::{Reply, TestUpstream},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
};

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"route-edges","version":"0"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"t","version":"0"}}}"#;
const LEGACY_CALL: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
const CALL_RESULT: &str = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[]}}"#;

/// A legacy session created through `path` of `daemon` (its upstream answers with `up`):
/// the proxy's session id.
async fn initialize(client: &Client, daemon: &Daemon, path: &str) -> String {
    let init = client
        .post_read(&url_of(daemon, path), &[], INITIALIZE)
        .await;
    assert_eq!(init.status, StatusCode::OK, "{init:?}");
    init.header("mcp-session-id")
        .expect("a session id")
        .to_owned()
}

/// A configuration of `routes` only, as a reload reads it.
fn config_of(routes: Vec<RouteConfig>) -> Config {
    let mut config = Config::new(Uri::default());
    config.routes = routes;
    config
}

/// A session id used on another route's path gets `404`, and the session it names is left as
/// it was: a refused request must not mark it active (keeping it from idle expiry) nor
/// record the protocol version it names.
#[tokio::test]
async fn a_session_id_used_on_another_route_leaves_the_session_untouched() {
    let (a, b) = (TestUpstream::start().await, TestUpstream::start().await);
    let daemon = start_routes(
        vec![route("/a", &[a.url()]), route("/b", &[b.url()])],
        |_| {},
    )
    .await;
    let client = Client::new();
    a.push(Reply::json(INITIALIZED).session_id("UP-1"));
    let sid = initialize(&client, &daemon, "/a").await;
    let session = daemon.manager().get(&sid).expect("a live session");
    let (version, active) = (session.protocol_version(), session.last_activity());
    // Past the clock's millisecond, so a touch would show.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let headers = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let answer = client
        .post_read(&url_of(&daemon, "/b"), &headers, LEGACY_CALL)
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{answer:?}");
    assert!(b.requests().is_empty(), "nothing reached /b's upstream");
    assert_eq!(
        session.protocol_version(),
        version,
        "a request refused on another route rewrote the session's protocol version"
    );
    assert_eq!(
        session.last_activity(),
        active,
        "a request refused on another route marked the session active"
    );
}

/// Answers one legacy `initialize` on `listener` (with `Mcp-Session-Id: UP-1`, then closes the
/// connection) and hands the listener back, accepting nothing more.
async fn answer_one_initialize(listener: TcpListener) -> TcpListener {
    let (mut stream, _) = listener.accept().await.expect("accept");
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    // The head, then as many body bytes as Content-Length says.
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "the proxy closed before its request was complete");
        request.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().expect("a length"));
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: UP-1\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{INITIALIZED}",
        INITIALIZED.len()
    );
    stream
        .write_all(response.as_bytes())
        .await
        .expect("write the answer");
    stream.shutdown().await.expect("close");
    listener
}

/// An endpoint that is alive but does not accept new connections for a while (its accept queue
/// is full: a server short of CPU) makes a session's request fail with a connect timeout. That
/// is not an endpoint that refuses connections: the session must not end (README: "once it
/// refuses connections the session ends"), since the endpoint still knows it.
#[tokio::test]
async fn a_connect_timeout_at_its_endpoint_does_not_end_a_session() {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    // A backlog of 1: the kernel queues two handshakes at most, then drops SYNs.
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut r = route("/mcp", &[format!("http://{addr}/mcp")]);
    r.upstream_connect_timeout = Some(Duration::from_millis(300));
    let daemon = start_routes(vec![r], |_| {}).await;
    let served = tokio::spawn(answer_one_initialize(listener));
    let client = Client::new();
    let sid = initialize(&client, &daemon, "/mcp").await;
    let _listener = served.await.expect("the initialize was answered");

    // Fill the accept queue: connect until a connect hangs.
    let mut queued = Vec::new();
    let mut full = false;
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(err)) => panic!("connect: {err}"),
            Err(_) => {
                full = true;
                break;
            }
        }
    }
    assert!(
        full,
        "the accept queue never filled; this kernel does not drop SYNs"
    );

    let headers = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let answer = client
        .post_read(&url_of(&daemon, "/mcp"), &headers, LEGACY_CALL)
        .await;
    assert_ne!(
        answer.status,
        StatusCode::NOT_FOUND,
        "a connect timeout ended the session: {answer:?}"
    );
    assert!(
        daemon.manager().get(&sid).is_some(),
        "the session still lives"
    );
}

/// An endpoint a reload removed (nothing pinned to it) leaves `/metrics`: its series named by
/// route and endpoint must not stay behind frozen (an `ejected 1` that never clears fires
/// alerts forever, and every URL ever configured would stay a series).
#[tokio::test]
async fn an_endpoint_removed_by_a_reload_leaves_metrics() {
    let (a, b) = (TestUpstream::start().await, TestUpstream::start().await);
    let mut r = route("/mcp", &[a.url(), b.url()]);
    r.eject_after_failures = Some(1);
    let daemon = start_routes(vec![r], |_| {}).await;
    let removed = daemon
        .routing()
        .table()
        .by_path("/mcp")
        .expect("route")
        .pool()[1]
        .clone();
    assert_eq!(&**removed.url(), b.url());
    assert!(removed.failed(Failure::Connect), "ejected");
    let line = format!(
        "mcp_relay_upstream_ejected{{route=\"/mcp\",endpoint=\"{}\"}} 1",
        b.url()
    );
    assert!(daemon.metrics().render().contains(&line));

    daemon.reload(&config_of(vec![route("/mcp", &[a.url()])]));
    let metrics = daemon.metrics().render();
    let stale: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains(&format!("endpoint=\"{}\"", b.url())))
        .collect();
    assert!(
        stale.is_empty(),
        "the removed endpoint is still exported:\n{}",
        stale.join("\n")
    );
}

/// A reload that only names a route (its path and endpoints unchanged: `name` was defaulting
/// to the path) keeps its sessions, as the README promises of reloads ("sessions keep their
/// endpoint"), and keeps its endpoints' drains ("a drain lasts ... across reloads that keep
/// the endpoint").
#[tokio::test]
async fn naming_a_route_in_a_reload_keeps_its_sessions_and_drains() {
    let (a, b) = (TestUpstream::start().await, TestUpstream::start().await);
    let daemon = start_routes(vec![route("/mcp", &[a.url(), b.url()])], |_| {}).await;
    let table = daemon.routing().table();
    let pool = table.by_path("/mcp").expect("route").pool();
    pool[1].set_drained(true);
    let client = Client::new();
    a.push(Reply::json(INITIALIZED).session_id("UP-1"));
    let sid = initialize(&client, &daemon, "/mcp").await;

    let mut named = route("/mcp", &[a.url(), b.url()]);
    named.name = Some("files".into());
    daemon.reload(&config_of(vec![named]));

    a.push(Reply::json(CALL_RESULT));
    let headers = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let answer = client
        .post_read(&url_of(&daemon, "/mcp"), &headers, LEGACY_CALL)
        .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "the route's session was lost by naming the route: {answer:?}"
    );
    let table = daemon.routing().table();
    assert!(
        table.by_path("/mcp").expect("route").pool()[1].is_drained(),
        "the drain was lost by naming the route"
    );
}
