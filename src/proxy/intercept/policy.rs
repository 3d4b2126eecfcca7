//! The tool policy interceptor (`proxy.policy`, `[routes.policy]`; [`PolicyConfig`]): which
//! tools, resources and prompts clients may list and use through a route.
//!
//! - Lists are filtered: the response to `tools/list` (`result.tools[].name`),
//!   `resources/list` (`result.resources[].uri`), `resources/templates/list`
//!   (`result.resourceTemplates[].uriTemplate`) and `prompts/list` (`result.prompts[].name`)
//!   loses the entries not allowed; everything else in it (`nextCursor` included, so
//!   pagination goes on as the server pages) passes unchanged. A page whose entries were all
//!   filtered is an empty page with the server's cursor.
//! - Uses are answered by the proxy: `tools/call`, `prompts/get` (by `params.name`),
//!   `resources/read`, `resources/subscribe`, `resources/unsubscribe` (by `params.uri`) of a
//!   name not allowed get the error a server gives for an unknown one — JSON-RPC `-32602`
//!   (Invalid params; the MCP spec's code for an unknown tool or prompt, and SEP-2164's for a
//!   resource not found), HTTP `200` — and never reach the upstream. A request without a name
//!   passes: the upstream judges it.
//!
//! Modern-era requests are judged by the same fields: the admit phase checked that the
//! mirrored `Mcp-Method`/`Mcp-Name` headers agree with the body.

use globset::{GlobSet, GlobSetBuilder};

use super::{Answer, ClientMessage, Interceptor, ServerMessage, Verdict};
use crate::config::{PolicyConfig, policy::glob};

/// JSON-RPC Invalid params: what a server answers for an unknown tool, prompt or resource.
pub const INVALID_PARAMS: i64 = -32602;

/// Longest name echoed in an answer's message, in characters.
const MAX_ECHOED_NAME: usize = 128;

/// Allow and deny lists of one kind (tools, resources or prompts).
#[derive(Debug, Clone)]
struct Rule {
    /// `None`: everything not denied is allowed.
    allow: Option<GlobSet>,
    deny: Option<GlobSet>,
}

impl Rule {
    fn new(allow: &[String], deny: &[String]) -> Result<Self, globset::Error> {
        let set = |patterns: &[String]| -> Result<Option<GlobSet>, globset::Error> {
            if patterns.is_empty() {
                return Ok(None);
            }
            let mut builder = GlobSetBuilder::new();
            for p in patterns {
                builder.add(glob(p)?);
            }
            builder.build().map(Some)
        };
        Ok(Self {
            allow: set(allow)?,
            deny: set(deny)?,
        })
    }

    /// Whether it restricts anything.
    fn restricts(&self) -> bool {
        self.allow.is_some() || self.deny.is_some()
    }

    /// Whether `name` may be listed and used: not denied, and allowed (when there is an allow
    /// list).
    fn allows(&self, name: &str) -> bool {
        !self.deny.as_ref().is_some_and(|d| d.is_match(name))
            && self.allow.as_ref().is_none_or(|a| a.is_match(name))
    }
}

/// What each kind is called in answers and which list methods carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tool,
    Resource,
    Prompt,
}

/// The policy interceptor of one route.
#[derive(Debug, Clone)]
pub struct Policy {
    tools: Rule,
    resources: Rule,
    prompts: Rule,
}

impl Policy {
    /// The policy of `config`. Errors: a pattern that is not a glob (configuration loading
    /// refuses those first, [`PolicyConfig::check`]).
    pub fn new(config: &PolicyConfig) -> Result<Self, globset::Error> {
        Ok(Self {
            tools: Rule::new(&config.allow_tools, &config.deny_tools)?,
            resources: Rule::new(&config.allow_resources, &config.deny_resources)?,
            prompts: Rule::new(&config.allow_prompts, &config.deny_prompts)?,
        })
    }

    /// A policy that allows nothing (what a route whose policy failed to build gets).
    pub fn deny_all() -> Self {
        let all = || Rule {
            allow: None,
            deny: GlobSetBuilder::new()
                .add(globset::Glob::new("*").expect("`*` is a glob"))
                .build()
                .ok(),
        };
        Self {
            tools: all(),
            resources: all(),
            prompts: all(),
        }
    }

    fn rule(&self, kind: Kind) -> &Rule {
        match kind {
            Kind::Tool => &self.tools,
            Kind::Resource => &self.resources,
            Kind::Prompt => &self.prompts,
        }
    }

    /// Whether a tool named `name` may be listed and called.
    pub fn allows_tool(&self, name: &str) -> bool {
        self.tools.allows(name)
    }

    /// Whether a resource at `uri` may be listed and read.
    pub fn allows_resource(&self, uri: &str) -> bool {
        self.resources.allows(uri)
    }

    /// Whether a prompt named `name` may be listed and got.
    pub fn allows_prompt(&self, name: &str) -> bool {
        self.prompts.allows(name)
    }

    /// The kind a client request of `method` uses, when its kind is restricted.
    fn use_of(&self, method: &str) -> Option<Kind> {
        let kind = match method {
            "tools/call" => Kind::Tool,
            "prompts/get" => Kind::Prompt,
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Kind::Resource,
            _ => return None,
        };
        self.rule(kind).restricts().then_some(kind)
    }

    /// The kind the answer to a request of `method` lists, the array it is in and the field
    /// that names each entry, when its kind is restricted.
    fn list_of(&self, method: &str) -> Option<(Kind, &'static str, &'static str)> {
        let listed = match method {
            "tools/list" => (Kind::Tool, "tools", "name"),
            "resources/list" => (Kind::Resource, "resources", "uri"),
            "resources/templates/list" => (Kind::Resource, "resourceTemplates", "uriTemplate"),
            "prompts/list" => (Kind::Prompt, "prompts", "name"),
            _ => return None,
        };
        self.rule(listed.0).restricts().then_some(listed)
    }
}

impl Interceptor for Policy {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn wants_client(&self, method: &str) -> bool {
        self.use_of(method).is_some()
    }

    fn on_client(&self, message: &mut ClientMessage<'_>) -> Verdict {
        let (Some(kind), Some(name)) = (self.use_of(message.method), message.name) else {
            return Verdict::Pass;
        };
        if self.rule(kind).allows(name) {
            return Verdict::Pass;
        }
        let shown: String = name.chars().take(MAX_ECHOED_NAME).collect();
        let text = match kind {
            Kind::Tool => format!("Unknown tool: {shown}"),
            Kind::Prompt => format!("Unknown prompt: {shown}"),
            Kind::Resource => format!("Resource not found: {shown}"),
        };
        Verdict::Answer(Answer::error(INVALID_PARAMS, text))
    }

    fn wants_server(&self, request_method: Option<&str>) -> bool {
        request_method.is_some_and(|m| self.list_of(m).is_some())
    }

    fn on_server(&self, message: &mut ServerMessage<'_>) -> Verdict {
        let Some((kind, array, field)) = message.answers.and_then(|m| self.list_of(m)) else {
            return Verdict::Pass;
        };
        let rule = self.rule(kind);
        let allowed = |entry: &serde_json::Value| {
            // An entry without a string name cannot be judged by name: it is left out.
            entry
                .get(field)
                .and_then(serde_json::Value::as_str)
                .is_some_and(|name| rule.allows(name))
        };
        let Some(entries) = message
            .message
            .json()
            .and_then(|v| v.get("result")?.get(array)?.as_array())
        else {
            return Verdict::Pass;
        };
        if entries.iter().all(allowed) {
            return Verdict::Pass;
        }
        if let Some(entries) = message
            .message
            .json_mut()
            .and_then(|v| v.get_mut("result")?.get_mut(array)?.as_array_mut())
        {
            entries.retain(allowed);
        }
        Verdict::Changed
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::value::RawValue;

    use super::super::{Chain, ClientOutcome, ClientRequest, Exchange, ServerOutcome};
    use super::*;
    use crate::protocol::era::Era;

    fn chain(config: PolicyConfig) -> std::sync::Arc<Chain> {
        Chain::new(
            "r".into(),
            vec![std::sync::Arc::new(Policy::new(&config).unwrap())],
        )
        .unwrap()
    }

    fn policy() -> PolicyConfig {
        PolicyConfig {
            allow_tools: vec!["search_*".into(), "read_file".into(), "delete_*".into()],
            deny_tools: vec!["delete_*".into()],
            ..Default::default()
        }
    }

    #[test]
    fn deny_wins_and_an_allow_list_restricts_to_its_names() {
        let p = Policy::new(&policy()).unwrap();
        assert!(p.allows_tool("search_web") && p.allows_tool("read_file"));
        assert!(!p.allows_tool("delete_everything"), "deny wins");
        assert!(!p.allows_tool("write_file"), "not in the allow list");
        assert!(p.allows_resource("file:///any") && p.allows_prompt("any"));
    }

    #[test]
    fn a_denied_call_is_answered_with_invalid_params_and_an_allowed_one_forwarded() {
        let chain = chain(policy());
        let id = RawValue::from_string("7".into()).unwrap();
        let raw = Bytes::from_static(b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\"}");
        let call = |era, name| ClientRequest {
            era,
            method: "tools/call",
            name: Some(name),
            id: Some(&*id),
            client: None,
            context: None,
        };
        match chain.on_client(call(Era::Legacy, "delete_all"), raw.clone()) {
            ClientOutcome::Answer(a) => {
                assert_eq!((a.status.as_u16(), a.code()), (200, Some(-32602)));
                assert_eq!(
                    &a.body(None)[..],
                    br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32602,"message":"Unknown tool: delete_all"}}"#
                );
            }
            other => panic!("{other:?}"),
        }
        match chain.on_client(call(Era::Modern, "read_file"), raw.clone()) {
            ClientOutcome::Forward(bytes) => assert_eq!(bytes, raw, "byte for byte"),
            other => panic!("{other:?}"),
        }
        assert!(!chain.wants_client("tools/list") && !chain.wants_client("prompts/get"));
        let (name, decisions) = chain.decisions().next().unwrap();
        assert_eq!(name, "policy");
        assert_eq!(
            decisions.counts(),
            [("pass", 1), ("change", 0), ("answer", 1), ("drop", 0)]
        );
    }

    #[test]
    fn a_list_answer_loses_the_entries_not_allowed_and_keeps_its_cursor_and_order() {
        let chain = chain(policy());
        let id = RawValue::from_string("3".into()).unwrap();
        let exchange = Exchange::new(Era::Legacy, None, [(&*id, "tools/list", Bytes::new())]);
        let raw = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"search_web","inputSchema":{}},{"name":"delete_all"},{"name":"read_file"},{"nameless":1}],"nextCursor":"c2"}}"#,
        );
        match chain.on_server(&exchange, raw) {
            ServerOutcome::Changed(bytes) => assert_eq!(
                &bytes[..],
                br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"search_web","inputSchema":{}},{"name":"read_file"}],"nextCursor":"c2"}}"#
            ),
            other => panic!("{other:?}"),
        }
        // All allowed: untouched. Another id (a server request on the stream): untouched.
        let ok = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"read_file"}]}}"#,
        );
        assert!(matches!(
            chain.on_server(&exchange, ok),
            ServerOutcome::Unchanged
        ));
        let other = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"delete_all"}]}}"#,
        );
        assert!(matches!(
            chain.on_server(&exchange, other),
            ServerOutcome::Unchanged
        ));
        // Keys spelled with escapes are the same keys: filtered all the same.
        let escaped = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":3,"\u0072esult":{"tool\u0073":[{"name":"delete_all"},{"name":"read_file"}]}}"#,
        );
        match chain.on_server(&exchange, escaped) {
            ServerOutcome::Changed(bytes) => assert_eq!(
                &bytes[..],
                br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"read_file"}]}}"#
            ),
            other => panic!("{other:?}"),
        }
        assert!(!chain.wants_server(Some("prompts/list")) && !chain.wants_server(None));
    }
}
