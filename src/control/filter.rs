//! The `filter` of `ListSessions`: a small subset of AIP-160 — terms `field = "value"` joined by
//! `AND`, over `era`, `upstream` and `protocol_version`.

/// One parsed filter: every term must hold.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub era: Option<String>,
    pub upstream: Option<String>,
    pub protocol_version: Option<String>,
}

impl SessionFilter {
    /// Parses `filter`; the error says what is wrong, for `INVALID_ARGUMENT`.
    pub fn parse(filter: &str) -> Result<Self, String> {
        let mut out = Self::default();
        if filter.trim().is_empty() {
            return Ok(out);
        }
        for term in filter.split(" AND ") {
            let (field, value) = term
                .split_once('=')
                .ok_or_else(|| format!("filter term {term:?} is not `field = \"value\"`"))?;
            let field = field.trim();
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
                .to_owned();
            let slot = match field {
                "era" => &mut out.era,
                "upstream" => &mut out.upstream,
                "protocol_version" => &mut out.protocol_version,
                other => {
                    return Err(format!(
                        "unknown filter field {other:?}; use era, upstream or protocol_version"
                    ));
                }
            };
            *slot = Some(value);
        }
        if let Some(era) = &out.era
            && era != "LEGACY"
            && era != "MODERN"
        {
            return Err(format!("era must be LEGACY or MODERN, not {era:?}"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_conjunctions_and_rejects_unknown_fields() {
        let f = SessionFilter::parse(r#"era = "LEGACY" AND upstream="http://a/mcp""#).unwrap();
        assert_eq!(f.era.as_deref(), Some("LEGACY"));
        assert_eq!(f.upstream.as_deref(), Some("http://a/mcp"));
        assert!(SessionFilter::parse("colour = \"red\"").is_err());
        assert!(SessionFilter::parse("era = \"OLD\"").is_err());
        assert!(SessionFilter::parse("era").is_err());
        assert_eq!(
            SessionFilter::parse("  ").unwrap(),
            SessionFilter::default()
        );
    }
}
