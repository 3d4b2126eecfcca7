//! The worker task's tests: flushes, store failures, backoff and probing, the shutdown flush
//! (on a paused clock: nothing here sleeps).

use super::*;
use crate::session::{
    StreamId,
    store::{MemoryStore, SessionRecord, testing::FlakyStore},
    tracker::{EventTracker, StreamKind, TrackerLimits},
};

fn tracker(session: &str, stream: &str) -> Arc<EventTracker> {
    Arc::new(EventTracker::new(
        Some(SessionId::from(session)),
        StreamId::from(stream),
        StreamKind::Post,
        TrackerLimits::default(),
    ))
}

fn record(id: &str) -> SessionRecord {
    let now = SystemTime::now();
    SessionRecord {
        session_id: id.into(),
        upstream_session_id: format!("up-{id}"),
        upstream: "http://127.0.0.1:1/mcp".into(),
        route: "/mcp".into(),
        protocol_version: "2025-11-25".into(),
        created: now,
        last_activity: now,
    }
}

async fn position(store: &dyn SessionStore, session: &str, stream: &str) -> Option<String> {
    store
        .get_stream_positions(&[(session.into(), stream.into())])
        .await
        .unwrap()
        .pop()
        .flatten()
        .map(|p| p.upstream_event_id)
}

#[tokio::test]
async fn a_burst_on_one_stream_is_one_write_of_the_latest_id() {
    let store = Arc::new(MemoryStore::new());
    let (worker, handle) = PersistenceWorker::new(store.clone(), WorkerConfig::default());
    let t = tracker("s", "st");
    for i in 0..1000 {
        t.admit(Some(&i.to_string()));
        handle.stream_advanced(&t);
    }
    assert_eq!(handle.pending_len(), 1);
    worker.flush().await.unwrap();
    let m = handle.metrics().snapshot();
    assert_eq!(m.stream_writes, 1);
    assert_eq!(m.updates, 1000);
    assert_eq!(m.batches, 1);
    assert_eq!(m.pending, 0);
    assert_eq!(position(&*store, "s", "st").await.as_deref(), Some("999"));
    assert_eq!(
        t.last_event_ids().persisted.map(|(id, _)| id.to_string()),
        Some("999".to_string())
    );
}

#[tokio::test]
async fn store_errors_are_counted_and_the_latest_state_is_written_once_it_returns() {
    let store = Arc::new(FlakyStore::default());
    store.set_down(true);
    let (worker, handle) = PersistenceWorker::new(store.clone(), WorkerConfig::default());
    let t = tracker("s", "st");
    handle.session_saved(record("s"));
    t.admit(Some("1"));
    handle.stream_advanced(&t);
    assert!(worker.flush().await.is_err());
    t.admit(Some("2"));
    handle.stream_advanced(&t);
    assert_eq!(handle.pending_len(), 2, "one entry per stream and session");
    assert_eq!(handle.metrics().errors.load(Ordering::Relaxed), 1);
    store.set_down(false);
    worker.flush().await.unwrap();
    assert_eq!(position(&*store, "s", "st").await.as_deref(), Some("2"));
    assert!(
        store.get_sessions(&["s".into()]).await.unwrap()[0].is_some(),
        "the session record was kept and written"
    );
}

#[tokio::test]
async fn pending_state_is_bounded_and_sheds_the_oldest_entries() {
    let store = Arc::new(FlakyStore::default());
    store.set_down(true);
    let config = WorkerConfig {
        max_pending: 3,
        ..WorkerConfig::default()
    };
    let (worker, handle) = PersistenceWorker::new(store.clone(), config);
    let trackers: Vec<_> = (0..5).map(|i| tracker("s", &format!("st{i}"))).collect();
    for t in &trackers {
        t.admit(Some("7"));
        handle.stream_advanced(t);
    }
    assert_eq!(handle.pending_len(), 3);
    assert_eq!(handle.metrics().shed.load(Ordering::Relaxed), 2);
    // A failed flush puts entries back without growing past the bound.
    assert!(worker.flush().await.is_err());
    handle.session_saved(record("s"));
    assert_eq!(handle.pending_len(), 3);
    assert_eq!(handle.metrics().shed.load(Ordering::Relaxed), 3);
    store.set_down(false);
    worker.flush().await.unwrap();
    // st0, st1 were shed first (oldest), then st2 when the record came.
    for (i, expect) in [None, None, None, Some("7"), Some("7")]
        .into_iter()
        .enumerate()
    {
        let got = position(&*store, "s", &format!("st{i}")).await;
        assert_eq!(got.as_deref(), expect, "st{i}");
    }
    // A shed stream queues itself again on its next event.
    trackers[0].admit(Some("8"));
    handle.stream_advanced(&trackers[0]);
    worker.flush().await.unwrap();
    assert_eq!(position(&*store, "s", "st0").await.as_deref(), Some("8"));
}

#[tokio::test]
async fn a_deleted_session_is_never_restorable_while_its_deletion_is_pending() {
    let store = Arc::new(MemoryStore::new());
    let (worker, handle) = PersistenceWorker::new(store.clone(), WorkerConfig::default());
    handle.session_saved(record("s"));
    worker.flush().await.unwrap();
    let id = SessionId::from("s");
    handle.session_removed(&id);
    assert!(handle.is_deleting("s"));
    worker.flush().await.unwrap();
    assert!(!handle.is_deleting("s"));
    assert_eq!(store.get_sessions(&["s".into()]).await.unwrap(), vec![None]);
}

/// Lets `d` of paused time pass, a millisecond at a time, so the worker's timers fire in
/// their order and it runs after each.
async fn run_for(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        tokio::time::advance(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_worker_retries_with_backoff_and_catches_up_when_the_store_returns() {
    let store = Arc::new(FlakyStore::default());
    store.set_down(true);
    let config = WorkerConfig {
        flush_interval: Duration::from_millis(20),
        max_backoff: Duration::from_millis(400),
        ..WorkerConfig::default()
    };
    let (worker, handle) = PersistenceWorker::new(store.clone(), config);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));
    let t = tracker("s", "st");
    t.admit(Some("1"));
    handle.stream_advanced(&t);
    run_for(Duration::from_secs(2)).await;
    let m = handle.metrics().snapshot();
    assert!(m.errors >= 3, "{m:?}");
    assert!(m.retries >= 2, "{m:?}");
    // Without backoff, 2 s of 20 ms flushes would be ~100 failures.
    assert!(m.errors < 40, "backoff spaces the retries out: {m:?}");
    assert!(m.consecutive_failures >= 3, "{m:?}");
    assert_eq!(position(&store.inner, "s", "st").await, None);
    store.set_down(false);
    // The ping every flush interval notices the store's return long before the backoff
    // (400 ms by now) would retry.
    run_for(config.flush_interval * 2).await;
    assert_eq!(position(&*store, "s", "st").await.as_deref(), Some("1"));
    assert_eq!(handle.metrics().snapshot().consecutive_failures, 0);
    shutdown.cancel();
    task.await.unwrap();
}

/// Runs a worker over `store`, advances stream `st` of session `s` to upstream id `1`, and
/// shuts the worker down: its task (flushing) and handle.
fn shut_down_with_one_advance(
    store: Arc<dyn SessionStore>,
) -> (tokio::task::JoinHandle<()>, PersistenceHandle) {
    let (worker, handle) = PersistenceWorker::new(store, WorkerConfig::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));
    let t = tracker("s", "st");
    t.admit(Some("1"));
    handle.stream_advanced(&t);
    shutdown.cancel();
    (task, handle)
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_flush_writes_what_is_pending() {
    let store = Arc::new(MemoryStore::new());
    let (task, handle) = shut_down_with_one_advance(store.clone());
    task.await.unwrap();
    assert_eq!(position(&*store, "s", "st").await.as_deref(), Some("1"));
    assert_eq!(handle.pending_len(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_flush_gives_up_within_its_deadline_when_the_store_stays_down() {
    let store = Arc::new(FlakyStore::default());
    store.set_down(true);
    let (task, handle) = shut_down_with_one_advance(store.clone());
    let started = Instant::now();
    while !task.is_finished() {
        assert!(
            started.elapsed() <= SHUTDOWN_FLUSH_DEADLINE,
            "still flushing {:?} after shutdown",
            started.elapsed()
        );
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    task.await.unwrap();
    let m = handle.metrics().snapshot();
    // Backoff from 100 ms: at least three attempts fit before the deadline.
    assert!(m.retries >= 2, "it kept retrying: {m:?}");
    assert_eq!(handle.pending_len(), 1, "the unwritten state was kept");
}
