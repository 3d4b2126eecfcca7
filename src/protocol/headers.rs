//! The MCP Streamable HTTP header names (PROTOCOL.md, "Headers"; MCP spec, Transports). Which of
//! them cross the proxy, and how, is the data plane's business (`proxy::headers`).

use http::HeaderName;

/// `Mcp-Session-Id` (legacy era session header).
pub static MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// `MCP-Protocol-Version`.
pub static MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// `Mcp-Method` (2026-07-28 mirrored header).
pub static MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// `Mcp-Name` (2026-07-28 mirrored header).
pub static MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
/// `Last-Event-ID` (SSE resumption, WHATWG HTML §9.2).
pub static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// Whether `headers` declare an SSE body: a `Content-Type` of `text/event-stream` (parameters
/// such as `; charset=utf-8` allowed; WHATWG HTML §9.2). The one test of it for every plane.
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};

    use super::is_event_stream;

    #[test]
    fn event_stream_is_told_by_its_media_type_with_or_without_parameters() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(v));
            h
        };
        assert!(is_event_stream(&with("text/event-stream")));
        assert!(is_event_stream(&with(" text/event-stream; charset=utf-8")));
        assert!(!is_event_stream(&with("application/json")));
        assert!(!is_event_stream(&HeaderMap::new()));
    }
}
