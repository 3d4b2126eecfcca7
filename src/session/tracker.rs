//! The EventTracker: one per SSE stream. It remembers the last upstream event id, drops events
//! whose upstream id was already forwarded on the stream, and keeps a bounded replay window of the
//! events it forwarded, so a stream can be resumed (DESIGN.md, "How a legacy session flows
//! through the proxy", steps 3–5).
//!
//! Everything here runs under one short `parking_lot` lock, with no I/O and no task spawned:
//! recording an event is O(1) amortized.

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::SystemTime,
};

use bytes::Bytes;
use parking_lot::Mutex;

use super::{SessionId, StreamId};

/// Bounds of the per-stream windows. Defaults hold an ordinary tool call's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerLimits {
    /// Upstream event ids remembered for duplicate detection (count). Default 1024.
    pub dedup_ids: usize,
    /// Events kept for replay (count). Default 256.
    pub replay_events: usize,
    /// Bytes of events kept for replay (sum of encoded event sizes). Default 1 MiB.
    pub replay_bytes: usize,
}

impl Default for TrackerLimits {
    fn default() -> Self {
        Self {
            dedup_ids: 1024,
            replay_events: 256,
            replay_bytes: 1 << 20,
        }
    }
}

/// How an SSE stream was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// The response stream of a client `POST`.
    Post,
    /// A standalone server-to-client stream opened by a client `GET`.
    Get,
}

/// The decision for one upstream event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Forward the event with this client-visible event id.
    Forward {
        /// Proxy sequence number of the event within the stream (1-based).
        seq: u64,
    },
    /// The upstream id was already forwarded on this stream: drop the event.
    Duplicate,
}

/// The last ids of a stream, as the control plane reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastEventIds {
    /// The last client-visible event id delivered; `None` before the first event.
    pub client_event_id: Option<String>,
    /// The last upstream event id received; `None` if the upstream sent none.
    pub upstream_event_id: Option<Arc<str>>,
    /// The upstream event id last written to the session store, and when.
    pub persisted: Option<(Arc<str>, SystemTime)>,
}

/// Tracks the events of one SSE stream. Shared as `Arc<EventTracker>` between the stream's
/// relay, the session that owns it and the persistence worker.
#[derive(Debug)]
pub struct EventTracker {
    session: Option<SessionId>,
    stream: StreamId,
    kind: StreamKind,
    created: SystemTime,
    limits: TrackerLimits,
    state: Mutex<TrackerState>,
    events_forwarded: AtomicU64,
    duplicates_dropped: AtomicU64,
    client_connected: AtomicBool,
    /// Set while the tracker waits in the persistence worker's queue (latest-only coalescing).
    pub(super) persist_queued: AtomicBool,
}

#[derive(Debug, Default)]
struct TrackerState {
    last_seq: u64,
    last_upstream_id: Option<Arc<str>>,
    persisted: Option<(Arc<str>, SystemTime)>,
    seen: HashSet<Arc<str>>,
    seen_order: VecDeque<Arc<str>>,
    replay: VecDeque<(u64, Bytes)>,
    replay_bytes: usize,
}

impl EventTracker {
    /// A tracker for stream `stream` of `session` (`None` for a stream outside any session,
    /// such as a modern-era response stream).
    pub fn new(
        session: Option<SessionId>,
        stream: StreamId,
        kind: StreamKind,
        limits: TrackerLimits,
    ) -> Self {
        Self {
            session,
            stream,
            kind,
            created: SystemTime::now(),
            limits,
            state: Mutex::new(TrackerState::default()),
            events_forwarded: AtomicU64::new(0),
            duplicates_dropped: AtomicU64::new(0),
            client_connected: AtomicBool::new(true),
            persist_queued: AtomicBool::new(false),
        }
    }

    /// The session this stream belongs to, if any.
    pub fn session(&self) -> Option<&SessionId> {
        self.session.as_ref()
    }

    /// The stream id, unique within its session.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// How the stream was opened.
    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    /// When the stream was opened.
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// Decides whether an upstream event is forwarded. An event with an upstream id that was
    /// already admitted on this stream (within the dedup window) is a duplicate. Every admitted
    /// event gets the next sequence number; its upstream id becomes the stream's last upstream id.
    pub fn admit(&self, upstream_id: Option<&str>) -> Admission {
        let mut state = self.state.lock();
        if let Some(id) = upstream_id {
            if state.seen.contains(id) {
                drop(state);
                self.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
                return Admission::Duplicate;
            }
            let id: Arc<str> = Arc::from(id);
            if self.limits.dedup_ids > 0 {
                if state.seen_order.len() >= self.limits.dedup_ids
                    && let Some(old) = state.seen_order.pop_front()
                {
                    state.seen.remove(&old);
                }
                state.seen.insert(id.clone());
                state.seen_order.push_back(id.clone());
            }
            state.last_upstream_id = Some(id);
        }
        state.last_seq += 1;
        Admission::Forward {
            seq: state.last_seq,
        }
    }

    /// Records the encoded event that was forwarded with sequence number `seq` into the replay
    /// window, evicting the oldest events past the count and byte bounds. An event larger than
    /// the whole byte bound is not kept.
    pub fn record_forwarded(&self, seq: u64, encoded: Bytes) {
        self.events_forwarded.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock();
        let size = encoded.len();
        if self.limits.replay_events == 0 || size > self.limits.replay_bytes {
            return;
        }
        while state.replay.len() >= self.limits.replay_events
            || state.replay_bytes + size > self.limits.replay_bytes
        {
            match state.replay.pop_front() {
                Some((_, old)) => state.replay_bytes -= old.len(),
                None => break,
            }
        }
        state.replay_bytes += size;
        state.replay.push_back((seq, encoded));
    }

    /// The client-visible event id for sequence number `seq` carrying `upstream_id`:
    /// `{stream}:{seq}` or `{stream}:{seq}:{upstream id}`. It names the stream and the upstream
    /// event id, so any replica can resolve it without shared memory.
    pub fn client_event_id(&self, seq: u64, upstream_id: Option<&str>) -> String {
        match upstream_id {
            Some(up) => format!("{}:{seq}:{up}", self.stream),
            None => format!("{}:{seq}", self.stream),
        }
    }

    /// The last upstream event id, for the persistence worker and for upstream resumption.
    pub fn last_upstream_id(&self) -> Option<Arc<str>> {
        self.state.lock().last_upstream_id.clone()
    }

    /// Notes that `id` was written to the session store.
    pub fn mark_persisted(&self, id: Arc<str>, at: SystemTime) {
        self.state.lock().persisted = Some((id, at));
    }

    /// The last ids of the stream.
    pub fn last_event_ids(&self) -> LastEventIds {
        let state = self.state.lock();
        let client_event_id = (state.last_seq > 0)
            .then(|| self.client_event_id(state.last_seq, state.last_upstream_id.as_deref()));
        LastEventIds {
            client_event_id,
            upstream_event_id: state.last_upstream_id.clone(),
            persisted: state.persisted.clone(),
        }
    }

    /// Events forwarded to the client so far.
    pub fn events_forwarded(&self) -> u64 {
        self.events_forwarded.load(Ordering::Relaxed)
    }

    /// Events dropped as duplicates so far.
    pub fn duplicates_dropped(&self) -> u64 {
        self.duplicates_dropped.load(Ordering::Relaxed)
    }

    /// Whether a client connection currently reads the stream.
    pub fn client_connected(&self) -> bool {
        self.client_connected.load(Ordering::Relaxed)
    }

    /// Marks the client connection as gone (or back).
    pub fn set_client_connected(&self, connected: bool) {
        self.client_connected.store(connected, Ordering::Relaxed);
    }

    /// The buffered events with a sequence number above `after_seq`, oldest first, or `None` if
    /// events after `after_seq` have already left the replay window.
    pub fn replay_after(&self, after_seq: u64) -> Option<Vec<Bytes>> {
        let state = self.state.lock();
        let oldest = state.replay.front().map_or(state.last_seq + 1, |(s, _)| *s);
        if after_seq + 1 < oldest || after_seq > state.last_seq {
            return None;
        }
        Some(
            state
                .replay
                .iter()
                .filter(|(s, _)| *s > after_seq)
                .map(|(_, b)| b.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(limits: TrackerLimits) -> EventTracker {
        EventTracker::new(None, StreamId::from("s1"), StreamKind::Post, limits)
    }

    #[test]
    fn duplicate_upstream_ids_are_dropped_and_counted() {
        let t = tracker(TrackerLimits::default());
        assert_eq!(t.admit(Some("a")), Admission::Forward { seq: 1 });
        assert_eq!(t.admit(Some("b")), Admission::Forward { seq: 2 });
        assert_eq!(t.admit(Some("a")), Admission::Duplicate);
        assert_eq!(t.admit(None), Admission::Forward { seq: 3 });
        assert_eq!(t.duplicates_dropped(), 1);
        assert_eq!(t.last_upstream_id().as_deref(), Some("b"));
    }

    #[test]
    fn dedup_window_evicts_oldest_first() {
        let t = tracker(TrackerLimits {
            dedup_ids: 2,
            ..TrackerLimits::default()
        });
        t.admit(Some("a"));
        t.admit(Some("b"));
        t.admit(Some("c"));
        assert!(matches!(t.admit(Some("a")), Admission::Forward { .. }));
        assert_eq!(t.admit(Some("c")), Admission::Duplicate);
    }

    #[test]
    fn replay_window_is_bounded_by_count_and_bytes() {
        let t = tracker(TrackerLimits {
            dedup_ids: 8,
            replay_events: 3,
            replay_bytes: 10,
        });
        for seq in 1..=4 {
            t.admit(None);
            t.record_forwarded(seq, Bytes::from_static(b"abc"));
        }
        // count bound 3 and byte bound 10 keep seq 2..=4 (9 bytes)
        assert_eq!(t.replay_after(1).map(|v| v.len()), Some(3));
        assert_eq!(t.replay_after(0), None, "seq 1 left the window");
        assert_eq!(t.replay_after(3).map(|v| v.len()), Some(1));
        assert_eq!(t.replay_after(4).map(|v| v.len()), Some(0));
        assert_eq!(t.replay_after(5), None, "id from the future");
    }

    #[test]
    fn client_event_id_names_stream_seq_and_upstream_id() {
        let t = tracker(TrackerLimits::default());
        assert_eq!(t.client_event_id(7, Some("u:1")), "s1:7:u:1");
        assert_eq!(t.client_event_id(8, None), "s1:8");
        t.admit(Some("x"));
        assert_eq!(
            t.last_event_ids().client_event_id.as_deref(),
            Some("s1:1:x")
        );
    }
}
