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
//! Lifecycle: [`DataPlane::start`] starts the threads and the acceptor; at the daemon's
//! shutdown token the acceptor stops and each thread drains (graceful), reports how that went
//! ([`DataPlane::served`]) and then keeps its runtime running — lingering stream pumps live
//! there and must reach their final flush — until [`DataPlane::stop`] (or drop) ends it.
//!
//! [`Proxy`]: crate::proxy::Proxy
//! [`SessionManager`]: crate::session::SessionManager

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    thread::JoinHandle,
    time::Duration,
};

use axum::{Router, serve::Listener};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    runtime::Handle,
    sync::{mpsc, oneshot},
};
use tokio_util::sync::CancellationToken;

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
                        serve(runtime, listener, router, shutdown, thread_stop, report);
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
        let acceptor = tokio::spawn(accept(listener, workers, shutdown.clone()));
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
/// lowest index on a tie), until `shutdown`. Accept errors are handled as axum's own listener
/// handles them (connection errors skipped; others, e.g. out of descriptors, logged and
/// retried after a second).
async fn accept(mut listener: TcpListener, workers: Vec<Worker>, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = Listener::accept(&mut listener) => accepted,
        };
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
                Ok(io) => return (Counted { io, _open: counted }, peer),
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
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
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

/// One thread's life: serve until `shutdown` (reported on `report`), then keep the runtime
/// until `stop`.
fn serve(
    runtime: tokio::runtime::Runtime,
    listener: HandedOver,
    router: Router,
    shutdown: CancellationToken,
    stop: CancellationToken,
    report: oneshot::Sender<io::Result<()>>,
) {
    runtime.block_on(async move {
        let serving =
            axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned());
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
