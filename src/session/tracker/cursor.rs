//! The reader cursor: which client connection reads the stream, and how far it got.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

/// The stream's single reader and its position.
///
/// Invariants: `reader` is 0 (none attached) or `generation`, so a replaced reader's id never
/// matches again; `detached_at` is set exactly while no reader is attached (from the stream's
/// creation until the first attach); `delivered_upstream_id` is the upstream id of the event at
/// `delivered`; `ephemeral` only gains blocks while a reader is attached, is emptied by each
/// attach, and its tags never decrease.
#[derive(Debug)]
pub(super) struct ReaderCursor {
    /// Generation of the attached reader; 0 when none is attached.
    reader: u64,
    /// Readers attached so far (the last one's generation).
    generation: u64,
    detached_at: Option<Instant>,
    /// Highest seq handed to a reader; the window never evicts the events after it.
    delivered: u64,
    /// The upstream id of the event at `delivered`, to rebuild the last client id handed out.
    delivered_upstream_id: Option<Arc<str>>,
    /// Blocks that are not events (comments such as keep-alives, `retry`-only blocks), waiting
    /// for the attached reader, each tagged with the last seq before it. Never replayed.
    ephemeral: Vec<(u64, Bytes)>,
}

impl ReaderCursor {
    /// No reader, none since `now`; nothing delivered.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            reader: 0,
            generation: 0,
            detached_at: Some(now),
            delivered: 0,
            delivered_upstream_id: None,
            ephemeral: Vec::new(),
        }
    }

    /// Attaches a new reader at `delivered` (the event there carried `upstream_id`), replacing
    /// any previous one and dropping the blocks queued for it; returns its id (never 0).
    pub(super) fn attach(&mut self, delivered: u64, upstream_id: Option<Arc<str>>) -> u64 {
        self.generation += 1;
        self.reader = self.generation;
        self.detached_at = None;
        self.ephemeral.clear();
        self.move_to(delivered, upstream_id);
        self.reader
    }

    /// Detaches `reader` at `now` if it is the attached one; whether it was.
    pub(super) fn detach(&mut self, reader: u64, now: Instant) -> bool {
        let current = self.reader == reader;
        if current {
            self.reader = 0;
            self.detached_at = Some(now);
        }
        current
    }

    /// Whether `reader` is the attached reader.
    pub(super) fn is(&self, reader: u64) -> bool {
        self.reader == reader
    }

    /// Whether a reader is attached.
    pub(super) fn attached(&self) -> bool {
        self.reader != 0
    }

    /// When the last reader detached; `None` while one is attached.
    pub(super) fn detached_since(&self) -> Option<Instant> {
        self.detached_at
    }

    /// Moves the position to `delivered`, an event that carried `upstream_id`.
    pub(super) fn move_to(&mut self, delivered: u64, upstream_id: Option<Arc<str>>) {
        self.delivered = delivered;
        self.delivered_upstream_id = upstream_id;
    }

    /// The highest seq handed to a reader.
    pub(super) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The upstream id of the event at [`Self::delivered`].
    pub(super) fn delivered_upstream_id(&self) -> Option<&Arc<str>> {
        self.delivered_upstream_id.as_ref()
    }

    /// Queues non-event block `block`, following event `after_seq`, for the attached reader.
    pub(super) fn queue_ephemeral(&mut self, after_seq: u64, block: Bytes) {
        self.ephemeral.push((after_seq, block));
    }

    /// How many non-event blocks wait for the reader, and their bytes.
    pub(super) fn ephemeral_waiting(&self) -> (usize, usize) {
        (
            self.ephemeral.len(),
            self.ephemeral.iter().map(|(_, b)| b.len()).sum(),
        )
    }

    /// Hands over the non-event blocks waiting for the reader.
    pub(super) fn take_ephemeral(&mut self) -> Vec<(u64, Bytes)> {
        std::mem::take(&mut self.ephemeral)
    }
}
