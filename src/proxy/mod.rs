//! The data plane: an axum router serving the MCP endpoint (`POST`, `GET`, `DELETE`) and
//! forwarding each request to the upstream MCP server, era by era (DESIGN.md, "The protocol it
//! proxies"; PROTOCOL.md).
//!
//! One request in, one upstream request out. JSON answers and `202`s stream straight through;
//! `text/event-stream` answers go through an [`relay::SseRelay`]. Legacy sessions are mapped:
//! the client sees only the proxy's `Mcp-Session-Id`, the upstream only its own.
//!
//! A request passes named phases over one per-request context (`phases.rs`, DESIGN.md
//! "Request phases"): admit → resolve → intercept → forward → account → respond; a legacy stream
//! resumption leaves after resolve for `resume.rs`. `Proxy::serve` is that sequence; the axum
//! handler logs and answers a phase's refusal ([`error::Reject`]) once, with the request's id.

pub mod admit;
pub mod auth;
mod connector;

pub mod error;
pub mod forwarded;
pub mod headers;
pub mod intercept;
pub mod keepalive;
pub mod oauth;
mod phases;
pub mod pump;
pub mod relay;
mod resume;
pub mod route;
pub mod stats;
pub mod upstream;

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    response::Response,
    routing::any,
};
use http::{HeaderMap, HeaderValue, header};
use serde_json::value::RawValue;

use crate::counters::incr_sampled;
use crate::{config::ProxyConfig, session::SessionManager};
use error::Reject;
use headers::X_ACCEL_BUFFERING;
use pump::{LegacyStreams, Pumps};
use stats::ProxyStats;
use upstream::{ErrorChain, Upstream, UpstreamConnections, UpstreamError};

/// What every data-plane thread's [`Proxy`] of one daemon shares: the bound on upstream
/// connections, the data plane's counters, and its stream pumps (so shutdown stops and
/// awaits them all). The daemon builds one ([`Shared::new`]) and reads the counters and pumps
/// through it.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Upstream connections open in the process, and their bound.
    pub connections: Arc<UpstreamConnections>,
    /// The data plane's counters.
    pub stats: Arc<ProxyStats>,
    /// The legacy streams' pumps.
    pub pumps: Arc<Pumps>,
    /// The tracer (`[traces]`); `None`: traces are off, and cost nothing.
    pub traces: Option<Arc<crate::telemetry::traces::Traces>>,
}

impl Shared {
    /// Shared state whose upstream connections are bounded by `max_upstream_connections`
    /// (`proxy.max_upstream_connections`; 0: unbounded).
    pub fn new(max_upstream_connections: usize) -> Self {
        let max = match max_upstream_connections {
            0 => usize::MAX,
            max => max,
        };
        Self {
            connections: UpstreamConnections::new(max),
            stats: Arc::default(),
            pumps: Arc::default(),
            traces: None,
        }
    }

    /// The upstream client of `config`, its connections counted in this bound and its closed
    /// idle connections in these counters: the one a daemon ends sessions upstream with.
    pub fn upstream(&self, config: &ProxyConfig) -> Upstream {
        Upstream::new(config, self.connections.clone(), self.stats.clone())
    }
}

/// The data plane's state for one route on one thread: the route (its settings and pool), an
/// upstream client per endpoint (one connection pool per data-plane thread, so connections
/// stay on the runtime that drives them) and what the threads share.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    manager: Arc<SessionManager>,
    route: Arc<route::Route>,
    /// One client per endpoint of the route, in [`route::Route::endpoints`] order.
    upstreams: Vec<Upstream>,
    admission: admit::Admission,
    /// `Forwarded` and `X-Forwarded-*` toward the upstream.
    forwarded: forwarded::ForwardedPolicy,
    stats: Arc<ProxyStats>,
    /// What the legacy streams' pumps and readers use.
    streams: Arc<LegacyStreams>,
    /// The tracer, when traces are on.
    traces: Option<Arc<crate::telemetry::traces::Traces>>,
}

impl Proxy {
    /// A data plane forwarding `config.endpoint_path` to `config.upstream` (one route of one
    /// endpoint), with sessions held by `manager`, sharing nothing with another proxy: its
    /// upstream connections are bounded by `config.max_upstream_connections` alone. A daemon's
    /// threads share one [`Shared`] and serve every route ([`route::ThreadRoutes`]).
    pub fn new(config: ProxyConfig, manager: Arc<SessionManager>) -> Self {
        let shared = Shared::new(config.max_upstream_connections);
        Self::with_shared(config, manager, &shared)
    }

    /// [`Proxy::new`], its upstream connections counted in (and bounded by), its counters and
    /// pumps kept in, `shared`, as other proxies of the process do.
    pub fn with_shared(config: ProxyConfig, manager: Arc<SessionManager>, shared: &Shared) -> Self {
        Self::for_route(route::Route::single(&config), manager, shared)
    }

    /// The proxy of `route` on one thread: a client per endpoint of the route, its connections
    /// counted in (and bounded by), its counters and pumps kept in, `shared`.
    pub fn for_route(
        route: Arc<route::Route>,
        manager: Arc<SessionManager>,
        shared: &Shared,
    ) -> Self {
        let config = route.config().clone();
        let upstreams = route
            .endpoints()
            .iter()
            .map(|e| {
                Upstream::for_endpoint(
                    &config,
                    e.uri().clone(),
                    shared.connections.clone(),
                    shared.stats.clone(),
                )
            })
            .collect();
        let streams = Arc::new(LegacyStreams {
            manager: manager.clone(),
            stats: shared.stats.clone(),
            pumps: shared.pumps.clone(),
            max_event_bytes: config.max_event_bytes,
            sse_keepalive: config.sse_keepalive,
        });
        Self {
            admission: admit::Admission::new(&config),
            forwarded: forwarded::ForwardedPolicy::new(&config),
            config,
            manager,
            route,
            upstreams,
            stats: shared.stats.clone(),
            streams,
            traces: shared.traces.clone(),
        }
    }

    /// The route this proxy serves.
    pub fn route(&self) -> &Arc<route::Route> {
        &self.route
    }

    /// The data plane's counters.
    pub fn stats(&self) -> &Arc<ProxyStats> {
        &self.stats
    }

    /// What this proxy lends its legacy streams' pumps and readers ([`pump::reader_body`]).
    pub fn legacy_streams(&self) -> &Arc<LegacyStreams> {
        &self.streams
    }

    /// The headers of a request toward the upstream on behalf of the client request `client`:
    /// its end-to-end headers ([`headers::copy_end_to_end`]) with the forwarded ones as
    /// `proxy.forwarded` says ([`forwarded::ForwardedPolicy::apply`]).
    fn upstream_headers(&self, client: &http::request::Parts, upstream: &mut HeaderMap) {
        headers::copy_end_to_end(&client.headers, upstream);
        if let Some(auth) = self.route.auth() {
            auth.upstream_authorization(upstream);
        }
        self.forwarded.apply(client, upstream);
    }

    /// The axum router: the MCP endpoint at the configured path (matched exactly); any other
    /// path gets `404` with a JSON-RPC error ([`Reject::NoEndpoint`]).
    pub fn router(self: Arc<Self>) -> Router {
        let path = self.config.endpoint_path.clone();
        Router::new()
            .route(&path, any(handle))
            .fallback(no_endpoint)
            .with_state(self)
    }

    /// Serves one request through the phases ([`phases`]): admit → resolve → intercept
    /// ([`intercept`]; it may answer itself) → forward → account → respond, or admit →
    /// resolve → [`Proxy::resume`] for a legacy stream resumption. A phase's refusal ends the request; its answer carries the request's
    /// JSON-RPC id once the admit phase has read it.
    async fn serve(self: &Arc<Self>, request: Request) -> Result<Response, Failure> {
        let mut request = self.admit(request).await.map_err(Failure::without_id)?;
        let id = request.jsonrpc_id();
        let fail = |reject| Failure {
            reject,
            id: id.clone(),
        };
        self.authenticate(&mut request).await.map_err(fail)?;
        let mut ctx = self.resolve(request).await.map_err(fail)?;
        if let Some((session, last_event_id)) = ctx.stream_resumption()
            && let Some(endpoint) = ctx.endpoint
        {
            return self
                .resume(
                    session,
                    last_event_id,
                    &ctx.request.parts,
                    &self.upstreams[endpoint],
                )
                .await
                .map_err(fail);
        }
        self.begin_trace(&mut ctx);
        if let Some(answer) = self.intercept(&mut ctx) {
            if let Some(mut trace) = ctx.trace.take() {
                trace.answered_here("interceptor");
                trace.responded(answer.status().as_u16());
            }
            return Ok(answer);
        }
        self.trace_forward(&mut ctx);
        // A refusal from here on ends the request's spans with its status.
        let traced = |ctx: &mut phases::RequestCtx, reject: Reject| {
            if let Some(trace) = ctx.trace.take() {
                trace.responded(reject.status_and_code().0.as_u16());
            }
            fail(reject)
        };
        let response = match self.forward(&mut ctx).await {
            Ok(response) => response,
            Err(reject) => return Err(traced(&mut ctx, reject)),
        };
        let response = match self.account(&mut ctx, response).await {
            Ok(response) => response,
            Err(reject) => return Err(traced(&mut ctx, reject)),
        };
        let response = match self.respond(&ctx, response).await {
            Ok(response) => response,
            Err(reject) => return Err(traced(&mut ctx, reject)),
        };
        if let Some(trace) = ctx.trace.take() {
            trace.responded(response.status().as_u16());
        }
        Ok(response)
    }

    /// Begins the request's server span when traces are on ([`crate::telemetry::traces`]):
    /// its parent from `params._meta` (read by the admit phase's peek) or the headers.
    fn begin_trace(&self, ctx: &mut phases::RequestCtx) {
        let Some(traces) = &self.traces else {
            return;
        };
        let parts = &ctx.request.parts;
        let peek = ctx.request.peek.as_ref();
        let trace = traces.begin(&crate::telemetry::traces::TraceStart {
            headers: &parts.headers,
            meta_traceparent: peek.and_then(|p| p.traceparent.as_deref()),
            meta_tracestate: peek.and_then(|p| p.tracestate.as_deref()),
            method: peek.and_then(|p| p.method.as_deref()),
            name: peek.and_then(|p| p.name.as_deref()),
            id: peek.and_then(|p| p.id.as_deref()).map(RawValue::get),
            http_method: parts.method.as_str(),
            route: self.route.name(),
            session: ctx.session.as_ref().map(|s| s.id().as_str()),
            era: ctx.era.as_str(),
        });
        ctx.trace = Some(trace);
    }

    /// Begins the request's client span, and puts its context in the message's
    /// `params._meta` (one request or notification; spliced, every other byte kept) so an SDK
    /// server's span is its child; the headers get it in the forward phase.
    fn trace_forward(&self, ctx: &mut phases::RequestCtx) {
        let (Some(traces), Some(trace)) = (&self.traces, ctx.trace.as_mut()) else {
            return;
        };
        traces.start_forward(trace);
        if ctx.request.parts.method == http::Method::POST
            && ctx.request.peek.as_ref().is_some_and(|p| !p.batch)
            && let Some(body) = trace.inject_message(&ctx.request.body)
        {
            ctx.request.body = body;
        }
    }
}

/// Why [`Proxy::serve`] answered a request itself: the condition, and the request's JSON-RPC id
/// (raw JSON text) when the admit phase read one.
struct Failure {
    reject: Reject,
    id: Option<Box<RawValue>>,
}

impl Failure {
    /// A refusal of the admit phase, before any id is known.
    fn without_id(reject: Reject) -> Self {
        Self { reject, id: None }
    }
}

/// Largest non-SSE upstream answer (by `Content-Length`, bytes) read whole before the client gets
/// its head, so head and body go out in one write; larger or unsized answers are streamed.
pub const BUFFERED_RESPONSE_BYTES: u64 = 256 * 1024;

/// The axum handler: serves the request, or answers with the proxy's own error.
pub(crate) async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    match proxy.serve(request).await {
        Ok(response) => response,
        Err(Failure { reject, id }) => {
            // The client reads a short message; the detail is logged here, with the request id.
            log_reject(&proxy, &reject, id.as_deref().map(RawValue::get));
            reject.into_response_with_id(id.as_deref())
        }
    }
}

/// Logs a refusal once, with the request's JSON-RPC id when known: a warning with the cause
/// chain when it is the proxy's or the upstream's fault (the upstream connection bound at
/// powers of two), at debug otherwise.
fn log_reject(proxy: &Proxy, reject: &Reject, request_id: Option<&str>) {
    if let Reject::Upstream(UpstreamError::TooManyConnections { max }) = reject {
        if let Some(total) = incr_sampled(&proxy.stats.upstream_connections_refused) {
            tracing::warn!(
                max_upstream_connections = max,
                total,
                request_id,
                "upstream connection bound reached (proxy.max_upstream_connections); \
                 refusing requests that need a new one",
            );
        }
    } else if reject.is_server_side() {
        let error = ErrorChain(reject);
        tracing::warn!(kind = reject.kind(), request_id, error = %error, "request failed");
    } else {
        let error = ErrorChain(reject);
        tracing::debug!(
            kind = reject.kind(),
            request_id,
            error = %error,
            "request rejected by the proxy"
        );
    }
}

/// The answer on a path that names no MCP endpoint.
pub(crate) async fn no_endpoint(request: Request) -> Response {
    let path: String = request.uri().path().chars().take(256).collect();
    let reject = Reject::NoEndpoint(path);
    tracing::debug!(kind = reject.kind(), error = %reject, "request rejected by the proxy");
    reject.into_response_with_id(None)
}

/// Headers every SSE answer carries: no buffering by intermediaries, no caching.
fn sse_headers(headers: &mut HeaderMap) {
    headers.insert(&X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
}
