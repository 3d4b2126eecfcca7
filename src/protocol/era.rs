//! The two MCP protocol generations and how a request reveals its own (PROTOCOL.md): the
//! `MCP-Protocol-Version` header, else the body (`initialize`, or the 2026-07-28
//! `params._meta["io.modelcontextprotocol/protocolVersion"]`), else the spec's fallback of
//! 2025-03-26. Also reads what the proxy needs from a JSON-RPC body without re-serializing it.

use std::borrow::Cow;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::headers::{MCP_METHOD, MCP_NAME};

/// The first protocol version of the modern (stateless) era.
pub const MODERN_MIN_VERSION: &str = "2026-07-28";
/// The version a server assumes when nothing else tells (2025-06-18 `basic/transports`).
pub const ASSUMED_LEGACY_VERSION: &str = "2025-03-26";
/// The `_meta` key that carries the protocol version of a 2026-07-28 request.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// Every protocol version the proxy serves, oldest first: what the official SDK clients send
/// (the TypeScript SDK still offers 2024-10-07 and 2024-11-05, the Python SDK 2024-11-05 to
/// 2026-07-28). A request naming another version in `MCP-Protocol-Version` or in `_meta` is
/// refused (`400`, `-32022`, with this list as `data.supported`) before anything is stored.
pub const KNOWN_VERSIONS: &[&str] = &[
    "2024-10-07",
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];

/// Whether `version` is one of [`KNOWN_VERSIONS`].
pub fn is_known_version(version: &str) -> bool {
    KNOWN_VERSIONS.contains(&version)
}

/// Checks the versions a request names itself: `MCP-Protocol-Version` (all of its bytes; a
/// value that is not visible ASCII is unknown too) and the 2026-07-28 `_meta` version. Returns
/// the first unknown one (cut to 64 bytes, for the log). An `initialize`'s `protocolVersion` is
/// not checked: it is an offer the upstream answers with a version of its own.
pub fn check_versions(
    header: Option<&http::HeaderValue>,
    peek: Option<&MessagePeek>,
) -> Result<(), String> {
    let cut = |v: &[u8]| String::from_utf8_lossy(&v[..v.len().min(64)]).into_owned();
    if let Some(h) = header
        && !h.to_str().is_ok_and(is_known_version)
    {
        return Err(cut(h.as_bytes()));
    }
    if let Some(v) = peek.and_then(|p| p.meta_version.as_deref())
        && !is_known_version(v)
    {
        return Err(cut(v.as_bytes()));
    }
    Ok(())
}

/// An MCP protocol generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2025-03-26, 2025-06-18, 2025-11-25: `initialize`, sessions, resumable streams.
    Legacy,
    /// 2026-07-28 and later: stateless, mirrored headers, close-is-cancel streams.
    Modern,
}

impl Era {
    /// The era of a protocol version string. Versions are ISO dates, so they order as text;
    /// anything that is not a date is treated as legacy and left to the upstream to judge.
    pub fn of_version(version: &str) -> Self {
        let is_date = version.len() == 10
            && version.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            });
        if is_date && version >= MODERN_MIN_VERSION {
            Self::Modern
        } else {
            Self::Legacy
        }
    }

    /// `legacy` or `modern`, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Modern => "modern",
        }
    }
}

/// What the proxy reads from a POST body: one JSON-RPC message, or a batch (2025-03-26 only).
#[derive(Debug, Default)]
pub struct MessagePeek {
    /// `method` of a request or notification; `None` for a response or a batch.
    pub method: Option<String>,
    /// `id` of a request, as its raw JSON text.
    pub id: Option<Box<RawValue>>,
    /// `params.protocolVersion` of an `initialize` request.
    pub initialize_version: Option<String>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]` of a 2026-07-28 request.
    pub meta_version: Option<String>,
    /// `params.name` (tools/call, prompts/get) or `params.uri` (resources/read).
    pub name: Option<String>,
    /// The body is a JSON array (a batch).
    pub batch: bool,
    /// `params._meta.traceparent` (W3C trace context, SEP-414), when a string of at most
    /// [`MAX_TRACEPARENT`] bytes.
    pub traceparent: Option<String>,
    /// `params._meta.tracestate`, when a string of at most [`MAX_TRACESTATE`] bytes.
    pub tracestate: Option<String>,
}

/// Longest `traceparent` read (version 00 is 55 bytes; a later version may add fields).
pub const MAX_TRACEPARENT: usize = 128;
/// Longest `tracestate` read (W3C: at most 32 entries; 512 bytes is what propagators keep).
pub const MAX_TRACESTATE: usize = 512;

// Each field is taken as raw JSON first and read as a string after, so a field of another type
// reads as absent alone instead of failing the whole message.
#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow)]
    method: Option<&'a RawValue>,
    id: Option<Box<RawValue>>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawParams<'a> {
    #[serde(rename = "protocolVersion", borrow)]
    protocol_version: Option<&'a RawValue>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    uri: Option<&'a RawValue>,
    #[serde(rename = "_meta", borrow)]
    meta: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawMeta<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", borrow)]
    protocol_version: Option<&'a RawValue>,
    #[serde(borrow)]
    traceparent: Option<&'a RawValue>,
    #[serde(borrow)]
    tracestate: Option<&'a RawValue>,
}

/// The JSON string `raw` holds; `None` when it holds another type.
fn string(raw: Option<&RawValue>) -> Option<String> {
    serde_json::from_str(raw?.get()).ok()
}

/// The object `raw` holds read as `T`; `None` when it holds another type (serde would read
/// an array into a struct by position).
fn object<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Option<T> {
    let raw = raw?.get();
    raw.starts_with('{')
        .then(|| serde_json::from_str(raw).ok())
        .flatten()
}

/// Reads a POST body. Errors when it is not a JSON object or array (or not JSON at all).
/// Fields of unexpected types (a numeric `method`, say) are the upstream's to judge: each
/// reads as absent here, and the others are still read. An object that cannot be read at all
/// (a duplicate key) reads as empty.
pub fn peek_message(body: &[u8]) -> Result<MessagePeek, serde_json::Error> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        serde_json::from_slice::<Vec<&RawValue>>(body)?;
        return Ok(MessagePeek {
            batch: true,
            ..MessagePeek::default()
        });
    }
    let value: &RawValue = serde_json::from_slice(body)?;
    if !value.get().starts_with('{') {
        return Err(serde::de::Error::custom(
            "a JSON-RPC message must be an object",
        ));
    }
    let Ok(msg) = serde_json::from_str::<RawMessage>(value.get()) else {
        return Ok(MessagePeek::default());
    };
    let method = string(msg.method);
    let params: Option<RawParams> = object(msg.params);
    let bounded = |raw: Option<&RawValue>, max: usize| {
        // The raw text is at least as long as the string: a longer one is not even decoded.
        raw.filter(|r| r.get().len() <= max + 2)
            .and_then(|r| string(Some(r)))
    };
    let (initialize_version, meta, name) = match params {
        Some(p) => (
            string(p.protocol_version).filter(|_| method.as_deref() == Some("initialize")),
            object::<RawMeta>(p.meta),
            // A `name` of another type is not replaced by the `uri`.
            match p.name {
                Some(name) => string(Some(name)),
                None => string(p.uri),
            },
        ),
        None => (None, None, None),
    };
    Ok(MessagePeek {
        method,
        id: msg.id,
        initialize_version,
        meta_version: meta.as_ref().and_then(|m| string(m.protocol_version)),
        name,
        batch: false,
        traceparent: meta
            .as_ref()
            .and_then(|m| bounded(m.traceparent, MAX_TRACEPARENT)),
        tracestate: meta
            .as_ref()
            .and_then(|m| bounded(m.tracestate, MAX_TRACESTATE)),
    })
}

/// Whether a JSON object body reads as a JSON-RPC message at all: not when a top-level key is
/// repeated (what makes [`peek_message`] read it as empty). A response whose `id` is `null`
/// reads (its peek has neither method nor id, yet it is a message).
pub fn is_readable(body: &[u8]) -> bool {
    serde_json::from_slice::<RawMessage>(body).is_ok()
}

/// The era and protocol version of a request. `header_version` is `MCP-Protocol-Version`.
pub fn detect(header_version: Option<&str>, peek: Option<&MessagePeek>) -> (Era, String) {
    let version = header_version
        .map(str::to_owned)
        .or_else(|| peek.and_then(|p| p.meta_version.clone()))
        .or_else(|| {
            // An unknown offer is the upstream's to answer; the session is not labelled with it.
            peek.and_then(|p| p.initialize_version.clone())
                .filter(|v| is_known_version(v))
        })
        .unwrap_or_else(|| ASSUMED_LEGACY_VERSION.to_owned());
    (Era::of_version(&version), version)
}

/// Decodes a 2026-07-28 header value: `=?base64?<base64 of UTF-8>?=` or plain text.
/// `None` when the encoded form is malformed.
pub fn decode_header_value(value: &str) -> Option<Cow<'_, str>> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(b64) => {
            let bytes = STANDARD.decode(b64).ok()?;
            String::from_utf8(bytes).ok().map(Cow::Owned)
        }
        None => Some(Cow::Borrowed(value)),
    }
}

/// Checks the mirrored `Mcp-Method` and `Mcp-Name` headers of a modern request against its body
/// (2026-07-28 `basic/transports`, "intermediaries"). Headers that are absent are left for the
/// upstream to require. Returns the name of the first header that disagrees; a header sent more
/// than once disagrees (every copy would be forwarded, and the upstream may read another one),
/// and so does one that is present but cannot be read (not text, or a malformed encoded form),
/// even against a body without the field.
pub fn check_mirrored_headers(headers: &HeaderMap, peek: &MessagePeek) -> Result<(), &'static str> {
    if headers.get_all(&MCP_METHOD).iter().nth(1).is_some() {
        return Err("Mcp-Method");
    }
    if headers.get_all(&MCP_NAME).iter().nth(1).is_some() {
        return Err("Mcp-Name");
    }
    let agrees = |header, body: &Option<String>| match headers.get(header) {
        None => true,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(decode_header_value)
            .is_some_and(|v| Some(&*v) == body.as_deref()),
    };
    if !agrees(&MCP_METHOD, &peek.method) {
        return Err("Mcp-Method");
    }
    if !agrees(&MCP_NAME, &peek.name) {
        return Err("Mcp-Name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    /// Review finding: a client's error response with `"id": null` (JSON-RPC allows it) peeks
    /// as empty like a message with a duplicate key, and was refused on chained routes.
    #[test]
    fn a_null_id_response_reads_and_a_duplicate_key_does_not() {
        let null_id = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#;
        let peek = peek_message(null_id).unwrap();
        assert!(peek.method.is_none() && peek.id.is_none());
        assert!(is_readable(null_id));
        assert!(!is_readable(
            br#"{"jsonrpc":"2.0","id":1,"id":1,"method":"x"}"#
        ));
        // The trace context is read from `_meta`, bounded.
        let traced = br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"a=1"}}}"#;
        let peek = peek_message(traced).unwrap();
        assert_eq!(peek.tracestate.as_deref(), Some("a=1"));
        assert!(peek.traceparent.is_some());
        let long = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"_meta":{{"traceparent":"{}"}}}}}}"#,
            "-".repeat(4096)
        );
        assert!(peek_message(long.as_bytes()).unwrap().traceparent.is_none());
    }

    #[test]
    fn versions_order_as_dates_and_non_dates_are_legacy() {
        assert_eq!(Era::of_version("2025-11-25"), Era::Legacy);
        assert_eq!(Era::of_version("2026-07-28"), Era::Modern);
        assert_eq!(Era::of_version("2027-01-01"), Era::Modern);
        assert_eq!(Era::of_version("9999"), Era::Legacy);
    }

    #[test]
    fn era_comes_from_header_then_meta_then_initialize_then_default() {
        let init = peek_message(
            br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#,
        )
        .unwrap();
        assert_eq!(
            detect(None, Some(&init)),
            (Era::Legacy, "2025-06-18".into())
        );
        let modern = peek_message(
            br#"{"jsonrpc":"2.0","id":"a","method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        )
        .unwrap();
        assert_eq!(
            detect(None, Some(&modern)),
            (Era::Modern, "2026-07-28".into())
        );
        assert_eq!(detect(Some("2025-11-25"), Some(&modern)).0, Era::Legacy);
        assert_eq!(detect(None, None), (Era::Legacy, "2025-03-26".into()));
    }

    #[test]
    fn peek_reads_method_id_and_name_and_rejects_non_objects() {
        let p = peek_message(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"x":1.0}}}"#,
        )
        .unwrap();
        assert_eq!(p.method.as_deref(), Some("tools/call"));
        assert_eq!(p.id.as_ref().map(|v| v.get()), Some("7"));
        assert_eq!(p.name.as_deref(), Some("echo"));
        let r = peek_message(
            br#"{"jsonrpc":"2.0","method":"resources/read","params":{"uri":"file:///a"}}"#,
        )
        .unwrap();
        assert_eq!(r.name.as_deref(), Some("file:///a"));
        assert!(peek_message(b"[{}, {}]").unwrap().batch);
        assert!(peek_message(b"not json").is_err());
        assert!(peek_message(b"42").is_err());
        assert!(peek_message(b"{\"a\":").is_err());
    }

    #[test]
    fn mirrored_headers_must_match_the_body_after_base64_decoding() {
        let p = peek_message(
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"caf\u{e9}\"}}"
                .as_bytes(),
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert(&MCP_METHOD, HeaderValue::from_static("tools/call"));
        h.insert(&MCP_NAME, HeaderValue::from_static("=?base64?Y2Fmw6k=?="));
        assert_eq!(check_mirrored_headers(&h, &p), Ok(()));
        h.insert(&MCP_NAME, HeaderValue::from_static("cafe"));
        assert_eq!(check_mirrored_headers(&h, &p), Err("Mcp-Name"));
        h.remove(&MCP_NAME);
        h.insert(&MCP_METHOD, HeaderValue::from_static("tools/list"));
        assert_eq!(check_mirrored_headers(&h, &p), Err("Mcp-Method"));
    }

    #[test]
    fn a_repeated_mirrored_header_is_a_mismatch_even_when_one_copy_matches() {
        let p = peek_message(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.append(&MCP_METHOD, HeaderValue::from_static("tools/call"));
        h.append(&MCP_METHOD, HeaderValue::from_static("tools/list"));
        assert_eq!(check_mirrored_headers(&h, &p), Err("Mcp-Method"));
        h.remove(&MCP_METHOD);
        h.append(&MCP_NAME, HeaderValue::from_static("echo"));
        h.append(&MCP_NAME, HeaderValue::from_static("echo"));
        assert_eq!(check_mirrored_headers(&h, &p), Err("Mcp-Name"));
    }

    #[test]
    fn only_known_versions_pass_and_an_unknown_initialize_offer_is_not_recorded() {
        for v in KNOWN_VERSIONS {
            assert_eq!(
                check_versions(Some(&HeaderValue::from_static(v)), None),
                Ok(())
            );
        }
        let junk = "x".repeat(30_000);
        let err = check_versions(Some(&HeaderValue::from_str(&junk).unwrap()), None).unwrap_err();
        assert_eq!(err.len(), 64);
        assert!(check_versions(Some(&HeaderValue::from_static("2025-11-25 ")), None).is_err());
        assert!(
            check_versions(
                Some(&HeaderValue::from_bytes(b"2025-11-2\xff").unwrap()),
                None
            )
            .is_err()
        );
        let modern = peek_message(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01"}}}"#,
        )
        .unwrap();
        assert_eq!(
            check_versions(None, Some(&modern)),
            Err("2099-01-01".into())
        );
        let init = peek_message(
            br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"junk"}}"#,
        )
        .unwrap();
        assert_eq!(check_versions(None, Some(&init)), Ok(()));
        assert_eq!(
            detect(None, Some(&init)),
            (Era::Legacy, ASSUMED_LEGACY_VERSION.into())
        );
    }

    #[test]
    fn a_field_of_an_unexpected_type_reads_as_absent_alone() {
        let p = peek_message(
            br#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":5,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        )
        .unwrap();
        assert_eq!(p.method.as_deref(), Some("resources/read"));
        assert_eq!(p.id.as_ref().map(|v| v.get()), Some("3"));
        assert_eq!(p.meta_version.as_deref(), Some("2026-07-28"));
        assert_eq!(p.name, None);
        let p = peek_message(
            br#"{"id":4,"method":"tools/call","params":{"name":"echo","_meta":{"io.modelcontextprotocol/protocolVersion":7}}}"#,
        )
        .unwrap();
        assert_eq!(p.method.as_deref(), Some("tools/call"));
        assert_eq!(p.name.as_deref(), Some("echo"));
        assert_eq!(p.meta_version, None);
        let p = peek_message(br#"{"id":5,"method":"initialize","params":[1]}"#).unwrap();
        assert_eq!(p.method.as_deref(), Some("initialize"));
        assert_eq!(p.id.as_ref().map(|v| v.get()), Some("5"));
    }
}
