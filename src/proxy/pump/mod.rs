//! Legacy-era SSE streams that survive dropped connections (DESIGN.md, "How a legacy session
//! flows through the proxy", steps 3–5).
//!
//! Each legacy stream has one **pump**: it reads the upstream response, admits each event into
//! the stream's [`EventTracker`] window and wakes the reader. The client side is a **reader**,
//! the body of whichever client connection is attached, polled by that connection. While the
//! reader that started the pump is attached, it drives the pump too ([`InlinePump`]): a stream
//! with its client costs no task of its own. When that reader goes away, the pump moves to a
//! task of its own (tracked by the data plane's [`Pumps`]), so:
//!
//! - a client that drops leaves the pump reading for the configured linger time; a `GET` with
//!   `Last-Event-ID` attaches a new reader at that position and it continues live;
//! - an upstream that drops is resumed by the pump with `GET` + `Last-Event-ID: <last upstream
//!   id>` under a bounded exponential backoff; events it already forwarded are dropped by id, so
//!   the reader sees one unbroken stream. If the upstream cannot resume, the reader ends with a
//!   `retry:` hint so the client resumes through the proxy;
//! - a POST stream is complete when the upstream ends it after the response to the request; a
//!   stream the upstream closes before that (2025-11-25 polling, after `retry:`) is resumed.
//!
//! Here: the pump and who drives it; `reconnect.rs`: re-opening the upstream stream;
//! `reader.rs`: the client connection's body.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::{Bytes, BytesMut};
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

use super::{
    relay::{account, budget_units},
    stats::ProxyStats,
    upstream::{Upstream, UpstreamBody},
};
use crate::protocol::headers::{LAST_EVENT_ID, MCP_SESSION_ID};
use crate::session::tracker::Recording;

mod reader;
mod reconnect;
use crate::{
    session::{EventTracker, ParkedPump, Read, Session, SessionManager, UpstreamState},
    sse::{SseBlock, SseParser},
};
pub use reader::{is_response_to, reader_body};
use reconnect::resume_upstream;
pub use reconnect::{Resumption, open_resumption};

/// The `retry:` hint (ms) sent when a legacy stream ends without its upstream being complete,
/// so the client reconnects with `Last-Event-ID`.
pub const RESUME_RETRY_MS: u64 = 1000;

/// What legacy streams' pumps and readers use of the data plane, and nothing else of it: the
/// session core, the thread's upstream client, the data plane's counters and pump tasks, and
/// the largest SSE event (bytes, `proxy.max_event_bytes`).
#[derive(Debug)]
pub struct LegacyStreams {
    /// The session core: stream bookkeeping, linger and reconnect settings.
    pub manager: Arc<SessionManager>,
    /// The data plane's counters.
    pub stats: Arc<ProxyStats>,
    /// Where a pump no reader drives runs.
    pub pumps: Arc<Pumps>,
    /// Largest SSE event block, in bytes (`proxy.max_event_bytes`).
    pub max_event_bytes: usize,
    /// Silence after which a reader sends its client a keep-alive comment
    /// (`proxy.sse_keepalive_secs`; zero: never).
    pub sse_keepalive: Duration,
}

/// Every legacy stream pump of the data plane, on its own task or driven by its reader and
/// counted by a token, so shutdown stops them ([`Pumps::stop`]) and waits for them
/// ([`Pumps::stopped`]) before the persistence worker's final flush.
#[derive(Debug, Default)]
pub struct Pumps {
    tasks: TaskTracker,
}

impl Pumps {
    /// Runs a pump on a task of its own.
    pub fn spawn(&self, pump: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(pump);
    }

    /// Counts a pump that runs inline (driven by its client's connection, not on a task) until
    /// the token is dropped, so [`Pumps::stopped`] waits for it too.
    pub fn track_inline(&self) -> TaskTrackerToken {
        self.tasks.token()
    }

    /// Stops every pump (daemon shutdown): cancels every session's streams, and moves the pumps
    /// parked in their trackers to tasks here. A reader drives its pump only while polled, and
    /// one whose client stopped reading is not: its pump would never see the cancellation.
    pub fn stop(&self, manager: &SessionManager) {
        manager.cancel_streams();
        for session in manager.sessions() {
            for tracker in session.streams() {
                if let Some(parked) = tracker.take_pump(None) {
                    self.tasks.spawn(parked.future);
                }
            }
        }
    }

    /// Resolves once every pump has ended; call after [`Pumps::stop`].
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// What a pump needs besides the upstream body.
pub struct PumpContext {
    /// What the data plane lends legacy streams.
    pub streams: Arc<LegacyStreams>,
    /// The stream's session.
    pub session: Arc<Session>,
    /// The stream.
    pub tracker: Arc<EventTracker>,
    /// The client of the session's endpoint: resumption `GET`s go out through it.
    pub upstream: Upstream,
    /// Headers to repeat on an upstream resumption `GET` (`Authorization`,
    /// `MCP-Protocol-Version`, …) — the opening request's end-to-end headers.
    pub resume_headers: HeaderMap,
    /// The JSON-RPC id of the `POST` whose answer this stream carries (raw JSON text); `None`
    /// for `GET` streams and batches.
    pub request_id: Option<Box<RawValue>>,
    /// The route's interceptors for this stream's messages, when they want them: applied
    /// before the window records an event, so a replay sends what the client got.
    pub filter: Option<crate::proxy::intercept::ServerFilter>,
}

/// Starts the pump of a legacy stream, to be driven by `reader`, the reader of the client that
/// opens (or re-opens) it ([`reader_body`]); `None` if a pump runs for it already. The pump ends
/// when the stream completes, fails, lingers out, or its session ends.
pub fn start(ctx: PumpContext, upstream: UpstreamBody, reader: u64) -> Option<InlinePump> {
    if !ctx.tracker.claim_pump() {
        return None;
    }
    ctx.tracker.set_upstream(UpstreamState::Live);
    ctx.streams.manager.reopen_stream(&ctx.tracker);
    let tracker = ctx.tracker.clone();
    let pumps = ctx.streams.pumps.clone();
    tracker.park_pump(ParkedPump {
        tracked: pumps.track_inline(),
        future: Box::pin(run(ctx, upstream)),
        driver: reader,
    });
    Some(InlinePump {
        tracker,
        pumps,
        reader,
    })
}

/// Takes over driving the stream's pump for `reader` (a client resuming the stream) when
/// another reader drives it; `None` if no pump is parked (none runs, or it runs on a task).
/// The reader it replaces may have stopped being polled (its client stopped reading), so the
/// pump must not wait for it.
pub fn adopt(
    tracker: &Arc<EventTracker>,
    streams: &LegacyStreams,
    reader: u64,
) -> Option<InlinePump> {
    tracker.drive_pump(reader).then(|| InlinePump {
        tracker: tracker.clone(),
        pumps: streams.pumps.clone(),
        reader,
    })
}

/// A pump driven by a reader's client connection instead of a task. The pump itself stays
/// parked in the stream's tracker between polls ([`ParkedPump`]), so a reader that resumes the
/// stream can take it over ([`adopt`]) and shutdown can move it to a task. Dropped while it
/// still drives the pump (the client went away), it hands the pump to a task of [`Pumps`],
/// which keeps reading for the linger time.
pub struct InlinePump {
    tracker: Arc<EventTracker>,
    pumps: Arc<Pumps>,
    reader: u64,
}

impl InlinePump {
    /// Runs the pump as far as it goes now; `Ready` once it has ended or is no longer this
    /// reader's to drive.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(mut parked) = self.tracker.take_pump(Some(self.reader)) else {
            return Poll::Ready(());
        };
        match parked.future.as_mut().poll(cx) {
            // Ended: its tracker token goes with it.
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                self.tracker.park_pump(parked);
                Poll::Pending
            }
        }
    }
}

impl Drop for InlinePump {
    fn drop(&mut self) {
        // Unwinding from a panic in the pump: it is not parked, and must not run again.
        if std::thread::panicking() {
            return;
        }
        if let Some(parked) = self.tracker.take_pump(Some(self.reader)) {
            // Spawned before its token is dropped, so shutdown never sees it untracked. On a
            // runtime that is shutting down, the task is dropped at once, as is everything
            // else there.
            self.pumps.spawn(parked.future);
        }
    }
}

/// Why the pump stopped waiting.
enum Interrupt {
    /// Session ended or daemon stopping.
    Cancelled,
    /// No client came back within the linger time.
    LingerExpired,
    /// No client is attached and a request was refused for want of an upstream connection
    /// (`proxy.max_upstream_connections`): live traffic gets this pump's socket.
    GaveWay,
}

async fn run(ctx: PumpContext, mut body: UpstreamBody) {
    let tracker = ctx.tracker.clone();
    let manager = ctx.streams.manager.clone();
    let mut parser = SseParser::new(ctx.streams.max_event_bytes);
    let mut scratch = BytesMut::new();
    let mut pending: VecDeque<SseBlock> = VecDeque::new();
    let mut consumed = tracker.consumed();
    let mut room = tracker.consumed();
    let mut response_seen = false;
    let mut retry_hint: Option<u64> = None;
    let end = loop {
        let frame = tokio::select! {
            biased;
            interrupt = wait_interrupt(&ctx, &mut consumed) => break interrupt_state(&ctx, interrupt),
            frame = body.frame() => frame,
        };
        // A stream whose reads record nothing (comments with no reader, duplicates) never
        // waits for room: each read is charged to the task's cooperative budget by its size
        // (see BUDGET_UNIT_BYTES), so an upstream that is always readable cannot keep the
        // data-plane thread from its other connections.
        let size = match &frame {
            Some(Ok(frame)) => frame.data_ref().map_or(0, Bytes::len),
            _ => 0,
        };
        for _ in 0..budget_units(size) {
            tokio::task::coop::consume_budget().await;
        }
        let broken = match frame {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                parser.push(&data);
                let mut failure = None;
                loop {
                    match parser.next_block() {
                        Ok(Some(block)) => {
                            if let Some(ms) = block.retry_ms() {
                                retry_hint = Some(ms);
                            }
                            response_seen =
                                response_seen || is_response_to(&block, ctx.request_id.as_deref());
                            pending.push_back(block);
                        }
                        Ok(None) => break,
                        Err(err) => {
                            failure = Some(err.to_string());
                            break;
                        }
                    }
                }
                if let Some(filter) = &ctx.filter {
                    filter.blocks(&mut pending);
                }
                // Everything parsed from this read is recorded under one lock. Backpressure:
                // when the next event would evict one the reader has not been handed, wait
                // until the reader takes events, asking it (once per wait) to wake the pump.
                let mut asked = false;
                loop {
                    let recorded = tracker.record(&mut pending, &mut scratch, Recording::Window);
                    account(&tracker, &manager, &ctx.streams.stats, &recorded);
                    if !recorded.window_full {
                        break;
                    }
                    if !asked {
                        // Ask, then look again: a read between the two is not missed.
                        room.borrow_and_update();
                        tracker.want_room();
                        asked = true;
                        continue;
                    }
                    tracker.publish();
                    tokio::select! {
                        interrupt = wait_interrupt(&ctx, &mut consumed) => {
                            return finish(&ctx, interrupt_state(&ctx, interrupt));
                        }
                        // The tracker (the sender) outlives this loop: no error to handle.
                        _ = room.changed() => asked = false,
                    }
                }
                tracker.publish();
                match failure {
                    Some(err) => {
                        ProxyStats::incr(&ctx.streams.stats.upstream_streams_malformed);
                        tracing::warn!(
                            session = %ctx.session.id(),
                            stream = %tracker.stream(),
                            error = %err,
                            "upstream SSE stream is malformed; ending it",
                        );
                        break UpstreamState::Failed;
                    }
                    None => continue,
                }
            }
            Some(Err(err)) => {
                tracing::info!(
                    session = %ctx.session.id(),
                    stream = %tracker.stream(),
                    error = %err,
                    "upstream SSE stream broke",
                );
                ProxyStats::incr(&ctx.streams.stats.upstream_streams_broken);
                true
            }
            None => false,
        };
        // The upstream side ended. A POST stream ends normally once its response went by; a
        // GET stream ends normally unless the upstream asked for polling with `retry:`.
        let expects_more = match ctx.request_id {
            Some(_) => !response_seen,
            None => retry_hint.is_some(),
        };
        if !broken && !expects_more {
            break UpstreamState::Complete;
        }
        let delay = retry_hint.map(Duration::from_millis);
        match resume_upstream(&ctx, &mut consumed, delay).await {
            Ok(resumed) => {
                body = resumed;
                parser = SseParser::new(ctx.streams.max_event_bytes);
                tracker.set_upstream(UpstreamState::Live);
                manager.stream_changed(&tracker);
            }
            Err(state) => break state,
        }
    };
    finish(&ctx, end);
}

fn finish(ctx: &PumpContext, state: UpstreamState) {
    ctx.tracker.set_upstream(state);
    ctx.tracker.release_pump();
    ctx.streams.manager.close_stream(&ctx.tracker);
    tracing::debug!(
        session = %ctx.session.id(),
        stream = %ctx.tracker.stream(),
        state = ?state,
        events = ctx.tracker.events_forwarded(),
        "stream pump stopped",
    );
}

fn interrupt_state(ctx: &PumpContext, interrupt: Interrupt) -> UpstreamState {
    match interrupt {
        Interrupt::LingerExpired => tracing::info!(
            session = %ctx.session.id(),
            stream = %ctx.tracker.stream(),
            "no client resumed the stream within the linger time; closing it upstream",
        ),
        Interrupt::GaveWay => tracing::info!(
            session = %ctx.session.id(),
            stream = %ctx.tracker.stream(),
            "upstream connections exhausted (proxy.max_upstream_connections); closing this \
             stream nobody reads to free its connection",
        ),
        Interrupt::Cancelled => {}
    }
    UpstreamState::Stopped
}

/// Resolves when the session ends (or the daemon stops streams), when no reader has been
/// attached for the linger time, or when none is attached and a request was refused for want
/// of an upstream connection.
async fn wait_interrupt(ctx: &PumpContext, consumed: &mut watch::Receiver<u64>) -> Interrupt {
    let linger = ctx.streams.manager.config().linger;
    loop {
        let detached = ctx.tracker.detached_since();
        tokio::select! {
            () = ctx.session.cancelled().cancelled() => return Interrupt::Cancelled,
            () = async {
                match detached {
                    Some(since) => tokio::time::sleep_until(since + linger).await,
                    None => std::future::pending().await,
                }
            } => {
                if ctx.tracker.detached_since().is_some_and(|s| s.elapsed() >= linger) {
                    return Interrupt::LingerExpired;
                }
            }
            () = ctx.upstream.connection_wanted(), if detached.is_some() => {
                // A notification stored while no pump lingered may be old: give way only
                // while the bound is still reached.
                if ctx.tracker.detached_since().is_some() && ctx.upstream.at_bound() {
                    return Interrupt::GaveWay;
                }
            }
            changed = consumed.changed() => {
                if changed.is_err() {
                    return Interrupt::Cancelled;
                }
            }
        }
    }
}
