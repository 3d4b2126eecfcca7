//! Wires the two planes around one `Arc<SessionManager>`, runs the persistence worker and idle
//! expiry, and shuts everything down in order: stop accepting and end control-plane calls, let
//! open requests and streams finish up to the grace deadline, then flush the worker.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::serve::ListenerExt as _;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    control,
    proxy::Proxy,
    session::{
        PersistenceWorker, SessionManager,
        store::{MemoryStore, SessionStore},
    },
};

/// The daemon could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reading a listener's address: {0}")]
    LocalAddr(std::io::Error),
    #[error("control plane: {0}")]
    Control(#[from] control::ControlError),
    #[error("data plane: {0}")]
    DataPlane(std::io::Error),
    #[error("installing signal handlers: {0}")]
    Signal(std::io::Error),
}

/// A running daemon: both planes listening, the worker and expiry running.
pub struct Daemon {
    data_addr: SocketAddr,
    admin_addr: SocketAddr,
    manager: Arc<SessionManager>,
    /// Stops accepting and ends the planes.
    shutdown: CancellationToken,
    /// Stops the worker once the planes are done, so it flushes what they last recorded.
    worker_shutdown: CancellationToken,
    grace: Duration,
    data_task: JoinHandle<Result<(), DaemonError>>,
    control_task: JoinHandle<Result<(), DaemonError>>,
    worker_task: JoinHandle<()>,
    expiry_task: JoinHandle<()>,
}

/// Binds a listener, naming what it is for in the error.
pub async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { what, addr, source })
}

impl Daemon {
    /// Starts both planes on listeners that are already bound (so tests can bind port 0 and
    /// socket activation can hand over its sockets), with the embedded memory store.
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
        let data_addr = data.local_addr().map_err(DaemonError::LocalAddr)?;
        let admin_addr = admin.local_addr().map_err(DaemonError::LocalAddr)?;
        let shutdown = CancellationToken::new();
        let worker_shutdown = CancellationToken::new();

        let (worker, persistence) = PersistenceWorker::new(store, config.worker);
        let manager = Arc::new(SessionManager::new(config.session, persistence));
        let proxy = Arc::new(Proxy::new(config.proxy.clone(), manager.clone()));

        let worker_task = tokio::spawn(worker.run(worker_shutdown.clone()));
        let expiry_task =
            tokio::spawn(run_expiry(proxy.clone(), manager.clone(), shutdown.clone()));
        let control_task = tokio::spawn({
            let manager = manager.clone();
            let shutdown = shutdown.clone();
            async move { Ok(control::serve(admin, manager, shutdown).await?) }
        });
        let data_task = tokio::spawn({
            let router = proxy.router();
            let shutdown = shutdown.clone();
            // SSE answers go out as several small writes (each event, then the last chunk):
            // without TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms to each.
            let data = data.tap_io(|tcp| {
                if let Err(err) = tcp.set_nodelay(true) {
                    tracing::warn!(error = %err, "could not set TCP_NODELAY on a client connection");
                }
            });
            async move {
                axum::serve(data, router)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
                    .map_err(DaemonError::DataPlane)
            }
        });
        tracing::info!(
            listen = %data_addr,
            admin_listen = %admin_addr,
            upstream = %config.proxy.upstream,
            "mcp-relay is serving",
        );
        Ok(Self {
            data_addr,
            admin_addr,
            manager,
            shutdown,
            worker_shutdown,
            grace: config.shutdown_grace,
            data_task,
            control_task,
            worker_task,
            expiry_task,
        })
    }

    /// The data plane's address.
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// The control plane's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The session manager both planes share.
    pub fn manager(&self) -> &Arc<SessionManager> {
        &self.manager
    }

    /// A token that, when cancelled, starts the same shutdown as [`Daemon::shutdown`].
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until a plane stops by itself (an error) or the shutdown token fires.
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await;
    }

    /// Stops accepting, waits up to the grace period for open requests and streams, then
    /// flushes the persistence worker. Returns the first plane error, if any.
    pub async fn shutdown(self) -> Result<(), DaemonError> {
        self.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + self.grace;
        let data = finish(self.data_task, deadline, "data plane").await;
        let control = finish(self.control_task, deadline, "control plane").await;
        self.expiry_task.abort();
        self.worker_shutdown.cancel();
        if self.worker_task.await.is_err() {
            tracing::error!("persistence worker panicked");
        }
        tracing::info!("mcp-relay stopped");
        data.and(control)
    }
}

/// Waits for a plane until `deadline`, then aborts it (open streams are cut).
async fn finish(
    mut task: JoinHandle<Result<(), DaemonError>>,
    deadline: tokio::time::Instant,
    what: &'static str,
) -> Result<(), DaemonError> {
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => {
            tracing::error!(plane = what, error = %join, "plane task failed");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(
                plane = what,
                "grace period over; closing what is still open"
            );
            task.abort();
            Ok(())
        }
    }
}

/// Ends idle sessions, then ends them upstream with `DELETE` (best effort).
async fn run_expiry(proxy: Arc<Proxy>, manager: Arc<SessionManager>, shutdown: CancellationToken) {
    let period =
        (manager.idle_ttl() / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        for session in manager.expire_idle(SystemTime::now()) {
            tracing::info!(session = %session.id(), "session expired after idle TTL");
            proxy.delete_upstream_session(&session).await;
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT, then shuts down gracefully; a second signal exits
/// at once.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let data = bind("the data plane", config.listen).await?;
    let admin = bind("the control plane", config.admin_listen).await?;
    let daemon = Daemon::start(config, data, admin).await?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(DaemonError::Signal)?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        () = daemon.stopped() => {}
    }
    let shutdown = daemon.shutdown();
    tokio::select! {
        result = shutdown => result,
        _ = sigterm.recv() => {
            tracing::warn!("second signal: exiting at once");
            std::process::exit(1);
        }
        _ = tokio::signal::ctrl_c() => {
            tracing::warn!("second signal: exiting at once");
            std::process::exit(1);
        }
    }
}
