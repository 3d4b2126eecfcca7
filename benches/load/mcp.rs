//! The MCP requests the harness sends, in both protocol generations (PROTOCOL.md):
//!
//! - **legacy** (2025-11-25): `MCP-Protocol-Version: 2025-11-25` and the `Mcp-Session-Id` an
//!   `initialize` through the same target returned;
//! - **modern** (2026-07-28): no session; `MCP-Protocol-Version: 2026-07-28`, `Mcp-Method`
//!   mirroring the body's `method`, and the version again in `params._meta`.
//!
//! mcp-relay tells them apart as `src/proxy/era.rs` does (header first), so both reach it as
//! the era they claim; the upstream checks the same headers.

use std::fmt;

pub const LEGACY_VERSION: &str = "2025-11-25";
pub const MODERN_VERSION: &str = "2026-07-28";
pub const META_VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";
pub const PATH: &str = "/mcp";

/// A protocol generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Legacy,
    Modern,
}

impl Era {
    pub fn name(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Modern => "modern",
        }
    }

    /// `legacy,modern` → both; errors on anything else.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s {
                "legacy" => Ok(Self::Legacy),
                "modern" => Ok(Self::Modern),
                other => Err(format!("unknown era {other:?} (expected legacy, modern)")),
            })
            .collect()
    }
}

impl fmt::Display for Era {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `LOAD_AUTHORIZATION`: an `Authorization` value every request of the harness carries (to
/// every target; the upstream ignores it), e.g. `Bearer <JWT>` for a relay configured as the
/// resource server (`LOAD_RELAY_CONFIG` with `[proxy.auth]`; BENCHMARKS "Token validation").
pub fn authorization() -> Option<&'static str> {
    static VALUE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    VALUE
        .get_or_init(|| {
            std::env::var("LOAD_AUTHORIZATION")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .as_deref()
}

/// The headers of a request for `method` in `era` (`session`: legacy only).
pub fn headers(era: Era, method: &str, session: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("content-type", "application/json".to_owned()),
        ("accept", "application/json, text/event-stream".to_owned()),
    ];
    if let Some(value) = authorization() {
        h.push(("authorization", value.to_owned()));
    }
    match era {
        Era::Legacy => {
            h.push(("mcp-protocol-version", LEGACY_VERSION.to_owned()));
            if let Some(sid) = session {
                h.push(("mcp-session-id", sid.to_owned()));
            }
        }
        Era::Modern => {
            h.push(("mcp-protocol-version", MODERN_VERSION.to_owned()));
            h.push(("mcp-method", method.to_owned()));
        }
    }
    h
}

/// The client's capabilities in a modern request's `_meta` (SDK servers require them).
const CAPABILITIES: &str = r#""io.modelcontextprotocol/clientCapabilities":{}"#;

/// A JSON-RPC request body. `params` are the inner members of the params object (without
/// braces, possibly empty); a modern request also carries the version in `params._meta`.
pub fn body(era: Era, id: u64, method: &str, params: &str) -> String {
    let params = match (era, params.is_empty()) {
        (Era::Legacy, _) => format!("{{{params}}}"),
        (Era::Modern, true) => {
            format!(r#"{{"_meta":{{"{META_VERSION_KEY}":"{MODERN_VERSION}",{CAPABILITIES}}}}}"#)
        }
        (Era::Modern, false) => {
            format!(
                r#"{{"_meta":{{"{META_VERSION_KEY}":"{MODERN_VERSION}",{CAPABILITIES}}},{params}}}"#
            )
        }
    };
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
}

/// A legacy `initialize` request body.
pub fn initialize_body(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize","params":{{"protocolVersion":"{LEGACY_VERSION}","capabilities":{{}},"clientInfo":{{"name":"load-bench","version":"1"}}}}}}"#
    )
}

/// The `initialize` headers (no session yet).
pub fn initialize_headers() -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("content-type", "application/json".to_owned()),
        ("accept", "application/json, text/event-stream".to_owned()),
    ];
    if let Some(value) = authorization() {
        h.push(("authorization", value.to_owned()));
    }
    h
}

/// The JSON request of the request-rate measurement.
pub const JSON_METHOD: &str = "tools/list";
/// The SSE request the upstream understands: `{"events":N,"hold":bool,"gate":"name"}`.
pub const STREAM_METHOD: &str = "bench/stream";
/// Releases the streams waiting at a gate (sent to the upstream directly).
pub const GO_METHOD: &str = "bench/go";

/// Parameters of a `bench/stream` request.
pub fn stream_params(events: u64, hold: bool, gate: Option<&str>) -> String {
    match gate {
        Some(g) => format!(r#""events":{events},"hold":{hold},"gate":"{g}""#),
        None => format!(r#""events":{events},"hold":{hold}"#),
    }
}
