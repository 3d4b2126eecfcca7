//! The phases of one request through the MCP endpoint (DESIGN.md, "Request phases"), each a
//! method of [`Proxy`] over the request's context, in the order [`Proxy::serve`] calls them:
//!
//! 1. [`Proxy::admit`]: may this request be served at all? Method, the
//!    [`Admission`](super::admit::Admission) header checks (singleton headers, `Host`,
//!    `Origin`), the body (size, time) and whether it is JSON. Its output is an
//!    [`AdmittedRequest`].
//! 2. [`Proxy::resolve`]: what is this request? Protocol versions, era, mirrored headers, the
//!    upstream it goes to, its legacy session (resumed here, or restored from the store), and
//!    whether a new session would pass the cap. Its output is the [`RequestCtx`] the later phases
//!    share; a legacy stream resumption ([`RequestCtx::stream_resumption`]) leaves the phases
//!    here for [`Proxy::resume`].
//! 3. [`Proxy::forward`]: the one upstream request (after the standalone-stream gate).
//! 4. [`Proxy::account`]: session bookkeeping from the upstream's answer (sessions created and
//!    ended, the standalone gate opened).
//! 5. [`Proxy::respond`]: the client's response head and body (SSE relay or pump, or the JSON
//!    answer read whole when small).
//!
//! A phase refuses with a [`Reject`] (the HTTP status and JSON-RPC error are [`Reject`]'s);
//! [`Proxy::serve`] adds the request's JSON-RPC id and the edge logs it once.
//!
//! Where later features plug in: authentication is a check of [`Proxy::admit`] (its identity
//! goes in [`AdmittedRequest`]); route selection sets [`RequestCtx::upstream`] in
//! [`Proxy::resolve`]; interceptors run between [`Proxy::resolve`] and [`Proxy::forward`] over
//! the request, and in [`Proxy::respond`] over the answer.

use std::sync::Arc;

use axum::{body::Body, extract::Request, response::Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::value::RawValue;

use super::{
    BUFFERED_RESPONSE_BYTES, Proxy,
    error::Reject,
    headers, oauth, pump,
    relay::SseRelay,
    route::Failure,
    sse_headers,
    stats::ProxyStats,
    upstream::{ErrorChain, Upstream, UpstreamBody, UpstreamError},
};
use crate::counters::incr_sampled;
use crate::{
    config::ProxyConfig,
    protocol::{
        ClientEventId,
        era::{self, Era, MessagePeek},
        headers::{LAST_EVENT_ID, MCP_PROTOCOL_VERSION, MCP_SESSION_ID},
    },
    session::{GateWait, Session, StreamKind},
};

/// A request the admit phase let in: its head, its whole body, and what the body says.
#[derive(Debug)]
pub struct AdmittedRequest {
    /// The request head: method (`POST`, `GET` or `DELETE`), URI, headers.
    pub parts: Parts,
    /// The body bytes of a `POST`, forwarded untouched; empty for `GET` and `DELETE`.
    pub body: Bytes,
    /// What the `POST` body says (method, id, versions, name); `None` for `GET` and `DELETE`.
    pub peek: Option<MessagePeek>,
    /// Who its access token speaks for, on a resource-server route (set by `authenticate`).
    pub principal: Option<Arc<super::auth::Principal>>,
}

impl AdmittedRequest {
    /// The JSON-RPC id of the request (raw JSON text), carried by the proxy's own error answers
    /// so the client can fail the right call; `None` for notifications, responses, batches,
    /// `GET` and `DELETE`.
    pub fn jsonrpc_id(&self) -> Option<Box<RawValue>> {
        self.peek.as_ref().and_then(|p| p.id.clone())
    }
}

/// One request after the resolve phase: what the forward, account and respond phases share.
#[derive(Debug)]
pub struct RequestCtx {
    /// The admitted request; [`Proxy::forward`] takes its body.
    pub request: AdmittedRequest,
    /// The request's protocol era (`era::detect`).
    pub era: Era,
    /// The protocol version it speaks: `MCP-Protocol-Version`, the `_meta` version, a known
    /// `initialize` offer, else the assumed legacy version.
    pub version: String,
    /// Its legacy session: the one `Mcp-Session-Id` names (resolve), or the one an
    /// `initialize` created (account); `None` for modern and sessionless requests.
    pub session: Option<Arc<Session>>,
    /// The endpoint of the route (its index in [`super::route::Route::endpoints`]) the request
    /// goes to: the session's (resolve), or the one the balancer picked (forward).
    pub endpoint: Option<usize>,
    /// What the route's interceptors do with the answer's messages (intercept), when they
    /// want them.
    pub filter: Option<super::intercept::ServerFilter>,
    /// The request's spans, when traces are on.
    pub trace: Option<crate::telemetry::traces::RequestTrace>,
}

impl RequestCtx {
    /// A legacy client resuming a stream: a `GET` with `Last-Event-ID` in a session. It is
    /// served from the proxy's window by [`Proxy::resume`] (and the upstream only if the
    /// stream must be re-opened there) instead of the forward phase.
    pub fn stream_resumption(&self) -> Option<(&Arc<Session>, &HeaderValue)> {
        if self.era != Era::Legacy || self.request.parts.method != Method::GET {
            return None;
        }
        let session = self.session.as_ref()?;
        let last_event_id = self.request.parts.headers.get(&LAST_EVENT_ID)?;
        Some((session, last_event_id))
    }

    /// The JSON-RPC `method` of the request, for logs.
    fn mcp_method(&self) -> Option<&str> {
        self.request.peek.as_ref().and_then(|p| p.method.as_deref())
    }

    /// Whether the request is `initialize`.
    fn is_initialize(&self) -> bool {
        is_initialize(self.request.peek.as_ref())
    }
}

impl Proxy {
    /// **Admit**: whether the request may be served at all, before anything else is done for
    /// it. Reads the head, then the whole body of a `POST` (up to
    /// `proxy.max_request_body_bytes`, within `proxy.request_body_timeout`), and peeks at it.
    ///
    /// Rejections (none carries a request id, as none is known yet): a method other than
    /// `POST`, `GET`, `DELETE` `405`/-32600 (with `Allow`); a repeated singleton header
    /// `400`/-32600, a `Host` not served `421`/-32600, an `Origin` not allowed `403`/-32600
    /// ([`Admission::check`](super::admit::Admission::check)); a body too large
    /// `413`/-32600, too slow `408`/-32600 (counted, logged at powers of two; the connection
    /// is closed), unreadable `400`/-32600; a body that is not a JSON-RPC message
    /// `400`/-32700.
    pub(super) async fn admit(&self, request: Request) -> Result<AdmittedRequest, Reject> {
        let (parts, body) = request.into_parts();
        let method = &parts.method;
        if method != Method::POST && method != Method::GET && method != Method::DELETE {
            return Err(Reject::MethodNotAllowed(parts.method));
        }
        self.admission.check(&parts)?;
        let (body, peek) = if parts.method == Method::POST {
            let body = read_body(body, &self.config, &self.stats).await?;
            let peek = era::peek_message(&body).map_err(|e| Reject::NotJson(e.to_string()))?;
            (body, Some(peek))
        } else {
            (Bytes::new(), None)
        };
        Ok(AdmittedRequest {
            parts,
            body,
            peek,
            principal: None,
        })
    }

    /// **Authenticate** (resource-server routes only, [`super::auth`]): the request's bearer
    /// token validated for the route's resource URL and the scopes it needs (a `tools/call`'s
    /// tool's too); who it speaks for goes into `request.principal`. A batch is refused on a
    /// route with per-tool scopes (its calls cannot be judged one by one here): `400`.
    pub(super) async fn authenticate(&self, request: &mut AdmittedRequest) -> Result<(), Reject> {
        let Some(auth) = self.route.auth() else {
            return Ok(());
        };
        // Fixed by the configuration (a loaded one always has them), else from the request.
        let derived;
        let (resource, metadata_url) = match auth.fixed_urls() {
            Some(fixed) => fixed,
            None => {
                let public = super::oauth::PublicUrl::of(&self.route, &request.parts);
                derived = (public.resource().to_owned(), public.metadata_url());
                (derived.0.as_str(), derived.1.as_str())
            }
        };
        let peek = request.peek.as_ref();
        let bad_request = |reason| {
            Reject::Unauthorized(Box::new(super::auth::AuthRefusal {
                status: http::StatusCode::BAD_REQUEST,
                error: Some("invalid_request"),
                scope: None,
                metadata_url: metadata_url.to_owned(),
                reason,
            }))
        };
        let is_call = peek.is_some_and(|p| p.method.as_deref() == Some("tools/call"));
        let tool = peek.filter(|_| is_call).and_then(|p| p.name.as_deref());
        if !auth.config().tool_scopes.is_empty() && peek.is_some() {
            // The tool judged must be the one the server will run: a batch, a body with a
            // repeated key (the SDKs keep the last one; the peek reads none) or a call
            // without a readable name cannot be judged here.
            if peek.is_some_and(|p| p.batch) {
                return Err(bad_request(
                    "batches are not accepted on a route with per-tool scopes",
                ));
            }
            if !era::is_readable(&request.body) || (is_call && tool.is_none()) {
                return Err(bad_request("the request cannot be read for its tool"));
            }
        }
        let principal = auth
            .authenticate(&request.parts, resource, metadata_url, tool, &self.stats)
            .await
            .map_err(|refusal| Reject::Unauthorized(Box::new(refusal)))?;
        request.principal = Some(principal);
        Ok(())
    }

    /// **Resolve**: what the request is and where it goes, before the upstream sees it. Checks
    /// the protocol versions it names, detects its era, checks a modern request's mirrored
    /// headers against its body, picks its upstream, and finds a legacy request's session
    /// ([`crate::session::SessionManager::resume`], else the store). No session is touched
    /// before the versions are checked.
    ///
    /// A legacy session is served only on its route, by the endpoint it is pinned to; other
    /// requests are balanced over the pool in the forward phase.
    ///
    /// Rejections (with the request's id): an unknown `MCP-Protocol-Version` or `_meta`
    /// version `400`/-32022 (`data.supported`); a mirrored header that disagrees with the
    /// body `400`/-32020; an `Mcp-Session-Id` not held here nor in the store, or of another
    /// route or endpoint, or (on a resource-server route) bound to another subject or not held
    /// here, `404`/-32001; a
    /// store that cannot answer `503`/-32603 (logged); a legacy `initialize` without a
    /// session while `session.max_sessions` are live `503`/-32603 (counted), refused before
    /// the upstream makes a session for nothing.
    pub(super) async fn resolve(&self, request: AdmittedRequest) -> Result<RequestCtx, Reject> {
        let headers = &request.parts.headers;
        let peek = request.peek.as_ref();
        let header_version = headers
            .get(&MCP_PROTOCOL_VERSION)
            .and_then(|v| v.to_str().ok());
        era::check_versions(headers.get(&MCP_PROTOCOL_VERSION), peek)
            .map_err(Reject::UnsupportedProtocolVersion)?;
        let (era, version) = era::detect(header_version, peek);
        if era == Era::Modern
            && let Some(peek) = peek
        {
            era::check_mirrored_headers(headers, peek)
                .map_err(|header| Reject::HeaderMismatch { header })?;
        }
        // Legacy sessions: map the client's id to the upstream's, on the session's endpoint.
        let (session, endpoint) = match (era, headers.get(&MCP_SESSION_ID)) {
            (Era::Legacy, Some(sid)) => {
                let sid = sid.to_str().map_err(|_| Reject::SessionNotFound)?;
                // A session of another route or endpoint is refused before it is touched.
                let mut endpoint = 0;
                let principal = request.principal.as_deref();
                let session = match self.manager.resume_if(sid, header_version, |s| {
                    endpoint = self.session_endpoint(s)?;
                    check_binding(s, principal)
                })? {
                    Some(session) => session,
                    // On a resource-server route a session of the store is bound to nobody
                    // (bindings are not persisted): not found, and the record not touched.
                    None if principal.is_some() => return Err(Reject::SessionNotFound),
                    None => {
                        let session = self.restore_session(sid, header_version).await?;
                        endpoint = self.session_endpoint(&session)?;
                        session
                    }
                };
                (Some(session), Some(endpoint))
            }
            _ => (None, None),
        };

        // A new session past the cap: refused before the upstream creates one for nothing.
        if era == Era::Legacy
            && session.is_none()
            && is_initialize(peek)
            && self.manager.at_session_cap()
        {
            return Err(self.manager.refuse_session().into());
        }
        Ok(RequestCtx {
            request,
            era,
            version,
            session,
            endpoint,
            filter: None,
            trace: None,
        })
    }

    /// The endpoint (index in the route's endpoints) `session` is pinned to, ejected or not: an
    /// ejected endpoint may only be slow, and still knows its sessions (one that refuses
    /// connections is gone: the forward phase ends its sessions). A session of another route,
    /// or whose endpoint this route does not have, is not found here (`404`).
    fn session_endpoint(&self, session: &Session) -> Result<usize, Reject> {
        let route = &self.route;
        let ours = session.route().is_empty() || route.answers_to(session.route());
        match route.endpoint_of(session.upstream()) {
            Some(i) if ours => Ok(i),
            _ => Err(Reject::SessionNotFound),
        }
    }

    /// Ends a session whose endpoint is gone (logged).
    fn end_lost_session(&self, session: &Session, why: &str) {
        if self.manager.end_session(session.id().as_str()).is_some() {
            tracing::info!(
                session = %session.id(),
                route = %self.route.name(),
                endpoint = %session.upstream(),
                why,
                "session ended: its upstream endpoint is gone; the client must re-initialize",
            );
        }
    }

    /// **Forward**: the one upstream request, and its response head. The request carries the
    /// client's body bytes untouched, its end-to-end headers, the upstream's `Host`, the
    /// session's upstream `Mcp-Session-Id`, and a `Last-Event-ID` of the proxy's translated
    /// back to the upstream's id. A session's request (not a notification, response or
    /// `initialize`) first waits for the session's standalone stream to be established
    /// upstream (at most `session.standalone_stream_wait`, once per session); a `GET`'s answer
    /// (or failure) releases that wait.
    ///
    /// It goes to the session's endpoint, or to the one the balancer picks
    /// ([`super::route::Route::pick`]). The outcome counts toward the endpoint's health
    /// (a failure, a `5xx`, or a success), and the request stays outstanding there until its
    /// answer's body ends. A request without a session that failed before the endpoint could
    /// have seen it (no connection; closed before it was written) is sent once more, to
    /// another endpoint; never after that (`tools/call` is not idempotent).
    ///
    /// Rejections (with the request's id; detail at debug here, the warning is the edge's):
    /// every endpoint of the pool ejected or drained `503`/-32603; a session's endpoint that
    /// refuses connections `404`/-32001 (the session ends: its endpoint is gone); the
    /// [`UpstreamError`] kinds — no connection place `503`/-32603, no connection or a failed
    /// exchange `502`/-32603, no head in time `504`/-32603.
    pub(super) async fn forward(
        &self,
        ctx: &mut RequestCtx,
    ) -> Result<http::Response<UpstreamBody>, Reject> {
        let method = ctx.request.parts.method.clone();
        let pinned = ctx.endpoint;
        let mut index = match pinned {
            Some(i) => i,
            None => self.route.pick(None).ok_or_else(|| {
                ProxyStats::incr(&self.stats.no_endpoint_available);
                Reject::NoEndpointAvailable(self.route.name().clone())
            })?,
        };
        let body = std::mem::take(&mut ctx.request.body);

        // A request of a session whose standalone stream is on its way upstream waits for it
        // (at most the configured time, once per session): a server request sent without a
        // related request goes on that stream only if the upstream has it already.
        if let Some(s) = &ctx.session
            && method == Method::POST
            && ctx.request.peek.as_ref().is_some_and(is_gated_request)
        {
            self.await_standalone_stream(s, ctx.mcp_method()).await;
        }

        let mut retried = false;
        let sent = loop {
            let endpoint = &self.route.endpoints()[index];
            let request = self.upstream_request(ctx, index, body.clone());
            let outstanding = endpoint.begin();
            let started = std::time::Instant::now();
            match self.upstreams[index].send(request).await {
                Ok(mut response) => {
                    endpoint.latency.record(started.elapsed());
                    if response.status().is_server_error() {
                        endpoint.failed(Failure::ServerError);
                    } else {
                        endpoint.succeeded(false);
                    }
                    response.body_mut().hold(outstanding);
                    break Ok(response);
                }
                Err(err) => {
                    drop(outstanding);
                    let unseen =
                        matches!(err, UpstreamError::Connect(_) | UpstreamError::Unsent(_));
                    match err {
                        // The proxy's own bound: says nothing of the endpoint.
                        UpstreamError::TooManyConnections { .. } => false,
                        _ if unseen => endpoint.failed(Failure::Connect),
                        _ => endpoint.failed(Failure::Exchange),
                    };
                    tracing::debug!(
                        route = %self.route.name(),
                        upstream = %endpoint.url(),
                        method = %method,
                        mcp_method = ctx.mcp_method(),
                        error = %ErrorChain(&err),
                        "upstream request failed",
                    );
                    if unseen
                        && pinned.is_none()
                        && !retried
                        && let Some(next) = self.route.pick(Some(index))
                    {
                        endpoint
                            .retried
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        retried = true;
                        index = next;
                        continue;
                    }
                    if endpoint_gone(&err)
                        && let Some(s) = &ctx.session
                    {
                        // The session's endpoint refuses connections: it is gone, and no other
                        // endpoint knows the session.
                        endpoint
                            .sessions_lost
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        self.end_lost_session(s, "refused the connection");
                        break Err(Reject::SessionEndpointGone(self.route.name().clone()));
                    }
                    break Err(err.into());
                }
            }
        };
        ctx.endpoint = Some(index);
        if let Some(trace) = ctx.trace.as_mut() {
            let status = sent.as_ref().ok().map(|r| r.status().as_u16());
            // `host:port` only: an endpoint URL's path or query may hold a secret.
            let endpoint = self.route.endpoints()[index].uri();
            let address = endpoint.authority().map_or("", |a| {
                a.as_str()
                    .rsplit_once('@')
                    .map_or(a.as_str(), |(_, host)| host)
            });
            trace.forwarded(address, status);
        }
        // The standalone stream's answer is in (any status, or none): the session's requests
        // go on.
        if method == Method::GET
            && let Some(s) = &ctx.session
        {
            s.standalone().release();
        }
        sent
    }

    /// The request toward endpoint `index` for the client request of `ctx`, with `body`.
    fn upstream_request(
        &self,
        ctx: &RequestCtx,
        index: usize,
        body: Bytes,
    ) -> http::Request<Full<Bytes>> {
        let parts = &ctx.request.parts;
        let mut upstream_request = http::Request::new(Full::new(body));
        *upstream_request.method_mut() = parts.method.clone();
        *upstream_request.uri_mut() = self.upstreams[index].uri_for(parts.uri.query());
        self.upstream_headers(parts, upstream_request.headers_mut());
        if let Some(trace) = &ctx.trace {
            trace.inject_headers(upstream_request.headers_mut());
        }
        if ctx.filter.is_some() {
            // The interceptors read the answer: it must come as it is, not compressed.
            upstream_request
                .headers_mut()
                .remove(http::header::ACCEPT_ENCODING);
        }
        if let Some(s) = &ctx.session {
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
        upstream_request
    }

    /// **Account**: the session bookkeeping the upstream's answer calls for, before the client
    /// sees it. A session's request answered `404`, or its `DELETE` answered with success,
    /// ends the session; a successful `notifications/initialized` opens the session's
    /// standalone gate (its requests wait for the `GET` the client opens now); a successful
    /// legacy `initialize` answered with an upstream session id this client's session does not
    /// already use creates a session ([`RequestCtx::session`] from then on). Each is logged.
    ///
    /// Rejection (with the request's id): `session.max_sessions` reached while the
    /// `initialize` was upstream `503`/-32603; the session the upstream made is ended there
    /// (`DELETE`, best effort, logged).
    pub(super) async fn account(
        &self,
        ctx: &mut RequestCtx,
        response: http::Response<UpstreamBody>,
    ) -> Result<http::Response<UpstreamBody>, Reject> {
        let status = response.status();
        let method = &ctx.request.parts.method;
        if let Some(s) = &ctx.session {
            let ended = status == StatusCode::NOT_FOUND
                || (method == Method::DELETE && status.is_success());
            if ended && self.manager.end_session(s.id().as_str()).is_some() {
                tracing::info!(session = %s.id(), status = status.as_u16(), "session ended");
            }
        }
        // The upstream accepted `notifications/initialized`: the client opens its standalone
        // stream now, and the session's requests wait for it.
        if let Some(s) = &ctx.session
            && status.is_success()
            && ctx.mcp_method() == Some(INITIALIZED)
        {
            s.standalone().open();
        }
        // A successful `initialize` that the upstream answered with a session id it has not
        // used for this client's session starts a new session.
        if ctx.era == Era::Legacy
            && status.is_success()
            && ctx.is_initialize()
            && let Some(upstream_sid) = response.headers().get(&MCP_SESSION_ID)
            && ctx
                .session
                .as_ref()
                .is_none_or(|s| s.upstream_session_id() != upstream_sid)
        {
            let upstream_sid = headers::owned_value(upstream_sid);
            let endpoint = ctx.endpoint.unwrap_or_default();
            let created = match self.manager.create_session(
                upstream_sid.clone(),
                self.route.name().clone(),
                self.route.endpoints()[endpoint].url().clone(),
                &ctx.version,
            ) {
                Ok(created) => created,
                Err(err) => {
                    // The upstream made a session the client will never use (the cap was
                    // reached while this `initialize` was upstream): end it there now.
                    drop(response);
                    end_orphaned_upstream_session(
                        &self.upstreams[endpoint],
                        &upstream_sid,
                        &ctx.version,
                    )
                    .await;
                    return Err(err.into());
                }
            };
            if let Some(principal) = &ctx.request.principal {
                created.bind_to(principal.binding());
            }
            tracing::info!(
                session = %created.id(),
                protocol_version = %ctx.version,
                subject = ctx.request.principal.as_deref().map(|p| p.subject.as_str()),
                "session created",
            );
            ctx.session = Some(created);
        }
        Ok(response)
    }

    /// **Respond**: the client's answer from the upstream's. The head carries the upstream's
    /// status and end-to-end headers, `Mcp-Session-Id` rewritten to the proxy's session id
    /// (removed when the session ended), a `401`/`403`'s `WWW-Authenticate`
    /// `resource_metadata` rewritten to the relay's metadata URL
    /// ([`oauth::rewrite_challenges`]). A `text/event-stream` body gets a tracker
    /// ([`crate::session::SessionManager::open_stream`]) and the SSE headers, and is relayed:
    /// by a pump into the window and a reader of it for a legacy stream in a session, by an
    /// [`SseRelay`] otherwise. Any other body is read whole first when its `Content-Length` is
    /// at most [`BUFFERED_RESPONSE_BYTES`] (head and body in one write), streamed otherwise.
    /// Logs the request at debug ("forwarded").
    ///
    /// Rejections (with the request's id): a tracker that cannot be opened or attached
    /// `500`/-32603; a small body that breaks off `502`/-32603 or is not complete within
    /// `proxy.upstream_response_timeout` `504`/-32603 (the client gets a proper error instead of
    /// a cut-off answer).
    pub(super) async fn respond(
        self: &Arc<Self>,
        ctx: &RequestCtx,
        response: http::Response<UpstreamBody>,
    ) -> Result<Response, Reject> {
        let (mut head, upstream_body) = response.into_parts();
        let mut client_headers = HeaderMap::with_capacity(head.headers.len() + 1);
        headers::copy_end_to_end(&head.headers, &mut client_headers);
        // A 401/403 names the relay's metadata URL, not the upstream's.
        oauth::rewrite_challenges(
            head.status,
            &self.route,
            &ctx.request.parts,
            &mut client_headers,
        );
        let live_session = ctx.session.as_ref().filter(|s| !s.is_ended());
        if head.headers.contains_key(&MCP_SESSION_ID)
            && let Some(s) = live_session
            && let Ok(v) = HeaderValue::from_str(s.id().as_str())
        {
            client_headers.insert(&MCP_SESSION_ID, v);
        }
        let is_sse = crate::protocol::headers::is_event_stream(&head.headers);
        let body = if is_sse {
            sse_headers(&mut client_headers);
            self.stream_body(ctx, live_session, upstream_body)?
        } else {
            match ctx.filter.as_ref().filter(|f| f.wants_body()) {
                Some(filter) => {
                    let body = self.filtered_body(filter, upstream_body).await?;
                    client_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                    Body::from(body)
                }
                None => {
                    if let Some(len) = head.headers.get(header::CONTENT_LENGTH) {
                        client_headers.insert(header::CONTENT_LENGTH, len.clone());
                    }
                    self.json_body(upstream_body).await?
                }
            }
        };
        head.headers = client_headers;
        tracing::debug!(
            method = %ctx.request.parts.method,
            era = ctx.era.as_str(),
            mcp_method = ctx.mcp_method(),
            session = ctx.session.as_ref().map(|s| s.id().as_str()),
            status = head.status.as_u16(),
            sse = is_sse,
            "forwarded",
        );
        Ok(Response::from_parts(head, body))
    }

    /// The client body of an SSE answer (see [`Proxy::respond`]), its tracker opened in
    /// `live_session` (the request's session, unless it ended).
    fn stream_body(
        self: &Arc<Self>,
        ctx: &RequestCtx,
        live_session: Option<&Arc<Session>>,
        upstream_body: UpstreamBody,
    ) -> Result<Body, Reject> {
        let method = &ctx.request.parts.method;
        let kind = if method == Method::GET {
            StreamKind::Get
        } else {
            StreamKind::Post
        };
        let tracker = self
            .manager
            .open_stream(live_session, kind)
            .map_err(|e| Reject::Internal(e.to_string()))?;
        let stream_span = self
            .traces
            .as_ref()
            .zip(ctx.trace.as_ref())
            .map(|(traces, trace)| traces.stream(trace, &tracker.stream().to_string()));
        let body = match (ctx.era, live_session) {
            // Legacy streams survive dropped connections: a pump reads the upstream, the
            // client reads the tracker's window.
            (Era::Legacy, Some(s)) => {
                let reader = tracker
                    .attach(None)
                    .map_err(|e| Reject::Internal(e.to_string()))?;
                self.manager.stream_changed(&tracker);
                let mut resume_headers = HeaderMap::new();
                self.upstream_headers(&ctx.request.parts, &mut resume_headers);
                if ctx.filter.is_some() {
                    // A re-opened stream is read by the interceptors too: uncompressed.
                    resume_headers.remove(http::header::ACCEPT_ENCODING);
                }
                headers::own_values(&mut resume_headers);
                // The id whose response completes the stream: a POST's, not a batch's.
                let request_id = ctx
                    .request
                    .peek
                    .as_ref()
                    .filter(|p| method == Method::POST && !p.batch)
                    .and_then(|p| p.id.clone());
                let pump = pump::start(
                    pump::PumpContext {
                        streams: self.streams.clone(),
                        session: s.clone(),
                        tracker: tracker.clone(),
                        upstream: self.upstreams[ctx.endpoint.unwrap_or_default()].clone(),
                        resume_headers,
                        request_id,
                        filter: ctx.filter.clone(),
                    },
                    upstream_body,
                    reader,
                );
                pump::reader_body(tracker, reader, pump, self.streams.clone())
            }
            // Modern (and sessionless) streams: closing the client's stream closes the
            // upstream request at once.
            _ => Body::new(
                SseRelay::new(
                    upstream_body,
                    tracker,
                    self.manager.clone(),
                    self.stats.clone(),
                    self.config.max_event_bytes,
                    self.config.sse_keepalive,
                )
                .with_filter(ctx.filter.clone()),
            ),
        };
        Ok(match stream_span {
            Some(span) => Body::new(crate::telemetry::traces::Traced::new(body, span)),
            None => body,
        })
    }

    /// The client body of any other answer (see [`Proxy::respond`]).
    async fn json_body(&self, upstream_body: UpstreamBody) -> Result<Body, Reject> {
        // hyper has parsed the `Content-Length` already: an exact size hint.
        let small = http_body::Body::size_hint(&upstream_body)
            .exact()
            .is_some_and(|n| n <= BUFFERED_RESPONSE_BYTES);
        if !small {
            return Ok(Body::new(upstream_body));
        }
        // A small answer is read whole before the head goes out: head and body leave in one
        // write, and the upstream connection is back in the pool at once. A body that breaks
        // now still gets a proper 502 instead of a cut-off 200.
        let timeout = self.config.upstream_response_timeout;
        let bytes = tokio::time::timeout(timeout, upstream_body.collect())
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
            .map_err(UpstreamError::Body)?
            .to_bytes();
        Ok(Body::from(bytes))
    }

    /// The client body of a non-SSE answer whose messages the route's interceptors want:
    /// read whole (at most `proxy.max_event_bytes`, within
    /// `proxy.upstream_response_timeout`) and run through `filter`.
    ///
    /// Rejections: a larger answer `502`/-32603 ([`Reject::AnswerTooLarge`]: it is neither
    /// held whole nor passed unjudged); one that breaks off `502`, or is late `504`.
    async fn filtered_body(
        &self,
        filter: &super::intercept::ServerFilter,
        upstream_body: UpstreamBody,
    ) -> Result<Bytes, Reject> {
        let limit = self.config.max_event_bytes;
        let timeout = self.config.upstream_response_timeout;
        let bytes =
            match tokio::time::timeout(timeout, Limited::new(upstream_body, limit).collect()).await
            {
                Err(_) => return Err(UpstreamError::Timeout(timeout).into()),
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
                    ProxyStats::incr(&self.stats.answers_too_large);
                    return Err(Reject::AnswerTooLarge { limit });
                }
                Ok(Err(err)) => match err.downcast::<hyper::Error>() {
                    Ok(err) => return Err(UpstreamError::Body(*err).into()),
                    Err(err) => return Err(Reject::Internal(err.to_string())),
                },
            };
        Ok(filter.body(bytes))
    }

    /// Waits for the session's standalone stream to be established upstream (see
    /// [`crate::session::StandaloneGate`]), counting the wait and logging one that timed out.
    async fn await_standalone_stream(&self, session: &Session, mcp_method: Option<&str>) {
        let wait = self.manager.config().standalone_stream_wait;
        let stats = &self.stats;
        match session.standalone().wait(wait).await {
            GateWait::NotNeeded => {}
            GateWait::Released => ProxyStats::incr(&stats.standalone_waits),
            GateWait::TimedOut => {
                ProxyStats::incr(&stats.standalone_waits);
                ProxyStats::incr(&stats.standalone_wait_timeouts);
                tracing::debug!(
                    session = %session.id(),
                    mcp_method,
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
        let route = &self.route;
        match self
            .manager
            .restore_session(sid, protocol_version, route.name(), |url| {
                let i = route.endpoint_of(url)?;
                Some(route.endpoints()[i].url().clone())
            })
            .await
        {
            Ok(Some(session)) => {
                tracing::info!(session = %session.id(), "session restored from the store");
                Ok(session)
            }
            Ok(None) => Err(Reject::SessionNotFound),
            Err(err) => {
                tracing::warn!(
                    error = %format_args!("{err:#}"),
                    "could not look up a session in the store",
                );
                Err(Reject::StoreUnavailable(err.into()))
            }
        }
    }
}

/// Ends at the upstream (`DELETE`, best effort, logged) a session it created for an
/// `initialize` the proxy then refused, so it does not wait for the upstream's own expiry.
async fn end_orphaned_upstream_session(
    upstream: &Upstream,
    upstream_sid: &HeaderValue,
    version: &str,
) {
    match upstream.end_session_id(upstream_sid, version).await {
        Ok(status) => tracing::info!(
            status = status.as_u16(),
            "ended upstream a session the proxy refused",
        ),
        Err(err) => tracing::warn!(
            error = %ErrorChain(&err),
            "could not end upstream a session the proxy refused",
        ),
    }
}

/// On a resource-server route (`principal` is the request's token's), the session must be
/// bound to the same issuer and subject: another subject's token does not find it (`404`,
/// nothing touched, as the MCP security guidance asks against session hijacking); a session
/// bound to nobody (restored from the store: bindings are not persisted) neither.
fn check_binding(
    session: &Session,
    principal: Option<&super::auth::Principal>,
) -> Result<(), Reject> {
    match principal {
        None => Ok(()),
        Some(p) if session.bound_to() == Some(p.binding()) => Ok(()),
        Some(p) => {
            tracing::warn!(
                session = %session.id(),
                subject = %p.subject,
                "a token of another subject named this session; refused as not found",
            );
            Err(Reject::SessionNotFound)
        }
    }
}

/// Whether `err` shows a session's endpoint gone: it refused the connection, or a fresh
/// connection closed before the request was written. A connect that timed out (a live endpoint
/// short of CPU, its accept queue full) or a name that did not resolve says nothing of the
/// sessions the endpoint holds: those get the error, and keep their session.
fn endpoint_gone(err: &UpstreamError) -> bool {
    match err {
        UpstreamError::Unsent(_) => true,
        UpstreamError::Connect(source) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&**source);
            while let Some(e) = cause {
                if let Some(io) = e.downcast_ref::<std::io::Error>() {
                    return io.kind() == std::io::ErrorKind::ConnectionRefused;
                }
                cause = e.source();
            }
            false
        }
        _ => false,
    }
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
            // A flood of slow bodies does not flood the log.
            if let Some(total) = incr_sampled(&stats.request_body_timeouts) {
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
