//! The SSE relay: the body of a client's `text/event-stream` answer. It reads the upstream
//! stream, splits it into blocks, runs every event through the stream's [`EventTracker`] and
//! forwards it at once with the proxy's event id; comments (keep-alives) and `retry`-only blocks
//! pass through unchanged. It is polled by the client connection itself: no task per stream,
//! none per event, and dropping it (the client went away) drops the upstream response, which
//! closes the upstream request — the cancellation of a 2026-07-28 request.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};

use std::sync::atomic::Ordering;

use super::{
    intercept::ServerFilter,
    keepalive::{self, KeepAlive},
    stats::ProxyStats,
    upstream::UpstreamBody,
};
use crate::session::tracker::Recording;
use crate::{
    session::{EventTracker, Recorded, SessionManager},
    sse::{SseBlock, SseParser},
};

/// Upstream bytes that cost a stream one unit of its task's cooperative budget (1 KiB; tokio
/// gives a task 128 units per poll, so one poll parses at most about 128 KiB). Ordinary streams
/// pause on their own, waiting for the upstream or the client; one whose upstream is always
/// readable and whose reads give the client little or nothing (duplicates, comments with no
/// reader) would otherwise keep the data-plane thread and the connections it serves waiting.
/// Once the budget is spent, every budgeted operation of the task (this one, socket reads and
/// writes, `watch` waits) is pending until the runtime has run the thread's other tasks.
pub const BUDGET_UNIT_BYTES: usize = 1 << 10;

/// Budget units for `bytes` upstream bytes processed (at least one per read).
pub fn budget_units(bytes: usize) -> usize {
    bytes.div_ceil(BUDGET_UNIT_BYTES).max(1)
}

/// Charges the task's cooperative budget for a read of `bytes` upstream bytes, beyond the unit
/// the read itself took, as far as it goes: once it is spent, the rest is forgiven and the task
/// is due to yield (the caller's next [`tokio::task::coop::poll_proceed`] is pending).
fn charge_budget(cx: &mut Context<'_>, bytes: usize) {
    for _ in 1..budget_units(bytes) {
        match tokio::task::coop::poll_proceed(cx) {
            Poll::Ready(progress) => progress.made_progress(),
            Poll::Pending => return,
        }
    }
}

/// Counts what [`EventTracker::record`] did with one upstream read in the data plane's
/// `stats`, and hands the stream's new position to the persistence worker (once per read: it
/// keeps only the latest).
pub fn account(
    tracker: &Arc<EventTracker>,
    manager: &SessionManager,
    stats: &ProxyStats,
    recorded: &Recorded,
) {
    if recorded.forwarded > 0 {
        stats
            .events_forwarded
            .fetch_add(recorded.forwarded, Ordering::Relaxed);
    }
    if recorded.duplicates > 0 {
        stats
            .duplicates_dropped
            .fetch_add(recorded.duplicates, Ordering::Relaxed);
        tracing::debug!(
            stream = %tracker.stream(),
            duplicates = recorded.duplicates,
            "dropped SSE events whose upstream id was already forwarded",
        );
    }
    manager
        .persistence()
        .stream_advanced_by(tracker, recorded.forwarded);
}

/// The client-facing body of one SSE stream.
pub struct SseRelay {
    upstream: UpstreamBody,
    parser: SseParser,
    tracker: Arc<EventTracker>,
    manager: Arc<SessionManager>,
    stats: Arc<ProxyStats>,
    /// Bytes ready for the client: every block parsed so far goes out in one frame, so a burst
    /// of small events costs one write, not one per event.
    out: BytesMut,
    /// Blocks parsed from the current upstream read, recorded together under one lock.
    blocks: VecDeque<SseBlock>,
    upstream_done: bool,
    /// When the client is due a keep-alive comment (`None`: off).
    keepalive: Option<KeepAlive>,
    /// The route's interceptors for this stream's messages, when they want them.
    filter: Option<ServerFilter>,
}

impl SseRelay {
    /// A relay of `upstream` through `tracker`, counted in `stats`; `max_event_bytes` bounds
    /// one event; after `keepalive` with nothing sent the client gets a keep-alive comment
    /// ([`keepalive`]; zero: never). Its events go through no interceptor
    /// ([`SseRelay::with_filter`]).
    pub fn new(
        upstream: UpstreamBody,
        tracker: Arc<EventTracker>,
        manager: Arc<SessionManager>,
        stats: Arc<ProxyStats>,
        max_event_bytes: usize,
        keepalive: std::time::Duration,
    ) -> Self {
        ProxyStats::incr(&stats.streams_opened);
        ProxyStats::incr(&stats.streams_open);
        Self {
            upstream,
            parser: SseParser::new(max_event_bytes),
            tracker,
            manager,
            stats,
            out: BytesMut::new(),
            blocks: VecDeque::new(),
            upstream_done: false,
            keepalive: KeepAlive::new(keepalive),
            filter: None,
        }
    }

    /// The relay, its events run through `filter` (the route's interceptors) before the
    /// tracker records them.
    pub fn with_filter(mut self, filter: Option<ServerFilter>) -> Self {
        self.filter = filter;
        self
    }

    /// Runs the parsed blocks through the tracker and queues what the client must see.
    fn relay_blocks(&mut self) {
        if let Some(filter) = &self.filter {
            filter.blocks(&mut self.blocks);
        }
        if self.blocks.is_empty() {
            return;
        }
        let recorded = self
            .tracker
            .record(&mut self.blocks, &mut self.out, Recording::Direct);
        account(&self.tracker, &self.manager, &self.stats, &recorded);
    }

    /// Parses every complete block buffered so far and relays them; on a framing error, relays
    /// the blocks before it and ends the stream.
    fn drain_parser(&mut self) {
        loop {
            match self.parser.next_block() {
                Ok(Some(block)) => self.blocks.push_back(block),
                Ok(None) => return self.relay_blocks(),
                Err(err) => {
                    self.relay_blocks();
                    ProxyStats::incr(&self.stats.upstream_streams_malformed);
                    tracing::warn!(
                        stream = %self.tracker.stream(),
                        session = self.tracker.session().map(|s| s.as_str()),
                        error = %err,
                        "upstream SSE stream is malformed; ending the client stream",
                    );
                    self.upstream_done = true;
                    return;
                }
            }
        }
    }
}

impl Body for SseRelay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                if let Some(keepalive) = &mut this.keepalive {
                    keepalive.sent();
                }
                return Poll::Ready(Some(Ok(Frame::data(this.out.split().freeze()))));
            }
            if this.upstream_done {
                return Poll::Ready(None);
            }
            // Reads that give the client nothing (duplicates) loop here: each is charged to
            // the task's cooperative budget (see BUDGET_UNIT_BYTES), so an upstream that is
            // always readable cannot keep the data-plane thread from its other connections.
            let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
            let polled = Pin::new(&mut this.upstream).poll_frame(cx);
            if polled.is_ready() {
                coop.made_progress();
            }
            match polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.parser.push(&data);
                        this.drain_parser();
                        charge_budget(cx, data.len());
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    tracing::warn!(
                        stream = %this.tracker.stream(),
                        session = this.tracker.session().map(|s| s.as_str()),
                        error = %err,
                        "upstream SSE stream broke",
                    );
                    ProxyStats::incr(&this.stats.upstream_streams_broken);
                    this.upstream_done = true;
                }
                Poll::Ready(None) => {
                    if this.parser.buffered_len() > 0 {
                        tracing::debug!(
                            stream = %this.tracker.stream(),
                            bytes = this.parser.buffered_len(),
                            "upstream SSE stream ended inside an event; the partial event is dropped",
                        );
                    }
                    this.upstream_done = true;
                }
                Poll::Pending => {
                    // The upstream is silent: the client gets a comment once it has had
                    // nothing for the keep-alive period.
                    if let Some(keepalive) = &mut this.keepalive
                        && keepalive.poll_due(cx).is_ready()
                    {
                        ProxyStats::incr(&this.stats.keepalives_sent);
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                            keepalive::COMMENT,
                        )))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.upstream_done && self.out.is_empty()
    }
}

impl Drop for SseRelay {
    fn drop(&mut self) {
        self.stats.streams_open.fetch_sub(1, Ordering::Relaxed);
        self.manager.close_stream(&self.tracker);
        tracing::debug!(
            stream = %self.tracker.stream(),
            session = self.tracker.session().map(|s| s.as_str()),
            events = self.tracker.events_forwarded(),
            upstream_complete = self.upstream_done,
            "SSE stream closed",
        );
    }
}
