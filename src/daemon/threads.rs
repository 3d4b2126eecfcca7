//! The data plane's threads: each runs its own single-threaded tokio runtime and serves the
//! client connections handed to it, with its own upstream connection pool ([`Proxy`] per
//! thread). A request, its upstream exchange and a stream's pump stay on the thread that got
//! the client connection, so the hot path has no cross-thread wake-ups, no work stealing and
//! no frees into another thread's malloc arena. The session core ([`SessionManager`]) and the
//! metrics are shared by every thread (and the control plane) through `Arc`, as before.
//!
//! Why not the one multi-threaded runtime the rest of the daemon uses: with it, the load
//! harness measured 4.5 context switches and 77 µs of CPU per proxied JSON request at one
//! connection (the idle worker woken to look for work, then parked again); one thread per
//! runtime measured 2.0 and 45 µs (BENCHMARKS.md). nginx's workers are built the same way.
//!
//! Connections are accepted on the main runtime and handed to the thread serving the fewest
//! open connections. (Letting every thread accept from the shared listener was tried: the
//! thread already awake took a whole burst of connections, so 32 wrk connections all landed on
//! one thread while the other idled.)
//!
//! Limits at the edge ([`EdgeLimits`]): the acceptor refuses a connection past
//! `max_connections` open (a canned `503`, then closed); each connection is served by hyper
//! here (not `axum::serve`) under a light monitor, polled in the connection's own task, that
//! closes it when a request
//! head takes longer than `header_read_timeout` (HTTP/1: timed from accept for the first head —
//! until the whole 24-byte h2 preface is seen, a connection counts as HTTP/1 — then from the
//! first byte of each next head, or from the end of the request before it when that byte came
//! pipelined while it was in flight), or when it has had no request in flight for
//! `keep_alive_idle_timeout` (graceful close). The monitor sleeps until its next deadline and
//! is woken only when the connection turns idle or a head starts. h2 connections advertise at
//! most `proxy.h2_max_concurrent_streams` concurrent streams.
//!
//! Lifecycle: [`DataPlane::start`] starts the threads and the acceptor; at the daemon's
//! shutdown token the acceptor stops and each thread drains (graceful), reports how that went
//! ([`DataPlane::served`]) and then keeps its runtime running — lingering stream pumps live
//! there and must reach their final flush — until [`DataPlane::stop`] (or drop) ends it.
//!
//! [`Proxy`]: crate::proxy::Proxy
//! [`SessionManager`]: crate::session::SessionManager

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
    thread::JoinHandle,
    time::Duration,
};

use axum::{Router, body::Body, serve::Listener};
use http_body_util::BodyExt;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    runtime::Handle,
    sync::{Notify, mpsc, oneshot},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_service::Service;

use crate::counters::incr_sampled;
use crate::proxy::stats::ProxyStats;

/// What a client connection past the connection maximum is told before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 88\r\nconnection: close\r\n\r\n\
{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"too many connections\"}}";

/// At most one log line per this long while connections are being refused.
const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);

/// How long a connection told to close gracefully (idle, or shutdown after its requests) has
/// before it is dropped.
const GRACEFUL_CLOSE: Duration = Duration::from_secs(1);

/// Descriptors kept out of the connection maximum for listeners, the store, logs and the like.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The data plane's limits at the edge (from [`crate::config::ProxyConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    /// Most client connections open at once (all threads); past it new ones are refused.
    pub max_connections: usize,
    /// Most upstream connections open at once (every thread's and the main runtime's client);
    /// `usize::MAX` when unbounded (no descriptor limit known and none configured).
    pub max_upstream_connections: usize,
    /// Time from a request head's first byte to its end (HTTP/1).
    pub header_read_timeout: Duration,
    /// Time a connection may stay with no request in flight.
    pub keep_alive_idle_timeout: Duration,
    /// Most concurrent streams on one h2 connection (set explicitly rather than left to
    /// hyper's default of 200: each stream can hold an upstream connection).
    pub h2_max_concurrent_streams: u32,
}

impl EdgeLimits {
    /// The limits of `config`, with `max_connections` clamped to what the process's descriptor
    /// limit leaves room for (two descriptors per connection: client and upstream, after
    /// [`RESERVED_DESCRIPTORS`]), and `max_upstream_connections` (0: as many as the limit
    /// allows) clamped to what it leaves after `max_connections` and the reserve; a warning
    /// says so when either is clamped.
    pub fn from_config(config: &crate::config::ProxyConfig) -> Self {
        let nofile = descriptor_limit();
        let max_connections = Self::clamp_connections(config.max_connections, nofile);
        let configured = config.max_upstream_connections;
        let max_upstream_connections = match nofile {
            None if configured == 0 => usize::MAX,
            None => configured,
            Some(nofile) => {
                let room = usize::try_from(nofile.saturating_sub(RESERVED_DESCRIPTORS))
                    .unwrap_or(usize::MAX)
                    .saturating_sub(max_connections)
                    .max(1);
                if configured == 0 {
                    room
                } else if configured > room {
                    tracing::warn!(
                        configured,
                        clamped = room,
                        rlimit_nofile = nofile,
                        max_connections,
                        "proxy.max_upstream_connections exceeds what the descriptor limit leaves \
                         after proxy.max_connections; clamping it",
                    );
                    room
                } else {
                    configured
                }
            }
        };
        Self {
            max_connections,
            max_upstream_connections,
            header_read_timeout: config.header_read_timeout,
            keep_alive_idle_timeout: config.keep_alive_idle_timeout,
            h2_max_concurrent_streams: config.h2_max_concurrent_streams,
        }
    }

    /// `configured` client connections, clamped to half of what `nofile` leaves after the
    /// reserve.
    fn clamp_connections(configured: usize, nofile: Option<u64>) -> usize {
        let mut max_connections = configured;
        if let Some(nofile) = nofile {
            let room = usize::try_from(nofile.saturating_sub(RESERVED_DESCRIPTORS) / 2)
                .unwrap_or(usize::MAX)
                .max(1);
            if max_connections > room {
                tracing::warn!(
                    configured = max_connections,
                    clamped = room,
                    rlimit_nofile = nofile,
                    "proxy.max_connections exceeds what the descriptor limit leaves room for \
                     (two per connection); clamping it",
                );
                max_connections = room;
            }
        }
        max_connections
    }
}

/// The soft `RLIMIT_NOFILE` of the process (from `/proc/self/limits`, Linux); `None` when
/// unknown or unlimited.
fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How long [`DataPlane::stop`] gives a runtime to drop what still runs on it.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

/// Accepted connections waiting for their thread to take them (per thread). When a thread's
/// queue is full the acceptor waits, and the listen backlog absorbs the rest.
const HANDOFF_QUEUE: usize = 1024;

/// The number of data-plane threads for a configured `threads` (0: one per CPU, at least 1).
pub fn thread_count(threads: usize) -> usize {
    if threads > 0 {
        return threads;
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The running data-plane threads and their acceptor.
#[derive(Debug)]
pub struct DataPlane {
    threads: Vec<JoinHandle<()>>,
    runtimes: Vec<Handle>,
    served: Vec<oneshot::Receiver<io::Result<()>>>,
    /// Client connections open on each thread.
    open: Vec<Arc<AtomicUsize>>,
    acceptor: tokio::task::JoinHandle<()>,
    /// Ends the runtimes (after the daemon's pumps stopped).
    stop: CancellationToken,
}

/// A client connection on its way to a thread: the socket, deregistered from the acceptor's
/// runtime, its peer address, and its place in the thread's open count (given back if the
/// connection is dropped on the way, e.g. still queued at shutdown).
type Handoff = (std::net::TcpStream, SocketAddr, Uncount);

/// One thread, as the acceptor sees it.
struct Worker {
    queue: mpsc::Sender<Handoff>,
    /// Client connections open on the thread: counted when handed over, uncounted when the
    /// thread drops the connection.
    open: Arc<AtomicUsize>,
}

impl DataPlane {
    /// Starts `threads` threads, each serving the router `router(i)` builds for thread `i`, and
    /// an acceptor task on the current runtime that hands `listener`'s connections to them,
    /// until `shutdown` fires. Errors: a thread or its runtime could not be created.
    pub fn start(
        listener: TcpListener,
        threads: usize,
        limits: EdgeLimits,
        stats: &Arc<ProxyStats>,
        router: impl Fn(usize) -> Router,
        shutdown: &CancellationToken,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let stop = CancellationToken::new();
        // Should a later thread fail to start, the ones already started end.
        let started_ok = stop.clone().drop_guard();
        let mut started = Vec::with_capacity(threads);
        let mut runtimes = Vec::with_capacity(threads);
        let mut served = Vec::with_capacity(threads);
        let mut workers = Vec::with_capacity(threads);
        let mut counts = Vec::with_capacity(threads);
        for i in 0..threads {
            let (report, report_rx) = oneshot::channel();
            served.push(report_rx);
            let (queue, handed) = mpsc::channel(HANDOFF_QUEUE);
            let open = Arc::new(AtomicUsize::new(0));
            counts.push(open.clone());
            workers.push(Worker { queue, open });
            let listener = HandedOver { handed, local };
            let router = router(i);
            let shutdown = shutdown.clone();
            let thread_stop = stop.clone();
            let thread_stats = stats.clone();
            // The runtime is built on its thread, so a thread that cannot start never drops a
            // runtime here (tokio forbids that inside an async context).
            let (built, built_rx) = std::sync::mpsc::sync_channel(1);
            let thread = std::thread::Builder::new()
                .name(format!("mcp-relay-data-{i}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(err) => {
                            let _ = built.send(Err(err));
                            return;
                        }
                    };
                    if built.send(Ok(runtime.handle().clone())).is_ok() {
                        let edge = Edge {
                            limits,
                            stats: thread_stats,
                        };
                        serve(
                            runtime,
                            listener,
                            router,
                            edge,
                            shutdown,
                            thread_stop,
                            report,
                        );
                    }
                })?;
            started.push(thread);
            // A brief blocking wait, at start only: the thread's first act is to send it.
            let runtime = built_rx
                .recv()
                .map_err(|_| io::Error::other("a data-plane thread died while starting"))??;
            runtimes.push(runtime);
        }
        started_ok.disarm();
        let acceptor = tokio::spawn(accept(
            listener,
            workers,
            limits.max_connections,
            stats.clone(),
            shutdown.clone(),
        ));
        Ok(Self {
            threads: started,
            runtimes,
            served,
            open: counts,
            acceptor,
            stop,
        })
    }

    /// The threads' runtimes (their task counts go into `mcp_relay_runtime_alive_tasks`).
    pub fn runtimes(&self) -> &[Handle] {
        &self.runtimes
    }

    /// Client connections open on each thread now (by thread index), for
    /// `mcp_relay_data_plane_connections`.
    pub fn open_connections(&self) -> &[Arc<AtomicUsize>] {
        &self.open
    }

    /// Resolves when every thread has stopped serving (after the shutdown token: every
    /// connection drained), or at the first error a thread's server ends with. A thread that
    /// died without a report counts as an error.
    pub fn served(&mut self) -> impl Future<Output = io::Result<()>> + Send + 'static {
        let served = std::mem::take(&mut self.served)
            .into_iter()
            .map(|report| async {
                report.await.unwrap_or_else(|_| {
                    Err(io::Error::other(
                        "a data-plane thread ended without a report",
                    ))
                })
            });
        let all = futures_util::future::try_join_all(served);
        async move { all.await.map(drop) }
    }

    /// Ends the runtimes, dropping whatever still runs on them (each gets
    /// [`RUNTIME_SHUTDOWN`]), and waits for the threads.
    pub async fn stop(mut self) {
        self.stop.cancel();
        self.acceptor.abort();
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a data-plane thread panicked");
                }
            }
        });
        if joined.await.is_err() {
            tracing::error!("could not wait for the data-plane threads");
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        // A daemon dropped without `shutdown` (tests, a failed start) still ends its threads.
        self.stop.cancel();
        self.acceptor.abort();
    }
}

/// The acceptor: each connection goes to the thread with the fewest open connections (the
/// lowest index on a tie), until `shutdown`; past `max_connections` open, a connection gets
/// [`REFUSED`] and is closed at once (counted; logged at most once per
/// [`REFUSAL_LOG_PERIOD`]). Accept errors are handled as axum's own listener handles them
/// (connection errors skipped; others, e.g. out of descriptors, logged and retried after a
/// second).
async fn accept(
    mut listener: TcpListener,
    workers: Vec<Worker>,
    max_connections: usize,
    stats: Arc<ProxyStats>,
    shutdown: CancellationToken,
) {
    let mut refusals = Refusals::default();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = Listener::accept(&mut listener) => accepted,
        };
        let open: usize = workers.iter().map(|w| w.open.load(Ordering::Relaxed)).sum();
        if open >= max_connections {
            // Best effort: the socket's send buffer is empty, so the answer fits; the client
            // may have sent its request already, in which case the close may reset instead.
            let _ = stream.try_write(REFUSED);
            drop(stream);
            ProxyStats::incr(&stats.connections_refused);
            refusals.refused(peer, open, max_connections);
            continue;
        }
        // SSE answers go out as several small writes (each event, then the last chunk): without
        // TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms to each.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::warn!(%peer, error = %err, "could not set TCP_NODELAY on a client connection");
        }
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(%peer, error = %err, "could not hand a client connection over");
                continue;
            }
        };
        // The thread with the fewest open connections whose queue has room; if every queue is
        // full, wait for the least loaded one (the listen backlog holds the rest meanwhile).
        let mut order: Vec<&Worker> = workers.iter().collect();
        order.sort_by_key(|w| w.open.load(Ordering::Relaxed));
        let mut handoff = Some((stream, peer));
        for worker in &order {
            let Some((stream, peer)) = handoff.take() else {
                break;
            };
            match worker
                .queue
                .try_send((stream, peer, Uncount::count(&worker.open)))
            {
                Ok(()) => {}
                Err(
                    mpsc::error::TrySendError::Full((stream, peer, _))
                    | mpsc::error::TrySendError::Closed((stream, peer, _)),
                ) => {
                    handoff = Some((stream, peer));
                }
            }
        }
        if let (Some((stream, peer)), Some(worker)) = (handoff, order.first()) {
            // A closed queue: the thread stopped serving (shutdown, or its server failed: the
            // daemon hears of it through `served`); the connection closes.
            if worker
                .queue
                .send((stream, peer, Uncount::count(&worker.open)))
                .await
                .is_err()
            {
                tracing::debug!(%peer, "no data-plane thread takes connections; closing it");
            }
        }
    }
}

/// Rate-limits the acceptor's log line about refused connections.
#[derive(Default)]
struct Refusals {
    last_log: Option<Instant>,
    since_log: u64,
}

impl Refusals {
    fn refused(&mut self, peer: SocketAddr, open: usize, max_connections: usize) {
        self.since_log += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|last| now.duration_since(last) >= REFUSAL_LOG_PERIOD)
        {
            tracing::warn!(
                %peer,
                open,
                max_connections,
                refused = self.since_log,
                "connection limit reached (proxy.max_connections); refusing new connections",
            );
            self.last_log = Some(now);
            self.since_log = 0;
        }
    }
}

/// One thread's listener: the connections the acceptor hands it.
struct HandedOver {
    handed: mpsc::Receiver<Handoff>,
    local: SocketAddr,
}

impl Listener for HandedOver {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let Some((stream, peer, counted)) = self.handed.recv().await else {
                // The acceptor is gone (shutdown): nothing more comes.
                return std::future::pending().await;
            };
            match TcpStream::from_std(stream) {
                Ok(io) => {
                    let conn = Arc::new(ConnState::new());
                    return (
                        Counted {
                            io,
                            _open: counted,
                            conn,
                        },
                        peer,
                    );
                }
                Err(err) => {
                    tracing::warn!(%peer, error = %err, "could not take a client connection over");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A connection's place in its thread's open count: counted when made, given back when
/// dropped.
struct Uncount(Arc<AtomicUsize>);

impl Uncount {
    fn count(open: &Arc<AtomicUsize>) -> Self {
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
struct Counted {
    io: TcpStream,
    _open: Uncount,
    /// What the connection's monitor watches.
    conn: Arc<ConnState>,
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
struct Edge {
    limits: EdgeLimits,
    stats: Arc<ProxyStats>,
}

/// One thread's life: serve until `shutdown` (reported on `report`), then keep the runtime
/// until `stop`.
fn serve(
    runtime: tokio::runtime::Runtime,
    listener: HandedOver,
    router: Router,
    edge: Edge,
    shutdown: CancellationToken,
    stop: CancellationToken,
    report: oneshot::Sender<io::Result<()>>,
) {
    runtime.block_on(async move {
        let serving = serve_connections(listener, router, edge, shutdown);
        tokio::select! {
            result = serving => {
                // The daemon may have stopped listening for reports (aborted); nothing to do.
                let _ = report.send(result);
                stop.cancelled().await;
            }
            () = stop.cancelled() => {}
        }
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
}

/// Serves every connection `listener` hands over, each in its own task, until `shutdown`; then
/// waits for the connections (each closes after its requests, as `axum::serve` did).
async fn serve_connections(
    mut listener: HandedOver,
    router: Router,
    edge: Edge,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own head timer would also run while a keep-alive connection waits for its next
    // request; the connection monitor times heads (from their first byte) and idleness instead.
    builder.http1().header_read_timeout(None);
    builder
        .http2()
        .max_concurrent_streams(edge.limits.h2_max_concurrent_streams);
    let connections = TaskTracker::new();
    loop {
        let (io, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        connections.spawn(serve_connection(
            builder.clone(),
            io,
            peer,
            router.clone(),
            edge.clone(),
            shutdown.clone(),
        ));
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Serves one connection with hyper, under its monitor: a request head slower than
/// `header_read_timeout` closes it at once; no request for `keep_alive_idle_timeout` (or the
/// daemon's shutdown) closes it gracefully, and a graceful close that takes longer than
/// [`GRACEFUL_CLOSE`] after its last request closes it at once.
async fn serve_connection(
    builder: auto::Builder<TokioExecutor>,
    io: Counted,
    peer: SocketAddr,
    router: Router,
    edge: Edge,
    shutdown: CancellationToken,
) {
    let conn_state = io.conn.clone();
    let service = {
        let conn_state = conn_state.clone();
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let in_flight = conn_state.enter();
            let request = request.map(|inner| WatchedBody {
                inner,
                conn: conn_state.clone(),
            });
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
