//! Property tests of era detection and the checks of mirrored headers (`src/protocol/era.rs`):
//! any body is read or refused without panicking, a name mirrored in either header form
//! (plain or `=?base64?…?=`) agrees with the body, and a header that disagrees is refused.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use http::{HeaderMap, HeaderValue};
use mcp_relay::protocol::{
    era::{self, Era},
    headers::{MCP_METHOD, MCP_NAME},
};
use proptest::prelude::*;
use serde_json::json;

/// The header forms a client may send `value` in: base64 always, plain when the value is
/// visible ASCII that does not itself look like the encoded form.
fn header_forms(value: &str) -> Vec<HeaderValue> {
    let mut forms = vec![
        HeaderValue::from_str(&format!("=?base64?{}?=", STANDARD.encode(value)))
            .expect("base64 is a valid header value"),
    ];
    let visible = value.bytes().all(|b| (0x20..0x7F).contains(&b));
    let padded = value.starts_with(' ') || value.ends_with(' ');
    let looks_encoded = value.starts_with("=?base64?") && value.ends_with("?=");
    let plain_ok = visible && !padded && !looks_encoded;
    if plain_ok {
        forms.push(HeaderValue::from_str(value).expect("visible ASCII"));
    }
    forms
}

fn body(method: &str, name: &str, version: Option<&str>) -> Vec<u8> {
    let mut params = json!({ "name": name, "arguments": { "x": 1 } });
    if let Some(v) = version {
        params["_meta"] = json!({ "io.modelcontextprotocol/protocolVersion": v });
    }
    serde_json::to_vec(&json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }))
        .expect("serializes")
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z/_]{1,16}",
        "[ -~]{0,16}",
        ".{0,12}",
        Just("=?base64?Zm9v?=".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Arbitrary bytes are read or refused, never a panic; what reads as an object gives an
    /// era and version without panicking.
    #[test]
    fn arbitrary_bodies_never_panic(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            ".{0,64}".prop_map(String::into_bytes),
            "[\\[\\]{}\":, a-z0-9_/.-]{0,64}".prop_map(String::into_bytes),
        ],
        header in proptest::option::of("[ -~]{0,12}"),
    ) {
        if let Ok(peek) = era::peek_message(&bytes) {
            let (era, version) = era::detect(header.as_deref(), Some(&peek));
            prop_assert_eq!(era, Era::of_version(&version));
            let _ = era::check_mirrored_headers(&HeaderMap::new(), &peek);
        }
    }

    /// A method and name mirrored in any allowed form agree with the body; the era follows
    /// the `_meta` version.
    #[test]
    fn mirrored_headers_in_either_form_agree(
        method in text(),
        name in text(),
        version in proptest::option::of(prop_oneof![
            Just("2026-07-28".to_owned()),
            Just("2025-06-18".to_owned()),
            "[0-9-]{0,10}",
        ]),
    ) {
        let peek = era::peek_message(&body(&method, &name, version.as_deref())).expect("a request");
        prop_assert_eq!(peek.method.as_deref(), Some(method.as_str()));
        prop_assert_eq!(peek.name.as_deref(), Some(name.as_str()));
        let (era, v) = era::detect(None, Some(&peek));
        prop_assert_eq!(&v, version.as_deref().unwrap_or(era::ASSUMED_LEGACY_VERSION));
        prop_assert_eq!(era, Era::of_version(&v));
        for m in header_forms(&method) {
            for n in header_forms(&name) {
                let mut h = HeaderMap::new();
                h.insert(&MCP_METHOD, m.clone());
                h.insert(&MCP_NAME, n);
                prop_assert_eq!(era::check_mirrored_headers(&h, &peek), Ok(()));
            }
        }
    }

    /// A header that names another method or name than the body is refused, in either form,
    /// and so is a malformed encoded form.
    #[test]
    fn mismatched_headers_are_refused(
        method in text(),
        name in text(),
        other in text(),
        garbage in "[A-Za-z0-9+/=]{0,8}[^A-Za-z0-9+/=]{1,2}",
    ) {
        let peek = era::peek_message(&body(&method, &name, None)).expect("a request");
        if other != method {
            for m in header_forms(&other) {
                let mut h = HeaderMap::new();
                h.insert(&MCP_METHOD, m);
                prop_assert_eq!(era::check_mirrored_headers(&h, &peek), Err("Mcp-Method"));
            }
        }
        if other != name {
            for n in header_forms(&other) {
                let mut h = HeaderMap::new();
                h.insert(&MCP_NAME, n);
                prop_assert_eq!(era::check_mirrored_headers(&h, &peek), Err("Mcp-Name"));
            }
        }
        // A header that cannot be read (malformed encoded form, bytes that are not text) is
        // refused, also when the body has no such field (a notification without a name).
        let unnamed = era::peek_message(br#"{"jsonrpc":"2.0","method":"notifications/x"}"#)
            .expect("a notification");
        let encoded = HeaderValue::from_str(&format!("=?base64?{garbage}?="));
        let opaque = HeaderValue::from_bytes(format!("{garbage}\u{e9}").as_bytes());
        for bad in [encoded, opaque].into_iter().flatten() {
            for p in [&peek, &unnamed] {
                let mut h = HeaderMap::new();
                h.insert(&MCP_NAME, bad.clone());
                prop_assert_eq!(era::check_mirrored_headers(&h, p), Err("Mcp-Name"), "{:?}", bad);
            }
        }
    }

    /// A field of an unexpected type reads as absent (the upstream judges it), and only that
    /// field: the method, name and version around it are still read and checked.
    #[test]
    fn a_mistyped_field_does_not_hide_the_others(
        method in "[a-z/]{1,12}",
        name in "[a-z]{1,8}",
        field in prop_oneof![Just("uri"), Just("cursor"), Just("version")],
        bad in prop_oneof![Just(json!(5)), Just(json!([1])), Just(json!({"a": 1})), Just(json!(true))],
    ) {
        let mut msg = json!({
            "jsonrpc": "2.0", "id": 1, "method": method,
            "params": { "name": name, "_meta": { "io.modelcontextprotocol/protocolVersion": "2026-07-28" } },
        });
        if field == "version" {
            msg["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = bad;
        } else {
            msg["params"][field] = bad;
        }
        let peek = era::peek_message(&serde_json::to_vec(&msg).expect("serializes")).expect("an object");
        prop_assert_eq!(peek.method.as_deref(), Some(method.as_str()));
        prop_assert_eq!(peek.id.as_ref().map(|v| v.get()), Some("1"));
        let mut h = HeaderMap::new();
        h.insert(&MCP_METHOD, HeaderValue::from_str(&method).expect("ascii"));
        h.insert(&MCP_NAME, HeaderValue::from_str(&name).expect("ascii"));
        // `params.name` wins over `params.uri`, mistyped or not.
        prop_assert_eq!(era::check_mirrored_headers(&h, &peek), Ok(()));
    }
}
