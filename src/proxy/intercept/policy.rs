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
//! Modern-era requests are judged by the same fields of the body (the admit phase checked
//! mirrored `Mcp-Method`/`Mcp-Name` headers against it when present).

use globset::{GlobSet, GlobSetBuilder};

use super::{Answer, ClientMessage, Interceptor, ServerMessage, Verdict};
use crate::config::{PolicyConfig, policy::glob};

/// JSON-RPC Invalid params: what a server answers for an unknown tool, prompt or resource.
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC Internal error: a list answer the policy could not read.
pub const INTERNAL_ERROR: i64 = -32603;

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
        let Some(kind) = self.use_of(message.request.method) else {
            return Verdict::Pass;
        };
        // Judged by the field the server acts on, read from the message itself: a resource by
        // `params.uri`, a tool or prompt by `params.name` (never a decoy of the other kind).
        let field = match kind {
            Kind::Resource => "uri",
            Kind::Tool | Kind::Prompt => "name",
        };
        let name = message
            .message
            .json()
            .and_then(|v| v.get("params")?.get(field)?.as_str())
            .map(str::to_owned);
        let Some(name) = name else {
            // Nothing to judge a restricted kind by: refused, not passed unjudged.
            return Verdict::Answer(Answer::error(
                INVALID_PARAMS,
                format!("Invalid params: `{field}` must be a string"),
            ));
        };
        if self.rule(kind).allows(&name) {
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
        if message.unreadable {
            // What may be the list cannot be read here, nor filtered: the client gets an
            // error instead of an unchecked list.
            return Verdict::Answer(Answer::error(
                INTERNAL_ERROR,
                "upstream answer could not be checked against the route's policy",
            ));
        }
        let rule = self.rule(kind);
        let allowed = |entry: &serde_json::Value| {
            // An entry without a string name cannot be judged by name: it is left out.
            entry
                .get(field)
                .and_then(serde_json::Value::as_str)
                .is_some_and(|name| rule.allows(name))
        };
        message.message.retain_listed(array, allowed)
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
        let denied = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete_all"}}"#,
        );
        let raw = Bytes::from_static(
            br#"{ "jsonrpc":"2.0", "id":7, "method":"tools/call", "params":{"name":"read_file"} }"#,
        );
        let call = |era, name| ClientRequest {
            era,
            method: "tools/call",
            name: Some(name),
            id: Some(&*id),
            client: None,
            context: None,
        };
        match chain.on_client(call(Era::Legacy, "delete_all"), denied) {
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

    /// Review finding: `resources/read` was judged by a decoy `params.name` (or by nothing
    /// when `name` was not a string) instead of its `uri`.
    #[test]
    fn a_resource_is_judged_by_its_uri_and_a_use_without_a_name_is_refused() {
        let chain = chain(PolicyConfig {
            allow_resources: vec!["file:///public/*".into()],
            ..policy()
        });
        let id = RawValue::from_string("1".into()).unwrap();
        let ask = |method, name: Option<&str>, body: &'static [u8]| {
            chain.on_client(
                ClientRequest {
                    era: Era::Legacy,
                    method,
                    name,
                    id: Some(&*id),
                    client: None,
                    context: None,
                },
                Bytes::from_static(body),
            )
        };
        for (name, body) in [
            (None, &br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/shadow","name":0}}"#[..]),
            (Some("file:///public/x"), br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/shadow","name":"file:///public/x"}}"#),
            (None, br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{}}"#),
        ] {
            assert!(
                matches!(ask("resources/read", name, body), ClientOutcome::Answer(_)),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let ok = br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///public/a","name":"x"}}"#;
        assert!(matches!(
            ask("resources/read", Some("x"), ok),
            ClientOutcome::Forward(_)
        ));
        // A tool call whose name is not a string is refused, not passed.
        let odd =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_all"]}}"#;
        assert!(matches!(
            ask("tools/call", None, odd),
            ClientOutcome::Answer(_)
        ));
    }

    /// Review finding: a response whose id the server spelled otherwise (`-0` → `0`), or that
    /// is not JSON at all, passed unfiltered.
    #[test]
    fn a_list_answer_is_filtered_whatever_its_id_spelling_and_an_unreadable_one_is_refused() {
        let chain = chain(policy());
        let id = RawValue::from_string("-0".into()).unwrap();
        let exchange = Exchange::new(Era::Legacy, None, [(&*id, "tools/list", Bytes::new())]);
        let respelled = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":0,"result":{"tools":[{"name":"delete_all"},{"name":"read_file"}]}}"#,
        );
        assert!(matches!(
            chain.on_server(&exchange, respelled),
            ServerOutcome::Changed(_)
        ));
        match chain.on_server(
            &exchange,
            Bytes::from_static(b"\xEF\xBB\xBF{\"result\":{}}"),
        ) {
            ServerOutcome::Changed(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(v["id"], serde_json::json!(-0.0));
                assert_eq!(v["error"]["code"], -32603, "{v}");
            }
            other => panic!("{other:?}"),
        }
        // A batch: ids compared as numbers.
        let (a, b) = (
            RawValue::from_string("1.0".into()).unwrap(),
            RawValue::from_string("2".into()).unwrap(),
        );
        let batch = Exchange::new(
            Era::Legacy,
            None,
            [
                (&*a, "tools/list", Bytes::new()),
                (&*b, "ping", Bytes::new()),
            ],
        );
        let one = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_all"}]}}"#,
        );
        assert!(matches!(
            chain.on_server(&batch, one),
            ServerOutcome::Changed(_)
        ));
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
        // All allowed: untouched. A server request on the stream: untouched. With one request,
        // any response is its answer (a server may spell the id otherwise): filtered.
        let ok = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"read_file"}]}}"#,
        );
        assert!(matches!(
            chain.on_server(&exchange, ok),
            ServerOutcome::Unchanged
        ));
        let request = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":4,"method":"sampling/createMessage","params":{"tools":[{"name":"delete_all"}]}}"#,
        );
        assert!(matches!(
            chain.on_server(&exchange, request),
            ServerOutcome::Unchanged
        ));
        let other = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"delete_all"}]}}"#,
        );
        assert!(matches!(
            chain.on_server(&exchange, other),
            ServerOutcome::Changed(_)
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
