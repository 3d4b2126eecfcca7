//! The `filter` of `ListSessions` and `WatchSessions`: a small subset of AIP-160 — terms
//! `field = "value"` joined by `AND`, over `state`, `era`, `route`, `upstream` and
//! `protocol_version`.

use super::{
    convert::{era_to_pb, state_of},
    pb,
};
use crate::session::Session;

/// One parsed filter: every term must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub state: Option<pb::SessionState>,
    pub era: Option<pb::ProtocolEra>,
    /// The route's name, exactly (a session restored from a record written before routes
    /// existed has none, and matches no route).
    pub route: Option<String>,
    /// The endpoint the session is pinned to (its masked URL).
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
            match field {
                "state" => {
                    let state = pb::SessionState::from_str_name(&format!("SESSION_STATE_{value}"))
                        .filter(|s| {
                            !matches!(s, pb::SessionState::Unspecified | pb::SessionState::Ended)
                        })
                        .ok_or_else(|| {
                            format!("state must be IDLE, STREAMING or LINGERING, not {value:?}")
                        })?;
                    out.state = Some(state);
                }
                "era" => {
                    let era = pb::ProtocolEra::from_str_name(&format!("PROTOCOL_ERA_{value}"))
                        .filter(|e| *e != pb::ProtocolEra::Unspecified)
                        .ok_or_else(|| format!("era must be LEGACY or MODERN, not {value:?}"))?;
                    out.era = Some(era);
                }
                "route" => out.route = Some(value),
                "upstream" => out.upstream = Some(value),
                "protocol_version" => out.protocol_version = Some(value),
                other => {
                    return Err(format!(
                        "unknown filter field {other:?}; use state, era, route, upstream or \
                         protocol_version"
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Whether `s` passes every term.
    pub fn matches(&self, s: &Session) -> bool {
        let version = s.protocol_version();
        self.era.is_none_or(|e| e == era_to_pb(s.era()))
            && self.route.as_deref().is_none_or(|r| r == s.route())
            && self.upstream.as_deref().is_none_or(|u| u == s.upstream())
            && self
                .protocol_version
                .as_deref()
                .is_none_or(|v| v == &*version)
            && self
                .state
                .is_none_or(|state| state == state_of(s, &s.streams()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_conjunctions_and_rejects_unknown_fields_and_values() {
        let f = SessionFilter::parse(
            r#"era = "LEGACY" AND upstream="http://a/mcp" AND state = STREAMING AND route = "/mcp/a""#,
        )
        .unwrap();
        assert_eq!(f.route.as_deref(), Some("/mcp/a"));
        assert_eq!(f.era, Some(pb::ProtocolEra::Legacy));
        assert_eq!(f.upstream.as_deref(), Some("http://a/mcp"));
        assert_eq!(f.state, Some(pb::SessionState::Streaming));
        assert!(SessionFilter::parse("colour = \"red\"").is_err());
        assert!(SessionFilter::parse("era = \"OLD\"").is_err());
        assert!(SessionFilter::parse("era = \"UNSPECIFIED\"").is_err());
        assert!(SessionFilter::parse("state = \"ENDED\"").is_err());
        assert!(SessionFilter::parse("era").is_err());
        assert_eq!(
            SessionFilter::parse("  ").unwrap(),
            SessionFilter::default()
        );
    }
}
