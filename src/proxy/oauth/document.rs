//! The protected-resource metadata document (RFC 9728 §2): its top-level `resource` member
//! gets a new value, and every other byte of the document stays as the upstream sent it (member
//! order, whitespace, number spellings, unknown members). The document is parsed once to find
//! where each top-level member's value lies (borrowed [`RawValue`]s, never re-serialized), and
//! the `resource` values are spliced.

use std::{fmt, ops::Range};

use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
};
use serde_json::value::RawValue;

/// Why a protected-resource metadata document cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// Not one JSON object (the parser's error says where).
    #[error("not a JSON object: {0}")]
    NotJsonObject(#[from] serde_json::Error),
    /// A member value the parser handed over was not a slice of the document (cannot happen
    /// with `serde_json::from_slice`; refused rather than guessed).
    #[error("member value outside the document")]
    NotBorrowed,
}

/// The name of the member rewritten.
const RESOURCE: &str = "resource";

/// `document` (a JSON object) with the value of its top-level `resource` member set to
/// `resource` (every occurrence, should the upstream repeat it); when it has none, the member
/// is added first. Errors: [`DocumentError`].
pub fn rewrite_resource(document: &[u8], resource: &str) -> Result<Vec<u8>, DocumentError> {
    let Members(members) = serde_json::from_slice(document)?;
    let value = serde_json::to_string(resource)?;
    let spans = members
        .iter()
        .filter(|(name, _)| name == RESOURCE)
        .map(|(_, raw)| span_in(document, raw.get()).ok_or(DocumentError::NotBorrowed))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(document.len() + value.len() + RESOURCE.len() + 4);
    if spans.is_empty() {
        // It parsed as an object: its first non-whitespace byte is the `{`.
        let open = document
            .iter()
            .position(|&b| b == b'{')
            .ok_or(DocumentError::NotBorrowed)?;
        out.extend_from_slice(&document[..=open]);
        out.extend_from_slice(b"\"resource\":");
        out.extend_from_slice(value.as_bytes());
        if !members.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(&document[open + 1..]);
        return Ok(out);
    }
    let mut copied = 0;
    for span in spans {
        out.extend_from_slice(&document[copied..span.start]);
        out.extend_from_slice(value.as_bytes());
        copied = span.end;
    }
    out.extend_from_slice(&document[copied..]);
    Ok(out)
}

/// Where `part` (a slice of `whole`) lies in `whole`.
fn span_in(whole: &[u8], part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len() && &whole[start..end] == part.as_bytes()).then_some(start..end)
}

/// The top-level members of a JSON object, in document order: names (unescaped) and their
/// values as slices of the input.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let value: &'de RawValue = map.next_value()?;
            members.push((name, value));
        }
        Ok(Members(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str = "http://127.0.0.1:8080/mcp/secure";

    fn rewrite(document: &str) -> Result<String, DocumentError> {
        rewrite_resource(document.as_bytes(), RELAY).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn only_the_resource_value_changes_byte_for_byte() {
        let upstream = "{\n  \"resource\" : \"http://10.0.0.7:3001/mcp\",\n  \"authorization_servers\": [\"https://as.example/\"],\n  \"scopes_supported\":[\"mcp\"], \"n\": 1.0,\n  \"nested\": {\"resource\": \"keep\"}\n}\n";
        let expected = upstream.replace("\"http://10.0.0.7:3001/mcp\"", &format!("\"{RELAY}\""));
        assert_eq!(rewrite(upstream).unwrap(), expected);
    }

    #[test]
    fn a_document_without_resource_gets_it_first_and_a_repeated_one_everywhere() {
        assert_eq!(
            rewrite(r#" {"authorization_servers":[]}"#).unwrap(),
            format!(r#" {{"resource":"{RELAY}","authorization_servers":[]}}"#)
        );
        assert_eq!(
            rewrite("{}").unwrap(),
            format!(r#"{{"resource":"{RELAY}"}}"#)
        );
        assert_eq!(
            rewrite(r#"{"resource":"a","x":0,"resource":null}"#).unwrap(),
            format!(r#"{{"resource":"{RELAY}","x":0,"resource":"{RELAY}"}}"#)
        );
        // An escaped name is the same name.
        assert_eq!(
            rewrite(r#"{"resourc\u0065":"a"}"#).unwrap(),
            format!(r#"{{"resourc\u0065":"{RELAY}"}}"#)
        );
    }

    #[test]
    fn anything_but_one_json_object_is_refused() {
        for bad in [
            "",
            "<html>Not Found</html>",
            "[\"resource\"]",
            "\"resource\"",
            "{\"resource\":\"a\"} trailing",
            "{\"resource\":",
            "\u{feff}{\"resource\":\"a\"}",
        ] {
            assert!(rewrite(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_new_value_is_a_json_string_with_escapes() {
        let out = rewrite_resource(br#"{"resource":"x"}"#, "http://h/a\"b").unwrap();
        assert_eq!(out, br#"{"resource":"http://h/a\"b"}"#);
    }
}
