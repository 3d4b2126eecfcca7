//! Failover and ejection in a route's pool (issue 13), against upstreams whose faults are exact:
//! a port nobody listens on (connection refused: the request cannot have been seen), a listener
//! that reads the request and resets (it may have been seen), and the Rust test upstream.
//! The real SDK servers' version of these is `tests/pools.rs`.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::{StatusCode, Uri};
use mcp_relay::{config::RouteConfig, daemon::Daemon};
use support::{
    http::{Answer, Client},
    start_proxy_with,
    upstream::TestUpstream,
};
use tokio::{io::AsyncReadExt, net::TcpListener};

const MODERN_CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
const MODERN_HEADERS: &[(&str, &str)] = &[
    ("mcp-protocol-version", "2026-07-28"),
    ("mcp-method", "tools/call"),
    ("mcp-name", "echo"),
];

/// A loopback port with nothing listening on it (bound, then closed).
async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/mcp")
}

/// A listener that reads each request's first bytes, then resets the connection (the request
/// reached it: it may have acted on it). Returns its URL and how many requests it read.
async fn resetting_upstream() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    let seen = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                    // RST instead of FIN: linger 0.
                    let _ = stream.set_zero_linger();
                    drop(stream);
                });
            }
        }
    });
    (url, seen, task)
}

/// A daemon serving one route at `/mcp` with `urls` as its pool, `tune`d.
async fn pool(urls: &[String], tune: impl FnOnce(&mut RouteConfig)) -> Daemon {
    let mut route = RouteConfig::new("/mcp", urls.iter().cloned());
    tune(&mut route);
    start_proxy_with("http://127.0.0.1:1/mcp", |config| {
        config.proxy.upstream = Uri::default();
        config.routes = vec![route];
    })
    .await
}

fn url(daemon: &Daemon) -> String {
    format!("http://{}/mcp", daemon.data_addr())
}

/// The endpoint of the daemon's `/mcp` route at `url`: (requests, failures, retried, ejected).
fn endpoint_numbers(daemon: &Daemon, url: &str) -> (u64, u64, u64, bool) {
    let table = daemon.routing().table();
    let route = table.by_path("/mcp").expect("route");
    let e = route
        .endpoints()
        .iter()
        .find(|e| &**e.url() == url)
        .expect("endpoint");
    (
        e.requests.load(Ordering::Relaxed),
        e.failures.load(Ordering::Relaxed),
        e.retried.load(Ordering::Relaxed),
        e.is_ejected(),
    )
}

async fn call(client: &Client, daemon: &Daemon) -> Answer {
    client
        .post_read(&url(daemon), MODERN_HEADERS, MODERN_CALL)
        .await
}

/// A request refused by one endpoint (connection refused: it never reached it) is sent once
/// to the other and succeeds; after `eject_after_failures` refusals the endpoint is ejected and
/// gets no more attempts.
#[tokio::test]
async fn a_request_refused_by_one_endpoint_is_sent_once_to_another() {
    let good = TestUpstream::start().await;
    let refused = refused_url().await;
    let daemon = pool(&[refused.clone(), good.url()], |r| {
        r.eject_after_failures = Some(3);
    })
    .await;
    let client = Client::new();
    for i in 0..30 {
        let answer = call(&client, &daemon).await;
        assert_eq!(answer.status, StatusCode::OK, "request {i}: {answer:?}");
    }
    assert_eq!(
        good.requests().len(),
        30,
        "every request answered by the live endpoint"
    );
    let (requests, failures, retried, ejected) = endpoint_numbers(&daemon, &refused);
    assert!(ejected, "three refusals eject it");
    assert_eq!(failures, 3, "no attempt after the ejection");
    assert_eq!(requests, 3);
    assert_eq!(retried, 3, "each refused request was retried elsewhere");
    let metrics = daemon.metrics().render();
    let line = format!("mcp_relay_upstream_ejected{{route=\"/mcp\",endpoint=\"{refused}\"}} 1");
    assert!(metrics.contains(&line), "{line} not in\n{metrics}");
}

/// A request that reached an endpoint before the exchange broke is never sent again: the
/// client gets `502` and the other endpoint never sees it (a `tools/call` is not idempotent).
#[tokio::test]
async fn a_request_the_upstream_may_have_seen_is_not_retried() {
    let good = TestUpstream::start().await;
    let (resetting, seen, _task) = resetting_upstream().await;
    let daemon = pool(&[resetting.clone(), good.url()], |r| {
        r.eject_after_failures = Some(0);
    })
    .await;
    let client = Client::new();
    let (mut ok, mut bad_gateway) = (0, 0);
    for _ in 0..40 {
        match call(&client, &daemon).await.status {
            StatusCode::OK => ok += 1,
            StatusCode::BAD_GATEWAY => bad_gateway += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        bad_gateway > 0,
        "the balancer picked the resetting endpoint at times"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        bad_gateway,
        "each 502 is a request the resetting endpoint read"
    );
    assert_eq!(
        good.requests().len(),
        ok,
        "the live endpoint saw only the requests it answered: none was retried"
    );
    let (_, failures, retried, ejected) = endpoint_numbers(&daemon, &resetting);
    assert_eq!(failures as usize, bad_gateway);
    assert_eq!(retried, 0);
    assert!(!ejected, "eject_after_failures = 0 never ejects");
}

/// With every endpoint ejected the route answers `503` with a JSON-RPC error and
/// `Retry-After` at once, without trying them.
#[tokio::test]
async fn a_pool_with_every_endpoint_ejected_answers_503_at_once() {
    let (a, b) = (refused_url().await, refused_url().await);
    let daemon = pool(&[a.clone(), b.clone()], |r| {
        r.eject_after_failures = Some(1);
        r.base_ejection_time = Some(Duration::from_secs(60));
        r.max_ejection_time = Some(Duration::from_secs(60));
    })
    .await;
    let client = Client::new();
    // Refused at one, retried at the other, refused there: both ejected.
    let first = call(&client, &daemon).await;
    assert_eq!(first.status, StatusCode::BAD_GATEWAY, "{first:?}");
    assert!(endpoint_numbers(&daemon, &a).3 && endpoint_numbers(&daemon, &b).3);
    let attempts = endpoint_numbers(&daemon, &a).0 + endpoint_numbers(&daemon, &b).0;
    let answer = call(&client, &daemon).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON");
    assert_eq!(body["error"]["code"], -32603, "{body}");
    assert_eq!(body["id"], 7, "{body}");
    assert_eq!(
        endpoint_numbers(&daemon, &a).0 + endpoint_numbers(&daemon, &b).0,
        attempts,
        "no endpoint was tried"
    );
    assert_eq!(
        daemon.proxy_stats().snapshot().no_endpoint_available,
        1,
        "the refusal is counted (mcp_relay_no_endpoint_available_total)"
    );
}

/// A drained endpoint gets no new requests; undrained, it gets them again.
#[tokio::test]
async fn a_drained_endpoint_gets_no_new_requests() {
    let (a, b) = (TestUpstream::start().await, TestUpstream::start().await);
    let daemon = pool(&[a.url(), b.url()], |_| {}).await;
    let table = daemon.routing().table();
    let drained = table.by_path("/mcp").expect("route").pool()[0].clone();
    assert_eq!(&**drained.url(), a.url());
    drained.set_drained(true);
    let client = Client::new();
    for _ in 0..20 {
        assert_eq!(call(&client, &daemon).await.status, StatusCode::OK);
    }
    assert_eq!(a.requests().len(), 0);
    assert_eq!(b.requests().len(), 20);
    drained.set_drained(false);
    for _ in 0..40 {
        assert_eq!(call(&client, &daemon).await.status, StatusCode::OK);
    }
    assert!(!a.requests().is_empty(), "undrained: it gets work again");
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"failover-test","version":"0"}}}"#;
const LEGACY_CALL: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;

/// Ejection keeps new work away from an endpoint, not its sessions: it may only be slow, and
/// it still knows them. Once it refuses connections it is gone: the session ends, `404`.
#[tokio::test]
async fn an_ejected_endpoint_still_serves_its_sessions_until_it_refuses_connections() {
    let a = TestUpstream::start().await;
    let daemon = pool(&[a.url()], |r| r.eject_after_failures = Some(2)).await;
    let client = Client::new();
    a.push(support::upstream::Reply::json(
        r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"t","version":"0"}}}"#,
    ).session_id("UP-1"));
    let init = client.post_read(&url(&daemon), &[], INITIALIZE).await;
    assert_eq!(init.status, StatusCode::OK, "{init:?}");
    let sid = init.headers["mcp-session-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let endpoint = daemon
        .routing()
        .table()
        .by_path("/mcp")
        .expect("route")
        .pool()[0]
        .clone();
    endpoint.failed(mcp_relay::proxy::route::Failure::Exchange);
    endpoint.failed(mcp_relay::proxy::route::Failure::Exchange);
    assert!(endpoint.is_ejected());
    let headers = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let answer = client.post_read(&url(&daemon), &headers, LEGACY_CALL).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "served by its ejected endpoint: {answer:?}"
    );
    assert_eq!(
        a.requests()
            .last()
            .and_then(|r| r.header("mcp-session-id").map(str::to_owned))
            .as_deref(),
        Some("UP-1")
    );
    // New work is refused at once: the pool's only endpoint is ejected.
    assert_eq!(
        call(&client, &daemon).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Gone: the session ends with a 404 the SDKs re-initialize on. Dropping the upstream only
    // asks its task to stop: wait until its port refuses connections (and its connections are
    // closed), or a request racing the stop breaks mid-exchange (502, rightly not "gone").
    let addr = a.authority();
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        // A sleep first: the aborted tasks (listener, then connections) are dropped meanwhile.
        tokio::time::sleep(Duration::from_millis(10)).await;
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream still accepts"
        );
    }
    let gone = client.post_read(&url(&daemon), &headers, LEGACY_CALL).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{gone:?}");
    let body: serde_json::Value = serde_json::from_slice(&gone.body).expect("JSON");
    assert_eq!(body["error"]["code"], -32001, "{body}");
    assert_eq!(daemon.manager().len(), 0, "the session ended");
    assert_eq!(endpoint.sessions_lost.load(Ordering::Relaxed), 1);
}
