//! The daemon's settings, with their defaults and units.
//!
//! These structs (and the sections they hold: [`SessionConfig`], [`WorkerConfig`],
//! [`StoreConfig`], [`crate::session::TrackerLimits`]) are what the running daemon reads, and
//! they are also the schema of the configuration file, so each setting is written once: its
//! field, doc and default in its struct, its key from serde. Conventions, the same in each:
//!
//! - a field's key is its name, except a duration's, which carries its unit: `shutdown_grace:
//!   Duration` is `#[serde(rename = "shutdown_grace_secs")]`, read and written as whole seconds
//!   by serde_with's `DurationSeconds<u64>` (`DurationMilliSeconds<u64>` for `_ms`): a float or
//!   a negative number is refused like for any integer key, zero reads as zero (the checks in
//!   [`file`](mod@file) refuse it where it makes no sense);
//! - `#[serde(deny_unknown_fields)]` everywhere, so a typo is an error; sections with a
//!   `Default` also take `#[serde(default)]`;
//! - fields are declared in the file's key order, the order an unknown key's error lists them;
//! - every field is a setting (none is computed, so none is skipped).
//!
//! Operators set them through the layers in [`file`](mod@file) (embedded defaults < TOML file <
//! `MCP_RELAY_…` environment < flags); tests build them directly.

pub mod auth;
pub mod cache;
pub mod file;
pub mod policy;
pub mod rate_limit;
pub mod routes;

pub use auth::{AuthConfig, AuthMode, UpstreamAuthorization};
pub use cache::CacheConfig;
pub use policy::PolicyConfig;
pub use rate_limit::{RateLimitConfig, ToolRateLimit};
pub use routes::{EndpointConfig, HealthCheck, ResolvedRoute, RouteConfig};

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use http::Uri;
use serde::{Deserialize, Serialize};
use serde_with::{DurationMilliSeconds, DurationSeconds, serde_as};

use crate::{
    session::{SessionConfig, WorkerConfig, store::StoreConfig},
    tls::TlsConfig,
};

/// Everything the daemon needs to run. Defaults: [`Config::new`]; the file's top level.
#[serde_as]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Data plane listen address. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Control plane (gRPC) listen address. Default `127.0.0.1:50051`.
    pub admin_listen: SocketAddr,
    /// When set, the control plane listens on this Unix socket (mode 0600) instead of
    /// `admin_listen`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_socket: Option<PathBuf>,
    /// When set, every control-plane call must carry `authorization: Bearer <token>`
    /// (`UNAUTHENTICATED` otherwise); required for a non-loopback `admin_listen`. A secret: never
    /// logged, masked by `check-config`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// TLS on the data plane (`[tls]`): `cert_file` and `key_file` (PEM) make `listen` speak
    /// HTTPS (ALPN h2 and http/1.1); re-read on SIGHUP. `client_ca_file` is refused here.
    /// Default: none (plain HTTP).
    #[serde(default, skip_serializing_if = "TlsConfig::is_default")]
    pub tls: TlsConfig,
    /// TLS on the control plane (`[admin_tls]`): `cert_file` and `key_file` (PEM), and
    /// optionally `client_ca_file`: clients must then present a certificate signed by one of
    /// those CAs (mTLS), with or without `admin_token`. Re-read on SIGHUP. TCP only
    /// (`admin_socket` is refused with it). Default: none.
    #[serde(default, skip_serializing_if = "TlsConfig::is_default")]
    pub admin_tls: TlsConfig,
    /// How long shutdown waits for open requests and streams before it closes them. Default 10 s.
    #[serde(rename = "shutdown_grace_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub shutdown_grace: Duration,
    /// The data plane (`[proxy]`).
    pub proxy: ProxyConfig,
    /// Routes (`[[routes]]`): endpoint paths, each with its pool of upstream endpoints and its
    /// overrides of `[proxy]` keys. `proxy.upstream`, when set, is one more route at
    /// `proxy.endpoint_path`. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// The session core (`[session]`).
    pub session: SessionConfig,
    /// The persistence worker (`[worker]`).
    pub worker: WorkerConfig,
    /// Where sessions are persisted (memory, or Redis for restarts and replicas).
    pub store: StoreConfig,
    /// The Prometheus metrics listener.
    pub metrics: MetricsConfig,
    /// Where and how the daemon logs.
    pub log: LogConfig,
    /// Integration with the systemd service manager.
    pub systemd: SystemdConfig,
    /// Distributed traces (`[traces]`): off unless an OTLP endpoint is set.
    #[serde(default, skip_serializing_if = "TracesConfig::is_default")]
    pub traces: TracesConfig,
}

/// Distributed traces: W3C trace context in, a span per request and per SSE stream, exported
/// with OTLP/gRPC (`telemetry::traces`). Off (and free) unless `otlp_endpoint` is set.
#[serde_as]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// The OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`; empty: no traces. Default empty.
    pub otlp_endpoint: String,
    /// `service.name` of the spans. Default `mcp-relay`.
    pub service_name: String,
    /// How long finished spans wait to be exported together, in ms. Default 1000.
    #[serde(rename = "export_delay_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub export_delay: Duration,
    /// Most finished spans held for export; past it new ones are dropped (counted by the
    /// exporter's own log). Default 8192.
    pub max_queued_spans: usize,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: "mcp-relay".into(),
            export_delay: Duration::from_millis(1000),
            max_queued_spans: 8192,
        }
    }
}

impl TracesConfig {
    /// Whether it is the default (nothing to serialize).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The HTTP listener serving `/metrics` (Prometheus text), `/healthz` and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Whether the listener is served. Default true.
    pub enabled: bool,
    /// Its address, kept when `enabled` is false so the setting survives being switched off.
    /// Default `127.0.0.1:9464`.
    pub listen: SocketAddr,
}

impl MetricsConfig {
    /// The address to serve metrics on; `None` when the listener is disabled.
    pub fn address(&self) -> Option<SocketAddr> {
        self.enabled.then_some(self.listen)
    }
}

/// The default metrics address: loopback, the port commonly used by Prometheus exporters of
/// OpenTelemetry-era services.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_METRICS_LISTEN,
        }
    }
}

/// Log settings. `RUST_LOG`, when set, overrides `filter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Where log records go. Default [`LogTarget::Auto`].
    pub target: LogTarget,
    /// How records written to stderr look. Default [`LogFormat::Text`].
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `mcp_relay=debug,info`. Default `info`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            target: LogTarget::Auto,
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// Where log records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// The journal when systemd connected stderr to it (`JOURNAL_STREAM` names stderr), else
    /// stderr.
    Auto,
    /// Always stderr.
    Stderr,
    /// Always the journal (native protocol, structured fields).
    Journald,
}

/// The format of records written to stderr (the journal is always structured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per record.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// systemd integration. Readiness (`READY=1`), `STATUS=` and `STOPPING=1` are sent whenever
/// `NOTIFY_SOCKET` is set; nothing here turns them off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemdConfig {
    /// Send `WATCHDOG=1` at half of `WATCHDOG_USEC` when the unit sets `WatchdogSec=`.
    /// Default true.
    pub watchdog: bool,
}

impl Default for SystemdConfig {
    fn default() -> Self {
        Self { watchdog: true }
    }
}

/// Settings of the data plane. Defaults: [`ProxyConfig::new`].
#[serde_as]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The upstream MCP endpoint, e.g. `http://127.0.0.1:3001/mcp`. Required: it has no default,
    /// and [`file::load`] refuses a configuration without an `http://` URL with a host here.
    #[serde(
        default,
        with = "upstream_key",
        skip_serializing_if = "upstream_key::is_unset"
    )]
    pub upstream: Uri,
    /// The path clients use for the MCP endpoint. Default `/mcp`.
    pub endpoint_path: String,
    /// Origins allowed in addition to loopback ones, exactly as browsers send them
    /// (`scheme://host[:port]`); `*` allows any. Default: none.
    pub allowed_origins: Vec<String>,
    /// Whether `Origin`s on loopback hosts (`localhost`, `127.0.0.0/8`, `[::1]`) are allowed.
    /// Default true.
    pub allow_loopback_origins: bool,
    /// Host names the data plane answers for besides loopback ones (`localhost`, `127.0.0.0/8`,
    /// `[::1]`, always allowed): `host` (any port) or `host:port`, compared case-insensitively;
    /// `*` allows any. A request for another `Host` gets `421` (DNS-rebinding protection: the
    /// upstream only ever sees the proxy's own `Host`). Default: none (loopback names only);
    /// required when `listen` is not a loopback address.
    pub allowed_hosts: Vec<String>,
    /// Largest client request body accepted, in bytes. Default 4 MiB.
    pub max_request_body_bytes: usize,
    /// Largest single SSE block (an event, or a comment) accepted from the upstream, in bytes;
    /// a larger one ends the stream as a broken upstream before it is held whole. Default 16 MiB.
    pub max_event_bytes: usize,
    /// Seconds with nothing sent on an SSE stream to a client after which it gets a keep-alive
    /// comment (`: keep-alive`), so the idle timeouts of load balancers, reverse proxies and
    /// NATs in front of the proxy do not cut a stream whose tool is still working. Never
    /// recorded, replayed or counted as an event. 0: off. Default 15 s.
    #[serde(rename = "sse_keepalive_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub sse_keepalive: Duration,
    /// Time allowed to connect to the upstream. Default 5 s.
    #[serde(rename = "upstream_connect_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub upstream_connect_timeout: Duration,
    /// Time allowed for the upstream's response headers once the request is sent. Default 60 s.
    #[serde(rename = "upstream_response_timeout_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub upstream_response_timeout: Duration,
    /// How long an upstream connection may sit idle in the pool before it is closed instead
    /// of reused. Keep it below the upstream's own keep-alive timeout (uvicorn and Node close
    /// after 5 s), or a request written as the upstream closes the connection is lost with a
    /// reset. Default 4 s.
    #[serde(rename = "upstream_idle_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub upstream_idle_timeout: Duration,
    /// Seconds an upstream connection may carry nothing before TCP keep-alive probes start
    /// (then every third of it, three unanswered ones end the connection): an upstream host
    /// that died or a network that split leaves no FIN, and a stream waiting on it (kept alive
    /// toward the client by its keep-alive comments) would wait for ever. A stream ended so is
    /// counted in `mcp_relay_sse_upstream_broken_total`. 0: no probes. Default 30 s.
    #[serde(rename = "upstream_tcp_keepalive_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub upstream_tcp_keepalive: Duration,
    /// Data-plane threads: each serves the client connections handed to it (a new one goes to
    /// the thread with the fewest open), with their upstream connections, on its own
    /// single-threaded runtime. Each thread keeps its own idle upstream pool (up to 512). 0: one
    /// per CPU. Default 0.
    pub threads: usize,
    /// Most client connections open at once on the data plane; past it a new connection gets
    /// a canned `503` and is closed at once (counted in
    /// `mcp_relay_connections_refused_total`, logged). Clamped at start to what the process's
    /// descriptor limit (`RLIMIT_NOFILE`) leaves room for (two descriptors per connection: the
    /// client's and its upstream's). Default 16384 (the unit's `LimitNOFILE=` is 65536).
    pub max_connections: usize,
    /// Most upstream connections open at once, over every data-plane thread's pool, streams
    /// and lingering pumps (and the main runtime's client that ends sessions). At it, a
    /// request that needs a new upstream connection makes one stream whose client left stop
    /// (live traffic first) and waits up to 100 ms for a place; failing that it gets `503`
    /// with a JSON-RPC error (counted in `mcp_relay_upstream_connections_refused_total`,
    /// logged) instead of failing on descriptor exhaustion. 0: what the descriptor limit (`RLIMIT_NOFILE`) leaves after
    /// `max_connections` and a reserve of 256 (a larger value is clamped to it). Default 0.
    pub max_upstream_connections: usize,
    /// Time a client has to send a complete request head (HTTP/1 only; slowloris): the first
    /// from accept (a connection is HTTP/2 only once its whole preface arrived), each next one
    /// from its first byte (or, pipelined behind a request, from that request's end). Past it the connection is closed (counted in
    /// `mcp_relay_header_read_timeouts_total`). Default 10 s.
    #[serde(rename = "header_read_timeout_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub header_read_timeout: Duration,
    /// Time a client connection may stay open with no request in flight (HTTP/1.1 keep-alive,
    /// or an HTTP/2 connection with no stream) before the proxy closes it gracefully. Default
    /// 60 s.
    #[serde(rename = "keep_alive_idle_timeout_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub keep_alive_idle_timeout: Duration,
    /// Most concurrent streams a client may open on one h2 connection (advertised in its
    /// SETTINGS; each stream can hold an upstream connection). hyper's h2 refuses a stream past
    /// it with `REFUSED_STREAM` before the proxy sees a request, so it is not counted here; the
    /// upstream connections those streams would take are (`max_upstream_connections`).
    /// Default 100.
    pub h2_max_concurrent_streams: u32,
    /// Time a client has to send a whole request body once its head is in; past it the request
    /// gets `408` with a JSON-RPC error and the connection closes. Default 30 s.
    #[serde(rename = "request_body_timeout_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub request_body_timeout: Duration,
    /// The forwarded headers toward the upstream (`Forwarded`, RFC 7239, and
    /// `X-Forwarded-For`/`-Proto`/`-Host`): [`ForwardedMode`]. Default `append`: the upstream
    /// learns the client's address, as operators expect of a reverse proxy, while values a
    /// client sent are dropped unless it is one of `trusted_proxies` (none by default), so no
    /// client can spoof its address.
    pub forwarded: ForwardedMode,
    /// The proxies in front of this one whose forwarded headers are kept in `append` mode: IP
    /// addresses (`10.1.2.3`, `::1`) or CIDR ranges (`10.0.0.0/8`, `fd00::/8`), matched
    /// against the connection's peer address. Default: none.
    pub trusted_proxies: Vec<String>,
    /// Consecutive failures of an upstream endpoint (no connection, a reset or broken
    /// exchange, no answer in time, a `5xx`) after which it is ejected from its pool: it gets
    /// no new work for `base_ejection_time_ms` times the number of times it was ejected, at
    /// most `max_ejection_time_ms` (Envoy's outlier detection). 0: never ejected. Default 5.
    pub eject_after_failures: u32,
    /// The first ejection's length, in ms; each next one of the same endpoint is one more of
    /// it. Default 30000.
    #[serde(rename = "base_ejection_time_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub base_ejection_time: Duration,
    /// The longest ejection, in ms. Default 300000.
    #[serde(rename = "max_ejection_time_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub max_ejection_time: Duration,
    /// Active health checks of every upstream endpoint: [`HealthCheck`]. A failed check
    /// counts as a failure (above); a passed one ends an ejection at once. Default `none`.
    pub health_check: HealthCheck,
    /// Period of the active health checks, in ms (each check's timeout is the same, but at
    /// least 2 s and at most `upstream_response_timeout_secs`; checks of one endpoint never
    /// overlap). Default 10000.
    #[serde(rename = "health_check_interval_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub health_check_interval: Duration,
    /// The path an `http` health check GETs on the endpoint's host; empty: the endpoint's own
    /// path. Default empty.
    pub health_check_path: String,
    /// The public URL of the MCP endpoint at `endpoint_path` (the `upstream` route) as clients
    /// reach it, e.g. `https://mcp.example.com/mcp` behind a TLS terminator: the `resource` of
    /// its OAuth protected-resource metadata (RFC 9728) and the origin and path of the
    /// `resource_metadata` URL in its `401`/`403` challenges (`proxy::oauth`). An absolute
    /// `http(s)://` URL without user info, query or fragment. Not inherited by `[[routes]]`: a
    /// URL names one resource, so each route sets its own `public_url`. Default: none
    /// (`http://` + the request's validated `Host` + the route's path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// PEM CA certificates `https://` upstream endpoints are verified against, instead of the
    /// system's roots (a private PKI). Server names are checked as usual (SNI and the
    /// certificate's names). Default: none (the system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Who validates the clients' OAuth tokens: [`AuthConfig`] (`[proxy.auth]`; a route's
    /// `[routes.auth]` replaces it whole). Default: the upstream (transparent).
    #[serde(default, skip_serializing_if = "AuthConfig::is_default")]
    pub auth: AuthConfig,
    /// Which tools, resources and prompts clients may list and use: [`PolicyConfig`]
    /// (`[proxy.policy]`; a route's `[routes.policy]` replaces it whole). Default: all.
    #[serde(default, skip_serializing_if = "PolicyConfig::is_empty")]
    pub policy: PolicyConfig,
    /// Token-bucket rate limits per client, per route, per client and tool:
    /// [`RateLimitConfig`] (`[proxy.rate_limit]`; a route's `[routes.rate_limit]` replaces it
    /// whole). Default: none.
    #[serde(default, skip_serializing_if = "RateLimitConfig::is_default")]
    pub rate_limit: RateLimitConfig,
    /// Result caching of what 2026-07-28 servers mark cacheable: [`CacheConfig`]
    /// (`[proxy.cache]`; a route's `[routes.cache]` replaces it whole). Default: off.
    #[serde(default, skip_serializing_if = "CacheConfig::is_default")]
    pub cache: CacheConfig,
}

impl ProxyConfig {
    /// Defaults for a proxy in front of `upstream`.
    pub fn new(upstream: Uri) -> Self {
        Self {
            upstream,
            endpoint_path: "/mcp".into(),
            allowed_origins: Vec::new(),
            allow_loopback_origins: true,
            allowed_hosts: Vec::new(),
            max_request_body_bytes: 4 << 20,
            max_event_bytes: 16 << 20,
            sse_keepalive: Duration::from_secs(15),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(4),
            upstream_tcp_keepalive: Duration::from_secs(30),
            threads: 0,
            max_connections: 16384,
            max_upstream_connections: 0,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_idle_timeout: Duration::from_secs(60),
            h2_max_concurrent_streams: 100,
            request_body_timeout: Duration::from_secs(30),
            forwarded: ForwardedMode::Append,
            trusted_proxies: Vec::new(),
            eject_after_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            health_check: HealthCheck::None,
            health_check_interval: Duration::from_secs(10),
            health_check_path: String::new(),
            public_url: None,
            upstream_ca_file: None,
            auth: AuthConfig::default(),
            policy: PolicyConfig::default(),
            rate_limit: RateLimitConfig::default(),
            cache: CacheConfig::default(),
        }
    }
}

impl Config {
    /// Defaults for a proxy in front of `upstream`.
    pub fn new(upstream: Uri) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            admin_socket: None,
            admin_token: None,
            tls: TlsConfig::default(),
            admin_tls: TlsConfig::default(),
            proxy: ProxyConfig::new(upstream),
            routes: Vec::new(),
            session: SessionConfig::default(),
            worker: WorkerConfig::default(),
            store: StoreConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
            systemd: SystemdConfig::default(),
            traces: TracesConfig::default(),
        }
    }
}

/// How `proxy.upstream` reads and prints. It has no default, and whether it is set and is an
/// `http://` URL with a host is checked by [`file::load`], which reads the text as written in
/// its layer (for the error, and for `check-config`: [`Uri`] prints `http://h` as `http://h/`)
/// and replaces the value read here. So a missing key, or a string that is no URI, reads here
/// as the placeholder `/` (no host: never a valid upstream) and is refused there, after every
/// key's type was checked; a value of any other type is refused like any key's.
mod upstream_key {
    use http::Uri;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Whether `uri` is the placeholder of an upstream not set (it has no host). Such an upstream
    /// is left out of a serialized configuration, so the embedded defaults have none.
    pub fn is_unset(uri: &Uri) -> bool {
        uri.authority().is_none()
    }

    /// Writes the URI as text.
    pub fn serialize<S: Serializer>(uri: &Uri, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(uri)
    }

    /// Reads a string: the URI it holds, or the placeholder when it holds none.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Uri, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(text.parse().unwrap_or_default())
    }
}

/// What the proxy does with `Forwarded` and `X-Forwarded-For`/`-Proto`/`-Host` toward the
/// upstream (`proxy.forwarded`). This hop is `for=<the peer's address>;proto=http;host=<the
/// client's Host>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardedMode {
    /// The proxy neither adds nor strips these headers: a client's values reach the upstream
    /// as sent (end-to-end headers), so the upstream must not trust them.
    Off,
    /// Incoming values are kept when the direct peer is one of `proxy.trusted_proxies`, and
    /// dropped otherwise; then this hop is appended.
    Append,
    /// Every incoming value is dropped (even a trusted proxy's); only this hop is set.
    Replace,
}
