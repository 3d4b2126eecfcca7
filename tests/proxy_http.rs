//! The data plane over real sockets, against the scripted test upstream: the proxy's own
//! answers (400, 403, 404, 405, 413, 502, 504), legacy session mapping, header forwarding, the
//! modern era's rules, and SSE relaying (ids, duplicates, byte fidelity, no buffering,
//! close-is-cancel).

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use mcp_relay::daemon::Daemon;
use support::{
    http::{Answer, Client, SseReader, read_full},
    proxy_url, start_proxy, start_proxy_with,
    upstream::{Reply, TestUpstream},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bound for waits on the upstream side; never a performance assertion.
const WAIT: Duration = Duration::from_secs(5);

const LEGACY: &str = "2025-11-25";
const MODERN: &str = "2026-07-28";

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"proxy-http-test","version":"0"}}}"#;
const INITIALIZE_RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"test-upstream","version":"0"}}}"#;
const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
/// A 2026-07-28 `tools/call` whose mirrored headers are `Mcp-Method: tools/call`, `Mcp-Name: echo`.
const MODERN_CALL: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
const MODERN_HEADERS: [(&str, &str); 3] = [
    ("mcp-protocol-version", MODERN),
    ("mcp-method", "tools/call"),
    ("mcp-name", "echo"),
];

/// A test upstream, a proxy in front of it, the proxy's MCP URL and a client.
async fn proxied() -> (TestUpstream, Daemon, String, Client) {
    let upstream = TestUpstream::start().await;
    let proxy = start_proxy(&upstream.url()).await;
    let url = proxy_url(&proxy);
    (upstream, proxy, url, Client::new())
}

/// `error.code` of a JSON-RPC error answer.
fn error_code(answer: &Answer) -> i64 {
    answer.json()["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error.code in {:?}", answer.text()))
}

/// Runs `initialize` through the proxy against an upstream that assigns `UPSTREAM-1`; returns
/// the session id the client was given.
async fn initialize_session(upstream: &TestUpstream, client: &Client, url: &str) -> String {
    upstream.push(Reply::json(INITIALIZE_RESULT).session_id("UPSTREAM-1"));
    let answer = client.post_read(url, &[], INITIALIZE).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.text(),
        INITIALIZE_RESULT,
        "JSON passes byte for byte"
    );
    answer
        .header("mcp-session-id")
        .expect("the client receives a session id")
        .to_owned()
}

/// The stream id of a client event id `<stream>:<seq>[:<upstream id>]`.
fn stream_of(block: &[u8]) -> String {
    let text = std::str::from_utf8(block).expect("UTF-8 SSE");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("no id line in {text:?}"));
    let stream = id.split(':').next().expect("stream part").to_owned();
    assert!(!stream.is_empty(), "empty stream id in {id:?}");
    stream
}

#[tokio::test]
async fn post_with_a_body_that_is_not_json_gets_400_parse_error() {
    let (upstream, _proxy, url, client) = proxied().await;
    let answer = client.post_read(&url, &[], "this is not json").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&answer), -32700);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn post_of_a_json_scalar_gets_400() {
    let (upstream, _proxy, url, client) = proxied().await;
    let answer = client.post_read(&url, &[], "42").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&answer), -32700);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn unknown_session_id_gets_404_session_not_found_without_reaching_upstream() {
    let (upstream, _proxy, url, client) = proxied().await;
    let headers = [
        ("mcp-session-id", "no-such-session"),
        ("mcp-protocol-version", LEGACY),
    ];
    let answer = client.post_read(&url, &headers, TOOLS_LIST).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&answer), -32001);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn put_gets_405_with_an_allow_header() {
    let (upstream, _proxy, url, client) = proxied().await;
    let response = client.send(Method::PUT, &url, &[], TOOLS_LIST).await;
    let answer = read_full(response).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    let allow = answer.header("allow").expect("Allow header");
    for method in ["GET", "POST", "DELETE"] {
        assert!(allow.contains(method), "Allow: {allow}");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn body_over_max_request_body_bytes_gets_413() {
    let upstream = TestUpstream::start().await;
    let proxy = start_proxy_with(&upstream.url(), |c| c.proxy.max_request_body_bytes = 64).await;
    let client = Client::new();
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"pad":"{}"}}}}"#,
        "x".repeat(1000)
    );
    let answer = client.post_read(&proxy_url(&proxy), &[], &big).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn foreign_origin_gets_403_without_reaching_upstream() {
    let (upstream, _proxy, url, client) = proxied().await;
    let headers = [("origin", "http://evil.example")];
    let answer = client.post_read(&url, &headers, TOOLS_LIST).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn loopback_origin_is_forwarded() {
    let (upstream, _proxy, url, client) = proxied().await;
    let headers = [("origin", "http://localhost:1234")];
    let answer = client.post_read(&url, &headers, TOOLS_LIST).await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = upstream.wait_for_requests(1).await;
    assert_eq!(seen[0].header("origin"), Some("http://localhost:1234"));
}

#[tokio::test]
async fn unreachable_upstream_gets_502_carrying_the_request_id() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let proxy = start_proxy(&format!("http://127.0.0.1:{port}/mcp")).await;
    let body = r#"{"jsonrpc":"2.0","id":"req-7","method":"tools/list"}"#;
    let answer = Client::new().post_read(&proxy_url(&proxy), &[], body).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let json = answer.json();
    assert_eq!(json["id"], "req-7");
    assert!(json["error"]["code"].is_i64(), "error.code in {json}");
}

#[tokio::test]
async fn small_answer_cut_short_upstream_gets_502_not_a_truncated_200() {
    let upstream = TestUpstream::start().await;
    upstream.push(Reply::json_cut_short(64, r#"{"jsonrpc":"2.0","id":2,"res"#));
    let proxy = start_proxy(&upstream.url()).await;
    let answer = Client::new()
        .post_read(&proxy_url(&proxy), &[], TOOLS_LIST)
        .await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let json = answer.json();
    assert_eq!(json["id"], 2);
    assert!(json["error"]["code"].is_i64(), "error.code in {json}");
}

#[tokio::test]
async fn upstream_that_never_answers_gets_504_after_the_response_timeout() {
    let upstream = TestUpstream::start().await;
    upstream.push(Reply::stall());
    let proxy = start_proxy_with(&upstream.url(), |c| {
        c.proxy.upstream_response_timeout = Duration::from_millis(300);
    })
    .await;
    let answer = Client::new()
        .post_read(&proxy_url(&proxy), &[], TOOLS_LIST)
        .await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.json()["id"], 2);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn legacy_session_ids_are_mapped_between_client_and_upstream() {
    let (upstream, _proxy, url, client) = proxied().await;
    let session = initialize_session(&upstream, &client, &url).await;
    assert_ne!(
        session, "UPSTREAM-1",
        "the client never sees the upstream's id"
    );
    assert!(
        session.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "{session:?}"
    );

    upstream.push(Reply::json(
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[]}}"#,
    ));
    let headers = [
        ("mcp-session-id", &*session),
        ("mcp-protocol-version", LEGACY),
    ];
    let answer = client.post_read(&url, &headers, TOOLS_LIST).await;
    assert_eq!(answer.status, StatusCode::OK);

    let seen = upstream.wait_for_requests(2).await;
    assert_eq!(
        seen[0].header("mcp-session-id"),
        None,
        "initialize has no id"
    );
    let follow_up = &seen[1];
    assert_eq!(follow_up.header("mcp-session-id"), Some("UPSTREAM-1"));
    assert_eq!(
        follow_up.headers.get_all("mcp-session-id").iter().count(),
        1
    );
    assert!(
        follow_up.headers.values().all(|v| v != session.as_str()),
        "the upstream never sees the proxy's id: {:?}",
        follow_up.headers
    );
    assert_eq!(follow_up.header("host"), Some(&*upstream.authority()));
    assert_eq!(follow_up.body, TOOLS_LIST.as_bytes());
}

#[tokio::test]
async fn upstream_404_ends_the_session_and_the_next_request_gets_the_proxys_404() {
    let (upstream, _proxy, url, client) = proxied().await;
    let session = initialize_session(&upstream, &client, &url).await;
    let headers = [
        ("mcp-session-id", &*session),
        ("mcp-protocol-version", LEGACY),
    ];

    upstream.push(Reply::status(404, "session gone upstream"));
    let answer = client.post_read(&url, &headers, TOOLS_LIST).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.text(),
        "session gone upstream",
        "upstream 404 passes"
    );
    assert_eq!(upstream.requests().len(), 2);

    let answer = client.post_read(&url, &headers, TOOLS_LIST).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&answer), -32001);
    assert_eq!(
        upstream.requests().len(),
        2,
        "the ended session stays local"
    );
}

#[tokio::test]
async fn delete_is_forwarded_with_the_upstream_id_and_ends_the_session() {
    let (upstream, _proxy, url, client) = proxied().await;
    let session = initialize_session(&upstream, &client, &url).await;
    let headers = [
        ("mcp-session-id", &*session),
        ("mcp-protocol-version", LEGACY),
    ];

    upstream.push(Reply::status(200, ""));
    let answer = read_full(client.send(Method::DELETE, &url, &headers, "").await).await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = upstream.wait_for_requests(2).await;
    assert_eq!(seen[1].method, Method::DELETE);
    assert_eq!(seen[1].header("mcp-session-id"), Some("UPSTREAM-1"));

    let answer = client.post_read(&url, &headers, TOOLS_LIST).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&answer), -32001);
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn end_to_end_headers_reach_upstream_unchanged_and_hop_by_hop_ones_do_not() {
    let (upstream, _proxy, url, client) = proxied().await;
    let end_to_end = [
        ("authorization", "Bearer s3cr3t-token"),
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
        ("mcp-param-foo", "Bar Baz"),
        ("last-event-id", "abc:1"),
    ];
    let hop_by_hop = [
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "named by Connection"),
        ("keep-alive", "timeout=5"),
        ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
    ];
    let headers: Vec<_> = end_to_end.iter().chain(&hop_by_hop).copied().collect();
    let answer = client.post_read(&url, &headers, MODERN_CALL).await;
    assert_eq!(answer.status, StatusCode::OK);

    let seen = &upstream.wait_for_requests(1).await[0];
    for (name, value) in end_to_end {
        assert_eq!(seen.header(name), Some(value), "{name}");
    }
    for (name, _) in hop_by_hop {
        assert_eq!(seen.header(name), None, "{name} must not be forwarded");
    }
    assert_eq!(seen.body, MODERN_CALL.as_bytes());
}

/// Headers a client may send to pass itself off as someone else.
const SPOOFED: [(&str, &str); 4] = [
    ("x-forwarded-for", "6.6.6.6"),
    ("forwarded", "for=6.6.6.6;proto=https"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
];

/// What the upstream saw of the forwarded headers of one `tools/call` sent with `headers`
/// through a daemon tuned by `tune` (the client is 127.0.0.1, a direct peer).
async fn forwarded_seen(
    tune: impl FnOnce(&mut mcp_relay::config::Config),
    headers: &[(&str, &str)],
) -> (String, [Option<String>; 4]) {
    let upstream = TestUpstream::start().await;
    let proxy = start_proxy_with(&upstream.url(), tune).await;
    let mut all = MODERN_HEADERS.to_vec();
    all.extend_from_slice(headers);
    let answer = Client::new()
        .post_read(&proxy_url(&proxy), &all, MODERN_CALL)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = &upstream.wait_for_requests(1).await[0];
    let values = SPOOFED.map(|(name, _)| {
        let values: Vec<_> = seen
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ASCII").to_owned())
            .collect();
        assert!(values.len() <= 1, "{name}: one line, got {values:?}");
        values.into_iter().next()
    });
    (proxy.data_addr().to_string(), values)
}

#[tokio::test]
async fn forwarded_headers_tell_the_upstream_the_client_and_a_client_cannot_spoof_them() {
    let some = |s: &str| Some(s.to_owned());
    // The default (append, no trusted proxy): the client's values are dropped, this hop added.
    let (host, seen) = forwarded_seen(|_| {}, &SPOOFED).await;
    assert_eq!(
        seen,
        [
            some("127.0.0.1"),
            Some(format!("for=127.0.0.1;proto=http;host=\"{host}\"")),
            some("http"),
            Some(host.clone()),
        ]
    );
    // A trusted peer's values are kept, this hop appended.
    let (host, seen) = forwarded_seen(
        |c| c.proxy.trusted_proxies = vec!["127.0.0.0/8".into()],
        &SPOOFED,
    )
    .await;
    assert_eq!(
        seen,
        [
            some("6.6.6.6, 127.0.0.1"),
            Some(format!(
                "for=6.6.6.6;proto=https, for=127.0.0.1;proto=http;host=\"{host}\""
            )),
            some("https"),
            some("evil.example"),
        ]
    );
    // replace: only this hop, even from a trusted peer.
    let (host, seen) = forwarded_seen(
        |c| {
            c.proxy.forwarded = mcp_relay::config::ForwardedMode::Replace;
            c.proxy.trusted_proxies = vec!["127.0.0.1".into()];
        },
        &SPOOFED,
    )
    .await;
    assert_eq!(
        seen,
        [
            some("127.0.0.1"),
            Some(format!("for=127.0.0.1;proto=http;host=\"{host}\"")),
            some("http"),
            Some(host),
        ]
    );
    // off: the proxy neither adds nor strips.
    let (_, seen) = forwarded_seen(
        |c| c.proxy.forwarded = mcp_relay::config::ForwardedMode::Off,
        &SPOOFED,
    )
    .await;
    assert_eq!(seen, SPOOFED.map(|(_, v)| some(v)));
    let (_, seen) = forwarded_seen(
        |c| c.proxy.forwarded = mcp_relay::config::ForwardedMode::Off,
        &[],
    )
    .await;
    assert_eq!(seen, [None, None, None, None]);
}

#[tokio::test]
async fn modern_mcp_method_mismatch_gets_400_header_mismatch_without_reaching_upstream() {
    let (upstream, _proxy, url, client) = proxied().await;
    let headers = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/list"),
        ("mcp-name", "echo"),
    ];
    let answer = client.post_read(&url, &headers, MODERN_CALL).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&answer), -32020);
    assert_eq!(answer.json()["id"], 3);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn modern_requests_create_no_session_and_do_not_forward_mcp_session_id() {
    let (upstream, proxy, url, client) = proxied().await;
    // Even an upstream that (wrongly) names a session does not make one in the modern era.
    upstream.push(Reply::json(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#).session_id("UP-9"));
    let mut headers = MODERN_HEADERS.to_vec();
    headers.push(("mcp-session-id", "client-made-up"));
    let answer = client.post_read(&url, &headers, MODERN_CALL).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("mcp-session-id"), None);

    let seen = &upstream.wait_for_requests(1).await[0];
    assert_eq!(seen.header("mcp-session-id"), None);
    assert!(proxy.manager().is_empty(), "no session was created");
}

#[tokio::test]
async fn sse_duplicate_upstream_ids_are_dropped_and_client_ids_embed_stream_seq_and_upstream_id() {
    let (upstream, _proxy, url, client) = proxied().await;
    upstream.push(Reply::sse(&[
        "id: a\ndata: 1\n\n",
        "id: b\ndata: 2\n\n",
        "id: b\ndata: 2\n\n",
        "id: c\ndata: 3\n\n",
    ]));
    let answer = client.post_read(&url, &[], TOOLS_LIST).await;
    assert_eq!(answer.status, StatusCode::OK);
    let stream = stream_of(&answer.body);
    assert_eq!(stream.len(), 16, "stream id is 16 hex digits: {stream}");
    assert!(stream.bytes().all(|b| b.is_ascii_hexdigit()));
    let expected = format!(
        "id: {stream}:1:a\ndata: 1\n\nid: {stream}:2:b\ndata: 2\n\nid: {stream}:3:c\ndata: 3\n\n"
    );
    assert_eq!(answer.text(), expected);
}

/// A stream the proxy relays without a replay window (no session here; the modern era) cannot
/// be resumed through the proxy by an id the proxy made up: an event the upstream sent without
/// an id reaches the client without one (as it would directly), so the client does not try a
/// resumption that can only fail (the Python SDK retried with `GET` + `Last-Event-ID`, got 405
/// twice and learnt only 2.4 s later that its cut request had failed).
#[tokio::test]
async fn sse_events_without_upstream_ids_get_no_made_up_id_on_streams_without_a_window() {
    let (upstream, _proxy, url, client) = proxied().await;
    upstream.push(Reply::sse(&[
        "data: first\n\n",
        "id: u1\ndata: second\n\n",
        "data: third\n\n",
    ]));
    let answer = client.post_read(&url, &[], TOOLS_LIST).await;
    let s = stream_of(&answer.body);
    let expected = format!("data: first\n\nid: {s}:2:u1\ndata: second\n\ndata: third\n\n");
    assert_eq!(answer.text(), expected);

    upstream.push(Reply::sse(&["data: {\"progress\":1}\n\n", "data: {}\n\n"]));
    let answer = client.post_read(&url, &MODERN_HEADERS, MODERN_CALL).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "data: {\"progress\":1}\n\ndata: {}\n\n");
}

#[tokio::test]
async fn sse_comments_and_data_event_retry_lines_pass_byte_for_byte() {
    let (upstream, _proxy, url, client) = proxied().await;
    upstream.push(Reply::sse(&[
        ": keep-alive\n\n",
        "retry: 5000\n\n",
        "event: message\nid: p1\ndata: {\"progress\":1}\n\n",
        ": keep-alive\n\n",
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\n\
         data: \"id\":2,\"result\":{\"tools\":[],\"x\":1.0}}\nretry: 250\n\n",
    ]));
    let answer = client.post_read(&url, &[], TOOLS_LIST).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    assert_eq!(answer.header("x-accel-buffering"), Some("no"));
    let s = stream_of(&answer.body);
    let expected = format!(
        ": keep-alive\n\nretry: 5000\n\n\
         id: {s}:1:p1\nevent: message\ndata: {{\"progress\":1}}\n\n\
         : keep-alive\n\n\
         event: message\ndata: {{\"jsonrpc\":\"2.0\",\n\
         data: \"id\":2,\"result\":{{\"tools\":[],\"x\":1.0}}}}\nretry: 250\n\n"
    );
    assert_eq!(answer.text(), expected);
}

#[tokio::test]
async fn sse_events_reach_the_client_while_the_upstream_holds_the_stream_open() {
    let (upstream, _proxy, url, client) = proxied().await;
    let (reply, events) = Reply::sse_stream();
    upstream.push(reply);
    let response = client.post(&url, &[], TOOLS_LIST).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut reader = SseReader::new(response);

    assert!(events.send("id: e1\ndata: {\"progress\":1}\n\n").await);
    let first = reader.next_block().await.expect("first event");
    let s = stream_of(&first);
    assert_eq!(first, format!("id: {s}:1:e1\ndata: {{\"progress\":1}}\n\n"));

    // The upstream sent nothing more and still holds the stream; now it sends the response.
    assert!(events.send("id: e2\ndata: done\n\n").await);
    let second = reader.next_block().await.expect("second event");
    assert_eq!(second, format!("id: {s}:2:e2\ndata: done\n\n"));
    drop(events);
    assert_eq!(
        reader.next_block().await,
        None,
        "stream ends with the upstream's"
    );
}

#[tokio::test]
async fn modern_client_disconnect_closes_the_upstream_stream() {
    let (upstream, _proxy, url, client) = proxied().await;
    let (reply, events) = Reply::sse_stream();
    upstream.push(reply);
    let response = client.post(&url, &MODERN_HEADERS, MODERN_CALL).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut reader = SseReader::new(response);
    assert!(events.send("data: {\"progress\":1}\n\n").await);
    reader.next_block().await.expect("first event");

    drop(reader);
    drop(client);
    tokio::time::timeout(WAIT, events.closed())
        .await
        .expect("the upstream sees its stream closed once the client went away");
}

/// The client that opened a legacy stream stops reading it (a stalled or vanished peer) while
/// the upstream keeps sending; the client resumes on a new connection. The stuck connection,
/// which drove the stream's pump, is never polled again: the resumed stream must go on live
/// anyway, through to the upstream's last event.
#[tokio::test]
async fn a_stream_resumed_while_its_first_connection_is_stuck_goes_on_to_the_end() {
    const CHUNKS: usize = 256;
    let upstream = TestUpstream::start().await;
    let proxy = start_proxy(&upstream.url()).await;
    let url = proxy_url(&proxy);
    let client = Client::new();
    let sid = initialize_session(&upstream, &client, &url).await;
    let (reply, events) = Reply::sse_stream();
    upstream.push(reply);
    // The first client: a raw connection with a small receive buffer, so that what the stuck
    // client holds is bounded whatever the machine's TCP autotuning allows.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(8 << 10).expect("SO_RCVBUF");
    let mut stuck = socket
        .connect(proxy.data_addr())
        .await
        .expect("connect to the proxy");
    let request = format!(
        "POST /mcp HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-session-id: {sid}\r\n\
         mcp-protocol-version: {LEGACY}\r\ncontent-length: {}\r\n\r\n{TOOLS_LIST}",
        proxy.data_addr(),
        TOOLS_LIST.len()
    );
    stuck
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    assert!(events.send("id: e0\ndata: {}\n\n").await);
    let mut seen = Vec::new();
    let first_id = loop {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, stuck.read(&mut buf))
            .await
            .expect("the first event within the wait")
            .expect("read");
        assert!(n > 0, "the proxy closed the stream");
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("id: "))
            .filter(|_| text.contains("\n\n"))
        {
            break id.trim().to_owned();
        }
    };
    let stream = first_id.split(':').next().expect("stream part").to_owned();

    // 16 MiB more, far beyond what hyper and the two sockets buffer for the stuck client.
    let feeder = tokio::spawn(async move {
        let data = "x".repeat(64 << 10);
        for i in 1..=CHUNKS {
            assert!(events.send(&format!("id: e{i}\ndata: {data}\n\n")).await);
        }
        assert!(
            events
                .send("id: end\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n\n")
                .await
        );
        events
    });
    // The stream stalls short of its end: the stuck connection holds its pump up.
    let tracker = proxy.manager().get(&sid).expect("session").streams()[0].clone();
    let stalled = async {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = tracker.last_seq();
            if now == last {
                return now;
            }
            last = now;
        }
    };
    let stalled_at = tokio::time::timeout(WAIT, stalled)
        .await
        .expect("the stream stalls");
    assert!(
        stalled_at < CHUNKS as u64 + 2,
        "the stuck client did not hold the stream up (at {stalled_at})"
    );

    // Resumed on a new connection after the last event the stuck client was handed (it may
    // still sit in buffers on the way): every event after it, then the response.
    let handed = tracker
        .last_event_ids()
        .client_event_id
        .expect("events were handed to the stuck client");
    let handed_seq: usize = handed
        .split(':')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a sequence number");
    let resumed = client
        .send(
            Method::GET,
            &url,
            &[
                ("mcp-session-id", sid.as_str()),
                ("mcp-protocol-version", LEGACY),
                ("last-event-id", handed.as_str()),
            ],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let mut resumed = SseReader::new(resumed);
    // Sequence n carries upstream event e{n-1}; the response is sequence CHUNKS + 2.
    for seq in handed_seq + 1..=CHUNKS + 1 {
        let block = resumed
            .next_block()
            .await
            .expect("a replayed or live event");
        let text = std::str::from_utf8(&block).expect("UTF-8");
        assert!(
            text.starts_with(&format!("id: {stream}:{seq}:e{}\n", seq - 1)),
            "sequence {seq}: {:?}",
            &text[..text.len().min(60)]
        );
    }
    let last = resumed.next_block().await.expect("the response");
    assert!(
        std::str::from_utf8(&last)
            .expect("UTF-8")
            .contains(":end\n"),
        "{last:?}"
    );
    let events = tokio::time::timeout(WAIT, feeder)
        .await
        .expect("the upstream got every event out")
        .expect("feeder");
    drop(events);
    assert_eq!(resumed.next_block().await, None, "ends with the upstream's");
    drop(stuck);
}

/// Common upstream servers close a keep-alive connection after 5 s idle (uvicorn's and Node's
/// default): a request the proxy writes on such a connection as the upstream closes it is lost
/// with a reset (seen in the elicitation stress run). The proxy retires idle upstream
/// connections before that, after `proxy.upstream_idle_timeout` (default 4 s).
#[tokio::test]
async fn an_upstream_connection_idle_past_the_idle_timeout_is_not_reused() {
    let upstream = TestUpstream::start().await;
    let proxy = start_proxy_with(&upstream.url(), |c| {
        c.proxy.threads = 1;
        c.proxy.upstream_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let url = proxy_url(&proxy);
    let client = Client::new();
    for expected in [1, 1] {
        let answer = client.post_read(&url, &[], TOOLS_LIST).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            upstream.connections_accepted(),
            expected,
            "back-to-back requests share one pooled connection"
        );
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let answer = client.post_read(&url, &[], TOOLS_LIST).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        upstream.connections_accepted(),
        2,
        "a connection idle past the idle timeout is not used again"
    );
    assert_eq!(
        proxy.proxy_stats().snapshot().upstream_idle_closed,
        1,
        "the retired connection is counted"
    );
}

/// A path that names no MCP endpoint (paths match exactly: `/mcp/` is not `/mcp`) answers 404
/// with a JSON-RPC error (-32600) the client can read, and nothing reaches the upstream.
#[tokio::test]
async fn a_path_that_names_no_endpoint_gets_404_with_a_json_rpc_error() {
    let (upstream, proxy, _url, client) = proxied().await;
    for path in ["/other", "/mcp/", "/mcp/x", "/"] {
        let url = format!("http://{}{path}", proxy.data_addr());
        let answer = client.post_read(&url, &[], INITIALIZE).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            answer.header("content-type"),
            Some("application/json"),
            "{path}"
        );
        assert_eq!(error_code(&answer), -32600, "{path}: {}", answer.text());
        assert_eq!(answer.json()["id"], serde_json::Value::Null, "{path}");
    }
    assert!(upstream.requests().is_empty(), "nothing was forwarded");
}

/// Address headers a client could spoof under other names never reach the upstream from an
/// untrusted client: the other address headers upstream frameworks read (`X-Real-IP`,
/// `True-Client-IP`, …) and underscore spellings of the forwarded ones (`x_forwarded_for`,
/// which CGI-style upstreams read as `HTTP_X_FORWARDED_FOR`). A trusted proxy's are kept.
#[tokio::test]
async fn other_address_headers_and_underscore_spellings_are_not_spoofable() {
    const ALIASES: [(&str, &str); 6] = [
        ("x_forwarded_for", "6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("true-client-ip", "6.6.6.6"),
        ("x-client-ip", "6.6.6.6"),
        ("x-forwarded-port", "443"),
        ("x_real_ip", "6.6.6.6"),
    ];
    for trusted in [false, true] {
        let upstream = TestUpstream::start().await;
        let proxy = start_proxy_with(&upstream.url(), |c| {
            if trusted {
                c.proxy.trusted_proxies = vec!["127.0.0.1".into()];
            }
        })
        .await;
        let mut all = MODERN_HEADERS.to_vec();
        all.extend_from_slice(&ALIASES);
        let answer = Client::new()
            .post_read(&proxy_url(&proxy), &all, MODERN_CALL)
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        let seen = &upstream.wait_for_requests(1).await[0];
        for (name, value) in ALIASES {
            let got = seen.header(name);
            if trusted {
                assert_eq!(got, Some(value), "a trusted proxy's {name} is kept");
            } else {
                assert_eq!(got, None, "an untrusted client's {name} is dropped");
            }
        }
        // The underscore spelling is no part of the list the proxy writes.
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    }
}
