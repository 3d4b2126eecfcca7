//! The upstream client: HTTP/1.1 connections to the one upstream, kept in a small idle pool and
//! driven by whichever task is using them — the client connection's task for a JSON answer or a
//! modern SSE stream, a legacy stream's pump — so there is no task per upstream connection, none
//! per request, and no hand-off between tasks for a response or an SSE chunk. (hyper-util's
//! pooled client spawns a task for each connection and one more per request; the load harness
//! showed those hand-offs as the proxy's main cost, BENCHMARKS.md.)
//!
//! A connection goes back to the pool when its response body has been read to the end and it
//! can take another request; a body dropped earlier (the client went away, a stream was
//! cancelled) closes it, which is how an upstream sees a 2026-07-28 request cancelled. Idle
//! connections are polled by one light timer task per pool (started on the runtime of the
//! first connection pooled: each data-plane thread has its own pool) every [`REAP_PERIOD`]:
//! one the upstream closed is closed here too (no socket left in CLOSE-WAIT), as is one idle
//! past `proxy.upstream_idle_timeout`. One the upstream closed between two polls is still noticed when it
//! is taken, and a request it could not send is retried on another (never one already sent).

use std::{
    future::Future,
    pin::{Pin, pin},
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header, uri::PathAndQuery};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::{
    body::Incoming,
    client::conn::http1::{self, SendRequest},
};
use parking_lot::Mutex;
use tower_service::Service as _;

mod pool;
pub use pool::UpstreamBody;
use pool::{Conn, Pool};

use super::{
    connector::{QuickAckConnector, QuickAckStream},
    stats::ProxyStats,
};
use crate::{
    config::ProxyConfig,
    protocol::headers::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID},
    session::{EndUpstreamError, Session, UpstreamSessionEnder},
};

/// Idle connections kept for reuse (count); more are closed when they come back.
pub const MAX_IDLE_CONNECTIONS: usize = 512;

/// Longest period between two polls of a pool's idle connections for the upstream's close
/// (shorter when `proxy.upstream_idle_timeout` is: a quarter of it, at least 10 ms).
pub const REAP_PERIOD: Duration = Duration::from_secs(1);

/// The process-wide bound on open upstream connections (`proxy.max_upstream_connections`),
/// shared by every data-plane thread's client (pooled, in use, or held by a stream's pump)
/// and the main runtime's. Each connection holds a place from before its connect until its
/// socket is dropped; past the bound a new connect is refused
/// ([`UpstreamError::TooManyConnections`]) instead of failing on descriptor exhaustion.
#[derive(Debug)]
pub struct UpstreamConnections {
    max: usize,
    open: AtomicUsize,
    /// Notified (one waiter) when a connect is refused at the bound: a pump whose client left
    /// stops, to free its socket for live traffic.
    wanted: tokio::sync::Notify,
    /// Woken whenever a connection's place is given back.
    freed: tokio::sync::Notify,
}

impl UpstreamConnections {
    /// A bound of `max` connections (`usize::MAX`: unbounded).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: AtomicUsize::new(0),
            wanted: tokio::sync::Notify::new(),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// Upstream connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// At the bound: asks one stream nobody reads to give way (one per connect, so a burst
    /// does not end every lingering stream; with none lingering, the next one to linger gives
    /// way at once) and waits up to [`GIVE_WAY_WAIT`] for a place.
    async fn give_way(self: &Arc<Self>) -> Option<ConnPlace> {
        let freed = self.freed.notified();
        let mut freed = pin!(freed);
        freed.as_mut().enable();
        self.wanted.notify_one();
        if let Some(place) = self.try_acquire() {
            return Some(place);
        }
        let deadline = tokio::time::Instant::now() + GIVE_WAY_WAIT;
        loop {
            tokio::time::timeout_at(deadline, freed.as_mut())
                .await
                .ok()?;
            if let Some(place) = self.try_acquire() {
                return Some(place);
            }
            // Another connect took the place: wait for the next, within the same deadline.
            freed.set(self.freed.notified());
            freed.as_mut().enable();
            if let Some(place) = self.try_acquire() {
                return Some(place);
            }
        }
    }

    /// A place for one more connection, unless `max` are open.
    fn try_acquire(self: &Arc<Self>) -> Option<ConnPlace> {
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= self.max {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(ConnPlace(self.clone())),
                Err(now) => open = now,
            }
        }
    }
}

/// One upstream connection's place in [`UpstreamConnections`], given back when dropped.
struct ConnPlace(Arc<UpstreamConnections>);

impl Drop for ConnPlace {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.freed.notify_waiters();
    }
}

/// How long a connect at the bound waits for a place (a lingering pump giving way, or any
/// connection closing) before it is refused.
pub const GIVE_WAY_WAIT: Duration = Duration::from_millis(100);

/// The upstream client bound to one upstream MCP endpoint.
#[derive(Debug, Clone)]
pub struct Upstream {
    connector: QuickAckConnector,
    /// For an `https://` endpoint: the TLS client and the name its certificate must carry.
    tls: Option<UpstreamTls>,
    pool: Arc<Pool>,
    connections: Arc<UpstreamConnections>,
    endpoint: Uri,
    /// `Host` for every upstream request: the endpoint's authority.
    host: HeaderValue,
    url: Arc<str>,
    response_timeout: Duration,
}

impl Upstream {
    /// A client for `config.upstream` (an `http://` URL) with the configured timeouts, its
    /// connections counted in (and bounded by) `connections`, its closed idle connections in
    /// `stats` (`upstream_idle_closed`).
    pub fn new(
        config: &ProxyConfig,
        connections: Arc<UpstreamConnections>,
        stats: Arc<ProxyStats>,
    ) -> Self {
        Self::for_endpoint(config, config.upstream.clone(), connections, stats)
    }

    /// [`Upstream::new`] for the endpoint `endpoint` (an `http://` URL) of a route whose
    /// settings are `config`.
    pub fn for_endpoint(
        config: &ProxyConfig,
        endpoint: Uri,
        connections: Arc<UpstreamConnections>,
        stats: Arc<ProxyStats>,
    ) -> Self {
        let connector = QuickAckConnector::upstream(
            config.upstream_connect_timeout,
            config.upstream_tcp_keepalive,
        );
        let tls = (endpoint.scheme_str() == Some("https")).then(|| {
            UpstreamTls::new(
                config.upstream_ca_file.as_deref(),
                &endpoint,
                config.upstream_connect_timeout,
            )
        });
        let host = endpoint
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| HeaderValue::from_static("localhost"));
        Self {
            connector,
            tls,
            pool: Arc::new(Pool::new(config.upstream_idle_timeout, stats)),
            connections,
            host,
            url: {
                let url = endpoint.to_string();
                crate::config::file::redact_url(&url).unwrap_or(url).into()
            },
            endpoint,
            response_timeout: config.upstream_response_timeout,
        }
    }

    /// Resolves when a connect was refused at `proxy.max_upstream_connections` (any thread) and
    /// this waiter is the one picked (one per refusal): a holder of a connection nobody needs
    /// now (a lingering pump) frees it.
    pub fn connection_wanted(&self) -> tokio::sync::futures::Notified<'_> {
        self.connections.wanted.notified()
    }

    /// Whether `proxy.max_upstream_connections` connections are open now.
    pub fn at_bound(&self) -> bool {
        self.connections.open() >= self.connections.max
    }

    /// The upstream endpoint URL, as sessions record it and logs show it: any password in it
    /// is masked.
    pub fn url(&self) -> &Arc<str> {
        &self.url
    }

    /// The upstream URI for a client request whose query string is `query`: the endpoint's own
    /// query (if any) wins; otherwise the client's passes through.
    pub fn uri_for(&self, query: Option<&str>) -> Uri {
        let Some(query) = query.filter(|_| self.endpoint.query().is_none()) else {
            return self.endpoint.clone();
        };
        let mut parts = self.endpoint.clone().into_parts();
        let pq = format!("{}?{query}", self.endpoint.path());
        match PathAndQuery::try_from(pq) {
            Ok(pq) => {
                parts.path_and_query = Some(pq);
                Uri::from_parts(parts).unwrap_or_else(|_| self.endpoint.clone())
            }
            Err(_) => self.endpoint.clone(),
        }
    }

    /// Sends one request and waits for the response head, up to the response timeout. The
    /// request goes out in origin form with `Host` set to the upstream's authority. Errors:
    /// [`UpstreamError::TooManyConnections`], [`UpstreamError::Connect`],
    /// [`UpstreamError::Exchange`], [`UpstreamError::Timeout`] (the response timeout).
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let target = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(target);
        request
            .headers_mut()
            .insert(header::HOST, self.host.clone());
        match tokio::time::timeout(self.response_timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout(self.response_timeout)),
        }
    }

    /// One request on a pooled connection, or on a new one; a request a reused connection could
    /// not send (the upstream closed it while idle) is tried again on the next.
    async fn exchange(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        loop {
            let (mut conn, reused) = match self.pool.take() {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            if let Err(err) = conn.ready().await {
                if reused {
                    continue;
                }
                return Err(UpstreamError::Exchange(err));
            }
            let sent = conn.sender.try_send_request(request);
            match conn.drive(sent).await {
                Ok(response) => {
                    let pool = self.pool.clone();
                    return Ok(response.map(|body| UpstreamBody {
                        inner: body,
                        conn: Some(conn),
                        pool,
                        outstanding: None,
                    }));
                }
                Err(mut err) => match err.take_message() {
                    Some(unsent) if reused => request = unsent,
                    // Not written on a new connection: the upstream cannot have seen it.
                    Some(_) => return Err(UpstreamError::Unsent(err.into_error())),
                    None => {
                        return Err(UpstreamError::Exchange(err.into_error()));
                    }
                },
            }
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let place = match self.connections.try_acquire() {
            Some(place) => place,
            None => self
                .connections
                .give_way()
                .await
                .ok_or(UpstreamError::TooManyConnections {
                    max: self.connections.max,
                })?,
        };
        let mut io = self
            .connector
            .clone()
            .call(self.endpoint.clone())
            .await
            .map_err(|e| UpstreamError::Connect(e.into()))?;
        if let Some(tls) = &self.tls {
            io = tls.handshake(io).await?;
        }
        let (sender, driver) = http1::handshake(io)
            .await
            .map_err(UpstreamError::Exchange)?;
        Ok(Conn {
            sender,
            driver: Some(Box::pin(driver)),
            _place: place,
        })
    }

    /// Ends `session` at the upstream: `DELETE` with its upstream `Mcp-Session-Id` (and its
    /// `MCP-Protocol-Version`). Returns the upstream's status.
    pub async fn end_session(&self, session: &Session) -> Result<StatusCode, UpstreamError> {
        self.end_session_id(session.upstream_session_id(), &session.protocol_version())
            .await
    }

    /// `DELETE` with `Mcp-Session-Id: upstream_session_id` and `MCP-Protocol-Version:
    /// protocol_version`: ends a session the upstream knows by that id. Returns its status.
    pub async fn end_session_id(
        &self,
        upstream_session_id: &HeaderValue,
        protocol_version: &str,
    ) -> Result<StatusCode, UpstreamError> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.method_mut() = Method::DELETE;
        *request.uri_mut() = self.uri_for(None);
        let h = request.headers_mut();
        h.insert(&MCP_SESSION_ID, upstream_session_id.clone());
        if let Ok(v) = HeaderValue::from_str(protocol_version) {
            h.insert(&MCP_PROTOCOL_VERSION, v);
        }
        Ok(self.send(request).await?.status())
    }
}

/// The one path by which sessions end upstream when the proxy ends them (idle expiry, an
/// operator's `TerminateSession`): a session that names another upstream is refused, nothing
/// sent (a record claimed from a shared store may name another deployment's upstream: its id
/// means nothing to ours); else `DELETE`. The error is the whole chain: it goes to the log
/// and the operator (`TerminateSessionResponse.upstream_error`), never to an MCP client.
#[async_trait]
impl UpstreamSessionEnder for Upstream {
    async fn end_upstream_session(
        &self,
        session: &Session,
    ) -> Result<StatusCode, EndUpstreamError> {
        if session.upstream() != &*self.url {
            // Whoever wrote the record may not have masked it: masked here, for the log.
            let named = session.upstream();
            let masked = crate::config::file::redact_url(named).unwrap_or_else(|| named.to_owned());
            return Err(EndUpstreamError::OtherUpstream(masked));
        }
        self.end_session(session)
            .await
            .map_err(|e| EndUpstreamError::Failed(error_chain(&e)))
    }
}

/// The TLS side of an `https://` endpoint's client.
#[derive(Clone)]
struct UpstreamTls {
    /// `None` when `proxy.upstream_ca_file` could not be loaded any more (it was checked at
    /// load): every connect then fails with that error instead of trusting other roots.
    connector: Result<tokio_rustls::TlsConnector, Arc<str>>,
    server_name: Result<rustls_pki_types::ServerName<'static>, Arc<str>>,
    /// `proxy.upstream_connect_timeout`, for the handshake too.
    timeout: Duration,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    fn new(ca_file: Option<&std::path::Path>, endpoint: &Uri, timeout: Duration) -> Self {
        let connector = crate::tls::client_config(ca_file)
            .map(tokio_rustls::TlsConnector::from)
            .map_err(|e| {
                tracing::error!(error = %e, "proxy.upstream_ca_file: https:// upstreams cannot be verified");
                Arc::from(e.to_string())
            });
        let host = endpoint.host().unwrap_or_default();
        // An IPv6 literal is bracketed in a URI, not in a server name.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = rustls_pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| Arc::from(format!("{host:?} is not a TLS server name: {e}")));
        Self {
            connector,
            server_name,
            timeout,
        }
    }

    /// The TLS handshake over `io`, within the connect's error class and timeout: a handshake
    /// that fails (an untrusted certificate, a peer that is not TLS) or takes longer than
    /// `proxy.upstream_connect_timeout` is [`UpstreamError::Connect`], nothing having been
    /// sent.
    async fn handshake(&self, io: QuickAckStream) -> Result<QuickAckStream, UpstreamError> {
        let fail = |message: &str| UpstreamError::Connect(message.to_owned().into());
        let connector = self.connector.as_ref().map_err(|e| fail(e))?;
        let name = self.server_name.as_ref().map_err(|e| fail(e))?;
        match tokio::time::timeout(self.timeout, io.into_tls(connector, name.clone())).await {
            Ok(Ok(io)) => Ok(io),
            Ok(Err(err)) => Err(UpstreamError::Connect(Box::new(TlsHandshake(err)))),
            Err(_) => Err(fail(
                "TLS handshake with the upstream timed out (proxy.upstream_connect_timeout_ms)",
            )),
        }
    }
}

/// A failed TLS handshake with an `https://` upstream (the rustls error inside).
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with the upstream failed: {0}")]
struct TlsHandshake(#[source] std::io::Error);

/// Why an exchange with the upstream failed, with the underlying error as its `source` (the
/// socket or HTTP error, for the log: [`error_chain`]). The data plane maps it to the client's
/// answer once, at its edge ([`Reject::Upstream`](super::error::Reject::Upstream)), where
/// the client reads a stable message per kind and never this text.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// `proxy.max_upstream_connections` (`max`) upstream connections are open, none idle in
    /// this pool, and none was freed within [`GIVE_WAY_WAIT`]: nothing was sent. Client: `503`.
    #[error("{max} upstream connections open (proxy.max_upstream_connections)")]
    TooManyConnections {
        /// The bound, in connections.
        max: usize,
    },
    /// No TCP connection could be made to the upstream (refused, unreachable, past
    /// `proxy.upstream_connect_timeout`): nothing was sent. Client: `502`.
    #[error("cannot connect to the upstream MCP server")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP/1.1 exchange failed before a response head: the handshake, a connection that
    /// closed or reset, a head that is not HTTP. The request may have reached the upstream.
    /// Client: `502`.
    #[error("the exchange with the upstream MCP server failed")]
    Exchange(#[source] hyper::Error),
    /// A new connection closed or reset before the request was written: the upstream cannot
    /// have seen it (it may be retried elsewhere). Client: `502`.
    #[error("the upstream MCP server closed the connection before the request was sent")]
    Unsent(#[source] hyper::Error),
    /// No response head within `proxy.upstream_response_timeout` (the duration carried), or a
    /// small answer read whole ([`super::BUFFERED_RESPONSE_BYTES`]) not complete within it.
    /// Client: `504`.
    #[error("the upstream MCP server did not answer within {0:?}")]
    Timeout(Duration),
    /// The response body broke off before its end, while the proxy read it whole (a small
    /// answer, before the client got the head). Client: `502`.
    #[error("the upstream MCP server's response body broke off")]
    Body(#[source] hyper::Error),
}

/// An error and its sources, joined with `: `.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    ErrorChain(err).to_string()
}

/// Displays an error and its sources, joined with `: ` (as [`error_chain`], formatted only
/// when written: for log fields, `error = %ErrorChain(&err)`).
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use http::Uri;

    use super::*;
    use crate::session::{PersistenceWorker, SessionConfig, SessionManager, WorkerConfig};

    /// A session naming another upstream (a record another deployment wrote to a shared store)
    /// is not ended at ours, and the error that goes to the log masks any password the record
    /// carries, whoever wrote it.
    #[tokio::test]
    async fn a_session_naming_another_upstream_is_refused_with_its_password_masked() {
        let (_worker, handle) = PersistenceWorker::new(
            Arc::new(crate::session::store::MemoryStore::new()),
            WorkerConfig::default(),
        );
        let manager = SessionManager::new(SessionConfig::default(), handle);
        let session = manager
            .create_session(
                HeaderValue::from_static("up-1"),
                "/mcp".into(),
                "http://ops:hunter2@elsewhere:9/mcp".into(),
                "2025-11-25",
            )
            .expect("a session");
        let config = ProxyConfig::new(Uri::from_static("http://127.0.0.1:9/mcp"));
        let upstream = Upstream::new(&config, UpstreamConnections::new(1), Arc::default());
        let err = upstream
            .end_upstream_session(&session)
            .await
            .expect_err("another upstream's session");
        assert!(matches!(err, EndUpstreamError::OtherUpstream(_)), "{err:?}");
        let shown = err.to_string();
        assert!(shown.contains("elsewhere:9"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
