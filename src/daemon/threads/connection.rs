//! One client connection of a data-plane thread: counted open on its thread while it lives,
//! served by hyper under a light monitor (polled in the connection's own task) that closes it
//! when a request head takes longer than `header_read_timeout` or it has had no request in
//! flight for `keep_alive_idle_timeout` (see the parent module for the rules and why).

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body};
use http_body_util::BodyExt;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::Notify,
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::{EdgeLimits, GRACEFUL_CLOSE};
use crate::{
    counters::incr_sampled,
    proxy::{
        forwarded::{ClientAddr, ClientTls},
        stats::ProxyStats,
    },
    tls::{ServerTls, Transport},
};

/// A connection's place in its thread's open count: counted when made, given back when
/// dropped.
pub(super) struct Uncount(Arc<AtomicUsize>);

impl Uncount {
    pub(super) fn count(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open.clone())
    }
}

impl Drop for Uncount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client connection, counted open on its thread while it lives.
pub(super) struct Counted {
    io: Transport,
    _open: Uncount,
    /// What the connection's monitor watches.
    conn: Arc<ConnState>,
}

impl Counted {
    /// `io`, holding its place `open` in its thread's count, with a fresh monitor state.
    pub(super) fn new(io: TcpStream, open: Uncount) -> Self {
        Self {
            io: Transport::Plain(io),
            _open: open,
            conn: Arc::new(ConnState::new()),
        }
    }

    /// The TLS handshake with `acceptor` (`[tls]`): the same connection, its monitor and
    /// place kept, speaking TLS. Errors: the handshake failed (rustls's message).
    async fn into_tls(self, acceptor: tokio_rustls::TlsAcceptor) -> io::Result<Self> {
        let Transport::Plain(tcp) = self.io else {
            return Err(io::Error::other("TLS over TLS"));
        };
        let tls = acceptor.accept(tcp).await?;
        Ok(Self {
            io: Transport::Tls(Box::new(tls.into())),
            _open: self._open,
            conn: self.conn,
        })
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.read(&buf.filled()[before..]);
        }
        polled
    }
}

/// The h2 client preface (RFC 9113, section 3.4): a connection that opens with all of it
/// speaks HTTP/2, whose frames are no request head in progress. Until all 24 bytes are seen
/// (a client's first read may carry fewer) the connection is under the head timer.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// [`ConnState::proto`] once the connection is known to speak HTTP/1 (values below are how
/// many preface bytes matched so far).
const PROTO_HTTP1: u8 = 254;
/// [`ConnState::proto`] once the whole h2 preface was seen.
const PROTO_HTTP2: u8 = 255;

/// One client connection's state as its monitor sees it (all on the connection's thread; the
/// atomics are only there because hyper wants `Send` services).
struct ConnState {
    /// When the connection was taken over: timestamps below are milliseconds since then.
    start: Instant,
    /// Requests whose response body is not done yet.
    in_flight: AtomicUsize,
    /// When `in_flight` last dropped to 0 (or the connection opened).
    idle_since_ms: AtomicU64,
    /// Whether a request head is in progress: from accept, from the first byte after the
    /// connection went idle, or from going idle with bytes already read for the next head.
    head_started: AtomicBool,
    /// When the head timer started.
    head_started_ms: AtomicU64,
    /// Bytes arrived while a request was in flight and after its body ended (or it has none):
    /// the next head has started, pipelined.
    read_while_busy: AtomicBool,
    /// The protocol: how many bytes of [`H2_PREFACE`] matched so far, or [`PROTO_HTTP1`] /
    /// [`PROTO_HTTP2`] once decided (HTTP/2 has no head timeout).
    proto: AtomicU8,
    /// Wakes the monitor when the connection turns idle or a head starts.
    changed: Notify,
}

impl ConnState {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            // The head timer runs from accept: a connection that sends nothing is cut by it.
            head_started: AtomicBool::new(true),
            head_started_ms: AtomicU64::new(0),
            read_while_busy: AtomicBool::new(false),
            proto: AtomicU8::new(0),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// Bytes arrived from the client.
    fn read(&self, bytes: &[u8]) {
        let mut proto = self.proto.load(Ordering::Relaxed);
        if proto < PROTO_HTTP1 {
            let matched = usize::from(proto);
            let n = (H2_PREFACE.len() - matched).min(bytes.len());
            proto = if bytes[..n] != H2_PREFACE[matched..matched + n] {
                PROTO_HTTP1
            } else if matched + n == H2_PREFACE.len() {
                // HTTP/2: the head timer that ran since accept stops; the idle timer remains.
                self.head_started.store(false, Ordering::Relaxed);
                self.changed.notify_one();
                PROTO_HTTP2
            } else {
                u8::try_from(matched + n).unwrap_or(PROTO_HTTP1)
            };
            self.proto.store(proto, Ordering::Relaxed);
        }
        if proto == PROTO_HTTP2 {
            return;
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            self.read_while_busy.store(true, Ordering::Relaxed);
            return;
        }
        if !self.head_started.swap(true, Ordering::Relaxed) {
            self.head_started_ms.store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// A request reached the service (its head is complete).
    fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(false, Ordering::Relaxed);
        self.read_while_busy.store(false, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// A request's body was read to its end: bytes read after this belong to the next head.
    fn body_done(&self) {
        self.read_while_busy.store(false, Ordering::Relaxed);
    }

    /// What to do next: the next deadline, or that one has passed.
    fn check(&self, limits: &EdgeLimits, now: Instant) -> Check {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Check::Busy;
        }
        if self.head_started.load(Ordering::Relaxed) {
            let deadline =
                self.at(self.head_started_ms.load(Ordering::Relaxed)) + limits.header_read_timeout;
            return if now >= deadline {
                Check::HeadTimedOut
            } else {
                Check::Until(deadline)
            };
        }
        let deadline =
            self.at(self.idle_since_ms.load(Ordering::Relaxed)) + limits.keep_alive_idle_timeout;
        if now >= deadline {
            Check::IdleTimedOut
        } else {
            Check::Until(deadline)
        }
    }
}

/// What a connection's monitor found.
enum Check {
    /// A request is in flight: nothing to time until it ends.
    Busy,
    /// Nothing due before this instant.
    Until(Instant),
    HeadTimedOut,
    IdleTimedOut,
}

/// A request's body, telling its connection's monitor when it has been read to the end.
struct WatchedBody {
    inner: hyper::body::Incoming,
    conn: Arc<ConnState>,
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            self.conn.body_done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request in flight on a connection, until its response body is dropped.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            let now = self.0.now_ms();
            self.0.idle_since_ms.store(now, Ordering::Relaxed);
            // Part of the next head arrived while this request was in flight (pipelined): it
            // sits in hyper's buffer, and no further read would start the head timer.
            if self.0.read_while_busy.swap(false, Ordering::Relaxed) {
                self.0.head_started_ms.store(now, Ordering::Relaxed);
                self.0.head_started.store(true, Ordering::Relaxed);
            }
            self.0.changed.notify_one();
        }
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What each connection of a thread is served under.
#[derive(Clone)]
pub(super) struct Edge {
    /// The limits every connection is served under.
    pub(super) limits: EdgeLimits,
    /// Where timeouts and idle closes are counted.
    pub(super) stats: Arc<ProxyStats>,
    /// `[tls]`: each connection is a TLS one, its handshake first.
    pub(super) tls: Option<Arc<ServerTls>>,
}

/// The TLS handshake of a client connection, within `header_read_timeout` from accept (a
/// connection that sends nothing, or a slow handshake, is cut as a slow head would be).
/// A failure is counted (`mcp_relay_tls_handshake_failures_total`) and logged at debug (port
/// scanners and plain-HTTP clients make them routinely); the connection closes.
async fn handshake(io: Counted, tls: &ServerTls, peer: SocketAddr, edge: &Edge) -> Option<Counted> {
    let deadline = io.conn.start + edge.limits.header_read_timeout;
    match tokio::time::timeout_at(deadline, io.into_tls(tls.acceptor())).await {
        Ok(Ok(io)) => Some(io),
        Ok(Err(err)) => {
            ProxyStats::incr(&edge.stats.tls_handshake_failures);
            tracing::debug!(%peer, error = %err, "TLS handshake failed; closing the connection");
            None
        }
        Err(_) => {
            ProxyStats::incr(&edge.stats.tls_handshake_failures);
            tracing::debug!(%peer, "TLS handshake not complete in time (proxy.header_read_timeout_secs); closing");
            None
        }
    }
}

/// Serves one connection with hyper, under its monitor: a request head slower than
/// `header_read_timeout` closes it at once; no request for `keep_alive_idle_timeout` (or the
/// daemon's shutdown) closes it gracefully, and a graceful close that takes longer than
/// [`GRACEFUL_CLOSE`] after its last request closes it at once.
pub(super) async fn serve_connection(
    builder: auto::Builder<TokioExecutor>,
    io: Counted,
    peer: SocketAddr,
    router: Router,
    edge: Edge,
    shutdown: CancellationToken,
) {
    let (io, is_tls) = match &edge.tls {
        None => (io, false),
        Some(tls) => match handshake(io, tls, peer, &edge).await {
            Some(io) => (io, true),
            None => return,
        },
    };
    let conn_state = io.conn.clone();
    let service = {
        let conn_state = conn_state.clone();
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let in_flight = conn_state.enter();
            let mut request = request.map(|inner| WatchedBody {
                inner,
                conn: conn_state.clone(),
            });
            // The peer, for the forwarded headers (`proxy/forwarded.rs`).
            request.extensions_mut().insert(ClientAddr(peer));
            if is_tls {
                request.extensions_mut().insert(ClientTls);
            }
            let mut router = router.clone();
            async move {
                let response = match router.call(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                // The request stays in flight until its response body is done (dropped).
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _in_flight = &in_flight;
                        frame
                    }))
                }))
            }
        })
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let limits = edge.limits;
    let mut closing: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let next = match conn_state.check(&limits, now) {
            Check::Busy => None,
            Check::Until(deadline) => Some(deadline),
            Check::HeadTimedOut => {
                // A slowloris flood does not flood the log.
                if let Some(total) = incr_sampled(&edge.stats.header_read_timeouts) {
                    tracing::warn!(
                        %peer,
                        timeout_secs = limits.header_read_timeout.as_secs_f64(),
                        total,
                        "request head not complete in time (proxy.header_read_timeout_secs); \
                         closing the connection",
                    );
                } else {
                    tracing::debug!(%peer, "request head not complete in time; closing");
                }
                return;
            }
            Check::IdleTimedOut => match closing {
                Some(since) if now >= since + GRACEFUL_CLOSE => return,
                Some(since) => Some(since + GRACEFUL_CLOSE),
                None => {
                    ProxyStats::incr(&edge.stats.idle_connections_closed);
                    tracing::debug!(%peer, "connection idle (proxy.keep_alive_idle_timeout_secs); closing it");
                    connection.as_mut().graceful_shutdown();
                    closing = Some(now);
                    Some(now + GRACEFUL_CLOSE)
                }
            },
        };
        let sleep = async {
            match next {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "client connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            () = conn_state.changed.notified() => {}
            () = sleep => {}
        }
    }
}
