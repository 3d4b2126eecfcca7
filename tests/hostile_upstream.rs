//! One hostile or broken upstream must not freeze a data-plane thread (issue 11, item 3): with
//! the daemon on one data-plane thread, a legacy stream flooded with large comment blocks, with
//! endless small keep-alives, or with endless duplicate events leaves the other connections on
//! that thread answered, and the daemon's memory within a bound set by its limits. Also: an
//! event with thousands of `id` lines costs the parser no memory per line.
//!
//! The daemon runs as a child process (its RSS is its own), in front of the Rust test upstream,
//! which sends the flood.

mod support;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use mcp_relay::sse::SseParser;
use support::{
    daemon_proc::{NotifySocket, PROC_WAIT, RelayProcess, addrs_of_ready_status, status_of},
    http::Client,
    upstream::{Reply, TestUpstream},
};

/// Counts the bytes this thread allocates (for the `id`-lines test).
struct CountingAlloc;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get() + layout.size()));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get() + new_size.saturating_sub(layout.size())));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocated() -> usize {
    ALLOCATED.with(Cell::get)
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"hostile-upstream-test","version":"0"}}}"#;
const INITIALIZE_RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"test-upstream","version":"0"}}}"#;
const CALL: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"flood","arguments":{}}}"#;
const MODERN_CALL: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"flood","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

/// Which era's stream the upstream floods: a legacy stream (in a session, read by a pump) or a
/// modern one (relayed by the client connection itself).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Era {
    Legacy,
    Modern,
}

/// The daemon's default `proxy.max_event_bytes`: the largest block it must take whole.
const MAX_EVENT_BYTES: u64 = 16 << 20;

/// The most a plain JSON request may wait behind the flood: generous (a correctness bound,
/// not a benchmark; on the unfixed daemon such requests waited 30 s and more).
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// JSON requests made while the flood runs.
const REQUESTS: u64 = 20;

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Waits (bounded) until `counter` reaches `n`.
async fn wait_for_count(what: &str, counter: &AtomicU64, n: u64) {
    let wait = async {
        while counter.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PROC_WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: fewer than {n} within {PROC_WAIT:?}"));
}

/// Runs a daemon with one data-plane thread, opens an `era` stream whose upstream sends
/// `first` once and then `flood` over and over, and checks, while it floods: that another
/// client's JSON requests on the same daemon are each answered within [`ANSWER_WAIT`], that the
/// stream's own client keeps receiving, and that the daemon's peak RSS stays within a bound
/// derived from its limits.
async fn flood_leaves_the_thread_serving(era: Era, first: &'static str, flood: Bytes) {
    let upstream = TestUpstream::start().await;
    let mut notify = NotifySocket::bind();
    let url = upstream.url();
    let relay = RelayProcess::spawn(
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
            "--threads",
            "1",
        ],
        &[("RUST_LOG", "warn")],
    );
    let ready = notify.wait_for("READY=1", PROC_WAIT).await;
    let (data, _, _) = addrs_of_ready_status(status_of(&ready).expect("status"));
    let url = format!("http://{data}/mcp");

    let client = Client::new();
    let (reply, events) = Reply::sse_stream_buffered(1);
    let (response, headers) = match era {
        Era::Legacy => {
            upstream.push(Reply::json(INITIALIZE_RESULT).session_id("UPSTREAM-1"));
            let init = client.post_read(&url, &[], INITIALIZE).await;
            assert_eq!(init.status, StatusCode::OK);
            let session = init
                .header("mcp-session-id")
                .expect("a proxy session id")
                .to_owned();
            let headers = vec![
                ("mcp-session-id", session),
                ("mcp-protocol-version", "2025-11-25".to_owned()),
            ];
            upstream.push(reply);
            (client.post(&url, &borrowed(&headers), CALL).await, headers)
        }
        Era::Modern => {
            let call = [
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "flood"),
            ];
            upstream.push(reply);
            let headers = vec![
                ("mcp-protocol-version", "2026-07-28".to_owned()),
                ("mcp-method", "ping".to_owned()),
            ];
            (client.post(&url, &call, MODERN_CALL).await, headers)
        }
    };
    assert_eq!(response.status(), StatusCode::OK);
    let headers = borrowed(&headers);

    // The stream's client reads everything it is sent.
    let received = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn({
        let received = received.clone();
        async move {
            let mut body = response.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    received.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
        }
    });
    // The upstream floods until the proxy drops the stream.
    let sent = Arc::new(AtomicU64::new(0));
    let flood_len = flood.len();
    let flooder = tokio::spawn({
        let sent = sent.clone();
        async move {
            if !events.send(first).await {
                return;
            }
            while events.send_bytes(flood.clone()).await {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    // At most one chunk waits in the channel: the proxy is reading the flood.
    wait_for_count("flood chunks taken by the upstream's connection", &sent, 3).await;

    let other = Client::new();
    let mut late = Vec::new();
    for n in 0..REQUESTS {
        let id = 100 + n;
        let ping = match era {
            Era::Legacy => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#),
            Era::Modern => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"ping","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}"#
            ),
        };
        match tokio::time::timeout(ANSWER_WAIT, other.post_read(&url, &headers, &ping)).await {
            Ok(answer) => {
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
                assert_eq!(answer.json()["id"], id);
            }
            Err(_) => {
                late.push(id);
                break;
            }
        }
    }
    // The stream itself keeps flowing (its client is not starved either) while memory stays
    // bounded: several more chunks go through before the peak is read.
    if late.is_empty() {
        let more = sent.load(Ordering::Relaxed) + 8;
        wait_for_count("flood chunks taken after the requests", &sent, more).await;
    }
    let flood_sent = sent.load(Ordering::Relaxed);
    let peak = proc_status_bytes(relay.pid(), "VmHWM");
    // The parser holds one block (at most `max_event_bytes` plus a read, in a buffer that may
    // have doubled), the stream holds at most one oversized block for its client, and the
    // connections' buffers hold a few more reads: a few times `max_event_bytes`, plus the
    // process's own baseline.
    let bound = 6 * MAX_EVENT_BYTES + (32 << 20);
    eprintln!(
        "flooded with {flood_sent} chunks of {flood_len} bytes: {} of {REQUESTS} requests \
         answered; peak RSS {} MiB (bound {} MiB)",
        REQUESTS - late.len() as u64,
        peak >> 20,
        bound >> 20
    );
    assert!(
        late.is_empty() && peak <= bound,
        "with the stream flooded ({flood_sent} chunks of {} bytes sent): request(s) {late:?} \
         not answered within {ANSWER_WAIT:?} (the upstream received {} requests); peak RSS {} \
         MiB (bound {} MiB)",
        flood_len,
        upstream.requests().len(),
        peak >> 20,
        bound >> 20,
    );
    wait_for_count(
        "bytes the flooded stream's client received",
        &received,
        first.len() as u64 + 1,
    )
    .await;
    flooder.abort();
    reader.abort();
    drop(relay);
}

fn borrowed<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn repeated(block: &str, bytes: usize) -> Bytes {
    Bytes::from(block.repeat(bytes / block.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_large_comment_blocks_leave_the_thread_serving() {
    let mut comment = vec![b':'];
    comment.resize(15_000_000, b'x');
    comment.extend_from_slice(b"\n\n");
    flood_leaves_the_thread_serving(Era::Legacy, ": hello\n\n", Bytes::from(comment)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_small_keep_alives_leave_the_thread_serving() {
    let flood = repeated(": keep-alive\n\n", 64 << 10);
    flood_leaves_the_thread_serving(Era::Legacy, ": hello\n\n", flood).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_duplicate_events_leave_the_thread_serving() {
    let event = "id: 1\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n";
    flood_leaves_the_thread_serving(Era::Legacy, event, repeated(event, 64 << 10)).await;
}

/// The same on a modern stream, which the client connection relays itself (`SseRelay`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_duplicate_events_on_a_modern_stream_leave_the_thread_serving() {
    let event = "id: 1\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n";
    flood_leaves_the_thread_serving(Era::Modern, event, repeated(event, 64 << 10)).await;
}

#[test]
fn an_event_with_thousands_of_id_lines_costs_no_memory_per_line() {
    let lines = 10_000;
    let mut input = "id: x\n".repeat(lines);
    input.push_str("data: 1\n\n");
    let mut parser = SseParser::new(1 << 20);
    parser.push(input.as_bytes());
    let before = allocated();
    let block = parser
        .next_block()
        .expect("a well-formed block")
        .expect("a complete block");
    let cost = allocated() - before;
    assert_eq!(block.id(), Some("x"));
    assert!(
        cost < 1024,
        "parsing a block of {lines} id lines ({} bytes) allocated {cost} bytes",
        input.len()
    );
    let mut out = bytes::BytesMut::new();
    block.write_with_id("s1:1:x", &mut out);
    assert_eq!(
        &out[..],
        b"id: s1:1:x\ndata: 1\n\n",
        "every upstream id line replaced"
    );
}

/// A block over `max_event_bytes` (a comment too) ends the stream as a broken upstream, before
/// the proxy holds it whole, and is counted (`mcp_relay_sse_upstream_malformed_total`).
#[tokio::test]
async fn an_oversized_comment_ends_the_stream_and_is_counted() {
    let upstream = TestUpstream::start().await;
    let proxy =
        support::start_proxy_with(&upstream.url(), |c| c.proxy.max_event_bytes = 1024).await;
    let url = support::proxy_url(&proxy);
    let (reply, events) = Reply::sse_stream();
    upstream.push(reply);
    let call = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "flood"),
    ];
    let response = Client::new().post(&url, &call, MODERN_CALL).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(events.send("data: before\n\n").await);
    let comment = format!(": {}", "x".repeat(4096));
    assert!(events.send(&comment).await);
    // The stream ends although the upstream holds it open, with the event before it intact.
    let body = tokio::time::timeout(PROC_WAIT, response.into_body().collect())
        .await
        .expect("the proxy ends the stream")
        .expect("a clean end")
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("data: before\n\n"), "{text}");
    assert!(!text.contains("xxxx"), "{text}");
    assert_eq!(proxy.proxy_stats().snapshot().upstream_streams_malformed, 1);
    drop(events);
}

/// An upstream that dies mid-stream (its body ends before the length it announced) ends the
/// client's stream cleanly after the events it did send, and is counted in
/// `mcp_relay_sse_upstream_broken_total`, as is a connection the TCP keep-alive probes find
/// dead (`proxy.upstream_tcp_keepalive_secs`).
#[tokio::test]
async fn an_upstream_that_dies_mid_stream_is_counted_as_broken() {
    let upstream = TestUpstream::start().await;
    let proxy = support::start_proxy(&upstream.url()).await;
    let url = support::proxy_url(&proxy);
    // Past the size read whole (BUFFERED_RESPONSE_BYTES): streamed, as any long SSE answer.
    upstream.push(Reply::sse_cut_short(1 << 20, "data: before\n\n"));
    let call = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "flood"),
    ];
    let response = Client::new().post(&url, &call, MODERN_CALL).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::time::timeout(PROC_WAIT, response.into_body().collect())
        .await
        .expect("the proxy ends the stream")
        .expect("a clean end")
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("data: before\n\n"));
    assert_eq!(proxy.proxy_stats().snapshot().upstream_streams_broken, 1);
}
