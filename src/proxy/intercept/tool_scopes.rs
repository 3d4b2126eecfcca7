//! `tools/list` as the token may use it (resource-server mode with `tool_scopes`, issue 14):
//! a tool whose scopes (`[routes.auth] tool_scopes`) the request's token lacks is left out of
//! the answer, as its `tools/call` would be refused `403` ([`crate::proxy::auth`]).
//!
//! The token's scopes are those the authenticate step just accepted: looked up in the route's
//! accepted-token cache by the exchange's `Authorization`. Should they not be found (evicted
//! meanwhile, or a route whose audience is not fixed), every tool with scopes of its own is
//! left out: fail closed. An answer that cannot be read is replaced by an error, as the
//! policy does.

use std::sync::Arc;

use super::{Answer, ClientMessage, Interceptor, ServerMessage, Verdict, policy::INTERNAL_ERROR};
use crate::proxy::auth::ResourceServer;

/// The interceptor: the route's resource server (its settings and accepted tokens).
#[derive(Debug)]
pub struct ToolScopes {
    auth: Arc<ResourceServer>,
}

impl ToolScopes {
    /// The filter of a resource-server route with per-tool scopes; `None` without any.
    pub fn new(auth: Option<&Arc<ResourceServer>>) -> Option<Self> {
        let auth = auth?;
        (!auth.config().tool_scopes.is_empty()).then(|| Self { auth: auth.clone() })
    }
}

impl Interceptor for ToolScopes {
    fn name(&self) -> &'static str {
        "tool_scopes"
    }

    fn wants_client(&self, _method: &str) -> bool {
        false
    }

    fn on_client(&self, _message: &mut ClientMessage<'_>) -> Verdict {
        Verdict::Pass
    }

    fn wants_server(&self, request_method: Option<&str>) -> bool {
        request_method == Some("tools/list")
    }

    fn on_server(&self, message: &mut ServerMessage<'_>) -> Verdict {
        if message.answers != Some("tools/list") {
            return Verdict::Pass;
        }
        if message.unreadable {
            return Verdict::Answer(Answer::error(
                INTERNAL_ERROR,
                "upstream answer could not be checked against the token's scopes",
            ));
        }
        let principal = self.auth.accepted(message.context);
        let scopes = &self.auth.config().tool_scopes;
        let callable = |tool: &serde_json::Value| {
            let Some(name) = tool.get("name").and_then(serde_json::Value::as_str) else {
                // A tool without a name cannot be judged: left out.
                return false;
            };
            match scopes.get(name) {
                None => true,
                Some(needed) => principal
                    .as_ref()
                    .is_some_and(|p| needed.iter().all(|s| p.scopes.contains(s))),
            }
        };
        message.message.retain_listed("tools", callable)
    }
}
