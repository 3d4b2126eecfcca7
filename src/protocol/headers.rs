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
