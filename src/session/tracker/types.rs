//! The tracker's vocabulary: its limits, the states a stream and its upstream side are in, and
//! what recording, reading and attaching report.

use std::{sync::Arc, time::SystemTime};

use bytes::Bytes;

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

/// The decision for one upstream event: what the unit tests' `EventTracker::admit` answers
/// (the proxy records whole reads, [`EventTracker::record`], and gets counts in [`Recorded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Forward the event with this proxy sequence number (1-based, gapless per stream).
    Forward {
        /// The event's sequence number.
        seq: u64,
    },
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
    LeftWindow {
        /// The requested position (a sequence number: events after it were asked for).
        after: u64,
        /// The sequence number of the oldest event still in the window.
        oldest: u64,
    },
    /// The position is past the last event of the stream.
    #[error("sequence {after} is past the stream's last event {last}")]
    Future {
        /// The requested position.
        after: u64,
        /// The sequence number of the stream's last event (0 before the first).
        last: u64,
    },
    /// The position is past the last event handed to the attached reader: moving its cursor
    /// there would skip the events in between ([`EventTracker::rewind`]).
    #[error("sequence {after} is past the last event handed to the client ({delivered})")]
    NotDelivered {
        /// The requested position.
        after: u64,
        /// The sequence number of the last event handed to the attached reader.
        delivered: u64,
    },
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

/// What [`EventTracker::record`] did with the blocks of one upstream read.
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
