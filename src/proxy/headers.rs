//! Which headers cross the proxy. Every end-to-end header passes in both directions (so
//! `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`, every `Mcp-Param-*`, `Authorization`,
//! `Last-Event-ID`, `Accept` and `Content-Type` reach the upstream unchanged); hop-by-hop headers
//! (RFC 9110 §7.6.1) and the ones the proxy owns (`Host`, `Content-Length`, `Mcp-Session-Id`) do not.
//! `Forwarded` and `X-Forwarded-*` are end-to-end and copied here; what reaches the upstream of
//! them is then `proxy.forwarded`'s ([`super::forwarded`]).

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::protocol::headers::{
    LAST_EVENT_ID, MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, MCP_SESSION_ID,
};

/// `X-Accel-Buffering`, set to `no` on SSE answers so intermediaries do not buffer them.
pub static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Headers a request may carry at most once: the proxy acts on one value, and forwarding several
/// would let the upstream act on another. `Host` and `Origin` by RFC 9110; the MCP headers
/// because each names one thing (a version, a session, a method, a name, a position).
pub static SINGLETONS: [&HeaderName; 7] = [
    &header::HOST,
    &header::ORIGIN,
    &MCP_PROTOCOL_VERSION,
    &MCP_SESSION_ID,
    &MCP_METHOD,
    &MCP_NAME,
    &LAST_EVENT_ID,
];

/// The first of [`SINGLETONS`] that `headers` carries more than once.
pub fn repeated_singleton(headers: &HeaderMap) -> Option<&'static HeaderName> {
    SINGLETONS
        .iter()
        .copied()
        .find(|name| headers.get_all(*name).iter().nth(1).is_some())
}

/// Hop-by-hop headers plus the ones the proxy sets itself.
fn is_not_forwarded(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == MCP_SESSION_ID
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Copies the end-to-end headers of `src` into `dst`, leaving out hop-by-hop headers, the ones
/// `Connection` names, `Host`, `Content-Length` and `Mcp-Session-Id` (the caller maps that one).
pub fn copy_end_to_end(src: &HeaderMap, dst: &mut HeaderMap) {
    let named_by_connection = |name: &HeaderName| {
        src.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()))
            })
        })
    };
    let has_connection = src.contains_key(header::CONNECTION);
    for (name, value) in src {
        if is_not_forwarded(name) || (has_connection && named_by_connection(name)) {
            continue;
        }
        dst.append(name.clone(), value.clone());
    }
}

/// Whether `b` is an RFC 9110 token character (`tchar`).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends `value` to `out` as an RFC 9110 quoted-string: `"` and `\` escaped. A header
/// value's bytes are visible ASCII, space, tab or obs-text: qdtext but these two.
pub fn push_quoted_string(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// A copy of `value` that owns its bytes. hyper parses header values as slices of the
/// connection's read buffer, so keeping one keeps that whole buffer (kilobytes) alive: what the
/// proxy keeps past the request (a session's upstream id, a stream's resumption headers) is
/// copied first.
pub fn owned_value(value: &HeaderValue) -> HeaderValue {
    let mut owned = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    owned.set_sensitive(value.is_sensitive());
    owned
}

/// [`owned_value`] for every value of `headers`, in place.
pub fn own_values(headers: &mut HeaderMap) {
    for value in headers.values_mut() {
        *value = owned_value(value);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    #[test]
    fn owned_values_no_longer_share_the_buffer_they_were_parsed_from() {
        let buffer = bytes::Bytes::from_static(b"HTTP/1.1 200 OK\r\nmcp-session-id: abc\r\n\r\n");
        let shared = HeaderValue::from_maybe_shared(buffer.slice(33..36)).unwrap();
        let mut sensitive = shared.clone();
        sensitive.set_sensitive(true);
        for value in [&shared, &sensitive] {
            let owned = super::owned_value(value);
            assert_eq!(owned, *value);
            assert_eq!(owned.is_sensitive(), value.is_sensitive());
            assert_ne!(owned.as_bytes().as_ptr(), value.as_bytes().as_ptr());
        }
    }

    use super::*;

    #[test]
    fn repeated_singletons_are_found_and_repeated_other_headers_are_not() {
        let mut h = HeaderMap::new();
        h.append("accept", HeaderValue::from_static("a"));
        h.append("accept", HeaderValue::from_static("b"));
        h.append("mcp-method", HeaderValue::from_static("tools/call"));
        assert_eq!(repeated_singleton(&h), None);
        h.append("Mcp-Method", HeaderValue::from_static("tools/call"));
        assert_eq!(repeated_singleton(&h), Some(&MCP_METHOD));
        let mut h = HeaderMap::new();
        h.append("origin", HeaderValue::from_static("http://localhost"));
        h.append("origin", HeaderValue::from_static("http://evil.example"));
        assert_eq!(repeated_singleton(&h), Some(&header::ORIGIN));
    }

    #[test]
    fn mcp_and_auth_headers_pass_and_hop_by_hop_ones_do_not() {
        let mut src = HeaderMap::new();
        for (k, v) in [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?w6k=?="),
            ("mcp-param-region", "eu"),
            ("mcp-param-unknown-x", "1"),
            ("authorization", "Bearer secret"),
            ("last-event-id", "a:1"),
            ("accept", "application/json, text/event-stream"),
            ("content-type", "application/json"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("host", "proxy.example"),
            ("content-length", "10"),
            ("mcp-session-id", "P"),
            ("proxy-authorization", "Basic x"),
        ] {
            src.append(k, HeaderValue::from_static(v));
        }
        let mut dst = HeaderMap::new();
        copy_end_to_end(&src, &mut dst);
        let mut names: Vec<&str> = dst.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "authorization",
                "content-type",
                "last-event-id",
                "mcp-method",
                "mcp-name",
                "mcp-param-region",
                "mcp-param-unknown-x",
                "mcp-protocol-version",
            ]
        );
        assert_eq!(dst["authorization"], "Bearer secret");
    }
}
