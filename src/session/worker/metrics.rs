//! The persistence worker's counters (and the store's: idle claims and garbage met count here
//! too), read by the Prometheus exporter and the control plane's metric watch.

use crate::counters::counters;

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
        /// reads the queue itself ([`super::PersistenceHandle::pending_len`]).
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
        /// Idle sessions claimed from the store for expiry (by idle expiry,
        /// [`crate::session::expiry::claim_idle_sessions`]; counted here with the store's other
        /// counters).
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
