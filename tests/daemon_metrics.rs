//! The metrics listener: `/metrics` parses with Prometheus' own Python text parser
//! (`prometheus_client`) and its numbers move with traffic through the data plane;
//! `/healthz` and `/readyz` answer.

mod support;

use std::{process::Stdio, sync::Arc};

use http::{Method, StatusCode};
use mcp_relay::{
    config::Config,
    daemon::{Daemon, Listeners},
    session::store::MemoryStore,
};
use serde_json::Value;
use support::{
    http::{Client, read_full},
    peers::python,
    proxy_url,
    upstream::{Reply, TestUpstream},
};
use tokio::{io::AsyncWriteExt, net::TcpListener, process::Command};

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"daemon-metrics-test","version":"0"}}}"#;
const INITIALIZE_RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"test-upstream","version":"0"}}}"#;
const MODERN_LIST: &str = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

/// Parses Prometheus text with `prometheus_client.parser` and prints, as JSON, every sample as
/// `{name: [{labels, value}]}` plus each family's type under `__types__`.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {"__types__": {}}
for family in text_string_to_metric_families(sys.stdin.read()):
    out["__types__"][family.name] = family.type
    for s in family.samples:
        out.setdefault(s.name, []).append({"labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// One scrape, as parsed by the real parser.
struct Scrape(Value);

impl Scrape {
    /// The value of the sample `name` whose labels include every pair of `labels` (0 when
    /// there is none).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let Some(samples) = self.0.get(name).and_then(Value::as_array) else {
            return 0.0;
        };
        samples
            .iter()
            .filter(|s| labels.iter().all(|(k, v)| s["labels"][k] == *v))
            .map(|s| s["value"].as_f64().expect("numeric sample"))
            .sum()
    }

    fn family_type(&self, family: &str) -> Option<&str> {
        self.0["__types__"][family].as_str()
    }
}

async fn scrape(client: &Client, metrics: &str) -> Scrape {
    let answer = read_full(
        client
            .send(Method::GET, &format!("http://{metrics}/metrics"), &[], "")
            .await,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        answer.header("content-type")
    );
    let mut parser = Command::new(python())
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the Python parser");
    let mut stdin = parser.stdin.take().expect("stdin");
    stdin
        .write_all(&answer.body)
        .await
        .expect("feed the parser");
    drop(stdin);
    let output = tokio::time::timeout(support::http::WAIT, parser.wait_with_output())
        .await
        .expect("the parser finishes")
        .expect("run the parser");
    assert!(
        output.status.success(),
        "prometheus_client rejected /metrics: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        answer.text()
    );
    Scrape(serde_json::from_slice(&output.stdout).expect("parser JSON"))
}

/// A daemon with `config`, its data, admin and metrics listeners on free loopback ports.
async fn start_with_metrics(config: Config) -> Daemon {
    let listeners = Listeners {
        data: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        admin: TcpListener::bind("127.0.0.1:0").await.expect("bind").into(),
        metrics: Some(TcpListener::bind("127.0.0.1:0").await.expect("bind")),
    };
    Daemon::start_with(config, listeners, Arc::new(MemoryStore::new()))
        .await
        .expect("start mcp-relay")
}

#[tokio::test]
async fn metrics_parse_with_prometheus_client_and_move_with_traffic() {
    let upstream = TestUpstream::start().await;
    let mut config = Config::new(upstream.url().parse().expect("upstream URL"));
    config.shutdown_grace = std::time::Duration::from_secs(1);
    let daemon = start_with_metrics(config).await;
    let metrics = daemon.metrics_addr().expect("metrics listener").to_string();
    let url = proxy_url(&daemon);
    let client = Client::new();

    for (path, want) in [("healthz", StatusCode::OK), ("readyz", StatusCode::OK)] {
        let answer = read_full(
            client
                .send(Method::GET, &format!("http://{metrics}/{path}"), &[], "")
                .await,
        )
        .await;
        assert_eq!(answer.status, want, "/{path}");
    }

    let before = scrape(&client, &metrics).await;
    assert_eq!(before.value("mcp_relay_sessions", &[]), 0.0);
    assert_eq!(
        before.value(
            "mcp_relay_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // Traffic: a legacy session, an SSE answer with a duplicate id, a modern request, a 404.
    upstream.push(Reply::json(INITIALIZE_RESULT).session_id("UPSTREAM-1"));
    let init = client.post_read(&url, &[], INITIALIZE).await;
    assert_eq!(init.status, StatusCode::OK);
    let session = init
        .header("mcp-session-id")
        .expect("session id")
        .to_owned();
    upstream.push(Reply::sse(&[
        "id: u1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n",
        "id: u1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n",
        "id: u2\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n\n",
    ]));
    let sse = client
        .post_read(
            &url,
            &[
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "2025-11-25"),
            ],
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        )
        .await;
    assert_eq!(sse.status, StatusCode::OK);
    assert_eq!(sse.text().matches("data:").count(), 2, "{}", sse.text());
    let modern = client
        .post_read(
            &url,
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/list"),
            ],
            MODERN_LIST,
        )
        .await;
    assert_eq!(modern.status, StatusCode::OK);
    let unknown = client
        .post_read(
            &url,
            &[("mcp-session-id", "no-such-session")],
            r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let after = scrape(&client, &metrics).await;
    assert_eq!(
        after.family_type("mcp_relay_http_requests"),
        Some("counter")
    );
    let requests =
        |s: &Scrape, labels: &[(&str, &str)]| s.value("mcp_relay_http_requests_total", labels);
    let legacy_ok = [("method", "POST"), ("status", "200"), ("era", "legacy")];
    let modern_ok = [("method", "POST"), ("status", "200"), ("era", "modern")];
    let not_found = [("method", "POST"), ("status", "404"), ("era", "legacy")];
    assert_eq!(
        requests(&after, &legacy_ok) - requests(&before, &legacy_ok),
        2.0
    );
    assert_eq!(
        requests(&after, &modern_ok) - requests(&before, &modern_ok),
        1.0
    );
    assert_eq!(
        requests(&after, &not_found) - requests(&before, &not_found),
        1.0
    );
    assert_eq!(
        after.family_type("mcp_relay_http_request_duration_seconds"),
        Some("histogram")
    );
    assert_eq!(
        after.value("mcp_relay_http_request_duration_seconds_count", &legacy_ok),
        requests(&after, &legacy_ok),
        "one latency observation per request"
    );
    assert!(
        after.value(
            "mcp_relay_http_request_duration_seconds_bucket",
            &[("era", "modern"), ("le", "+Inf")]
        ) >= 1.0
    );

    let moved = |name: &str| after.value(name, &[]) - before.value(name, &[]);
    assert_eq!(after.value("mcp_relay_sessions", &[]), 1.0);
    assert!(moved("mcp_relay_sse_streams_opened_total") >= 1.0);
    assert!(moved("mcp_relay_sse_events_forwarded_total") >= 2.0);
    assert_eq!(moved("mcp_relay_sse_duplicates_dropped_total"), 1.0);
    assert!(moved("mcp_relay_persistence_updates_total") >= 2.0);
    for family in [
        "mcp_relay_sse_events_replayed",
        "mcp_relay_sse_resumptions",
        "mcp_relay_upstream_reconnects",
        "mcp_relay_persistence_stream_writes",
        "mcp_relay_persistence_errors",
    ] {
        assert_eq!(after.family_type(family), Some("counter"), "{family}");
    }
    for family in [
        "mcp_relay_sse_streams_open",
        "mcp_relay_persistence_pending",
        "mcp_relay_persistence_last_flush_seconds",
    ] {
        assert_eq!(after.family_type(family), Some("gauge"), "{family}");
    }

    // Draining (an SSE stream holds the data plane open): /readyz turns 503 while the
    // metrics listener still answers.
    let (reply, events) = Reply::sse_stream();
    upstream.push(reply);
    let open = client
        .post(
            &url,
            &[
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "2025-11-25"),
            ],
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"t"}}"#,
        )
        .await;
    assert_eq!(open.status(), StatusCode::OK);
    let open_now = scrape(&client, &metrics).await;
    assert!(open_now.value("mcp_relay_sse_streams_open", &[]) >= 1.0);
    // The open stream's pump and its connections are tasks of the runtime.
    assert_eq!(
        open_now.family_type("mcp_relay_runtime_alive_tasks"),
        Some("gauge")
    );
    assert!(
        open_now.value("mcp_relay_runtime_alive_tasks", &[])
            > before.value("mcp_relay_runtime_alive_tasks", &[]),
        "alive tasks grow with an open stream"
    );
    let shutdown = tokio::spawn(daemon.shutdown());
    let drained = async {
        loop {
            let answer = read_full(
                client
                    .send(Method::GET, &format!("http://{metrics}/readyz"), &[], "")
                    .await,
            )
            .await;
            if answer.status == StatusCode::SERVICE_UNAVAILABLE {
                return;
            }
            assert_eq!(answer.status, StatusCode::OK);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(support::http::WAIT, drained)
        .await
        .expect("/readyz turns 503 once shutdown begins");
    tokio::time::timeout(support::http::WAIT, shutdown)
        .await
        .expect("shutdown within its deadline")
        .expect("shutdown task")
        .expect("clean shutdown");
    drop((open, events));
}

#[tokio::test]
async fn client_connections_are_spread_over_the_data_plane_threads_and_counted_until_closed() {
    let upstream = TestUpstream::start().await;
    let mut config = Config::new(upstream.url().parse().expect("upstream URL"));
    config.proxy.threads = 2;
    let daemon = start_with_metrics(config).await;
    let metrics = daemon.metrics_addr().expect("metrics listener").to_string();
    let client = Client::new();
    let first = scrape(&client, &metrics).await;
    assert_eq!(
        first.family_type("mcp_relay_data_plane_connections"),
        Some("gauge")
    );
    assert_eq!(connections_per_thread(&first), [0.0, 0.0]);

    // Four connections opened back to back (a burst, as a load generator opens them): two each.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            tokio::net::TcpStream::connect(daemon.data_addr())
                .await
                .expect("connect to the data plane"),
        );
    }
    let seen = wait_for_connections(&client, &metrics, |c| c.iter().sum::<f64>() == 4.0).await;
    assert_eq!(seen, [2.0, 2.0], "connections per thread");

    // Closed by the client: no longer counted.
    held.truncate(1);
    wait_for_connections(&client, &metrics, |c| c.iter().sum::<f64>() == 1.0).await;
    drop(held);
    wait_for_connections(&client, &metrics, |c| c == [0.0, 0.0]).await;
    daemon.shutdown().await.expect("clean shutdown");
}

/// `mcp_relay_data_plane_connections` of threads 0 and 1.
fn connections_per_thread(s: &Scrape) -> [f64; 2] {
    ["0", "1"].map(|t| s.value("mcp_relay_data_plane_connections", &[("thread", t)]))
}

/// Scrapes until the connections per thread satisfy `done`, and returns them; panics after
/// the wait.
async fn wait_for_connections(
    client: &Client,
    metrics: &str,
    done: impl Fn([f64; 2]) -> bool,
) -> [f64; 2] {
    let deadline = tokio::time::Instant::now() + support::http::WAIT;
    loop {
        let seen = connections_per_thread(&scrape(client, metrics).await);
        if done(seen) {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections per thread stayed {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
