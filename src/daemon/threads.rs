//! The data plane's threads: each runs its own single-threaded tokio runtime that accepts from
//! the one data listener and serves the connections it accepted there, with its own upstream
//! connection pool ([`Proxy`] per thread). A request, its upstream exchange and a stream's
//! pump stay on the thread that accepted the client, so the hot path has no cross-thread
//! wake-ups, no work stealing and no frees into another thread's malloc arena. The session
//! core ([`SessionManager`]) and the metrics are shared by every thread (and the control plane)
//! through `Arc`, as before.
//!
//! Why not the one multi-threaded runtime the rest of the daemon uses: with it, the load
//! harness measured 4.5 context switches and 77 µs of CPU per proxied JSON request at one
//! connection (the idle worker woken to look for work, then parked again); one thread per
//! runtime measured 2.0 and 47 µs (BENCHMARKS.md). nginx's workers are built the same way.
//!
//! Lifecycle: [`DataPlane::start`] starts the threads; each serves until the daemon's shutdown
//! token (graceful: stop accepting, drain), reports how that went ([`DataPlane::served`]), and
//! then keeps its runtime running — lingering stream pumps live there and must reach their
//! final flush — until [`DataPlane::stop`] (or drop) ends it.

use std::{io, net::TcpListener as StdTcpListener, thread::JoinHandle, time::Duration};

use axum::{Router, serve::ListenerExt as _};
use tokio::{net::TcpListener, runtime::Handle, sync::oneshot};
use tokio_util::sync::CancellationToken;

/// How long [`DataPlane::stop`] gives a runtime to drop what still runs on it.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

/// The number of data-plane threads for a configured `threads` (0: one per CPU, at least 1).
pub fn thread_count(threads: usize) -> usize {
    if threads > 0 {
        return threads;
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The running data-plane threads.
#[derive(Debug)]
pub struct DataPlane {
    threads: Vec<JoinHandle<()>>,
    runtimes: Vec<Handle>,
    served: Vec<oneshot::Receiver<io::Result<()>>>,
    /// Ends the runtimes (after the daemon's pumps stopped).
    stop: CancellationToken,
}

impl DataPlane {
    /// Starts `threads` threads serving `listener` with the router `router(i)` builds for
    /// thread `i`, until `shutdown` fires. Errors: the listener could not be shared, a thread or
    /// runtime could not be created.
    pub fn start(
        listener: TcpListener,
        threads: usize,
        router: impl Fn(usize) -> Router,
        shutdown: &CancellationToken,
    ) -> io::Result<Self> {
        // Deregistered from this runtime's reactor; each thread registers its own clone with its
        // own. Every thread's epoll sees each new connection and the first to `accept` gets it.
        let listener = listener.into_std()?;
        let stop = CancellationToken::new();
        let mut plane = Self {
            threads: Vec::with_capacity(threads),
            runtimes: Vec::with_capacity(threads),
            served: Vec::with_capacity(threads),
            stop: stop.clone(),
        };
        for i in 0..threads {
            let listener = listener.try_clone()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (report, served) = oneshot::channel();
            plane.runtimes.push(runtime.handle().clone());
            plane.served.push(served);
            let thread = std::thread::Builder::new()
                .name(format!("mcp-relay-data-{i}"))
                .spawn({
                    let router = router(i);
                    let shutdown = shutdown.clone();
                    let stop = stop.clone();
                    move || serve(runtime, listener, router, shutdown, stop, report)
                })?;
            plane.threads.push(thread);
        }
        Ok(plane)
    }

    /// The threads' runtimes (their task counts go into `mcp_relay_runtime_alive_tasks`).
    pub fn runtimes(&self) -> &[Handle] {
        &self.runtimes
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
    }
}

/// One thread's life: serve until `shutdown` (reported on `report`), then keep the runtime
/// until `stop`.
fn serve(
    runtime: tokio::runtime::Runtime,
    listener: StdTcpListener,
    router: Router,
    shutdown: CancellationToken,
    stop: CancellationToken,
    report: oneshot::Sender<io::Result<()>>,
) {
    runtime.block_on(async move {
        let serving = async {
            let listener = TcpListener::from_std(listener)?;
            // SSE answers go out as several small writes (each event, then the last chunk):
            // without TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms to each.
            let listener = listener.tap_io(|tcp| {
                if let Err(err) = tcp.set_nodelay(true) {
                    tracing::warn!(error = %err, "could not set TCP_NODELAY on a client connection");
                }
            });
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        };
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
