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
//! the other side is a `tokio::sync::watch` version bump.

use std::{
    collections::{HashSet, VecDeque},
    hash::BuildHasher as _,
    ops::Range,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Instant, SystemTime},
};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::{SessionId, StreamId};
use crate::protocol::ClientEventId;
use crate::sse::SseBlock;

/// The dedup set's hasher. The set holds a 64-bit hash of each upstream id, keyed per stream
/// with a random seed, not the id itself: no allocation per event, and an upstream cannot
/// choose ids that collide. Two distinct ids of one stream are taken for each other with odds
/// of about `dedup_ids` in 2^64 per event.
type IdHasher = foldhash::fast::RandomState;

/// Non-event blocks (keep-alives) held for a reader that has not read them yet (count). Their
/// bytes also count against [`TrackerLimits::replay_bytes`], with the undelivered events'.
pub const MAX_EPHEMERAL: usize = 64;

/// Bounds of the per-stream windows (`[session.tracker]` in the configuration file). Defaults
/// hold an ordinary tool call's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerLimits {
    /// Upstream event ids remembered for duplicate detection (count). Default 1024.
    pub dedup_ids: usize,
    /// Events kept for replay (count). Default 256.
    pub replay_events: usize,
    /// Bytes of events kept for replay (sum of encoded event sizes). Default 1 MiB. One event
    /// larger than this is still relayed, alone in the window.
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

/// Where the stream's upstream side stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamState {
    /// An upstream response is being read.
    Live,
    /// The upstream connection broke; the pump is resuming it with `Last-Event-ID`.
    Reconnecting,
    /// The upstream ended the stream normally: nothing more will come.
    Complete,
    /// The upstream cannot be resumed (no event id to resume from, or it refused).
    Failed,
    /// The proxy stopped reading: linger expired with no client, the session ended, or shutdown.
    Stopped,
}

impl UpstreamState {
    /// Whether no more events will arrive on this stream without a new upstream request.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Complete | Self::Failed | Self::Stopped)
    }
}

/// The decision for one upstream event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Forward the event with this proxy sequence number (1-based, gapless per stream).
    Forward { seq: u64 },
    /// The upstream id was already forwarded on this stream: drop the event.
    Duplicate,
}

/// What a reader gets from [`EventTracker::read`].
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Encoded events for the client, oldest first.
    Events(Vec<Bytes>),
    /// Nothing new yet: wait for the next change.
    Wait,
    /// Every event was handed over and the upstream side is terminal.
    End(UpstreamState),
    /// Another reader took the stream over (the client resumed on a new connection).
    Replaced,
}

/// Why a reader could not attach at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// Events after the requested position have left the replay window.
    #[error("events after sequence {after} have left the replay window (oldest kept: {oldest})")]
    LeftWindow { after: u64, oldest: u64 },
    /// The position is past the last event of the stream.
    #[error("sequence {after} is past the stream's last event {last}")]
    Future { after: u64, last: u64 },
    /// The position is past the last event handed to the attached reader: moving its cursor
    /// there would skip the events in between ([`EventTracker::rewind`]).
    #[error("sequence {after} is past the last event handed to the client ({delivered})")]
    NotDelivered { after: u64, delivered: u64 },
}

/// The last ids of a stream, as the control plane reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastEventIds {
    /// The last client-visible event id handed to a client; `None` before the first.
    pub client_event_id: Option<String>,
    /// The last upstream event id received; `None` if the upstream sent none.
    pub upstream_event_id: Option<Arc<str>>,
    /// The upstream event id last written to the session store, and when.
    pub persisted: Option<(Arc<str>, SystemTime)>,
}

/// Tracks the events of one SSE stream. Shared as `Arc<EventTracker>` between the stream's
/// pump, its reader, the session that owns it and the persistence worker.
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
    /// Bumped when events are appended or the upstream state changes (wakes the reader).
    appended: watch::Sender<u64>,
    /// Bumped when a reader attaches or detaches, and when it takes events while the pump waits
    /// for room (wakes the pump).
    consumed: watch::Sender<u64>,
    /// Set while the tracker waits in the persistence worker's queue (latest-only coalescing).
    pub(super) persist_queued: AtomicBool,
    /// Set while a pump reads the upstream for this stream (at most one at a time).
    pump_active: AtomicBool,
    /// Set while the pump waits for the reader to make room in the window.
    room_wanted: AtomicBool,
    /// The pump, while a reader drives it rather than a task, between that reader's polls.
    parked_pump: Mutex<Option<ParkedPump>>,
    /// For a stream restored from the session store ([`Self::restored`]): the recorded seq of
    /// the last event with an upstream id, the recorded last seq, and the keyed hash of that
    /// upstream id.
    restored_span: Option<(u64, u64, u64)>,
}

/// A stream pump that a client's reader drives instead of a task (`proxy::pump::InlinePump`),
/// kept in its tracker between polls so that whoever must take it over can: a reader that
/// resumes the stream while the driving one is stuck, or shutdown.
pub struct ParkedPump {
    /// The pump itself.
    pub future: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Keeps the session manager's pump tracker (shutdown) waiting for it.
    pub tracked: tokio_util::task::task_tracker::TaskTrackerToken,
    /// The reader driving it.
    pub driver: u64,
}

impl std::fmt::Debug for ParkedPump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkedPump")
            .field("driver", &self.driver)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct TrackerState {
    last_seq: u64,
    last_upstream_id: Option<Arc<str>>,
    /// The sequence number of the event that carried `last_upstream_id` (0 when none did).
    last_upstream_seq: u64,
    /// The sequence number of the event just before the window's first (or, while the window
    /// is empty, the last event), and the keyed hash of its upstream id: so the client id of
    /// that position can be told from a forged one too ([`EventTracker::issued`]).
    before_window: (u64, Option<u64>),
    /// The upstream id of the event at `delivered`, to rebuild the last client id handed out.
    delivered_upstream_id: Option<Arc<str>>,
    persisted: Option<(Arc<str>, SystemTime)>,
    /// Keyed hashes of the upstream ids admitted last (at most `dedup_ids`), and their order.
    seen: HashSet<u64, IdHasher>,
    seen_order: VecDeque<u64>,
    /// The key of the hashes in `seen`.
    id_hasher: IdHasher,
    /// The events kept for replay, oldest first, seq ascending and contiguous.
    window: VecDeque<WindowEvent>,
    window_bytes: usize,
    /// Bytes of the window's events after `delivered` (kept in step, so checks are O(1)).
    undelivered_bytes: usize,
    /// Highest seq handed to a reader; events after it are never evicted.
    delivered: u64,
    /// Blocks that are not events (comments such as keep-alives, `retry`-only blocks), waiting
    /// for the attached reader, each tagged with the last seq before it. Never replayed.
    ephemeral: Vec<(u64, Bytes)>,
    /// Generation of the attached reader; 0 when none is attached.
    reader: u64,
    readers_attached: u64,
    detached_at: Option<Instant>,
    upstream: UpstreamState,
}

/// One encoded event in the replay window. The events recorded from one upstream read share
/// one `chunk`, so a reader hands a run of them to the client as one slice, without copying.
/// A chunk lives while any of its events is in the window: besides the window's own bytes, at
/// most the oldest, partly evicted chunk is held.
#[derive(Debug)]
struct WindowEvent {
    seq: u64,
    upstream_id: EventUpstreamId,
    chunk: Bytes,
    /// The event's bytes within `chunk`.
    range: Range<usize>,
}

/// Where a window event's upstream id is kept.
#[derive(Debug)]
enum EventUpstreamId {
    None,
    /// Within the event's chunk: the tail of the client id the event was encoded with.
    InChunk(Range<usize>),
    Shared(Arc<str>),
}

impl WindowEvent {
    fn len(&self) -> usize {
        self.range.len()
    }

    fn upstream_id(&self) -> Option<&str> {
        match &self.upstream_id {
            EventUpstreamId::None => None,
            // Written there from a `&str`: valid UTF-8.
            EventUpstreamId::InChunk(range) => std::str::from_utf8(&self.chunk[range.clone()]).ok(),
            EventUpstreamId::Shared(id) => Some(id),
        }
    }

    /// The upstream id as an `Arc`, shared with `last` when equal (no allocation then).
    fn upstream_id_shared(&self, last: Option<&Arc<str>>) -> Option<Arc<str>> {
        let id = self.upstream_id()?;
        Some(match last {
            Some(last) if **last == *id => last.clone(),
            _ => Arc::from(id),
        })
    }

    /// Whether `next` continues this run of events in the same chunk.
    fn continued_by(chunk: &Bytes, run: &Range<usize>, next: &WindowEvent) -> bool {
        chunk.as_ptr() == next.chunk.as_ptr()
            && chunk.len() == next.chunk.len()
            && run.end == next.range.start
    }
}

/// What [`EventTracker::record_to_window`] or [`EventTracker::record_direct`] did with the
/// blocks of one upstream read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Events admitted and encoded with the proxy's id.
    pub forwarded: u64,
    /// How many of those carried an upstream id (each moves the stream's resumable position).
    pub advanced: u64,
    /// Events dropped because their upstream id was already forwarded on the stream.
    pub duplicates: u64,
    /// Recording stopped because the next event would evict one the reader has not been
    /// handed; the blocks left in the queue wait for room.
    pub window_full: bool,
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
            state: Mutex::new(TrackerState {
                last_seq: 0,
                last_upstream_id: None,
                last_upstream_seq: 0,
                before_window: (0, None),
                delivered_upstream_id: None,
                persisted: None,
                seen: HashSet::with_hasher(IdHasher::default()),
                seen_order: VecDeque::new(),
                id_hasher: IdHasher::default(),
                window: VecDeque::new(),
                window_bytes: 0,
                undelivered_bytes: 0,
                ephemeral: Vec::new(),
                delivered: 0,
                reader: 0,
                readers_attached: 0,
                detached_at: Some(Instant::now()),
                upstream: UpstreamState::Live,
            }),
            events_forwarded: AtomicU64::new(0),
            duplicates_dropped: AtomicU64::new(0),
            appended: watch::Sender::new(0),
            consumed: watch::Sender::new(0),
            persist_queued: AtomicBool::new(false),
            pump_active: AtomicBool::new(false),
            room_wanted: AtomicBool::new(false),
            parked_pump: Mutex::new(None),
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
        {
            let mut state = tracker.state.lock();
            let id: Arc<str> = Arc::from(upstream_id);
            let last_seq = last_seq.max(seq);
            state.last_seq = last_seq;
            state.delivered = last_seq;
            let hash = state.id_hasher.hash_one(upstream_id);
            if limits.dedup_ids > 0 {
                state.seen.insert(hash);
                state.seen_order.push_back(hash);
            }
            // The event at `last_seq` carried `upstream_id` only if it is the one at `seq`.
            let last_id = (last_seq == seq).then_some(id.clone());
            state.before_window = (last_seq, last_id.as_ref().map(|_| hash));
            state.delivered_upstream_id = last_id;
            state.last_upstream_id = Some(id);
            state.last_upstream_seq = seq;
            state.persisted = persisted.map(|p| (p, SystemTime::now()));
            state.upstream = UpstreamState::Stopped;
            drop(state);
            tracker.restored_span = Some((seq, last_seq, hash));
        }
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
            Some(up) if id.seq == seq && self.state.lock().id_hasher.hash_one(up) == hash => {
                Some(last)
            }
            Some(_) => None,
        }
    }

    /// Claims the right to run the stream's pump; `false` if one is already running.
    pub fn claim_pump(&self) -> bool {
        !self.pump_active.swap(true, Ordering::AcqRel)
    }

    /// Releases the pump claim (the pump stopped).
    pub fn release_pump(&self) {
        self.pump_active.store(false, Ordering::Release);
    }

    /// Parks a reader-driven pump between polls (see [`ParkedPump`]).
    pub fn park_pump(&self, pump: ParkedPump) {
        *self.parked_pump.lock() = Some(pump);
    }

    /// Takes the parked pump if `driver` drives it (`None`: whoever does). `None` when no pump
    /// is parked (none, one on a task, or one being polled right now) or another reader drives it.
    pub fn take_pump(&self, driver: Option<u64>) -> Option<ParkedPump> {
        let mut parked = self.parked_pump.lock();
        if driver.is_some_and(|d| parked.as_ref().is_some_and(|p| p.driver != d)) {
            return None;
        }
        parked.take()
    }

    /// Makes `driver` the reader that drives the parked pump; `false` if none is parked.
    pub fn drive_pump(&self, driver: u64) -> bool {
        match self.parked_pump.lock().as_mut() {
            Some(parked) => {
                parked.driver = driver;
                true
            }
            None => false,
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
        match self.admit_locked(&mut state, upstream_id) {
            Some(seq) => {
                if let Some(id) = upstream_id {
                    state.last_upstream_id = Some(Arc::from(id));
                    state.last_upstream_seq = seq;
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

    /// [`Self::admit`] under the caller's lock, without recording the last upstream id (the
    /// caller does, once per batch): the new seq, or `None` for a duplicate (not counted here).
    fn admit_locked(&self, state: &mut TrackerState, upstream_id: Option<&str>) -> Option<u64> {
        if let Some(id) = upstream_id
            && self.limits.dedup_ids > 0
        {
            let hash = state.id_hasher.hash_one(id);
            if !state.seen.insert(hash) {
                return None;
            }
            if state.seen_order.len() >= self.limits.dedup_ids
                && let Some(old) = state.seen_order.pop_front()
            {
                state.seen.remove(&old);
            }
            state.seen_order.push_back(hash);
        }
        state.last_seq += 1;
        Some(state.last_seq)
    }

    /// Records the blocks of one upstream read of a windowed (legacy) stream under one lock:
    /// each event is admitted (duplicates dropped), encoded with the proxy's id into `scratch`
    /// and kept in the replay window; blocks that are not events (keep-alives, `retry` alone)
    /// are queued for the attached reader (with no reader attached they are dropped: such
    /// blocks are never replayed). Blocks are taken from the front of `blocks`; recording stops
    /// early, with [`Recorded::window_full`], when the next event would evict one the reader has
    /// not been handed, or when the next block would take what waits for the reader (undelivered
    /// events and queued keep-alives) past `replay_bytes` (or keep-alives past
    /// [`MAX_EPHEMERAL`]): a stream of comments gets the same backpressure as one of events.
    /// One block larger than that budget still goes through, alone. The events recorded share
    /// one buffer split off `scratch`. The reader learns of them at the next [`Self::publish`].
    pub fn record_to_window(
        &self,
        blocks: &mut VecDeque<SseBlock>,
        scratch: &mut BytesMut,
    ) -> Recorded {
        let mut recorded = Recorded::default();
        let mut state = self.state.lock();
        let state = &mut *state;
        scratch.clear();
        let mut kept: Vec<(u64, EventUpstreamId, Range<usize>)> = Vec::new();
        let mut last_with_id: Option<(u64, SseBlock)> = None;
        let mut undelivered = state.window.len() - first_undelivered(state);
        // Undelivered events' bytes plus the queued keep-alives' (at most MAX_EPHEMERAL).
        let mut waiting_bytes =
            state.undelivered_bytes + state.ephemeral.iter().map(|(_, b)| b.len()).sum::<usize>();
        while let Some(block) = blocks.front() {
            if !block.has_id() && !block.has_data() {
                if state.reader != 0 {
                    let size = block.raw().len();
                    let queued = state.ephemeral.len();
                    if !self.fits_waiting(undelivered, queued, waiting_bytes, size, false) {
                        recorded.window_full = true;
                        break;
                    }
                    state.ephemeral.push((state.last_seq, block.raw().clone()));
                    waiting_bytes += size;
                }
                blocks.pop_front();
                continue;
            }
            // The encoded event is the block with its id line replaced by ours.
            let size = block.raw().len() + 64;
            let queued = state.ephemeral.len();
            if !self.fits_waiting(undelivered, queued, waiting_bytes, size, true) {
                recorded.window_full = true;
                break;
            }
            let Some(block) = blocks.pop_front() else {
                break;
            };
            let upstream_id = block.id().filter(|id| !id.is_empty());
            let Some(seq) = self.admit_locked(state, upstream_id) else {
                recorded.duplicates += 1;
                continue;
            };
            let start = scratch.len();
            let mut id_range = EventUpstreamId::None;
            block.write_with_id_from(scratch, |out| {
                self.write_client_event_id(seq, upstream_id, out);
                if let Some(up) = upstream_id {
                    id_range = EventUpstreamId::InChunk(out.len() - up.len()..out.len());
                }
            });
            recorded.forwarded += 1;
            undelivered += 1;
            waiting_bytes += scratch.len() - start;
            kept.push((seq, id_range, start..scratch.len()));
            if upstream_id.is_some() {
                recorded.advanced += 1;
                last_with_id = Some((seq, block));
            }
        }
        if let Some((seq, block)) = &last_with_id
            && let Some(id) = block.id()
        {
            state.last_upstream_id = Some(Arc::from(id));
            state.last_upstream_seq = *seq;
        }
        if !kept.is_empty() {
            let chunk = scratch.split().freeze();
            for (seq, upstream_id, range) in kept {
                self.push_window(
                    state,
                    WindowEvent {
                        seq,
                        upstream_id,
                        chunk: chunk.clone(),
                        range,
                    },
                );
            }
        }
        self.count(&recorded);
        recorded
    }

    /// Records the blocks of one upstream read of a stream relayed without a window (modern)
    /// under one lock: each event is admitted (duplicates dropped) and appended to `out` — with
    /// the proxy's id `<stream>:<seq>:<upstream id>` when the upstream gave it one, unchanged
    /// otherwise (no window: only the upstream's id can resume it) — and counts as handed to
    /// the client; other blocks are appended to `out` unchanged. Takes every block of `blocks`.
    pub fn record_direct(&self, blocks: &mut VecDeque<SseBlock>, out: &mut BytesMut) -> Recorded {
        let mut recorded = Recorded::default();
        let mut state = self.state.lock();
        let state = &mut *state;
        let mut last_with_id: Option<(u64, SseBlock)> = None;
        // Whether the last event handed over carried an upstream id.
        let mut last_had_id = false;
        for block in blocks.drain(..) {
            if !block.has_id() && !block.has_data() {
                out.extend_from_slice(block.raw());
                continue;
            }
            let upstream_id = block.id().filter(|id| !id.is_empty());
            let Some(seq) = self.admit_locked(state, upstream_id) else {
                recorded.duplicates += 1;
                continue;
            };
            // Only an upstream id can resume a stream without a window (by translating it back
            // for the upstream): an event that came without one leaves without one, as it
            // would directly, so no client tries a resumption that can only fail.
            if upstream_id.is_some() {
                block.write_with_id_from(out, |out| {
                    self.write_client_event_id(seq, upstream_id, out);
                });
            } else {
                out.extend_from_slice(block.raw());
            }
            recorded.forwarded += 1;
            state.delivered = seq;
            last_had_id = upstream_id.is_some();
            if last_had_id {
                recorded.advanced += 1;
                last_with_id = Some((seq, block));
            }
        }
        if let Some((seq, block)) = &last_with_id
            && let Some(id) = block.id()
        {
            state.last_upstream_id = Some(Arc::from(id));
            state.last_upstream_seq = *seq;
        }
        if recorded.forwarded > 0 {
            state.delivered_upstream_id = if last_had_id {
                state.last_upstream_id.clone()
            } else {
                None
            };
        }
        self.count(&recorded);
        recorded
    }

    fn count(&self, recorded: &Recorded) {
        if recorded.forwarded > 0 {
            self.events_forwarded
                .fetch_add(recorded.forwarded, Ordering::Relaxed);
        }
        if recorded.duplicates > 0 {
            self.duplicates_dropped
                .fetch_add(recorded.duplicates, Ordering::Relaxed);
        }
    }

    /// Appends `event` to the window, first evicting the oldest events past the count and byte
    /// bounds (one event larger than the byte bound stays, alone).
    fn push_window(&self, state: &mut TrackerState, event: WindowEvent) {
        let size = event.len();
        while state.window.len() >= self.limits.replay_events.max(1)
            || (!state.window.is_empty() && state.window_bytes + size > self.limits.replay_bytes)
        {
            let Some(old) = state.window.pop_front() else {
                break;
            };
            let old_hash = old.upstream_id().map(|id| state.id_hasher.hash_one(id));
            state.before_window = (old.seq, old_hash);
            state.window_bytes -= old.len();
            if old.seq > state.delivered {
                state.undelivered_bytes -= old.len();
            }
        }
        state.window_bytes += size;
        if event.seq > state.delivered {
            state.undelivered_bytes += size;
        }
        state.window.push_back(event);
    }

    /// Whether an event of `size` bytes can be appended now without evicting an event the
    /// reader has not been handed. The pump waits on [`EventTracker::consumed`] while not.
    pub fn has_room(&self, size: usize) -> bool {
        let state = self.state.lock();
        let count = state.window.len() - first_undelivered(&state);
        self.fits(count, state.undelivered_bytes, size)
    }

    /// Whether an event of `size` bytes may join `count` undelivered events of `bytes` bytes:
    /// within both window bounds, or alone (an oversized event still goes through, by itself).
    fn fits(&self, count: usize, bytes: usize, size: usize) -> bool {
        count == 0
            || (count < self.limits.replay_events && bytes + size <= self.limits.replay_bytes)
    }

    /// Whether a block of `size` bytes may join what waits for the reader (`events` undelivered
    /// events and `comments` queued keep-alives, `bytes` in all): within `replay_bytes` and the
    /// count bound of its kind (`replay_events`, or [`MAX_EPHEMERAL`] for a keep-alive), or
    /// alone.
    fn fits_waiting(
        &self,
        events: usize,
        comments: usize,
        bytes: usize,
        size: usize,
        is_event: bool,
    ) -> bool {
        let count_ok = if is_event {
            events < self.limits.replay_events
        } else {
            comments < MAX_EPHEMERAL
        };
        (events == 0 && comments == 0) || (count_ok && bytes + size <= self.limits.replay_bytes)
    }

    /// Appends the encoded event admitted as `seq` to the replay window, evicting the oldest
    /// delivered events past the count and byte bounds. The reader learns of it at the next
    /// [`Self::publish`] (once per upstream read, not per event).
    pub fn append(&self, seq: u64, upstream_id: Option<&str>, encoded: Bytes) {
        self.events_forwarded.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock();
        let upstream_id = match upstream_id {
            Some(id) => EventUpstreamId::Shared(
                state
                    .last_upstream_id
                    .clone()
                    .filter(|last| **last == *id)
                    .unwrap_or_else(|| Arc::from(id)),
            ),
            None => EventUpstreamId::None,
        };
        let range = 0..encoded.len();
        self.push_window(
            &mut state,
            WindowEvent {
                seq,
                upstream_id,
                chunk: encoded,
                range,
            },
        );
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

    /// Attaches a new reader that will be handed the events after `after_seq` (`None`: only
    /// events from now on). Any previous reader is replaced.
    pub fn attach(&self, after_seq: Option<u64>) -> Result<u64, AttachError> {
        let reader = {
            let mut state = self.state.lock();
            let after = after_seq.unwrap_or(state.last_seq);
            check_window(&state, after)?;
            state.readers_attached += 1;
            state.reader = state.readers_attached;
            state.detached_at = None;
            state.ephemeral.clear();
            state.delivered = after;
            state.delivered_upstream_id = upstream_id_at(&state, after);
            state.undelivered_bytes = undelivered_bytes(&state);
            state.reader
        };
        self.consumed.send_modify(|v| *v += 1);
        self.appended.send_modify(|v| *v += 1);
        Ok(reader)
    }

    /// Detaches `reader` if it is still the attached one (its client went away).
    pub fn detach(&self, reader: u64) {
        let detached = {
            let mut state = self.state.lock();
            let current = state.reader == reader;
            if current {
                state.reader = 0;
                state.detached_at = Some(Instant::now());
            }
            current
        };
        if detached {
            self.consumed.send_modify(|v| *v += 1);
        }
    }

    /// Hands `reader` the events after its cursor, or tells it to wait, end, or stop.
    pub fn read(&self, reader: u64) -> Read {
        let result = {
            let mut state = self.state.lock();
            if state.reader != reader {
                return Read::Replaced;
            }
            let delivered = state.delivered;
            let mut ephemeral = std::mem::take(&mut state.ephemeral).into_iter().peekable();
            let mut out = Vec::new();
            let start = first_undelivered(&state);
            // Runs of events recorded from one upstream read go out as one slice of their chunk.
            let mut run: Option<(&Bytes, Range<usize>)> = None;
            for event in state.window.range(start..) {
                while let Some((_, b)) = ephemeral.next_if(|(after, _)| *after < event.seq) {
                    if let Some((chunk, range)) = run.take() {
                        out.push(chunk.slice(range));
                    }
                    out.push(b);
                }
                match &mut run {
                    Some((chunk, range)) if WindowEvent::continued_by(chunk, range, event) => {
                        range.end = event.range.end;
                    }
                    _ => {
                        if let Some((chunk, range)) =
                            run.replace((&event.chunk, event.range.clone()))
                        {
                            out.push(chunk.slice(range));
                        }
                    }
                }
            }
            if let Some((chunk, range)) = run {
                out.push(chunk.slice(range));
            }
            out.extend(ephemeral.map(|(_, b)| b));
            if out.is_empty() {
                return if state.upstream.is_terminal() {
                    Read::End(state.upstream)
                } else {
                    Read::Wait
                };
            }
            if let Some((seq, up)) = state
                .window
                .back()
                .map(|e| (e.seq, e.upstream_id_shared(state.last_upstream_id.as_ref())))
                && seq > delivered
            {
                state.delivered = seq;
                state.delivered_upstream_id = up;
                state.undelivered_bytes = 0;
            }
            Read::Events(out)
        };
        if self.room_wanted.swap(false, Ordering::AcqRel) {
            self.consumed.send_modify(|v| *v += 1);
        }
        result
    }

    /// Whether `id` is the client event id this stream handed out for its event `id.seq`:
    /// `Some(false)` when that event carries another upstream id (or none). Told for the events
    /// in the replay window and for the position just before it (the last event evicted, a
    /// restored stream's starting position, or 0 before the first event, which carries none);
    /// `None` for any other position (left the window, or past the last event). The stream
    /// part is the caller's to check.
    pub fn issued(&self, id: &ClientEventId<'_>) -> Option<bool> {
        let state = self.state.lock();
        let (before_seq, before_hash) = state.before_window;
        if id.seq == before_seq {
            let hash = id.upstream_id.map(|up| state.id_hasher.hash_one(up));
            return Some(hash == before_hash);
        }
        let front = state.window.front()?;
        let event = state.window.get(id.seq.checked_sub(front.seq)? as usize)?;
        Some(event.upstream_id() == id.upstream_id)
    }

    /// Moves the attached reader's cursor back to `after_seq`, so the buffered events after it
    /// are sent again. Returns how many will be re-sent; `None` if no reader is attached.
    /// Errors: the events after `after_seq` left the window, or `after_seq` is past the last
    /// event handed to the reader ([`AttachError::NotDelivered`]: moving there would skip
    /// the events in between).
    pub fn rewind(&self, after_seq: u64) -> Result<Option<usize>, AttachError> {
        let count = {
            let mut state = self.state.lock();
            check_window(&state, after_seq)?;
            if state.reader == 0 {
                return Ok(None);
            }
            if after_seq > state.delivered {
                return Err(AttachError::NotDelivered {
                    after: after_seq,
                    delivered: state.delivered,
                });
            }
            state.delivered = after_seq;
            state.delivered_upstream_id = upstream_id_at(&state, after_seq);
            state.undelivered_bytes = undelivered_bytes(&state);
            state.window.iter().filter(|e| e.seq > after_seq).count()
        };
        self.appended.send_modify(|v| *v += 1);
        Ok(Some(count))
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

    /// When the last reader detached; `None` while a reader is attached.
    pub fn detached_since(&self) -> Option<Instant> {
        self.state.lock().detached_at
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
    pub fn client_event_id(&self, seq: u64, upstream_id: Option<&str>) -> String {
        let mut id = BytesMut::new();
        self.write_client_event_id(seq, upstream_id, &mut id);
        String::from_utf8_lossy(&id).into_owned()
    }

    /// Appends [`Self::client_event_id`] to `out` without an intermediate allocation (the SSE
    /// hot path writes it straight into the outgoing event).
    pub fn write_client_event_id(&self, seq: u64, upstream_id: Option<&str>, out: &mut BytesMut) {
        ClientEventId::write(self.stream.as_str(), seq, upstream_id, out);
    }

    /// The last upstream event id, for the persistence worker and for upstream resumption.
    pub fn last_upstream_id(&self) -> Option<Arc<str>> {
        self.state.lock().last_upstream_id.clone()
    }

    /// The last upstream event id and the sequence number of the event that carried it: the
    /// position the persistence worker writes to the session store.
    pub fn last_upstream_position(&self) -> Option<(u64, Arc<str>)> {
        let state = self.state.lock();
        let id = state.last_upstream_id.clone()?;
        Some((state.last_upstream_seq, id))
    }

    /// [`Self::last_upstream_position`] and the last sequence number admitted, read together:
    /// what the persistence worker writes to the session store.
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
        let client_event_id = (state.delivered > 0)
            .then(|| self.client_event_id(state.delivered, state.delivered_upstream_id.as_deref()));
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
        self.state.lock().reader != 0
    }

    /// Bytes held in the replay window.
    pub fn window_bytes(&self) -> usize {
        self.state.lock().window_bytes
    }
}

/// Whether a reader may start after `after`: every event after it must still be in the window.
fn check_window(state: &TrackerState, after: u64) -> Result<(), AttachError> {
    if after > state.last_seq {
        return Err(AttachError::Future {
            after,
            last: state.last_seq,
        });
    }
    let oldest = state.window.front().map_or(state.last_seq + 1, |e| e.seq);
    if after + 1 < oldest {
        return Err(AttachError::LeftWindow { after, oldest });
    }
    Ok(())
}

/// Index in the window of the first event after `delivered`. Window sequence numbers are
/// contiguous (every admitted event is appended), so this is arithmetic, not a scan.
fn first_undelivered(state: &TrackerState) -> usize {
    match state.window.front() {
        Some(front) if state.delivered >= front.seq => {
            ((state.delivered - front.seq + 1) as usize).min(state.window.len())
        }
        _ => 0,
    }
}

/// Bytes of the window's events after `delivered`, counted (for when `delivered` moves back).
fn undelivered_bytes(state: &TrackerState) -> usize {
    state
        .window
        .range(first_undelivered(state)..)
        .map(WindowEvent::len)
        .sum()
}

/// The upstream id of the event `seq`, if it is still in the window.
fn upstream_id_at(state: &TrackerState, seq: u64) -> Option<Arc<str>> {
    state
        .window
        .front()
        .and_then(|front| seq.checked_sub(front.seq))
        .and_then(|i| state.window.get(i as usize))
        .and_then(|e| e.upstream_id_shared(state.last_upstream_id.as_ref()))
}

#[cfg(test)]
mod tests;
