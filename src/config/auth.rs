//! `[proxy.auth]` / `[routes.auth]`: who validates the clients' OAuth tokens (issue 14). By
//! default nobody here: the upstream is the resource server and the relay only makes its
//! discovery name the relay ("transparent", `proxy::oauth`). With `mode = "resource_server"`
//! the relay is the route's OAuth 2.1 resource server (MCP authorization spec, 2025-06-18 and
//! later): it serves the protected-resource metadata (RFC 9728), validates JWT access tokens
//! (RFC 9068) against the authorization server's keys, and sends upstream no client token
//! unless told to (`proxy::auth`).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use serde_with::{DurationSeconds, serde_as};

/// Who is the resource server of a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// The upstream (it checks tokens; the relay passes `Authorization` untouched).
    #[default]
    Transparent,
    /// The relay: it validates tokens; the upstream needs no auth code.
    ResourceServer,
}

/// What the upstream gets as `Authorization` in resource-server mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamAuthorization {
    /// Nothing: the client's token stays here (the MCP spec forbids token passthrough).
    #[default]
    Strip,
    /// The client's own `Authorization`, as it came (for an upstream that checks it again).
    Pass,
    /// The contents of `upstream_authorization_file` (trimmed: the whole header value, e.g.
    /// `Bearer <token>`), read at start and at each reload: a credential of the relay's own
    /// (a systemd credential: `/run/credentials/mcp-relay.service/<name>`).
    File,
}

/// Resource-server settings of a route. Default: transparent (nothing here applies).
#[serde_as]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `transparent` (default) or `resource_server`.
    pub mode: AuthMode,
    /// The authorization server's issuer identifier (RFC 8414 §2), e.g.
    /// `https://auth.example.com`: tokens must carry it as `iss`; its metadata (RFC 8414, else
    /// OpenID discovery) names the `jwks_uri`. Required in resource-server mode.
    pub issuer: String,
    /// The JWKS URL, when the issuer's metadata should not be fetched for it. Default: from
    /// the metadata.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jwks_uri: String,
    /// The audience tokens must carry (`aud`, RFC 8707): default the route's resource URL
    /// (`public_url`, else the URL the request came to), which is what MCP clients ask tokens
    /// for.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub audience: String,
    /// `scopes_supported` of the protected-resource metadata. Default: `required_scopes`.
    pub scopes_supported: Vec<String>,
    /// Scopes every request's token must carry (else `403 insufficient_scope`). Default none.
    pub required_scopes: Vec<String>,
    /// Scopes a `tools/call` of a tool needs besides `required_scopes`, by tool name (both
    /// eras; a modern request's `Mcp-Name` is checked against its body before this). Default
    /// none.
    pub tool_scopes: BTreeMap<String, Vec<String>>,
    /// What the upstream gets as `Authorization`: `strip` (default), `pass`, `file`.
    pub upstream_authorization: UpstreamAuthorization,
    /// The file `upstream_authorization = "file"` reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_authorization_file: Option<PathBuf>,
    /// Opaque tokens (not JWTs) are introspected (RFC 7662) as this confidential client
    /// (`client_secret_basic`); empty: only JWTs are accepted. Default empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    /// The file holding `client_id`'s secret (trimmed; e.g. a systemd credential). Required
    /// with `client_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// The introspection endpoint; default: the issuer's metadata's `introspection_endpoint`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub introspection_endpoint: String,
    /// How long an introspected token is taken as active without asking again, in seconds
    /// (never past its `exp`). Default 30.
    #[serde(rename = "introspection_cache_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub introspection_cache: Duration,
    /// Accepted tokens remembered per route (by SHA-256; least recently used dropped first),
    /// so a client's next requests skip the signature check or introspection. Default 10000.
    pub max_cached_tokens: usize,
    /// Introspection requests in flight at once per route; past it a request with a token to
    /// introspect gets `503` (counted in `mcp_relay_auth_keys_unavailable_total`). Default 16.
    pub max_introspections: usize,
    /// Whether tokens must say they are JWT access tokens (`typ: at+jwt`, RFC 9068 §4), so an
    /// ID token of the same issuer and audience is refused. Default true (set false for an
    /// authorization server that types its access tokens `JWT`).
    pub require_access_token_type: bool,
    /// PEM CA certificates the authorization server's `https://` URLs are verified against.
    /// Default: none (the system's roots; `proxy.upstream_ca_file` is the upstreams').
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (at most 300). Default 60.
    #[serde(rename = "leeway_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub leeway: Duration,
    /// How long fetched keys are used before they are fetched again, in seconds. Default 300.
    #[serde(rename = "jwks_max_age_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub jwks_max_age: Duration,
    /// Least time between two fetches of the keys (a token with an unknown `kid` fetches them
    /// again, at most this often, so forged `kid`s cannot make the relay hammer the
    /// authorization server), in seconds. Default 10.
    #[serde(rename = "jwks_min_refresh_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub jwks_min_refresh: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Transparent,
            issuer: String::new(),
            jwks_uri: String::new(),
            audience: String::new(),
            scopes_supported: Vec::new(),
            required_scopes: Vec::new(),
            tool_scopes: BTreeMap::new(),
            upstream_authorization: UpstreamAuthorization::Strip,
            upstream_authorization_file: None,
            client_id: String::new(),
            client_secret_file: None,
            introspection_endpoint: String::new(),
            introspection_cache: Duration::from_secs(30),
            max_cached_tokens: crate::proxy::auth::MAX_CACHED_TOKENS,
            max_introspections: crate::proxy::auth::MAX_INTROSPECTIONS,
            require_access_token_type: true,
            ca_file: None,
            leeway: Duration::from_secs(60),
            jwks_max_age: Duration::from_secs(300),
            jwks_min_refresh: Duration::from_secs(10),
        }
    }
}

/// Longest scope or tool list, and most `tool_scopes` entries (bounded by construction).
pub const MAX_SCOPES: usize = 64;

impl AuthConfig {
    /// Whether it is the default (nothing to serialize).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the relay is the resource server.
    pub fn is_resource_server(&self) -> bool {
        self.mode == AuthMode::ResourceServer
    }

    /// What is wrong with it, if anything (the message names the key).
    pub fn check(&self) -> Result<(), String> {
        if !self.is_resource_server() {
            return Ok(());
        }
        if self.issuer.is_empty() {
            return Err("issuer: required with mode = \"resource_server\"".into());
        }
        check_secure_url("issuer", &self.issuer)?;
        if !self.jwks_uri.is_empty() {
            check_secure_url("jwks_uri", &self.jwks_uri)?;
        }
        if !self.introspection_endpoint.is_empty() {
            check_secure_url("introspection_endpoint", &self.introspection_endpoint)?;
        }
        if !self.client_id.is_empty() {
            let path = self
                .client_secret_file
                .as_ref()
                .ok_or("client_secret_file: required with client_id")?;
            read_secret(path)?;
        }
        if let Some(ca) = &self.ca_file {
            crate::tls::client_config(Some(ca)).map_err(|e| format!("ca_file: {e}"))?;
        }
        if !(1..=1_000_000).contains(&self.max_cached_tokens) {
            return Err("max_cached_tokens: 1 to 1000000".into());
        }
        if !(1..=1024).contains(&self.max_introspections) {
            return Err("max_introspections: 1 to 1024".into());
        }
        if self.leeway > Duration::from_secs(300) {
            return Err("leeway_secs: at most 300".into());
        }
        if self.jwks_min_refresh < Duration::from_secs(1) {
            return Err("jwks_min_refresh_secs: at least 1".into());
        }
        if self.jwks_max_age < self.jwks_min_refresh {
            return Err("jwks_max_age_secs: at least jwks_min_refresh_secs".into());
        }
        let scopes = [
            ("scopes_supported", &self.scopes_supported),
            ("required_scopes", &self.required_scopes),
        ];
        for (key, list) in scopes
            .into_iter()
            .chain(self.tool_scopes.values().map(|v| ("tool_scopes", v)))
        {
            if list.len() > MAX_SCOPES {
                return Err(format!("{key}: at most {MAX_SCOPES} scopes"));
            }
            // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
            if let Some(bad) = list.iter().find(|s| {
                s.is_empty()
                    || !s
                        .bytes()
                        .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) && b != 0x5c)
            }) {
                return Err(format!(
                    "{key}: {bad:?} is not a scope token (RFC 6749 §3.3)"
                ));
            }
        }
        if self.tool_scopes.len() > MAX_SCOPES {
            return Err(format!("tool_scopes: at most {MAX_SCOPES} tools"));
        }
        match (
            self.upstream_authorization,
            &self.upstream_authorization_file,
        ) {
            (UpstreamAuthorization::File, None) => {
                return Err(
                    "upstream_authorization_file: required with upstream_authorization = \"file\""
                        .into(),
                );
            }
            (UpstreamAuthorization::File, Some(path)) => {
                read_credential(path)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// `value` as a URL the keys may come from: `https://` with a host, or `http://` to a loopback
/// address only (keys fetched in the clear could be swapped on the way).
pub fn check_secure_url(key: &str, value: &str) -> Result<(), String> {
    let uri: http::Uri = value
        .parse()
        .map_err(|e| format!("{key}: not a URL: {e}"))?;
    let host = uri.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if loopback => Ok(()),
        _ => Err(format!(
            "{key}: must be an https:// URL (http:// only to a loopback address)"
        )),
    }
}

/// The client secret in `path` (trimmed, one line). Errors name the file, never its contents.
pub fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("client_secret_file {}: {e}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() || secret.len() > 4096 || secret.contains(['\n', '\r']) {
        return Err(format!(
            "client_secret_file {}: empty, longer than 4 KiB or more than one line",
            path.display()
        ));
    }
    Ok(secret.to_owned())
}

/// The `Authorization` value in `path` (trimmed; one line, visible ASCII and spaces). Errors
/// name the file, never its contents.
pub fn read_credential(path: &std::path::Path) -> Result<http::HeaderValue, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("upstream_authorization_file {}: {e}", path.display()))?;
    let value = text.trim();
    if value.is_empty() || value.len() > 8192 {
        return Err(format!(
            "upstream_authorization_file {}: empty or longer than 8 KiB",
            path.display()
        ));
    }
    let mut header = http::HeaderValue::from_str(value).map_err(|_| {
        format!(
            "upstream_authorization_file {}: not a header value (one line of visible ASCII)",
            path.display()
        )
    })?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(issuer: &str) -> AuthConfig {
        AuthConfig {
            mode: AuthMode::ResourceServer,
            issuer: issuer.into(),
            ..AuthConfig::default()
        }
    }

    /// Keys fetched in the clear could be swapped on the way: https, or http to loopback only.
    #[test]
    fn the_issuer_and_jwks_uri_must_be_https_or_loopback() {
        assert!(rs("https://auth.example").check().is_ok());
        assert!(rs("http://127.0.0.1:9000").check().is_ok());
        assert!(rs("http://localhost:9000").check().is_ok());
        assert!(rs("http://[::1]:9000").check().is_ok());
        for bad in [
            "http://auth.example",
            "ftp://auth.example",
            "auth.example",
            "",
        ] {
            assert!(rs(bad).check().is_err(), "{bad}");
        }
        let mut c = rs("https://auth.example");
        c.jwks_uri = "http://keys.example/jwks".into();
        assert!(c.check().unwrap_err().contains("jwks_uri"));
    }

    #[test]
    fn bounds_and_scope_tokens_are_checked() {
        let mut c = rs("https://auth.example");
        c.leeway = Duration::from_secs(301);
        assert!(c.check().unwrap_err().contains("leeway_secs"));
        let mut c = rs("https://auth.example");
        c.jwks_min_refresh = Duration::ZERO;
        assert!(c.check().unwrap_err().contains("jwks_min_refresh_secs"));
        let mut c = rs("https://auth.example");
        c.required_scopes = vec!["has space".into()];
        assert!(c.check().unwrap_err().contains("scope token"));
        let mut c = rs("https://auth.example");
        c.client_id = "relay".into();
        assert!(c.check().unwrap_err().contains("client_secret_file"));
        c.client_secret_file = Some("/nowhere/secret".into());
        assert!(c.check().unwrap_err().contains("/nowhere/secret"));
        let mut c = rs("https://auth.example");
        c.introspection_endpoint = "http://as.example/introspect".into();
        assert!(c.check().unwrap_err().contains("introspection_endpoint"));
        let mut c = rs("https://auth.example");
        c.upstream_authorization = UpstreamAuthorization::File;
        assert!(
            c.check()
                .unwrap_err()
                .contains("upstream_authorization_file")
        );
        // Transparent mode checks nothing of the rest.
        assert!(AuthConfig::default().check().is_ok());
    }
}
