//! The SSE relay: the body of a client's `text/event-stream` answer. It reads the upstream
//! stream, splits it into blocks, runs every event through the stream's [`EventTracker`] and
//! forwards it at once with the proxy's event id; comments (keep-alives) and `retry`-only blocks
//! pass through unchanged. It is polled by the client connection itself: no task per stream,
//! none per event, and dropping it (the client went away) drops the upstream response, which
//! closes the upstream request — the cancellation of a 2026-07-28 request.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use hyper::body::Incoming;

use std::sync::atomic::Ordering;

use crate::{
    session::{Admission, EventTracker, ProxyStats, SessionManager},
    sse::{SseBlock, SseParser},
};

/// What one upstream block becomes for the client.
pub enum Encoded {
    /// Not an event (comments, `retry`/`event` alone): forward the raw bytes, track nothing.
    Passthrough,
    /// An upstream id already forwarded on this stream: drop it.
    Duplicate,
    /// An event admitted as `seq`, appended to the output encoded with the proxy's id.
    Event { seq: u64 },
}

/// The upstream event id of a block: a present, non-empty `id` field.
pub fn upstream_event_id(block: &SseBlock) -> Option<&str> {
    block.id().filter(|id| !id.is_empty())
}

/// Admits `block` on `tracker` and appends it to `out` encoded with the proxy's event id (only
/// the `id` line is rewritten), counting it and handing the stream's new position to the
/// persistence worker.
pub fn encode_block(
    tracker: &Arc<EventTracker>,
    manager: &SessionManager,
    block: &SseBlock,
    out: &mut BytesMut,
) -> Encoded {
    if !block.has_id() && !block.has_data() {
        return Encoded::Passthrough;
    }
    let upstream_id = upstream_event_id(block);
    match tracker.admit(upstream_id) {
        Admission::Duplicate => {
            ProxyStats::incr(&manager.stats().duplicates_dropped);
            tracing::debug!(
                stream = %tracker.stream(),
                upstream_event_id = upstream_id,
                "dropped duplicate SSE event",
            );
            Encoded::Duplicate
        }
        Admission::Forward { seq } => {
            block.write_with_id_from(out, |out| {
                tracker.write_client_event_id(seq, upstream_id, out);
            });
            ProxyStats::incr(&manager.stats().events_forwarded);
            if upstream_id.is_some() {
                manager.persistence().stream_advanced(tracker);
            }
            Encoded::Event { seq }
        }
    }
}

/// The client-facing body of one SSE stream.
pub struct SseRelay {
    upstream: Incoming,
    parser: SseParser,
    tracker: Arc<EventTracker>,
    manager: Arc<SessionManager>,
    /// Bytes ready for the client: every block parsed so far goes out in one frame, so a burst
    /// of small events costs one write, not one per event.
    out: BytesMut,
    upstream_done: bool,
}

impl SseRelay {
    /// A relay of `upstream` through `tracker`; `max_event_bytes` bounds one event.
    pub fn new(
        upstream: Incoming,
        tracker: Arc<EventTracker>,
        manager: Arc<SessionManager>,
        max_event_bytes: usize,
    ) -> Self {
        ProxyStats::incr(&manager.stats().streams_opened);
        ProxyStats::incr(&manager.stats().streams_open);
        Self {
            upstream,
            parser: SseParser::new(max_event_bytes),
            tracker,
            manager,
            out: BytesMut::new(),
            upstream_done: false,
        }
    }

    /// Runs one block through the tracker and queues what the client must see.
    fn relay_block(&mut self, block: SseBlock) {
        match encode_block(&self.tracker, &self.manager, &block, &mut self.out) {
            Encoded::Passthrough => self.out.extend_from_slice(block.raw()),
            Encoded::Duplicate => {}
            Encoded::Event { seq } => {
                self.tracker
                    .forwarded_directly(seq, upstream_event_id(&block));
            }
        }
    }

    /// Parses every complete block buffered so far; on a framing error, ends the stream.
    fn drain_parser(&mut self) {
        loop {
            match self.parser.next_block() {
                Ok(Some(block)) => self.relay_block(block),
                Ok(None) => return,
                Err(err) => {
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
                return Poll::Ready(Some(Ok(Frame::data(this.out.split().freeze()))));
            }
            if this.upstream_done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.parser.push(&data);
                        this.drain_parser();
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    tracing::warn!(
                        stream = %this.tracker.stream(),
                        session = this.tracker.session().map(|s| s.as_str()),
                        error = %err,
                        "upstream SSE stream broke",
                    );
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
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.upstream_done && self.out.is_empty()
    }
}

impl Drop for SseRelay {
    fn drop(&mut self) {
        self.manager
            .stats()
            .streams_open
            .fetch_sub(1, Ordering::Relaxed);
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
