//! Criterion micro-benchmarks of the proxy's per-event and per-request hot paths, on realistic
//! inputs: SSE events are ~100-byte JSON-RPC `notifications/progress` messages framed the way
//! the MCP SDKs frame them (`id: <uuid>` / `event: message` / `data: …`, about 170 bytes), the
//! session map holds 10,000 sessions, request heads are what an SDK client sends.
//!
//!     cargo bench --bench hot_paths
//!     cargo bench --bench hot_paths -- --warm-up-time 1 --measurement-time 2   # quick form
//!     cargo bench --bench hot_paths -- pump/                                    # one group
//!
//! A full run takes about 3 minutes on a 2-core machine (1 s warm-up, 2 s measurement per
//! benchmark by default; command-line flags override).
//!
//! Groups (every benchmark calls the crate's public API, `mcp_relay::…`):
//!
//! - `tracker` — [`EventTracker`]: `record` (`Recording::Direct`) of a one-event read with a
//!   fresh upstream id (dedup window insert and eviction), with a repeated one (the duplicate
//!   check), without id; `ClientEventId::write` (the proxy's id); a resuming reader's
//!   `attach` + `read` of a full window of 256 events and `rewind` + `read` of 64 (the window
//!   filled by `record` (`Recording::Window`) 16 events per upstream read, as the pump fills it, so the
//!   reader hands out one slice per read); the live `read` of the 16 events of one read (one
//!   zero-copy slice); an empty `read`; `publish` (the reader's watch) and one event
//!   through the window as the pump and the reader handle it (`window_round`:
//!   `record` of a one-event read, `publish`, `read`), each with no task parked on the
//!   watches and with a task parked on each as in the daemon (`publish` then wakes a task on
//!   another thread; the `read` bumps the pump's watch only when the pump asked for room, which
//!   it does only when the window is full, so not here).
//! - `sse` — [`SseParser`] on one chunk of 64 events and on the same events CRLF-framed and cut
//!   into 67-byte chunks (cuts fall between CR and LF, inside field names and values, between
//!   the two line ends of the blank line); the [`SseBlock`] accessors the pump calls per event
//!   (`retry_ms`, `data`); writing a block with a new id (`write_with_id_from` with the
//!   tracker writing the id in place, as `record` does);
//!   `pump::is_response_to`, run on every event of a POST stream: on a progress
//!   notification (no `"id"` key in its data, so the memchr look skips the JSON parse, as for
//!   most events) and on the response itself (parsed).
//! - `sessions` — [`SessionManager`] with 10,000 sessions: `get` and `resume` of a live id;
//!   `create_session` (id minting, record for the worker, insert); `open_stream` +
//!   `close_stream` in a session; `Session::stream` among 20 streams; `StreamId::mint` (one
//!   `getrandom` call; `SessionId::mint` is the same); `ClientEventId::parse` of a
//!   `Last-Event-ID` `<stream>:<seq>:<upstream id>`.
//! - `headers` — `copy_end_to_end` of an SDK client's POST head (with and without
//!   `Connection`) and of an upstream SSE response head; `era::peek_message` of a `tools/call`
//!   and an `initialize` body; `era::detect`; `check_mirrored_headers`;
//!   the whole per-request head work of a legacy POST (`request_head`: version header, peek,
//!   detect, `resume`, request build, header copy, session id mapping, `Last-Event-ID` check)
//!   and of its SSE answer (`response_head`), composed of the public calls `Proxy::serve` makes,
//!   in its order.
//! - `pump` — the per-event path end to end, one upstream read of 1, 16 or 64 events per
//!   iteration, reported per event. `legacy_get`/`legacy_post`: what `pump::run` does per read
//!   (parse every block of the read into a queue, noting `retry_ms`, and for `legacy_post` the
//!   `pump::is_response_to`; one `record` for the whole read — admit, encode and
//!   window under one lock; one `relay::account`; one `publish`), then the real
//!   `pump::reader_body` polled by hand until pending, as the client connection does (it gets
//!   the read's events as one slice). `modern`: what `SseRelay` does per read (parse into a
//!   queue, one `record` (`Recording::Direct`) into the output, one `relay::account`, one frame).
//!
//! - `auth` — a resource-server route's token check ([`mcp_relay::proxy::auth`]) with the
//!   issuer's key already fetched (RS256, 2048-bit, the key oidc-provider uses): a token seen
//!   before (`seen_before`: the accepted-token cache), a token seen for the first time
//!   (`first_sight`: header, key lookup, RSA signature, claims; more tokens than the cache holds,
//!   cycled, so each is a miss; minting them takes a few seconds first), and no token.
//!
//! What is private and so composed from the nearest public calls: `pump::run` (it needs a live
//! hyper `Incoming` body; mirrored step by step in [`LegacyStream::round`]; the reader always
//! keeps up there, so its wait for room — `want_room`, a wait on the `consumed` watch — never
//! runs), `SseRelay::drain_parser`/`relay_blocks` (mirrored in
//! [`ModernStream::round`]) and `Proxy::serve` (mirrored in the `headers` composites). The
//! `pump` rounds poll the reader body with a no-op waker, so the daemon's cross-task wake-up
//! (pump → client connection) is not in them; the `tracker` group's `*_parked` benchmarks
//! measure what one wake costs the side that wakes, and `benches/sse_stream.rs` measures whole
//! streams.
//!
//! The SessionManagers run their PersistenceWorker (memory store, 100 ms flushes) on a
//! one-thread runtime, so the worker's queue is drained as in the daemon.

use mcp_relay::protocol::ClientEventId;
use mcp_relay::session::tracker::Recording;
use std::{
    collections::VecDeque,
    hint::black_box,
    pin::Pin,
    sync::{Arc, LazyLock},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Uri, header};
use http_body::Body as _;
use http_body_util::Full;
use mcp_relay::{
    config::ProxyConfig,
    protocol::{
        era::{self, Era},
        headers::{LAST_EVENT_ID, MCP_PROTOCOL_VERSION, MCP_SESSION_ID},
    },
    proxy::{
        Proxy, headers, pump, relay,
        stats::ProxyStats,
        upstream::{Upstream, UpstreamConnections},
    },
    session::{
        EventTracker, PersistenceWorker, Read, Session, SessionConfig, SessionId, SessionManager,
        StreamId, StreamKind, TrackerLimits, WorkerConfig, store::MemoryStore,
    },
    sse::{SseBlock, SseParser},
};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

const UPSTREAM_URL: &str = "http://127.0.0.1:8000/mcp";
const PROTOCOL_VERSION: &str = "2025-11-25";
/// Distinct upstream events generated; more than the default dedup window (1024), so cycling
/// through them never meets an id still remembered.
const EVENT_POOL: usize = 4096;
/// `max_event_bytes` default.
const MAX_EVENT_BYTES: usize = 16 << 20;

/// A deterministic 64-bit mix (splitmix64), to make ids look random without a RNG dependency.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A UUID-shaped upstream event id (the Python SDK's event stores mint `uuid4()`s).
fn upstream_id(n: u64) -> String {
    let (a, b) = (mix(n), mix(n ^ 0xA5A5_A5A5));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// The JSON-RPC progress notification of event `n` (~105 bytes).
fn progress_json(n: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":"tok-7","progress":{n},"total":100000}}}}"#
    )
}

/// One SSE block as an SDK server writes it: `id`, `event: message`, `data`, blank line.
fn progress_event(n: u64, id: Option<&str>, eol: &str) -> String {
    let mut s = String::with_capacity(200);
    if let Some(id) = id {
        s.push_str("id: ");
        s.push_str(id);
        s.push_str(eol);
    }
    s.push_str("event: message");
    s.push_str(eol);
    s.push_str("data: ");
    s.push_str(&progress_json(n));
    s.push_str(eol);
    s.push_str(eol);
    s
}

/// `count` consecutive events (ids `first..first + count`) as one byte stream.
fn event_stream(first: u64, count: usize, eol: &str) -> Vec<u8> {
    (first..first + count as u64)
        .flat_map(|n| progress_event(n, Some(&upstream_id(n)), eol).into_bytes())
        .collect()
}

/// `EVENT_POOL` distinct events cut into chunks of `per_chunk` events (one upstream read each).
fn event_chunks(per_chunk: usize) -> Vec<Bytes> {
    (0..EVENT_POOL / per_chunk)
        .map(|c| Bytes::from(event_stream((c * per_chunk) as u64, per_chunk, "\n")))
        .collect()
}

/// Parses `bytes` completely into blocks.
fn parse_all(bytes: &[u8]) -> Vec<SseBlock> {
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    parser.push(bytes);
    let mut out = Vec::new();
    while let Some(block) = parser.next_block().expect("well-formed SSE") {
        out.push(block);
    }
    out
}

/// One parsed progress event with an upstream id.
fn one_block(n: u64) -> SseBlock {
    let mut blocks = parse_all(progress_event(n, Some(&upstream_id(n)), "\n").as_bytes());
    assert_eq!(blocks.len(), 1);
    blocks.pop().expect("one block")
}

fn tracker() -> EventTracker {
    EventTracker::new(
        Some(SessionId::mint().expect("random")),
        StreamId::mint().expect("random"),
        StreamKind::Post,
        TrackerLimits::default(),
    )
}

/// The `EVENT_POOL` events parsed, `per_read` to an upstream read (one queue per read, as
/// the pump and `SseRelay` collect a read's blocks).
fn parsed_reads(per_read: usize) -> Vec<VecDeque<SseBlock>> {
    event_chunks(per_read)
        .iter()
        .map(|chunk| parse_all(chunk).into())
        .collect()
}

/// Records one upstream read of fresh events into `tracker`'s window, as the pump does.
fn record_read(tracker: &EventTracker, read: &VecDeque<SseBlock>, scratch: &mut BytesMut) {
    let mut blocks = read.clone();
    let recorded = tracker.record(&mut blocks, scratch, Recording::Window);
    assert!(
        recorded.forwarded == read.len() as u64 && !recorded.window_full,
        "the whole read was recorded: {recorded:?}"
    );
}

fn events(read: Read) -> Vec<Bytes> {
    match read {
        Read::Events(events) => events,
        other => panic!("expected events, got {other:?}"),
    }
}

/// The runtime the PersistenceWorkers run on (one thread: the machine has two cores).
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
});

/// A SessionManager as the daemon builds it (default settings), its worker flushing to the
/// memory store every 100 ms.
fn manager() -> Arc<SessionManager> {
    let (worker, handle) =
        PersistenceWorker::new(Arc::new(MemoryStore::new()), WorkerConfig::default());
    RUNTIME.spawn(worker.run(CancellationToken::new()));
    Arc::new(SessionManager::new(SessionConfig::default(), handle))
}

/// An upstream session id as the Python SDK mints it (`uuid4().hex`).
fn upstream_session_id(n: u64) -> HeaderValue {
    HeaderValue::from_str(&upstream_id(n).replace('-', "")).expect("header value")
}

/// A manager holding `count` sessions, and their ids.
fn manager_with_sessions(count: usize) -> (Arc<SessionManager>, Vec<Arc<Session>>) {
    let manager = manager();
    let upstream: Arc<str> = UPSTREAM_URL.into();
    let sessions = (0..count as u64)
        .map(|n| {
            manager
                .create_session(
                    upstream_session_id(n),
                    "/mcp".into(),
                    upstream.clone(),
                    PROTOCOL_VERSION,
                )
                .expect("random")
        })
        .collect();
    (manager, sessions)
}

/// The head of a legacy `tools/call` POST as the Python SDK's httpx client sends it.
fn client_post_head(session: &str, with_connection: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    let pairs: [(&str, &str); 10] = [
        ("host", "127.0.0.1:8080"),
        ("accept", "application/json, text/event-stream"),
        ("accept-encoding", "gzip, deflate"),
        ("user-agent", "python-httpx/0.28.1"),
        ("content-type", "application/json"),
        ("content-length", "150"),
        ("mcp-protocol-version", PROTOCOL_VERSION),
        ("mcp-session-id", session),
        (
            "authorization",
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJl",
        ),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_static(k),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    if with_connection {
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    h
}

/// The head of an SSE answer from a uvicorn/starlette MCP server.
fn upstream_sse_response_head() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("date", "Tue, 14 Apr 2026 10:00:00 GMT"),
        ("server", "uvicorn"),
        ("cache-control", "no-cache, no-transform"),
        ("connection", "keep-alive"),
        ("x-accel-buffering", "no"),
        ("content-type", "text/event-stream"),
        ("mcp-session-id", "9f1c2e7a4b6d48e1a3c5f7b9d1e3a5c7"),
        ("transfer-encoding", "chunked"),
    ] {
        h.append(
            http::HeaderName::from_static(k),
            HeaderValue::from_static(v),
        );
    }
    h
}

const TOOLS_CALL: &[u8] = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"longRunningOperation","arguments":{"duration":10,"steps":50},"_meta":{"progressToken":"tok-7"}}}"#;
/// The response ending a `tools/call` POST stream (what `is_response_to` looks for).
const RESPONSE: &str = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"Long running operation completed. Duration: 10 seconds, Steps: 50."}],"isError":false}}"#;
const INITIALIZE: &[u8] = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"sampling":{},"roots":{"listChanged":true}},"clientInfo":{"name":"mcp","version":"0.1.0"}}}"#;

/// One event through the window at one event per upstream read, as `pump::run` and the
/// reader body do it: `record` of the read's block (queued in the pump's reused
/// `pending`), `publish`, then the reader's `read` (which bumps no watch of the pump's: the
/// pump asks for room only when the window is full). Returns the bytes read.
fn window_round(
    t: &EventTracker,
    reader: u64,
    pending: &mut VecDeque<SseBlock>,
    scratch: &mut BytesMut,
    block: &SseBlock,
) -> usize {
    pending.push_back(block.clone());
    let recorded = t.record(pending, scratch, Recording::Window);
    assert!(
        recorded.forwarded == 1 && !recorded.window_full,
        "the reader keeps up"
    );
    t.publish();
    let got = events(t.read(reader));
    assert_eq!(got.len(), 1);
    got[0].len()
}

// ---------------------------------------------------------------------------------------------
// The per-event paths, composed
// ---------------------------------------------------------------------------------------------

/// A legacy stream in a session: the pump's side mirrored from `pump::run`, the client's side
/// the real `pump::reader_body`.
struct LegacyStream {
    manager: Arc<SessionManager>,
    stats: Arc<ProxyStats>,
    tracker: Arc<EventTracker>,
    body: axum::body::Body,
    parser: SseParser,
    scratch: BytesMut,
    /// The blocks parsed from the current read (the pump's `pending`, reused across reads).
    pending: VecDeque<SseBlock>,
    /// The pump's backpressure and interrupt receivers (not read here: the reader keeps up, so
    /// the pump never waits for room; held so the channel has the daemon's receivers).
    _room: tokio::sync::watch::Receiver<u64>,
    _consumed: tokio::sync::watch::Receiver<u64>,
    request_id: Option<Box<RawValue>>,
    response_seen: bool,
    retry_hint: Option<u64>,
}

impl LegacyStream {
    fn new(request_id: Option<&str>) -> Self {
        let manager = manager();
        let session = manager
            .create_session(
                upstream_session_id(1),
                "/mcp".into(),
                UPSTREAM_URL.into(),
                PROTOCOL_VERSION,
            )
            .expect("random");
        let kind = if request_id.is_some() {
            StreamKind::Post
        } else {
            StreamKind::Get
        };
        let tracker = manager.open_stream(Some(&session), kind).expect("random");
        let reader = tracker.attach(None).expect("attach");
        let proxy = Arc::new(Proxy::new(
            ProxyConfig::new(Uri::from_static(UPSTREAM_URL)),
            manager.clone(),
        ));
        let stats = proxy.stats().clone();
        let body = pump::reader_body(
            tracker.clone(),
            reader,
            None,
            proxy.legacy_streams().clone(),
        );
        Self {
            _room: tracker.consumed(),
            _consumed: tracker.consumed(),
            manager,
            stats,
            tracker,
            body,
            parser: SseParser::new(MAX_EVENT_BYTES),
            scratch: BytesMut::new(),
            pending: VecDeque::new(),
            request_id: request_id.map(|id| RawValue::from_string(id.to_owned()).expect("JSON id")),
            response_seen: false,
            retry_hint: None,
        }
    }

    /// One upstream read through the pump, then the client connection polling the reader
    /// body until it is pending. Returns the bytes the client got.
    fn round(&mut self, chunk: &[u8]) -> usize {
        self.parser.push(chunk);
        while let Some(block) = self.parser.next_block().expect("well-formed SSE") {
            if let Some(ms) = block.retry_ms() {
                self.retry_hint = Some(ms);
            }
            self.response_seen =
                self.response_seen || pump::is_response_to(&block, self.request_id.as_deref());
            self.pending.push_back(block);
        }
        // Everything parsed from this read, recorded under one lock.
        let recorded = self
            .tracker
            .record(&mut self.pending, &mut self.scratch, Recording::Window);
        relay::account(&self.tracker, &self.manager, &self.stats, &recorded);
        assert!(!recorded.window_full, "the reader keeps up");
        self.tracker.publish();
        let mut sent = 0;
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            match Pin::new(&mut self.body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => sent += frame.data_ref().map_or(0, Bytes::len),
                Poll::Ready(Some(Err(err))) => panic!("reader body failed: {err}"),
                Poll::Ready(None) => panic!("reader body ended"),
                Poll::Pending => {
                    assert!(
                        sent > chunk.len(),
                        "the client got every event, re-identified"
                    );
                    return sent;
                }
            }
        }
    }
}

/// A modern (sessionless) stream: `SseRelay`'s per-read work mirrored.
struct ModernStream {
    manager: Arc<SessionManager>,
    stats: ProxyStats,
    tracker: Arc<EventTracker>,
    parser: SseParser,
    /// The blocks parsed from the current read (`SseRelay::blocks`).
    blocks: VecDeque<SseBlock>,
    out: BytesMut,
}

impl ModernStream {
    fn new() -> Self {
        let manager = manager();
        let tracker = manager.open_stream(None, StreamKind::Post).expect("random");
        Self {
            manager,
            stats: ProxyStats::default(),
            tracker,
            parser: SseParser::new(MAX_EVENT_BYTES),
            blocks: VecDeque::new(),
            out: BytesMut::new(),
        }
    }

    /// One upstream read relayed (`drain_parser`, `relay_blocks`): returns the frame the
    /// client gets.
    fn round(&mut self, chunk: &[u8]) -> Bytes {
        self.parser.push(chunk);
        while let Some(block) = self.parser.next_block().expect("well-formed SSE") {
            self.blocks.push_back(block);
        }
        if !self.blocks.is_empty() {
            let recorded = self
                .tracker
                .record(&mut self.blocks, &mut self.out, Recording::Direct);
            relay::account(&self.tracker, &self.manager, &self.stats, &recorded);
        }
        self.out.split().freeze()
    }
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

fn bench_tracker(c: &mut Criterion) {
    let ids: Vec<String> = (0..EVENT_POOL as u64).map(upstream_id).collect();
    let mut g = c.benchmark_group("tracker");
    g.throughput(Throughput::Elements(1));

    // Admission (dedup and seq) through the real recording path: one-event reads recorded
    // straight into the output (`Recording::Direct`, no window), the output cleared each time.
    let blocks: Vec<SseBlock> = parsed_reads(1).into_iter().flatten().collect();
    let mut one = VecDeque::with_capacity(1);
    let mut out = BytesMut::with_capacity(512);
    let mut record_one = |t: &EventTracker, block: &SseBlock| {
        one.push_back(block.clone());
        out.clear();
        black_box(t.record(&mut one, &mut out, Recording::Direct))
    };
    let t = tracker();
    let mut i = 0;
    g.bench_function("record_direct/1_event_fresh_id", |b| {
        b.iter(|| {
            i = (i + 1) % EVENT_POOL;
            record_one(&t, black_box(&blocks[i]))
        })
    });

    let t = tracker();
    let window = TrackerLimits::default().dedup_ids;
    for block in &blocks[..window] {
        record_one(&t, block);
    }
    assert_eq!(record_one(&t, &blocks[0]).duplicates, 1);
    let mut i = 0;
    g.bench_function("record_direct/1_event_duplicate_id", |b| {
        b.iter(|| {
            i = (i + 1) % window;
            record_one(&t, black_box(&blocks[i]))
        })
    });

    let t = tracker();
    let no_id = parse_all(progress_event(1, None, "\n").as_bytes());
    g.bench_function("record_direct/1_event_no_id", |b| {
        b.iter(|| record_one(&t, black_box(&no_id[0])))
    });

    let mut out = BytesMut::with_capacity(128);
    let mut seq = 0u64;
    let stream = StreamId::mint().expect("random");
    g.bench_function("client_event_id/with_upstream_id", |b| {
        b.iter(|| {
            seq += 1;
            out.clear();
            ClientEventId::write(
                stream.as_str(),
                black_box(seq),
                Some(black_box(&ids[7])),
                &mut out,
            );
            black_box(&out);
        })
    });

    // A resuming client: attach after the 256 events of a full window, read them all. The
    // window was filled as the pump fills it, 16 events per upstream read: 16 slices.
    let reads16 = parsed_reads(16);
    let mut scratch = BytesMut::new();
    let t = tracker();
    for read in &reads16[..256 / 16] {
        record_read(&t, read, &mut scratch);
    }
    let last = t.last_seq();
    assert_eq!(last, 256);
    g.throughput(Throughput::Elements(256));
    g.bench_function("attach_read/replay_256", |b| {
        b.iter(|| {
            let reader = t.attach(Some(black_box(last - 256))).expect("in window");
            black_box(events(t.read(reader)))
        })
    });

    // A forced replay (ForceReplay): rewind the attached reader by 64, read them again.
    let reader = t.attach(None).expect("attach");
    g.throughput(Throughput::Elements(64));
    g.bench_function("rewind_read/64", |b| {
        b.iter(|| {
            t.rewind(black_box(last - 64)).expect("in window");
            black_box(events(t.read(reader)))
        })
    });

    // The live read: the pump recorded one upstream read of 16 events, the reader takes them
    // (one slice). Only the read is timed (the recording is not); an `Instant` pair per
    // iteration adds ~40 ns.
    let t = tracker();
    let reader = t.attach(None).expect("attach");
    let _appended = t.appended();
    let _consumed = t.consumed();
    let mut n = 0usize;
    g.throughput(Throughput::Elements(16));
    g.bench_function("read_live/16", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                n = (n + 1) % reads16.len();
                record_read(&t, &reads16[n], &mut scratch);
                t.publish();
                let start = Instant::now();
                let got = t.read(black_box(reader));
                timed += start.elapsed();
                assert!(matches!(&got, Read::Events(e) if e.len() == 1));
            }
            timed
        })
    });

    let t = tracker();
    let reader = t.attach(None).expect("attach");
    g.throughput(Throughput::Elements(1));
    g.bench_function("read/nothing_new", |b| {
        b.iter(|| black_box(t.read(black_box(reader))))
    });
    // The watches: `publish` bumps the reader's (`appended`) once per upstream read; a `read`
    // that takes events bumps the pump's (`consumed`) only when the pump asked for room, which
    // `pump::run` does only when the window is full. First with nobody parked on them, then
    // with a task parked on each as in the daemon (the bump then wakes a task on another
    // thread).
    let _receivers = (t.appended(), t.consumed());
    g.bench_function("publish/no_task_parked", |b| b.iter(|| t.publish()));
    let blocks: Vec<SseBlock> = reads16.iter().flatten().cloned().collect();
    let mut pending = VecDeque::new();
    let mut n = 0usize;
    g.bench_function("window_round/1_event_no_task_parked", |b| {
        b.iter(|| {
            n = (n + 1) % EVENT_POOL;
            black_box(window_round(
                &t,
                reader,
                &mut pending,
                &mut scratch,
                &blocks[n],
            ))
        })
    });
    let t = tracker();
    let reader = t.attach(None).expect("attach");
    let (mut appended, mut consumed) = (t.appended(), t.consumed());
    RUNTIME.spawn(async move { while appended.changed().await.is_ok() {} });
    RUNTIME.spawn(async move { while consumed.changed().await.is_ok() {} });
    g.bench_function("publish/reader_task_parked", |b| b.iter(|| t.publish()));
    g.bench_function("window_round/1_event_tasks_parked", |b| {
        b.iter(|| {
            n = (n + 1) % EVENT_POOL;
            black_box(window_round(
                &t,
                reader,
                &mut pending,
                &mut scratch,
                &blocks[n],
            ))
        })
    });
    g.finish();
}

fn bench_sse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse");

    let lf = event_stream(0, 64, "\n");
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    g.throughput(Throughput::Bytes(lf.len() as u64));
    g.bench_function("parse/64_events_one_chunk", |b| {
        b.iter(|| {
            parser.push(black_box(&lf));
            let mut count = 0;
            while let Some(block) = parser.next_block().expect("well-formed") {
                black_box(&block);
                count += 1;
            }
            assert_eq!(count, 64);
        })
    });

    let crlf = event_stream(0, 64, "\r\n");
    let pieces: Vec<&[u8]> = crlf.chunks(67).collect();
    assert!(
        pieces
            .iter()
            .any(|p| p.ends_with(b"\r") && !p.ends_with(b"\r\n\r")),
        "some cut falls between the CR and LF of a field line"
    );
    assert!(
        pieces.iter().any(|p| p.ends_with(b"\r\n\r")),
        "some cut falls inside the blank line that ends an event"
    );
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    g.throughput(Throughput::Bytes(crlf.len() as u64));
    g.bench_function("parse/64_events_crlf_67B_chunks", |b| {
        b.iter(|| {
            let mut count = 0;
            for piece in &pieces {
                parser.push(black_box(piece));
                while let Some(block) = parser.next_block().expect("well-formed") {
                    black_box(&block);
                    count += 1;
                }
            }
            assert_eq!(count, 64);
        })
    });

    let block = one_block(42);
    g.throughput(Throughput::Elements(1));
    g.bench_function("block/retry_ms", |b| {
        b.iter(|| black_box(black_box(&block).retry_ms()))
    });
    g.bench_function("block/data", |b| {
        b.iter(|| black_box(black_box(&block).data().len()))
    });

    let stream = StreamId::mint().expect("random");
    let up = block.id().expect("id").to_owned();
    let mut out = BytesMut::new();
    let mut seq = 0u64;
    g.throughput(Throughput::Bytes(block.raw().len() as u64));
    g.bench_function("write_with_id_from/tracker_id", |b| {
        b.iter(|| {
            seq += 1;
            black_box(&block).write_with_id_from(&mut out, |o| {
                ClientEventId::write(stream.as_str(), seq, Some(&up), o)
            });
            black_box(out.split().freeze())
        })
    });

    let request_id = RawValue::from_string("7".to_owned()).expect("JSON");
    let request_id = Some(&*request_id);
    let response = parse_all(
        format!(
            "id: {}\nevent: message\ndata: {}\n\n",
            upstream_id(4242),
            RESPONSE
        )
        .as_bytes(),
    )
    .pop()
    .expect("one block");
    assert!(!pump::is_response_to(&block, request_id));
    assert!(pump::is_response_to(&response, request_id));
    g.throughput(Throughput::Elements(1));
    g.bench_function("is_response_to/progress_event", |b| {
        b.iter(|| black_box(pump::is_response_to(black_box(&block), request_id)))
    });
    g.bench_function("is_response_to/response_event", |b| {
        b.iter(|| black_box(pump::is_response_to(black_box(&response), request_id)))
    });
    g.finish();
}

fn bench_sessions(c: &mut Criterion) {
    const SESSIONS: usize = 10_000;
    let (manager, sessions) = manager_with_sessions(SESSIONS);
    let ids: Vec<String> = sessions.iter().map(|s| s.id().to_string()).collect();
    let mut g = c.benchmark_group("sessions");
    g.throughput(Throughput::Elements(1));

    let mut i = 0;
    g.bench_function("get/hit_of_10k", |b| {
        b.iter(|| {
            i = (i + 7919) % SESSIONS;
            black_box(manager.get(black_box(&ids[i])))
        })
    });
    g.bench_function("resume/hit_of_10k", |b| {
        b.iter(|| {
            i = (i + 7919) % SESSIONS;
            black_box(manager.resume(black_box(&ids[i]), Some(PROTOCOL_VERSION)))
        })
    });

    // Creating sessions in a map of 10,000; every 512 the new ones are ended (not timed), so
    // the map stays at its size.
    let upstream: Arc<str> = UPSTREAM_URL.into();
    let usid = upstream_session_id(99);
    g.bench_function("create_session/into_10k", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut made = Vec::with_capacity(512);
            let mut left = iters;
            while left > 0 {
                let n = left.min(512);
                let start = Instant::now();
                for _ in 0..n {
                    made.push(
                        manager
                            .create_session(
                                usid.clone(),
                                "/mcp".into(),
                                upstream.clone(),
                                PROTOCOL_VERSION,
                            )
                            .expect("random"),
                    );
                }
                timed += start.elapsed();
                for s in made.drain(..) {
                    manager.end_session(s.id().as_str());
                }
                left -= n;
            }
            timed
        })
    });

    let session = &sessions[0];
    g.bench_function("open_close_stream", |b| {
        b.iter(|| {
            let tracker = manager
                .open_stream(Some(black_box(session)), StreamKind::Post)
                .expect("random");
            manager.close_stream(&tracker);
            black_box(tracker)
        })
    });

    // A session with 20 streams (a busy client's tool calls).
    let session = &sessions[1];
    let streams: Vec<String> = (0..20)
        .map(|_| {
            manager
                .open_stream(Some(session), StreamKind::Post)
                .expect("random")
                .stream()
                .to_string()
        })
        .collect();
    let mut i = 0;
    g.bench_function("stream_lookup/of_20", |b| {
        b.iter(|| {
            i = (i + 7) % streams.len();
            black_box(session.stream(black_box(&streams[i])))
        })
    });

    g.bench_function("mint/stream_id", |b| b.iter(|| black_box(StreamId::mint())));

    let with_up = format!("{}:1234:{}", streams[0], upstream_id(1234));
    g.bench_function("last_event_id_parse/with_upstream_id", |b| {
        b.iter(|| black_box(ClientEventId::parse(black_box(&with_up))))
    });
    g.finish();
}

fn bench_headers(c: &mut Criterion) {
    let (manager, sessions) = manager_with_sessions(10_000);
    let session = &sessions[1234];
    let upstream = Upstream::new(
        &ProxyConfig::new(Uri::from_static(UPSTREAM_URL)),
        UpstreamConnections::new(usize::MAX),
        Arc::default(),
    );
    let mut g = c.benchmark_group("headers");
    g.throughput(Throughput::Elements(1));

    for (name, head) in [
        (
            "copy_end_to_end/client_post_with_connection",
            client_post_head(session.id().as_str(), true),
        ),
        (
            "copy_end_to_end/client_post_no_connection",
            client_post_head(session.id().as_str(), false),
        ),
        (
            "copy_end_to_end/upstream_sse_response",
            upstream_sse_response_head(),
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut dst = HeaderMap::new();
                headers::copy_end_to_end(black_box(&head), &mut dst);
                black_box(dst)
            })
        });
    }

    g.bench_function("peek_message/tools_call", |b| {
        b.iter(|| black_box(era::peek_message(black_box(TOOLS_CALL))))
    });
    g.bench_function("peek_message/initialize", |b| {
        b.iter(|| black_box(era::peek_message(black_box(INITIALIZE))))
    });
    let peek = era::peek_message(TOOLS_CALL).expect("JSON");
    g.bench_function("detect/header", |b| {
        b.iter(|| black_box(era::detect(black_box(Some(PROTOCOL_VERSION)), Some(&peek))))
    });
    let modern_body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let modern_peek = era::peek_message(modern_body).expect("JSON");
    let mut modern_head = HeaderMap::new();
    modern_head.insert(
        &mcp_relay::protocol::headers::MCP_METHOD,
        HeaderValue::from_static("tools/call"),
    );
    modern_head.insert(
        &mcp_relay::protocol::headers::MCP_NAME,
        HeaderValue::from_static("=?base64?ZWNobw==?="),
    );
    assert_eq!(
        era::check_mirrored_headers(&modern_head, &modern_peek),
        Ok(())
    );
    g.bench_function("check_mirrored_headers/base64_name", |b| {
        b.iter(|| {
            black_box(era::check_mirrored_headers(
                black_box(&modern_head),
                &modern_peek,
            ))
        })
    });

    // What `Proxy::serve` does with the head of a legacy POST before sending it upstream.
    let head = client_post_head(session.id().as_str(), true);
    let body = Bytes::from_static(TOOLS_CALL);
    g.bench_function("request_head/legacy_post", |b| {
        b.iter(|| {
            let head = black_box(&head);
            let peek = era::peek_message(black_box(&body)).expect("JSON");
            let header_version = head
                .get(&MCP_PROTOCOL_VERSION)
                .and_then(|v| v.to_str().ok());
            let (detected, version) = era::detect(header_version, Some(&peek));
            assert_eq!(detected, Era::Legacy);
            let sid = head.get(&MCP_SESSION_ID).and_then(|v| v.to_str().ok());
            let session = manager
                .resume(sid.expect("session header"), header_version)
                .expect("live session");
            let mut request = http::Request::new(Full::new(body.clone()));
            *request.method_mut() = Method::POST;
            *request.uri_mut() = upstream.uri_for(None);
            headers::copy_end_to_end(head, request.headers_mut());
            request
                .headers_mut()
                .insert(&MCP_SESSION_ID, session.upstream_session_id().clone());
            if let Some(up) = head
                .get(&LAST_EVENT_ID)
                .and_then(|id| id.to_str().ok())
                .and_then(ClientEventId::parse)
                .and_then(|id| id.upstream_id)
                .and_then(|id| HeaderValue::from_str(id).ok())
            {
                request.headers_mut().insert(&LAST_EVENT_ID, up);
            }
            black_box((request, version, peek.id))
        })
    });

    // What it does with the head of the upstream's SSE answer.
    let response = upstream_sse_response_head();
    g.bench_function("response_head/legacy_sse", |b| {
        b.iter(|| {
            let response = black_box(&response);
            let mut client = HeaderMap::with_capacity(response.len() + 1);
            headers::copy_end_to_end(response, &mut client);
            if response.contains_key(&MCP_SESSION_ID)
                && !session.is_ended()
                && let Ok(v) = HeaderValue::from_str(session.id().as_str())
            {
                client.insert(&MCP_SESSION_ID, v);
            }
            let is_sse = response
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
            black_box((client, is_sse))
        })
    });
    g.finish();
}

fn bench_pump(c: &mut Criterion) {
    let mut g = c.benchmark_group("pump");
    for per_read in [1usize, 16, 64] {
        let chunks = event_chunks(per_read);
        g.throughput(Throughput::Elements(per_read as u64));

        let mut stream = LegacyStream::new(None);
        let mut i = 0;
        g.bench_function(format!("legacy_get/{per_read}_per_read"), |b| {
            b.iter(|| {
                i = (i + 1) % chunks.len();
                black_box(stream.round(black_box(&chunks[i])))
            })
        });
        assert_eq!(stream.tracker.duplicates_dropped(), 0);

        let mut stream = LegacyStream::new(Some("7"));
        let mut i = 0;
        g.bench_function(format!("legacy_post/{per_read}_per_read"), |b| {
            b.iter(|| {
                i = (i + 1) % chunks.len();
                black_box(stream.round(black_box(&chunks[i])))
            })
        });
        assert!(!stream.response_seen && stream.retry_hint.is_none());

        let mut stream = ModernStream::new();
        let mut i = 0;
        g.bench_function(format!("modern/{per_read}_per_read"), |b| {
            b.iter(|| {
                i = (i + 1) % chunks.len();
                black_box(stream.round(black_box(&chunks[i])))
            })
        });
        assert_eq!(stream.tracker.duplicates_dropped(), 0);
    }
    g.finish();
}

/// What routing adds to each request (issue 13): the route table loaded, a pick (power of two
/// choices; a pool of one is not drawn from), the request counted outstanding at its endpoint,
/// its latency recorded in the endpoint's Prometheus histogram, its outcome counted, the guard
/// dropped.
fn bench_routing(c: &mut Criterion) {
    use mcp_relay::{
        config::{Config, RouteConfig},
        proxy::route::Routing,
        telemetry::metrics::{Metrics, Observed},
    };
    let (manager, _) = manager_with_sessions(1);
    let metrics = Metrics::new(Observed {
        manager,
        proxy: Arc::default(),
    });
    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 3] {
        let mut config = Config::new(Uri::default());
        config.routes = vec![RouteConfig::new(
            "/mcp",
            (0..n).map(|i| format!("http://127.0.0.1:{}/mcp", 3001 + i)),
        )];
        let routing = Routing::new(&config, metrics.latency_histograms());
        g.bench_function(format!("pick_and_account/{n}_endpoints"), |b| {
            b.iter(|| {
                let table = routing.table();
                let route = table.by_path(black_box("/mcp")).expect("route");
                let i = route.pick(None).expect("an endpoint");
                let endpoint = &route.endpoints()[i];
                let outstanding = endpoint.begin();
                let started = Instant::now();
                endpoint.latency.record(started.elapsed());
                endpoint.succeeded(false);
                drop(black_box(outstanding));
            })
        });
    }
    g.finish();
}

/// Tokens minted for `auth/first_sight`: more than the accepted-token cache holds
/// ([`mcp_relay::proxy::auth::MAX_CACHED_TOKENS`]), cycled in order, so every one is a miss
/// (least recently used first out) and pays the signature check.
const FIRST_SIGHT_TOKENS: usize = mcp_relay::proxy::auth::MAX_CACHED_TOKENS + 256;

fn bench_auth(c: &mut Criterion) {
    use mcp_relay::{
        config::{AuthConfig, AuthMode, ProxyConfig},
        proxy::{auth::ResourceServer, stats::ProxyStats},
    };
    // The issuer's keys, served on loopback as an authorization server would.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let jwks = include_str!("fixtures/rs256-test-jwks.json");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let jwks_uri = format!("http://{}/jwks", listener.local_addr().expect("addr"));
    runtime.spawn(async move {
        let router =
            axum::Router::new().route("/jwks", axum::routing::get(move || async move { jwks }));
        let _ = axum::serve(listener, router).await;
    });
    let audience = "http://127.0.0.1:8080/mcp";
    let mut proxy = ProxyConfig::new(Uri::from_static("http://127.0.0.1:1/mcp"));
    proxy.auth = AuthConfig {
        mode: AuthMode::ResourceServer,
        issuer: "https://auth.example".into(),
        jwks_uri,
        required_scopes: vec!["mcp:tools".into()],
        ..AuthConfig::default()
    };
    let server = ResourceServer::for_route(&proxy).expect("a resource server");
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("fixtures/rs256-test-key.pem"))
            .expect("the test key");
    let mut head = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    head.kid = Some("bench-1".into());
    head.typ = Some("at+jwt".into());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let mint = |jti: usize| {
        let claims = serde_json::json!({
            "iss": "https://auth.example", "sub": "bench", "aud": audience, "exp": exp,
            "iat": exp - 3600, "scope": "mcp:tools", "client_id": "bench", "jti": jti,
        });
        jsonwebtoken::encode(&head, &claims, &key).expect("sign")
    };
    let parts_with = |token: &str| {
        let (parts, ()) = http::Request::post("/mcp")
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(())
            .expect("request")
            .into_parts();
        parts
    };
    let stats = ProxyStats::default();
    let metadata = "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp";
    let authenticate = |parts: &http::request::Parts| {
        runtime.block_on(server.authenticate(parts, audience, metadata, None, &stats))
    };
    // The keys fetched once (the cached key every benchmark below uses).
    let seen = parts_with(&mint(0));
    authenticate(&seen).expect("the first token is accepted");

    let mut g = c.benchmark_group("auth");
    g.throughput(Throughput::Elements(1));
    g.bench_function("seen_before", |b| {
        b.iter(|| authenticate(black_box(&seen)).expect("accepted"))
    });
    let fresh: Vec<http::request::Parts> = (1..=FIRST_SIGHT_TOKENS)
        .map(|i| parts_with(&mint(i)))
        .collect();
    let mut next = fresh.iter().cycle();
    g.bench_function("first_sight", |b| {
        b.iter(|| authenticate(black_box(next.next().expect("cycle"))).expect("accepted"))
    });
    let (none, ()) = http::Request::post("/mcp")
        .body(())
        .expect("request")
        .into_parts();
    g.bench_function("no_token", |b| {
        b.iter(|| authenticate(black_box(&none)).expect_err("refused"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(60);
    targets = bench_tracker, bench_sse, bench_sessions, bench_headers, bench_pump, bench_routing, bench_auth
}
criterion_main!(benches);
