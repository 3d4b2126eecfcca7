//! Tool, resource and prompt policy of a route (`proxy.policy`, overridden per route by
//! `[routes.policy]`): which names clients may list and use through mcp-relay.
//!
//! ```toml
//! [[routes]]
//! path = "/mcp/files"
//! upstreams = ["http://127.0.0.1:3001/mcp"]
//! [routes.policy]
//! allow_tools = ["search_*", "read_file"]   # glob; empty or absent = all
//! deny_tools = ["delete_*"]                 # deny wins
//! ```
//!
//! Patterns are globs over the whole name (tools, prompts) or URI (resources): `*` any run of
//! characters (`/` included), `?` one character, `[abc]` a class, `{a,b}` alternatives;
//! matched case-sensitively. A route's `policy` table replaces the global one whole.

use serde::{Deserialize, Serialize};

/// Most patterns in one list.
pub const MAX_PATTERNS: usize = 256;
/// Longest pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 512;

/// What clients may list and use: per kind, an allow list (empty: all) and a deny list (wins).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Tool names allowed (`tools/list`, `tools/call`); empty: all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_tools: Vec<String>,
    /// Tool names denied, whatever `allow_tools` says.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_tools: Vec<String>,
    /// Resource URIs allowed (`resources/list`, `resources/templates/list` by `uriTemplate`,
    /// `resources/read`, `resources/subscribe`); empty: all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_resources: Vec<String>,
    /// Resource URIs denied, whatever `allow_resources` says.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_resources: Vec<String>,
    /// Prompt names allowed (`prompts/list`, `prompts/get`); empty: all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_prompts: Vec<String>,
    /// Prompt names denied, whatever `allow_prompts` says.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_prompts: Vec<String>,
}

impl PolicyConfig {
    /// Whether it restricts nothing (no list has a pattern): the route needs no policy.
    pub fn is_empty(&self) -> bool {
        self.lists().iter().all(|(_, list)| list.is_empty())
    }

    /// Every list with its key name.
    pub fn lists(&self) -> [(&'static str, &[String]); 6] {
        [
            ("allow_tools", &self.allow_tools),
            ("deny_tools", &self.deny_tools),
            ("allow_resources", &self.allow_resources),
            ("deny_resources", &self.deny_resources),
            ("allow_prompts", &self.allow_prompts),
            ("deny_prompts", &self.deny_prompts),
        ]
    }

    /// Checks every list: at most [`MAX_PATTERNS`] patterns of at most [`MAX_PATTERN_BYTES`],
    /// each a valid glob. Errors name the list and the pattern.
    pub fn check(&self) -> Result<(), String> {
        for (key, list) in self.lists() {
            if list.len() > MAX_PATTERNS {
                return Err(format!("{key}: at most {MAX_PATTERNS} patterns"));
            }
            for pattern in list {
                if pattern.is_empty() || pattern.len() > MAX_PATTERN_BYTES {
                    return Err(format!(
                        "{key}: a pattern must be 1 to {MAX_PATTERN_BYTES} bytes"
                    ));
                }
                glob(pattern).map_err(|e| format!("{key}: `{pattern}`: {e}"))?;
            }
        }
        Ok(())
    }
}

/// The glob of one pattern, as policies match it.
pub fn glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_glob_or_an_empty_pattern_is_refused_naming_the_list() {
        let mut p = PolicyConfig {
            deny_tools: vec!["delete_[".into()],
            ..Default::default()
        };
        let err = p.check().unwrap_err();
        assert!(err.starts_with("deny_tools: `delete_[`"), "{err}");
        p.deny_tools = vec![String::new()];
        assert!(p.check().unwrap_err().starts_with("deny_tools"));
        p.deny_tools = vec!["delete_*".into()];
        assert!(p.check().is_ok());
        assert!(!p.is_empty());
        assert!(PolicyConfig::default().is_empty());
    }
}
