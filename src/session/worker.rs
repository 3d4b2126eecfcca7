//! The PersistenceWorker: exactly one task per process that writes session records and the last
//! upstream event id of every stream to the SessionStore.
//!
//! The data plane never waits on it. A tracker whose last id moved queues itself once (an atomic
//! flag), so a burst of events on one stream costs one store write per flush ("latest-only
//! coalescing"); pending state is therefore bounded by the number of live streams and sessions.
//! Store errors are counted, logged and retried with capped exponential backoff; the pending
//! state is kept (coalescing further) until the store answers again.

use std::{
    collections::{HashMap, HashSet},
    mem,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::{
    SessionId,
    store::{SessionRecord, SessionStore, StoreError, StreamPosition},
    tracker::EventTracker,
};

/// Worker settings.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// How often pending state is flushed. Default 100 ms.
    pub flush_interval: Duration,
    /// TTL of every record written (refreshed on each write). Default 24 h.
    pub record_ttl: Duration,
    /// Longest wait between retries while the store keeps failing. Default 5 s.
    pub max_backoff: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_millis(100),
            record_ttl: Duration::from_secs(24 * 3600),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Counters of the worker, readable at any time (all monotonic except where noted).
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Stream advances handed to the worker (one per admitted event with an upstream id).
    pub updates: AtomicU64,
    /// Stream positions written to the store.
    pub stream_writes: AtomicU64,
    /// Session records written or deleted.
    pub session_writes: AtomicU64,
    /// Flushes that wrote at least one entry.
    pub batches: AtomicU64,
    /// Failed store operations.
    pub errors: AtomicU64,
    /// Duration of the last successful flush, in microseconds (a gauge).
    pub last_flush_micros: AtomicU64,
}

#[derive(Default)]
struct Pending {
    streams: Vec<Arc<EventTracker>>,
    sessions_put: HashMap<SessionId, SessionRecord>,
    sessions_delete: HashSet<SessionId>,
}

struct Shared {
    pending: Mutex<Pending>,
    metrics: WorkerMetrics,
}

/// The data plane's side of the worker: cheap to clone, never blocks on I/O.
#[derive(Clone)]
pub struct PersistenceHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PersistenceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistenceHandle").finish_non_exhaustive()
    }
}

impl PersistenceHandle {
    /// Hands the worker "the last upstream id of this stream moved". O(1): queues the tracker
    /// only if it is not queued already; the worker reads the latest id when it flushes.
    pub fn stream_advanced(&self, tracker: &Arc<EventTracker>) {
        self.shared.metrics.updates.fetch_add(1, Ordering::Relaxed);
        if tracker.session().is_none() || tracker.persist_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.pending.lock().streams.push(tracker.clone());
    }

    /// Queues a session record to be written (latest record wins).
    pub fn session_saved(&self, record: SessionRecord) {
        let id = SessionId::from(record.session_id.as_str());
        let mut pending = self.shared.pending.lock();
        pending.sessions_delete.remove(&id);
        pending.sessions_put.insert(id, record);
    }

    /// Queues the deletion of a session and its stream positions.
    pub fn session_removed(&self, id: &SessionId) {
        let mut pending = self.shared.pending.lock();
        pending.sessions_put.remove(id);
        pending.sessions_delete.insert(id.clone());
    }

    /// The worker's counters.
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.shared.metrics
    }

    /// Streams and session operations waiting for the next flush.
    pub fn pending_len(&self) -> usize {
        let p = self.shared.pending.lock();
        p.streams.len() + p.sessions_put.len() + p.sessions_delete.len()
    }
}

/// The one persistence task. Create it with [`PersistenceWorker::new`], hand the handle to the
/// SessionManager, and drive [`PersistenceWorker::run`] on a task owned by the daemon.
pub struct PersistenceWorker {
    shared: Arc<Shared>,
    store: Arc<dyn SessionStore>,
    config: WorkerConfig,
}

impl PersistenceWorker {
    /// A worker writing to `store`, and the handle the data plane uses to feed it.
    pub fn new(store: Arc<dyn SessionStore>, config: WorkerConfig) -> (Self, PersistenceHandle) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            metrics: WorkerMetrics::default(),
        });
        let handle = PersistenceHandle {
            shared: shared.clone(),
        };
        (
            Self {
                shared,
                store,
                config,
            },
            handle,
        )
    }

    /// Flushes every `flush_interval` until `shutdown` fires, then flushes once more and returns.
    /// While the store fails, flushes back off exponentially up to `max_backoff`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let wait = if failures == 0 {
                self.config.flush_interval
            } else {
                backoff(
                    self.config.flush_interval,
                    failures,
                    self.config.max_backoff,
                )
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => break,
            }
            match self.flush().await {
                Ok(()) => failures = 0,
                Err(err) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        error = %err,
                        consecutive_failures = failures,
                        pending = self.pending_len(),
                        "session store write failed; will retry",
                    );
                }
            }
        }
        if let Err(err) = self.flush().await {
            tracing::error!(
                error = %err,
                pending = self.pending_len(),
                "final flush at shutdown failed; the last event ids not written are lost",
            );
        }
    }

    fn pending_len(&self) -> usize {
        PersistenceHandle {
            shared: self.shared.clone(),
        }
        .pending_len()
    }

    /// Writes everything pending in one batch per operation. On failure, whatever was not
    /// written goes back to the pending state (unless newer state superseded it).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let Pending {
            streams,
            sessions_put,
            sessions_delete,
        } = mem::take(&mut *self.shared.pending.lock());
        if streams.is_empty() && sessions_put.is_empty() && sessions_delete.is_empty() {
            return Ok(());
        }
        let metrics = &self.shared.metrics;
        let ttl = self.config.record_ttl;

        let records: Vec<SessionRecord> = sessions_put.values().cloned().collect();
        if !records.is_empty() {
            if let Err(e) = self.store.put_sessions(&records, ttl).await {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                self.requeue(streams, sessions_put, sessions_delete);
                return Err(e);
            }
            metrics
                .session_writes
                .fetch_add(records.len() as u64, Ordering::Relaxed);
        }

        let mut positions = Vec::with_capacity(streams.len());
        let mut written = Vec::with_capacity(streams.len());
        for tracker in &streams {
            // Clear the flag before reading, so an event arriving now queues the tracker again.
            tracker.persist_queued.store(false, Ordering::Release);
            let (Some(session), Some(id)) = (tracker.session(), tracker.last_upstream_id()) else {
                continue;
            };
            if sessions_delete.contains(session) {
                continue;
            }
            positions.push(StreamPosition {
                session_id: session.to_string(),
                stream_id: tracker.stream().to_string(),
                upstream_event_id: id.to_string(),
            });
            written.push((tracker.clone(), id));
        }
        if !positions.is_empty() {
            if let Err(e) = self.store.put_stream_positions(&positions, ttl).await {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                self.requeue(streams, HashMap::new(), sessions_delete);
                return Err(e);
            }
            let now = SystemTime::now();
            for (tracker, id) in written {
                tracker.mark_persisted(id, now);
            }
            metrics
                .stream_writes
                .fetch_add(positions.len() as u64, Ordering::Relaxed);
        }

        if !sessions_delete.is_empty() {
            let ids: Vec<String> = sessions_delete.iter().map(ToString::to_string).collect();
            if let Err(e) = self.store.delete_sessions(&ids).await {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                self.requeue(Vec::new(), HashMap::new(), sessions_delete);
                return Err(e);
            }
            metrics
                .session_writes
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
        }
        metrics.batches.fetch_add(1, Ordering::Relaxed);
        metrics
            .last_flush_micros
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Puts unwritten state back, without overwriting anything queued since the batch was taken.
    fn requeue(
        &self,
        streams: Vec<Arc<EventTracker>>,
        sessions_put: HashMap<SessionId, SessionRecord>,
        sessions_delete: HashSet<SessionId>,
    ) {
        let mut pending = self.shared.pending.lock();
        for tracker in streams {
            if !tracker.persist_queued.swap(true, Ordering::AcqRel) {
                pending.streams.push(tracker);
            }
        }
        for (id, record) in sessions_put {
            if !pending.sessions_delete.contains(&id) {
                pending.sessions_put.entry(id).or_insert(record);
            }
        }
        for id in sessions_delete {
            if !pending.sessions_put.contains_key(&id) {
                pending.sessions_delete.insert(id);
            }
        }
    }
}

/// `base * 2^failures`, capped at `max`.
fn backoff(base: Duration, failures: u32, max: Duration) -> Duration {
    base.saturating_mul(1u32 << failures.min(16)).min(max)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use async_trait::async_trait;

    use super::*;
    use crate::session::{
        StreamId,
        store::MemoryStore,
        tracker::{StreamKind, TrackerLimits},
    };

    fn tracker(session: &str) -> Arc<EventTracker> {
        Arc::new(EventTracker::new(
            Some(SessionId::from(session)),
            StreamId::from("st"),
            StreamKind::Post,
            TrackerLimits::default(),
        ))
    }

    #[tokio::test]
    async fn a_burst_on_one_stream_is_one_write_of_the_latest_id() {
        let store = Arc::new(MemoryStore::new());
        let (worker, handle) = PersistenceWorker::new(store.clone(), WorkerConfig::default());
        let t = tracker("s");
        for i in 0..1000 {
            t.admit(Some(&i.to_string()));
            handle.stream_advanced(&t);
        }
        assert_eq!(handle.pending_len(), 1);
        worker.flush().await.unwrap();
        assert_eq!(handle.metrics().stream_writes.load(Ordering::Relaxed), 1);
        assert_eq!(handle.metrics().updates.load(Ordering::Relaxed), 1000);
        let got = store
            .get_stream_positions(&[("s".into(), "st".into())])
            .await
            .unwrap();
        assert_eq!(got[0].as_ref().unwrap().upstream_event_id, "999");
        assert_eq!(
            t.last_event_ids().persisted.map(|(id, _)| id.to_string()),
            Some("999".to_string())
        );
    }

    /// A store that fails while `down` is set.
    #[derive(Default)]
    struct FlakyStore {
        down: AtomicBool,
        inner: MemoryStore,
    }

    impl FlakyStore {
        fn check(&self) -> Result<(), StoreError> {
            if self.down.load(Ordering::Relaxed) {
                return Err(StoreError {
                    backend: "flaky",
                    message: "down".into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait]
    impl SessionStore for FlakyStore {
        fn backend(&self) -> &'static str {
            "flaky"
        }
        async fn put_sessions(&self, r: &[SessionRecord], t: Duration) -> Result<(), StoreError> {
            self.check()?;
            self.inner.put_sessions(r, t).await
        }
        async fn get_sessions(
            &self,
            ids: &[String],
        ) -> Result<Vec<Option<SessionRecord>>, StoreError> {
            self.check()?;
            self.inner.get_sessions(ids).await
        }
        async fn delete_sessions(&self, ids: &[String]) -> Result<(), StoreError> {
            self.check()?;
            self.inner.delete_sessions(ids).await
        }
        async fn put_stream_positions(
            &self,
            p: &[StreamPosition],
            t: Duration,
        ) -> Result<(), StoreError> {
            self.check()?;
            self.inner.put_stream_positions(p, t).await
        }
        async fn get_stream_positions(
            &self,
            k: &[(String, String)],
        ) -> Result<Vec<Option<StreamPosition>>, StoreError> {
            self.check()?;
            self.inner.get_stream_positions(k).await
        }
    }

    #[tokio::test]
    async fn store_errors_are_counted_and_the_latest_id_is_written_once_it_returns() {
        let store = Arc::new(FlakyStore::default());
        store.down.store(true, Ordering::Relaxed);
        let (worker, handle) = PersistenceWorker::new(store.clone(), WorkerConfig::default());
        let t = tracker("s");
        t.admit(Some("1"));
        handle.stream_advanced(&t);
        assert!(worker.flush().await.is_err());
        t.admit(Some("2"));
        handle.stream_advanced(&t);
        assert_eq!(handle.pending_len(), 1, "still one entry for the stream");
        assert_eq!(handle.metrics().errors.load(Ordering::Relaxed), 1);
        store.down.store(false, Ordering::Relaxed);
        worker.flush().await.unwrap();
        let got = store
            .get_stream_positions(&[("s".into(), "st".into())])
            .await
            .unwrap();
        assert_eq!(got[0].as_ref().unwrap().upstream_event_id, "2");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        assert_eq!(backoff(base, 1, max), Duration::from_millis(200));
        assert_eq!(backoff(base, 3, max), Duration::from_millis(800));
        assert_eq!(backoff(base, 30, max), max);
    }
}
