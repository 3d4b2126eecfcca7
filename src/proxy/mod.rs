//! The data plane: an axum router serving the MCP endpoint (`POST`, `GET`, `DELETE`) and
//! forwarding each request to the upstream MCP server, era by era (DESIGN.md, "The protocol it
//! proxies"; PROTOCOL.md).
//!
//! One request in, one upstream request out. JSON answers and `202`s stream straight through;
//! `text/event-stream` answers go through an [`relay::SseRelay`]. Legacy sessions are mapped:
//! the client sees only the proxy's `Mcp-Session-Id`, the upstream only its own.

pub mod admit;
mod connector;

pub mod error;
pub mod headers;
pub mod pump;
pub mod relay;
pub mod upstream;

use crate::protocol::ClientEventId;
use std::sync::{Arc, atomic::Ordering};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    response::Response,
    routing::any,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::value::RawValue;

use crate::protocol::era::{self, Era, MessagePeek};
use crate::protocol::headers::{LAST_EVENT_ID, MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use crate::{
    config::ProxyConfig,
    session::{
        GateWait, ProxyStats, Session, SessionManager, StreamKind, StreamRestoreError,
        UpstreamState,
    },
};
use error::Reject;
use headers::X_ACCEL_BUFFERING;
use relay::SseRelay;
use upstream::{Upstream, UpstreamConnections, UpstreamError, error_chain};

/// The data plane's shared state.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    manager: Arc<SessionManager>,
    upstream: Upstream,
    admission: admit::Admission,
}

impl Proxy {
    /// A data plane forwarding to `config.upstream`, with sessions held by `manager`. Each
    /// has its own upstream connection pool (one per data-plane thread, so connections stay on
    /// the runtime that drives them).
    ///
    /// Its upstream connections are bounded by `config.max_upstream_connections` alone (0:
    /// unbounded); a daemon shares one bound between its proxies with
    /// [`Proxy::with_upstream_connections`].
    pub fn new(config: ProxyConfig, manager: Arc<SessionManager>) -> Self {
        let max = match config.max_upstream_connections {
            0 => usize::MAX,
            max => max,
        };
        Self::with_upstream_connections(config, manager, UpstreamConnections::new(max))
    }

    /// [`Proxy::new`], its upstream connections counted in (and bounded by) `connections`,
    /// shared with other proxies of the process.
    pub fn with_upstream_connections(
        config: ProxyConfig,
        manager: Arc<SessionManager>,
        connections: Arc<UpstreamConnections>,
    ) -> Self {
        let upstream = Upstream::new(&config, connections);
        upstream.count_idle_closed_in(&manager);
        Self {
            admission: admit::Admission::new(&config),
            config,
            manager,
            upstream,
        }
    }

    /// The upstream client (also used to end expired sessions upstream).
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The axum router: the MCP endpoint at the configured path.
    pub fn router(self: Arc<Self>) -> Router {
        let path = self.config.endpoint_path.clone();
        Router::new().route(&path, any(handle)).with_state(self)
    }

    /// Ends a session upstream with `DELETE` (best effort: failures are logged and counted by
    /// the caller's log line, never retried).
    pub async fn delete_upstream_session(&self, session: &Session) {
        // A record claimed from a shared store may name another deployment's upstream: its id
        // means nothing to ours. Skipped, logged and counted.
        if session.upstream() != &**self.upstream.url() {
            self.manager
                .persistence()
                .metrics()
                .bad_records
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                session = %session.id(),
                "an expired session names another upstream; not ended upstream",
            );
            return;
        }
        match self.upstream.end_session(session).await {
            Ok(status) => tracing::info!(
                session = %session.id(),
                status = status.as_u16(),
                "ended expired session upstream",
            ),
            Err(err) => tracing::warn!(
                session = %session.id(),
                error = %error_chain(&err),
                "could not end expired session upstream",
            ),
        }
    }

    async fn serve(
        self: &Arc<Self>,
        request: Request,
    ) -> Result<Response, (Reject, Option<Box<RawValue>>)> {
        let (parts, body) = request.into_parts();
        let method = parts.method.clone();
        if method != Method::POST && method != Method::GET && method != Method::DELETE {
            return Err((Reject::MethodNotAllowed(method), None));
        }
        self.admission.check(&parts).map_err(|r| (r, None))?;

        let (body, peek) = if method == Method::POST {
            let body = read_body(body, &self.config, self.manager.stats())
                .await
                .map_err(|r| (r, None))?;
            let peek =
                era::peek_message(&body).map_err(|e| (Reject::NotJson(e.to_string()), None))?;
            (body, Some(peek))
        } else {
            (Bytes::new(), None)
        };
        let request_id = peek.as_ref().and_then(|p| p.id.clone());
        let fail = |r: Reject| (r, request_id.clone());

        let header_version = parts
            .headers
            .get(&MCP_PROTOCOL_VERSION)
            .and_then(|v| v.to_str().ok());
        era::check_versions(parts.headers.get(&MCP_PROTOCOL_VERSION), peek.as_ref())
            .map_err(|v| fail(Reject::UnsupportedProtocolVersion(v)))?;
        let (era, version) = era::detect(header_version, peek.as_ref());
        if era == Era::Modern
            && let Some(peek) = &peek
        {
            era::check_mirrored_headers(&parts.headers, peek)
                .map_err(|header| fail(Reject::HeaderMismatch { header }))?;
        }

        // Legacy sessions: map the client's id to the upstream's.
        let session = match (era, parts.headers.get(&MCP_SESSION_ID)) {
            (Era::Legacy, Some(sid)) => {
                let sid = sid.to_str().map_err(|_| fail(Reject::SessionNotFound))?;
                let session = match self.manager.resume(sid, header_version) {
                    Some(session) => session,
                    None => self
                        .restore_session(sid, header_version)
                        .await
                        .map_err(fail)?,
                };
                Some(session)
            }
            _ => None,
        };

        // A legacy client resuming a stream: served from the proxy's window (and the upstream
        // only if the stream must be re-opened there).
        if era == Era::Legacy
            && method == Method::GET
            && let Some(s) = &session
            && let Some(last_event_id) = parts.headers.get(&LAST_EVENT_ID)
        {
            return self
                .resume(s, last_event_id, &parts.headers)
                .await
                .map_err(fail);
        }

        let mut upstream_request = http::Request::new(Full::new(body));
        *upstream_request.method_mut() = method.clone();
        *upstream_request.uri_mut() = self.upstream.uri_for(parts.uri.query());
        headers::copy_end_to_end(&parts.headers, upstream_request.headers_mut());
        if let Some(s) = &session {
            upstream_request
                .headers_mut()
                .insert(&MCP_SESSION_ID, s.upstream_session_id().clone());
        }
        // Without a session there is no window to resume from: an id of ours that carries the
        // upstream's id is translated back; anything else is the upstream's to judge.
        if let Some(upstream_id) = parts
            .headers
            .get(&LAST_EVENT_ID)
            .and_then(|id| id.to_str().ok())
            .and_then(ClientEventId::parse)
            .and_then(|id| id.upstream_id)
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            upstream_request
                .headers_mut()
                .insert(&LAST_EVENT_ID, upstream_id);
        }

        // A new session past the cap: refused before the upstream creates one for nothing.
        if era == Era::Legacy
            && session.is_none()
            && is_initialize(peek.as_ref())
            && self.manager.at_session_cap()
        {
            return Err(fail(self.manager.refuse_session().into()));
        }

        // A request of a session whose standalone stream is on its way upstream waits for it
        // (at most the configured time, once per session): a server request sent without a
        // related request goes on that stream only if the upstream has it already.
        if let Some(s) = &session
            && method == Method::POST
            && peek.as_ref().is_some_and(is_gated_request)
        {
            self.await_standalone_stream(s, peek.as_ref()).await;
        }

        let sent = self.upstream.send(upstream_request).await;
        // The standalone stream's answer is in (any status, or none): the session's requests
        // go on.
        if method == Method::GET
            && let Some(s) = &session
        {
            s.standalone().release();
        }
        let response = sent.map_err(|err| {
            // The warning, with the request id, is `handle`'s; this adds the request's context.
            tracing::debug!(
                upstream = %self.upstream.url(),
                method = %method,
                mcp_method = peek.as_ref().and_then(|p| p.method.as_deref()),
                error = %error_chain(&err),
                "upstream request failed",
            );
            fail(err.into())
        })?;
        let status = response.status();

        // Session bookkeeping from the upstream's answer.
        let mut session = session;
        if let Some(s) = &session {
            let ended = status == StatusCode::NOT_FOUND
                || (method == Method::DELETE && status.is_success());
            if ended && self.manager.end_session(s.id().as_str()).is_some() {
                tracing::info!(session = %s.id(), status = status.as_u16(), "session ended");
            }
        }
        // The upstream accepted `notifications/initialized`: the client opens its standalone
        // stream now, and the session's requests wait for it.
        if let Some(s) = &session
            && status.is_success()
            && peek.as_ref().and_then(|p| p.method.as_deref()) == Some(INITIALIZED)
        {
            s.standalone().open();
        }
        // A successful `initialize` that the upstream answered with a session id it has not
        // used for this client's session starts a new session.
        if era == Era::Legacy
            && status.is_success()
            && is_initialize(peek.as_ref())
            && let Some(upstream_sid) = response.headers().get(&MCP_SESSION_ID)
            && session
                .as_ref()
                .is_none_or(|s| s.upstream_session_id() != upstream_sid)
        {
            let upstream_sid = headers::owned_value(upstream_sid);
            let created = match self.manager.create_session(
                upstream_sid.clone(),
                self.upstream.url().clone(),
                &version,
            ) {
                Ok(created) => created,
                Err(err) => {
                    // The upstream made a session the client will never use (the cap was
                    // reached while this `initialize` was upstream): end it there now.
                    drop(response);
                    self.end_orphaned_upstream_session(&upstream_sid, &version)
                        .await;
                    return Err(fail(err.into()));
                }
            };
            tracing::info!(
                session = %created.id(),
                protocol_version = %version,
                "session created",
            );
            session = Some(created);
        }

        let (mut head, upstream_body) = response.into_parts();
        let mut client_headers = HeaderMap::with_capacity(head.headers.len() + 1);
        headers::copy_end_to_end(&head.headers, &mut client_headers);
        if head.headers.contains_key(&MCP_SESSION_ID)
            && let Some(s) = session.as_ref().filter(|s| !s.is_ended())
            && let Ok(v) = HeaderValue::from_str(s.id().as_str())
        {
            client_headers.insert(&MCP_SESSION_ID, v);
        }
        let is_sse = crate::protocol::headers::is_event_stream(&head.headers);

        let body = if is_sse {
            let kind = if method == Method::GET {
                StreamKind::Get
            } else {
                StreamKind::Post
            };
            let live_session = session.as_ref().filter(|s| !s.is_ended());
            let tracker = self
                .manager
                .open_stream(live_session, kind)
                .map_err(|e| fail(Reject::Internal(e.to_string())))?;
            sse_headers(&mut client_headers);
            match (era, live_session) {
                // Legacy streams survive dropped connections: a pump reads the upstream, the
                // client reads the tracker's window.
                (Era::Legacy, Some(s)) => {
                    let reader = tracker
                        .attach(None)
                        .map_err(|e| fail(Reject::Internal(e.to_string())))?;
                    self.manager.stream_changed(&tracker);
                    let mut resume_headers = HeaderMap::new();
                    headers::copy_end_to_end(&parts.headers, &mut resume_headers);
                    headers::own_values(&mut resume_headers);
                    let request_id = request_id.clone().filter(|_| {
                        method == Method::POST && !peek.as_ref().is_some_and(|p| p.batch)
                    });
                    let pump = pump::start(
                        pump::PumpContext {
                            proxy: self.clone(),
                            session: s.clone(),
                            tracker: tracker.clone(),
                            resume_headers,
                            request_id,
                        },
                        upstream_body,
                        reader,
                    );
                    pump::reader_body(tracker, reader, pump, self.clone())
                }
                // Modern (and sessionless) streams: closing the client's stream closes the
                // upstream request at once.
                _ => Body::new(SseRelay::new(
                    upstream_body,
                    tracker,
                    self.manager.clone(),
                    self.config.max_event_bytes,
                )),
            }
        } else {
            if let Some(len) = head.headers.get(header::CONTENT_LENGTH) {
                client_headers.insert(header::CONTENT_LENGTH, len.clone());
            }
            // hyper has parsed the `Content-Length` already: an exact size hint.
            let small = http_body::Body::size_hint(&upstream_body)
                .exact()
                .is_some_and(|n| n <= BUFFERED_RESPONSE_BYTES);
            if small {
                // A small answer is read whole before the head goes out: head and body leave in
                // one write, and the upstream connection is back in the pool at once. A body
                // that breaks now still gets a proper 502 instead of a cut-off 200.
                let bytes = tokio::time::timeout(
                    self.config.upstream_response_timeout,
                    upstream_body.collect(),
                )
                .await
                .map_err(|_| {
                    fail(UpstreamError::Timeout(self.config.upstream_response_timeout).into())
                })?
                .map_err(|e| fail(UpstreamError::Body(e).into()))?
                .to_bytes();
                Body::from(bytes)
            } else {
                Body::new(upstream_body)
            }
        };
        head.headers = client_headers;
        tracing::debug!(
            method = %method,
            era = era.as_str(),
            mcp_method = peek.as_ref().and_then(|p| p.method.as_deref()),
            session = session.as_ref().map(|s| s.id().as_str()),
            status = status.as_u16(),
            sse = is_sse,
            "forwarded",
        );
        Ok(Response::from_parts(head, body))
    }

    /// Ends at the upstream (`DELETE`, best effort, logged) a session it created for an
    /// `initialize` the proxy then refused, so it does not wait for the upstream's own expiry.
    async fn end_orphaned_upstream_session(&self, upstream_sid: &HeaderValue, version: &str) {
        match self.upstream.end_session_id(upstream_sid, version).await {
            Ok(status) => tracing::info!(
                status = status.as_u16(),
                "ended upstream a session the proxy refused",
            ),
            Err(err) => tracing::warn!(
                error = %error_chain(&err),
                "could not end upstream a session the proxy refused",
            ),
        }
    }

    /// Serves a legacy `GET` with `Last-Event-ID`: attaches the client to the stream the id
    /// names, at the position it names, re-opening the stream upstream (after the upstream id
    /// the proxy recorded, never one the client supplied) when the proxy's side of it has
    /// stopped. Ids that are malformed, name a stream this session does not have, point before
    /// the replay window, carry an upstream id part the stream did not issue at that position,
    /// or (for a stream no longer held here) name another position than the recorded one are
    /// refused with 400, logged and counted — never served from another stream or session.
    async fn resume(
        self: &Arc<Self>,
        session: &Arc<Session>,
        last_event_id: &HeaderValue,
        request_headers: &HeaderMap,
    ) -> Result<Response, Reject> {
        let stats = self.manager.stats();
        let refuse = |reason: String| {
            ProxyStats::incr(&stats.resumptions_refused);
            tracing::warn!(
                session = %session.id(),
                last_event_id = ?last_event_id,
                reason = %reason,
                "refused a stream resumption",
            );
            Reject::LastEventId(reason)
        };
        let id = last_event_id
            .to_str()
            .ok()
            .and_then(ClientEventId::parse)
            .ok_or_else(|| refuse("Last-Event-ID is not an event id this proxy issued".into()))?;
        // The reader attaches after `at`: the client's seq, or for a restored stream the
        // recorded last seq (what lies between cannot be replayed by anyone).
        let (tracker, at) = match session.stream(id.stream) {
            // An upstream id part must be the one the stream issued at that position.
            Some(tracker) if id.upstream_id.is_some() && tracker.issued(&id) == Some(false) => {
                return Err(refuse(
                    "Last-Event-ID is not an event id this stream issued".into(),
                ));
            }
            // Restored here earlier: a position the restore accepted attaches where it did.
            Some(tracker) => {
                let at = tracker.restored_position(&id).unwrap_or(id.seq);
                (tracker, at)
            }
            // Not held here: persisted under this session (before a restart, or by another
            // replica)? Then it resumes from the upstream after the recorded upstream id, if
            // the client is at the recorded position; otherwise it is refused.
            None => match self
                .manager
                .restore_stream(session, id.stream, id.seq, id.upstream_id)
                .await
            {
                Ok(restored) => restored,
                Err(StreamRestoreError::Store(e)) => {
                    return Err(Reject::StoreUnavailable(e.into()));
                }
                Err(StreamRestoreError::Unknown) => {
                    return Err(refuse(format!(
                        "stream {:?} is unknown in this session",
                        id.stream
                    )));
                }
                Err(StreamRestoreError::NotRecorded { recorded_seq }) => {
                    tracing::debug!(
                        session = %session.id(),
                        stream = id.stream,
                        seq = id.seq,
                        recorded_seq,
                        "a stream not held here was resumed at another position than the one \
                         recorded; its events in between cannot be served exactly once",
                    );
                    return Err(refuse(
                        "Last-Event-ID is not the recorded position of a stream no longer held"
                            .into(),
                    ));
                }
            },
        };

        let mut resume_headers = HeaderMap::new();
        headers::copy_end_to_end(request_headers, &mut resume_headers);
        headers::own_values(&mut resume_headers);
        // A stream whose pump stopped is re-opened upstream from its last upstream id.
        let mut reopened = None;
        if matches!(
            tracker.upstream(),
            UpstreamState::Failed | UpstreamState::Stopped
        ) && let Some(last) = tracker.last_upstream_id()
        {
            match pump::open_resumption(self, session, &resume_headers, &last).await {
                Ok(body) => reopened = Some(body),
                Err(pump::Resumption::Refused(status)) if tracker.last_seq() == at => {
                    return Err(Reject::ResumeFailed(format!(
                        "the upstream refused to resume the stream ({status})"
                    )));
                }
                Err(pump::Resumption::Unavailable(err)) if tracker.last_seq() == at => {
                    return Err(Reject::ResumeFailed(err));
                }
                // Events are still buffered for the client: serve them, then end.
                Err(_) => {}
            }
        }
        let reader = tracker
            .attach(Some(at))
            .map_err(|e| refuse(e.to_string()))?;
        self.manager.stream_changed(&tracker);
        // This reader drives the pump: a re-opened one, or the one the replaced reader drove
        // (which may never be polled again: its client may have stopped reading).
        let pump = reopened
            .and_then(|body| {
                pump::start(
                    pump::PumpContext {
                        proxy: self.clone(),
                        session: session.clone(),
                        tracker: tracker.clone(),
                        resume_headers,
                        request_id: None,
                    },
                    body,
                    reader,
                )
            })
            .or_else(|| pump::adopt(&tracker, self, reader));
        ProxyStats::incr(&stats.resumptions);
        let replayed = tracker.last_seq().saturating_sub(at);
        stats
            .events_replayed
            .fetch_add(replayed, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            session = %session.id(),
            stream = %tracker.stream(),
            after_seq = at,
            replayed,
            "client resumed a stream",
        );
        let mut response = Response::new(pump::reader_body(tracker, reader, pump, self.clone()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        sse_headers(response.headers_mut());
        Ok(response)
    }

    /// Waits for the session's standalone stream to be established upstream (see
    /// [`crate::session::StandaloneGate`]), counting the wait and logging one that timed out.
    async fn await_standalone_stream(&self, session: &Session, peek: Option<&MessagePeek>) {
        let wait = self.manager.config().standalone_stream_wait;
        let stats = self.manager.stats();
        match session.standalone().wait(wait).await {
            GateWait::NotNeeded => {}
            GateWait::Released => ProxyStats::incr(&stats.standalone_waits),
            GateWait::TimedOut => {
                ProxyStats::incr(&stats.standalone_waits);
                ProxyStats::incr(&stats.standalone_wait_timeouts);
                tracing::debug!(
                    session = %session.id(),
                    mcp_method = peek.and_then(|p| p.method.as_deref()),
                    wait_ms = wait.as_millis() as u64,
                    "no standalone GET stream established upstream in time; forwarding the request",
                );
            }
        }
    }

    /// An `Mcp-Session-Id` this process does not hold: looked up in the session store (the
    /// session may predate a restart, or belong to another replica). `404` when the store has
    /// no live record of it; `503` when the store cannot answer (the client may retry).
    async fn restore_session(
        &self,
        sid: &str,
        protocol_version: Option<&str>,
    ) -> Result<Arc<Session>, Reject> {
        match self
            .manager
            .restore_session(sid, protocol_version, self.upstream.url())
            .await
        {
            Ok(Some(session)) => {
                tracing::info!(session = %session.id(), "session restored from the store");
                Ok(session)
            }
            Ok(None) => Err(Reject::SessionNotFound),
            Err(err) => {
                tracing::warn!(error = %err, "could not look up a session in the store");
                Err(Reject::StoreUnavailable(err.into()))
            }
        }
    }
}

/// Largest non-SSE upstream answer (by `Content-Length`, bytes) read whole before the client gets
/// its head, so head and body go out in one write; larger or unsized answers are streamed.
pub const BUFFERED_RESPONSE_BYTES: u64 = 256 * 1024;

/// The axum handler: serves the request, or answers with the proxy's own error.
async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    match proxy.serve(request).await {
        Ok(response) => response,
        Err((reject, id)) => {
            // The client reads a short message; the detail is logged here, with the request id.
            let request_id = id.as_deref().map(RawValue::get);
            if let Reject::Upstream(UpstreamError::TooManyConnections { max }) = &reject {
                let total = proxy
                    .manager
                    .stats()
                    .upstream_connections_refused
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                // The first, then at powers of two: a flood does not flood the log.
                if total.is_power_of_two() {
                    tracing::warn!(
                        max_upstream_connections = max,
                        total,
                        request_id,
                        "upstream connection bound reached (proxy.max_upstream_connections); \
                         refusing requests that need a new one",
                    );
                }
            } else if reject.is_server_side() {
                tracing::warn!(kind = reject.kind(), request_id, error = %error_chain(&reject), "request failed");
            } else {
                tracing::debug!(kind = reject.kind(), request_id, error = %error_chain(&reject), "request rejected by the proxy");
            }
            reject.into_response_with_id(id.as_deref())
        }
    }
}

/// Headers every SSE answer carries: no buffering by intermediaries, no caching.
fn sse_headers(headers: &mut HeaderMap) {
    headers.insert(&X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
}

/// The notification after which an SDK client opens its standalone `GET` stream.
const INITIALIZED: &str = "notifications/initialized";

/// A JSON-RPC request (or a batch, which may hold some) other than `initialize`: what waits for
/// the session's standalone stream. Notifications and responses never wait.
fn is_gated_request(peek: &MessagePeek) -> bool {
    peek.batch || (peek.id.is_some() && peek.method.as_deref().is_some_and(|m| m != "initialize"))
}

fn is_initialize(peek: Option<&MessagePeek>) -> bool {
    peek.and_then(|p| p.method.as_deref()) == Some("initialize")
}

/// Reads a whole request body, refusing more than `limit` bytes.
async fn read_body(body: Body, config: &ProxyConfig, stats: &ProxyStats) -> Result<Bytes, Reject> {
    let limit = config.max_request_body_bytes;
    let timeout = config.request_body_timeout;
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
            Err(Reject::BodyTooLarge { limit })
        }
        Ok(Err(err)) => Err(Reject::BodyUnreadable(err.to_string())),
        Err(_) => {
            let total = stats.request_body_timeouts.fetch_add(1, Ordering::Relaxed) + 1;
            // The first, then at powers of two: a flood of slow bodies does not flood the log.
            if total.is_power_of_two() {
                tracing::warn!(
                    timeout_secs = timeout.as_secs_f64(),
                    total,
                    "request body not complete in time (proxy.request_body_timeout_secs)",
                );
            }
            Err(Reject::BodyTimeout(timeout))
        }
    }
}
