//! The forwarded headers the proxy adds toward the upstream: `Forwarded` (RFC 7239) and the
//! de facto `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, by
//! `proxy.forwarded` ([`ForwardedMode`]) and `proxy.trusted_proxies`.
//!
//! The client's address comes from the connection: the data plane puts a [`ClientAddr`] in
//! each request's extensions (`daemon/threads/connection.rs`); a request without one (a unit
//! test, a bench) gets no `for=`.
//!
//! This hop is `for=<peer address>;proto=http;host=<the request's authority, else its Host>`.
//! `Forwarded` and `X-Forwarded-For` are lists: kept values from a trusted proxy come first,
//! this hop last, in one field line (several lines of one list are combined, so an upstream
//! that reads only one line sees them all). `X-Forwarded-Proto` and `X-Forwarded-Host` name
//! the original client's scheme and host, one value each: a trusted proxy's are kept as they
//! are, else this hop's are set. From an untrusted client, the other address headers upstreams
//! read (`X-Real-IP`, `True-Client-IP`, …) and underscore spellings are dropped as well.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use http::{HeaderMap, HeaderName, HeaderValue, header, request::Parts};

use super::headers::is_tchar;
use crate::config::{ForwardedMode, ProxyConfig};

/// The address of the client connection a request came on (its direct peer: the client, or
/// the proxy in front of this one), put in the request's extensions by the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Marks a request that came over TLS on the data plane's listener (`[tls]`), put in its
/// extensions by the data plane: its scheme is `https` (`proto=https`, `X-Forwarded-Proto`,
/// the OAuth `resource` URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTls;

/// `X-Forwarded-For`: the client addresses, the first the original client's.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the original client used.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the `Host` the original client asked for.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Other headers upstream frameworks read a client's address or scheme from (Go chi's
/// `RealIP` reads `True-Client-IP` and `X-Real-IP`; others `X-Client-IP`, `X-Forwarded-Port`,
/// …): from an untrusted client they are dropped with the forwarded ones, lest its own values
/// pass for the proxy's.
const ADDRESS_ALIASES: [&str; 8] = [
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
];

/// Drops from `upstream` the [`ADDRESS_ALIASES`], and any header whose name has an underscore
/// and reads as a forwarded or alias header with `_` taken for `-` (`x_forwarded_for`:
/// CGI-style upstreams see `HTTP_X_FORWARDED_FOR` for both spellings).
fn strip_address_aliases(upstream: &mut HeaderMap) {
    for name in ADDRESS_ALIASES {
        upstream.remove(name);
    }
    let underscored: Vec<HeaderName> = upstream
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name.contains('_') && {
                let dashed = name.replace('_', "-");
                ADDRESS_ALIASES.contains(&dashed.as_str())
                    || [
                        "forwarded",
                        "x-forwarded-for",
                        "x-forwarded-proto",
                        "x-forwarded-host",
                    ]
                    .contains(&dashed.as_str())
            }
        })
        .cloned()
        .collect();
    for name in underscored {
        upstream.remove(name);
    }
}

/// An address range of `proxy.trusted_proxies` (an `ipnet` network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange(ipnet::IpNet);

impl IpRange {
    /// Parses an entry of `proxy.trusted_proxies`: an address (`10.1.2.3`, `::1`, one host) or
    /// a CIDR range (`10.0.0.0/8`, `fd00::/8`). A range with host bits set (`10.0.0.1/8`) is
    /// refused, as likely a typo for one host or the network.
    ///
    /// # Errors
    /// A message naming the entry and what is accepted.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let net = match entry.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => entry
                .parse::<IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| {
                    format!(
                        "{entry:?} is neither an IP address nor a CIDR range (e.g. `10.0.0.0/8`, \
                     `::1`)"
                    )
                })?,
        };
        if net.trunc() != net {
            return Err(format!(
                "{entry:?} has host bits set: write the network ({}) or one address",
                net.trunc()
            ));
        }
        Ok(Self(net))
    }

    /// Whether `ip` is in the range (IPv4 ranges match IPv4 addresses only; an IPv4-mapped
    /// IPv6 address is matched as the IPv4 address it maps, see [`ClientAddr`]'s use).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

/// What the proxy does with the forwarded headers of requests toward the upstream, from
/// `proxy.forwarded` and `proxy.trusted_proxies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedPolicy {
    mode: ForwardedMode,
    trusted: Box<[IpRange]>,
}

impl ForwardedPolicy {
    /// The policy of `config`. Entries of `trusted_proxies` that do not parse (configuration
    /// validation refuses them first) are left out: they trust no one.
    pub fn new(config: &ProxyConfig) -> Self {
        Self {
            mode: config.forwarded,
            trusted: config
                .trusted_proxies
                .iter()
                .filter_map(|e| IpRange::parse(e).ok())
                .collect(),
        }
    }

    /// Whether `peer` is one of the trusted proxies.
    fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted.iter().any(|range| range.contains(peer))
    }

    /// The address of the client a request is from, as far as this proxy can trust it (what
    /// rate limits key on): the connection's peer; when that is one of the trusted proxies,
    /// the `X-Forwarded-For` entries (all its field lines, as one list) read from the right,
    /// each trusted one skipped, the first other one taken; an entry that is no address stops
    /// the walk at the last trusted hop. Without `X-Forwarded-For`, `Forwarded`'s `for=`
    /// nodes the same way. `None` without a [`ClientAddr`] (a request not from the data
    /// plane's listener).
    pub fn client_ip(&self, client: &Parts) -> Option<IpAddr> {
        let peer = client.extensions.get::<ClientAddr>()?.0.ip().to_canonical();
        if !self.trusts(peer) {
            return Some(peer);
        }
        let mut hops: Vec<&str> = client
            .headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        if hops.is_empty() {
            hops = client
                .headers
                .get_all(header::FORWARDED)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|element| {
                    element.split(';').find_map(|pair| {
                        let (name, value) = pair.trim().split_once('=')?;
                        name.eq_ignore_ascii_case("for").then(|| value.trim())
                    })
                })
                .collect();
        }
        let mut client_ip = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_node(hop) else {
                break;
            };
            client_ip = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Some(client_ip)
    }

    /// Sets the forwarded headers of `upstream` (the headers of the request toward the
    /// upstream, with the client's end-to-end ones already copied in, forwarded ones included)
    /// for the client request `client`: nothing in [`ForwardedMode::Off`]; else the incoming
    /// values are dropped unless the mode is [`ForwardedMode::Append`] and the direct peer is
    /// trusted, and this hop is added. Each value set is built in one allocation of its exact
    /// size (the address is formatted on the stack), and `X-Forwarded-Host` shares the
    /// client's `Host` value.
    pub fn apply(&self, client: &Parts, upstream: &mut HeaderMap) {
        if self.mode == ForwardedMode::Off {
            return;
        }
        let peer = client
            .extensions
            .get::<ClientAddr>()
            .map(|a| a.0.ip().to_canonical());
        let keep = self.mode == ForwardedMode::Append && peer.is_some_and(|p| self.trusts(p));
        if !keep {
            strip_address_aliases(upstream);
        }
        // The request's authority when it has one (absolute-form, h2 `:authority`: it wins
        // over `Host`, RFC 9112 §3.2.2, RFC 9113 §8.3.1), else `Host`.
        let host = client
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| client.headers.get(header::HOST).cloned());
        let proto = if client.extensions.get::<ClientTls>().is_some() {
            "https"
        } else {
            "http"
        };
        let mut text = IpText::default();
        let peer_text = peer.map(|peer| text.format(peer));

        // Forwarded: [for=<node>;]proto=http[;host=<value>], the node of an IPv6 address
        // `"[…]"` (RFC 7239 §6: `[` and `:` are no token characters).
        let v6 = peer.is_some_and(|p| p.is_ipv6());
        let for_len = peer_text.map_or(0, |t| "for=;".len() + t.len() + if v6 { 4 } else { 0 });
        let host_len = host
            .as_ref()
            .map_or(0, |h| ";host=".len() + value_len(h.as_bytes()));
        let element_len = for_len + "proto=".len() + proto.len() + host_len;
        append_list(upstream, &header::FORWARDED, keep, element_len, |out| {
            if let Some(t) = peer_text {
                out.extend_from_slice(b"for=");
                if v6 {
                    out.extend_from_slice(b"\"[");
                }
                out.extend_from_slice(t);
                if v6 {
                    out.extend_from_slice(b"]\"");
                }
                out.push(b';');
            }
            out.extend_from_slice(b"proto=");
            out.extend_from_slice(proto.as_bytes());
            if let Some(host) = &host {
                out.extend_from_slice(b";host=");
                push_value(out, host.as_bytes());
            }
        });

        // X-Forwarded-For: the bare address (no brackets, no port).
        let xff_len = peer_text.map_or(0, <[u8]>::len);
        append_list(upstream, &X_FORWARDED_FOR, keep, xff_len, |out| {
            out.extend_from_slice(peer_text.unwrap_or_default());
        });

        let kept = |upstream: &HeaderMap, name| keep && upstream.contains_key(name);
        if !kept(upstream, &X_FORWARDED_PROTO) {
            upstream.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        if !kept(upstream, &X_FORWARDED_HOST) {
            match host {
                Some(host) => {
                    upstream.insert(&X_FORWARDED_HOST, host);
                }
                None => {
                    upstream.remove(&X_FORWARDED_HOST);
                }
            }
        }
    }
}

/// The address of a forwarded node: `1.2.3.4`, `1.2.3.4:80`, `::1`, `"[::1]:80"`, `[::1]`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest
            .split(']')
            .next()?
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical());
    }
    node.parse::<SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

/// An IP address's text, formatted on the stack (the longest, an IPv6 address with an
/// embedded IPv4 one, has 45 bytes).
struct IpText {
    buf: [u8; 64],
    len: usize,
}

impl Default for IpText {
    fn default() -> Self {
        Self {
            buf: [0; 64],
            len: 0,
        }
    }
}

impl IpText {
    /// `ip` as text.
    fn format(&mut self, ip: IpAddr) -> &[u8] {
        self.len = 0;
        let _ = write!(self, "{ip}");
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let to = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        to.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Sets the list header `name` of `headers` to its kept values (all of them when `keep`, in
/// order, in one line; none otherwise) followed by this hop's, `ours_len` bytes that
/// `write_ours` writes (none when 0). The value is allocated once, at its exact size.
fn append_list(
    headers: &mut HeaderMap,
    name: &HeaderName,
    keep: bool,
    ours_len: usize,
    write_ours: impl FnOnce(&mut Vec<u8>),
) {
    const SEP: &[u8] = b", ";
    if !keep {
        headers.remove(name);
    }
    let kept = || headers.get_all(name).iter().filter(|v| !v.is_empty());
    let len = kept().map(|v| v.len() + SEP.len()).sum::<usize>() + ours_len;
    if len == 0 {
        return;
    }
    let mut list = Vec::with_capacity(len);
    for value in kept() {
        if !list.is_empty() {
            list.extend_from_slice(SEP);
        }
        list.extend_from_slice(value.as_bytes());
    }
    if ours_len > 0 {
        if !list.is_empty() {
            list.extend_from_slice(SEP);
        }
        write_ours(&mut list);
    }
    // Exact when this hop is written (always in append and replace): one allocation, which
    // `Bytes` takes over as it is.
    debug_assert!(
        ours_len == 0 || list.len() == len,
        "the value's length was computed wrong"
    );
    // Every byte came from a header value or is visible ASCII written here: always valid.
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(list)) {
        headers.insert(name, value);
    }
}

/// The length of `value` written by [`push_value`].
fn value_len(value: &[u8]) -> usize {
    if !value.is_empty() && value.iter().all(|&b| is_tchar(b)) {
        return value.len();
    }
    value.len() + 2 + value.iter().filter(|&&b| b == b'"' || b == b'\\').count()
}

/// Appends `value` to `out` as an RFC 7239 value: a token as it is, anything else as a
/// quoted-string (`"` and `\` escaped).
fn push_value(out: &mut Vec<u8>, value: &[u8]) {
    if !value.is_empty() && value.iter().all(|&b| is_tchar(b)) {
        out.extend_from_slice(value);
        return;
    }
    super::headers::push_quoted_string(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_ip_is_the_peer_unless_a_trusted_proxy_forwarded_for_another() {
        let mut config = ProxyConfig::new(http::Uri::default());
        config.trusted_proxies = vec!["127.0.0.1".into(), "10.0.0.0/8".into()];
        let policy = ForwardedPolicy::new(&config);
        let parts = |peer: &str, headers: &[(&str, &str)]| {
            let mut request = http::Request::builder().uri("/mcp");
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            let (mut parts, ()) = request.body(()).unwrap().into_parts();
            parts
                .extensions
                .insert(ClientAddr(format!("{peer}:1000").parse().unwrap()));
            parts
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // An untrusted peer's claim is ignored.
        let p = parts("192.0.2.1", &[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(policy.client_ip(&p), Some(ip("192.0.2.1")));
        // A trusted peer: the nearest untrusted hop, trusted hops skipped, lists joined.
        let p = parts(
            "127.0.0.1",
            &[
                ("x-forwarded-for", "198.51.100.7, 203.0.113.9"),
                ("x-forwarded-for", "10.1.2.3"),
            ],
        );
        assert_eq!(policy.client_ip(&p), Some(ip("203.0.113.9")));
        // Garbage stops the walk at the last trusted hop.
        let p = parts(
            "127.0.0.1",
            &[("x-forwarded-for", "203.0.113.9, junk, 10.1.2.3")],
        );
        assert_eq!(policy.client_ip(&p), Some(ip("10.1.2.3")));
        // Forwarded when there is no X-Forwarded-For; IPv6 nodes quoted with a port.
        let p = parts(
            "127.0.0.1",
            &[(
                "forwarded",
                "for=\"[2001:db8::1]:4711\";proto=http, for=10.0.0.2",
            )],
        );
        assert_eq!(policy.client_ip(&p), Some(ip("2001:db8::1")));
        // Nothing forwarded: the trusted peer itself.
        assert_eq!(
            policy.client_ip(&parts("127.0.0.1", &[])),
            Some(ip("127.0.0.1"))
        );
    }
    use http::Uri;

    fn policy(mode: ForwardedMode, trusted: &[&str]) -> ForwardedPolicy {
        let mut config = ProxyConfig::new(Uri::from_static("http://127.0.0.1:9/mcp"));
        config.forwarded = mode;
        config.trusted_proxies = trusted.iter().map(|s| (*s).to_owned()).collect();
        ForwardedPolicy::new(&config)
    }

    /// A client request from `peer` (if any) carrying `headers`, and the headers the upstream
    /// gets under `policy` (the end-to-end copy first, as the forward phase does).
    fn forward(
        policy: &ForwardedPolicy,
        peer: Option<&str>,
        headers: &[(&str, &str)],
    ) -> HeaderMap {
        let mut request = http::Request::builder().uri("/mcp");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        if let Some(peer) = peer {
            parts.extensions.insert(ClientAddr(peer.parse().unwrap()));
        }
        let mut upstream = HeaderMap::new();
        crate::proxy::headers::copy_end_to_end(&parts.headers, &mut upstream);
        policy.apply(&parts, &mut upstream);
        upstream
    }

    fn all<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    const SPOOFED: [(&str, &str); 5] = [
        ("host", "proxy.example:8080"),
        ("forwarded", "for=6.6.6.6;proto=https"),
        ("x-forwarded-for", "6.6.6.6, 7.7.7.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
    ];

    /// The host this hop names is the request's authority when it has one (absolute-form
    /// HTTP/1.1, h2's `:authority`: RFC 9112 §3.2.2, RFC 9113 §8.3.1), else its `Host`.
    #[test]
    fn the_request_authority_wins_over_host() {
        let policy = policy(ForwardedMode::Replace, &[]);
        let (mut parts, ()) = http::Request::builder()
            .uri("http://a.example/mcp")
            .header("host", "b.example")
            .body(())
            .unwrap()
            .into_parts();
        parts
            .extensions
            .insert(ClientAddr("192.0.2.1:5000".parse().unwrap()));
        let mut upstream = HeaderMap::new();
        policy.apply(&parts, &mut upstream);
        assert_eq!(all(&upstream, "x-forwarded-host"), ["a.example"]);
        assert_eq!(
            all(&upstream, "forwarded"),
            ["for=192.0.2.1;proto=http;host=a.example"]
        );
    }

    /// A request that came over the data plane's TLS says `https` in every forwarded header.
    #[test]
    fn a_tls_connection_is_forwarded_as_https() {
        let policy = policy(ForwardedMode::Replace, &[]);
        let (mut parts, ()) = http::Request::builder()
            .uri("/mcp")
            .header("host", "relay.example")
            .body(())
            .unwrap()
            .into_parts();
        parts
            .extensions
            .insert(ClientAddr("192.0.2.1:5000".parse().unwrap()));
        parts.extensions.insert(ClientTls);
        let mut upstream = HeaderMap::new();
        policy.apply(&parts, &mut upstream);
        assert_eq!(
            all(&upstream, "forwarded"),
            ["for=192.0.2.1;proto=https;host=relay.example"]
        );
        assert_eq!(all(&upstream, "x-forwarded-proto"), ["https"]);
    }

    #[test]
    fn off_neither_adds_nor_strips() {
        let up = forward(
            &policy(ForwardedMode::Off, &[]),
            Some("192.0.2.1:5000"),
            &SPOOFED,
        );
        assert_eq!(all(&up, "forwarded"), ["for=6.6.6.6;proto=https"]);
        assert_eq!(all(&up, "x-forwarded-for"), ["6.6.6.6, 7.7.7.7"]);
        assert_eq!(all(&up, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&up, "x-forwarded-host"), ["evil.example"]);
        let up = forward(
            &policy(ForwardedMode::Off, &[]),
            Some("192.0.2.1:5000"),
            &[],
        );
        assert!(up.is_empty());
    }

    #[test]
    fn append_from_an_untrusted_peer_drops_its_values_and_adds_this_hop() {
        for trusted in [&[][..], &["10.0.0.0/8", "::1"][..]] {
            let up = forward(
                &policy(ForwardedMode::Append, trusted),
                Some("192.0.2.1:5000"),
                &SPOOFED,
            );
            assert_eq!(
                all(&up, "forwarded"),
                ["for=192.0.2.1;proto=http;host=\"proxy.example:8080\""]
            );
            assert_eq!(all(&up, "x-forwarded-for"), ["192.0.2.1"]);
            assert_eq!(all(&up, "x-forwarded-proto"), ["http"]);
            assert_eq!(all(&up, "x-forwarded-host"), ["proxy.example:8080"]);
        }
    }

    #[test]
    fn append_from_a_trusted_peer_keeps_its_values_then_adds_this_hop() {
        let up = forward(
            &policy(ForwardedMode::Append, &["10.0.0.0/8"]),
            Some("10.1.2.3:5000"),
            &SPOOFED,
        );
        assert_eq!(
            all(&up, "forwarded"),
            ["for=6.6.6.6;proto=https, for=10.1.2.3;proto=http;host=\"proxy.example:8080\""]
        );
        assert_eq!(all(&up, "x-forwarded-for"), ["6.6.6.6, 7.7.7.7, 10.1.2.3"]);
        // The original client's scheme and host, as the trusted proxy said.
        assert_eq!(all(&up, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&up, "x-forwarded-host"), ["evil.example"]);
    }

    #[test]
    fn a_trusted_peer_without_forwarded_values_gets_this_hop_only() {
        let up = forward(
            &policy(ForwardedMode::Append, &["10.1.2.3"]),
            Some("10.1.2.3:5000"),
            &[("host", "localhost")],
        );
        assert_eq!(
            all(&up, "forwarded"),
            ["for=10.1.2.3;proto=http;host=localhost"]
        );
        assert_eq!(all(&up, "x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(all(&up, "x-forwarded-proto"), ["http"]);
        assert_eq!(all(&up, "x-forwarded-host"), ["localhost"]);
    }

    #[test]
    fn several_incoming_lines_of_a_list_become_one_line() {
        let up = forward(
            &policy(ForwardedMode::Append, &["::1"]),
            Some("[::1]:5000"),
            &[
                ("host", "localhost"),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-for", "198.51.100.2, 10.0.0.5"),
                ("forwarded", "for=203.0.113.7"),
                ("forwarded", "for=\"[2001:db8::1]\""),
            ],
        );
        assert_eq!(
            all(&up, "x-forwarded-for"),
            ["203.0.113.7, 198.51.100.2, 10.0.0.5, ::1"]
        );
        assert_eq!(
            all(&up, "forwarded"),
            ["for=203.0.113.7, for=\"[2001:db8::1]\", for=\"[::1]\";proto=http;host=localhost"]
        );
    }

    #[test]
    fn replace_drops_every_incoming_value_even_from_a_trusted_peer() {
        let up = forward(
            &policy(ForwardedMode::Replace, &["0.0.0.0/0", "::/0"]),
            Some("10.1.2.3:5000"),
            &SPOOFED,
        );
        assert_eq!(
            all(&up, "forwarded"),
            ["for=10.1.2.3;proto=http;host=\"proxy.example:8080\""]
        );
        assert_eq!(all(&up, "x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(all(&up, "x-forwarded-proto"), ["http"]);
        assert_eq!(all(&up, "x-forwarded-host"), ["proxy.example:8080"]);
    }

    #[test]
    fn ipv6_peers_are_bracketed_and_quoted_in_forwarded_and_bare_in_x_forwarded_for() {
        let up = forward(
            &policy(ForwardedMode::Replace, &[]),
            Some("[2001:db8::17]:443"),
            &[("host", "[::1]:8080")],
        );
        assert_eq!(
            all(&up, "forwarded"),
            ["for=\"[2001:db8::17]\";proto=http;host=\"[::1]:8080\""]
        );
        assert_eq!(all(&up, "x-forwarded-for"), ["2001:db8::17"]);
        // An IPv4-mapped peer (a dual-stack listener) is its IPv4 address, and matched as one.
        let up = forward(
            &policy(ForwardedMode::Append, &["10.0.0.0/8"]),
            Some("[::ffff:10.0.0.9]:443"),
            &[("x-forwarded-for", "203.0.113.7")],
        );
        assert_eq!(all(&up, "x-forwarded-for"), ["203.0.113.7, 10.0.0.9"]);
        assert_eq!(all(&up, "forwarded"), ["for=10.0.0.9;proto=http"]);
    }

    #[test]
    fn without_a_peer_address_there_is_no_for_and_nothing_is_trusted() {
        let up = forward(
            &policy(ForwardedMode::Append, &["0.0.0.0/0", "::/0"]),
            None,
            &SPOOFED,
        );
        assert_eq!(
            all(&up, "forwarded"),
            ["proto=http;host=\"proxy.example:8080\""]
        );
        assert_eq!(all(&up, "x-forwarded-for"), Vec::<&str>::new());
        assert_eq!(all(&up, "x-forwarded-host"), ["proxy.example:8080"]);
    }

    #[test]
    fn hosts_that_are_not_tokens_are_quoted_with_escapes() {
        let mut out = Vec::new();
        push_value(&mut out, b"a\"b\\c");
        assert_eq!(out, br#""a\"b\\c""#);
        let mut out = Vec::new();
        push_value(&mut out, b"example.com");
        assert_eq!(out, b"example.com");
        let up = forward(
            &policy(ForwardedMode::Replace, &[]),
            Some("[::1]:1"),
            &[("host", r#"we\ird"host"#)],
        );
        assert_eq!(
            up["forwarded"],
            r#"for="[::1]";proto=http;host="we\\ird\"host""#
        );
        // An HTTP/2 request's authority stands in for Host.
        let (mut parts, ()) = http::Request::builder()
            .uri("http://h2.example:8080/mcp")
            .body(())
            .unwrap()
            .into_parts();
        parts
            .extensions
            .insert(ClientAddr("127.0.0.1:1".parse().unwrap()));
        let mut up = HeaderMap::new();
        policy(ForwardedMode::Replace, &[]).apply(&parts, &mut up);
        assert_eq!(up["x-forwarded-host"], "h2.example:8080");
        assert_eq!(
            up["forwarded"],
            "for=127.0.0.1;proto=http;host=\"h2.example:8080\""
        );
    }

    #[test]
    fn trusted_proxy_entries_parse_or_are_refused_with_a_reason() {
        let r = IpRange::parse("10.0.0.0/8").unwrap();
        assert!(r.contains("10.255.1.2".parse().unwrap()));
        assert!(!r.contains("11.0.0.1".parse().unwrap()));
        assert!(!r.contains("::ffff:10.0.0.1".parse().unwrap()));
        let r = IpRange::parse("::1").unwrap();
        assert!(r.contains("::1".parse().unwrap()));
        assert!(!r.contains("::2".parse().unwrap()));
        let r = IpRange::parse("fd00::/8").unwrap();
        assert!(r.contains("fdab::1".parse().unwrap()));
        assert!(
            IpRange::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(IpRange::parse("192.0.2.1/32").is_ok());
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.1/8",
            "localhost",
            "10.0.0.0/8 ",
            "[::1]",
        ] {
            assert!(IpRange::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(
            IpRange::parse("10.0.0.1/8")
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
    }
}
