//! Where the settings come from: embedded defaults < a TOML file < `MCP_RELAY_…` environment
//! variables < command-line flags, merged with figment (later layers win, key by key), then
//! extracted as a [`Config`] and checked.
//!
//! [`Config`] and its sections are the file's schema (see [`crate::config`]): the same tree,
//! every duration named with its unit (`idle_ttl_secs`, `flush_interval_ms`), every size in
//! bytes (`max_event_bytes`), every key documented in `deploy/systemd/mcp-relay.toml`. The
//! embedded defaults are [`Config::new`]'s, serialized, so each default is written once.
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
//! 1. Add the field, with its doc and its default, to its runtime struct
//!    ([`crate::config::ProxyConfig`], [`crate::session::SessionConfig`], …). Its key is the
//!    field's name; a duration's key names its unit: `#[serde(rename = "linger_secs")]` with
//!    `#[serde_as(as = "DurationSeconds<u64>")]` (or `_ms` with `DurationMilliSeconds<u64>`).
//! 2. If only some values are valid, refuse the others in [`load`]'s checks (`check`), naming
//!    the key.
//! 3. Document it in `deploy/systemd/mcp-relay.toml` (the test `daemon_config` checks that every
//!    key of the effective configuration appears in that file).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
    value::Value,
};
use http::Uri;
use serde::Serialize;

use crate::config::Config;

mod check;
use check::check;
pub use check::{MAX_DATA_THREADS, MAX_DURATION};

/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "MCP_RELAY_";
/// The environment variable naming the configuration file (`--config` wins over it).
pub const ENV_CONFIG_FILE: &str = "MCP_RELAY_CONFIG";

/// The configuration could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named configuration file cannot be read (it does not exist, or is not readable).
    #[error("configuration file {}: {source}", path.display())]
    File {
        /// The file, as named by `--config`, the argument or `MCP_RELAY_CONFIG`.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// A layer could not be read, or a value has the wrong type, or a key is unknown. The
    /// message names the key and the layer it came from.
    #[error("{}", redact_urls_in(&.0.to_string()))]
    Layers(Box<figment::Error>),
    /// Every key has a value of its type, but one is out of bounds or inconsistent with another
    /// (checked in a fixed order; the first failure is reported).
    #[error("`{key}`: {message}")]
    Invalid {
        /// The offending key, as a dotted path (`session.idle_ttl_secs`).
        key: &'static str,
        /// What is wrong with its value, and what is accepted.
        message: String,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        Self::Layers(Box::new(err))
    }
}

/// A [`ConfigError::Invalid`] naming `key`.
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
pub struct Overrides(Vec<(&'static str, Value, Merge)>);

/// How a flag's value meets the layers below it.
#[derive(Debug, Clone, Copy)]
enum Merge {
    /// It replaces them.
    Replace,
    /// A list: its items are added to theirs (`--route`).
    Append,
}

impl Overrides {
    /// Sets `key` (a dotted path, e.g. `session.idle_ttl_secs`) to `value`.
    pub fn set(&mut self, key: &'static str, value: impl Serialize) -> &mut Self {
        self.push(key, value, Merge::Replace)
    }

    /// Adds the items of the list `value` to the list at `key` from the layers below (a
    /// repeatable flag that adds to the file's entries, like `--route`).
    pub fn append(&mut self, key: &'static str, value: impl Serialize) -> &mut Self {
        self.push(key, value, Merge::Append)
    }

    fn push(&mut self, key: &'static str, value: impl Serialize, merge: Merge) -> &mut Self {
        match Value::serialize(value) {
            Ok(value) => self.0.push((key, value, merge)),
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
    // The defaults have no upstream: its placeholder is not serialized.
    let defaults = Config::new(Uri::default());
    let mut figment = Figment::from(Serialized::defaults(defaults));
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
    for (key, value, merge) in &sources.overrides.0 {
        let layer = Serialized::default(key, value.clone());
        figment = match merge {
            Merge::Replace => figment.merge(layer),
            Merge::Append => figment.admerge(layer),
        };
    }
    Ok(figment)
}

/// The `MCP_RELAY_…` layer: `__` separates levels, `UPSTREAM` is `proxy.upstream`, and the
/// variables that are not settings are ignored.
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

/// Merges the layers, extracts the configuration and checks it.
pub fn load(sources: &Sources) -> Result<Loaded, ConfigError> {
    let figment = figment(sources)?;
    let mut config: Config = figment.extract()?;
    check_integers(&figment, &figment.extract()?, &mut Vec::new())?;
    // The text as written: `Config` holds only what parsed of it (see `config::upstream_key`).
    let upstream = figment
        .find_value("proxy.upstream")
        .ok()
        .and_then(Value::into_string);
    config.proxy.upstream = check(&config, upstream.as_deref())?;
    let upstream = upstream.unwrap_or_default();
    Ok(Loaded { config, upstream })
}

/// A configuration that loaded and passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The settings to run with.
    pub config: Config,
    /// `proxy.upstream` as written, which `check-config` shows: its [`Uri`] may print otherwise
    /// (`http://h` as `http://h/`).
    upstream: String,
}

impl Loaded {
    /// This configuration as TOML with secrets masked: any key naming a token, secret or
    /// password, and the password (or the whole user part) of any URL.
    pub fn to_masked_toml(&self) -> String {
        let mut value = match toml::Value::try_from(&self.config) {
            Ok(value) => value,
            // `check_integers` refused every number TOML cannot hold.
            Err(err) => unreachable!("the configuration serializes to TOML: {err}"),
        };
        if let Some(proxy) = value.get_mut("proxy").and_then(toml::Value::as_table_mut)
            && !self.upstream.is_empty()
        {
            proxy.insert("upstream".into(), self.upstream.clone().into());
        }
        mask(&mut value, "");
        toml::to_string_pretty(&value).unwrap_or_else(|err| format!("# not printable: {err}\n"))
    }
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

/// What replaces a secret in printed configuration and logs.
pub const MASK: &str = "********";

/// Key names whose values are secrets.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["token", "secret", "password", "credential", "authorization"]
        .iter()
        .any(|s| key.contains(s))
}

/// Masks, in place, every secret in `value` (found under `key`): see [`Loaded::to_masked_toml`].
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

/// `text` with every URL in it (`scheme://…`, up to a space or a quote) passed through
/// [`redact_url`]: for messages that quote values, such as figment's type errors.
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The URL starts at its scheme: the letters before `://`.
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        let url = &rest[start..end];
        out.push_str(&redact_url(url).unwrap_or_else(|| url.to_owned()));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
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
    use std::net::SocketAddr;

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
    fn the_defaults_round_trip_through_a_file() {
        Jail::expect_with(|jail| {
            let config = Config::new(Uri::from_static("http://127.0.0.1:3001/mcp"));
            jail.create_file("relay.toml", &toml::to_string(&config).unwrap())?;
            let loaded = load(&sources(Some("relay.toml"), Overrides::default())).unwrap();
            assert_eq!(loaded.config, config);
            assert_eq!(loaded.upstream, "http://127.0.0.1:3001/mcp");
            Ok(())
        });
    }

    #[test]
    fn the_embedded_defaults_are_the_runtime_defaults_without_an_upstream() {
        let figment = figment(&Sources::default()).unwrap();
        assert!(!figment.contains("proxy.upstream"));
        assert_eq!(
            figment
                .extract_inner::<u64>("session.idle_ttl_secs")
                .unwrap(),
            crate::session::SessionConfig::default().idle_ttl.as_secs()
        );
        let mut config: Config = figment.extract().unwrap();
        let upstream = Uri::from_static("http://127.0.0.1:3001/mcp");
        config.proxy.upstream = upstream.clone();
        assert_eq!(config, Config::new(upstream));
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
            let c = load(&sources(Some("relay.toml"), flags)).unwrap().config;
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
            let c = load(&sources(None, flags)).unwrap().config;
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
            let c = load(&sources(None, Overrides::default())).unwrap().config;
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

            jail.set_env("MCP_RELAY_UPSTREAM", "ftp://h/mcp");
            let err = load(&sources(None, Overrides::default())).unwrap_err();
            assert!(err.to_string().contains("http:// or https://"), "{err}");
            jail.set_env("MCP_RELAY_UPSTREAM", "https://h/mcp");
            let c = load(&sources(None, Overrides::default())).unwrap().config;
            assert_eq!(c.proxy.upstream, "https://h/mcp");

            jail.set_env("MCP_RELAY_UPSTREAM", "http://h o/mcp");
            let err = load(&sources(None, Overrides::default())).unwrap_err();
            assert!(
                err.to_string().contains("`proxy.upstream`: not a URL"),
                "{err}"
            );

            jail.set_env("MCP_RELAY_UPSTREAM", "http://h/mcp");
            jail.set_env("MCP_RELAY_ADMIN_LISTEN", "127.0.0.1:8080");
            let err = load(&sources(None, Overrides::default())).unwrap_err();
            assert!(err.to_string().contains("admin_listen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn printing_masks_secrets_and_shows_the_upstream_as_written() {
        let loaded = Loaded {
            config: Config::new(Uri::from_static("http://svc:hunter2@10.0.0.1:3001/mcp")),
            upstream: "http://svc:hunter2@10.0.0.1:3001".into(),
        };
        let text = loaded.to_masked_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("upstream = \"http://svc:********@10.0.0.1:3001\"\n"),
            "{text}"
        );

        let mut v = toml::Value::try_from(&loaded.config).unwrap();
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

    /// A value of the wrong type is quoted in figment's error, which goes to stderr at start
    /// and to the log at every SIGHUP: a password in a URL there is masked like everywhere
    /// else.
    #[test]
    fn a_url_quoted_in_a_type_error_has_its_password_masked() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "relay.toml",
                "[[routes]]\npath = \"/a\"\nupstreams = \"http://ops:hunter2@127.0.0.1:3001/mcp\"\n",
            )?;
            let err = load(&sources(Some("relay.toml"), Overrides::default()))
                .expect_err("a string where a list goes")
                .to_string();
            assert!(err.contains("upstreams"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
            Ok(())
        });
    }

    /// `[[routes]]` in the exact shape operators write, alone (no `proxy.upstream`), resolve
    /// to routes with their overrides; `--route` adds to the file's routes.
    #[test]
    fn a_file_with_only_routes_is_valid_and_flags_add_routes() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "relay.toml",
                r#"
                    [proxy]
                    upstream_response_timeout_secs = 9
                    [[routes]]
                    name = "files"
                    path = "/mcp/files"
                    upstreams = ["http://127.0.0.1:3001/mcp", "http://127.0.0.1:3002/mcp"]
                    [[routes]]
                    path = "/mcp/git"
                    upstreams = [{ url = "http://127.0.0.1:3003/mcp", weight = 3 }]
                    upstream_response_timeout_secs = 30
                    max_request_body_bytes = 1024
                "#,
            )?;
            let mut flags = Overrides::default();
            flags.append(
                "routes",
                vec![
                    crate::config::RouteConfig::parse_flag("/mcp/x=http://127.0.0.1:3004/mcp")
                        .unwrap(),
                ],
            );
            let loaded = load(&sources(Some("relay.toml"), flags)).unwrap();
            let routes = loaded.config.resolved_routes();
            let names: Vec<_> = routes.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(names, ["files", "/mcp/git", "/mcp/x"]);
            assert_eq!(routes[0].endpoints.len(), 2);
            assert_eq!(
                routes[0].proxy.upstream_response_timeout,
                Duration::from_secs(9)
            );
            assert_eq!(routes[1].endpoints[0].1, 3);
            assert_eq!(
                routes[1].proxy.upstream_response_timeout,
                Duration::from_secs(30)
            );
            assert_eq!(routes[1].proxy.max_request_body_bytes, 1024);
            assert!(!loaded.to_masked_toml().contains("upstream = \"\""));
            Ok(())
        });
    }

    /// The interceptors' tables in the exact shape issue 15 gives (`[routes.policy]` after a
    /// `[[routes]]`), a global `[proxy.policy]` the other routes inherit, limits, cache and
    /// traces, through the real loader.
    #[test]
    fn route_policy_limits_cache_and_traces_load_in_the_documented_shape() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "relay.toml",
                r#"
                    [proxy.policy]
                    deny_prompts = ["*"]
                    [[routes]]
                    name = "files"
                    path = "/mcp/files"
                    upstreams = ["http://127.0.0.1:3001/mcp"]
                    [routes.policy]
                    allow_tools = ["search_*", "read_file"]   # glob; empty or absent = all
                    deny_tools = ["delete_*"]                 # deny wins
                    [routes.rate_limit]
                    client_requests_per_second = 10
                    [[routes.rate_limit.tools]]
                    name = "search_*"
                    requests_per_second = 1
                    [routes.cache]
                    enabled = true
                    [[routes]]
                    path = "/mcp/git"
                    upstreams = ["http://127.0.0.1:3003/mcp"]
                    [traces]
                    otlp_endpoint = "http://127.0.0.1:4317"
                "#,
            )?;
            let loaded = load(&sources(Some("relay.toml"), Overrides::default())).unwrap();
            let routes = loaded.config.resolved_routes();
            let files = &routes[0].proxy;
            assert_eq!(files.policy.allow_tools, ["search_*", "read_file"]);
            assert_eq!(files.policy.deny_tools, ["delete_*"]);
            assert!(
                files.policy.deny_prompts.is_empty(),
                "a route's policy replaces it whole"
            );
            assert_eq!(files.rate_limit.client_requests_per_second, 10);
            assert_eq!(files.rate_limit.tools[0].name, "search_*");
            assert!(files.cache.enabled);
            let git = &routes[1].proxy;
            assert_eq!(git.policy.deny_prompts, ["*"], "the global policy");
            assert!(git.rate_limit.is_empty() && !git.cache.enabled);
            assert_eq!(loaded.config.traces.otlp_endpoint, "http://127.0.0.1:4317");
            Ok(())
        });
    }

    /// Each mistake in `[[routes]]` is refused naming the route.
    #[test]
    fn bad_routes_are_refused_naming_the_route() {
        let cases = [
            (
                r#"path = "mcp"
                upstreams = ["http://h:1/mcp"]"#,
                "start with `/`",
            ),
            (
                r#"path = "/a"
                upstreams = []"#,
                "1 to 64",
            ),
            (
                r#"path = "/a"
                upstreams = ["ftp://h:1/mcp"]"#,
                "http:// or https:// URL",
            ),
            (
                r#"path = "/a"
                upstreams = ["http://h:1/mcp", "http://h:1/mcp"]"#,
                "named twice",
            ),
            (
                r#"path = "/a"
                upstreams = [{ url = "http://h:1/mcp", weight = 0 }]"#,
                "weight",
            ),
            (
                r#"path = "/a"
                upstreams = ["http://h:1/mcp"]
                upstream_response_timeout_secs = 0"#,
                "upstream_response_timeout_secs",
            ),
            (
                r#"path = "/a"
                upstreams = ["http://h:1/mcp"]
                allowed_origins = ["not an origin"]"#,
                "allowed_origins",
            ),
            (
                r#"path = "/.well-known/oauth-protected-resource"
                upstreams = ["http://h:1/mcp"]"#,
                "/.well-known/",
            ),
            (
                r#"path = "/a"
                upstreams = ["http://h:1/mcp"]
                public_url = "https://u:p@mcp.example/a""#,
                "public_url",
            ),
        ];
        for (route, expected) in cases {
            Jail::expect_with(|jail| {
                jail.create_file("relay.toml", &format!("[[routes]]\n{route}\n"))?;
                let err = load(&sources(Some("relay.toml"), Overrides::default()))
                    .expect_err(route)
                    .to_string();
                assert!(
                    err.contains("routes") && err.contains(expected),
                    "{route}: {err}"
                );
                Ok(())
            });
        }
        // A path served twice (here: the shorthand's), and an unknown key.
        Jail::expect_with(|jail| {
            jail.create_file(
                "relay.toml",
                "[proxy]\nupstream = \"http://h:1/mcp\"\n[[routes]]\npath = \"/mcp\"\nupstreams = [\"http://h:2/mcp\"]\n",
            )?;
            let err = load(&sources(Some("relay.toml"), Overrides::default())).unwrap_err();
            assert!(err.to_string().contains("served twice"), "{err}");
            jail.create_file(
                "relay.toml",
                "[[routes]]\npath = \"/a\"\nupstreams = [\"http://h:2/mcp\"]\nupstream = \"x\"\n",
            )?;
            let err = load(&sources(Some("relay.toml"), Overrides::default())).unwrap_err();
            assert!(err.to_string().contains("upstream"), "{err}");
            // `/a/` is another path than `/a`: both may be routes.
            jail.create_file(
                "relay.toml",
                "[[routes]]\npath = \"/a\"\nupstreams = [\"http://h:2/mcp\"]\n[[routes]]\npath = \"/a/\"\nupstreams = [\"http://h:3/mcp\"]\n",
            )?;
            load(&sources(Some("relay.toml"), Overrides::default())).expect("distinct paths");
            Ok(())
        });
    }

    /// `public_url`: the shorthand's names the `proxy.upstream` route (refused without one);
    /// a route's is its own, never the global one.
    /// `[tls]` and `[admin_tls]` need both files, which must load; client certificates are
    /// the control plane's; `upstream_ca_file` must hold a CA (globally and per route).
    #[test]
    fn tls_settings_are_checked_naming_their_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (crt, pem) = (dir.path().join("a.crt"), dir.path().join("a.key"));
        std::fs::write(&crt, cert.pem()).expect("write");
        std::fs::write(&pem, key.serialize_pem()).expect("write");
        let (crt, pem) = (crt.display(), pem.display());
        let up = "[proxy]\nupstream = \"https://h/mcp\"\n";
        let cases = [
            (format!("[tls]\ncert_file = \"{crt}\"\n"), Some("`tls`: cert_file and key_file")),
            (
                format!("[tls]\ncert_file = \"{crt}\"\nkey_file = \"{crt}\"\n"),
                Some("private key file"),
            ),
            (
                format!("[tls]\ncert_file = \"{crt}\"\nkey_file = \"{pem}\"\nclient_ca_file = \"{crt}\"\n"),
                Some("`tls`: client_ca_file is for the control plane"),
            ),
            (
                format!("admin_socket = \"/tmp/x.sock\"\n[admin_tls]\ncert_file = \"{crt}\"\nkey_file = \"{pem}\"\n"),
                Some("`admin_tls`: the control plane's Unix socket"),
            ),
            (
                format!("[admin_tls]\ncert_file = \"/nowhere.crt\"\nkey_file = \"{pem}\"\n"),
                Some("/nowhere.crt"),
            ),
            (
                format!("[tls]\ncert_file = \"{crt}\"\nkey_file = \"{pem}\"\nmax_handshakes = 3\n"),
                Some("control plane's"),
            ),
            (
                format!("[admin_tls]\ncert_file = \"{crt}\"\nkey_file = \"{pem}\"\nhandshake_timeout_secs = 0\n"),
                Some("at least 1"),
            ),
            (
                "[proxy]\nupstream_ca_file = \"/nowhere.pem\"\n".to_owned(),
                Some("`proxy.upstream_ca_file`"),
            ),
            (
                "[[routes]]\npath = \"/a\"\nupstreams = [\"https://h/a\"]\nupstream_ca_file = \"/nowhere.pem\"\n".to_owned(),
                Some("/nowhere.pem"),
            ),
            (
                format!("[tls]\ncert_file = \"{crt}\"\nkey_file = \"{pem}\"\n[admin_tls]\ncert_file = \"{crt}\"\nkey_file = \"{pem}\"\nclient_ca_file = \"{crt}\"\n[proxy]\nupstream_ca_file = \"{crt}\"\n"),
                None,
            ),
        ];
        for (text, expected) in cases {
            Jail::expect_with(|jail| {
                let text = if text.contains("[proxy]") {
                    text.replace("[proxy]\n", up)
                } else {
                    format!("{text}{up}")
                };
                jail.create_file("relay.toml", &text)?;
                let loaded = load(&sources(Some("relay.toml"), Overrides::default()));
                match (expected, loaded) {
                    (Some(expected), Err(err)) => {
                        assert!(err.to_string().contains(expected), "{text}\n{err}");
                    }
                    (None, Ok(loaded)) => {
                        assert!(loaded.config.tls.enabled());
                        assert!(loaded.config.admin_tls.requires_client_certificates());
                    }
                    (expected, loaded) => panic!("{text}: expected {expected:?}, got {loaded:?}"),
                }
                Ok(())
            });
        }
    }

    /// A resource-server route must know its tokens' audience from the configuration, never
    /// from the request's Host.
    #[test]
    fn a_resource_server_route_needs_its_public_url_or_an_audience() {
        let route = |extra: &str| {
            format!(
                "[[routes]]\npath = \"/a\"\nupstreams = [\"http://h:1/mcp\"]\n{extra}[routes.auth]\nmode = \"resource_server\"\nissuer = \"https://as.example\"\n"
            )
        };
        Jail::expect_with(|jail| {
            jail.create_file("none.toml", &route(""))?;
            let err = load(&sources(Some("none.toml"), Overrides::default())).unwrap_err();
            assert!(err.to_string().contains("public_url"), "{err}");
            jail.create_file(
                "url.toml",
                &route("public_url = \"https://mcp.example/a\"\n"),
            )?;
            load(&sources(Some("url.toml"), Overrides::default())).unwrap();
            jail.create_file(
                "global.toml",
                "[proxy]\nupstream = \"http://h:1/mcp\"\n[proxy.auth]\nmode = \"resource_server\"\nissuer = \"https://as.example\"\naudience = \"https://mcp.example/mcp\"\n",
            )?;
            load(&sources(Some("global.toml"), Overrides::default())).unwrap();
            // Per-tool scopes and the result cache on one route: refused.
            jail.create_file(
                "cached.toml",
                &route("public_url = \"https://mcp.example/a\"\n[routes.cache]\nenabled = true\n")
                    .replace(
                        "issuer = \"https://as.example\"\n",
                        "issuer = \"https://as.example\"\ntool_scopes = { x = [\"admin\"] }\n",
                    ),
            )?;
            let err = load(&sources(Some("cached.toml"), Overrides::default())).unwrap_err();
            assert!(err.to_string().contains("not supported together"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn public_urls_belong_to_one_route() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "relay.toml",
                r#"
                    [proxy]
                    upstream = "http://127.0.0.1:3001/mcp"
                    public_url = "https://mcp.example/mcp"
                    [[routes]]
                    path = "/mcp/a"
                    upstreams = ["http://127.0.0.1:3002/mcp"]
                    [[routes]]
                    path = "/mcp/b"
                    upstreams = ["http://127.0.0.1:3003/mcp"]
                    public_url = "https://mcp.example/b"
                "#,
            )?;
            let loaded = load(&sources(Some("relay.toml"), Overrides::default())).unwrap();
            let urls: Vec<_> = loaded
                .config
                .resolved_routes()
                .into_iter()
                .map(|r| r.proxy.public_url)
                .collect();
            assert_eq!(
                urls,
                [
                    Some("https://mcp.example/mcp".to_owned()),
                    None,
                    Some("https://mcp.example/b".to_owned())
                ]
            );
            jail.create_file(
                "relay.toml",
                "[proxy]\npublic_url = \"https://mcp.example/mcp\"\n[[routes]]\npath = \"/a\"\nupstreams = [\"http://h:2/mcp\"]\n",
            )?;
            let err = load(&sources(Some("relay.toml"), Overrides::default())).unwrap_err();
            assert!(err.to_string().contains("proxy.public_url"), "{err}");
            let mut flags = Overrides::default();
            flags.set("proxy.upstream", "http://127.0.0.1:1/mcp");
            flags.set("proxy.public_url", "mcp.example/mcp");
            let err = load(&sources(None, flags)).unwrap_err();
            assert!(err.to_string().contains("proxy.public_url"), "{err}");
            Ok(())
        });
    }

    /// Every duration setting is bounded: a value that would overflow a deadline (`now + d`,
    /// a store TTL) at run time is refused at load, naming its key, instead of accepted and
    /// panicking later (seen: `session.linger_secs`, `worker.record_ttl_secs` at 2^63 - 1).
    #[test]
    fn durations_past_the_bound_are_refused_naming_their_key() {
        const HUGE_SECS: u64 = i64::MAX as u64;
        let keys = [
            "shutdown_grace_secs",
            "proxy.sse_keepalive_secs",
            "proxy.upstream_connect_timeout_ms",
            "proxy.upstream_response_timeout_secs",
            "proxy.upstream_idle_timeout_ms",
            "proxy.header_read_timeout_secs",
            "proxy.keep_alive_idle_timeout_secs",
            "proxy.request_body_timeout_secs",
            "proxy.base_ejection_time_ms",
            "proxy.max_ejection_time_ms",
            "proxy.health_check_interval_ms",
            "session.idle_ttl_secs",
            "session.linger_secs",
            "session.reconnect_min_delay_ms",
            "session.reconnect_max_delay_ms",
            "worker.flush_interval_ms",
            "worker.record_ttl_secs",
            "worker.max_backoff_ms",
            "store.timeout_ms",
        ];
        for key in keys {
            Jail::expect_with(|_| {
                let mut flags = Overrides::default();
                flags.set("proxy.upstream", "http://127.0.0.1:1/mcp");
                flags.set(key, HUGE_SECS);
                let err = load(&sources(None, flags)).expect_err(key).to_string();
                assert!(err.contains(key), "{key}: {err}");
                Ok(())
            });
        }
        // The bound itself is accepted.
        Jail::expect_with(|_| {
            let mut flags = Overrides::default();
            flags.set("proxy.upstream", "http://127.0.0.1:1/mcp");
            flags.set("session.linger_secs", MAX_DURATION.as_secs());
            load(&sources(None, flags)).expect("a year is allowed");
            Ok(())
        });
    }
}
