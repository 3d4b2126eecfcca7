//! Graceful shutdown with an SSE stream open: the deadline holds (a stream that never ends does
//! not keep the daemon up), the client's stream ends cleanly, the persistence worker's final
//! flush holds the last event id forwarded, and a second signal exits at once.

mod support;

use std::{sync::Arc, time::Duration};

use http::StatusCode;
use mcp_relay::{
    config::Config,
    daemon::{Daemon, Listeners},
    session::store::{MemoryStore, SessionStore},
};
use support::{
    daemon_proc::{NotifySocket, PROC_WAIT, RelayProcess, addrs_of_ready_status, status_of},
    http::{Client, SseReader},
    proxy_url,
    upstream::{Reply, SseSender, TestUpstream},
};
use tokio::net::TcpListener;

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"daemon-shutdown-test","version":"0"}}}"#;
const INITIALIZE_RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"test-upstream","version":"0"}}}"#;
const CALL: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"slow","arguments":{},"_meta":{"progressToken":7}}}"#;

fn progress(id: &str, n: u32) -> String {
    format!(
        "id: {id}\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progressToken\":7,\"progress\":{n}}}}}\n\n"
    )
}

/// Opens a legacy session and a `tools/call` whose SSE answer the upstream holds open; the
/// upstream sends `ids` (one may repeat: the proxy drops the duplicate). Returns the session id,
/// the client's reader, the upstream's sender, and the `(stream id, upstream id)` of the last
/// event the client received.
async fn open_stream(
    upstream: &TestUpstream,
    url: &str,
    ids: &[&str],
) -> (String, SseReader, SseSender, (String, String)) {
    let client = Client::new();
    upstream.push(Reply::json(INITIALIZE_RESULT).session_id("UPSTREAM-1"));
    let init = client.post_read(url, &[], INITIALIZE).await;
    assert_eq!(init.status, StatusCode::OK);
    let session = init
        .header("mcp-session-id")
        .expect("a proxy session id")
        .to_owned();

    let (reply, events) = Reply::sse_stream();
    upstream.push(reply);
    let response = client
        .post(
            url,
            &[
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "2025-11-25"),
            ],
            CALL,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut reader = SseReader::new(response);
    let mut distinct: Vec<&str> = ids.to_vec();
    distinct.dedup();
    for (n, id) in ids.iter().enumerate() {
        assert!(events.send(&progress(id, n as u32 + 1)).await);
    }
    let mut last = None;
    let mut seen = 0;
    while seen < distinct.len() {
        let block = reader.next_block().await.expect("the stream stays open");
        let text = String::from_utf8(block.to_vec()).expect("UTF-8 SSE");
        let Some(id) = text.lines().find_map(|l| l.strip_prefix("id: ")) else {
            continue;
        };
        // `<stream>:<seq>:<upstream id>`
        let mut parts = id.splitn(3, ':');
        let (stream, _seq, up) = (parts.next(), parts.next(), parts.next());
        let (Some(stream), Some(up)) = (stream, up) else {
            continue; // an event without an upstream id (e.g. a priming event)
        };
        assert_eq!(
            up, distinct[seen],
            "events arrive in order, duplicates dropped"
        );
        seen += 1;
        last = Some((stream.to_owned(), up.to_owned()));
    }
    (session, reader, events, last.expect("events received"))
}

#[tokio::test]
async fn the_last_forwarded_event_id_is_persisted_when_shutdown_cuts_an_open_stream() {
    let upstream = TestUpstream::start().await;
    let store = Arc::new(MemoryStore::new());
    let mut config = Config::new(upstream.url().parse().expect("upstream URL"));
    config.shutdown_grace = Duration::from_secs(1);
    let listeners = Listeners {
        data: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        admin: TcpListener::bind("127.0.0.1:0").await.expect("bind").into(),
        metrics: None,
    };
    let daemon = Daemon::start_with(config, listeners, store.clone())
        .await
        .expect("start mcp-relay");
    let url = proxy_url(&daemon);

    let (session, reader, events, (stream, last_seen)) =
        open_stream(&upstream, &url, &["ev-1", "ev-2", "ev-2", "ev-3"]).await;
    assert_eq!(last_seen, "ev-3");

    // The upstream keeps the stream open: only the grace deadline ends it.
    tokio::time::timeout(PROC_WAIT, daemon.shutdown())
        .await
        .expect("shutdown finishes within its deadline")
        .expect("clean shutdown");
    let rest = tokio::time::timeout(PROC_WAIT, reader.read_to_end())
        .await
        .expect("the client's stream ended at shutdown");
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("ev-"), "no event after the cut: {rest:?}");
    drop(events);

    let positions = store
        .get_stream_positions(&[(session, stream)])
        .await
        .expect("memory store answers");
    let persisted = positions[0]
        .as_ref()
        .expect("the stream's position was persisted at shutdown");
    assert_eq!(persisted.upstream_event_id, last_seen);
}

#[tokio::test]
async fn sigterm_during_an_open_stream_exits_within_the_deadline_and_ends_the_stream() {
    let upstream = TestUpstream::start().await;
    let mut notify = NotifySocket::bind();
    let url = upstream.url();
    let mut relay = RelayProcess::spawn(
        &notify,
        &[
            "--upstream",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--no-metrics",
            "--log-target",
            "stderr",
            "--shutdown-grace-secs",
            "1",
        ],
        &[],
    );
    let ready = notify.wait_for("READY=1", PROC_WAIT).await;
    let (data, _, metrics) = addrs_of_ready_status(status_of(&ready).expect("status"));
    assert_eq!(metrics, None, "--no-metrics");
    let (_, reader, _events, (_, last_seen)) =
        open_stream(&upstream, &format!("http://{data}/mcp"), &["a", "b", "c"]).await;
    assert_eq!(last_seen, "c");

    relay.signal("TERM").await;
    notify.wait_for("STOPPING=1", PROC_WAIT).await;
    // The upstream never ends the stream; the daemon's deadline does.
    tokio::time::timeout(PROC_WAIT, reader.read_to_end())
        .await
        .expect("the client's stream ends at the deadline");
    let exit = relay.exit(PROC_WAIT).await;
    assert!(exit.success(), "clean exit: {exit}\n{}", relay.stderr());
    let log = relay.stderr();
    assert!(log.contains("grace period over"), "{log}");
    assert!(log.contains("mcp-relay stopped"), "{log}");
}

#[tokio::test]
async fn a_second_signal_exits_at_once_without_waiting_for_the_grace_period() {
    let upstream = TestUpstream::start().await;
    let mut notify = NotifySocket::bind();
    let url = upstream.url();
    let mut relay = RelayProcess::spawn(
        &notify,
        &[
            "--upstream",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--no-metrics",
            "--log-target",
            "stderr",
            // Far longer than PROC_WAIT: only the second signal can end the process in time.
            "--shutdown-grace-secs",
            "3600",
        ],
        &[],
    );
    let ready = notify.wait_for("READY=1", PROC_WAIT).await;
    let (data, _, _) = addrs_of_ready_status(status_of(&ready).expect("status"));
    let (_, _reader, _events, _) =
        open_stream(&upstream, &format!("http://{data}/mcp"), &["x"]).await;

    relay.signal("TERM").await;
    notify.wait_for("STOPPING=1", PROC_WAIT).await;
    relay.signal("INT").await;
    let exit = relay.exit(PROC_WAIT).await;
    assert_eq!(exit.code(), Some(1), "{}", relay.stderr());
    assert!(relay.stderr().contains("second signal"));
}
