//! The interceptor chain (DESIGN.md "Interceptors"): an ordered list per route of
//! [`Interceptor`]s over the JSON-RPC messages of both directions — client requests and
//! notifications (the intercept phase, between resolve and forward), server responses,
//! notifications and requests (in JSON answers and on SSE streams, legacy and modern, before
//! the stream's tracker records them, so a replay sends what the client got the first time).
//!
//! Fidelity: a message no interceptor changes goes on as received, byte for byte; one that is
//! changed is re-serialized once, after the whole chain. Messages are parsed only when an
//! interceptor asks for them ([`Interceptor::wants_client`], [`Interceptor::wants_server`]):
//! a route with no interceptor has no chain at all, and one whose interceptors want nothing of
//! a message costs it nothing but the question.
//!
//! A decision other than [`Verdict::Pass`] is logged at debug with the route, the interceptor,
//! the method and the request id; every decision of an interceptor on a message it asked for
//! is counted (`mcp_relay_interceptor_decisions_total{route, interceptor, decision}`).
//!
//! Batches (2025-03-26 only): each message is seen alone. A batch in which an interceptor
//! answers a request is answered whole by the proxy — that request with its answer, every other
//! request with `-32600` ("batch refused") — and the upstream sees none of it: splitting a batch
//! and merging two answers would make the proxy a second server.

pub mod cache;
mod phase;
pub mod policy;
pub mod rate_limit;
pub mod tool_scopes;

use std::{
    borrow::Cow,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::{Value, value::RawValue};

use crate::{config::ProxyConfig, protocol::era::Era};

/// One JSON-RPC message as received, parsed only when an interceptor reads it, re-serialized
/// only when one changed it.
#[derive(Debug)]
pub struct Message {
    raw: Bytes,
    /// The parsed message; `None` until read, `Some(None)` when it is not JSON.
    value: Option<Option<Value>>,
    changed: bool,
}

impl Message {
    /// Keeps the entries of the answer's `result.<array>` that `keep` accepts: [`Verdict::Pass`]
    /// when it has no such array or keeps them all (nothing re-serialized), else
    /// [`Verdict::Changed`]. The list filters of the policy and of tool scopes.
    pub fn retain_listed(&mut self, array: &str, keep: impl Fn(&Value) -> bool) -> Verdict {
        let Some(entries) = self
            .json()
            .and_then(|v| v.get("result")?.get(array)?.as_array())
        else {
            return Verdict::Pass;
        };
        if entries.iter().all(&keep) {
            return Verdict::Pass;
        }
        if let Some(entries) = self
            .json_mut()
            .and_then(|v| v.get_mut("result")?.get_mut(array)?.as_array_mut())
        {
            entries.retain(keep);
        }
        Verdict::Changed
    }
    /// A message of `raw` bytes (one JSON value).
    pub fn new(raw: Bytes) -> Self {
        Self {
            raw,
            value: None,
            changed: false,
        }
    }

    /// The bytes as received.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The message, parsed at the first call; `None` if it is not JSON (such a message is
    /// forwarded untouched: judging it is the upstream's or the client's business).
    pub fn json(&mut self) -> Option<&Value> {
        self.value
            .get_or_insert_with(|| serde_json::from_slice(&self.raw).ok())
            .as_ref()
    }

    /// The message to change: marks it changed, so it is re-serialized after the chain.
    pub fn json_mut(&mut self) -> Option<&mut Value> {
        self.json()?;
        self.changed = true;
        self.value.as_mut()?.as_mut()
    }

    /// Whether an interceptor changed it.
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    /// The bytes as they stand: as received unless changed, else the changed message
    /// serialized (each call serializes anew).
    pub fn current_bytes(&self) -> Bytes {
        match (self.changed, &self.value) {
            (true, Some(Some(value))) => {
                serde_json::to_vec(value).map_or_else(|_| self.raw.clone(), Bytes::from)
            }
            _ => self.raw.clone(),
        }
    }

    /// The bytes to send on: as received unless changed, else the changed message serialized.
    pub fn into_bytes(self) -> Bytes {
        match (self.changed, self.value) {
            (true, Some(Some(value))) => serde_json::to_vec(&value).map_or(self.raw, Bytes::from),
            _ => self.raw,
        }
    }
}

/// A client message as an interceptor sees it: what the admit phase read of it (validated
/// against the mirrored `Mcp-Method`/`Mcp-Name` headers in the modern era when present), and
/// the message.
#[derive(Debug)]
pub struct ClientMessage<'a> {
    /// What the intercept phase knows of it besides its bytes.
    pub request: ClientRequest<'a>,
    /// The message itself.
    pub message: &'a mut Message,
}

/// What the intercept phase knows of a client message besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct ClientRequest<'a> {
    /// The request's protocol era.
    pub era: Era,
    /// `method`.
    pub method: &'a str,
    /// `params.name` (`tools/call`, `prompts/get`) or `params.uri` (`resources/read`,
    /// `resources/subscribe`), when a string.
    pub name: Option<&'a str>,
    /// The request's id (raw JSON); `None` for a notification.
    pub id: Option<&'a RawValue>,
    /// The client's address as the proxy trusts it
    /// ([`crate::proxy::forwarded::ForwardedPolicy::client_ip`]).
    pub client: Option<std::net::IpAddr>,
    /// The request's authorization context: its `Authorization` header, if any (what private
    /// cached results are kept under).
    pub context: Option<&'a HeaderValue>,
}

/// A server message as an interceptor sees it.
#[derive(Debug)]
pub struct ServerMessage<'a> {
    /// The exchange's protocol era.
    pub era: Era,
    /// When the message is the response to a request of the exchange (a `result` or `error`
    /// with its id): that request's method. `None` for notifications, server requests, and
    /// responses to nothing the client asked in this exchange.
    pub answers: Option<&'a str>,
    /// The client request it answers (its bytes as forwarded), when known.
    pub request: Option<&'a Bytes>,
    /// The exchange's authorization context (the requests' `Authorization` header).
    pub context: Option<&'a HeaderValue>,
    /// The message is not JSON, and may be the answer to `answers` (an exchange of one
    /// request): nothing in it could be checked.
    pub unreadable: bool,
    /// The route cache's generation when the exchange began.
    pub generation: u64,
    /// The message itself.
    pub message: &'a mut Message,
}

/// What an interceptor decided about one message.
#[derive(Debug)]
pub enum Verdict {
    /// Looked, changed nothing.
    Pass,
    /// Changed the message (through [`Message::json_mut`]).
    Changed,
    /// Answers a client request itself: the upstream never sees it. (On a notification or a
    /// server message it is taken as [`Verdict::Drop`].)
    Answer(Answer),
    /// Drops a notification (either way). (On a request it is taken as [`Verdict::Pass`]: a
    /// request always gets an answer.)
    Drop,
}

/// The proxy's answer to a client request, with the request's id: a JSON-RPC error, or a
/// result (a cached one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status: `200` for an error a server itself would give (the client reads the
    /// JSON-RPC error) and for results; `429` for a limit.
    pub status: StatusCode,
    /// What the response carries.
    pub body: AnswerBody,
    /// `Retry-After` (whole seconds, rounded up), when the client may try again later.
    pub retry_after: Option<Duration>,
}

/// The payload of an [`Answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerBody {
    /// A JSON-RPC error object.
    Error {
        /// JSON-RPC error code.
        code: i64,
        /// JSON-RPC error message.
        message: Cow<'static, str>,
    },
    /// A JSON-RPC result: the raw JSON of the `result` member, sent byte for byte.
    Result(Bytes),
}

impl Answer {
    /// An error a server would give itself: HTTP `200`, the JSON-RPC error `code`/`message`.
    pub fn error(code: i64, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: StatusCode::OK,
            body: AnswerBody::Error {
                code,
                message: message.into(),
            },
            retry_after: None,
        }
    }

    /// A result: HTTP `200`, `result` (raw JSON) as it is.
    pub fn result(result: Bytes) -> Self {
        Self {
            status: StatusCode::OK,
            body: AnswerBody::Result(result),
            retry_after: None,
        }
    }

    /// The JSON-RPC error code, for an error.
    pub fn code(&self) -> Option<i64> {
        match &self.body {
            AnswerBody::Error { code, .. } => Some(*code),
            AnswerBody::Result(_) => None,
        }
    }

    /// The JSON-RPC response body for the request with `id` (`null` when none).
    pub fn body(&self, id: Option<&RawValue>) -> Bytes {
        #[derive(serde::Serialize)]
        struct Error<'a> {
            code: i64,
            message: &'a str,
        }
        let id = id.map_or("null", RawValue::get);
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
        out.extend_from_slice(id.as_bytes());
        match &self.body {
            AnswerBody::Error { code, message } => {
                out.extend_from_slice(b",\"error\":");
                let error = Error {
                    code: *code,
                    message,
                };
                if serde_json::to_writer(&mut out, &error).is_err() {
                    return Bytes::new();
                }
            }
            AnswerBody::Result(result) => {
                out.extend_from_slice(b",\"result\":");
                out.extend_from_slice(result);
            }
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

/// One step of the chain. Implementations must be cheap when they want nothing of a message:
/// `wants_*` are asked of every message before any parsing.
pub trait Interceptor: Send + Sync + fmt::Debug {
    /// Its name in logs and metrics (`policy`, …).
    fn name(&self) -> &'static str;

    /// Whether it looks at client messages of `method`.
    fn wants_client(&self, method: &str) -> bool;

    /// Decides on a client message it wanted.
    fn on_client(&self, message: &mut ClientMessage<'_>) -> Verdict;

    /// Whether it looks at the server messages of an exchange with a client request of
    /// `request_method` (`None`: an exchange with no request, a standalone `GET` stream).
    fn wants_server(&self, request_method: Option<&str>) -> bool;

    /// Decides on a server message of an exchange it wanted. [`Verdict::Answer`] replaces a
    /// response of the exchange with that error (same id); on any other message it drops it.
    fn on_server(&self, message: &mut ServerMessage<'_>) -> Verdict;

    /// Whether it looks at the response to a request of `request_method` when that comes as
    /// a JSON body (read whole for it, not streamed). Default: [`Interceptor::wants_server`].
    fn wants_response(&self, request_method: &str) -> bool {
        self.wants_server(Some(request_method))
    }

    /// Per-client state entries it holds now (rate-limit buckets); 0 for a stateless one.
    fn buckets(&self) -> usize {
        0
    }
}

/// How many times an interceptor decided each way (monotonic over the chain's life: a reload
/// builds new chains).
#[derive(Debug, Default)]
pub struct Decisions {
    /// Messages it looked at and let pass unchanged.
    pub passed: AtomicU64,
    /// Messages it changed.
    pub changed: AtomicU64,
    /// Client requests it answered itself.
    pub answered: AtomicU64,
    /// Notifications it dropped.
    pub dropped: AtomicU64,
}

impl Decisions {
    /// `(decision label, count)` of each kind.
    pub fn counts(&self) -> [(&'static str, u64); 4] {
        [
            ("pass", self.passed.load(Ordering::Relaxed)),
            ("change", self.changed.load(Ordering::Relaxed)),
            ("answer", self.answered.load(Ordering::Relaxed)),
            ("drop", self.dropped.load(Ordering::Relaxed)),
        ]
    }
}

#[derive(Debug)]
struct Link {
    interceptor: Arc<dyn Interceptor>,
    decisions: Decisions,
}

/// What the chain made of a client message.
#[derive(Debug)]
pub enum ClientOutcome {
    /// Send it on: these bytes (the received ones unless changed).
    Forward(Bytes),
    /// Answer the request with this (the upstream never sees it).
    Answer(Answer),
    /// A notification dropped: the client gets `202`, the upstream nothing.
    Drop,
}

/// What the chain made of a server message.
#[derive(Debug)]
pub enum ServerOutcome {
    /// Send it on unchanged.
    Unchanged,
    /// Send on these bytes instead.
    Changed(Bytes),
    /// Drop it.
    Drop,
}

/// The interceptors of one route, in order.
#[derive(Debug)]
pub struct Chain {
    route: Arc<str>,
    links: Vec<Link>,
    /// Its result cache, when it has one (also among `links`).
    cache: Option<Arc<cache::Cache>>,
}

impl Chain {
    /// The chain `config` asks of route `route`, in order: the rate limits when
    /// `rate_limit` limits anything, the tool policy when `policy` restricts anything, the
    /// result cache when `cache.enabled` (last: a denied request is never served from it, and
    /// it keeps what the client got, a filtered list). `None` when it has no interceptor.
    pub fn for_route(
        route: Arc<str>,
        config: &ProxyConfig,
        auth: Option<&Arc<crate::proxy::auth::ResourceServer>>,
    ) -> Option<Arc<Self>> {
        let mut interceptors: Vec<Arc<dyn Interceptor>> = Vec::new();
        if !config.rate_limit.is_empty() {
            match rate_limit::RateLimit::new(&config.rate_limit) {
                Ok(limit) => interceptors.push(Arc::new(limit)),
                // Checked at load like the policy; a `Config` built by code that skipped it
                // gets the limits without the per-tool ones.
                Err(err) => {
                    tracing::error!(route = %route, error = %err, "invalid per-tool rate limit; left out");
                    let mut limits = config.rate_limit.clone();
                    limits.tools.clear();
                    if let Ok(limit) = rate_limit::RateLimit::new(&limits) {
                        interceptors.push(Arc::new(limit));
                    }
                }
            }
        }
        if !config.policy.is_empty() {
            match policy::Policy::new(&config.policy) {
                Ok(p) => interceptors.push(Arc::new(p)),
                // Configuration loading checks every pattern first; a `Config` built by code
                // that skipped it gets no half policy: everything is denied.
                Err(err) => {
                    tracing::error!(route = %route, error = %err, "invalid policy; denying every tool, resource and prompt");
                    interceptors.push(Arc::new(policy::Policy::deny_all()));
                }
            }
        }
        if let Some(scopes) = tool_scopes::ToolScopes::new(auth) {
            interceptors.push(Arc::new(scopes));
        }
        let cache = config
            .cache
            .enabled
            .then(|| Arc::new(cache::Cache::new(&config.cache)));
        if let Some(cache) = &cache {
            interceptors.push(cache.clone());
        }
        Self::build(route, interceptors, cache)
    }

    /// A chain of `interceptors` for route `route`; `None` when there are none.
    pub fn new(route: Arc<str>, interceptors: Vec<Arc<dyn Interceptor>>) -> Option<Arc<Self>> {
        Self::build(route, interceptors, None)
    }

    /// A chain of the result cache `cache` alone.
    pub fn with_cache(route: Arc<str>, cache: Arc<cache::Cache>) -> Arc<Self> {
        let interceptors: Vec<Arc<dyn Interceptor>> = vec![cache.clone()];
        Self::build(route, interceptors, Some(cache)).expect("one interceptor")
    }

    fn build(
        route: Arc<str>,
        interceptors: Vec<Arc<dyn Interceptor>>,
        cache: Option<Arc<cache::Cache>>,
    ) -> Option<Arc<Self>> {
        if interceptors.is_empty() {
            return None;
        }
        let links = interceptors
            .into_iter()
            .map(|interceptor| Link {
                interceptor,
                decisions: Decisions::default(),
            })
            .collect();
        Some(Arc::new(Self {
            route,
            links,
            cache,
        }))
    }

    /// Its result cache, when it has one.
    pub fn cache(&self) -> Option<&Arc<cache::Cache>> {
        self.cache.as_ref()
    }

    /// Each interceptor's name and decisions, in order.
    pub fn decisions(&self) -> impl Iterator<Item = (&'static str, &Decisions)> {
        self.links
            .iter()
            .map(|l| (l.interceptor.name(), &l.decisions))
    }

    /// Per-client state entries its interceptors hold now ([`Interceptor::buckets`]).
    pub fn buckets(&self) -> usize {
        self.links.iter().map(|l| l.interceptor.buckets()).sum()
    }

    /// The interceptor named `name`, if the chain has one.
    pub fn interceptor(&self, name: &str) -> Option<&dyn Interceptor> {
        self.links
            .iter()
            .find(|l| l.interceptor.name() == name)
            .map(|l| &*l.interceptor)
    }

    /// Whether any interceptor wants client messages of `method`.
    pub fn wants_client(&self, method: &str) -> bool {
        self.links
            .iter()
            .any(|l| l.interceptor.wants_client(method))
    }

    /// Runs a client message (`request`, bytes `raw`) through the chain. The first answer (or
    /// drop) ends it: later interceptors do not see the message.
    pub fn on_client(&self, request: ClientRequest<'_>, raw: Bytes) -> ClientOutcome {
        let ClientRequest { method, id, .. } = request;
        let mut message = Message::new(raw);
        for link in &self.links {
            if !link.interceptor.wants_client(method) {
                continue;
            }
            let verdict = link.interceptor.on_client(&mut ClientMessage {
                request,
                message: &mut message,
            });
            let verdict = match verdict {
                Verdict::Answer(_) | Verdict::Drop if id.is_none() => Verdict::Drop,
                Verdict::Drop => Verdict::Pass,
                v => v,
            };
            self.count(link, &verdict, "client", method, id);
            match verdict {
                Verdict::Answer(answer) => return ClientOutcome::Answer(answer),
                Verdict::Drop => return ClientOutcome::Drop,
                Verdict::Pass | Verdict::Changed => {}
            }
        }
        ClientOutcome::Forward(message.into_bytes())
    }

    /// Whether any interceptor wants the server messages of an exchange with a client request
    /// of `request_method` (`None`: an exchange with no request).
    pub fn wants_server(&self, request_method: Option<&str>) -> bool {
        self.links
            .iter()
            .any(|l| l.interceptor.wants_server(request_method))
    }

    /// Runs a server message (bytes `raw`) of `exchange` through the chain.
    pub fn on_server(&self, exchange: &Exchange, raw: Bytes) -> ServerOutcome {
        let mut message = Message::new(raw);
        let answered = exchange.answered_by(&mut message);
        let answers = answered.map(|a| a.method);
        let answered_id = answered.and_then(|a| a.id);
        for link in &self.links {
            let wanted = match answers {
                Some(method) => link.interceptor.wants_server(Some(method)),
                None => exchange.methods().any(|m| link.interceptor.wants_server(m)),
            };
            if !wanted {
                continue;
            }
            let verdict = link.interceptor.on_server(&mut ServerMessage {
                era: exchange.era,
                answers,
                request: answered.and_then(|a| a.request),
                context: exchange.context.as_ref(),
                unreadable: answered.is_some_and(|a| a.unreadable),
                generation: exchange.generation,
                message: &mut message,
            });
            self.count(
                link,
                &verdict,
                "server",
                answers.unwrap_or("-"),
                answered_id,
            );
            match verdict {
                // A response replaced by the interceptor's error, with the request's id.
                Verdict::Answer(answer) if answers.is_some() => {
                    return ServerOutcome::Changed(answer.body(answered_id));
                }
                Verdict::Answer(_) | Verdict::Drop => return ServerOutcome::Drop,
                Verdict::Pass | Verdict::Changed => {}
            }
        }
        if message.is_changed() {
            ServerOutcome::Changed(message.into_bytes())
        } else {
            ServerOutcome::Unchanged
        }
    }

    fn count(
        &self,
        link: &Link,
        verdict: &Verdict,
        direction: &'static str,
        method: &str,
        id: Option<&RawValue>,
    ) {
        let (counter, decision) = match verdict {
            Verdict::Pass => {
                link.decisions.passed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Verdict::Changed => (&link.decisions.changed, "change"),
            Verdict::Answer(_) => (&link.decisions.answered, "answer"),
            Verdict::Drop => (&link.decisions.dropped, "drop"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            route = %self.route,
            interceptor = link.interceptor.name(),
            direction,
            method,
            request_id = id.map(RawValue::get),
            decision,
            "interceptor decision",
        );
    }
}

/// The exchange a server message belongs to: the client requests whose answer (a JSON body or
/// an SSE stream) carries it.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Its era.
    pub era: Era,
    /// Each client request's id (raw JSON, and parsed to compare), method and bytes (as
    /// forwarded): one for a request, several for a batch, none for a `GET` stream.
    requests: Vec<(Box<RawValue>, Value, String, Bytes)>,
    /// The requests' `Authorization` header.
    context: Option<HeaderValue>,
    /// The route cache's generation when the exchange began.
    generation: u64,
    /// The requests are not known (a stream re-opened upstream for a resuming client): a
    /// response is taken for the answer to the list method its result's shape names.
    resumed: bool,
}

/// The list methods, by the array their result carries: how a response of a
/// [`Exchange::resumed`] exchange is recognized.
const LISTS: [(&str, &str); 4] = [
    ("tools", "tools/list"),
    ("resources", "resources/list"),
    ("resourceTemplates", "resources/templates/list"),
    ("prompts", "prompts/list"),
];

impl Exchange {
    /// The exchange of `requests` (`(id, method, bytes)`; notifications left out by the
    /// caller) in authorization context `context`.
    pub fn new<'a>(
        era: Era,
        context: Option<HeaderValue>,
        requests: impl IntoIterator<Item = (&'a RawValue, &'a str, Bytes)>,
    ) -> Self {
        let requests = requests
            .into_iter()
            .filter_map(|(id, method, raw)| {
                let parsed = serde_json::from_str::<Value>(id.get()).ok()?;
                Some((id.to_owned(), parsed, method.to_owned(), raw))
            })
            .collect();
        Self {
            era,
            requests,
            context,
            generation: 0,
            resumed: false,
        }
    }

    /// The exchange of a stream whose requests are not known: one a resuming client re-opened
    /// upstream. A response there is taken for the answer to the list method whose array its
    /// `result` carries (`tools` → `tools/list`, …), so what a list would filter is filtered
    /// there too.
    pub fn resumed(era: Era) -> Self {
        Self {
            era,
            requests: Vec::new(),
            context: None,
            generation: 0,
            resumed: true,
        }
    }

    /// Its requests' methods (`None` once when it has none; every list method when resumed).
    fn methods(&self) -> impl Iterator<Item = Option<&str>> {
        let none = (self.requests.is_empty() && !self.resumed).then_some(None);
        let lists = LISTS
            .iter()
            .filter(|_| self.resumed)
            .map(|(_, method)| Some(*method));
        self.requests
            .iter()
            .map(|(_, _, m, _)| Some(m.as_str()))
            .chain(none)
            .chain(lists)
    }

    /// The request `message` answers (its id and bytes, when known, and method), when it is a
    /// response, and whether it could not be read (`Answered::unreadable`).
    ///
    /// With one request, any response is its answer, whatever id it carries (a server may
    /// spell an id otherwise: `-0` → `0`), and a message that is not JSON may be it. With
    /// several (a batch), ids are compared as JSON values, numbers by value.
    fn answered_by(&self, message: &mut Message) -> Option<Answered<'_>> {
        if self.requests.is_empty() && !self.resumed {
            return None;
        }
        // Most messages of a stream are notifications: only one that names a result or an
        // error (or has an escape, which could spell either) can be a response, and only that
        // is parsed here.
        let raw = message.raw();
        if !may_contain(raw, b"\"result\"") && !may_contain(raw, b"\"error\"") {
            return None;
        }
        let Some(v) = message.json() else {
            // Unreadable: with one request it may be its answer, which nobody could check.
            return match self.requests.as_slice() {
                [(id, _, method, raw)] => Some(Answered {
                    id: Some(id),
                    method,
                    request: Some(raw),
                    unreadable: true,
                }),
                _ => None,
            };
        };
        let result = v.get("result");
        if result.is_none() && v.get("error").is_none() {
            return None;
        }
        if self.resumed {
            let result = result?;
            return LISTS
                .iter()
                .find(|(array, _)| result.get(*array).is_some_and(Value::is_array))
                .map(|(_, method)| Answered {
                    id: None,
                    method,
                    request: None,
                    unreadable: false,
                });
        }
        let found = match self.requests.as_slice() {
            [only] => Some(only),
            requests => {
                let id = v.get("id")?;
                requests
                    .iter()
                    .find(|(_, parsed, _, _)| same_id(parsed, id))
            }
        };
        found.map(|(id, _, method, raw)| Answered {
            id: Some(id),
            method,
            request: Some(raw),
            unreadable: false,
        })
    }

    /// The cache generation when the exchange began (see [`Exchange::with_generation`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The exchange, begun at cache generation `generation` (a result whose exchange began
    /// before a change notification is not kept).
    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }
}

/// What [`Exchange::answered_by`] found.
#[derive(Debug, Clone, Copy)]
struct Answered<'a> {
    id: Option<&'a RawValue>,
    method: &'a str,
    request: Option<&'a Bytes>,
    unreadable: bool,
}

/// Whether two JSON-RPC ids are the same: numbers by value (`1.0` is `1`, `-0` is `0`),
/// anything else exactly.
fn same_id(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
        _ => a == b,
    }
}

/// The server side of the chain for one answer: the chain and the exchange.
#[derive(Debug, Clone)]
pub struct ServerFilter {
    /// The route's chain.
    pub chain: Arc<Chain>,
    /// The exchange.
    pub exchange: Exchange,
}

impl ServerFilter {
    /// A filter for `exchange` when `chain` wants its server messages.
    pub fn new(chain: Option<&Arc<Chain>>, exchange: Exchange) -> Option<Self> {
        let chain = chain?;
        if !exchange.methods().any(|m| chain.wants_server(m)) {
            return None;
        }
        Some(Self {
            chain: chain.clone(),
            exchange,
        })
    }

    /// Whether the answer, when it is a JSON body, must be read whole and run through the
    /// chain: an interceptor wants the response of one of the exchange's requests.
    pub fn wants_body(&self) -> bool {
        self.exchange.methods().flatten().any(|m| {
            self.chain
                .links
                .iter()
                .any(|l| l.interceptor.wants_response(m))
        })
    }

    /// Runs the event blocks of one upstream read through the chain, in place: a block whose
    /// message was changed is rewritten ([`crate::sse::SseBlock::with_data`]), one whose
    /// message was dropped is removed. Blocks without data, and data that is not JSON, pass.
    pub fn blocks(&self, blocks: &mut std::collections::VecDeque<crate::sse::SseBlock>) {
        blocks.retain_mut(|block| {
            // An empty `data` (a priming event) carries no message.
            if !block.has_data() || block.data().is_empty() {
                return true;
            }
            let data = Bytes::copy_from_slice(&block.data());
            match self.chain.on_server(&self.exchange, data) {
                ServerOutcome::Unchanged => true,
                ServerOutcome::Changed(data) => {
                    *block = block.with_data(&data);
                    true
                }
                ServerOutcome::Drop => false,
            }
        });
    }

    /// Runs a whole JSON answer (one message, or a batch's array of them) through the chain:
    /// its bytes to send on.
    pub fn body(&self, body: Bytes) -> Bytes {
        let trimmed = body.trim_ascii_start();
        if trimmed.first() == Some(&b'[') {
            let Ok(items) = serde_json::from_slice::<Vec<Box<RawValue>>>(&body) else {
                return body;
            };
            let mut changed = false;
            let mut out: Vec<Bytes> = Vec::with_capacity(items.len());
            for item in items {
                let raw = Bytes::copy_from_slice(item.get().as_bytes());
                match self.chain.on_server(&self.exchange, raw.clone()) {
                    ServerOutcome::Unchanged => out.push(raw),
                    ServerOutcome::Changed(bytes) => {
                        changed = true;
                        out.push(bytes);
                    }
                    ServerOutcome::Drop => changed = true,
                }
            }
            if !changed {
                return body;
            }
            return join_batch(&out);
        }
        match self.chain.on_server(&self.exchange, body.clone()) {
            ServerOutcome::Unchanged => body,
            ServerOutcome::Changed(bytes) => bytes,
            // A JSON answer is the response: it cannot be dropped.
            ServerOutcome::Drop => body,
        }
    }
}

/// Whether the JSON text `raw` may hold `needle` once parsed: it holds it as is, or it has an
/// escape (`\u0072`, `\/`), which could spell it otherwise.
pub fn may_contain(raw: &[u8], needle: &[u8]) -> bool {
    memchr::memchr(b'\\', raw).is_some() || memchr::memmem::find(raw, needle).is_some()
}

/// A batch's array from its messages' bytes.
pub fn join_batch(items: &[Bytes]) -> Bytes {
    let mut out = Vec::with_capacity(items.iter().map(Bytes::len).sum::<usize>() + items.len() + 2);
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_message_keeps_its_bytes_and_a_changed_one_is_serialized_once() {
        let raw = Bytes::from_static(b"{ \"jsonrpc\" : \"2.0\", \"id\":1, \"result\":{} }");
        let mut m = Message::new(raw.clone());
        assert!(m.json().is_some());
        assert_eq!(m.into_bytes(), raw, "read, not changed: the same bytes");
        let mut m = Message::new(raw);
        m.json_mut().unwrap()["result"]["x"] = Value::from(1);
        assert_eq!(
            &m.into_bytes()[..],
            br#"{"jsonrpc":"2.0","id":1,"result":{"x":1}}"#,
            "the key order kept (preserve_order)"
        );
        let mut not_json = Message::new(Bytes::from_static(b"{oops"));
        assert!(not_json.json_mut().is_none());
        assert_eq!(&not_json.into_bytes()[..], b"{oops");
    }

    #[test]
    fn an_answer_carries_the_request_id_or_null() {
        let id = RawValue::from_string("\"a-1\"".into()).unwrap();
        let answer = Answer::error(-32602, "Unknown tool: x");
        assert_eq!(
            &Answer::result(Bytes::from_static(b"{ \"tools\" : [] }")).body(Some(&id))[..],
            br#"{"jsonrpc":"2.0","id":"a-1","result":{ "tools" : [] }}"#,
            "a result byte for byte"
        );
        assert_eq!(
            &answer.body(Some(&id))[..],
            br#"{"jsonrpc":"2.0","id":"a-1","error":{"code":-32602,"message":"Unknown tool: x"}}"#
        );
        assert_eq!(
            &answer.body(None)[..],
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32602,"message":"Unknown tool: x"}}"#
        );
    }
}
