//! What types cannot say about a configuration, checked key by key in a fixed order (the first
//! failure is the error, naming its key): nonzero timeouts and sizes, bounds, the upstream URL,
//! the origins and hosts, the trusted proxies.

use super::*;
use crate::config::ProxyConfig;

/// The most data-plane threads `proxy.threads` may ask for (each is an OS thread with its own
/// runtime).
pub const MAX_DATA_THREADS: usize = 1024;

/// Upper bound of `session.standalone_stream_wait_ms`.
const MAX_STANDALONE_STREAM_WAIT: Duration = Duration::from_secs(10);

/// The longest any duration setting may be: a year. No timeout, TTL, delay or period needs
/// more, and deadlines (`now + d`) and store TTLs computed from a larger one could overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The `[proxy]` durations of `p`, by key.
fn proxy_durations(p: &ProxyConfig) -> [(&'static str, Duration); 11] {
    [
        ("proxy.sse_keepalive_secs", p.sse_keepalive),
        (
            "proxy.upstream_connect_timeout_ms",
            p.upstream_connect_timeout,
        ),
        (
            "proxy.upstream_response_timeout_secs",
            p.upstream_response_timeout,
        ),
        ("proxy.upstream_idle_timeout_ms", p.upstream_idle_timeout),
        (
            "proxy.upstream_tcp_keepalive_secs",
            p.upstream_tcp_keepalive,
        ),
        ("proxy.header_read_timeout_secs", p.header_read_timeout),
        (
            "proxy.keep_alive_idle_timeout_secs",
            p.keep_alive_idle_timeout,
        ),
        ("proxy.request_body_timeout_secs", p.request_body_timeout),
        ("proxy.base_ejection_time_ms", p.base_ejection_time),
        ("proxy.max_ejection_time_ms", p.max_ejection_time),
        ("proxy.health_check_interval_ms", p.health_check_interval),
    ]
}

/// Refuses a duration setting longer than [`MAX_DURATION`], naming its key.
fn check_durations(config: &Config) -> Result<(), ConfigError> {
    let (s, w) = (&config.session, &config.worker);
    let durations = [
        ("shutdown_grace_secs", config.shutdown_grace),
        ("session.idle_ttl_secs", s.idle_ttl),
        ("session.linger_secs", s.linger),
        ("session.reconnect_min_delay_ms", s.reconnect_min_delay),
        ("session.reconnect_max_delay_ms", s.reconnect_max_delay),
        (
            "session.standalone_stream_wait_ms",
            s.standalone_stream_wait,
        ),
        ("worker.flush_interval_ms", w.flush_interval),
        ("worker.record_ttl_secs", w.record_ttl),
        ("worker.max_backoff_ms", w.max_backoff),
        ("store.timeout_ms", config.store.timeout),
    ];
    for (key, value) in proxy_durations(&config.proxy).into_iter().chain(durations) {
        if value > MAX_DURATION {
            return Err(invalid(key, too_long()));
        }
    }
    Ok(())
}

fn too_long() -> String {
    format!("must be at most a year ({} s)", MAX_DURATION.as_secs())
}

/// `[tls]` and `[admin_tls]`: both files or neither, no client CA on the data plane, TCP only
/// for the control plane's, and files that load (so `check-config` and a reload catch them).
fn check_tls(config: &Config) -> Result<(), ConfigError> {
    use crate::tls::{ADMIN_ALPN, DATA_ALPN, TlsConfig, server_config};
    let sides: [(&'static str, &TlsConfig, &[&[u8]]); 2] = [
        ("tls", &config.tls, DATA_ALPN),
        ("admin_tls", &config.admin_tls, ADMIN_ALPN),
    ];
    for (key, tls, alpn) in sides {
        if tls.is_default() {
            continue;
        }
        let cert = !tls.cert_file.as_os_str().is_empty();
        let key_file = !tls.key_file.as_os_str().is_empty();
        if cert != key_file || !cert {
            return Err(invalid(key, "cert_file and key_file are set together"));
        }
        server_config(tls, alpn).map_err(|e| invalid(key, e.to_string()))?;
    }
    let defaults = TlsConfig::default();
    if config.tls.max_handshakes != defaults.max_handshakes
        || config.tls.max_handshakes_per_address != defaults.max_handshakes_per_address
        || config.tls.handshake_timeout != defaults.handshake_timeout
    {
        return Err(invalid(
            "tls",
            "max_handshakes, max_handshakes_per_address and handshake_timeout_secs are the \
             control plane's ([admin_tls]); the data plane's are proxy.max_connections and \
             proxy.header_read_timeout_secs",
        ));
    }
    let a = &config.admin_tls;
    if a.max_handshakes == 0 || a.max_handshakes_per_address == 0 || a.handshake_timeout.is_zero() {
        return Err(invalid(
            "admin_tls",
            "max_handshakes, max_handshakes_per_address and handshake_timeout_secs must be at least 1",
        ));
    }
    if config.tls.requires_client_certificates() {
        return Err(invalid(
            "tls",
            "client_ca_file is for the control plane ([admin_tls]); the data plane's clients \
             authenticate with OAuth",
        ));
    }
    if config.admin_tls.enabled() && config.admin_socket.is_some() {
        return Err(invalid(
            "admin_tls",
            "the control plane's Unix socket (admin_socket) is not served with TLS: use \
             admin_listen, or file permissions on the socket",
        ));
    }
    Ok(())
}

/// Checks what types cannot say, key by key in a fixed order (the first failure is the error),
/// and returns the parsed upstream: `upstream` is `proxy.upstream` as written, if set.
pub(super) fn check(config: &Config, upstream: Option<&str>) -> Result<Uri, ConfigError> {
    if config.shutdown_grace.is_zero() {
        return Err(invalid("shutdown_grace_secs", "must be at least 1"));
    }
    if config
        .admin_token
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        return Err(invalid("admin_token", "must not be empty when set"));
    }
    check_tls(config)?;
    check_durations(config)?;
    let upstream = check_proxy(config, upstream)?;
    check_routes(config)?;
    check_session(config)?;
    check_worker(config)?;
    check_traces(&config.traces)?;
    let store = &config.store;
    nonzero("store.timeout_ms", store.timeout.is_zero())?;
    store
        .check()
        .map_err(|(key, message)| invalid(key, message))?;
    if let Err(err) = tracing_subscriber::EnvFilter::builder().parse(&config.log.filter) {
        return Err(invalid("log.filter", err.to_string()));
    }
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
    Ok(upstream)
}

/// `[proxy]`; returns the parsed upstream (the placeholder `/` when unset and `[[routes]]`
/// name the routes).
fn check_proxy(config: &Config, upstream: Option<&str>) -> Result<Uri, ConfigError> {
    let upstream = match upstream {
        Some(upstream) => {
            let uri: Uri = upstream
                .parse()
                .map_err(|e| invalid("proxy.upstream", format!("not a URL: {e}")))?;
            crate::config::routes::check_endpoint_url(upstream)
                .map_err(|e| invalid("proxy.upstream", e))?;
            uri
        }
        None if config.routes.is_empty() => {
            return Err(invalid(
                "proxy.upstream",
                "required without [[routes]]: set it in the file, with MCP_RELAY_UPSTREAM or \
                 with --upstream (or add routes with [[routes]] or --route)",
            ));
        }
        None => Uri::default(),
    };
    let p = &config.proxy;
    if !p.endpoint_path.starts_with('/') {
        return Err(invalid("proxy.endpoint_path", "must start with `/`"));
    }
    if p.endpoint_path
        .starts_with(crate::config::routes::WELL_KNOWN)
    {
        return Err(invalid(
            "proxy.endpoint_path",
            "paths under /.well-known/ are the OAuth discovery documents'",
        ));
    }
    if p.public_url.is_some() && upstream.authority().is_none() {
        return Err(invalid(
            "proxy.public_url",
            "names the route of proxy.upstream, which is not set: give each [[routes]] entry \
             its own public_url",
        ));
    }
    if upstream.authority().is_some() {
        check_audience(p).map_err(|m| invalid("proxy.auth", m))?;
    }
    if p.threads > MAX_DATA_THREADS {
        return Err(invalid(
            "proxy.threads",
            format!("at most {MAX_DATA_THREADS} (0: one per CPU)"),
        ));
    }
    check_proxy_values(p).map_err(|(key, message)| invalid(key, message))?;
    for (key, is_zero) in [
        ("proxy.max_connections", p.max_connections == 0),
        (
            "proxy.header_read_timeout_secs",
            p.header_read_timeout.is_zero(),
        ),
        (
            "proxy.keep_alive_idle_timeout_secs",
            p.keep_alive_idle_timeout.is_zero(),
        ),
        (
            "proxy.h2_max_concurrent_streams",
            p.h2_max_concurrent_streams == 0,
        ),
    ] {
        nonzero(key, is_zero)?;
    }
    Ok(upstream)
}

/// The `[proxy]` keys a route may override, checked on `p` (the global section, or a route's
/// effective one). Errors: the key (`proxy.…`) and what is wrong.
fn check_proxy_values(p: &ProxyConfig) -> Result<(), (&'static str, String)> {
    for origin in &p.allowed_origins {
        crate::proxy::admit::check_origin_entry(origin)
            .map_err(|e| ("proxy.allowed_origins", e.to_string()))?;
    }
    for host in &p.allowed_hosts {
        crate::proxy::admit::check_host_entry(host)
            .map_err(|e| ("proxy.allowed_hosts", e.to_string()))?;
    }
    for entry in &p.trusted_proxies {
        crate::proxy::forwarded::IpRange::parse(entry)
            .map_err(|e| ("proxy.trusted_proxies", e.to_string()))?;
    }
    if let Some(url) = &p.public_url {
        crate::proxy::oauth::PublicUrl::parse(url).map_err(|e| ("proxy.public_url", e))?;
    }
    if let Some(path) = &p.upstream_ca_file {
        crate::tls::client_config(Some(path))
            .map_err(|e| ("proxy.upstream_ca_file", e.to_string()))?;
    }
    p.auth.check().map_err(|e| ("proxy.auth", e))?;
    if p.auth.is_resource_server() && !p.auth.tool_scopes.is_empty() && p.cache.enabled {
        // A cached `tools/list` would be answered before the per-token filter sees it.
        return Err((
            "proxy.auth",
            "tool_scopes and the result cache on one route are not supported together yet".into(),
        ));
    }
    p.policy.check().map_err(|e| ("proxy.policy", e))?;
    p.rate_limit.check().map_err(|e| ("proxy.rate_limit", e))?;
    p.cache.check().map_err(|e| ("proxy.cache", e))?;
    for (key, value) in proxy_durations(p) {
        if value > MAX_DURATION {
            return Err((key, too_long()));
        }
    }
    for (key, is_zero) in [
        (
            "proxy.max_request_body_bytes",
            p.max_request_body_bytes == 0,
        ),
        ("proxy.max_event_bytes", p.max_event_bytes == 0),
        (
            "proxy.upstream_connect_timeout_ms",
            p.upstream_connect_timeout.is_zero(),
        ),
        (
            "proxy.upstream_response_timeout_secs",
            p.upstream_response_timeout.is_zero(),
        ),
        (
            "proxy.upstream_idle_timeout_ms",
            p.upstream_idle_timeout.is_zero(),
        ),
        (
            "proxy.request_body_timeout_secs",
            p.request_body_timeout.is_zero(),
        ),
        (
            "proxy.base_ejection_time_ms",
            p.base_ejection_time.is_zero(),
        ),
        (
            "proxy.health_check_interval_ms",
            p.health_check_interval.is_zero(),
        ),
    ] {
        if is_zero {
            return Err((key, "must be at least 1".into()));
        }
    }
    if p.max_ejection_time < p.base_ejection_time {
        return Err((
            "proxy.max_ejection_time_ms",
            "must be at least proxy.base_ejection_time_ms".into(),
        ));
    }
    if !p.health_check_path.is_empty()
        && (!p.health_check_path.starts_with('/')
            || p.health_check_path
                .parse::<http::uri::PathAndQuery>()
                .is_err())
    {
        return Err((
            "proxy.health_check_path",
            "must be a path starting with `/`".into(),
        ));
    }
    Ok(())
}

/// `[[routes]]`: their shapes ([`crate::config::routes`]), then each route's effective
/// settings with the checks of the keys it overrides. Errors name the key `routes` and, in the
/// message, the route and the overridden key.
fn check_routes(config: &Config) -> Result<(), ConfigError> {
    crate::config::routes::check_routes(config).map_err(|message| invalid("routes", message))?;
    for route in &config.routes {
        let effective = route.apply(&config.proxy);
        check_audience(&effective)
            .map_err(|m| invalid("routes", format!("route `{}`: `auth` {m}", route.path)))?;
        check_proxy_values(&effective).map_err(|(key, message)| {
            let key = key.trim_start_matches("proxy.");
            invalid(
                "routes",
                format!("route `{}`: `{key}` {message}", route.path),
            )
        })?;
    }
    Ok(())
}

/// A resource-server route knows which audience its tokens must carry: `auth.audience` or its
/// `public_url`. (Derived from the request's `Host`, a client could name any host admission
/// lets in, a loopback one at least, and have a token minted for that other server accepted.)
fn check_audience(p: &ProxyConfig) -> Result<(), String> {
    if p.auth.is_resource_server() && p.auth.audience.is_empty() && p.public_url.is_none() {
        return Err(
            "resource_server needs the URL tokens are issued for: set the route's public_url \
             (or auth.audience)"
                .into(),
        );
    }
    Ok(())
}

/// `[session]` and `[session.tracker]`.
fn check_session(config: &Config) -> Result<(), ConfigError> {
    let s = &config.session;
    let t = &s.tracker_limits;
    for (key, is_zero) in [
        ("session.idle_ttl_secs", s.idle_ttl.is_zero()),
        ("session.max_sessions", s.max_sessions == 0),
        ("session.tracker.dedup_ids", t.dedup_ids == 0),
        ("session.tracker.replay_events", t.replay_events == 0),
        ("session.tracker.replay_bytes", t.replay_bytes == 0),
    ] {
        nonzero(key, is_zero)?;
    }
    if s.reconnect_max_delay < s.reconnect_min_delay {
        return Err(invalid(
            "session.reconnect_max_delay_ms",
            "must be at least session.reconnect_min_delay_ms",
        ));
    }
    if s.standalone_stream_wait > MAX_STANDALONE_STREAM_WAIT {
        return Err(invalid(
            "session.standalone_stream_wait_ms",
            "must be at most 10000 (a longer hold stalls a client that opens no GET stream)",
        ));
    }
    Ok(())
}

/// `[worker]`.
fn check_worker(config: &Config) -> Result<(), ConfigError> {
    let w = &config.worker;
    nonzero("worker.flush_interval_ms", w.flush_interval.is_zero())?;
    nonzero("worker.record_ttl_secs", w.record_ttl.is_zero())?;
    if w.max_backoff < w.flush_interval {
        return Err(invalid(
            "worker.max_backoff_ms",
            "must be at least worker.flush_interval_ms",
        ));
    }
    Ok(())
}

/// Refuses a zero count or duration at `key`.
fn check_traces(t: &crate::config::TracesConfig) -> Result<(), ConfigError> {
    if !t.otlp_endpoint.is_empty() {
        let uri: Uri = t
            .otlp_endpoint
            .parse()
            .map_err(|e| invalid("traces.otlp_endpoint", format!("not a URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(invalid(
                "traces.otlp_endpoint",
                "must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:4317",
            ));
        }
    }
    if t.service_name.is_empty() || t.service_name.len() > 256 {
        return Err(invalid("traces.service_name", "must be 1 to 256 bytes"));
    }
    if !(1..=1 << 20).contains(&t.max_queued_spans) {
        return Err(invalid("traces.max_queued_spans", "must be 1 to 1048576"));
    }
    if t.export_delay.is_zero() || t.export_delay > Duration::from_secs(60) {
        return Err(invalid("traces.export_delay_ms", "must be 1 to 60000"));
    }
    Ok(())
}

fn nonzero(key: &'static str, is_zero: bool) -> Result<(), ConfigError> {
    if is_zero {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(())
}
