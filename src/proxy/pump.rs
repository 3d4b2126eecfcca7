//! Legacy-era SSE streams that survive dropped connections (DESIGN.md, "How a legacy session
//! flows through the proxy", steps 3–5).
//!
//! Each legacy stream has one **pump**: it reads the upstream response, admits each event into
//! the stream's [`EventTracker`] window and wakes the reader. The client side is a **reader**,
//! the body of whichever client connection is attached, polled by that connection. While the
//! reader that started the pump is attached, it drives the pump too ([`InlinePump`]): a stream
//! with its client costs no task of its own. When that reader goes away, the pump moves to a
//! task of its own (tracked by the session manager), so:
//!
//! - a client that drops leaves the pump reading for the configured linger time; a `GET` with
//!   `Last-Event-ID` attaches a new reader at that position and it continues live;
//! - an upstream that drops is resumed by the pump with `GET` + `Last-Event-ID: <last upstream
//!   id>` under a bounded exponential backoff; events it already forwarded are dropped by id, so
//!   the reader sees one unbroken stream. If the upstream cannot resume, the reader ends with a
//!   `retry:` hint so the client resumes through the proxy;
//! - a POST stream is complete when the upstream ends it after the response to the request; a
//!   stream the upstream closes before that (2025-11-25 polling, after `retry:`) is resumed.

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

use super::{
    Proxy,
    relay::{account, budget_units},
    upstream::UpstreamBody,
};
use crate::protocol::headers::{LAST_EVENT_ID, MCP_SESSION_ID};
use crate::session::tracker::Recording;
use crate::{
    session::{EventTracker, ParkedPump, ProxyStats, Read, Session, SessionManager, UpstreamState},
    sse::{SseBlock, SseParser},
};

/// The `retry:` hint (ms) sent when a legacy stream ends without its upstream being complete,
/// so the client reconnects with `Last-Event-ID`.
pub const RESUME_RETRY_MS: u64 = 1000;

/// What a pump needs besides the upstream body.
pub struct PumpContext {
    pub proxy: Arc<Proxy>,
    pub session: Arc<Session>,
    pub tracker: Arc<EventTracker>,
    /// Headers to repeat on an upstream resumption `GET` (`Authorization`,
    /// `MCP-Protocol-Version`, …) — the opening request's end-to-end headers.
    pub resume_headers: HeaderMap,
    /// The JSON-RPC id of the `POST` whose answer this stream carries (raw JSON text); `None`
    /// for `GET` streams and batches.
    pub request_id: Option<Box<RawValue>>,
}

/// Starts the pump of a legacy stream, to be driven by `reader`, the reader of the client that
/// opens (or re-opens) it ([`reader_body`]); `None` if a pump runs for it already. The pump ends
/// when the stream completes, fails, lingers out, or its session ends.
pub fn start(ctx: PumpContext, upstream: UpstreamBody, reader: u64) -> Option<InlinePump> {
    if !ctx.tracker.claim_pump() {
        return None;
    }
    ctx.tracker.set_upstream(UpstreamState::Live);
    ctx.proxy.manager.reopen_stream(&ctx.tracker);
    let tracker = ctx.tracker.clone();
    let manager = ctx.proxy.manager.clone();
    tracker.park_pump(ParkedPump {
        tracked: manager.track_inline_pump(),
        future: Box::pin(run(ctx, upstream)),
        driver: reader,
    });
    Some(InlinePump {
        tracker,
        manager,
        reader,
    })
}

/// Takes over driving the stream's pump for `reader` (a client resuming the stream) when
/// another reader drives it; `None` if no pump is parked (none runs, or it runs on a task).
/// The reader it replaces may have stopped being polled (its client stopped reading), so the
/// pump must not wait for it.
pub fn adopt(tracker: &Arc<EventTracker>, proxy: &Proxy, reader: u64) -> Option<InlinePump> {
    tracker.drive_pump(reader).then(|| InlinePump {
        tracker: tracker.clone(),
        manager: proxy.manager.clone(),
        reader,
    })
}

/// A pump driven by a reader's client connection instead of a task. The pump itself stays
/// parked in the stream's tracker between polls ([`ParkedPump`]), so a reader that resumes the
/// stream can take it over ([`adopt`]) and shutdown can move it to a task. Dropped while it
/// still drives the pump (the client went away), it hands the pump to a task of the session
/// manager, which keeps reading for the linger time.
pub struct InlinePump {
    tracker: Arc<EventTracker>,
    manager: Arc<SessionManager>,
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
            self.manager.spawn_pump(parked.future);
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
    let manager = ctx.proxy.manager.clone();
    let mut parser = SseParser::new(ctx.proxy.config.max_event_bytes);
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
                // Everything parsed from this read is recorded under one lock. Backpressure:
                // when the next event would evict one the reader has not been handed, wait
                // until the reader takes events, asking it (once per wait) to wake the pump.
                let mut asked = false;
                loop {
                    let recorded = tracker.record(&mut pending, &mut scratch, Recording::Window);
                    account(&tracker, &manager, &recorded);
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
                        ProxyStats::incr(&manager.stats().upstream_streams_malformed);
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
                parser = SseParser::new(ctx.proxy.config.max_event_bytes);
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
    ctx.proxy.manager.close_stream(&ctx.tracker);
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
    let linger = ctx.proxy.manager.config().linger;
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
            () = ctx.proxy.upstream.connection_wanted(), if detached.is_some() => {
                // A notification stored while no pump lingered may be old: give way only
                // while the bound is still reached.
                if ctx.tracker.detached_since().is_some() && ctx.proxy.upstream.at_bound() {
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

/// Re-opens the upstream stream with `GET` + `Last-Event-ID: <last upstream id>`, retrying
/// with exponential backoff. `Err` carries the state to end in: `Failed` when the upstream
/// cannot resume (no id to resume from, a refusal, attempts exhausted), `Stopped` when
/// interrupted.
async fn resume_upstream(
    ctx: &PumpContext,
    consumed: &mut watch::Receiver<u64>,
    first_delay: Option<Duration>,
) -> Result<UpstreamBody, UpstreamState> {
    let tracker = &ctx.tracker;
    let Some(last_id) = tracker.last_upstream_id() else {
        tracing::info!(
            session = %ctx.session.id(),
            stream = %tracker.stream(),
            "upstream stream ended early and sent no event id to resume from",
        );
        return Err(UpstreamState::Failed);
    };
    tracker.set_upstream(UpstreamState::Reconnecting);
    ctx.proxy.manager.stream_changed(tracker);
    let config = ctx.proxy.manager.config();
    let backoff = ExponentialBuilder::new()
        .with_min_delay(config.reconnect_min_delay)
        .with_max_delay(config.reconnect_max_delay)
        .with_max_times(config.reconnect_attempts.saturating_sub(1))
        .with_jitter()
        .build();
    let delays = std::iter::once(first_delay.unwrap_or(Duration::ZERO)).chain(backoff);
    for (attempt, delay) in delays.enumerate() {
        tokio::select! {
            interrupt = wait_interrupt(ctx, consumed) => return Err(interrupt_state(ctx, interrupt)),
            () = tokio::time::sleep(delay) => {}
        }
        ProxyStats::incr(&ctx.proxy.manager.stats().upstream_reconnects);
        match open_resumption(&ctx.proxy, &ctx.session, &ctx.resume_headers, &last_id).await {
            Ok(body) => {
                tracing::info!(
                    session = %ctx.session.id(),
                    stream = %tracker.stream(),
                    last_event_id = %last_id,
                    attempt = attempt + 1,
                    "resumed the upstream stream",
                );
                return Ok(body);
            }
            Err(Resumption::Refused(status)) => {
                tracing::warn!(
                    session = %ctx.session.id(),
                    stream = %tracker.stream(),
                    status = status.as_u16(),
                    "upstream refused to resume the stream",
                );
                if status == StatusCode::NOT_FOUND {
                    ctx.proxy.manager.end_session(ctx.session.id().as_str());
                }
                return Err(UpstreamState::Failed);
            }
            Err(Resumption::Unavailable(err)) => {
                tracing::info!(
                    session = %ctx.session.id(),
                    stream = %tracker.stream(),
                    attempt = attempt + 1,
                    error = %err,
                    "upstream resumption attempt failed",
                );
            }
        }
    }
    Err(UpstreamState::Failed)
}

/// Why an upstream resumption did not give a stream.
pub enum Resumption {
    /// The upstream answered, but not with an SSE stream (status given).
    Refused(StatusCode),
    /// The upstream could not be reached or did not answer in time.
    Unavailable(String),
}

/// Sends one resumption `GET` for `session` with `Last-Event-ID: last_id`.
pub async fn open_resumption(
    proxy: &Proxy,
    session: &Session,
    headers: &HeaderMap,
    last_id: &str,
) -> Result<UpstreamBody, Resumption> {
    let mut request = http::Request::new(Full::new(Bytes::new()));
    *request.method_mut() = Method::GET;
    *request.uri_mut() = proxy.upstream.uri_for(None);
    let h = request.headers_mut();
    for (name, value) in headers {
        if name != header::CONTENT_TYPE && name != LAST_EVENT_ID {
            h.append(name.clone(), value.clone());
        }
    }
    h.insert(
        header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(&MCP_SESSION_ID, session.upstream_session_id().clone());
    let last = HeaderValue::from_str(last_id)
        .map_err(|_| Resumption::Unavailable("upstream event id is not a header value".into()))?;
    h.insert(&LAST_EVENT_ID, last);
    let response = proxy
        .upstream
        .send(request)
        .await
        .map_err(|e| Resumption::Unavailable(super::upstream::error_chain(&e)))?;
    let is_sse = crate::protocol::headers::is_event_stream(response.headers());
    if !response.status().is_success() || !is_sse {
        return Err(Resumption::Refused(response.status()));
    }
    Ok(response.into_body())
}

/// Whether an event carries the JSON-RPC response (result or error) to `request_id` (raw JSON
/// text of the POST's id; `None`, as for a GET stream, answers `false`). A POST stream is
/// complete once its response went by. Cheap for notifications: their data is parsed only if it
/// could hold an `"id"` key.
pub fn is_response_to(block: &SseBlock, request_id: Option<&RawValue>) -> bool {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        method: Option<serde::de::IgnoredAny>,
    }
    let Some(request_id) = request_id else {
        return false;
    };
    if !block.has_data() {
        return false;
    }
    let data = block.data();
    // A response has a top-level "id" key; most events (progress and other notifications)
    // have no "id" anywhere and need no parse. Data with any escape (a key could be spelled
    // with \u) is parsed.
    static ID_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"id\""));
    if ID_KEY.find(&data).is_none() && memchr::memchr(b'\\', &data).is_none() {
        return false;
    }
    match serde_json::from_slice::<Peek>(&data) {
        Ok(peek) => peek.method.is_none() && peek.id.is_some_and(|id| id.get() == request_id.get()),
        Err(_) => false,
    }
}

/// The body of a client connection reading a legacy stream through reader `reader`, driving
/// `pump` (the stream's pump, when this reader started it) while it waits for events. When the
/// connection goes away the reader detaches (the pump moves to a task and lingers); if the
/// stream ends without its upstream being complete, the client gets a `retry:` hint so it
/// resumes with `Last-Event-ID`.
pub fn reader_body(
    tracker: Arc<EventTracker>,
    reader: u64,
    pump: Option<InlinePump>,
    stats_owner: Arc<Proxy>,
) -> axum::body::Body {
    struct ReaderState {
        tracker: Arc<EventTracker>,
        reader: u64,
        appended: watch::Receiver<u64>,
        ready: std::collections::VecDeque<Bytes>,
        done: bool,
        pump: Option<InlinePump>,
        proxy: Arc<Proxy>,
    }
    impl Drop for ReaderState {
        fn drop(&mut self) {
            self.tracker.detach(self.reader);
            self.proxy.manager.stream_changed(&self.tracker);
            let stats = self.proxy.manager.stats();
            stats
                .streams_open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let stats = stats_owner.manager.stats();
    ProxyStats::incr(&stats.streams_opened);
    ProxyStats::incr(&stats.streams_open);
    let state = ReaderState {
        appended: tracker.appended(),
        tracker,
        reader,
        ready: std::collections::VecDeque::new(),
        done: false,
        pump,
        proxy: stats_owner,
    };
    let events = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(bytes) = st.ready.pop_front() {
                return Some((Ok::<_, Infallible>(bytes), st));
            }
            if st.done {
                return None;
            }
            st.appended.borrow_and_update();
            match st.tracker.read(st.reader) {
                // Everything ready goes out as one frame: one write, not one per event.
                Read::Events(events) if events.len() == 1 => st.ready.extend(events),
                Read::Events(events) => {
                    let mut joined = BytesMut::with_capacity(events.iter().map(Bytes::len).sum());
                    for event in &events {
                        joined.extend_from_slice(event);
                    }
                    st.ready.push_back(joined.freeze());
                }
                Read::Wait => match st.pump.as_mut() {
                    // Drive the pump until it records something (it then publishes: `appended`
                    // changes) or ends.
                    Some(pump) => {
                        tokio::select! {
                            biased;
                            () = std::future::poll_fn(|cx| pump.poll(cx)) => st.pump = None,
                            changed = st.appended.changed() => {
                                if changed.is_err() {
                                    st.done = true;
                                }
                            }
                        }
                    }
                    None => {
                        if st.appended.changed().await.is_err() {
                            st.done = true;
                        }
                    }
                },
                Read::End(UpstreamState::Complete) | Read::Replaced => st.done = true,
                Read::End(_) => {
                    st.ready
                        .push_back(Bytes::from(format!("retry: {RESUME_RETRY_MS}\n\n")));
                    st.done = true;
                }
            }
        }
    });
    axum::body::Body::from_stream(events)
}
