//! The PersistenceWorker: exactly one task per process that writes session records and the last
//! upstream event id of every stream to the SessionStore. (Claiming sessions idle in the store
//! is idle expiry's business: [`super::expiry`].)
//!
//! The data plane never waits on it and never spawns for it. A tracker whose last id moved
//! queues itself once (an atomic flag), so a burst of events on one stream costs one store write
//! per flush ("latest-only coalescing"); a session record queued again replaces the queued one.
//! Every flush is one [`WriteBatch`] (one round trip to Redis).
//!
//! Layout: `queue.rs` is the coalescing queue (pure data, no I/O, no clock); `handle.rs` the
//! data plane's side ([`PersistenceHandle`]); `metrics.rs` the counters; this module the task
//! itself: flushes, retries with backoff, probing an unreachable store, the shutdown flush.
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

mod handle;
mod metrics;
mod queue;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use parking_lot::Mutex;
// tokio's clock, so tests run the retry and shutdown timings on a paused clock.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::queue::{Pending, Queue, SessionOp};
pub use self::{
    handle::PersistenceHandle,
    metrics::{WorkerMetrics, WorkerSnapshot},
};
use super::{
    SessionId,
    store::{SessionStore, StoreError, StreamPosition, WriteBatch},
};

/// How long the final flush at shutdown may keep retrying.
pub const SHUTDOWN_FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Worker settings (`[worker]` in the configuration file).
#[serde_with::serde_as]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// How often pending state is flushed. Default 100 ms.
    #[serde(rename = "flush_interval_ms")]
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    pub flush_interval: Duration,
    /// TTL of every record written (refreshed on each write). Session records live at least
    /// twice the sessions' idle TTL whatever this says, so idle expiry finds them. Default 24 h.
    #[serde(rename = "record_ttl_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub record_ttl: Duration,
    /// Longest wait between retries while the store keeps failing. Default 5 s.
    #[serde(rename = "max_backoff_ms")]
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
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

struct Shared {
    pending: Mutex<Pending>,
    metrics: WorkerMetrics,
    store: Arc<dyn SessionStore>,
    max_pending: usize,
    /// The sessions' idle TTL in ms, set by the SessionManager (records outlive twice it); 0
    /// until set.
    idle_ttl_ms: AtomicU64,
}

impl Shared {
    fn queue_session(&self, id: SessionId, op: SessionOp) {
        let mut pending = self.pending.lock();
        pending.push_session(id, op);
        self.bound(&mut pending);
    }

    /// Adds the garbage the store met (and repaired or skipped) to `bad_records`.
    fn count_repairs(&self) {
        let repairs = self.store.take_repairs();
        if repairs > 0 {
            self.metrics
                .bad_records
                .fetch_add(repairs, Ordering::Relaxed);
        }
    }

    /// Sheds the oldest entries past `max_pending` and updates the pending gauge.
    fn bound(&self, p: &mut Pending) {
        let shed = p.shed_past(self.max_pending);
        if shed > 0 {
            self.metrics.shed.fetch_add(shed, Ordering::Relaxed);
        }
        self.metrics
            .pending
            .store(p.len() as u64, Ordering::Relaxed);
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
            pending: Mutex::new(Pending::default()),
            metrics: WorkerMetrics::default(),
            store,
            max_pending: config.max_pending.max(1),
            idle_ttl_ms: AtomicU64::new(0),
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
    /// up to [`SHUTDOWN_FLUSH_DEADLINE`]) and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let metrics = &self.shared.metrics;
        let mut backoff: Option<ExponentialBackoff> = None;
        let mut last_error_unreachable = false;
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
                    last_error_unreachable = err.is_unreachable();
                    tracing::warn!(
                        error = %format_args!("{err:#}"),
                        consecutive_failures = failures,
                        pending = self.shared.pending.lock().len(),
                        shed_total = metrics.shed.load(Ordering::Relaxed),
                        "session store write failed; pending state kept, will retry",
                    );
                    backoff.get_or_insert_with(|| self.backoff());
                }
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

    async fn final_flush(&self) {
        let deadline = Instant::now() + SHUTDOWN_FLUSH_DEADLINE;
        let mut delays = self.backoff();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Counted before the attempt: a flush cut off by the deadline takes its entries
            // with it, and the queue would then read empty.
            let queued = self.shared.pending.lock().len();
            let err = match tokio::time::timeout(left, self.flush()).await {
                Ok(Ok(())) => return,
                Ok(Err(err)) => format!("{err:#}"),
                Err(_) => "no answer before the shutdown deadline".to_owned(),
            };
            let delay = delays.next().unwrap_or(self.config.max_backoff);
            if Instant::now() + delay >= deadline {
                tracing::error!(
                    error = %err,
                    pending = queued.max(self.shared.pending.lock().len()),
                    "final flush at shutdown failed; the state not written is lost \
                     (its store entries expire by their TTL)",
                );
                return;
            }
            tokio::time::sleep(delay).await;
            self.shared.metrics.retries.fetch_add(1, Ordering::Relaxed);
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
            let queue = self.shared.pending.lock().take();
            self.shared.metrics.pending.store(0, Ordering::Relaxed);
            queue
        };
        if queue.len() == 0 {
            return Ok(());
        }

        let mut batch = WriteBatch::default();
        for (id, op) in queue.sessions() {
            match op {
                SessionOp::Put(record) => batch.sessions.push(record.clone()),
                SessionOp::Delete => batch.deletes.push(id.to_string()),
            }
        }
        let mut written = Vec::new();
        for tracker in queue.streams() {
            // Clear the flag before reading, so an event arriving now queues the tracker again.
            tracker.persist_queued.store(false, Ordering::Release);
            let (Some(session), Some((seq, id, last_seq))) =
                (tracker.session(), tracker.stored_position())
            else {
                continue;
            };
            if queue.deletes(session.as_str()) {
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
        self.shared.count_repairs();
        let metrics = &self.shared.metrics;
        match result {
            Ok(()) => {
                self.shared.pending.lock().written();
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
        pending.requeue(failed);
        self.shared.bound(&mut pending);
    }
}

#[cfg(test)]
mod tests;
