//! Era detection and mirrored-header checks on arbitrary bodies and header values
//! (`src/protocol/era.rs`). Input: `<Mcp-Method value>\n<Mcp-Name value>\n<MCP-Protocol-Version>\n<body>`.
#![no_main]

use base64::{Engine as _, engine::general_purpose::STANDARD};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mcp_relay::protocol::{
    era::{self, Era},
    headers::{MCP_METHOD, MCP_NAME},
};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let method_h = parts.next().unwrap_or_default();
    let name_h = parts.next().unwrap_or_default();
    let version_h = parts.next().and_then(|v| std::str::from_utf8(v).ok());
    let body = parts.next().unwrap_or(data);

    let _ = era::decode_header_value(&String::from_utf8_lossy(name_h));
    let Ok(peek) = era::peek_message(body) else {
        return;
    };
    let (era, version) = era::detect(version_h, Some(&peek));
    assert_eq!(era, Era::of_version(&version));

    // Arbitrary header values: a check passes only if they decode to what the body holds.
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(method_h) {
        h.insert(&MCP_METHOD, v);
    }
    if let Ok(v) = HeaderValue::from_bytes(name_h) {
        h.insert(&MCP_NAME, v);
    }
    if era::check_mirrored_headers(&h, &peek).is_ok() {
        for (header, body_value) in [(&MCP_METHOD, &peek.method), (&MCP_NAME, &peek.name)] {
            if let Some(v) = h.get(header) {
                let decoded = v.to_str().ok().and_then(era::decode_header_value);
                assert_eq!(decoded.as_deref(), body_value.as_deref());
            }
        }
    }

    // What the body holds, mirrored in the base64 form, always agrees.
    let mut h = HeaderMap::new();
    for (header, value) in [(&MCP_METHOD, &peek.method), (&MCP_NAME, &peek.name)] {
        if let Some(v) = value {
            let encoded = format!("=?base64?{}?=", STANDARD.encode(v));
            h.insert(
                header,
                HeaderValue::from_str(&encoded).expect("base64 is a header value"),
            );
        }
    }
    assert_eq!(era::check_mirrored_headers(&h, &peek), Ok(()));
});
