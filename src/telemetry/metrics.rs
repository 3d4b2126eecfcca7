//! Prometheus metrics: the `metrics` facade with `metrics-exporter-prometheus` as the recorder,
//! one recorder per daemon (not the process-global one, so several daemons in one test process
//! keep their own numbers), rendered as Prometheus text by an axum route.
//!
//! Two kinds of numbers:
//! - **Per request**, recorded by [`RequestMetricsLayer`] around the data-plane router:
//!   `mcp_relay_http_requests_total` and the histogram `mcp_relay_http_request_duration_seconds`
//!   (time until the response head; an SSE stream's life is not in it), labelled by HTTP
//!   `method`, `status` and `era` (`modern` when `MCP-Protocol-Version` is 2026-07-28 or later,
//!   else `legacy`).
//! - **At scrape time**, copied from the atomics the session core and the data plane already
//!   keep ([`Observed`], [`DaemonSnapshot::take`]): sessions, SSE streams and events, dedup drops, replays,
//!   resumptions, upstream reconnects, and the persistence worker's counters. Each counter's
//!   series (name, kind, HELP) is declared with it ([`crate::counters`]); the few numbers read
//!   from the session core's state are in this module's table. The gRPC control plane reads
//!   the same [`DaemonSnapshot`]. Besides, `mcp_relay_runtime_alive_tasks`: the
//!   alive tasks of the daemon's tokio runtimes (tokio `RuntimeMetrics::num_alive_tasks`),
//!   which tells an operator (and the load harness) how many tasks each open stream costs; and
//!   `mcp_relay_data_plane_connections{thread}`: client connections open on each data-plane
//!   thread, which shows how evenly they are spread.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use http::Method;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use parking_lot::RwLock;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    counters::{Export, Kind},
    protocol::{Era, headers::MCP_PROTOCOL_VERSION},
    proxy::stats::{ProxyStats, ProxyStatsSnapshot},
    session::{SessionManager, SessionStatsSnapshot, WorkerSnapshot},
};

mod layer;
mod upstreams;
pub use layer::{RequestMetrics, RequestMetricsFuture, RequestMetricsLayer};

/// Where the daemon's numbers are read from: the session core (its sessions, its counters and
/// the persistence worker's) and the data plane's counters. Cheap to clone; the control
/// plane's metric reads take the same.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The session core.
    pub manager: Arc<SessionManager>,
    /// The data plane's counters.
    pub proxy: Arc<ProxyStats>,
}

const REQUESTS: &str = "mcp_relay_http_requests_total";
const REQUEST_DURATION: &str = "mcp_relay_http_request_duration_seconds";
/// Buckets of the request histogram, in seconds: sub-millisecond proxy answers up to the
/// upstream response timeout.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// How often the daemon folds recorded histogram samples into their buckets (the recorder keeps
/// every sample until then).
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Tasks alive in the tokio runtime that renders the metrics (the daemon's one runtime).
const ALIVE_TASKS: &str = "mcp_relay_runtime_alive_tasks";
const DATA_PLANE_CONNECTIONS: &str = "mcp_relay_data_plane_connections";
const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Every number the daemon exports besides per-request metrics, read at one moment: the groups
/// of counters as they are declared ([`crate::counters`]), and the numbers read from the
/// session core's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaemonSnapshot {
    /// Live sessions.
    pub sessions: u64,
    /// Streams and session operations waiting for the persistence worker's next flush, read
    /// from its queue ([`crate::session::PersistenceHandle::pending_len`]).
    pub worker_pending: u64,
    /// The data plane's counters.
    pub proxy: ProxyStatsSnapshot,
    /// The session core's counters.
    pub session: SessionStatsSnapshot,
    /// The persistence worker's counters.
    pub worker: WorkerSnapshot,
}

impl DaemonSnapshot {
    /// Stream advances per stream position written (the coalesce ratio); 0 before any write.
    pub fn coalesce_ratio(&self) -> f64 {
        if self.worker.stream_writes == 0 {
            0.0
        } else {
            self.worker.updates as f64 / self.worker.stream_writes as f64
        }
    }

    /// Reads the session core's and the data plane's atomics.
    pub fn take(observed: &Observed) -> Self {
        let manager = &observed.manager;
        let persistence = manager.persistence();
        Self {
            sessions: manager.len() as u64,
            worker_pending: persistence.pending_len() as u64,
            proxy: observed.proxy.snapshot(),
            session: manager.stats().snapshot(),
            worker: persistence.metrics().snapshot(),
        }
    }
}

/// What is exported at scrape time besides the groups' own rows
/// ([`ProxyStatsSnapshot::EXPORTS`], [`SessionStatsSnapshot::EXPORTS`],
/// [`WorkerSnapshot::EXPORTS`]).
const EXPORTS: &[Export<DaemonSnapshot>] = &[
    Export {
        name: "mcp_relay_sessions",
        kind: Kind::Gauge,
        help: "Live legacy sessions.",
        read: |s| s.sessions,
    },
    Export {
        name: "mcp_relay_persistence_pending",
        kind: Kind::Gauge,
        help: "Streams and session operations waiting for the next flush.",
        read: |s| s.worker_pending,
    },
];

enum Handle {
    Counter(Counter),
    Gauge(Gauge),
    GaugeMicrosAsSeconds(Gauge),
}

/// The series of one list of [`Export`]s, registered with the recorder, in its order.
struct Series<S: 'static> {
    rows: &'static [Export<S>],
    handles: Vec<Handle>,
}

impl<S> Series<S> {
    /// Describes and registers every row of `rows`.
    fn register(recorder: &PrometheusRecorder, rows: &'static [Export<S>]) -> Self {
        let handles = rows
            .iter()
            .map(|row| {
                let key = Key::from_static_name(row.name);
                let name = KeyName::from_const_str(row.name);
                match row.kind {
                    Kind::Counter => {
                        recorder.describe_counter(name, None, row.help.into());
                        Handle::Counter(recorder.register_counter(&key, &METADATA))
                    }
                    Kind::Gauge => {
                        recorder.describe_gauge(name, None, row.help.into());
                        Handle::Gauge(recorder.register_gauge(&key, &METADATA))
                    }
                    Kind::GaugeMicrosAsSeconds => {
                        recorder.describe_gauge(name, Some(Unit::Seconds), row.help.into());
                        Handle::GaugeMicrosAsSeconds(recorder.register_gauge(&key, &METADATA))
                    }
                }
            })
            .collect();
        Self { rows, handles }
    }

    /// Copies each row's number from `snapshot` into its series.
    fn set(&self, snapshot: &S) {
        for (row, handle) in self.rows.iter().zip(&self.handles) {
            let value = (row.read)(snapshot);
            match handle {
                Handle::Counter(c) => c.absolute(value),
                Handle::Gauge(g) => g.set(value as f64),
                Handle::GaugeMicrosAsSeconds(g) => g.set(value as f64 / 1e6),
            }
        }
    }
}

/// Every series exported at scrape time, by the snapshot it reads.
struct Exports {
    daemon: Series<DaemonSnapshot>,
    proxy: Series<ProxyStatsSnapshot>,
    session: Series<SessionStatsSnapshot>,
    worker: Series<WorkerSnapshot>,
}

impl Exports {
    fn register(recorder: &PrometheusRecorder) -> Self {
        Self {
            daemon: Series::register(recorder, EXPORTS),
            proxy: Series::register(recorder, ProxyStatsSnapshot::EXPORTS),
            session: Series::register(recorder, SessionStatsSnapshot::EXPORTS),
            worker: Series::register(recorder, WorkerSnapshot::EXPORTS),
        }
    }

    fn set(&self, snapshot: &DaemonSnapshot) {
        self.daemon.set(snapshot);
        self.proxy.set(&snapshot.proxy);
        self.session.set(&snapshot.session);
        self.worker.set(&snapshot.worker);
    }
}

/// Labels of one request series: method index, status code, modern era.
type SeriesKey = (&'static str, u16, bool);

/// What [`Metrics::watch_data_plane`] exports.
#[derive(Default)]
struct DataPlaneGauges {
    runtimes: Vec<tokio::runtime::Handle>,
    connections: Vec<(Arc<AtomicUsize>, Gauge)>,
}

/// The daemon's metrics: a Prometheus recorder, the handles exported at scrape time, and a
/// cache of per-request series so the hot path builds no label set after a series' first use.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    observed: Observed,
    exports: Exports,
    /// `mcp_relay_runtime_alive_tasks`, read from the runtimes at each render.
    alive_tasks: Gauge,
    /// The data plane's threads: their runtimes (counted besides the one rendering) and, per
    /// thread, its open client connections with the gauge they are exported as.
    data_plane: parking_lot::Mutex<DataPlaneGauges>,
    series: RwLock<HashMap<SeriesKey, (Counter, Histogram)>>,
    /// The routes whose endpoints are exported ([`Metrics::watch_routing`]).
    routing: parking_lot::Mutex<Option<Arc<crate::proxy::route::Routing>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics of the daemon whose numbers are `observed`.
    pub fn new(observed: Observed) -> Arc<Self> {
        let builder = PrometheusBuilder::new();
        // Only an empty bucket list is refused; ours is not empty.
        let builder = match builder
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.to_owned()), DURATION_BUCKETS)
        {
            Ok(b) => b,
            Err(err) => unreachable!("non-empty histogram buckets: {err}"),
        };
        let builder = match builder.set_buckets_for_metric(
            Matcher::Full(upstreams::UPSTREAM_DURATION.to_owned()),
            DURATION_BUCKETS,
        ) {
            Ok(b) => b,
            Err(err) => unreachable!("non-empty histogram buckets: {err}"),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();

        recorder.describe_counter(
            KeyName::from_const_str(REQUESTS),
            None,
            "Client requests answered by the data plane, by HTTP method, status and MCP era."
                .into(),
        );
        recorder.describe_histogram(
            KeyName::from_const_str(REQUEST_DURATION),
            Some(Unit::Seconds),
            "Time from a client request to its response head (not an SSE stream's life).".into(),
        );
        let version = Label::from_static_parts("version", env!("CARGO_PKG_VERSION"));
        recorder.describe_gauge(
            KeyName::from_const_str("mcp_relay_build_info"),
            None,
            "Always 1; the version label tells which mcp-relay is running.".into(),
        );
        recorder
            .register_gauge(
                &Key::from_parts("mcp_relay_build_info", vec![version]),
                &METADATA,
            )
            .set(1.0);

        recorder.describe_gauge(
            KeyName::from_const_str(ALIVE_TASKS),
            None,
            "Tokio tasks alive in the daemon's runtimes now (the main one and each data-plane \
             thread's): connections, stream pumps, workers."
                .into(),
        );
        let alive_tasks = recorder.register_gauge(&Key::from_static_name(ALIVE_TASKS), &METADATA);

        let exports = Exports::register(&recorder);
        Arc::new(Self {
            recorder,
            handle,
            observed,
            exports,
            alive_tasks,
            data_plane: parking_lot::Mutex::new(DataPlaneGauges::default()),
            series: RwLock::new(HashMap::new()),
            routing: parking_lot::Mutex::new(None),
        })
    }

    /// Exports the data plane's threads: the tasks of their `runtimes` count in
    /// `mcp_relay_runtime_alive_tasks`, and `open[i]` (thread `i`'s client connections) is
    /// `mcp_relay_data_plane_connections{thread="i"}`.
    pub fn watch_data_plane(
        &self,
        runtimes: Vec<tokio::runtime::Handle>,
        open: Vec<Arc<AtomicUsize>>,
    ) {
        self.recorder.describe_gauge(
            KeyName::from_const_str(DATA_PLANE_CONNECTIONS),
            None,
            "Client connections open on each data-plane thread (label thread: its index); \
             connections go to the thread with the fewest."
                .into(),
        );
        let connections = open
            .into_iter()
            .enumerate()
            .map(|(i, count)| {
                let label = Label::new("thread", i.to_string());
                let key = Key::from_parts(DATA_PLANE_CONNECTIONS, vec![label]);
                (count, self.recorder.register_gauge(&key, &METADATA))
            })
            .collect();
        *self.data_plane.lock() = DataPlaneGauges {
            runtimes,
            connections,
        };
    }

    /// Copies the session core's and the data plane's numbers ([`Observed`]) into the exported series, then renders every series
    /// as Prometheus text (exposition format 0.0.4).
    pub fn render(&self) -> String {
        let snapshot = DaemonSnapshot::take(&self.observed);
        self.exports.set(&snapshot);
        let here = tokio::runtime::Handle::try_current()
            .map_or(0, |runtime| runtime.metrics().num_alive_tasks());
        let data_plane = self.data_plane.lock();
        let elsewhere: usize = data_plane
            .runtimes
            .iter()
            .map(|runtime| runtime.metrics().num_alive_tasks())
            .sum();
        self.alive_tasks.set((here + elsewhere) as f64);
        for (count, gauge) in &data_plane.connections {
            gauge.set(count.load(Ordering::Relaxed) as f64);
        }
        drop(data_plane);
        self.handle.run_upkeep();
        self.with_upstreams(self.handle.render())
    }

    /// Folds the histogram samples recorded since the last upkeep into their buckets, so
    /// their memory is bounded whether or not anyone scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Records one answered request.
    pub fn record_request(&self, method: &Method, status: StatusCode, era: Era, started: Instant) {
        let key: SeriesKey = (method_label(method), status.as_u16(), era == Era::Modern);
        let elapsed = started.elapsed().as_secs_f64();
        if let Some((count, duration)) = self.series.read().get(&key) {
            count.increment(1);
            duration.record(elapsed);
            return;
        }
        let labels = vec![
            Label::from_static_parts("method", key.0),
            Label::new("status", key.1.to_string()),
            Label::from_static_parts("era", era.as_str()),
        ];
        let count = self
            .recorder
            .register_counter(&Key::from_parts(REQUESTS, labels.clone()), &METADATA);
        let duration = self
            .recorder
            .register_histogram(&Key::from_parts(REQUEST_DURATION, labels), &METADATA);
        count.increment(1);
        duration.record(elapsed);
        self.series.write().insert(key, (count, duration));
    }

    /// A tower layer that records every request of the service it wraps.
    pub fn layer(self: &Arc<Self>) -> RequestMetricsLayer {
        RequestMetricsLayer {
            metrics: self.clone(),
        }
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Whether the daemon takes traffic: set once every listener is serving, cleared when
/// shutdown begins. `/readyz` answers from it.
#[derive(Debug, Default)]
pub struct Readiness(std::sync::atomic::AtomicBool);

impl Readiness {
    /// Marks the daemon ready (`true`) or draining (`false`).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the daemon is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct TelemetryState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// The router of the metrics listener: `GET /metrics` (Prometheus text), `GET /healthz`
/// (`200` while the process serves HTTP at all) and `GET /readyz` (`200` when ready, `503`
/// before that and while draining).
pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(TelemetryState { metrics, readiness })
}

async fn scrape(State(state): State<TelemetryState>) -> Response {
    let text = state.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn ready(State(state): State<TelemetryState>) -> Response {
    if state.readiness.get() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::session::{PersistenceWorker, SessionConfig, WorkerConfig, store::MemoryStore};

    /// The families of `text` (Prometheus text) in name order, each as rendered: `# HELP`,
    /// `# TYPE`, then its samples. The exporter renders families in hash order; within one,
    /// the order is its own.
    fn by_family(text: &str) -> String {
        let mut family = "";
        let mut lines: Vec<(&str, &str)> = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                family = rest.split(' ').next().unwrap_or_default();
            }
            lines.push((family, line));
        }
        lines.sort_by_key(|(family, _)| *family);
        lines
            .into_iter()
            .map(|(_, line)| format!("{line}\n"))
            .collect()
    }

    /// A daemon whose numbers all differ: the data plane's and the session core's counters
    /// are 1001, 1002, ... (in the order they were declared in when they were one group), the
    /// worker's 2001, 2002, ...; 3 live sessions, whose 3 records wait for the (idle) worker.
    pub(crate) fn numbered() -> Observed {
        let (_worker, handle) =
            PersistenceWorker::new(Arc::new(MemoryStore::new()), WorkerConfig::default());
        let w = handle.metrics();
        let worker: [&AtomicU64; 16] = [
            &w.updates,
            &w.stream_writes,
            &w.session_writes,
            &w.batches,
            &w.batch_entries,
            &w.max_batch_size,
            &w.errors,
            &w.retries,
            &w.shed,
            &w.pending,
            &w.consecutive_failures,
            &w.last_flush_micros,
            &w.max_flush_micros,
            &w.flush_micros_total,
            &w.sessions_claimed,
            &w.bad_records,
        ];
        for (i, counter) in (2001..).zip(worker) {
            counter.store(i, Ordering::Relaxed);
        }
        let manager = Arc::new(SessionManager::new(SessionConfig::default(), handle));
        let p = ProxyStats::default();
        let s = manager.stats();
        let proxy: [&AtomicU64; 30] = [
            &p.events_forwarded,
            &p.duplicates_dropped,
            &s.events_replayed,
            &p.resumptions,
            &p.resumptions_refused,
            &p.upstream_reconnects,
            &p.upstream_streams_malformed,
            &p.streams_opened,
            &p.streams_open,
            &p.connections_refused,
            &p.upstream_connections_refused,
            &p.upstream_idle_closed,
            &p.header_read_timeouts,
            &p.idle_connections_closed,
            &p.request_body_timeouts,
            &s.sessions_refused,
            &p.standalone_waits,
            &p.standalone_wait_timeouts,
            &p.upstream_streams_broken,
            &p.keepalives_sent,
            &p.no_endpoint_available,
            &p.answers_too_large,
            &p.unreadable_refused,
            &p.tls_handshake_failures,
            &p.auth_accepted,
            &p.auth_missing,
            &p.auth_invalid,
            &p.auth_insufficient_scope,
            &p.auth_unavailable,
            &p.admin_tls_refused,
        ];
        for (i, counter) in (1001..).zip(proxy) {
            counter.store(i, Ordering::Relaxed);
        }
        for n in 0..3 {
            manager
                .create_session(
                    HeaderValue::from(n),
                    "/mcp".into(),
                    "http://upstream".into(),
                    "2025-06-18",
                )
                .expect("a session");
        }
        Observed {
            manager,
            proxy: Arc::new(p),
        }
    }

    /// Every exported series of a daemon whose numbers all differ: each name, HELP text, TYPE
    /// and value (which number each series reads) is pinned in `exported_metrics.txt`. After
    /// an intended change, the failure's `left` is the file's new text.
    #[test]
    fn the_exported_names_help_types_and_values_are_pinned() {
        let metrics = Metrics::new(numbered());
        metrics.watch_data_plane(Vec::new(), vec![Arc::new(AtomicUsize::new(7))]);
        metrics.record_request(&Method::GET, StatusCode::OK, Era::Legacy, Instant::now());
        // Outside a runtime `mcp_relay_runtime_alive_tasks` is 0; the request's duration
        // (its buckets and sum) is the one number that varies.
        let rendered = metrics.render();
        let steady = rendered
            .lines()
            .filter(|l| {
                !l.starts_with("mcp_relay_http_request_duration_seconds_bucket")
                    && !l.starts_with("mcp_relay_http_request_duration_seconds_sum")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let expected =
            include_str!("exported_metrics.txt").replace("{version}", env!("CARGO_PKG_VERSION"));
        assert_eq!(by_family(&steady), expected, "rendered:\n{rendered}");
    }
}
