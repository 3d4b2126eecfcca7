//! The persistence worker's counters (and the store's: idle claims and garbage met count here
//! too), read by the Prometheus exporter and the control plane's metric watch.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the worker, readable at any time as atomics (monotonic unless marked a gauge).
/// The Prometheus exporter and the control plane's metric watch read them.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Stream advances handed to the worker (one per admitted event: each moves the stream's
    /// last seq, and one with an upstream id its resumable position).
    pub updates: AtomicU64,
    /// Stream positions written to the store.
    pub stream_writes: AtomicU64,
    /// Session records written or deleted.
    pub session_writes: AtomicU64,
    /// Flushes that wrote at least one entry (store round trips for writes).
    pub batches: AtomicU64,
    /// Entries written, over all batches (`batch_entries / batches` is the mean batch size).
    pub batch_entries: AtomicU64,
    /// Largest batch written (a gauge).
    pub max_batch_size: AtomicU64,
    /// Failed store operations (writes and idle-session claims).
    pub errors: AtomicU64,
    /// Write attempts made after a failed one.
    pub retries: AtomicU64,
    /// Pending entries dropped because pending state was full (oldest first).
    pub shed: AtomicU64,
    /// Entries waiting for the next flush (a gauge).
    pub pending: AtomicU64,
    /// Consecutive failed flushes; 0 while the store answers (a gauge).
    pub consecutive_failures: AtomicU64,
    /// Duration of the last successful flush, in microseconds (a gauge).
    pub last_flush_micros: AtomicU64,
    /// Longest successful flush, in microseconds (a gauge).
    pub max_flush_micros: AtomicU64,
    /// Sum of the durations of successful flushes, in microseconds.
    pub flush_micros_total: AtomicU64,
    /// Idle sessions claimed from the store for expiry (by idle expiry,
    /// [`crate::session::expiry::claim_idle_sessions`]; counted here with the store's other
    /// counters).
    pub sessions_claimed: AtomicU64,
    /// Garbage met in the store: wrong-typed keys deleted (and re-written), malformed records
    /// skipped on reads and claims, claimed records not ended upstream because their upstream
    /// or upstream session id was not one this proxy could have written.
    pub bad_records: AtomicU64,
}

/// A point-in-time copy of [`WorkerMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// [`WorkerMetrics::updates`].
    pub updates: u64,
    /// [`WorkerMetrics::stream_writes`].
    pub stream_writes: u64,
    /// [`WorkerMetrics::session_writes`].
    pub session_writes: u64,
    /// [`WorkerMetrics::batches`].
    pub batches: u64,
    /// [`WorkerMetrics::batch_entries`].
    pub batch_entries: u64,
    /// [`WorkerMetrics::max_batch_size`].
    pub max_batch_size: u64,
    /// [`WorkerMetrics::errors`].
    pub errors: u64,
    /// [`WorkerMetrics::retries`].
    pub retries: u64,
    /// [`WorkerMetrics::shed`].
    pub shed: u64,
    /// [`WorkerMetrics::pending`].
    pub pending: u64,
    /// [`WorkerMetrics::consecutive_failures`].
    pub consecutive_failures: u64,
    /// [`WorkerMetrics::last_flush_micros`].
    pub last_flush_micros: u64,
    /// [`WorkerMetrics::max_flush_micros`].
    pub max_flush_micros: u64,
    /// [`WorkerMetrics::flush_micros_total`].
    pub flush_micros_total: u64,
    /// [`WorkerMetrics::sessions_claimed`].
    pub sessions_claimed: u64,
    /// [`WorkerMetrics::bad_records`].
    pub bad_records: u64,
}

impl WorkerMetrics {
    /// Reads every counter.
    pub fn snapshot(&self) -> WorkerSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerSnapshot {
            updates: r(&self.updates),
            stream_writes: r(&self.stream_writes),
            session_writes: r(&self.session_writes),
            batches: r(&self.batches),
            batch_entries: r(&self.batch_entries),
            max_batch_size: r(&self.max_batch_size),
            errors: r(&self.errors),
            retries: r(&self.retries),
            shed: r(&self.shed),
            pending: r(&self.pending),
            consecutive_failures: r(&self.consecutive_failures),
            last_flush_micros: r(&self.last_flush_micros),
            max_flush_micros: r(&self.max_flush_micros),
            flush_micros_total: r(&self.flush_micros_total),
            sessions_claimed: r(&self.sessions_claimed),
            bad_records: r(&self.bad_records),
        }
    }
}
