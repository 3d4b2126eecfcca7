//! The EventTracker: one per SSE stream. It remembers the last upstream event id, drops events
//! whose upstream id was already forwarded on the stream, and keeps a bounded replay window of the
//! events it forwarded, so a stream survives a dropped client or upstream connection (DESIGN.md,
//! "How a legacy session flows through the proxy", steps 3–5).
//!
//! A legacy stream has one writer (the stream's upstream pump) and at most one reader (the body
//! of the client connection currently attached). The reader's cursor lives here, so a resuming
//! client or a forced replay just moves it. Events the reader has not been handed are never
//! evicted: when they fill the window, the pump stops reading the upstream until the reader
//! catches up, so a slow or absent client holds memory at the window bounds, not beyond.
//!
//! Everything runs under one short `parking_lot` lock, with no I/O and no task spawned; waking
//! the other side is a `tokio::sync::watch` version bump. Under that lock, `TrackerState`
//! composes plain state machines, each in its own file: `Dedup` (the upstream ids admitted
//! last, `dedup.rs`), `ReplayWindow` (the events kept for replay and their bytes, `window.rs`)
//! and `ReaderCursor` (the attached reader and how far it got, `cursor.rs`). The `PumpSlot`
//! (who pumps the stream, `pump_slot.rs`) keeps its own atomic and short lock. The recording
//! path (one upstream read under one lock) is in `record.rs`, the reader side (attach, read,
//! rewind) in `reader.rs`; the types of its API (limits, states, results) in `types.rs`.

mod cursor;
mod dedup;
mod pump_slot;
mod reader;
mod record;
mod types;
mod window;

use std::{
    hash::BuildHasher as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::SystemTime,
};

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::{sync::watch, time::Instant};

use super::{SessionId, StreamId};
use crate::protocol::ClientEventId;
use cursor::ReaderCursor;
use dedup::{Dedup, IdHasher};
use pump_slot::PumpSlot;
use window::ReplayWindow;

pub use pump_slot::ParkedPump;
pub use record::Recording;
pub use types::{
    Admission, AttachError, LastEventIds, MAX_EPHEMERAL, Read, Recorded, StreamKind, TrackerLimits,
    UpstreamState,
};

/// Tracks the events of one SSE stream. Shared as `Arc<EventTracker>` between the stream's
/// pump, its reader, the session that owns it and the persistence worker.
#[derive(Debug)]
pub struct EventTracker {
    session: Option<SessionId>,
    stream: StreamId,
    kind: StreamKind,
    created: SystemTime,
    limits: TrackerLimits,
    /// The key of the stream's upstream id hashes (dedup, and telling issued ids from forged).
    id_hasher: IdHasher,
    state: Mutex<TrackerState>,
    events_forwarded: AtomicU64,
    duplicates_dropped: AtomicU64,
    /// Bumped when events are appended or the upstream state changes (wakes the reader).
    appended: watch::Sender<u64>,
    /// Bumped when a reader attaches or detaches, and when it takes events while the pump waits
    /// for room (wakes the pump).
    consumed: watch::Sender<u64>,
    /// Set while the tracker waits in the persistence worker's queue (latest-only coalescing).
    pub(super) persist_queued: AtomicBool,
    /// Set while the pump waits for the reader to make room in the window.
    room_wanted: AtomicBool,
    /// Who pumps the stream: the claim, and a reader-driven pump parked between polls.
    pump: PumpSlot,
    /// For a stream restored from the session store ([`Self::restored`]): the recorded seq of
    /// the last event with an upstream id, the recorded last seq, and the keyed hash of that
    /// upstream id.
    restored_span: Option<(u64, u64, u64)>,
}

/// Everything the tracker's lock guards: the stream's position and upstream side, and the
/// state machines that compose it.
///
/// Invariants: `last_upstream_seq` ≤ `last_seq` (0 while `last_upstream_id` is `None`); the
/// reader cursor's `delivered` ≤ `last_seq`; the window's events are the last ones admitted
/// (a windowed stream), and its undelivered bytes are counted from the cursor's `delivered`.
#[derive(Debug)]
struct TrackerState {
    /// The last sequence number admitted (0 before the first event).
    last_seq: u64,
    last_upstream_id: Option<Arc<str>>,
    /// The sequence number of the event that carried `last_upstream_id` (0 when none did).
    last_upstream_seq: u64,
    persisted: Option<(Arc<str>, SystemTime)>,
    upstream: UpstreamState,
    dedup: Dedup,
    window: ReplayWindow,
    cursor: ReaderCursor,
}

impl TrackerState {
    /// Admits an event carrying `upstream_id` (dedup keyed by `hasher`), without recording the
    /// last upstream id (the caller does, once per batch): the new seq, or `None` for a
    /// duplicate (not counted here).
    fn admit(&mut self, hasher: &IdHasher, upstream_id: Option<&str>) -> Option<u64> {
        if let Some(id) = upstream_id
            && !self.dedup.admit(hasher, id)
        {
            return None;
        }
        self.last_seq += 1;
        Some(self.last_seq)
    }

    /// Notes that event `seq` carried `upstream_id`, the last one that carried any.
    fn set_last_upstream(&mut self, seq: u64, upstream_id: Arc<str>) {
        self.last_upstream_id = Some(upstream_id);
        self.last_upstream_seq = seq;
    }

    /// Moves the reader cursor to `after` (in the window: [`ReplayWindow::check`] first),
    /// recounting what waits for the reader.
    fn move_cursor(&mut self, after: u64) {
        let upstream_id = self
            .window
            .upstream_id_at(after, self.last_upstream_id.as_ref());
        self.cursor.move_to(after, upstream_id);
        self.window.recount(after);
    }
}

impl EventTracker {
    /// A tracker for stream `stream` of `session` (`None` for a stream outside any session,
    /// such as a modern-era response stream). No reader is attached until [`Self::attach`].
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
            id_hasher: IdHasher::default(),
            state: Mutex::new(TrackerState {
                last_seq: 0,
                last_upstream_id: None,
                last_upstream_seq: 0,
                persisted: None,
                upstream: UpstreamState::Live,
                dedup: Dedup::new(limits.dedup_ids),
                window: ReplayWindow::after(0, None),
                cursor: ReaderCursor::new(Instant::now()),
            }),
            events_forwarded: AtomicU64::new(0),
            duplicates_dropped: AtomicU64::new(0),
            appended: watch::Sender::new(0),
            consumed: watch::Sender::new(0),
            persist_queued: AtomicBool::new(false),
            room_wanted: AtomicBool::new(false),
            pump: PumpSlot::default(),
            restored_span: None,
        }
    }

    /// A tracker for a stream this process does not hold but the session store does (another
    /// replica, or this one before a restart, opened it): its event `seq` carried `upstream_id`
    /// and its last event was `last_seq` (≥ `seq`; the events after `seq` came without an
    /// upstream id), the position the store recorded; the stream resumes upstream after
    /// `upstream_id`. Its window starts empty at `last_seq`, so a reader attaches there and the
    /// next event is `last_seq + 1`; the upstream side is [`UpstreamState::Stopped`] until a
    /// pump re-opens it. `persisted` is the upstream id the store held.
    pub fn restored(
        session: SessionId,
        stream: StreamId,
        limits: TrackerLimits,
        seq: u64,
        upstream_id: &str,
        last_seq: u64,
        persisted: Option<Arc<str>>,
    ) -> Self {
        let mut tracker = Self::new(Some(session), stream, StreamKind::Get, limits);
        let hash = tracker.id_hasher.hash_one(upstream_id);
        {
            let mut state = tracker.state.lock();
            let id: Arc<str> = Arc::from(upstream_id);
            let last_seq = last_seq.max(seq);
            state.last_seq = last_seq;
            state.dedup.insert(hash);
            // The event at `last_seq` carried `upstream_id` only if it is the one at `seq`.
            let last_id = (last_seq == seq).then_some(id.clone());
            state.window = ReplayWindow::after(last_seq, last_id.as_ref().map(|_| hash));
            state.cursor.move_to(last_seq, last_id);
            state.set_last_upstream(seq, id);
            state.persisted = persisted.map(|p| (p, SystemTime::now()));
            state.upstream = UpstreamState::Stopped;
        }
        tracker.restored_span = Some((seq, last_seq.max(seq), hash));
        tracker
    }

    /// Where a reader of client id `id` attaches on a stream restored from the session store
    /// ([`Self::restored`]) when `id` names a position from the recorded seq to the recorded
    /// last seq (an upstream part only at the recorded seq, equal to the recorded upstream id):
    /// the recorded last seq, since the events in between came without an upstream id and
    /// cannot be replayed. `None` for any other id or stream. The stream part is the caller's
    /// to check.
    pub fn restored_position(&self, id: &ClientEventId<'_>) -> Option<u64> {
        let (seq, last, hash) = self.restored_span?;
        if !(seq..=last).contains(&id.seq) {
            return None;
        }
        match id.upstream_id {
            None => Some(last),
            Some(up) if id.seq == seq && self.id_hasher.hash_one(up) == hash => Some(last),
            Some(_) => None,
        }
    }

    /// Claims the right to run the stream's pump; `false` if one is already running.
    pub fn claim_pump(&self) -> bool {
        self.pump.claim()
    }

    /// Releases the pump claim (the pump stopped).
    pub fn release_pump(&self) {
        self.pump.release();
    }

    /// Parks a reader-driven pump between polls (see [`ParkedPump`]).
    pub fn park_pump(&self, pump: ParkedPump) {
        self.pump.park(pump);
    }

    /// Takes the parked pump if `driver` drives it (`None`: whoever does). `None` when no pump
    /// is parked (none, one on a task, or one being polled right now) or another reader drives it.
    pub fn take_pump(&self, driver: Option<u64>) -> Option<ParkedPump> {
        self.pump.take(driver)
    }

    /// Makes `driver` the reader that drives the parked pump; `false` if none is parked.
    pub fn drive_pump(&self, driver: u64) -> bool {
        self.pump.drive(driver)
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
    #[cfg(test)]
    pub(crate) fn admit(&self, upstream_id: Option<&str>) -> Admission {
        let mut state = self.state.lock();
        match state.admit(&self.id_hasher, upstream_id) {
            Some(seq) => {
                if let Some(id) = upstream_id {
                    state.set_last_upstream(seq, Arc::from(id));
                }
                Admission::Forward { seq }
            }
            None => {
                drop(state);
                self.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
                Admission::Duplicate
            }
        }
    }

    /// Wakes the reader to take what was appended.
    pub fn publish(&self) {
        self.appended.send_modify(|v| *v += 1);
    }

    /// Asks to be woken (through [`Self::consumed`]) when the reader next takes events; the
    /// pump calls it before it waits for room, so reads cost no wake-up otherwise.
    pub fn want_room(&self) {
        self.room_wanted.store(true, Ordering::Release);
    }

    /// Records where the upstream side stands and wakes the reader.
    pub fn set_upstream(&self, upstream: UpstreamState) {
        self.state.lock().upstream = upstream;
        self.appended.send_modify(|v| *v += 1);
    }

    /// Where the upstream side stands.
    pub fn upstream(&self) -> UpstreamState {
        self.state.lock().upstream
    }

    /// When the last reader detached (on the tokio clock, so tests can pause and advance it);
    /// `None` while a reader is attached.
    pub fn detached_since(&self) -> Option<Instant> {
        self.state.lock().cursor.detached_since()
    }

    /// Wakes on every append and upstream state change (for the reader).
    pub fn appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Wakes on attach and detach, and on reads the pump asked for with [`Self::want_room`].
    pub fn consumed(&self) -> watch::Receiver<u64> {
        self.consumed.subscribe()
    }

    /// The client-visible event id for sequence number `seq` carrying `upstream_id`:
    /// `{stream}:{seq}` or `{stream}:{seq}:{upstream id}`. It names the stream and the upstream
    /// event id, so any replica can resolve it without shared memory.
    fn client_event_id(&self, seq: u64, upstream_id: Option<&str>) -> String {
        let mut id = BytesMut::new();
        self.write_client_event_id(seq, upstream_id, &mut id);
        String::from_utf8_lossy(&id).into_owned()
    }

    /// Appends [`Self::client_event_id`] to `out` without an intermediate allocation (the SSE
    /// hot path writes it straight into the outgoing event).
    fn write_client_event_id(&self, seq: u64, upstream_id: Option<&str>, out: &mut BytesMut) {
        ClientEventId::write(self.stream.as_str(), seq, upstream_id, out);
    }

    /// The last upstream event id, for the persistence worker and for upstream resumption.
    pub fn last_upstream_id(&self) -> Option<Arc<str>> {
        self.state.lock().last_upstream_id.clone()
    }

    /// The last upstream event id and the sequence number of the event that carried it: the
    /// position the persistence worker writes to the session store.
    #[cfg(test)]
    pub(crate) fn last_upstream_position(&self) -> Option<(u64, Arc<str>)> {
        let state = self.state.lock();
        let id = state.last_upstream_id.clone()?;
        Some((state.last_upstream_seq, id))
    }

    /// The stream's resumable position, read together: the sequence number of the event that
    /// carried the last upstream id, that id, and the last sequence number admitted; what the
    /// persistence worker writes to the session store. `None` before any upstream id.
    pub fn stored_position(&self) -> Option<(u64, Arc<str>, u64)> {
        let state = self.state.lock();
        let id = state.last_upstream_id.clone()?;
        Some((state.last_upstream_seq, id, state.last_seq))
    }

    /// The last sequence number admitted.
    pub fn last_seq(&self) -> u64 {
        self.state.lock().last_seq
    }

    /// Notes that `id` was written to the session store.
    pub fn mark_persisted(&self, id: Arc<str>, at: SystemTime) {
        self.state.lock().persisted = Some((id, at));
    }

    /// The last ids of the stream.
    pub fn last_event_ids(&self) -> LastEventIds {
        let state = self.state.lock();
        let delivered = state.cursor.delivered();
        let client_event_id = (delivered > 0).then(|| {
            self.client_event_id(
                delivered,
                state.cursor.delivered_upstream_id().map(|id| &**id),
            )
        });
        LastEventIds {
            client_event_id,
            upstream_event_id: state.last_upstream_id.clone(),
            persisted: state.persisted.clone(),
        }
    }

    /// Events admitted and forwarded so far.
    pub fn events_forwarded(&self) -> u64 {
        self.events_forwarded.load(Ordering::Relaxed)
    }

    /// Events dropped as duplicates so far.
    pub fn duplicates_dropped(&self) -> u64 {
        self.duplicates_dropped.load(Ordering::Relaxed)
    }

    /// Whether a client connection currently reads the stream.
    pub fn client_connected(&self) -> bool {
        self.state.lock().cursor.attached()
    }

    /// Bytes held in the replay window.
    pub fn window_bytes(&self) -> usize {
        self.state.lock().window.bytes()
    }
}

#[cfg(test)]
mod tests;
