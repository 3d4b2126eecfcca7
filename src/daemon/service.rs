//! The daemon as a process: bind (or take from systemd) its listeners, start it, tell systemd
//! it is ready, keep the watchdog and `STATUS=` fed, reload its routes on SIGHUP
//! (`systemctl reload`), and shut down gracefully on SIGTERM or SIGINT (a second signal exits
//! at once).

use std::{net::SocketAddr, time::Duration};

use tokio::{
    net::TcpListener,
    signal::unix::{Signal, SignalKind, signal},
};
use tokio_util::sync::CancellationToken;

use super::{ABORT_MARGIN, CUT_MARGIN, Daemon, DaemonError, Listeners, STATUS_PERIOD, bind};
use crate::{
    config::{Config, DEFAULT_METRICS_LISTEN, file::redact_url},
    control::ControlListener,
    session::store,
    systemd::{self, Activated, Notifier},
    telemetry::metrics::{DaemonSnapshot, Observed},
};

/// SIGTERM and SIGINT, installed before readiness so an early signal is never the default
/// (fatal) one.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> Result<Self, DaemonError> {
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(DaemonError::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?,
        })
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// A listener from socket activation, or bound from the configuration.
async fn listener(
    what: &'static str,
    activated: Option<std::net::TcpListener>,
    addr: SocketAddr,
) -> Result<TcpListener, DaemonError> {
    let Some(std) = activated else {
        return bind(what, addr).await;
    };
    let activated = std
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(std))
        .map_err(|source| DaemonError::Activated { what, source })?;
    tracing::info!(
        what,
        addr = ?activated.local_addr().ok(),
        "using the socket systemd passed",
    );
    Ok(activated)
}

/// Reads the configuration again for a reload (SIGHUP): the same layers the daemon started
/// from. Errors: why the configuration cannot be used (for the log).
pub type Reloader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Runs the daemon until SIGTERM or SIGINT, then shuts down gracefully; a second signal exits
/// at once. SIGHUP is logged and ignored (nothing to reload from).
pub async fn run(config: Config) -> Result<(), DaemonError> {
    run_with(config, Activated::default(), None).await
}

/// [`run`], using the sockets systemd passed where it passed them; on SIGHUP, `reload` reads
/// the configuration again and the routes are swapped ([`Daemon::reload`]); a configuration
/// that does not load is refused and logged, and the old routes keep serving.
pub async fn run_with(
    config: Config,
    activated: Activated,
    reload: Option<Reloader>,
) -> Result<(), DaemonError> {
    let notifier = Notifier::from_env();
    let mut signals = Signals::install()?;
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    let mut current = config.clone();
    let data = listener("the data plane", activated.data, config.listen).await?;
    let admin: ControlListener = match &config.admin_socket {
        Some(path) => ControlListener::bind_unix(path).map_err(|source| DaemonError::BindUnix {
            path: path.clone(),
            source,
        })?,
        None => listener("the control plane", activated.admin, config.admin_listen)
            .await?
            .into(),
    };
    let metrics = match (activated.metrics, config.metrics.address()) {
        (Some(std), _) => Some(listener("metrics", Some(std), DEFAULT_METRICS_LISTEN).await?),
        (None, Some(addr)) => Some(bind("metrics", addr).await?),
        (None, None) => None,
    };
    let watchdog = systemd::watchdog_interval(&config.systemd);
    let grace = config.shutdown_grace;
    let store = store::open(&config.store)?;
    tracing::info!(
        backend = store.backend(),
        url = config.store.url.as_deref().map(|u| redact_url(u).unwrap_or_else(|| u.to_owned())),
        key_prefix = %config.store.key_prefix,
        "session store",
    );
    let daemon = Daemon::start_with(
        config,
        Listeners {
            data,
            admin,
            metrics,
        },
        store,
    )
    .await?;
    notifier.ready(&serving_status(&daemon));
    if let Some(period) = watchdog {
        tracing::info!(
            period_ms = period.as_millis() as u64,
            "systemd watchdog enabled"
        );
    }
    let supervisor = tokio::spawn(supervise(
        notifier,
        watchdog,
        daemon.data_addr(),
        daemon.observed(),
        daemon.shutdown_token(),
    ));

    loop {
        tokio::select! {
            name = signals.next() => {
                tracing::info!(signal = name, "shutting down");
                break;
            }
            () = daemon.stopped() => break,
            _ = hangup.recv() => {
                notifier.status("Reloading the configuration");
                match &reload {
                    Some(reload) => reload_routes(&daemon, reload, &mut current),
                    None => tracing::warn!("SIGHUP: no configuration file to reload; ignored"),
                }
                notifier.status(&serving_status(&daemon));
            }
        }
    }
    let drain = grace + CUT_MARGIN + ABORT_MARGIN + Duration::from_secs(3);
    notifier.stopping(
        &format!(
            "Draining: {} SSE streams open, {} s grace",
            daemon.proxy_stats().snapshot().streams_open,
            grace.as_secs()
        ),
        drain,
    );
    let result = tokio::select! {
        result = daemon.shutdown() => result,
        name = signals.next() => {
            tracing::warn!(signal = name, "second signal: exiting at once");
            std::process::exit(1);
        }
    };
    supervisor.abort();
    notifier.status(if result.is_ok() {
        "Stopped"
    } else {
        "Stopped with an error"
    });
    result
}

/// One reload: the configuration read again, checked, and its routes swapped in; settings
/// that need a restart are named in a warning. A configuration that fails to load or validate
/// leaves everything as it was.
fn reload_routes(daemon: &Daemon, reload: &Reloader, current: &mut Config) {
    // Certificates first, from the files the daemon runs with: a renewal is not held up by a
    // configuration file that does not load.
    for (what, err) in daemon.reload_tls() {
        tracing::error!(
            setting = what,
            error = %err,
            "SIGHUP: TLS certificate or key refused; the running one keeps serving",
        );
    }
    let config = match reload() {
        Ok(config) => config,
        Err(err) => {
            tracing::error!(
                error = %err,
                "SIGHUP: the configuration was refused; the old routes keep serving",
            );
            return;
        }
    };
    let reloaded = daemon.reload(&config);
    // Settings read only at start: a change is named in a warning, and `current` keeps what
    // the daemon runs with, so the next reload compares against that.
    let mut restart_only = Vec::new();
    let mut running = config;
    macro_rules! restart_only {
        ($($key:literal => $($field:ident).+),* $(,)?) => {$(
            if running.$($field).+ != current.$($field).+ {
                restart_only.push($key);
                running.$($field).+ = current.$($field).+.clone();
            }
        )*};
    }
    restart_only!(
        "listen" => listen,
        "admin_listen" => admin_listen,
        "admin_socket" => admin_socket,
        "admin_token" => admin_token,
        "tls" => tls,
        "admin_tls" => admin_tls,
        "shutdown_grace_secs" => shutdown_grace,
        "metrics" => metrics,
        "session" => session,
        "worker" => worker,
        "store" => store,
        "log" => log,
        "systemd" => systemd,
        "traces" => traces,
        "proxy.threads" => proxy.threads,
        "proxy.max_connections" => proxy.max_connections,
        "proxy.max_upstream_connections" => proxy.max_upstream_connections,
        "proxy.header_read_timeout_secs" => proxy.header_read_timeout,
        "proxy.keep_alive_idle_timeout_secs" => proxy.keep_alive_idle_timeout,
        "proxy.h2_max_concurrent_streams" => proxy.h2_max_concurrent_streams,
    );
    if !restart_only.is_empty() {
        tracing::warn!(
            keys = ?restart_only,
            "SIGHUP: these settings changed and take effect only at a restart",
        );
    }
    tracing::info!(
        generation = reloaded.generation,
        routes_added = ?reloaded.routes_added,
        routes_removed = ?reloaded.routes_removed,
        endpoints_added = reloaded.endpoints_added,
        endpoints_removed = reloaded.endpoints_removed,
        "SIGHUP: routes reloaded",
    );
    *current = running;
}

fn serving_status(daemon: &Daemon) -> String {
    let metrics = daemon
        .metrics_addr()
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    format!(
        "Serving MCP on {} (admin {}, metrics {})",
        daemon.data_addr(),
        daemon.admin_endpoint(),
        metrics
    )
}

/// Pings the watchdog at its interval (through the drain too) and refreshes the `STATUS=` line
/// while serving. The pings come from the same runtime as the planes, so a wedged runtime
/// stops them and systemd restarts the service.
async fn supervise(
    notifier: Notifier,
    watchdog: Option<Duration>,
    data_addr: SocketAddr,
    observed: Observed,
    shutdown: CancellationToken,
) {
    if !notifier.is_enabled() {
        return;
    }
    let period = watchdog.map_or(STATUS_PERIOD, |w| w.min(STATUS_PERIOD));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if watchdog.is_some() {
            notifier.watchdog();
        }
        if !shutdown.is_cancelled() && last_status.elapsed() >= STATUS_PERIOD {
            last_status = tokio::time::Instant::now();
            let s = DaemonSnapshot::take(&observed);
            notifier.status(&format!(
                "Serving MCP on {data_addr}: {} sessions, {} SSE streams open, {} events forwarded",
                s.sessions, s.proxy.streams_open, s.proxy.events_forwarded,
            ));
        }
    }
}
