//! Process-wide data-plane counters, kept as atomics beside the SessionManager so the
//! Prometheus endpoint and the control plane's metric watches read the same numbers.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the data plane (monotonic unless noted). Read with [`ProxyStats::snapshot`].
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// SSE events forwarded to clients (live and replayed).
    pub events_forwarded: AtomicU64,
    /// Events dropped because their upstream id was already forwarded on the stream.
    pub duplicates_dropped: AtomicU64,
    /// Events re-sent to a client from a replay window (resumption or forced replay).
    pub events_replayed: AtomicU64,
    /// Client resumptions (`GET` + `Last-Event-ID`) served.
    pub resumptions: AtomicU64,
    /// Resumption attempts refused (malformed id, unknown stream, id outside the window).
    pub resumptions_refused: AtomicU64,
    /// Upstream reconnections attempted after an upstream stream broke.
    pub upstream_reconnects: AtomicU64,
    /// Upstream SSE streams ended as malformed: a block grew past `max_event_bytes` without
    /// a blank line (comments included).
    pub upstream_streams_malformed: AtomicU64,
    /// SSE streams opened.
    pub streams_opened: AtomicU64,
    /// SSE streams currently open (a gauge).
    pub streams_open: AtomicU64,
    /// Client connections refused because `proxy.max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Requests refused (`503`) because `proxy.max_upstream_connections` upstream connections
    /// were open.
    pub upstream_connections_refused: AtomicU64,
    /// Idle pooled upstream connections closed instead of reused: idle past
    /// `proxy.upstream_idle_timeout`, or closed by the upstream while idle.
    pub upstream_idle_closed: AtomicU64,
    /// Client connections closed because a request head took longer than
    /// `proxy.header_read_timeout`.
    pub header_read_timeouts: AtomicU64,
    /// Client connections closed after `proxy.keep_alive_idle_timeout` with no request.
    pub idle_connections_closed: AtomicU64,
    /// Requests answered `408` because their body took longer than
    /// `proxy.request_body_timeout`.
    pub request_body_timeouts: AtomicU64,
    /// `initialize` requests refused because `session.max_sessions` sessions were live.
    pub sessions_refused: AtomicU64,
    /// Requests that waited for their session's standalone `GET` stream to be established
    /// upstream (at most one wait per session).
    pub standalone_waits: AtomicU64,
    /// Those waits that ran out of time (the client opened no standalone stream in time).
    pub standalone_wait_timeouts: AtomicU64,
}

/// A point-in-time copy of [`ProxyStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStatsSnapshot {
    pub events_forwarded: u64,
    pub duplicates_dropped: u64,
    pub events_replayed: u64,
    pub resumptions: u64,
    pub resumptions_refused: u64,
    pub upstream_reconnects: u64,
    pub upstream_streams_malformed: u64,
    pub streams_opened: u64,
    pub streams_open: u64,
    pub connections_refused: u64,
    pub upstream_connections_refused: u64,
    pub upstream_idle_closed: u64,
    pub header_read_timeouts: u64,
    pub idle_connections_closed: u64,
    pub request_body_timeouts: u64,
    pub sessions_refused: u64,
    pub standalone_waits: u64,
    pub standalone_wait_timeouts: u64,
}

impl ProxyStats {
    /// Adds one to a counter.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> ProxyStatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProxyStatsSnapshot {
            events_forwarded: r(&self.events_forwarded),
            duplicates_dropped: r(&self.duplicates_dropped),
            events_replayed: r(&self.events_replayed),
            resumptions: r(&self.resumptions),
            resumptions_refused: r(&self.resumptions_refused),
            upstream_reconnects: r(&self.upstream_reconnects),
            upstream_streams_malformed: r(&self.upstream_streams_malformed),
            streams_opened: r(&self.streams_opened),
            streams_open: r(&self.streams_open),
            connections_refused: r(&self.connections_refused),
            upstream_connections_refused: r(&self.upstream_connections_refused),
            upstream_idle_closed: r(&self.upstream_idle_closed),
            header_read_timeouts: r(&self.header_read_timeouts),
            idle_connections_closed: r(&self.idle_connections_closed),
            request_body_timeouts: r(&self.request_body_timeouts),
            sessions_refused: r(&self.sessions_refused),
            standalone_waits: r(&self.standalone_waits),
            standalone_wait_timeouts: r(&self.standalone_wait_timeouts),
        }
    }
}
