//! The persistence path against a real Redis: how well the PersistenceWorker coalesces, how
//! many store writes it sustains, and that no task is spawned per event. Not a test: it prints
//! numbers for the issue's closing note.
//!
//!     MCP_RELAY_TEST_REDIS_URL=redis://127.0.0.1:6379/0 cargo bench --bench persistence
//!
//! 1. A burst of 10,000 events on one legacy stream through the real data plane (in-process
//!    daemon, a Rust SSE upstream sending as fast as it can, the Redis store, 100 ms flushes):
//!    stream advances handed to the worker vs stream positions written (the coalesce ratio),
//!    and the runtime's alive tasks before, during (sampled) and after the stream.
//! 2. Store writes under load: 1,000 streams in 100 sessions advancing continuously for 3 s
//!    from 4 tasks, the worker flushing every 100 ms to Redis: positions written per second,
//!    batches, flush latency.
//! 3. The store alone: batches of 1,000 positions written back to back for 2 s.

#[allow(dead_code)]
#[path = "../tests/support/http.rs"]
mod http_client;
#[allow(dead_code)]
#[path = "../tests/support/resumable.rs"]
mod resumable;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use mcp_relay::{
    config::Config,
    daemon::Daemon,
    session::{
        EventTracker, PersistenceWorker, SessionId, StreamId, StreamKind, TrackerLimits,
        WorkerConfig,
        store::{self, SessionStore, StoreBackend, StoreConfig, StreamPosition, WriteBatch},
        tracker::Recording,
    },
    sse::{SseBlock, SseParser},
};
use tokio::{net::TcpListener, runtime::Handle};
use tokio_util::sync::CancellationToken;

const EVENTS: u64 = 10_000;
/// Distinct upstream ids the load test cycles through (more than twice the dedup window).
const ID_POOL: usize = 4096;

fn redis_store(prefix: &str) -> Arc<dyn SessionStore> {
    let url = std::env::var("MCP_RELAY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    store::open(&StoreConfig {
        backend: StoreBackend::Redis,
        url: Some(url),
        key_prefix: format!("mcp-relay-bench:{prefix}:{}:", std::process::id()),
        timeout: Duration::from_secs(2),
    })
    .expect("open the Redis store")
}

fn alive_tasks() -> usize {
    Handle::current().metrics().num_alive_tasks()
}

async fn burst_through_the_proxy() {
    let upstream = resumable::Resumable::start().await;
    let store = redis_store("burst");
    store.ping().await.expect("Redis answers");
    let mut config = Config::new(upstream.url().parse().expect("URL"));
    config.worker.flush_interval = Duration::from_millis(100);
    config.session.tracker_limits.replay_events = 1024;
    let data = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let daemon = Daemon::start_with_store(config, data, admin, store)
        .await
        .expect("start");
    let url = format!("http://{}/mcp", daemon.data_addr());
    let client = http_client::Client::new();
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
    let answer = client.post_read(&url, &[], init).await;
    let sid = answer
        .header("mcp-session-id")
        .expect("session id")
        .to_owned();
    let headers = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let worker = daemon.manager().persistence().metrics();
    let before = worker.snapshot();
    let tasks_before = alive_tasks();

    let request =
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"stream","params":{{"events":{EVENTS}}}}}"#);
    let started = Instant::now();
    let response = client.post(&url, &headers, Bytes::from(request)).await;
    let mut body = response.into_body();
    let mut bytes = 0usize;
    let mut max_tasks = alive_tasks();
    let mut frames = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("SSE frame");
        if let Ok(data) = frame.into_data() {
            bytes += data.len();
            frames += 1;
            if frames % 16 == 0 {
                max_tasks = max_tasks.max(alive_tasks());
            }
        }
    }
    let elapsed = started.elapsed();
    // Let the last flush happen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = worker.snapshot();
    let tasks_after = alive_tasks();
    let updates = after.updates - before.updates;
    let writes = after.stream_writes - before.stream_writes;
    let batches = after.batches - before.batches;
    println!("== 1. burst of {EVENTS} events on one stream through the proxy (Redis store)");
    println!(
        "   {EVENTS} events ({} KiB) in {:.0} ms = {:.0} events/s",
        bytes / 1024,
        elapsed.as_secs_f64() * 1e3,
        EVENTS as f64 / elapsed.as_secs_f64()
    );
    println!(
        "   stream advances handed to the worker: {updates}; stream positions written: {writes} \
         in {batches} batches; coalesce ratio {:.0} events per store write",
        updates as f64 / writes.max(1) as f64
    );
    println!(
        "   alive tokio tasks: before {tasks_before}, max during {max_tasks}, after \
         {tasks_after} (no task per event)"
    );
    daemon.shutdown().await.expect("shutdown");
}

async fn writes_under_load() {
    let store = redis_store("load");
    let config = WorkerConfig {
        flush_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let (worker, handle) = PersistenceWorker::new(store, config);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));
    let trackers: Vec<Arc<EventTracker>> = (0..1000)
        .map(|i| {
            Arc::new(EventTracker::new(
                Some(SessionId::from(format!("session-{}", i % 100).as_str())),
                StreamId::from(format!("{i:016x}").as_str()),
                StreamKind::Post,
                TrackerLimits::default(),
            ))
        })
        .collect();
    let trackers = Arc::new(trackers);
    // Events with distinct upstream ids, recorded as the modern relay does: a tracker sees
    // every other one of them at most, so none falls within its dedup window twice.
    let mut parser = SseParser::new(1 << 20);
    for n in 0..ID_POOL {
        parser.push(format!("id: {n}\ndata: x\n\n").as_bytes());
    }
    let events: Arc<Vec<SseBlock>> =
        Arc::new(std::iter::from_fn(|| parser.next_block().expect("well-formed SSE")).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let duration = Duration::from_secs(3);
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let (trackers, handle, stop) = (trackers.clone(), handle.clone(), stop.clone());
            let events = events.clone();
            tokio::spawn(async move {
                let mut n = 0usize;
                let (mut one, mut out) = (std::collections::VecDeque::new(), BytesMut::new());
                while !stop.load(Ordering::Relaxed) {
                    for t in trackers.iter().skip(p).step_by(4) {
                        n += 1;
                        one.push_back(events[n % ID_POOL].clone());
                        out.clear();
                        t.record(&mut one, &mut out, Recording::Direct);
                        handle.stream_advanced(t);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let before = handle.metrics().snapshot();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.expect("producer");
    }
    let after = handle.metrics().snapshot();
    shutdown.cancel();
    task.await.expect("worker");
    let secs = duration.as_secs_f64();
    let writes = after.stream_writes - before.stream_writes;
    let batches = after.batches - before.batches;
    println!("== 2. 1,000 streams advancing continuously for {secs:.0} s, 100 ms flushes");
    println!(
        "   advances {:.0}/s; stream positions written {:.0}/s in {:.1} batches/s \
         (mean batch {:.0}, max {}); coalesce ratio {:.0}",
        (after.updates - before.updates) as f64 / secs,
        writes as f64 / secs,
        batches as f64 / secs,
        (after.batch_entries - before.batch_entries) as f64 / batches.max(1) as f64,
        after.max_batch_size,
        (after.updates - before.updates) as f64 / writes.max(1) as f64,
    );
    println!(
        "   flush latency: mean {:.2} ms, max {:.2} ms; errors {}",
        (after.flush_micros_total - before.flush_micros_total) as f64 / batches.max(1) as f64 / 1e3,
        after.max_flush_micros as f64 / 1e3,
        after.errors
    );
}

async fn raw_store_throughput() {
    let store = redis_store("raw");
    let batch = WriteBatch {
        positions: (0..1000)
            .map(|i| StreamPosition {
                session_id: format!("session-{}", i % 100),
                stream_id: format!("{i:016x}"),
                seq: Some(i),
                last_seq: Some(i),
                upstream_event_id: format!("event-{i}"),
            })
            .collect(),
        ..WriteBatch::default()
    };
    let ttl = Duration::from_secs(600);
    let started = Instant::now();
    let mut batches = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        store.write(&batch, ttl).await.expect("write");
        batches += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("== 3. the Redis store alone: batches of 1,000 positions, back to back");
    println!(
        "   {:.0} positions/s ({:.1} ms per batch of 1,000, one pipeline each)",
        batches as f64 * 1000.0 / secs,
        secs * 1e3 / batches as f64
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        burst_through_the_proxy().await;
        writes_under_load().await;
        raw_store_throughput().await;
    });
}
