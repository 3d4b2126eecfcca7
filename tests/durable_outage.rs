//! A Redis outage (issue 4): Redis is killed for 10 s under steady traffic through the proxy
//! (the official Python SDK server upstream, legacy sessions, SSE tool calls). The data plane
//! keeps serving from memory (zero failed client requests), the errors show in the worker's
//! metrics, pending state stays bounded, and within about one flush interval of Redis coming
//! back every stream's persisted position is current. The Redis is this test's own
//! `redis-server` on a free port, so stopping it disturbs no other test.

mod support;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http::StatusCode;
use mcp_relay::daemon::Daemon;
use support::{
    durable::{RedisServer, redis_conn, redis_store, start_daemon, unique_prefix},
    peers::Peer,
    stream_client::{EventReader, Session},
};

const FLUSH: Duration = Duration::from_millis(200);
const OUTAGE: Duration = Duration::from_secs(10);
const CLIENTS: usize = 3;

#[derive(Default)]
struct Traffic {
    ok: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

/// One tool call through the proxy; `true` when the response to it arrived.
async fn tool_call(session: &Session, id: u64) -> bool {
    let call = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"progress","arguments":{{"steps":2,"delay_ms":20}},"_meta":{{"progressToken":{id}}}}}}}"#
    );
    let response = session.post(&call).await;
    if response.status() != StatusCode::OK {
        return false;
    }
    let mut reader = EventReader::new(response);
    while let Some(event) = reader.next().await {
        if event.data["id"].as_u64() == Some(id) {
            return event.data.get("result").is_some();
        }
    }
    false
}

/// A client looping until told to stop: a tool call at a time, a new session every 10 calls.
async fn client(url: String, traffic: Arc<Traffic>) {
    let mut id = 1;
    while !traffic.stop.load(Ordering::Relaxed) {
        let session = Session::initialize(&url).await;
        for _ in 0..10 {
            if traffic.stop.load(Ordering::Relaxed) {
                return;
            }
            id += 1;
            let counter = if tool_call(&session, id).await {
                &traffic.ok
            } else {
                &traffic.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Every stream the proxy holds whose persisted position in Redis is behind its last upstream
/// id: `(session, stream, expected, persisted)`.
async fn stale_positions(
    redis: &str,
    prefix: &str,
    expected: &HashMap<(String, String), String>,
) -> Vec<(String, String, String, Option<String>)> {
    let mut conn = redis_conn(redis).await;
    let expected: Vec<_> = expected.iter().collect();
    // One pipeline (one round trip), so the check itself takes no time to speak of.
    let mut pipe = redis::pipe();
    for ((session, stream), _) in &expected {
        pipe.cmd("HGET")
            .arg(format!("{prefix}streams:{session}"))
            .arg(format!("pos:{stream}"));
    }
    let persisted: Vec<Option<String>> = pipe.query_async(&mut conn).await.expect("HGETs");
    // Positions are `<seq>:<upstream id>`.
    let persisted = persisted
        .into_iter()
        .map(|p| p.and_then(|p| p.split_once(':').map(|(_, id)| id.to_owned())));
    // Ids are `<request id>/<global seq>`: a later id of the same stream is as current.
    let seq = |id: &str| id.rsplit_once('/').and_then(|(_, s)| s.parse::<u64>().ok());
    let mut stale = Vec::new();
    for (((session, stream), want), got) in expected.into_iter().zip(persisted) {
        let current = got
            .as_deref()
            .is_some_and(|g| seq(g).zip(seq(want)).is_some_and(|(g, w)| g >= w));
        if !current {
            stale.push((session.clone(), stream.clone(), want.clone(), got));
        }
    }
    stale
}

/// The last upstream id of every stream the proxy holds now.
fn positions(proxy: &Daemon) -> HashMap<(String, String), String> {
    let mut out = HashMap::new();
    for session in proxy.manager().sessions() {
        for tracker in session.streams() {
            if let Some(id) = tracker.last_upstream_id() {
                out.insert(
                    (session.id().to_string(), tracker.stream().to_string()),
                    id.to_string(),
                );
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_redis_outage_fails_no_request_and_persistence_catches_up() {
    let mut redis = RedisServer::start().await;
    let prefix = unique_prefix("outage");
    let server = Peer::py_server(&["--event-store"]).await;
    let proxy = start_daemon(&server.url(), redis_store(&redis.url(), &prefix), |c| {
        c.worker.flush_interval = FLUSH;
        c.worker.max_backoff = Duration::from_secs(2);
    })
    .await;
    let url = format!("http://{}/mcp", proxy.data_addr());
    let metrics = proxy.manager().persistence().metrics();

    let traffic = Arc::new(Traffic::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(client(url.clone(), traffic.clone())))
        .collect();
    // Traffic flows and the worker has written stream positions before Redis goes away.
    let warm_up = Instant::now();
    let before = loop {
        let snapshot = metrics.snapshot();
        if snapshot.stream_writes > 0 && traffic.ok.load(Ordering::Relaxed) > 0 {
            break snapshot;
        }
        assert!(
            warm_up.elapsed() < Duration::from_secs(10),
            "no traffic served and persisted 10 s after start: {} calls ok, {} failed; {snapshot:?}",
            traffic.ok.load(Ordering::Relaxed),
            traffic.failed.load(Ordering::Relaxed),
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(before.errors, 0, "{before:?}");
    assert!(before.stream_writes > 0, "{before:?}");

    // Redis goes away under load.
    redis.stop().await;
    let ok_at_stop = traffic.ok.load(Ordering::Relaxed);
    let outage_end = Instant::now() + OUTAGE;
    let mut max_pending = 0;
    while Instant::now() < outage_end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        max_pending = max_pending.max(metrics.snapshot().pending);
    }
    let during = metrics.snapshot();
    let served_during = traffic.ok.load(Ordering::Relaxed) - ok_at_stop;
    assert!(
        served_during > 20,
        "the data plane kept serving: {served_during}"
    );
    assert!(
        during.errors > before.errors,
        "errors are visible: {during:?}"
    );
    assert!(during.consecutive_failures > 0, "{during:?}");
    assert!(during.retries > 0, "{during:?}");
    // Latest-only coalescing: at most one entry per stream and session touched meanwhile.
    let streams_opened = proxy.proxy_stats().snapshot().streams_opened;
    assert!(
        max_pending <= streams_opened + 2 * CLIENTS as u64 * (served_during / 10 + 2),
        "pending state stays bounded: {max_pending} for {streams_opened} streams"
    );
    assert_eq!(during.shed, 0, "{during:?}");

    // Redis is back: the positions held when it returned are written within a flush interval.
    redis.start_again().await;
    let back = Instant::now();
    let expected = positions(&proxy);
    assert!(!expected.is_empty());
    let caught_up = loop {
        let stale = stale_positions(&redis.url(), &prefix, &expected).await;
        if stale.is_empty() {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "{} positions still stale 10 s after Redis returned, e.g. {:?}; {:?}",
            stale.len(),
            stale.first(),
            metrics.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!(
        "outage: {served_during} calls served while Redis was down, {} errors, {} retries, \
         max pending {max_pending}; {} positions current {caught_up:?} after Redis returned \
         (flush interval {FLUSH:?})",
        during.errors - before.errors,
        during.retries,
        expected.len(),
    );
    // The worker pings an unreachable store every flush interval; connecting takes a moment.
    assert!(
        caught_up <= FLUSH + Duration::from_millis(300),
        "persistence caught up {caught_up:?} after Redis returned"
    );

    traffic.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    assert_eq!(
        traffic.failed.load(Ordering::Relaxed),
        0,
        "no client request failed"
    );
    assert_eq!(metrics.snapshot().consecutive_failures, 0);
    proxy.shutdown().await.expect("shutdown");
}
