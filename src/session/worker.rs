//! The PersistenceWorker: exactly one task per process that writes session records and the last
//! upstream event id of every stream to the SessionStore, and claims idle sessions from it.
//!
//! The data plane never waits on it and never spawns for it. A tracker whose last id moved
//! queues itself once (an atomic flag), so a burst of events on one stream costs one store write
//! per flush ("latest-only coalescing"); a session record queued again replaces the queued one.
//! Every flush is one [`WriteBatch`] (one round trip to Redis).
//!
//! **Failures.** A failed flush puts its entries back (newer state queued meanwhile wins) and
//! is retried with capped exponential backoff (jittered, so replicas do not retry in step);
//! while the store is unreachable, a cheap `ping` every flush interval notices its return, so
//! persistence catches up within a flush interval of the store answering again. Errors are
//! counted, logged and visible in [`WorkerMetrics`].
//!
//! **Bounded memory.** Pending state holds at most `max_pending` entries (streams, session
//! records, deletions). Past that, the oldest entry is shed and counted ([`WorkerMetrics::shed`]):
//! a shed stream queues itself again on its next event; a shed record is written again on the
//! session's next refresh.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    mem,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::{
    SessionId,
    store::{SessionRecord, SessionStore, StoreError, StreamPosition, WriteBatch},
    tracker::EventTracker,
};
use crate::counters::counters;

/// Idle sessions claimed from the store per sweep, and held until the SessionManager takes them.
pub const SWEEP_LIMIT: usize = 256;
/// How long the final flush at shutdown may keep retrying.
pub const SHUTDOWN_FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Worker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    /// How often pending state is flushed. Default 100 ms.
    pub flush_interval: Duration,
    /// TTL of every record written (refreshed on each write). Session records live at least
    /// twice the sessions' idle TTL whatever this says, so idle expiry finds them. Default 24 h.
    pub record_ttl: Duration,
    /// Longest wait between retries while the store keeps failing. Default 5 s.
    pub max_backoff: Duration,
    /// Most entries (streams, session records, deletions) waiting for a flush; past it the
    /// oldest is shed. Default 100 000.
    pub max_pending: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_millis(100),
            record_ttl: Duration::from_secs(24 * 3600),
            max_backoff: Duration::from_secs(5),
            max_pending: 100_000,
        }
    }
}

/// How long a session's store record may lag its in-memory activity: a session seen active is
/// written again at most once per this interval (a tenth of the idle TTL, 50 ms to 60 s), never
/// once per request.
pub fn activity_refresh(idle_ttl: Duration) -> Duration {
    (idle_ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(60))
}

/// How often idle sessions are looked for, both in memory (the daemon's expiry loop) and in the
/// store (the worker's claims): a quarter of the idle TTL, 100 ms to 30 s.
pub fn expiry_period(idle_ttl: Duration) -> Duration {
    (idle_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

counters! {
    /// Counters of the worker, readable at any time as atomics (monotonic unless marked a
    /// gauge). The Prometheus exporter and the control plane's metric watch read them; each
    /// exported one names its Prometheus series and HELP text.
    pub struct WorkerMetrics / WorkerSnapshot {
        /// Stream advances handed to the worker (one per admitted event: each moves the stream's
        /// last seq, and one with an upstream id its resumable position).
        updates: Counter(
            "mcp_relay_persistence_updates_total",
            "Stream advances handed to the persistence worker.",
        ),
        /// Stream positions written to the store.
        stream_writes: Counter(
            "mcp_relay_persistence_stream_writes_total",
            "Stream positions written to the session store.",
        ),
        /// Session records written or deleted.
        session_writes: Counter(
            "mcp_relay_persistence_session_writes_total",
            "Session records written to or deleted from the session store.",
        ),
        /// Flushes that wrote at least one entry (store round trips for writes).
        batches: Counter(
            "mcp_relay_persistence_batches_total",
            "Persistence flushes that wrote at least one entry.",
        ),
        /// Entries written, over all batches (`batch_entries / batches` is the mean batch size).
        batch_entries: Counter(
            "mcp_relay_persistence_batch_entries_total",
            "Entries written to the session store over all batches.",
        ),
        /// Largest batch written (a gauge).
        max_batch_size: Gauge(
            "mcp_relay_persistence_max_batch_entries",
            "Largest batch written to the session store.",
        ),
        /// Failed store operations (writes and idle-session claims).
        errors: Counter(
            "mcp_relay_persistence_errors_total",
            "Failed session store operations (retried with backoff).",
        ),
        /// Write attempts made after a failed one.
        retries: Counter(
            "mcp_relay_persistence_retries_total",
            "Session store writes retried after a failure.",
        ),
        /// Pending entries dropped because pending state was full (oldest first).
        shed: Counter(
            "mcp_relay_persistence_shed_total",
            "Pending persistence entries dropped, oldest first, because pending state was full.",
        ),
        /// Entries waiting for the next flush (a gauge). Not exported as such: the exporter
        /// reads the queue itself ([`PersistenceHandle::pending_len`]).
        pending,
        /// Consecutive failed flushes; 0 while the store answers (a gauge).
        consecutive_failures: Gauge(
            "mcp_relay_persistence_consecutive_failures",
            "Consecutive failed persistence flushes; 0 while the session store answers.",
        ),
        /// Duration of the last successful flush, in microseconds (a gauge).
        last_flush_micros: GaugeMicrosAsSeconds(
            "mcp_relay_persistence_last_flush_seconds",
            "Duration of the last successful persistence flush.",
        ),
        /// Longest successful flush, in microseconds (a gauge; not exported).
        max_flush_micros,
        /// Sum of the durations of successful flushes, in microseconds.
        flush_micros_total: GaugeMicrosAsSeconds(
            "mcp_relay_persistence_flush_seconds_total",
            "Time spent in successful persistence flushes.",
        ),
        /// Idle sessions claimed from the store for expiry.
        sessions_claimed: Counter(
            "mcp_relay_sessions_expired_from_store_total",
            "Idle sessions this replica claimed from the session store and ended upstream.",
        ),
        /// Garbage met in the store: wrong-typed keys deleted (and re-written), malformed records
        /// skipped on reads and claims, claimed records not ended upstream because their upstream
        /// or upstream session id was not one this proxy could have written.
        bad_records: Counter(
            "mcp_relay_persistence_bad_records_total",
            "Garbage met in the session store: wrong-typed keys deleted, malformed records \
             skipped.",
        ),
    }
}

/// A queued session operation.
#[derive(Debug, Clone)]
enum SessionOp {
    Put(SessionRecord),
    Delete,
}

/// What waits for the next flush. Every entry carries the sequence number it was first queued
/// with; both queues are in that order, so shedding takes the globally oldest entry.
#[derive(Default)]
struct Queue {
    streams: VecDeque<(u64, Arc<EventTracker>)>,
    sessions: HashMap<SessionId, (u64, SessionOp)>,
    /// Session ids in first-queued order: exactly one entry per key of `sessions`.
    session_order: VecDeque<(u64, SessionId)>,
}

impl Queue {
    fn len(&self) -> usize {
        self.streams.len() + self.sessions.len()
    }

    /// Drops the oldest entry. Returns whether one was dropped.
    fn shed_oldest(&mut self) -> bool {
        let stream_seq = self.streams.front().map(|e| e.0);
        let session_seq = self.session_order.front().map(|e| e.0);
        let stream_is_older = match (stream_seq, session_seq) {
            (None, None) => return false,
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if stream_is_older {
            if let Some((_, tracker)) = self.streams.pop_front() {
                // It queues itself again on its next event.
                tracker.persist_queued.store(false, Ordering::Release);
            }
        } else if let Some((_, id)) = self.session_order.pop_front() {
            self.sessions.remove(&id);
        }
        true
    }
}

struct Pending {
    next_seq: u64,
    queue: Queue,
    /// Sessions whose deletion is being written right now (taken from `queue`).
    deleting: HashSet<SessionId>,
}

struct Shared {
    pending: Mutex<Pending>,
    metrics: WorkerMetrics,
    store: Arc<dyn SessionStore>,
    max_pending: usize,
    /// The sessions' idle TTL in ms, set by the SessionManager; 0: no idle expiry in the store.
    idle_ttl_ms: AtomicU64,
    /// Idle sessions claimed from the store, waiting for the SessionManager to end them.
    expired: Mutex<Vec<SessionRecord>>,
}

impl Shared {
    fn queue_session(&self, id: SessionId, op: SessionOp) {
        let mut pending = self.pending.lock();
        let p = &mut *pending;
        match p.queue.sessions.get_mut(&id) {
            // Coalesced in place: it keeps its age.
            Some(entry) => entry.1 = op,
            None => {
                let seq = p.next_seq;
                p.next_seq += 1;
                p.queue.session_order.push_back((seq, id.clone()));
                p.queue.sessions.insert(id, (seq, op));
            }
        }
        self.bound(p);
    }

    /// Sheds the oldest entries past `max_pending` and updates the pending gauge.
    fn bound(&self, p: &mut Pending) {
        let mut shed = 0;
        while p.queue.len() > self.max_pending && p.queue.shed_oldest() {
            shed += 1;
        }
        if shed > 0 {
            self.metrics.shed.fetch_add(shed, Ordering::Relaxed);
        }
        self.metrics
            .pending
            .store(p.queue.len() as u64, Ordering::Relaxed);
    }
}

/// The data plane's side of the worker: cheap to clone, never blocks on I/O.
#[derive(Clone)]
pub struct PersistenceHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PersistenceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistenceHandle")
            .field("backend", &self.shared.store.backend())
            .finish_non_exhaustive()
    }
}

impl PersistenceHandle {
    /// Hands the worker "this stream moved" (an event was admitted). O(1) and allocation-free
    /// after the first: queues the tracker only if it is not queued already; the worker reads
    /// the latest position when it flushes.
    pub fn stream_advanced(&self, tracker: &Arc<EventTracker>) {
        self.stream_advanced_by(tracker, 1);
    }

    /// [`Self::stream_advanced`] for `advances` moves at once (the events of one upstream
    /// read): counted as that many updates, queued once.
    pub fn stream_advanced_by(&self, tracker: &Arc<EventTracker>, advances: u64) {
        if advances == 0 {
            return;
        }
        self.shared
            .metrics
            .updates
            .fetch_add(advances, Ordering::Relaxed);
        if tracker.session().is_none() || tracker.persist_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut pending = self.shared.pending.lock();
        let p = &mut *pending;
        let seq = p.next_seq;
        p.next_seq += 1;
        p.queue.streams.push_back((seq, tracker.clone()));
        self.shared.bound(p);
    }

    /// Queues a session record to be written (latest record wins).
    pub fn session_saved(&self, record: SessionRecord) {
        let id = SessionId::from(record.session_id.as_str());
        self.shared.queue_session(id, SessionOp::Put(record));
    }

    /// Queues the deletion of a session and its stream positions.
    pub fn session_removed(&self, id: &SessionId) {
        self.shared.queue_session(id.clone(), SessionOp::Delete);
    }

    /// Whether the session's deletion is queued or being written: the store may still hold
    /// it, but it must not be restored from there.
    pub fn is_deleting(&self, id: &str) -> bool {
        let pending = self.shared.pending.lock();
        pending.deleting.contains(id)
            || matches!(pending.queue.sessions.get(id), Some((_, SessionOp::Delete)))
    }

    /// The store, for the SessionManager's cold-path reads (restoring a session or a stream
    /// this process does not hold).
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.shared.store
    }

    /// Tells the worker the sessions' idle TTL, so it claims sessions idle in the store.
    pub fn set_idle_ttl(&self, idle_ttl: Duration) {
        let ms = u64::try_from(idle_ttl.as_millis()).unwrap_or(u64::MAX);
        self.shared.idle_ttl_ms.store(ms, Ordering::Relaxed);
    }

    /// Takes the idle sessions the worker claimed from the store since the last call.
    pub fn take_expired(&self) -> Vec<SessionRecord> {
        mem::take(&mut *self.shared.expired.lock())
    }

    /// The worker's counters.
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.shared.metrics
    }

    /// Entries waiting for the next flush.
    pub fn pending_len(&self) -> usize {
        self.shared.pending.lock().queue.len()
    }
}

/// The one persistence task. Create it with [`PersistenceWorker::new`], hand the handle to the
/// SessionManager, and drive [`PersistenceWorker::run`] on a task owned by the daemon.
pub struct PersistenceWorker {
    shared: Arc<Shared>,
    config: WorkerConfig,
}

/// Why the worker stopped waiting.
enum Wake {
    Flush,
    Shutdown,
}

impl PersistenceWorker {
    /// A worker writing to `store`, and the handle the data plane uses to feed it.
    pub fn new(store: Arc<dyn SessionStore>, config: WorkerConfig) -> (Self, PersistenceHandle) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                next_seq: 0,
                queue: Queue::default(),
                deleting: HashSet::new(),
            }),
            metrics: WorkerMetrics::default(),
            store,
            max_pending: config.max_pending.max(1),
            idle_ttl_ms: AtomicU64::new(0),
            expired: Mutex::new(Vec::new()),
        });
        let handle = PersistenceHandle {
            shared: shared.clone(),
        };
        (Self { shared, config }, handle)
    }

    fn backoff(&self) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(self.config.flush_interval)
            .with_max_delay(self.config.max_backoff)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Flushes every `flush_interval` until `shutdown` fires, then flushes once more (retrying
    /// up to [`SHUTDOWN_FLUSH_DEADLINE`]) and returns. Claims idle sessions from the store every
    /// quarter of the idle TTL (100 ms to 30 s) while the store answers.
    pub async fn run(self, shutdown: CancellationToken) {
        let metrics = &self.shared.metrics;
        let mut backoff: Option<ExponentialBackoff> = None;
        let mut last_error_unreachable = false;
        let mut next_sweep = Instant::now();
        loop {
            let wake = match &mut backoff {
                None => self.sleep(self.config.flush_interval, &shutdown).await,
                Some(delays) => {
                    let delay = delays
                        .next()
                        .unwrap_or(self.config.max_backoff)
                        .min(self.config.max_backoff);
                    self.wait_for_store(delay, last_error_unreachable, &shutdown)
                        .await
                }
            };
            if let Wake::Shutdown = wake {
                break;
            }
            if backoff.is_some() {
                metrics.retries.fetch_add(1, Ordering::Relaxed);
            }
            match self.flush().await {
                Ok(()) => {
                    if backoff.take().is_some() {
                        tracing::info!(
                            backend = self.shared.store.backend(),
                            "session store answers again; pending state written",
                        );
                    }
                    metrics.consecutive_failures.store(0, Ordering::Relaxed);
                }
                Err(err) => {
                    let failures = metrics.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                    last_error_unreachable = err.unreachable;
                    tracing::warn!(
                        error = %err,
                        consecutive_failures = failures,
                        pending = self.shared.pending.lock().queue.len(),
                        shed_total = metrics.shed.load(Ordering::Relaxed),
                        "session store write failed; pending state kept, will retry",
                    );
                    backoff.get_or_insert_with(|| self.backoff());
                    continue;
                }
            }
            if Instant::now() >= next_sweep {
                next_sweep = Instant::now() + self.sweep_period();
                self.sweep().await;
            }
        }
        self.final_flush().await;
    }

    async fn sleep(&self, d: Duration, shutdown: &CancellationToken) -> Wake {
        tokio::select! {
            () = tokio::time::sleep(d) => Wake::Flush,
            () = shutdown.cancelled() => Wake::Shutdown,
        }
    }

    /// Waits `delay` before retrying; when the last failure was the store being unreachable,
    /// pings it every flush interval meanwhile and retries as soon as it answers.
    async fn wait_for_store(
        &self,
        delay: Duration,
        probe: bool,
        shutdown: &CancellationToken,
    ) -> Wake {
        let until = Instant::now() + delay;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Wake::Flush;
            }
            let step = if probe {
                left.min(self.config.flush_interval)
            } else {
                left
            };
            if let Wake::Shutdown = self.sleep(step, shutdown).await {
                return Wake::Shutdown;
            }
            if probe {
                tokio::select! {
                    answers = self.probe() => if answers {
                        return Wake::Flush;
                    },
                    () = shutdown.cancelled() => return Wake::Shutdown,
                }
            }
        }
    }

    /// Whether the store answers a `ping`. A quick failure is tried once more at once: the
    /// first attempt after the store returns may still meet the connection that broke.
    async fn probe(&self) -> bool {
        let started = Instant::now();
        if self.shared.store.ping().await.is_ok() {
            return true;
        }
        started.elapsed() < self.config.flush_interval && self.shared.store.ping().await.is_ok()
    }

    fn sweep_period(&self) -> Duration {
        expiry_period(Duration::from_millis(
            self.shared.idle_ttl_ms.load(Ordering::Relaxed),
        ))
    }

    async fn final_flush(&self) {
        let deadline = Instant::now() + SHUTDOWN_FLUSH_DEADLINE;
        let mut delays = self.backoff();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Counted before the attempt: a flush cut off by the deadline takes its entries
            // with it, and the queue would then read empty.
            let queued = self.shared.pending.lock().queue.len();
            let err = match tokio::time::timeout(left, self.flush()).await {
                Ok(Ok(())) => return,
                Ok(Err(err)) => err.to_string(),
                Err(_) => "no answer before the shutdown deadline".to_owned(),
            };
            let delay = delays.next().unwrap_or(self.config.max_backoff);
            if Instant::now() + delay >= deadline {
                tracing::error!(
                    error = %err,
                    pending = queued.max(self.shared.pending.lock().queue.len()),
                    "final flush at shutdown failed; the state not written is lost \
                     (its store entries expire by their TTL)",
                );
                return;
            }
            tokio::time::sleep(delay).await;
            self.shared.metrics.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Claims sessions idle in the store (their last activity, from any replica, older than
    /// the idle TTL plus the activity refresh lag), for the SessionManager to end upstream.
    /// [`PersistenceWorker::run`] calls it periodically.
    pub async fn sweep(&self) {
        let idle_ms = self.shared.idle_ttl_ms.load(Ordering::Relaxed);
        if idle_ms == 0 {
            return;
        }
        let room = SWEEP_LIMIT.saturating_sub(self.shared.expired.lock().len());
        if room == 0 {
            return;
        }
        let idle_ttl = Duration::from_millis(idle_ms);
        let Some(cutoff) = SystemTime::now().checked_sub(idle_ttl + activity_refresh(idle_ttl))
        else {
            return;
        };
        let result = self.shared.store.claim_idle_sessions(cutoff, room).await;
        self.count_repairs();
        match result {
            Ok(claimed) if claimed.is_empty() => {}
            Ok(claimed) => {
                self.shared
                    .metrics
                    .sessions_claimed
                    .fetch_add(claimed.len() as u64, Ordering::Relaxed);
                tracing::debug!(
                    count = claimed.len(),
                    "claimed idle sessions from the store"
                );
                self.shared.expired.lock().extend(claimed);
            }
            Err(err) => {
                self.shared.metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, "claiming idle sessions from the store failed");
            }
        }
    }

    /// Adds the garbage the store met (and repaired or skipped) to `bad_records`.
    fn count_repairs(&self) {
        let repairs = self.shared.store.take_repairs();
        if repairs > 0 {
            self.shared
                .metrics
                .bad_records
                .fetch_add(repairs, Ordering::Relaxed);
        }
    }

    /// The TTL of what a flush writes.
    fn ttl(&self) -> Duration {
        let idle = Duration::from_millis(self.shared.idle_ttl_ms.load(Ordering::Relaxed));
        self.config.record_ttl.max(idle.saturating_mul(2))
    }

    /// Writes everything pending as one batch. On failure every entry goes back to the pending
    /// state (unless newer state for it was queued meanwhile), oldest first.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let queue = {
            let mut pending = self.shared.pending.lock();
            let queue = mem::take(&mut pending.queue);
            for (id, (_, op)) in &queue.sessions {
                if matches!(op, SessionOp::Delete) {
                    pending.deleting.insert(id.clone());
                }
            }
            self.shared.metrics.pending.store(0, Ordering::Relaxed);
            queue
        };
        if queue.len() == 0 {
            return Ok(());
        }

        let mut batch = WriteBatch::default();
        for (id, (_, op)) in &queue.sessions {
            match op {
                SessionOp::Put(record) => batch.sessions.push(record.clone()),
                SessionOp::Delete => batch.deletes.push(id.to_string()),
            }
        }
        let mut written = Vec::with_capacity(queue.streams.len());
        for (_, tracker) in &queue.streams {
            // Clear the flag before reading, so an event arriving now queues the tracker again.
            tracker.persist_queued.store(false, Ordering::Release);
            let (Some(session), Some((seq, id, last_seq))) =
                (tracker.session(), tracker.stored_position())
            else {
                continue;
            };
            if matches!(queue.sessions.get(session), Some((_, SessionOp::Delete))) {
                continue;
            }
            batch.positions.push(StreamPosition {
                session_id: session.to_string(),
                stream_id: tracker.stream().to_string(),
                seq: Some(seq),
                last_seq: Some(last_seq),
                upstream_event_id: id.to_string(),
            });
            written.push((tracker.clone(), id));
        }

        let result = self.shared.store.write(&batch, self.ttl()).await;
        self.count_repairs();
        let metrics = &self.shared.metrics;
        match result {
            Ok(()) => {
                self.shared.pending.lock().deleting.clear();
                let now = SystemTime::now();
                for (tracker, id) in written {
                    tracker.mark_persisted(id, now);
                }
                let size = batch.len() as u64;
                metrics
                    .stream_writes
                    .fetch_add(batch.positions.len() as u64, Ordering::Relaxed);
                metrics.session_writes.fetch_add(
                    (batch.sessions.len() + batch.deletes.len()) as u64,
                    Ordering::Relaxed,
                );
                metrics.batches.fetch_add(1, Ordering::Relaxed);
                metrics.batch_entries.fetch_add(size, Ordering::Relaxed);
                metrics.max_batch_size.fetch_max(size, Ordering::Relaxed);
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                metrics.last_flush_micros.store(micros, Ordering::Relaxed);
                metrics
                    .max_flush_micros
                    .fetch_max(micros, Ordering::Relaxed);
                metrics
                    .flush_micros_total
                    .fetch_add(micros, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                self.requeue(queue);
                Err(err)
            }
        }
    }

    /// Puts a failed batch back in front of what was queued since, keeping newer state.
    fn requeue(&self, failed: Queue) {
        let mut pending = self.shared.pending.lock();
        let p = &mut *pending;
        p.deleting.clear();
        let Queue {
            streams,
            mut sessions,
            session_order,
        } = failed;
        for (seq, tracker) in streams.into_iter().rev() {
            if !tracker.persist_queued.swap(true, Ordering::AcqRel) {
                p.queue.streams.push_front((seq, tracker));
            }
        }
        for (seq, id) in session_order.into_iter().rev() {
            let Some(entry) = sessions.remove(&id) else {
                continue;
            };
            if !p.queue.sessions.contains_key(&id) {
                p.queue.session_order.push_front((seq, id.clone()));
                p.queue.sessions.insert(id, entry);
            }
        }
        self.shared.bound(p);
    }
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
                    unreachable: true,
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
        async fn ping(&self) -> Result<(), StoreError> {
            self.check()
        }
        async fn write(&self, b: &WriteBatch, t: Duration) -> Result<(), StoreError> {
            self.check()?;
            self.inner.write(b, t).await
        }
        async fn get_sessions(
            &self,
            ids: &[String],
        ) -> Result<Vec<Option<SessionRecord>>, StoreError> {
            self.check()?;
            self.inner.get_sessions(ids).await
        }
        async fn get_stream_positions(
            &self,
            k: &[(String, String)],
        ) -> Result<Vec<Option<StreamPosition>>, StoreError> {
            self.check()?;
            self.inner.get_stream_positions(k).await
        }
        async fn claim_idle_sessions(
            &self,
            before: SystemTime,
            limit: usize,
        ) -> Result<Vec<SessionRecord>, StoreError> {
            self.check()?;
            self.inner.claim_idle_sessions(before, limit).await
        }
    }

    #[tokio::test]
    async fn store_errors_are_counted_and_the_latest_state_is_written_once_it_returns() {
        let store = Arc::new(FlakyStore::default());
        store.down.store(true, Ordering::Relaxed);
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
        store.down.store(false, Ordering::Relaxed);
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
        store.down.store(true, Ordering::Relaxed);
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
        store.down.store(false, Ordering::Relaxed);
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

    #[tokio::test]
    async fn the_worker_retries_with_backoff_and_catches_up_when_the_store_returns() {
        let store = Arc::new(FlakyStore::default());
        store.down.store(true, Ordering::Relaxed);
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
        tokio::time::sleep(Duration::from_secs(2)).await;
        let m = handle.metrics().snapshot();
        assert!(m.errors >= 3, "{m:?}");
        assert!(m.retries >= 2, "{m:?}");
        // Without backoff, 2 s of 20 ms flushes would be ~100 failures.
        assert!(m.errors < 40, "backoff spaces the retries out: {m:?}");
        assert!(m.consecutive_failures >= 3, "{m:?}");
        store.down.store(false, Ordering::Relaxed);
        // The ping every flush interval notices the store's return well before the backoff.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(position(&*store, "s", "st").await.as_deref(), Some("1"));
        assert_eq!(handle.metrics().snapshot().consecutive_failures, 0);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn idle_sessions_are_claimed_by_the_worker_for_the_manager() {
        let store = Arc::new(MemoryStore::new());
        let (worker, handle) = PersistenceWorker::new(store.clone(), WorkerConfig::default());
        handle.set_idle_ttl(Duration::from_secs(60));
        let mut old = record("old");
        old.last_activity = SystemTime::now() - Duration::from_secs(3600);
        handle.session_saved(old.clone());
        handle.session_saved(record("fresh"));
        worker.flush().await.unwrap();
        worker.sweep().await;
        let expired = handle.take_expired();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].session_id, "old");
        assert!(handle.take_expired().is_empty());
    }
}
