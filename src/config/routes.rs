//! Routes (`[[routes]]`): which endpoint paths the data plane serves and which pool of upstream
//! endpoints each forwards to, with per-route overrides of `[proxy]` keys (same key names).
//!
//! ```toml
//! [[routes]]
//! name = "files"                       # optional; defaults to the path
//! path = "/mcp/files"
//! upstreams = ["http://127.0.0.1:3001/mcp", { url = "http://127.0.0.1:3002/mcp", weight = 2 }]
//! upstream_response_timeout_secs = 30  # any key of the override list below
//! ```
//!
//! `proxy.upstream` (`--upstream`), when set, is the route named and served at
//! `proxy.endpoint_path` with that one endpoint; `--route PATH=URL[,URL…]` adds routes.
//! Paths match exactly (`/mcp/a/` is not `/mcp/a`).

use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Serialize};
use serde_with::{DurationMilliSeconds, DurationSeconds, serde_as};

use super::{Config, ForwardedMode, ProxyConfig};

/// Most routes one configuration may name.
pub const MAX_ROUTES: usize = 256;
/// Most upstream endpoints one route may name.
pub const MAX_ENDPOINTS: usize = 64;
/// Largest endpoint weight.
pub const MAX_WEIGHT: u32 = 100;
/// The well-known URI prefix (RFC 8615): no route may be served under it, where the OAuth
/// discovery documents of the routes are (`proxy::oauth`).
pub const WELL_KNOWN: &str = "/.well-known/";

/// Active health checks of upstream endpoints (`proxy.health_check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheck {
    /// Passive checks only: failures of real requests eject an endpoint.
    #[default]
    None,
    /// A JSON-RPC `ping` `POST`ed to the endpoint (`MCP-Protocol-Version: 2025-06-18`, no
    /// session): any answer below `500` passes, since a stateful server may answer a
    /// sessionless request `400` and still be up; no answer or a `5xx` fails.
    Ping,
    /// A `GET` of `health_check_path` on the endpoint's host: a `2xx` passes.
    Http,
}

/// One upstream endpoint of a route: a URL, or a URL with a weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EndpointConfig {
    /// `"http://host:port/path"`, weight 1.
    Url(String),
    /// `{ url = "http://host:port/path", weight = 2 }`.
    Weighted(WeightedEndpoint),
}

/// An endpoint with its weight (1 to [`MAX_WEIGHT`]): the balancer compares outstanding
/// requests divided by weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedEndpoint {
    /// The endpoint's URL (`http://`).
    pub url: String,
    /// Its weight. Default 1.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl EndpointConfig {
    /// The URL as written.
    pub fn url(&self) -> &str {
        match self {
            Self::Url(url) | Self::Weighted(WeightedEndpoint { url, .. }) => url,
        }
    }

    /// The weight (1 unless given).
    pub fn weight(&self) -> u32 {
        match self {
            Self::Url(_) => 1,
            Self::Weighted(w) => w.weight,
        }
    }
}

/// One `[[routes]]` entry: its path, its endpoints, and overrides of `[proxy]` keys (unset:
/// the global value).
#[serde_as]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's name in logs, metrics, session records and the control plane. Default:
    /// the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The endpoint path clients use, matched exactly; starts with `/`.
    pub path: String,
    /// The pool: one or more `http://` endpoint URLs (or `{ url, weight }` tables).
    pub upstreams: Vec<EndpointConfig>,
    /// Overrides `proxy.allowed_origins`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
    /// Overrides `proxy.allow_loopback_origins`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_loopback_origins: Option<bool>,
    /// Overrides `proxy.allowed_hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hosts: Option<Vec<String>>,
    /// Overrides `proxy.max_request_body_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<usize>,
    /// Overrides `proxy.max_event_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_event_bytes: Option<usize>,
    /// Overrides `proxy.sse_keepalive_secs`.
    #[serde(rename = "sse_keepalive_secs")]
    #[serde_as(as = "Option<DurationSeconds<u64>>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_keepalive: Option<Duration>,
    /// Overrides `proxy.upstream_connect_timeout_ms`.
    #[serde(rename = "upstream_connect_timeout_ms")]
    #[serde_as(as = "Option<DurationMilliSeconds<u64>>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_connect_timeout: Option<Duration>,
    /// Overrides `proxy.upstream_response_timeout_secs`.
    #[serde(rename = "upstream_response_timeout_secs")]
    #[serde_as(as = "Option<DurationSeconds<u64>>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_response_timeout: Option<Duration>,
    /// Overrides `proxy.upstream_idle_timeout_ms`.
    #[serde(rename = "upstream_idle_timeout_ms")]
    #[serde_as(as = "Option<DurationMilliSeconds<u64>>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_idle_timeout: Option<Duration>,
    /// Overrides `proxy.upstream_tcp_keepalive_secs`.
    #[serde(rename = "upstream_tcp_keepalive_secs")]
    #[serde_as(as = "Option<DurationSeconds<u64>>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tcp_keepalive: Option<Duration>,
    /// Overrides `proxy.request_body_timeout_secs`.
    #[serde(rename = "request_body_timeout_secs")]
    #[serde_as(as = "Option<DurationSeconds<u64>>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body_timeout: Option<Duration>,
    /// Overrides `proxy.forwarded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<ForwardedMode>,
    /// Overrides `proxy.trusted_proxies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,
    /// Overrides `proxy.eject_after_failures`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eject_after_failures: Option<u32>,
    /// Overrides `proxy.base_ejection_time_ms`.
    #[serde(rename = "base_ejection_time_ms")]
    #[serde_as(as = "Option<DurationMilliSeconds<u64>>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Overrides `proxy.max_ejection_time_ms`.
    #[serde(rename = "max_ejection_time_ms")]
    #[serde_as(as = "Option<DurationMilliSeconds<u64>>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<Duration>,
    /// Overrides `proxy.health_check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Overrides `proxy.health_check_interval_ms`.
    #[serde(rename = "health_check_interval_ms")]
    #[serde_as(as = "Option<DurationMilliSeconds<u64>>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_interval: Option<Duration>,
    /// Overrides `proxy.health_check_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_path: Option<String>,
    /// The route's public URL as clients reach it (`proxy.public_url` for this route; never
    /// inherited from `[proxy]`): the `resource` of its protected-resource metadata. Default:
    /// none (`http://` + the request's `Host` + `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Overrides `proxy.upstream_ca_file` (the CAs its `https://` endpoints are verified
    /// against).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ca_file: Option<std::path::PathBuf>,
    /// Overrides `proxy.auth` (`[routes.auth]`), whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<super::AuthConfig>,
    /// Overrides `proxy.policy` (`[routes.policy]`), whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<super::PolicyConfig>,
    /// Overrides `proxy.rate_limit` (`[routes.rate_limit]`), whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<super::RateLimitConfig>,
    /// Overrides `proxy.cache` (`[routes.cache]`), whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<super::CacheConfig>,
}

impl RouteConfig {
    /// A route at `path` to `upstreams` (weight 1 each), with no overrides: what
    /// `--route PATH=URL[,URL…]` gives.
    pub fn new(path: impl Into<String>, upstreams: impl IntoIterator<Item = String>) -> Self {
        Self {
            name: None,
            path: path.into(),
            upstreams: upstreams.into_iter().map(EndpointConfig::Url).collect(),
            allowed_origins: None,
            allow_loopback_origins: None,
            allowed_hosts: None,
            max_request_body_bytes: None,
            max_event_bytes: None,
            sse_keepalive: None,
            upstream_connect_timeout: None,
            upstream_response_timeout: None,
            upstream_idle_timeout: None,
            upstream_tcp_keepalive: None,
            request_body_timeout: None,
            forwarded: None,
            trusted_proxies: None,
            eject_after_failures: None,
            base_ejection_time: None,
            max_ejection_time: None,
            health_check: None,
            health_check_interval: None,
            health_check_path: None,
            public_url: None,
            upstream_ca_file: None,
            auth: None,
            policy: None,
            rate_limit: None,
            cache: None,
        }
    }

    /// Parses `--route PATH=URL[,URL…]`.
    pub fn parse_flag(flag: &str) -> Result<Self, String> {
        let (path, urls) = flag
            .split_once('=')
            .ok_or_else(|| format!("`{flag}`: expected PATH=URL[,URL…]"))?;
        let urls: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return Err(format!("`{flag}`: no upstream URL after `=`"));
        }
        Ok(Self::new(path.trim(), urls))
    }

    /// `global` with this route's overrides applied, its endpoint path set to the route's and
    /// its `public_url` to the route's own (a URL names one resource: never the global one).
    pub fn apply(&self, global: &ProxyConfig) -> ProxyConfig {
        let mut p = global.clone();
        p.endpoint_path = self.path.clone();
        p.public_url = self.public_url.clone();
        if let Some(ca) = &self.upstream_ca_file {
            p.upstream_ca_file = Some(ca.clone());
        }
        macro_rules! over {
            ($($field:ident),* $(,)?) => {
                $(if let Some(v) = &self.$field { p.$field = v.clone(); })*
            };
        }
        over!(
            allowed_origins,
            allow_loopback_origins,
            allowed_hosts,
            max_request_body_bytes,
            max_event_bytes,
            sse_keepalive,
            upstream_connect_timeout,
            upstream_response_timeout,
            upstream_idle_timeout,
            upstream_tcp_keepalive,
            request_body_timeout,
            forwarded,
            trusted_proxies,
            eject_after_failures,
            base_ejection_time,
            max_ejection_time,
            health_check,
            health_check_interval,
            health_check_path,
            auth,
            policy,
            rate_limit,
            cache,
        );
        p
    }
}

/// A route as the data plane runs it: its name and path, its endpoints (parsed URLs with
/// their weights), and its effective `[proxy]` settings (the global ones with its overrides;
/// `upstream` is its first endpoint, `endpoint_path` its path).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedRoute {
    /// The route's name (its path unless named).
    pub name: String,
    /// The endpoint path, matched exactly.
    pub path: String,
    /// Its endpoints, in configuration order: URL and weight.
    pub endpoints: Vec<(Uri, u32)>,
    /// Its effective settings.
    pub proxy: ProxyConfig,
}

impl Config {
    /// Every route the data plane serves, in order: the `proxy.upstream` shorthand first (at
    /// `proxy.endpoint_path`, named after it) when set, then `[[routes]]`. Endpoint URLs that do
    /// not parse are left out (`file::load` refuses them first).
    pub fn resolved_routes(&self) -> Vec<ResolvedRoute> {
        let mut routes = Vec::with_capacity(self.routes.len() + 1);
        if self.proxy.upstream.authority().is_some() {
            routes.push(ResolvedRoute {
                name: self.proxy.endpoint_path.clone(),
                path: self.proxy.endpoint_path.clone(),
                endpoints: vec![(self.proxy.upstream.clone(), 1)],
                proxy: self.proxy.clone(),
            });
        }
        for route in &self.routes {
            let endpoints: Vec<(Uri, u32)> = route
                .upstreams
                .iter()
                .filter_map(|e| Some((e.url().parse().ok()?, e.weight())))
                .collect();
            let mut proxy = route.apply(&self.proxy);
            if let Some((first, _)) = endpoints.first() {
                proxy.upstream = first.clone();
            }
            routes.push(ResolvedRoute {
                name: route.name.clone().unwrap_or_else(|| route.path.clone()),
                path: route.path.clone(),
                endpoints,
                proxy,
            });
        }
        routes
    }
}

/// Checks `[[routes]]` against each other and the shorthand: each path starts with `/` and is
/// served once, each name is used once, each route has 1 to [`MAX_ENDPOINTS`] distinct
/// `http://` endpoints with a host and weights 1 to [`MAX_WEIGHT`]. Errors name the route.
/// The overrides' values are checked with the global keys' checks by the caller.
pub(super) fn check_routes(config: &Config) -> Result<(), String> {
    if config.routes.len() > MAX_ROUTES {
        return Err(format!("at most {MAX_ROUTES} routes"));
    }
    let mut paths: Vec<&str> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    if config.proxy.upstream.authority().is_some() {
        paths.push(&config.proxy.endpoint_path);
        names.push(config.proxy.endpoint_path.clone());
    }
    for route in &config.routes {
        let path = route.path.as_str();
        let at = format!("route `{path}`");
        if !path.starts_with('/') {
            return Err(format!("{at}: path must start with `/`"));
        }
        if path.len() > 1024 || path.contains(['?', '#']) || path.chars().any(char::is_whitespace) {
            return Err(format!(
                "{at}: path must be a plain URL path (no query, fragment or spaces)"
            ));
        }
        if path.starts_with(WELL_KNOWN) {
            return Err(format!(
                "{at}: paths under {WELL_KNOWN} are the OAuth discovery documents'"
            ));
        }
        if paths.contains(&path) {
            return Err(format!(
                "{at}: path served twice (another route or proxy.endpoint_path)"
            ));
        }
        paths.push(path);
        let name = route.name.clone().unwrap_or_else(|| path.to_owned());
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(format!("{at}: name must be 1 to 128 printable characters"));
        }
        if names.contains(&name) {
            return Err(format!("{at}: name `{name}` used twice"));
        }
        names.push(name);
        if route.upstreams.is_empty() || route.upstreams.len() > MAX_ENDPOINTS {
            return Err(format!(
                "{at}: upstreams must name 1 to {MAX_ENDPOINTS} endpoints"
            ));
        }
        let mut seen: Vec<Uri> = Vec::new();
        for endpoint in &route.upstreams {
            let url = endpoint.url();
            let shown = super::file::redact_url(url).unwrap_or_else(|| url.to_owned());
            let uri = check_endpoint_url(url).map_err(|e| format!("{at}: `{shown}`: {e}"))?;
            if seen.contains(&uri) {
                return Err(format!("{at}: `{shown}` named twice"));
            }
            seen.push(uri);
            if !(1..=MAX_WEIGHT).contains(&endpoint.weight()) {
                return Err(format!("{at}: `{shown}`: weight must be 1 to {MAX_WEIGHT}"));
            }
        }
    }
    if paths.is_empty() {
        return Err("no route: set proxy.upstream (--upstream) or add [[routes]] (--route)".into());
    }
    Ok(())
}

/// An upstream endpoint URL: `http://` or `https://` with a host.
pub fn check_endpoint_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(
            "must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:3001/mcp".into(),
        );
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_flag_parses_path_and_urls() {
        let r = RouteConfig::parse_flag("/mcp/files=http://a:1/mcp,http://b:2/mcp").unwrap();
        assert_eq!(r.path, "/mcp/files");
        assert_eq!(
            r.upstreams
                .iter()
                .map(EndpointConfig::url)
                .collect::<Vec<_>>(),
            ["http://a:1/mcp", "http://b:2/mcp"]
        );
        assert!(RouteConfig::parse_flag("/mcp").is_err());
        assert!(RouteConfig::parse_flag("/mcp=").is_err());
    }

    #[test]
    fn overrides_win_over_the_global_keys_and_the_rest_default() {
        let mut route = RouteConfig::new("/a", ["http://h:1/mcp".to_owned()]);
        route.upstream_response_timeout = Some(Duration::from_secs(7));
        let global = ProxyConfig::new(Uri::default());
        let p = route.apply(&global);
        assert_eq!(p.upstream_response_timeout, Duration::from_secs(7));
        assert_eq!(p.endpoint_path, "/a");
        assert_eq!(p.max_request_body_bytes, global.max_request_body_bytes);
    }
}
