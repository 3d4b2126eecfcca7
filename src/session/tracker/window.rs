//! The replay window: the encoded events a stream forwarded last, with their byte accounting.

use std::{collections::VecDeque, hash::BuildHasher as _, ops::Range, sync::Arc};

use bytes::Bytes;

use super::{AttachError, TrackerLimits, dedup::IdHasher};
use crate::protocol::ClientEventId;

/// The events a windowed stream keeps for replay, oldest first, within
/// [`TrackerLimits::replay_events`] and [`TrackerLimits::replay_bytes`].
///
/// Invariants: sequence numbers are ascending and contiguous, and `before.0 + 1` is the first
/// one's (every admitted event of a windowed stream is pushed); `bytes` is the sum of the
/// events' sizes; `undelivered_bytes` is the sum of the sizes of the events after the reader
/// cursor's `delivered` position, which the tracker passes in whenever it moves the cursor
/// ([`Self::recount`], [`Self::all_delivered`]) or pushes an event.
#[derive(Debug)]
pub(super) struct ReplayWindow {
    events: VecDeque<WindowEvent>,
    bytes: usize,
    /// Bytes of the events after `delivered` (kept in step, so checks are O(1)).
    undelivered_bytes: usize,
    /// The sequence number of the event just before the window's first (while the window is
    /// empty: the last event evicted, a restored stream's starting position, or 0), and the
    /// keyed hash of its upstream id:
    /// so the client id of that position can be told from a forged one too
    /// ([`super::EventTracker::issued`]).
    before: (u64, Option<u64>),
}

/// One encoded event in the replay window. The events recorded from one upstream read share
/// one `chunk`, so a reader hands a run of them to the client as one slice, without copying.
/// A chunk lives while any of its events is in the window: besides the window's own bytes, at
/// most the oldest, partly evicted chunk is held.
#[derive(Debug)]
pub(super) struct WindowEvent {
    pub(super) seq: u64,
    pub(super) upstream_id: EventUpstreamId,
    pub(super) chunk: Bytes,
    /// The event's bytes within `chunk`.
    pub(super) range: Range<usize>,
}

/// Where a window event's upstream id is kept.
#[derive(Debug)]
pub(super) enum EventUpstreamId {
    None,
    /// Within the event's chunk: the tail of the client id the event was encoded with.
    InChunk(Range<usize>),
    /// Shared with the stream's last upstream id (events appended one by one, in unit tests).
    #[cfg(test)]
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
            #[cfg(test)]
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

impl ReplayWindow {
    /// An empty window whose next event follows `seq`, an event whose upstream id had keyed
    /// hash `hash` (0 and `None` for a new stream).
    pub(super) fn after(seq: u64, hash: Option<u64>) -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            undelivered_bytes: 0,
            before: (seq, hash),
        }
    }

    /// Bytes held (sum of the events' encoded sizes).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of the events after the reader cursor.
    pub(super) fn undelivered_bytes(&self) -> usize {
        self.undelivered_bytes
    }

    /// Index of the first event after `delivered`. Sequence numbers are contiguous, so this is
    /// arithmetic, not a scan.
    fn first_after(&self, delivered: u64) -> usize {
        match self.events.front() {
            Some(front) if delivered >= front.seq => {
                ((delivered - front.seq + 1) as usize).min(self.events.len())
            }
            _ => 0,
        }
    }

    /// How many events come after `delivered`.
    pub(super) fn count_after(&self, delivered: u64) -> usize {
        self.events.len() - self.first_after(delivered)
    }

    /// Recounts the undelivered bytes for a cursor moved (back) to `delivered`.
    pub(super) fn recount(&mut self, delivered: u64) {
        self.undelivered_bytes = self
            .events
            .range(self.first_after(delivered)..)
            .map(WindowEvent::len)
            .sum();
    }

    /// Notes that the cursor moved past every event.
    pub(super) fn all_delivered(&mut self) {
        self.undelivered_bytes = 0;
    }

    /// Appends `event`, first evicting the oldest events past the count and byte bounds of
    /// `limits` (one event larger than the byte bound stays, alone). `delivered` is the reader
    /// cursor's position; `hasher` keys the hash of an evicted event's upstream id.
    pub(super) fn push(
        &mut self,
        event: WindowEvent,
        delivered: u64,
        limits: &TrackerLimits,
        hasher: &IdHasher,
    ) {
        let size = event.len();
        while self.events.len() >= limits.replay_events.max(1)
            || (!self.events.is_empty() && self.bytes + size > limits.replay_bytes)
        {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            let old_hash = old.upstream_id().map(|id| hasher.hash_one(id));
            self.before = (old.seq, old_hash);
            self.bytes -= old.len();
            if old.seq > delivered {
                self.undelivered_bytes -= old.len();
            }
        }
        self.bytes += size;
        if event.seq > delivered {
            self.undelivered_bytes += size;
        }
        self.events.push_back(event);
    }

    /// Whether a reader may start after `after` on a stream whose last event is `last_seq`:
    /// every event after it must still be here.
    pub(super) fn check(&self, after: u64, last_seq: u64) -> Result<(), AttachError> {
        if after > last_seq {
            return Err(AttachError::Future {
                after,
                last: last_seq,
            });
        }
        let oldest = self.events.front().map_or(last_seq + 1, |e| e.seq);
        if after + 1 < oldest {
            return Err(AttachError::LeftWindow { after, oldest });
        }
        Ok(())
    }

    /// The upstream id of the event `seq`, if it is still here, shared with `last` when equal.
    pub(super) fn upstream_id_at(&self, seq: u64, last: Option<&Arc<str>>) -> Option<Arc<str>> {
        self.events
            .front()
            .and_then(|front| seq.checked_sub(front.seq))
            .and_then(|i| self.events.get(i as usize))
            .and_then(|e| e.upstream_id_shared(last))
    }

    /// The last event's sequence number and upstream id (shared with `last` when equal).
    pub(super) fn last(&self, last: Option<&Arc<str>>) -> Option<(u64, Option<Arc<str>>)> {
        self.events
            .back()
            .map(|e| (e.seq, e.upstream_id_shared(last)))
    }

    /// Whether `id` is the client id of the event at its position (see
    /// [`super::EventTracker::issued`]); `None` outside the window and the position before it.
    pub(super) fn issued(&self, id: &ClientEventId<'_>, hasher: &IdHasher) -> Option<bool> {
        let (before_seq, before_hash) = self.before;
        if id.seq == before_seq {
            let hash = id.upstream_id.map(|up| hasher.hash_one(up));
            return Some(hash == before_hash);
        }
        let front = self.events.front()?;
        let event = self.events.get(id.seq.checked_sub(front.seq)? as usize)?;
        Some(event.upstream_id() == id.upstream_id)
    }

    /// Appends to `out` the events after `delivered`, runs recorded from one upstream read as
    /// one slice of their chunk, with the `ephemeral` blocks (each tagged with the last seq
    /// before it) interleaved in order.
    pub(super) fn slices_after(
        &self,
        delivered: u64,
        ephemeral: Vec<(u64, Bytes)>,
        out: &mut Vec<Bytes>,
    ) {
        let mut ephemeral = ephemeral.into_iter().peekable();
        let mut run: Option<(&Bytes, Range<usize>)> = None;
        for event in self.events.range(self.first_after(delivered)..) {
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
                    if let Some((chunk, range)) = run.replace((&event.chunk, event.range.clone())) {
                        out.push(chunk.slice(range));
                    }
                }
            }
        }
        if let Some((chunk, range)) = run {
            out.push(chunk.slice(range));
        }
        out.extend(ephemeral.map(|(_, b)| b));
    }
}
