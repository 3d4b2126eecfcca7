//! The reader side: a client connection attaches at a position, reads what follows, and is
//! moved back by a forced replay; the tracker tells the client ids it issued from forged ones.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{AttachError, EventTracker, Read};
use crate::protocol::ClientEventId;

impl EventTracker {
    /// Attaches a new reader that will be handed the events after `after_seq` (`None`: only
    /// events from now on). Any previous reader is replaced. Errors: `after_seq` left the
    /// window, or lies past the stream's last event ([`AttachError`]).
    pub fn attach(&self, after_seq: Option<u64>) -> Result<u64, AttachError> {
        let reader = {
            let mut state = self.state.lock();
            let state = &mut *state;
            let after = after_seq.unwrap_or(state.last_seq);
            state.window.check(after, state.last_seq)?;
            let upstream_id = state
                .window
                .upstream_id_at(after, state.last_upstream_id.as_ref());
            state.window.recount(after);
            state.cursor.attach(after, upstream_id)
        };
        self.consumed.send_modify(|v| *v += 1);
        self.appended.send_modify(|v| *v += 1);
        Ok(reader)
    }

    /// Detaches `reader` if it is still the attached one (its client went away).
    pub fn detach(&self, reader: u64) {
        let detached = self.state.lock().cursor.detach(reader, Instant::now());
        if detached {
            self.consumed.send_modify(|v| *v += 1);
        }
    }

    /// Hands `reader` the events after its cursor, or tells it to wait, end, or stop.
    pub fn read(&self, reader: u64) -> Read {
        let result = {
            let mut state = self.state.lock();
            let state = &mut *state;
            if !state.cursor.is(reader) {
                return Read::Replaced;
            }
            let delivered = state.cursor.delivered();
            let mut out = Vec::new();
            state
                .window
                .slices_after(delivered, state.cursor.take_ephemeral(), &mut out);
            if out.is_empty() {
                return if state.upstream.is_terminal() {
                    Read::End(state.upstream)
                } else {
                    Read::Wait
                };
            }
            if let Some((seq, up)) = state.window.last(state.last_upstream_id.as_ref())
                && seq > delivered
            {
                state.cursor.move_to(seq, up);
                state.window.all_delivered();
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
        self.state.lock().window.issued(id, &self.id_hasher)
    }

    /// Moves the attached reader's cursor back to `after_seq`, so the buffered events after it
    /// are sent again. Returns how many will be re-sent; `None` if no reader is attached.
    /// Errors: the events after `after_seq` left the window, or `after_seq` is past the last
    /// event handed to the reader ([`AttachError::NotDelivered`]: moving there would skip
    /// the events in between).
    pub fn rewind(&self, after_seq: u64) -> Result<Option<usize>, AttachError> {
        let count = {
            let mut state = self.state.lock();
            state.window.check(after_seq, state.last_seq)?;
            if !state.cursor.attached() {
                return Ok(None);
            }
            let delivered = state.cursor.delivered();
            if after_seq > delivered {
                return Err(AttachError::NotDelivered {
                    after: after_seq,
                    delivered,
                });
            }
            state.move_cursor(after_seq);
            state.window.count_after(after_seq)
        };
        self.appended.send_modify(|v| *v += 1);
        Ok(Some(count))
    }
}
