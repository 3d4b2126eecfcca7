//! The data plane: an axum router serving the MCP endpoint (`POST`, `GET`, `DELETE`) and
//! forwarding each request to the upstream MCP server, era by era (DESIGN.md, "The protocol it
//! proxies"; PROTOCOL.md).
//!
//! One request in, one upstream request out. JSON answers and `202`s stream straight through;
//! `text/event-stream` answers go through an [`relay::SseRelay`]. Legacy sessions are mapped:
//! the client sees only the proxy's `Mcp-Session-Id`, the upstream only its own.
//!
//! A request passes named phases over one per-request context (`phases.rs`, DESIGN.md
//! "Request phases"): admit → resolve → forward → account → respond; a legacy stream
//! resumption leaves after resolve for `resume.rs`. `Proxy::serve` is that sequence; the axum
//! handler logs and answers a phase's refusal ([`error::Reject`]) once, with the request's id.

pub mod admit;
mod connector;

pub mod error;
pub mod headers;
mod phases;
pub mod pump;
pub mod relay;
mod resume;
pub mod upstream;

use std::sync::{Arc, atomic::Ordering};

use axum::{
    Router,
    extract::{Request, State},
    response::Response,
    routing::any,
};
use http::{HeaderMap, HeaderValue, header};
use serde_json::value::RawValue;

use crate::{
    config::ProxyConfig,
    session::{Session, SessionManager},
};
use error::Reject;
use headers::X_ACCEL_BUFFERING;
use upstream::{ErrorChain, Upstream, UpstreamConnections, UpstreamError};

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
                error = %ErrorChain(&err),
                "could not end expired session upstream",
            ),
        }
    }

    /// Serves one request through the phases ([`phases`]): admit → resolve → forward →
    /// account → respond, or admit → resolve → [`Proxy::resume`] for a legacy stream
    /// resumption. A phase's refusal ends the request; its answer carries the request's
    /// JSON-RPC id once the admit phase has read it.
    async fn serve(self: &Arc<Self>, request: Request) -> Result<Response, Failure> {
        let request = self.admit(request).await.map_err(Failure::without_id)?;
        let id = request.jsonrpc_id();
        let fail = |reject| Failure {
            reject,
            id: id.clone(),
        };
        let mut ctx = self.resolve(request).await.map_err(fail)?;
        if let Some((session, last_event_id)) = ctx.stream_resumption() {
            return self
                .resume(session, last_event_id, &ctx.request.parts.headers)
                .await
                .map_err(fail);
        }
        let response = self.forward(&mut ctx).await.map_err(fail)?;
        let response = self.account(&mut ctx, response).await.map_err(fail)?;
        self.respond(&ctx, response).await.map_err(fail)
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
async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    match proxy.serve(request).await {
        Ok(response) => response,
        Err(Failure { reject, id }) => {
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
                let error = ErrorChain(&reject);
                tracing::warn!(kind = reject.kind(), request_id, error = %error, "request failed");
            } else {
                let error = ErrorChain(&reject);
                tracing::debug!(
                    kind = reject.kind(),
                    request_id,
                    error = %error,
                    "request rejected by the proxy"
                );
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
