//! The admission phase's header checks (DESIGN.md, "Request phases"): who may talk to the MCP
//! endpoint at all, decided before the body is read.
//!
//! - Singleton headers (`Host`, `Origin`, the MCP ones) must appear at most once: `400`.
//! - `Host` (and an absolute-form or HTTP/2 `:authority`) must name the proxy: a loopback name
//!   (`localhost`, `127.0.0.0/8`, `[::1]`, any port) or one of `proxy.allowed_hosts` (`*`: any).
//!   Otherwise `421`: the upstream never sees the client's `Host` (the proxy writes its own), so
//!   its DNS-rebinding check cannot help and this one must.
//! - A present `Origin` must be allowed (`403`): parsed as an origin (scheme, host, port), never
//!   compared by prefix, so `http://localhost:80@evil.com` is `evil.com`.

use http::{HeaderMap, request::Parts, uri::Authority};

use super::{error::Reject, headers};
use crate::config::ProxyConfig;

/// An origin as a tuple: scheme, host (lowercase, without a trailing dot; IPv6 in brackets),
/// port (the scheme's default when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginTuple {
    /// `http` or `https`.
    pub scheme: String,
    /// The host: a lowercase name without a trailing dot, an IPv4 address, or an IPv6 address
    /// in brackets.
    pub host: String,
    /// The port, or the scheme's default (80, 443) when the origin names none.
    pub port: u16,
}

/// Parses an `Origin` value (`scheme://host[:port]`, RFC 6454) of an `http` or `https` page.
/// `None` for anything else: `null`, other schemes, user info, a path other than `/`, a query
/// or a fragment.
pub fn parse_origin(text: &str) -> Option<OriginTuple> {
    let url = url::Url::parse(text).ok()?;
    let scheme = url.scheme();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return None;
    }
    let host = match url.host()? {
        url::Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => format!("[{ip}]"),
    };
    if host.is_empty() {
        return None;
    }
    Some(OriginTuple {
        scheme: scheme.to_owned(),
        host,
        port: url.port_or_known_default()?,
    })
}

/// Whether `host` (as [`parse_origin`] or [`parse_host`] normalise it) names this machine:
/// `localhost`, an address in `127.0.0.0/8`, or `[::1]`.
pub fn is_loopback_host(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    }
    host.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// `http(s)://localhost`, `127.x.x.x` or `[::1]`, with any port.
pub fn is_loopback_origin(origin: &str) -> bool {
    parse_origin(origin).is_some_and(|o| is_loopback_host(&o.host))
}

/// Parses a `Host` value (`host[:port]`): the host lowercase without a trailing dot (IPv6 in
/// brackets), and the port if given. `None` when it is not an authority or carries user info.
pub fn parse_host(text: &str) -> Option<(String, Option<u16>)> {
    let authority: Authority = text.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some((host, authority.port_u16()))
}

/// One entry of `proxy.allowed_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// A host, with any port (`None`) or only the given one.
    Host(String, Option<u16>),
}

impl HostPattern {
    fn parse(entry: &str) -> Option<Self> {
        if entry.trim() == "*" {
            return Some(Self::Any);
        }
        parse_host(entry.trim()).map(|(h, p)| Self::Host(h, p))
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        match self {
            Self::Any => true,
            Self::Host(h, p) => h == host && (p.is_none() || *p == port),
        }
    }
}

/// Checks an entry of `proxy.allowed_hosts` (`*`, `host` or `host:port`).
pub fn check_host_entry(entry: &str) -> Result<(), String> {
    HostPattern::parse(entry)
        .map(drop)
        .ok_or_else(|| format!("{entry:?} is not `*`, a host or host:port"))
}

/// Checks an entry of `proxy.allowed_origins` (`*` or `scheme://host[:port]`).
pub fn check_origin_entry(entry: &str) -> Result<(), String> {
    if entry == "*" || parse_origin(entry).is_some() {
        Ok(())
    } else {
        Err(format!(
            "{entry:?} is not `*` or an origin like https://app.example:8443"
        ))
    }
}

/// The data plane's admission policy, parsed once from [`ProxyConfig`].
#[derive(Debug)]
pub struct Admission {
    any_origin: bool,
    origins: Vec<OriginTuple>,
    loopback_origins: bool,
    hosts: Vec<HostPattern>,
}

impl Admission {
    /// The policy of `config`. Entries that do not parse (configuration validation refuses
    /// them first) allow nothing.
    pub fn new(config: &ProxyConfig) -> Self {
        Self {
            any_origin: config.allowed_origins.iter().any(|o| o == "*"),
            origins: config
                .allowed_origins
                .iter()
                .filter_map(|o| parse_origin(o))
                .collect(),
            loopback_origins: config.allow_loopback_origins,
            hosts: config
                .allowed_hosts
                .iter()
                .filter_map(|h| HostPattern::parse(h))
                .collect(),
        }
    }

    /// Every admission check of a request's head, in order: repeated singleton headers (`400`),
    /// `Host` (`421`), `Origin` (`403`). Refusals are logged here with the offending value.
    pub fn check(&self, parts: &Parts) -> Result<(), Reject> {
        if let Some(name) = headers::repeated_singleton(&parts.headers) {
            tracing::warn!(
                header = name.as_str(),
                "refused a request repeating a header"
            );
            return Err(Reject::RepeatedHeader(name.as_str()));
        }
        self.check_host(parts)?;
        self.check_origin(&parts.headers)
    }

    fn host_allowed(&self, text: &str) -> bool {
        parse_host(text).is_some_and(|(host, port)| {
            is_loopback_host(&host) || self.hosts.iter().any(|p| p.matches(&host, port))
        })
    }

    /// `Host` and, when the request line or HTTP/2 carries one, the URI's authority: each must
    /// be allowed, and one of them must be present.
    fn check_host(&self, parts: &Parts) -> Result<(), Reject> {
        let header = parts.headers.get(http::header::HOST);
        let authority = parts.uri.authority().map(Authority::as_str);
        let mut seen = false;
        for text in [header.map(|h| h.to_str().unwrap_or("\u{fffd}")), authority]
            .into_iter()
            .flatten()
        {
            seen = true;
            if !self.host_allowed(text) {
                tracing::warn!(
                    host = text,
                    "refused a request for a Host this proxy does not serve"
                );
                return Err(Reject::MisdirectedRequest(text.chars().take(256).collect()));
            }
        }
        if seen {
            Ok(())
        } else {
            tracing::warn!("refused a request without a Host");
            Err(Reject::MisdirectedRequest(String::new()))
        }
    }

    /// A present `Origin` must be allowed (both eras).
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Reject> {
        let Some(origin) = headers.get(http::header::ORIGIN) else {
            return Ok(());
        };
        if self.any_origin {
            return Ok(());
        }
        let text = origin.to_str().unwrap_or("");
        let allowed = parse_origin(text).is_some_and(|o| {
            (self.loopback_origins && is_loopback_host(&o.host)) || self.origins.contains(&o)
        });
        if allowed {
            Ok(())
        } else {
            tracing::warn!(origin = ?origin, "rejected request from a disallowed Origin");
            Err(Reject::OriginNotAllowed(text.chars().take(256).collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    #[test]
    fn loopback_origins_are_recognised_and_lookalikes_are_not() {
        for ok in [
            "http://localhost",
            "http://localhost:3000",
            "HTTP://LOCALHOST:3000",
            "http://localhost.:3000",
            "https://127.0.0.1:8443",
            "http://127.1.2.3",
            "http://[::1]:80",
            "http://[0:0:0:0:0:0:0:1]",
        ] {
            assert!(is_loopback_origin(ok), "{ok}");
        }
        for bad in [
            "http://localhost:80@evil.com",
            "http://localhost@evil.com",
            "http://user:pw@localhost",
            "http://localhost.evil.com",
            "http://localhost%2eevil.com",
            "http://127.0.0.1.nip.io",
            "http://[::1].evil.com",
            "http://[::2]",
            "http://evil.com#@localhost",
            "http://evil.com?@localhost",
            "http://evil.com/localhost",
            "http://localhost/path",
            "null",
            "file://",
            "ws://localhost",
            "http://10.0.0.1",
            "localhost",
            "",
        ] {
            assert!(!is_loopback_origin(bad), "{bad}");
        }
    }

    #[test]
    fn origins_compare_as_scheme_host_port_tuples() {
        let a = parse_origin("https://App.Example").unwrap();
        assert_eq!(a, parse_origin("https://app.example:443").unwrap());
        assert_eq!(a, parse_origin("https://app.example.").unwrap());
        assert_ne!(a, parse_origin("http://app.example").unwrap());
        assert_ne!(a, parse_origin("https://app.example:8443").unwrap());
        assert_eq!(
            parse_origin("http://[::1]:8080").unwrap().host,
            "[::1]".to_owned()
        );
    }

    #[test]
    fn hosts_parse_without_user_info_and_normalise_case_and_trailing_dots() {
        assert_eq!(
            parse_host("LocalHost.:8080"),
            Some(("localhost".into(), Some(8080)))
        );
        assert_eq!(parse_host("[::1]"), Some(("[::1]".into(), None)));
        assert_eq!(parse_host("localhost:80@evil.com"), None);
        assert_eq!(parse_host("a b"), None);
        assert_eq!(parse_host(""), None);
        for loopback in ["localhost", "127.0.0.1", "127.9.9.9", "[::1]"] {
            assert!(is_loopback_host(loopback), "{loopback}");
        }
        for other in ["localhost.evil.com", "127.0.0.1.nip.io", "[::2]", "0.0.0.0"] {
            assert!(!is_loopback_host(other), "{other}");
        }
    }

    fn parts(host: Option<&str>, origin: Option<&str>) -> Parts {
        let mut b = Request::builder().uri("/mcp");
        if let Some(h) = host {
            b = b.header("host", h);
        }
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn admission(hosts: &[&str], origins: &[&str]) -> Admission {
        let mut c = ProxyConfig::new(http::Uri::from_static("http://127.0.0.1:1/mcp"));
        c.allowed_hosts = hosts.iter().map(|s| (*s).to_owned()).collect();
        c.allowed_origins = origins.iter().map(|s| (*s).to_owned()).collect();
        Admission::new(&c)
    }

    #[test]
    fn host_is_loopback_or_listed_or_any() {
        let default = admission(&[], &[]);
        for ok in ["127.0.0.1:8080", "localhost:1", "LOCALHOST", "[::1]:9"] {
            assert!(default.check(&parts(Some(ok), None)).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:8080",
            "localhost@evil.com",
        ] {
            assert!(
                matches!(
                    default.check(&parts(Some(bad), None)),
                    Err(Reject::MisdirectedRequest(_))
                ),
                "{bad}"
            );
        }
        assert!(default.check(&parts(None, None)).is_err());
        let listed = admission(&["mcp.example.com", "other.example:8443"], &[]);
        assert!(
            listed
                .check(&parts(Some("MCP.example.com:1234"), None))
                .is_ok()
        );
        assert!(
            listed
                .check(&parts(Some("other.example:8443"), None))
                .is_ok()
        );
        assert!(
            listed
                .check(&parts(Some("other.example:8444"), None))
                .is_err()
        );
        assert!(listed.check(&parts(Some("evil.example"), None)).is_err());
        let any = admission(&["*"], &[]);
        assert!(any.check(&parts(Some("evil.example.com"), None)).is_ok());
    }

    #[test]
    fn origin_is_loopback_or_listed_as_a_tuple() {
        let a = admission(&[], &["https://app.example"]);
        let host = Some("127.0.0.1:1");
        assert!(
            a.check(&parts(host, Some("https://app.example:443")))
                .is_ok()
        );
        assert!(a.check(&parts(host, Some("http://localhost:5173"))).is_ok());
        for bad in [
            "https://app.example.evil.com",
            "https://app.example:444",
            "http://localhost:80@evil.com",
            "null",
        ] {
            assert!(
                matches!(
                    a.check(&parts(host, Some(bad))),
                    Err(Reject::OriginNotAllowed(_))
                ),
                "{bad}"
            );
        }
        assert!(check_origin_entry("https://app.example").is_ok());
        assert!(check_origin_entry("app.example").is_err());
        assert!(check_host_entry("mcp.example.com:443").is_ok());
        assert!(check_host_entry("http://mcp.example.com").is_err());
    }
}
