//! Keep-alive comments on SSE streams to clients (issue 13, "Streams behind load balancers"):
//! after `proxy.sse_keepalive_secs` with nothing sent, a stream gets `: keep-alive`, never
//! replayed or counted as an event; so a load balancer's idle timeout in front of the proxy does
//! not cut a stream whose tool is still working. Checked against a real nginx with
//! `proxy_read_timeout 5s` and the official Python SDK client and server.

mod support;

use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use support::{
    http::{Client, SseReader},
    nginx::Nginx,
    peers::{Peer, run_client},
    proxy_url, start_proxy_with,
    upstream::{Reply, TestUpstream},
};

const COMMENT: &[u8] = b": keep-alive\n\n";
const MODERN_CALL: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"slow","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
const MODERN_HEADERS: [(&str, &str); 3] = [
    ("mcp-protocol-version", "2026-07-28"),
    ("mcp-method", "tools/call"),
    ("mcp-name", "slow"),
];
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"keepalive-test","version":"0"}}}"#;
const INITIALIZE_RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"test-upstream","version":"0"}}}"#;
const LEGACY_CALL: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"slow","arguments":{}}}"#;

/// mcp-relay in front of `upstream` with `proxy.sse_keepalive_secs` = `period`.
async fn proxy_with_keepalive(upstream: &str, period: Duration) -> mcp_relay::daemon::Daemon {
    start_proxy_with(upstream, |c| c.proxy.sse_keepalive = period).await
}

fn event(id: &str, rpc_id: u32) -> String {
    format!(
        "id: {id}\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":{rpc_id},\"result\":{{\"content\":[]}}}}\n\n"
    )
}

/// A modern stream whose upstream stays silent gets a keep-alive comment per period, and the
/// event after the silence as usual; the comments are not events (no id, not counted).
#[tokio::test]
async fn a_silent_modern_stream_gets_keep_alive_comments_that_are_not_events() {
    let upstream = TestUpstream::start().await;
    let proxy = proxy_with_keepalive(&upstream.url(), Duration::from_secs(1)).await;
    let (reply, sender) = Reply::sse_stream();
    upstream.push(reply);
    let response = Client::new()
        .post(&proxy_url(&proxy), &MODERN_HEADERS, MODERN_CALL)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut reader = SseReader::new(response);
    // 2.5 s of silence: two comments.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(sender.send(&event("e1", 3)).await);
    let mut comments = 0;
    loop {
        let block = reader.next_block().await.expect("the stream stays open");
        if &block[..] == COMMENT {
            comments += 1;
            continue;
        }
        let text = String::from_utf8_lossy(&block);
        assert!(text.contains("\"id\":3"), "{text}");
        assert!(!text.contains("keep-alive"), "{text}");
        break;
    }
    // One per second of silence (a third if the event is late on a loaded machine).
    assert!((2..=3).contains(&comments), "{comments} comments in 2.5 s");
    assert_eq!(proxy.proxy_stats().snapshot().keepalives_sent, comments);
    assert_eq!(proxy.proxy_stats().snapshot().events_forwarded, 1);
}

/// A legacy stream's comments come from its reader, not its window: a client resuming the
/// stream is replayed the events only, never a comment.
#[tokio::test]
async fn a_silent_legacy_stream_gets_keep_alives_that_are_never_replayed() {
    let upstream = TestUpstream::start().await;
    let proxy = proxy_with_keepalive(&upstream.url(), Duration::from_secs(1)).await;
    let url = proxy_url(&proxy);
    let client = Client::new();
    upstream.push(Reply::json(INITIALIZE_RESULT).session_id("UP-1"));
    let init = client.post_read(&url, &[], INITIALIZE).await;
    let session = init.header("mcp-session-id").expect("a session").to_owned();
    let headers = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let (reply, sender) = Reply::sse_stream();
    upstream.push(reply);
    let response = client.post(&url, &headers, LEGACY_CALL).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut reader = SseReader::new(response);
    assert!(sender.send(&event("e0", 99)).await);
    let first = reader.next_block().await.expect("the first event");
    let first_id = String::from_utf8_lossy(&first)
        .lines()
        .find_map(|l| l.strip_prefix("id: ").map(str::to_owned))
        .expect("a proxy event id");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        &reader.next_block().await.expect("a comment")[..],
        COMMENT,
        "a comment after a second of silence"
    );
    assert!(proxy.proxy_stats().snapshot().keepalives_sent >= 1);
    assert!(sender.send(&event("e1", 2)).await);
    // The upstream ends the stream after the answer: the stream is complete.
    drop(sender);
    // Skipping any further comment (the answer may come after the next period).
    let second = loop {
        let block = reader.next_block().await.expect("the answer");
        if &block[..] != COMMENT {
            break block;
        }
    };
    assert!(String::from_utf8_lossy(&second).contains("\"id\":2"));
    drop(reader);
    // Resumed after the first event: the answer again, and no comment from the window.
    let mut resume_headers = headers.to_vec();
    resume_headers.push(("accept", "text/event-stream"));
    resume_headers.push(("last-event-id", &first_id));
    let resumed = client
        .send(
            http::Method::GET,
            &url,
            &resume_headers,
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let replayed = SseReader::new(resumed).read_to_end().await;
    let text = String::from_utf8_lossy(&replayed);
    assert!(text.contains("\"id\":2"), "{text}");
    assert!(!text.contains("keep-alive"), "{text}");
    assert_eq!(proxy.manager().stats().snapshot().events_replayed, 1);
}

/// `proxy.sse_keepalive_secs = 0` sends none.
#[tokio::test]
async fn keep_alives_off_send_nothing_during_silence() {
    let upstream = TestUpstream::start().await;
    let proxy = proxy_with_keepalive(&upstream.url(), Duration::ZERO).await;
    let (reply, sender) = Reply::sse_stream();
    upstream.push(reply);
    let response = Client::new()
        .post(&proxy_url(&proxy), &MODERN_HEADERS, MODERN_CALL)
        .await;
    let mut reader = SseReader::new(response);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(sender.send(&event("e1", 3)).await);
    let block = reader.next_block().await.expect("the event");
    assert!(String::from_utf8_lossy(&block).contains("\"id\":3"));
}

/// The must-show: the official Python SDK client calls a tool of the official Python SDK server
/// that is silent for 20 s, through nginx (`proxy_read_timeout 5s`) in front of mcp-relay
/// (`sse_keepalive_secs = 2`): the call completes on its one stream, which nginx never cut.
#[tokio::test]
async fn an_sdk_stream_behind_nginx_survives_a_20_s_silent_tool() {
    let server = Peer::py_server(&[]).await;
    let proxy = proxy_with_keepalive(&server.url(), Duration::from_secs(2)).await;
    let nginx = Nginx::start(proxy.data_addr(), Duration::from_secs(5)).await;
    let summary = run_client(
        &nginx.url("/mcp"),
        &[
            "--mode",
            "legacy",
            "--tool",
            "progress",
            "--steps",
            "1",
            "--delay-ms",
            "20000",
        ],
    )
    .await;
    assert_eq!(summary["result_text"], "done 1", "{summary}");
    assert_eq!(summary["progress"], serde_json::json!([1]), "{summary}");
    let log = nginx.error_log();
    assert!(
        !log.contains("timed out"),
        "nginx timed a stream out:\n{log}"
    );
    assert_eq!(
        proxy.proxy_stats().snapshot().resumptions,
        0,
        "no stream was cut"
    );
}

/// The control: the same nginx in front of mcp-relay with keep-alives off cuts a stream silent
/// for longer than its read timeout (so the test above shows what keep-alives do).
#[tokio::test]
async fn without_keep_alives_nginx_cuts_a_stream_silent_past_its_read_timeout() {
    let upstream = TestUpstream::start().await;
    let proxy = proxy_with_keepalive(&upstream.url(), Duration::ZERO).await;
    let nginx = Nginx::start(proxy.data_addr(), Duration::from_secs(2)).await;
    let (reply, sender) = Reply::sse_stream();
    upstream.push(reply);
    let response = Client::new()
        .post(&nginx.url("/mcp"), &MODERN_HEADERS, MODERN_CALL)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // The answer comes after 4 s, past nginx's 2 s read timeout.
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(4)).await;
        sender.send(&event("e1", 3)).await
    });
    // nginx ends the client's response when its read times out (a truncated chunked body: an
    // error, or an end without the answer).
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("nginx ends the response");
    let text = match body {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    assert!(
        !text.contains("\"id\":3"),
        "nginx kept a silent stream past its read timeout: {text}"
    );
    let _ = late.await;
    assert!(
        nginx.error_log().contains("timed out"),
        "{}",
        nginx.error_log()
    );
}
