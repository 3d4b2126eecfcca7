//! Wires the planes around one `Arc<SessionManager>`: the data plane (wrapped in request
//! metrics and the drain layer, served by its own threads, [`DataPlane`]), the control plane,
//! the metrics listener, the persistence worker and idle expiry (on the main runtime); then
//! runs them under systemd's eye until a signal, and shuts down in order.
//!
//! Shutdown (SIGTERM or SIGINT; a second signal exits at once with status 1):
//!
//! 1. `/readyz` turns `503`, systemd hears `STOPPING=1`; both planes stop accepting; HTTP/1
//!    keep-alive connections close after their current response; the control plane ends its
//!    calls (its watches end on the same token).
//! 2. Open requests and SSE streams run on until the grace period (`shutdown_grace`) is over.
//! 3. Then stream pumps are stopped (legacy streams end with a `retry:` hint so clients resume
//!    elsewhere), and [`CUT_MARGIN`] later every SSE body still open ends and every request
//!    still waiting for its upstream gets `503` ([`drain`]).
//! 4. A plane still running [`ABORT_MARGIN`] after that is aborted; the data-plane threads'
//!    runtimes end (dropping what still runs there) once the stream pumps have stopped.
//! 5. The persistence worker flushes what the planes last recorded and stops; the metrics
//!    listener stops last, so `/readyz` answers throughout.
//!
//! So the process exits within `shutdown_grace + CUT_MARGIN + ABORT_MARGIN` plus a few
//! seconds at most (pumps, runtimes, one store flush); the unit's `TimeoutStopSec=` should
//! exceed that (the daemon also asks systemd for that long with `EXTEND_TIMEOUT_USEC`).

mod drain;
mod service;
mod threads;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};

use crate::tls::ServerTls;
use tokio_util::sync::CancellationToken;

pub use drain::DrainLayer;
use drain::finish;
pub use service::{Reloader, run, run_with};
pub use threads::{DataPlane, EdgeLimits, thread_count};

use crate::{
    config::Config,
    control::{self, BearerToken, ControlListener, ControlOptions},
    proxy::{
        self,
        route::{self, Routing, RoutingEnder, ThreadRoutes},
        stats::ProxyStats,
    },
    session::{
        PersistenceWorker, SessionManager, UpstreamSessionEnder, expiry,
        store::{MemoryStore, SessionStore, StoreError},
    },
    telemetry::metrics::{self, DaemonSnapshot, Metrics, Observed, Readiness},
};

/// Time between the end of the grace period (stream pumps told to stop) and the hard cut of
/// what is still open, so streams can end themselves with their `retry:` hint first.
pub const CUT_MARGIN: Duration = Duration::from_secs(1);
/// Time after the hard cut before a plane still running is aborted.
pub const ABORT_MARGIN: Duration = Duration::from_secs(1);
/// How often the `STATUS=` line is refreshed while serving under systemd.
const STATUS_PERIOD: Duration = Duration::from_secs(10);

/// The daemon could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A listener could not be bound (address in use, no permission, not local).
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// Which listener: `data`, `admin` or `metrics`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// A socket systemd passed (socket activation) could not be made a listener.
    #[error("using the socket systemd passed for {what}: {source}")]
    Activated {
        /// Which listener: `data`, `admin` or `metrics`.
        what: &'static str,
        /// The socket error.
        source: std::io::Error,
    },
    /// The control plane's Unix socket could not be bound.
    #[error("binding the control plane on the Unix socket {path:?}: {source}")]
    BindUnix {
        /// The socket's path.
        path: std::path::PathBuf,
        /// The socket error.
        source: std::io::Error,
    },
    /// A bound listener's local address could not be read.
    #[error("reading a listener's address: {0}")]
    LocalAddr(std::io::Error),
    /// The trace exporter (`[traces]`) could not be built.
    #[error("starting traces: {0}")]
    Traces(String),
    /// A TLS certificate or key (`[tls]`, `[admin_tls]`) could not be loaded.
    #[error("{what}: {source}")]
    Tls {
        /// `tls` or `admin_tls`.
        what: &'static str,
        /// What is wrong with its files.
        source: crate::tls::TlsError,
    },
    /// The control plane could not start, or ended with an error.
    #[error("control plane: {0}")]
    Control(#[from] control::ControlError),
    /// The data plane's threads could not start, or serving ended with an error.
    #[error("data plane: {0}")]
    DataPlane(std::io::Error),
    /// The metrics listener ended with an error.
    #[error("metrics listener: {0}")]
    Metrics(std::io::Error),
    /// SIGTERM/SIGINT handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signal(std::io::Error),
    /// The session store could not be opened (the message carries its causes).
    #[error("{0:#}")]
    Store(#[from] StoreError),
}

/// The listening sockets of a daemon, already bound (so tests can bind port 0 and socket
/// activation can hand over its sockets).
#[derive(Debug)]
pub struct Listeners {
    /// The data plane (MCP clients).
    pub data: TcpListener,
    /// The control plane (gRPC): TCP or a Unix socket.
    pub admin: ControlListener,
    /// `/metrics`, `/healthz`, `/readyz`; `None` serves none.
    pub metrics: Option<TcpListener>,
}

/// A running daemon: every listener serving, the worker and expiry running.
pub struct Daemon {
    data_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    admin_endpoint: String,
    metrics_addr: Option<SocketAddr>,
    manager: Arc<SessionManager>,
    /// What the data plane's threads share: its counters and its stream pumps.
    data_shared: proxy::Shared,
    /// How sessions end upstream (idle expiry, `TerminateSession`).
    upstream_ender: Arc<dyn UpstreamSessionEnder>,
    /// The routes and their pools, swapped on reload.
    routing: Arc<Routing>,
    /// The data plane's and the control plane's TLS (`[tls]`, `[admin_tls]`), re-read on
    /// reload.
    tls: Vec<(&'static str, Arc<ServerTls>)>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    /// Stops accepting and ends the planes.
    shutdown: CancellationToken,
    /// Fired [`CUT_MARGIN`] after the grace period: ends what is still open.
    cut: CancellationToken,
    /// Stops the worker once the planes are done, so it flushes what they last recorded.
    worker_shutdown: CancellationToken,
    /// Stops the metrics listener, last.
    telemetry_shutdown: CancellationToken,
    grace: Duration,
    /// The data plane's threads, ended once their stream pumps have stopped.
    data_plane: DataPlane,
    data_task: JoinHandle<Result<(), DaemonError>>,
    control_task: JoinHandle<Result<(), DaemonError>>,
    telemetry_task: Option<JoinHandle<Result<(), DaemonError>>>,
    worker_task: JoinHandle<()>,
    expiry_task: JoinHandle<()>,
}

/// The listen backlog of the listeners the daemon binds (the kernel caps it at
/// `net.core.somaxconn`). std's 128 overflowed when a few hundred clients connected at once,
/// and every dropped SYN cost its client a one-second retransmission.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener (with `SO_REUSEADDR` and a backlog of [`LISTEN_BACKLOG`]), naming what it is
/// for in the error.
pub async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    };
    socket
        .and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(LISTEN_BACKLOG)
        })
        .map_err(|source| DaemonError::Bind { what, addr, source })
}

impl Daemon {
    /// Starts both planes on listeners that are already bound, with the embedded memory store
    /// and no metrics listener (its numbers are still kept: [`Daemon::metrics`]).
    pub async fn start(
        config: Config,
        data: TcpListener,
        admin: TcpListener,
    ) -> Result<Self, DaemonError> {
        Self::start_with_store(config, data, admin, Arc::new(MemoryStore::new())).await
    }

    /// Like [`Daemon::start`], persisting to `store`.
    pub async fn start_with_store(
        config: Config,
        data: TcpListener,
        admin: TcpListener,
        store: Arc<dyn SessionStore>,
    ) -> Result<Self, DaemonError> {
        let listeners = Listeners {
            data,
            admin: admin.into(),
            metrics: None,
        };
        Self::start_with(config, listeners, store).await
    }

    /// Starts every plane on `listeners`, persisting to `store`. `config`'s listen addresses
    /// are not used (the listeners are already bound).
    pub async fn start_with(
        config: Config,
        listeners: Listeners,
        store: Arc<dyn SessionStore>,
    ) -> Result<Self, DaemonError> {
        let Listeners {
            data,
            admin,
            metrics: metrics_listener,
        } = listeners;
        let data_addr = data.local_addr().map_err(DaemonError::LocalAddr)?;
        let admin_addr = admin.tcp_addr();
        let admin_endpoint = admin.describe();
        let metrics_addr = match &metrics_listener {
            Some(l) => Some(l.local_addr().map_err(DaemonError::LocalAddr)?),
            None => None,
        };
        let load_tls = |what: &'static str, config: &crate::tls::TlsConfig, alpn| {
            config
                .enabled()
                .then(|| ServerTls::load(config, alpn))
                .transpose()
                .map_err(|source| DaemonError::Tls { what, source })
        };
        let data_tls = load_tls("tls", &config.tls, crate::tls::DATA_ALPN)?;
        let admin_tls = load_tls("admin_tls", &config.admin_tls, crate::tls::ADMIN_ALPN)?;
        let shutdown = CancellationToken::new();
        let cut = CancellationToken::new();
        let worker_shutdown = CancellationToken::new();
        let telemetry_shutdown = CancellationToken::new();

        let (worker, persistence) = PersistenceWorker::new(store, config.worker);
        let manager = Arc::new(SessionManager::new(config.session, persistence));
        let limits = EdgeLimits::from_config(&config.proxy);
        // One bound on upstream connections for the whole process (every data-plane thread's
        // client and the main runtime's), one set of data-plane counters, one set of pumps.
        let mut data_shared = proxy::Shared::new(limits.max_upstream_connections);
        data_shared.traces =
            crate::telemetry::traces::Traces::start(&config.traces).map_err(DaemonError::Traces)?;
        let observed = Observed {
            manager: manager.clone(),
            proxy: data_shared.stats.clone(),
        };
        let metrics = Metrics::new(observed.clone());
        let routing = Routing::new(&config, metrics.latency_histograms());
        metrics.watch_routing(routing.clone());
        // The one path by which the proxy ends sessions upstream: idle expiry and the control
        // plane's `TerminateSession`, at the session's endpoint, through the main runtime's
        // own upstream client.
        let upstream_ender: Arc<dyn UpstreamSessionEnder> =
            Arc::new(RoutingEnder::new(routing.clone(), data_shared.clone()));
        tokio::spawn(route::health::run(
            routing.clone(),
            data_shared.clone(),
            shutdown.clone(),
        ));
        // Histogram samples wait in the recorder until upkeep folds them into buckets; without
        // this, a daemon nobody scrapes would hold every request's sample.
        tokio::spawn({
            let metrics = Arc::downgrade(&metrics);
            let shutdown = shutdown.clone();
            async move {
                let mut every = tokio::time::interval(metrics::UPKEEP_INTERVAL);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = every.tick() => {}
                    }
                    let Some(metrics) = metrics.upgrade() else {
                        return;
                    };
                    metrics.upkeep();
                }
            }
        });
        let readiness = Arc::new(Readiness::default());

        let worker_task = tokio::spawn(worker.run(worker_shutdown.clone()));
        let expiry_task = tokio::spawn(expiry::run(
            upstream_ender.clone(),
            manager.clone(),
            shutdown.clone(),
        ));
        let control_task = tokio::spawn({
            let shutdown = shutdown.clone();
            let options = ControlOptions {
                bearer_token: config.admin_token.as_deref().and_then(BearerToken::new),
                upstream_ender: Some(upstream_ender.clone()),
                routing: Some(routing.clone()),
                tls: admin_tls.clone(),
            };
            async move { Ok(control::serve_with(admin, observed, options, shutdown).await?) }
        });
        let mut data_plane = DataPlane::start(
            data,
            thread_count(config.proxy.threads),
            limits,
            &data_shared.stats,
            data_tls.clone(),
            |_| {
                // Outermost first: the metrics layer also counts the drain layer's 503s.
                ThreadRoutes::new(routing.clone(), manager.clone(), data_shared.clone())
                    .router()
                    // A child token per thread: requests wait on it without sharing one lock.
                    .layer(DrainLayer::new(cut.child_token()))
                    .layer(metrics.layer())
            },
            &shutdown,
        )
        .inspect_err(|_| {
            // What started already (control plane, worker, expiry, upkeep) stops too.
            shutdown.cancel();
            worker_shutdown.cancel();
            telemetry_shutdown.cancel();
        })
        .map_err(DaemonError::DataPlane)?;
        metrics.watch_data_plane(
            data_plane.runtimes().to_vec(),
            data_plane.open_connections().to_vec(),
        );
        let data_task = tokio::spawn({
            let served = data_plane.served();
            async move { served.await.map_err(DaemonError::DataPlane) }
        });
        let telemetry_task = metrics_listener.map(|listener| {
            let router = metrics::router(metrics.clone(), readiness.clone());
            let stop = telemetry_shutdown.clone();
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                    .map_err(DaemonError::Metrics)
            })
        });
        readiness.set(true);
        let table = routing.table();
        let routes: Vec<String> = table
            .routes()
            .iter()
            .map(|r| {
                let urls: Vec<&str> = r.pool().iter().map(|e| &**e.url()).collect();
                format!("{} -> {}", r.path(), urls.join(", "))
            })
            .collect();
        tracing::info!(
            listen = %data_addr,
            admin_listen = %admin_endpoint,
            metrics_listen = ?metrics_addr,
            routes = ?routes,
            grace_secs = config.shutdown_grace.as_secs_f64(),
            "mcp-relay is serving",
        );
        Ok(Self {
            data_addr,
            admin_addr,
            admin_endpoint,
            metrics_addr,
            manager,
            data_shared,
            upstream_ender,
            routing,
            tls: [("tls", data_tls), ("admin_tls", admin_tls)]
                .into_iter()
                .filter_map(|(what, tls)| tls.map(|tls| (what, tls)))
                .collect(),
            metrics,
            readiness,
            shutdown,
            cut,
            worker_shutdown,
            telemetry_shutdown,
            grace: config.shutdown_grace,
            data_plane,
            data_task,
            control_task,
            telemetry_task,
            worker_task,
            expiry_task,
        })
    }

    /// The data plane's address.
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// The control plane's TCP address; `None` when it listens on a Unix socket.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Where the control plane listens, for people: `127.0.0.1:50051` or `unix:/path`.
    pub fn admin_endpoint(&self) -> &str {
        &self.admin_endpoint
    }

    /// The metrics listener's address, when it has one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The session manager both planes share.
    pub fn manager(&self) -> &Arc<SessionManager> {
        &self.manager
    }

    /// The data plane's counters.
    pub fn proxy_stats(&self) -> &Arc<ProxyStats> {
        &self.data_shared.stats
    }

    /// Where the daemon's numbers are read from (for [`DaemonSnapshot::take`], or a control
    /// plane of one's own beside the daemon's).
    pub fn observed(&self) -> Observed {
        Observed {
            manager: self.manager.clone(),
            proxy: self.data_shared.stats.clone(),
        }
    }

    /// How the daemon ends sessions upstream (idle expiry and its control plane's
    /// `TerminateSession`), for a control plane of one's own beside the daemon's.
    pub fn upstream_ender(&self) -> &Arc<dyn UpstreamSessionEnder> {
        &self.upstream_ender
    }

    /// The routes and their pools.
    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    /// Swaps in the routes of `config` (a reload: SIGHUP): new requests use them at once;
    /// sessions keep their endpoint, kept (retired) while any session is pinned to it, and
    /// open streams go on. Settings other than routes and their pools need a restart (a
    /// changed one is logged, not applied).
    pub fn reload(&self, config: &Config) -> route::Reloaded {
        let pinned: std::collections::HashSet<(String, String)> = self
            .manager
            .sessions()
            .iter()
            .map(|s| (s.route().to_owned(), s.upstream().to_owned()))
            .collect();
        self.routing.reload(config, |route, url| {
            pinned.contains(&(route.to_owned(), url.to_owned()))
                || pinned.contains(&(String::new(), url.to_owned()))
        })
    }

    /// Reads the TLS certificates and keys of both planes again (SIGHUP): handshakes after
    /// this use the new ones, open connections keep theirs. Returns what could not be loaded
    /// (that plane keeps its running certificate), by setting (`tls`, `admin_tls`).
    pub fn reload_tls(&self) -> Vec<(&'static str, crate::tls::TlsError)> {
        self.tls
            .iter()
            .filter_map(|(what, tls)| tls.reload().err().map(|e| (*what, e)))
            .collect()
    }

    /// The daemon's metrics (`render()` gives the Prometheus text `/metrics` serves).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A token that, when cancelled, starts the same shutdown as [`Daemon::shutdown`].
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until a plane stops by itself (an error) or the shutdown token fires.
    pub async fn stopped(&self) {
        let plane_ended = async {
            loop {
                if self.data_task.is_finished()
                    || self.control_task.is_finished()
                    || self
                        .telemetry_task
                        .as_ref()
                        .is_some_and(|t| t.is_finished())
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = plane_ended => tracing::error!("a plane stopped by itself; shutting down"),
        }
    }

    /// Drains and stops, in the order of the module docs. Returns the first plane error, if
    /// any.
    pub async fn shutdown(self) -> Result<(), DaemonError> {
        self.readiness.set(false);
        self.shutdown.cancel();
        let grace_over = tokio::time::Instant::now() + self.grace;
        let cut_at = grace_over + CUT_MARGIN;
        let abort_at = cut_at + ABORT_MARGIN;

        // The deadlines run on their own, whatever the planes do meanwhile.
        let deadlines = tokio::spawn({
            let manager = self.manager.clone();
            let shared = self.data_shared.clone();
            let cut = self.cut.clone();
            async move {
                tokio::time::sleep_until(grace_over).await;
                tracing::info!(
                    streams_open = shared.stats.snapshot().streams_open,
                    "grace period over; ending open streams",
                );
                shared.pumps.stop(&manager);
                tokio::time::sleep_until(cut_at).await;
                cut.cancel();
            }
        });
        let data = finish(self.data_task, abort_at, "data plane").await;
        let control = finish(self.control_task, abort_at, "control plane").await;
        deadlines.abort();
        // Streams whose client already left (lingering pumps) stop now too; wait for them, so
        // the worker's final flush has every last event id.
        let pumps = &self.data_shared.pumps;
        pumps.stop(&self.manager);
        if tokio::time::timeout(ABORT_MARGIN, pumps.stopped())
            .await
            .is_err()
        {
            tracing::warn!("stream pumps did not stop in time; their last ids may not be flushed");
        }
        self.data_plane.stop().await;
        self.expiry_task.abort();
        self.worker_shutdown.cancel();
        if self.worker_task.await.is_err() {
            tracing::error!("persistence worker panicked");
        }
        if let Some(traces) = self.data_shared.traces.clone() {
            // The spans still held are exported before the daemon stops.
            if tokio::task::spawn_blocking(move || traces.shutdown())
                .await
                .is_err()
            {
                tracing::error!("trace exporter shutdown panicked; spans still held are lost");
            }
        }
        self.telemetry_shutdown.cancel();
        let telemetry = match self.telemetry_task {
            Some(task) => finish(task, tokio::time::Instant::now() + ABORT_MARGIN, "metrics").await,
            None => Ok(()),
        };
        let snapshot = DaemonSnapshot::take(&Observed {
            manager: self.manager,
            proxy: self.data_shared.stats,
        });
        tracing::info!(
            events_forwarded = snapshot.proxy.events_forwarded,
            stream_writes = snapshot.worker.stream_writes,
            store_errors = snapshot.worker.errors,
            unflushed = snapshot.worker_pending,
            "mcp-relay stopped",
        );
        data.and(control).and(telemetry)
    }
}
