//! `WWW-Authenticate` challenges (RFC 9110 §11.6.1): the `resource_metadata` auth-param
//! (RFC 9728 §5.1) of every challenge in a header value gets a new value; every other byte of
//! the value stays as it came.
//!
//! The grammar: `challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]`, `auth-param =
//! token BWS "=" BWS ( token / quoted-string )`, and several challenges may share one value,
//! separated by commas. The scan is one pass over the bytes, linear in their number: it skips
//! quoted-strings (with their `\` escapes), so a `resource_metadata=` inside another
//! parameter's quoted value (an `error_description`) is never touched, and it takes a name
//! only at the start of an item (after the scheme's space or a comma), so a token68 that
//! merely contains the word is left alone.

use crate::proxy::headers::{is_tchar, push_quoted_string};

/// The auth-param name whose value is rewritten (compared case-insensitively, as auth-param
/// names are).
const RESOURCE_METADATA: &[u8] = b"resource_metadata";

/// `value` (one `WWW-Authenticate` field value) with the value of each `resource_metadata`
/// auth-param replaced by `url` as a quoted-string (`"` and `\` in it escaped); `None` when the
/// value has no such parameter (nothing to change).
pub fn rewrite_resource_metadata(value: &[u8], url: &str) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'"' => i = skip_quoted(value, i),
            c if is_tchar(c) => {
                let start = i;
                while i < value.len() && is_tchar(value[i]) {
                    i += 1;
                }
                let at_item_start = start == 0 || matches!(value[start - 1], b' ' | b'\t' | b',');
                if !at_item_start || !value[start..i].eq_ignore_ascii_case(RESOURCE_METADATA) {
                    continue;
                }
                let Some((from, to)) = param_value(value, i) else {
                    continue;
                };
                if out.is_empty() {
                    out.reserve(value.len() + url.len());
                }
                out.extend_from_slice(&value[copied..from]);
                push_quoted_string(&mut out, url.as_bytes());
                copied = to;
                i = to;
            }
            _ => i += 1,
        }
    }
    if copied == 0 {
        return None;
    }
    out.extend_from_slice(&value[copied..]);
    Some(out)
}

/// The span of an auth-param's value when `after_name` (just past a name) is followed by
/// `BWS "=" BWS` and a non-empty token or quoted-string; `None` otherwise (a token68's `=`
/// padding, an empty value).
fn param_value(value: &[u8], after_name: usize) -> Option<(usize, usize)> {
    let eq = skip_ws(value, after_name);
    if value.get(eq) != Some(&b'=') || value.get(eq + 1) == Some(&b'=') {
        return None;
    }
    let from = skip_ws(value, eq + 1);
    let to = match value.get(from)? {
        b'"' => skip_quoted(value, from),
        // Unquoted: up to the next separator (a URL is not a token, but clients read it so).
        _ => {
            let len = value[from..]
                .iter()
                .position(|&c| matches!(c, b',' | b' ' | b'\t'))
                .unwrap_or(value.len() - from);
            from + len
        }
    };
    (to > from).then_some((from, to))
}

/// The index just past the quoted-string starting at `open` (a `"`), or the end of `value`
/// when it is not closed.
fn skip_quoted(value: &[u8], open: usize) -> usize {
    let mut j = open + 1;
    while j < value.len() {
        match value[j] {
            b'\\' => j += 2,
            b'"' => return j + 1,
            _ => j += 1,
        }
    }
    value.len()
}

fn skip_ws(value: &[u8], mut i: usize) -> usize {
    while i < value.len() && matches!(value[i], b' ' | b'\t') {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://relay:8080/.well-known/oauth-protected-resource/mcp/a";

    fn rewrite(value: &str) -> Option<String> {
        rewrite_resource_metadata(value.as_bytes(), URL).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn only_the_resource_metadata_value_changes() {
        // The Python SDK's challenge, byte for byte apart from the one value.
        let sdk = r#"Bearer error="invalid_token", error_description="Authentication required", resource_metadata="http://127.0.0.1:3001/.well-known/oauth-protected-resource/mcp""#;
        assert_eq!(
            rewrite(sdk).unwrap(),
            format!(
                r#"Bearer error="invalid_token", error_description="Authentication required", resource_metadata="{URL}""#
            )
        );
        // First parameter, unquoted, odd spacing and case; a scope after it.
        assert_eq!(
            rewrite("Bearer Resource_Metadata = http://up/x ,scope=\"a b\"").unwrap(),
            format!("Bearer Resource_Metadata = \"{URL}\" ,scope=\"a b\"")
        );
    }

    #[test]
    fn every_challenge_of_a_value_is_rewritten_and_nothing_quoted_is_touched() {
        let value = r#"DPoP algs="ES256", resource_metadata="http://up/a", Bearer error_description="see resource_metadata=\"x\" here", resource_metadata="http://up/b""#;
        let out = rewrite(value).unwrap();
        assert_eq!(out.matches(URL).count(), 2, "{out}");
        assert!(out.contains(r#"error_description="see resource_metadata=\"x\" here""#));
        assert!(out.starts_with(r#"DPoP algs="ES256", resource_metadata=""#));
    }

    #[test]
    fn values_without_the_parameter_are_left_alone() {
        for value in [
            r#"Bearer realm="example""#,
            r#"Bearer error_description="resource_metadata=\"http://up\"""#,
            "Basic cmVzb3VyY2VfbWV0YWRhdGE=",
            "Negotiate resource_metadata==",
            "Bearer x-resource_metadata=\"http://up\"",
            "Bearer resource_metadata=",
            "",
        ] {
            assert_eq!(rewrite(value), None, "{value}");
        }
    }

    #[test]
    fn quotes_and_backslashes_in_the_url_are_escaped() {
        let out = rewrite_resource_metadata(b"Bearer resource_metadata=\"u\"", "http://h/a\"b\\c")
            .unwrap();
        assert_eq!(out, b"Bearer resource_metadata=\"http://h/a\\\"b\\\\c\"");
    }

    #[test]
    fn an_unterminated_quote_ends_the_scan_without_panicking() {
        assert_eq!(
            rewrite("Bearer error=\"open, resource_metadata=\"x\"").as_deref(),
            None
        );
        let out = rewrite("Bearer resource_metadata=\"open").unwrap();
        assert_eq!(out, format!("Bearer resource_metadata=\"{URL}\""));
    }
}
