//! OAuth discovery through the relay, transparent mode (DESIGN.md, "Auth"; the MCP
//! authorization spec since 2025-06-18): the upstream MCP server is the OAuth resource server;
//! mcp-relay only makes its discovery answers name the relay, which is the URL its clients use.
//!
//! - **Discovery documents** ([`discovery`]): `GET /.well-known/oauth-protected-resource{path}`
//!   (RFC 9728 §3.1, the path-aware form) is answered for the route at `{path}` by fetching the
//!   upstream's `/.well-known/oauth-protected-resource{upstream path}` (its root form when that
//!   is `404`) from an endpoint of the route's pool; the root form on the relay is the route at
//!   `proxy.endpoint_path`'s, or the only route's. Authorization-server metadata
//!   (`/.well-known/oauth-authorization-server{path}`, RFC 8414, and
//!   `/.well-known/openid-configuration{path}`) is proxied the same way, unchanged.
//! - **`resource`** ([`document`]): in the protected-resource document, the top-level
//!   `resource` becomes the route's public URL ([`PublicUrl`]); nothing else changes.
//! - **Challenges** ([`challenge`]): in a `401`/`403` from the upstream on the MCP endpoint,
//!   each `WWW-Authenticate` `resource_metadata` becomes the path-aware metadata URL on the
//!   relay's public origin ([`rewrite_challenges`], called by the respond phase).
//!
//! `Authorization` passes untouched both ways and is never logged.

pub mod challenge;
mod discovery;
pub mod document;

use std::{collections::HashMap, sync::Arc};

use http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};

use super::{
    Proxy,
    admit::parse_host,
    forwarded::ClientTls,
    route::{Route, RouteTable},
};

/// The well-known documents the relay proxies to a route's upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WellKnown {
    /// OAuth 2.0 Protected Resource Metadata (RFC 9728): its `resource` is rewritten.
    ProtectedResource,
    /// OAuth 2.0 Authorization Server Metadata (RFC 8414): passed through.
    AuthorizationServer,
    /// OpenID Connect Discovery, in RFC 8414's path-insertion form: passed through.
    OpenidConfiguration,
}

/// The protected-resource metadata prefix (RFC 9728 §3).
pub const PROTECTED_RESOURCE: &str = "/.well-known/oauth-protected-resource";
/// The authorization-server metadata prefix (RFC 8414 §3).
pub const AUTHORIZATION_SERVER: &str = "/.well-known/oauth-authorization-server";
/// The OpenID Connect Discovery prefix.
pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";

impl WellKnown {
    /// The document named by a request path, and the resource path after its prefix (`""`
    /// for the root form): `/.well-known/oauth-protected-resource/mcp/a` is
    /// (`ProtectedResource`, `/mcp/a`). `None` for any other path (`/.well-known/x`, or a
    /// prefix followed by anything but `/`).
    pub fn parse(path: &str) -> Option<(Self, &str)> {
        let rest = path.strip_prefix("/.well-known/")?;
        [
            Self::ProtectedResource,
            Self::AuthorizationServer,
            Self::OpenidConfiguration,
        ]
        .into_iter()
        .find_map(|kind| {
            let suffix = rest.strip_prefix(&kind.prefix()["/.well-known/".len()..])?;
            (suffix.is_empty() || suffix.starts_with('/')).then_some((kind, suffix))
        })
    }

    /// Its path prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::ProtectedResource => PROTECTED_RESOURCE,
            Self::AuthorizationServer => AUTHORIZATION_SERVER,
            Self::OpenidConfiguration => OPENID_CONFIGURATION,
        }
    }

    /// The document's path for the resource at `path` (`""` or `/`: the root form).
    pub fn path_for(self, path: &str) -> String {
        format!("{}{}", self.prefix(), resource_path(path))
    }
}

/// A resource path as the well-known suffix carries it: `/` is the root form's `""`.
fn resource_path(path: &str) -> &str {
    if path == "/" { "" } else { path }
}

/// Where clients reach a route: its resource URL (the protected-resource document's
/// `resource`), and the origin and path its metadata URL is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    resource: String,
    origin: String,
    path: String,
}

impl PublicUrl {
    /// A configured `public_url`: an absolute `http(s)://` URL with a host, no user info,
    /// query or fragment, and nothing that cannot sit in a quoted-string (spaces, controls,
    /// `"`, `\`). Used as written for `resource`; its origin and path give the metadata URL.
    /// Errors: what is wrong, for the configuration check.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
        {
            return Err("must not contain spaces, quotes or backslashes".into());
        }
        let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err("must be an http:// or https:// URL with a host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry user info".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not carry a query or fragment".into());
        }
        Ok(Self {
            resource: text.to_owned(),
            origin: url.origin().ascii_serialization(),
            path: resource_path(url.path()).to_owned(),
        })
    }

    /// The public URL of `route` for a request whose head is `parts`: its `public_url` when
    /// set, else `http://` (`https://` on a TLS connection) + the request's `Host` (its URI authority first, as HTTP/2 carries
    /// it; admission has allowed it) + the route's path.
    pub fn of(route: &Route, parts: &Parts) -> Self {
        if let Some(url) = route.config().public_url.as_deref()
            && let Ok(public) = Self::parse(url)
        {
            return public;
        }
        // The listener's own scheme (a TLS terminator in front of a plain listener: set
        // public_url).
        let scheme = if parts.extensions.get::<ClientTls>().is_some() {
            "https"
        } else {
            "http"
        };
        let origin = format!("{scheme}://{}", request_host(parts));
        Self {
            resource: format!("{origin}{}", route.path()),
            origin,
            path: resource_path(route.path()).to_owned(),
        }
    }

    /// The `resource` value: the URL clients use for the route.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The path-aware protected-resource metadata URL (RFC 9728 §3.1): the origin, the
    /// well-known prefix, the resource's path.
    pub fn metadata_url(&self) -> String {
        format!("{}{PROTECTED_RESOURCE}{}", self.origin, self.path)
    }

    /// The resource path the metadata URL ends with (`""`: the root form).
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// The request's host and port, normalised (lowercase, no trailing dot); `localhost` if it
/// names none (admission refuses such requests first).
fn request_host(parts: &Parts) -> String {
    let text = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    match text.and_then(parse_host) {
        Some((host, Some(port))) => format!("{host}:{port}"),
        Some((host, None)) => host,
        None => "localhost".into(),
    }
}

/// **Respond phase**: in a `401` or `403` answer of the upstream to a request on `route`,
/// every `WWW-Authenticate` `resource_metadata` becomes the route's path-aware metadata URL on
/// its public origin ([`PublicUrl::metadata_url`]); the rest of each challenge, and every
/// other answer, is left as it came.
pub fn rewrite_challenges(
    status: StatusCode,
    route: &Route,
    request: &Parts,
    headers: &mut HeaderMap,
) {
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
        return;
    }
    if !headers.contains_key(header::WWW_AUTHENTICATE) {
        return;
    }
    let url = PublicUrl::of(route, request).metadata_url();
    let values: Vec<HeaderValue> = headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|value| {
            challenge::rewrite_resource_metadata(value.as_bytes(), &url)
                .and_then(|v| HeaderValue::from_bytes(&v).ok())
                .unwrap_or_else(|| value.clone())
        })
        .collect();
    headers.remove(header::WWW_AUTHENTICATE);
    for value in values {
        headers.append(header::WWW_AUTHENTICATE, value);
    }
}

/// Which proxy answers the discovery documents of which resource path, for one thread's
/// proxies (`by_route_path`: the proxy of each route, by its path): each route's own path;
/// then the path of each route's `public_url` (where its clients look when a front proxy
/// maps paths); then the root form (`""`), the route at `proxy.endpoint_path` or the only
/// route ([`RouteTable::root`]). An earlier entry is never replaced by a later one.
pub fn discovery_paths(
    table: &RouteTable,
    by_route_path: &HashMap<String, Arc<Proxy>>,
) -> HashMap<String, Arc<Proxy>> {
    let mut paths = HashMap::with_capacity(table.routes().len() + 1);
    let proxy_of = |route: &Route| by_route_path.get(route.path()).cloned();
    for route in table.routes() {
        if let Some(proxy) = proxy_of(route) {
            paths
                .entry(resource_path(route.path()).to_owned())
                .or_insert(proxy);
        }
    }
    for route in table.routes() {
        if let Some(url) = route.config().public_url.as_deref()
            && let Ok(public) = PublicUrl::parse(url)
            && let Some(proxy) = proxy_of(route)
        {
            paths.entry(public.path).or_insert(proxy);
        }
    }
    if let Some(proxy) = table.root().and_then(|route| proxy_of(route)) {
        paths.entry(String::new()).or_insert(proxy);
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_paths_name_their_document_and_resource_path() {
        let cases = [
            (
                "/.well-known/oauth-protected-resource/mcp/a",
                Some((WellKnown::ProtectedResource, "/mcp/a")),
            ),
            (
                "/.well-known/oauth-protected-resource",
                Some((WellKnown::ProtectedResource, "")),
            ),
            (
                "/.well-known/oauth-authorization-server/mcp",
                Some((WellKnown::AuthorizationServer, "/mcp")),
            ),
            (
                "/.well-known/openid-configuration",
                Some((WellKnown::OpenidConfiguration, "")),
            ),
            ("/.well-known/oauth-protected-resourcex", None),
            ("/.well-known/security.txt", None),
            ("/mcp", None),
            ("/mcp/.well-known/openid-configuration", None),
        ];
        for (path, expected) in cases {
            assert_eq!(WellKnown::parse(path), expected, "{path}");
        }
        assert_eq!(
            WellKnown::ProtectedResource.path_for("/mcp"),
            "/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            WellKnown::AuthorizationServer.path_for("/"),
            "/.well-known/oauth-authorization-server"
        );
    }

    #[test]
    fn a_public_url_gives_resource_origin_and_path() {
        let p = PublicUrl::parse("https://MCP.example.com:443/tools/a").unwrap();
        assert_eq!(p.resource(), "https://MCP.example.com:443/tools/a");
        assert_eq!(
            p.metadata_url(),
            "https://mcp.example.com/.well-known/oauth-protected-resource/tools/a"
        );
        let root = PublicUrl::parse("http://relay.internal:8080").unwrap();
        assert_eq!(root.path(), "");
        assert_eq!(
            root.metadata_url(),
            "http://relay.internal:8080/.well-known/oauth-protected-resource"
        );
        for bad in [
            "mcp.example.com/mcp",
            "ftp://h/mcp",
            "https://user:pw@h/mcp",
            "https://h/mcp?x=1",
            "https://h/mcp#f",
            "https://h/a b",
            "https://h/a\"b",
            "http://",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
