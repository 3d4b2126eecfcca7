//! Where the settings come from: embedded defaults < a TOML file < `MCP_RELAY_…` environment
//! variables < command-line flags, merged with figment (later layers win, key by key), then
//! checked and turned into a [`Config`].
//!
//! [`FileConfig`] is the operator's view of [`Config`]: the same tree, every duration and size
//! named with its unit (`idle_ttl_secs`, `flush_interval_ms`, `max_event_bytes`), every key
//! documented in `deploy/systemd/mcp-relay.toml`. Its defaults are computed from the runtime
//! structs' own defaults, so each default is written once.
//!
//! Environment variables name a key path with `__` between levels:
//! `MCP_RELAY_PROXY__MAX_EVENT_BYTES=1048576`, `MCP_RELAY_SESSION__TRACKER__REPLAY_EVENTS=512`,
//! `MCP_RELAY_LISTEN=0.0.0.0:8080`; `MCP_RELAY_UPSTREAM` is short for `MCP_RELAY_PROXY__UPSTREAM`;
//! lists are written `[a, b]`. `MCP_RELAY_CONFIG` names the file and is not a setting; nor is
//! `MCP_RELAY_TEST_REDIS_URL`, the Redis the test suite uses.
//! Unknown keys are errors in every layer, so a typo never passes silently.
//!
//! ## Adding a setting
//!
//! 1. Add the field, with its default, to its runtime struct ([`crate::config::ProxyConfig`],
//!    [`crate::session::SessionConfig`], …).
//! 2. Add it here to the matching section, named with its unit, and convert it in that section's
//!    `from_runtime` and `into_runtime`. Both destructure or build the runtime struct without
//!    `..`, so the compiler points at each place a new runtime field must be mirrored.
//! 3. Document it in `deploy/systemd/mcp-relay.toml` (the test `daemon_config` checks that every
//!    key of the effective configuration appears in that file).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
    value::Value,
};
use http::Uri;
use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, LogConfig, LogFormat, LogTarget, MetricsConfig, ProxyConfig, SystemdConfig},
    session::{
        SessionConfig, TrackerLimits, WorkerConfig,
        store::{StoreBackend, StoreConfig},
    },
};

/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "MCP_RELAY_";
/// The environment variable naming the configuration file (`--config` wins over it).
pub const ENV_CONFIG_FILE: &str = "MCP_RELAY_CONFIG";

/// The configuration could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A layer could not be read, or a value has the wrong type, or a key is unknown. The
    /// message names the key and the layer it came from.
    #[error("{0}")]
    Layers(Box<figment::Error>),
    #[error("`{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        Self::Layers(Box::new(err))
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The layers to merge.
#[derive(Debug, Default)]
pub struct Sources {
    /// The TOML file, if any; it must exist.
    pub file: Option<PathBuf>,
    /// Whether to read `MCP_RELAY_…` variables from the process environment.
    pub env: bool,
    /// Values given as flags, the last layer.
    pub overrides: Overrides,
}

/// Settings given on the command line: `(key path, value)` pairs such as
/// `("proxy.upstream", "http://…")`, applied in order over every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides(Vec<(&'static str, Value)>);

impl Overrides {
    /// Sets `key` (a dotted path, e.g. `session.idle_ttl_secs`) to `value`.
    pub fn set(&mut self, key: &'static str, value: impl Serialize) -> &mut Self {
        match Value::serialize(value) {
            Ok(value) => self.0.push((key, value)),
            // Only plain strings, numbers, booleans and lists are set here.
            Err(err) => unreachable!("a flag value serializes: {err}"),
        }
        self
    }

    /// Sets `key` when `value` is `Some`.
    pub fn set_opt(&mut self, key: &'static str, value: Option<impl Serialize>) -> &mut Self {
        if let Some(value) = value {
            self.set(key, value);
        }
        self
    }
}

/// The merged layers as figment sees them (useful to ask where a value came from).
pub fn figment(sources: &Sources) -> Result<Figment, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(FileConfig::defaults()));
    if let Some(path) = &sources.file {
        // figment reads a missing file as empty; an operator who names a file means it.
        std::fs::metadata(path).map_err(|source| ConfigError::File {
            path: path.clone(),
            source,
        })?;
        figment = figment.merge(Toml::file_exact(path));
    }
    if sources.env {
        figment = figment.merge(env_provider());
    }
    for (key, value) in &sources.overrides.0 {
        figment = figment.merge(Serialized::default(key, value.clone()));
    }
    Ok(figment)
}

fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX)
        .ignore(&["config", "test_redis_url"])
        .map(|key| {
            if key.as_str().eq_ignore_ascii_case("upstream") {
                "proxy.upstream".into()
            } else {
                key.as_str().replace("__", ".").to_ascii_lowercase().into()
            }
        })
}

/// Merges the layers and checks the result.
pub fn load(sources: &Sources) -> Result<(FileConfig, Config), ConfigError> {
    let figment = figment(sources)?;
    let file: FileConfig = figment.extract()?;
    check_integers(&figment, &figment.extract()?, &mut Vec::new())?;
    let config = file.clone().into_config()?;
    Ok((file, config))
}

/// Refuses a number above 2^63 - 1 in any layer: TOML integers are signed 64-bit, so the
/// configuration could not be printed (`check-config`), and no setting needs one. The error
/// names the key and the layer, like figment's own.
fn check_integers(
    figment: &Figment,
    value: &Value,
    path: &mut Vec<String>,
) -> Result<(), ConfigError> {
    match value {
        Value::Num(_, num) if num.to_u128().is_some_and(|n| n > i64::MAX as u128) => {
            let key = path.join(".");
            let mut err = figment::Error::from(figment::error::Kind::InvalidValue(
                num.to_actual(),
                format!("an integer at most {}", i64::MAX),
            ));
            err.metadata = figment.find_metadata(&key).cloned();
            err.profile = Some(figment.profile().clone());
            err.path = std::mem::take(path);
            Err(err.into())
        }
        Value::Dict(_, dict) => dict.iter().try_for_each(|(k, v)| {
            path.push(k.clone());
            check_integers(figment, v, path)?;
            path.pop();
            Ok(())
        }),
        Value::Array(_, items) => items
            .iter()
            .try_for_each(|v| check_integers(figment, v, path)),
        _ => Ok(()),
    }
}

/// Every setting, as written in the TOML file. See `deploy/systemd/mcp-relay.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data plane address.
    pub listen: SocketAddr,
    /// Control plane (gRPC) address.
    pub admin_listen: SocketAddr,
    /// Unix socket for the control plane instead of `admin_listen` (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_socket: Option<std::path::PathBuf>,
    /// Bearer token every control-plane call must carry (a secret; masked when printed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// Seconds shutdown waits for open requests and streams.
    pub shutdown_grace_secs: u64,
    pub proxy: ProxySection,
    pub session: SessionSection,
    pub worker: WorkerSection,
    pub store: StoreSection,
    pub metrics: MetricsSection,
    pub log: LogSection,
    pub systemd: SystemdSection,
}

/// The most data-plane threads `proxy.threads` may ask for (each is an OS thread with its own
/// runtime).
pub const MAX_DATA_THREADS: usize = 1024;

/// `[proxy]`: [`ProxyConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// Required in some layer; no default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    pub endpoint_path: String,
    pub allowed_origins: Vec<String>,
    pub allow_loopback_origins: bool,
    /// Besides loopback names; required when `listen` is not loopback.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    pub max_request_body_bytes: usize,
    pub max_event_bytes: usize,
    pub upstream_connect_timeout_ms: u64,
    pub upstream_response_timeout_secs: u64,
    pub upstream_idle_timeout_ms: u64,
    /// 0: one per CPU.
    pub threads: usize,
    pub max_connections: usize,
    /// 0: what the descriptor limit leaves after `max_connections`.
    pub max_upstream_connections: usize,
    pub header_read_timeout_secs: u64,
    pub keep_alive_idle_timeout_secs: u64,
    pub h2_max_concurrent_streams: u32,
    pub request_body_timeout_secs: u64,
}

/// Upper bound of `session.standalone_stream_wait_ms`.
const MAX_STANDALONE_STREAM_WAIT_MS: u64 = 10_000;

/// `[session]`: [`SessionConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSection {
    pub idle_ttl_secs: u64,
    pub closed_streams_kept: usize,
    pub linger_secs: u64,
    pub reconnect_attempts: usize,
    pub reconnect_min_delay_ms: u64,
    pub reconnect_max_delay_ms: u64,
    pub max_sessions: usize,
    /// 0: requests never wait for the standalone stream.
    pub standalone_stream_wait_ms: u64,
    pub tracker: TrackerSection,
}

/// `[session.tracker]`: [`TrackerLimits`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerSection {
    pub dedup_ids: usize,
    pub replay_events: usize,
    pub replay_bytes: usize,
}

/// `[worker]`: [`WorkerConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    pub flush_interval_ms: u64,
    pub record_ttl_secs: u64,
    pub max_backoff_ms: u64,
    pub max_pending: usize,
}

/// `[store]`: [`StoreConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub backend: StoreBackend,
    /// Required when `backend` is `redis`; no default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub key_prefix: String,
    pub timeout_ms: u64,
}

/// `[metrics]`: [`MetricsConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub enabled: bool,
    pub listen: SocketAddr,
}

/// `[log]`: [`LogConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub target: LogTarget,
    pub format: LogFormat,
    pub filter: String,
}

/// `[systemd]`: [`SystemdConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdSection {
    pub watchdog: bool,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl FileConfig {
    /// The embedded defaults (no upstream).
    pub fn defaults() -> Self {
        let mut file = Self::from_runtime(&Config::new(Uri::from_static("http://unset.invalid/")));
        file.proxy.upstream = None;
        file
    }

    /// The file view of a runtime configuration.
    pub fn from_runtime(config: &Config) -> Self {
        let Config {
            listen,
            admin_listen,
            admin_socket,
            admin_token,
            proxy,
            session,
            worker,
            store,
            shutdown_grace,
            metrics,
            log,
            systemd,
        } = config;
        Self {
            listen: *listen,
            admin_listen: *admin_listen,
            admin_socket: admin_socket.clone(),
            admin_token: admin_token.clone(),
            shutdown_grace_secs: shutdown_grace.as_secs(),
            proxy: ProxySection::from_runtime(proxy),
            session: SessionSection::from_runtime(session),
            worker: WorkerSection::from_runtime(worker),
            store: StoreSection::from_runtime(store),
            metrics: MetricsSection::from_runtime(metrics),
            log: LogSection::from_runtime(log),
            systemd: SystemdSection::from_runtime(systemd),
        }
    }

    /// Checks every value and builds the runtime configuration.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        if self.shutdown_grace_secs == 0 {
            return Err(invalid("shutdown_grace_secs", "must be at least 1"));
        }
        let metrics = self.metrics.into_runtime();
        if self
            .admin_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(invalid("admin_token", "must not be empty when set"));
        }
        let config = Config {
            listen: self.listen,
            admin_listen: self.admin_listen,
            admin_socket: self.admin_socket,
            admin_token: self.admin_token,
            proxy: self.proxy.into_runtime()?,
            session: self.session.into_runtime()?,
            worker: self.worker.into_runtime()?,
            store: self.store.into_runtime()?,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            metrics,
            log: self.log.into_runtime()?,
            systemd: self.systemd.into_runtime(),
        };
        if !config.listen.ip().is_loopback() && config.proxy.allowed_hosts.is_empty() {
            return Err(invalid(
                "proxy.allowed_hosts",
                format!(
                    "required when listen ({}) is not loopback: list the host names clients \
                     use (or `*` to allow any Host)",
                    config.listen
                ),
            ));
        }
        let mut addrs = vec![
            ("listen", config.listen),
            ("admin_listen", config.admin_listen),
        ];
        addrs.extend(config.metrics.address().map(|a| ("metrics.listen", a)));
        for (i, (key, addr)) in addrs.iter().enumerate() {
            if addr.port() != 0 && addrs[..i].iter().any(|(_, other)| other == addr) {
                return Err(invalid(
                    key,
                    format!("{addr} is already used by another listener"),
                ));
            }
        }
        Ok(config)
    }

    /// This configuration as TOML with secrets masked: any key naming a token, secret or
    /// password, and the password (or the whole user part) of any URL.
    pub fn to_masked_toml(&self) -> String {
        let mut value = match toml::Value::try_from(self) {
            Ok(value) => value,
            Err(err) => unreachable!("the configuration serializes to TOML: {err}"),
        };
        mask(&mut value, "");
        toml::to_string_pretty(&value).unwrap_or_else(|err| format!("# not printable: {err}\n"))
    }
}

impl ProxySection {
    fn from_runtime(c: &ProxyConfig) -> Self {
        let ProxyConfig {
            upstream,
            endpoint_path,
            allowed_origins,
            allow_loopback_origins,
            allowed_hosts,
            max_request_body_bytes,
            max_event_bytes,
            upstream_connect_timeout,
            upstream_response_timeout,
            upstream_idle_timeout,
            threads,
            max_connections,
            max_upstream_connections,
            header_read_timeout,
            keep_alive_idle_timeout,
            h2_max_concurrent_streams,
            request_body_timeout,
        } = c;
        Self {
            upstream: Some(upstream.to_string()),
            endpoint_path: endpoint_path.clone(),
            allowed_origins: allowed_origins.clone(),
            allow_loopback_origins: *allow_loopback_origins,
            allowed_hosts: allowed_hosts.clone(),
            max_request_body_bytes: *max_request_body_bytes,
            max_event_bytes: *max_event_bytes,
            upstream_connect_timeout_ms: ms(*upstream_connect_timeout),
            upstream_response_timeout_secs: upstream_response_timeout.as_secs(),
            upstream_idle_timeout_ms: ms(*upstream_idle_timeout),
            threads: *threads,
            max_connections: *max_connections,
            max_upstream_connections: *max_upstream_connections,
            header_read_timeout_secs: header_read_timeout.as_secs(),
            keep_alive_idle_timeout_secs: keep_alive_idle_timeout.as_secs(),
            h2_max_concurrent_streams: *h2_max_concurrent_streams,
            request_body_timeout_secs: request_body_timeout.as_secs(),
        }
    }

    fn into_runtime(self) -> Result<ProxyConfig, ConfigError> {
        let upstream = self.upstream.ok_or_else(|| {
            invalid(
                "proxy.upstream",
                "required: set it in the file, with MCP_RELAY_UPSTREAM or with --upstream",
            )
        })?;
        let upstream: Uri = upstream
            .parse()
            .map_err(|e| invalid("proxy.upstream", format!("not a URL: {e}")))?;
        if upstream.scheme_str() != Some("http") || upstream.authority().is_none() {
            return Err(invalid(
                "proxy.upstream",
                "must be an http:// URL with a host, e.g. http://127.0.0.1:3001/mcp",
            ));
        }
        if !self.endpoint_path.starts_with('/') {
            return Err(invalid("proxy.endpoint_path", "must start with `/`"));
        }
        if self.threads > MAX_DATA_THREADS {
            return Err(invalid(
                "proxy.threads",
                format!("at most {MAX_DATA_THREADS} (0: one per CPU)"),
            ));
        }
        for origin in &self.allowed_origins {
            crate::proxy::admit::check_origin_entry(origin)
                .map_err(|e| invalid("proxy.allowed_origins", e))?;
        }
        for host in &self.allowed_hosts {
            crate::proxy::admit::check_host_entry(host)
                .map_err(|e| invalid("proxy.allowed_hosts", e))?;
        }
        positive("proxy.max_request_body_bytes", self.max_request_body_bytes)?;
        positive("proxy.max_event_bytes", self.max_event_bytes)?;
        positive_u64(
            "proxy.upstream_connect_timeout_ms",
            self.upstream_connect_timeout_ms,
        )?;
        positive_u64(
            "proxy.upstream_response_timeout_secs",
            self.upstream_response_timeout_secs,
        )?;
        positive_u64(
            "proxy.upstream_idle_timeout_ms",
            self.upstream_idle_timeout_ms,
        )?;
        positive("proxy.max_connections", self.max_connections)?;
        positive_u64(
            "proxy.header_read_timeout_secs",
            self.header_read_timeout_secs,
        )?;
        positive_u64(
            "proxy.keep_alive_idle_timeout_secs",
            self.keep_alive_idle_timeout_secs,
        )?;
        positive_u64(
            "proxy.h2_max_concurrent_streams",
            u64::from(self.h2_max_concurrent_streams),
        )?;
        positive_u64(
            "proxy.request_body_timeout_secs",
            self.request_body_timeout_secs,
        )?;
        Ok(ProxyConfig {
            upstream,
            endpoint_path: self.endpoint_path,
            allowed_origins: self.allowed_origins,
            allow_loopback_origins: self.allow_loopback_origins,
            allowed_hosts: self.allowed_hosts,
            max_request_body_bytes: self.max_request_body_bytes,
            max_event_bytes: self.max_event_bytes,
            upstream_connect_timeout: Duration::from_millis(self.upstream_connect_timeout_ms),
            upstream_response_timeout: Duration::from_secs(self.upstream_response_timeout_secs),
            upstream_idle_timeout: Duration::from_millis(self.upstream_idle_timeout_ms),
            threads: self.threads,
            max_connections: self.max_connections,
            max_upstream_connections: self.max_upstream_connections,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            keep_alive_idle_timeout: Duration::from_secs(self.keep_alive_idle_timeout_secs),
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            request_body_timeout: Duration::from_secs(self.request_body_timeout_secs),
        })
    }
}

impl SessionSection {
    fn from_runtime(c: &SessionConfig) -> Self {
        let SessionConfig {
            idle_ttl,
            tracker_limits,
            closed_streams_kept,
            linger,
            reconnect_attempts,
            reconnect_min_delay,
            reconnect_max_delay,
            max_sessions,
            standalone_stream_wait,
        } = c;
        let TrackerLimits {
            dedup_ids,
            replay_events,
            replay_bytes,
        } = tracker_limits;
        Self {
            idle_ttl_secs: idle_ttl.as_secs(),
            closed_streams_kept: *closed_streams_kept,
            linger_secs: linger.as_secs(),
            reconnect_attempts: *reconnect_attempts,
            reconnect_min_delay_ms: ms(*reconnect_min_delay),
            reconnect_max_delay_ms: ms(*reconnect_max_delay),
            max_sessions: *max_sessions,
            standalone_stream_wait_ms: ms(*standalone_stream_wait),
            tracker: TrackerSection {
                dedup_ids: *dedup_ids,
                replay_events: *replay_events,
                replay_bytes: *replay_bytes,
            },
        }
    }

    fn into_runtime(self) -> Result<SessionConfig, ConfigError> {
        positive_u64("session.idle_ttl_secs", self.idle_ttl_secs)?;
        positive("session.max_sessions", self.max_sessions)?;
        let t = self.tracker;
        positive("session.tracker.dedup_ids", t.dedup_ids)?;
        positive("session.tracker.replay_events", t.replay_events)?;
        positive("session.tracker.replay_bytes", t.replay_bytes)?;
        if self.reconnect_max_delay_ms < self.reconnect_min_delay_ms {
            return Err(invalid(
                "session.reconnect_max_delay_ms",
                "must be at least session.reconnect_min_delay_ms",
            ));
        }
        if self.standalone_stream_wait_ms > MAX_STANDALONE_STREAM_WAIT_MS {
            return Err(invalid(
                "session.standalone_stream_wait_ms",
                "must be at most 10000 (a longer hold stalls a client that opens no GET stream)",
            ));
        }
        Ok(SessionConfig {
            idle_ttl: Duration::from_secs(self.idle_ttl_secs),
            tracker_limits: TrackerLimits {
                dedup_ids: t.dedup_ids,
                replay_events: t.replay_events,
                replay_bytes: t.replay_bytes,
            },
            closed_streams_kept: self.closed_streams_kept,
            linger: Duration::from_secs(self.linger_secs),
            reconnect_attempts: self.reconnect_attempts,
            reconnect_min_delay: Duration::from_millis(self.reconnect_min_delay_ms),
            reconnect_max_delay: Duration::from_millis(self.reconnect_max_delay_ms),
            max_sessions: self.max_sessions,
            standalone_stream_wait: Duration::from_millis(self.standalone_stream_wait_ms),
        })
    }
}

impl WorkerSection {
    fn from_runtime(c: &WorkerConfig) -> Self {
        let WorkerConfig {
            flush_interval,
            record_ttl,
            max_backoff,
            max_pending,
        } = c;
        Self {
            flush_interval_ms: ms(*flush_interval),
            record_ttl_secs: record_ttl.as_secs(),
            max_backoff_ms: ms(*max_backoff),
            max_pending: *max_pending,
        }
    }

    fn into_runtime(self) -> Result<WorkerConfig, ConfigError> {
        positive_u64("worker.flush_interval_ms", self.flush_interval_ms)?;
        positive_u64("worker.record_ttl_secs", self.record_ttl_secs)?;
        if self.max_backoff_ms < self.flush_interval_ms {
            return Err(invalid(
                "worker.max_backoff_ms",
                "must be at least worker.flush_interval_ms",
            ));
        }
        Ok(WorkerConfig {
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            record_ttl: Duration::from_secs(self.record_ttl_secs),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            max_pending: self.max_pending,
        })
    }
}

impl StoreSection {
    fn from_runtime(c: &StoreConfig) -> Self {
        let StoreConfig {
            backend,
            url,
            key_prefix,
            timeout,
        } = c;
        Self {
            backend: *backend,
            url: url.clone(),
            key_prefix: key_prefix.clone(),
            timeout_ms: ms(*timeout),
        }
    }

    fn into_runtime(self) -> Result<StoreConfig, ConfigError> {
        positive_u64("store.timeout_ms", self.timeout_ms)?;
        let config = StoreConfig {
            backend: self.backend,
            url: self.url,
            key_prefix: self.key_prefix,
            timeout: Duration::from_millis(self.timeout_ms),
        };
        config
            .check()
            .map_err(|(key, message)| invalid(key, message))?;
        Ok(config)
    }
}

impl MetricsSection {
    fn from_runtime(c: &MetricsConfig) -> Self {
        let MetricsConfig { enabled, listen } = c;
        Self {
            enabled: *enabled,
            listen: *listen,
        }
    }

    fn into_runtime(self) -> MetricsConfig {
        MetricsConfig {
            enabled: self.enabled,
            listen: self.listen,
        }
    }
}

impl LogSection {
    fn from_runtime(c: &LogConfig) -> Self {
        let LogConfig {
            target,
            format,
            filter,
        } = c;
        Self {
            target: *target,
            format: *format,
            filter: filter.clone(),
        }
    }

    fn into_runtime(self) -> Result<LogConfig, ConfigError> {
        if let Err(err) = tracing_subscriber::EnvFilter::builder().parse(&self.filter) {
            return Err(invalid("log.filter", err.to_string()));
        }
        Ok(LogConfig {
            target: self.target,
            format: self.format,
            filter: self.filter,
        })
    }
}

impl SystemdSection {
    fn from_runtime(c: &SystemdConfig) -> Self {
        let SystemdConfig { watchdog } = c;
        Self {
            watchdog: *watchdog,
        }
    }

    fn into_runtime(self) -> SystemdConfig {
        SystemdConfig {
            watchdog: self.watchdog,
        }
    }
}

fn positive(key: &'static str, n: usize) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(())
}

fn positive_u64(key: &'static str, n: u64) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(())
}

/// What replaces a secret in printed configuration and logs.
pub const MASK: &str = "********";

/// Key names whose values are secrets.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["token", "secret", "password", "credential", "authorization"]
        .iter()
        .any(|s| key.contains(s))
}

fn mask(value: &mut toml::Value, key: &str) {
    match value {
        toml::Value::String(s) if is_secret_key(key) && !s.is_empty() => *s = MASK.into(),
        toml::Value::String(s) => {
            if let Some(masked) = redact_url(s) {
                *s = masked;
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(|v| mask(v, key)),
        toml::Value::Table(table) => table.iter_mut().for_each(|(k, v)| mask(v, k)),
        _ => {}
    }
}

/// `url` with the credentials of its user part masked (`http://user:********@host/`, or
/// `http://********@host/` when the user part is a single token); `None` when it has none.
pub fn redact_url(url: &str) -> Option<String> {
    let scheme_end = url.find("://")? + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let userinfo = &rest[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{MASK}"),
        None => MASK.to_owned(),
    };
    Some(format!("{}{shown}{}", &url[..scheme_end], &rest[at..]))
}

/// Where the configuration file is, when given by flag or `MCP_RELAY_CONFIG`.
pub fn config_path(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(ENV_CONFIG_FILE).map(PathBuf::from))
}

#[cfg(test)]
// figment's `Jail` closures return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::*;

    fn sources(file: Option<&str>, overrides: Overrides) -> Sources {
        Sources {
            file: file.map(PathBuf::from),
            env: true,
            overrides,
        }
    }

    #[test]
    fn the_defaults_round_trip_through_the_file_view() {
        let config = Config::new(Uri::from_static("http://127.0.0.1:3001/mcp"));
        let file = FileConfig::from_runtime(&config);
        let back = file.clone().into_config().unwrap();
        assert_eq!(format!("{config:?}"), format!("{back:?}"));
        assert_eq!(FileConfig::from_runtime(&back), file);
    }

    #[test]
    fn the_runtime_structs_serialize_as_the_file_view() {
        let mut config = Config::new(Uri::from_static("http://127.0.0.1:3001/mcp"));
        config.admin_token = Some("t".into());
        config.admin_socket = Some("/run/a.sock".into());
        config.store.url = Some("redis://127.0.0.1:6379".into());
        config.metrics.enabled = false;
        config.session.tracker_limits.replay_events = 7;
        config.worker.flush_interval = Duration::from_millis(30);
        let file = FileConfig::from_runtime(&config);
        let tree = toml::Value::try_from(&file).unwrap();
        assert_eq!(toml::Value::try_from(&config).unwrap(), tree);
        assert_eq!(tree.try_into::<Config>().unwrap(), config);
        assert_eq!(
            toml::Value::try_from(Config::new(Uri::default())).unwrap(),
            toml::Value::try_from(FileConfig::defaults()).unwrap()
        );
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "relay.toml",
                r#"
                    listen = "127.0.0.1:9000"
                    shutdown_grace_secs = 3
                    [proxy]
                    upstream = "http://127.0.0.1:1/mcp"
                    max_event_bytes = 100
                    [session.tracker]
                    replay_events = 7
                "#,
            )?;
            jail.set_env("MCP_RELAY_SHUTDOWN_GRACE_SECS", "4");
            jail.set_env("MCP_RELAY_UPSTREAM", "http://127.0.0.1:2/mcp");
            jail.set_env("MCP_RELAY_SESSION__TRACKER__DEDUP_IDS", "9");
            jail.set_env("MCP_RELAY_PROXY__ALLOWED_ORIGINS", "[https://a.example, *]");
            jail.set_env("MCP_RELAY_CONFIG", "ignored-here.toml");
            let mut flags = Overrides::default();
            flags.set("shutdown_grace_secs", 5u64);
            let (_, c) = load(&sources(Some("relay.toml"), flags)).unwrap();
            assert_eq!(
                c.listen,
                "127.0.0.1:9000".parse().unwrap(),
                "file over default"
            );
            assert_eq!(c.proxy.upstream, "http://127.0.0.1:2/mcp", "env over file");
            assert_eq!(c.shutdown_grace, Duration::from_secs(5), "flag over env");
            assert_eq!(c.proxy.max_event_bytes, 100);
            assert_eq!(c.session.tracker_limits.replay_events, 7);
            assert_eq!(c.session.tracker_limits.dedup_ids, 9);
            assert_eq!(c.proxy.allowed_origins, ["https://a.example", "*"]);
            assert_eq!(
                c.admin_listen,
                Config::new(c.proxy.upstream.clone()).admin_listen
            );
            Ok(())
        });
    }

    #[test]
    fn no_file_and_an_upstream_flag_is_enough() {
        Jail::expect_with(|_| {
            let mut flags = Overrides::default();
            flags.set("proxy.upstream", "http://127.0.0.1:3001/mcp");
            let (_, c) = load(&sources(None, flags)).unwrap();
            assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
            Ok(())
        });
    }

    #[test]
    fn a_non_loopback_listener_requires_allowed_hosts() {
        Jail::expect_with(|jail| {
            jail.set_env("MCP_RELAY_UPSTREAM", "http://127.0.0.1:2/mcp");
            jail.set_env("MCP_RELAY_LISTEN", "0.0.0.0:8080");
            let err = load(&sources(None, Overrides::default())).unwrap_err();
            assert!(err.to_string().contains("proxy.allowed_hosts"), "{err}");
            jail.set_env("MCP_RELAY_PROXY__ALLOWED_HOSTS", "[mcp.example.com, \"*\"]");
            let (_, c) = load(&sources(None, Overrides::default())).unwrap();
            assert_eq!(c.proxy.allowed_hosts, ["mcp.example.com", "*"]);
            jail.set_env(
                "MCP_RELAY_PROXY__ALLOWED_HOSTS",
                "[\"http://mcp.example.com\"]",
            );
            let err = load(&sources(None, Overrides::default())).unwrap_err();
            assert!(err.to_string().contains("proxy.allowed_hosts"), "{err}");
            jail.set_env("MCP_RELAY_LISTEN", "127.0.0.1:8080");
            jail.set_env("MCP_RELAY_PROXY__ALLOWED_HOSTS", "[]");
            jail.set_env("MCP_RELAY_PROXY__ALLOWED_ORIGINS", "[app.example]");
            let err = load(&sources(None, Overrides::default())).unwrap_err();
            assert!(err.to_string().contains("proxy.allowed_origins"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn mistakes_are_named_by_key() {
        Jail::expect_with(|jail| {
            let err = load(&sources(None, Overrides::default())).unwrap_err();
            assert!(err.to_string().contains("proxy.upstream"), "{err}");

            jail.create_file("typo.toml", "[proxy]\nupstrem = \"http://h/\"\n")?;
            let err = load(&sources(Some("typo.toml"), Overrides::default())).unwrap_err();
            assert!(err.to_string().contains("upstrem"), "{err}");

            let err = load(&sources(Some("missing.toml"), Overrides::default())).unwrap_err();
            assert!(matches!(err, ConfigError::File { .. }), "{err}");

            jail.set_env("MCP_RELAY_UPSTREAM", "https://h/mcp");
            let err = load(&sources(None, Overrides::default())).unwrap_err();
            assert!(err.to_string().contains("http://"), "{err}");

            jail.set_env("MCP_RELAY_UPSTREAM", "http://h/mcp");
            jail.set_env("MCP_RELAY_ADMIN_LISTEN", "127.0.0.1:8080");
            let err = load(&sources(None, Overrides::default())).unwrap_err();
            assert!(err.to_string().contains("admin_listen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn printing_masks_secrets() {
        let mut file = FileConfig::defaults();
        file.proxy.upstream = Some("http://svc:hunter2@10.0.0.1:3001/mcp".into());
        let text = file.to_masked_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("http://svc:********@10.0.0.1:3001/mcp"),
            "{text}"
        );

        let mut v = toml::Value::try_from(&file).unwrap();
        v.as_table_mut()
            .unwrap()
            .insert("admin_token".into(), "s3cr3t".into());
        mask(&mut v, "");
        assert_eq!(v["admin_token"].as_str(), Some(MASK));
        assert_eq!(
            redact_url("http://tok@h:1/p?q=a@b").as_deref(),
            Some("http://********@h:1/p?q=a@b")
        );
        assert_eq!(redact_url("http://h:1/p?q=a@b"), None);
    }
}
