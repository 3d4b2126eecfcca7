//! The data plane's side of the persistence worker: it queues what moved and never waits on
//! I/O.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use super::{Shared, WorkerMetrics, queue::SessionOp};
use crate::session::{
    SessionId,
    store::{SessionRecord, SessionStore},
    tracker::EventTracker,
};

/// The data plane's side of the worker: cheap to clone, never blocks on I/O.
#[derive(Clone)]
pub struct PersistenceHandle {
    pub(super) shared: Arc<Shared>,
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
        pending.push_stream(tracker.clone());
        self.shared.bound(&mut pending);
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
        self.shared.pending.lock().is_deleting(id)
    }

    /// The store, for the SessionManager's cold-path reads (restoring a session or a stream
    /// this process does not hold).
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.shared.store
    }

    /// Tells the worker the sessions' idle TTL: every record it writes lives at least twice
    /// that in the store, so idle expiry finds it there ([`WorkerConfig::record_ttl`](super::WorkerConfig::record_ttl)).
    pub fn set_idle_ttl(&self, idle_ttl: Duration) {
        let ms = u64::try_from(idle_ttl.as_millis()).unwrap_or(u64::MAX);
        self.shared.idle_ttl_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether the worker's writes are failing (it is retrying with backoff): the store is
    /// then left alone by idle expiry's claims until a write succeeds again.
    pub(in crate::session) fn writes_failing(&self) -> bool {
        self.shared
            .metrics
            .consecutive_failures
            .load(Ordering::Relaxed)
            > 0
    }

    /// Adds the garbage the store met (and repaired or skipped) to `bad_records`.
    pub(in crate::session) fn count_repairs(&self) {
        self.shared.count_repairs();
    }

    /// The worker's counters.
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.shared.metrics
    }

    /// Entries waiting for the next flush.
    pub fn pending_len(&self) -> usize {
        self.shared.pending.lock().len()
    }
}
