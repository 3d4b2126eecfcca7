//! The recording path: the blocks of one upstream read admitted, encoded and kept (or written
//! out) under one lock of the tracker.

use std::{
    collections::VecDeque,
    ops::Range,
    sync::{Arc, atomic::Ordering},
};

#[cfg(test)]
use bytes::Bytes;
use bytes::BytesMut;

use super::{
    EventTracker, MAX_EPHEMERAL, Recorded,
    window::{EventUpstreamId, WindowEvent},
};
use crate::sse::SseBlock;

/// Where [`EventTracker::record`] puts the events of one upstream read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recording {
    /// A windowed (legacy) stream: each event is encoded with the proxy's id into the buffer,
    /// which is cleared first, and kept in the replay window (the events of the read share one
    /// chunk split off the buffer); the reader takes them from there. Blocks that are not
    /// events (keep-alives, `retry` alone) are queued for the attached reader (with no reader
    /// attached they are dropped: such blocks are never replayed). Recording stops early, with
    /// [`Recorded::window_full`], when the next event would evict one the reader has not been
    /// handed, or when the next block would take what waits for the reader (undelivered events
    /// and queued keep-alives) past `replay_bytes` (or keep-alives past [`MAX_EPHEMERAL`]): a
    /// stream of comments gets the same backpressure as one of events. One block larger than
    /// that budget still goes through, alone.
    Window,
    /// A stream relayed without a window (modern): each event is appended to the buffer, with
    /// the proxy's id `<stream>:<seq>:<upstream id>` when the upstream gave it one, unchanged
    /// otherwise (no window: only the upstream's id can resume it), and counts as handed to
    /// the client; other blocks are appended unchanged. Every block is taken.
    Direct,
}

/// What waits for the reader of a windowed stream while a read is recorded.
struct Waiting {
    /// Undelivered events.
    events: usize,
    /// Queued keep-alives (at most [`MAX_EPHEMERAL`]).
    comments: usize,
    /// Bytes of both.
    bytes: usize,
}

impl EventTracker {
    /// Records the blocks of one upstream read under one lock, taken from the front of
    /// `blocks`: each event is admitted (duplicates dropped, the stream's last upstream id
    /// updated once) and encoded with the proxy's id into `buf`, then kept as `to` says
    /// ([`Recording`]). The reader of a windowed stream learns of the events at the next
    /// [`Self::publish`].
    pub fn record(
        &self,
        blocks: &mut VecDeque<SseBlock>,
        buf: &mut BytesMut,
        to: Recording,
    ) -> Recorded {
        let windowed = to == Recording::Window;
        let mut recorded = Recorded::default();
        let mut state = self.state.lock();
        let state = &mut *state;
        let delivered = state.cursor.delivered();
        let mut waiting = windowed.then(|| {
            buf.clear();
            let (comments, comment_bytes) = state.cursor.ephemeral_waiting();
            Waiting {
                events: state.window.count_after(delivered),
                comments,
                bytes: state.window.undelivered_bytes() + comment_bytes,
            }
        });
        let mut kept: Vec<(u64, EventUpstreamId, Range<usize>)> = Vec::new();
        let mut last_with_id: Option<(u64, SseBlock)> = None;
        // The last event forwarded, and whether it carried an upstream id.
        let mut last_forwarded: Option<(u64, bool)> = None;
        while let Some(block) = blocks.front() {
            if !block.has_id() && !block.has_data() {
                match &mut waiting {
                    None => buf.extend_from_slice(block.raw()),
                    Some(waiting) if state.cursor.attached() => {
                        let size = block.raw().len();
                        if !self.fits_waiting(waiting, size, false) {
                            recorded.window_full = true;
                            break;
                        }
                        state
                            .cursor
                            .queue_ephemeral(state.last_seq, block.raw().clone());
                        waiting.comments += 1;
                        waiting.bytes += size;
                    }
                    Some(_) => {}
                }
                blocks.pop_front();
                continue;
            }
            // The encoded event is the block with its id line replaced by ours.
            if let Some(waiting) = &waiting
                && !self.fits_waiting(waiting, block.raw().len() + 64, true)
            {
                recorded.window_full = true;
                break;
            }
            let Some(block) = blocks.pop_front() else {
                break;
            };
            let upstream_id = block.id().filter(|id| !id.is_empty());
            let Some(seq) = state.admit(&self.id_hasher, upstream_id) else {
                recorded.duplicates += 1;
                continue;
            };
            let start = buf.len();
            let mut id_range = EventUpstreamId::None;
            // Without a window, only an upstream id can resume a stream (by translating it back
            // for the upstream): an event that came without one leaves without one, as it
            // would directly, so no client tries a resumption that can only fail.
            if windowed || upstream_id.is_some() {
                block.write_with_id_from(buf, |out| {
                    self.write_client_event_id(seq, upstream_id, out);
                    if let Some(up) = upstream_id {
                        id_range = EventUpstreamId::InChunk(out.len() - up.len()..out.len());
                    }
                });
            } else {
                buf.extend_from_slice(block.raw());
            }
            recorded.forwarded += 1;
            if let Some(waiting) = &mut waiting {
                waiting.events += 1;
                waiting.bytes += buf.len() - start;
                kept.push((seq, id_range, start..buf.len()));
            }
            last_forwarded = Some((seq, upstream_id.is_some()));
            if upstream_id.is_some() {
                recorded.advanced += 1;
                last_with_id = Some((seq, block));
            }
        }
        if let Some((seq, block)) = &last_with_id
            && let Some(id) = block.id()
        {
            state.set_last_upstream(*seq, Arc::from(id));
        }
        match to {
            Recording::Window if !kept.is_empty() => {
                let chunk = buf.split().freeze();
                for (seq, upstream_id, range) in kept {
                    state.window.push(
                        WindowEvent {
                            seq,
                            upstream_id,
                            chunk: chunk.clone(),
                            range,
                        },
                        delivered,
                        &self.limits,
                        &self.id_hasher,
                    );
                }
            }
            Recording::Window => {}
            // Handed to the client as written.
            Recording::Direct => {
                if let Some((seq, had_id)) = last_forwarded {
                    let upstream_id = if had_id {
                        state.last_upstream_id.clone()
                    } else {
                        None
                    };
                    state.cursor.move_to(seq, upstream_id);
                }
            }
        }
        self.count(&recorded);
        recorded
    }

    /// Adds what one read forwarded and dropped to the stream's counters.
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

    /// Whether an event of `size` bytes can be appended now without evicting an event the
    /// reader has not been handed. The pump waits on [`EventTracker::consumed`] while not.
    #[cfg(test)]
    pub(super) fn has_room(&self, size: usize) -> bool {
        let state = self.state.lock();
        let count = state.window.count_after(state.cursor.delivered());
        self.fits(count, state.window.undelivered_bytes(), size)
    }

    /// Whether an event of `size` bytes may join `count` undelivered events of `bytes` bytes:
    /// within both window bounds, or alone (an oversized event still goes through, by itself).
    #[cfg(test)]
    fn fits(&self, count: usize, bytes: usize, size: usize) -> bool {
        count == 0
            || (count < self.limits.replay_events && bytes + size <= self.limits.replay_bytes)
    }

    /// Whether a block of `size` bytes may join what waits for the reader: within
    /// `replay_bytes` and the count bound of its kind (`replay_events` for an event,
    /// [`MAX_EPHEMERAL`] for a keep-alive), or alone.
    fn fits_waiting(&self, waiting: &Waiting, size: usize, is_event: bool) -> bool {
        let count_ok = if is_event {
            waiting.events < self.limits.replay_events
        } else {
            waiting.comments < MAX_EPHEMERAL
        };
        (waiting.events == 0 && waiting.comments == 0)
            || (count_ok && waiting.bytes + size <= self.limits.replay_bytes)
    }

    /// Appends the encoded event admitted as `seq` to the replay window, evicting the oldest
    /// delivered events past the count and byte bounds. The reader learns of it at the next
    /// [`Self::publish`] (once per upstream read, not per event).
    #[cfg(test)]
    pub(super) fn append(&self, seq: u64, upstream_id: Option<&str>, encoded: Bytes) {
        self.events_forwarded.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock();
        let state = &mut *state;
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
        state.window.push(
            WindowEvent {
                seq,
                upstream_id,
                chunk: encoded,
                range,
            },
            state.cursor.delivered(),
            &self.limits,
            &self.id_hasher,
        );
    }
}
