//! The result cache interceptor (`proxy.cache`, `[routes.cache]`; [`CacheConfig`]): results a
//! 2026-07-28 server marks cacheable are kept and the same requests answered from them while
//! fresh (MCP 2026-07-28 "server/utilities/caching").
//!
//! - **What.** Results of `server/discover`, `tools/list`, `prompts/list`, `resources/list`,
//!   `resources/templates/list` and `resources/read`, in the modern era, with `ttlMs` above 0
//!   (capped at `max_ttl_ms`) and `cacheScope` `public` or `private`; never one with
//!   `resultType: "input_required"`, nor one answering (or a request carrying)
//!   `inputResponses` or `requestState` (multi round-trip requests: their inputs are not part
//!   of the key).
//! - **Key.** The method and the request's `params` without `_meta`, canonical (object keys
//!   sorted, no whitespace): the cursor of a page, the `uri` of a read. A `public` result is
//!   served to any request of the same credentials class (with an `Authorization`, or
//!   without: one fetched with credentials is never served to a request the upstream would
//!   have refused for lacking them); a `private` one is kept under the request's
//!   `Authorization` and served only to requests with the same one, and a request without one
//!   never gets nor leaves a private result (clients without credentials are not one
//!   authorization context). A result whose exchange began before an invalidation is not kept.
//! - **Answer.** The cached `result` bytes exactly as the server sent them, in a response with
//!   the new request's id: HTTP `200`, `application/json`; the upstream never sees the
//!   request.
//! - **Invalidation.** A `notifications/tools/list_changed` (prompts, resources alike) passing
//!   through the relay on any stream of the route drops that list's entries (resources: the
//!   reads and templates too); `notifications/resources/updated` drops the reads; the control
//!   plane's `InvalidateCache` drops everything.
//! - **Bounds.** At most `max_entries` results and `max_bytes` (result bytes plus key bytes);
//!   the least recently used go first (the `lru` crate), counted as evictions; a result larger
//!   than `max_bytes` is not kept.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::HeaderValue;
use lru::LruCache;
use parking_lot::Mutex;
use serde_json::{Map, Value, value::RawValue};

use super::{Answer, ClientMessage, Interceptor, ServerMessage, Verdict};
use crate::{config::CacheConfig, protocol::era::Era};

/// The methods whose results a server may mark cacheable.
pub const CACHEABLE: [&str; 6] = [
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// What the cache has done, for `/metrics` and the control plane.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Requests answered from the cache.
    pub hits: AtomicU64,
    /// Cacheable requests that went to the upstream (nothing fresh held).
    pub misses: AtomicU64,
    /// Results kept.
    pub stores: AtomicU64,
    /// Results dropped to stay within `max_entries`/`max_bytes`.
    pub evictions: AtomicU64,
    /// Results dropped by a change notification or `InvalidateCache`.
    pub invalidations: AtomicU64,
}

struct Entry {
    result: Bytes,
    expires: Instant,
    size: usize,
}

struct Held {
    entries: LruCache<String, Entry>,
    bytes: usize,
}

/// The result cache of one route.
pub struct Cache {
    config: CacheConfig,
    held: Mutex<Held>,
    /// Bumped at every invalidation: an exchange that began before one leaves no result.
    generation: AtomicU64,
    /// Its counters.
    pub stats: CacheStats,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (entries, bytes) = self.size();
        f.debug_struct("Cache")
            .field("entries", &entries)
            .field("bytes", &bytes)
            .finish()
    }
}

impl Cache {
    /// An empty cache bounded by `config`.
    pub fn new(config: &CacheConfig) -> Self {
        Self {
            config: config.clone(),
            held: Mutex::new(Held {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            generation: AtomicU64::new(0),
            stats: CacheStats::default(),
        }
    }

    /// Results held and their bytes.
    pub fn size(&self) -> (usize, usize) {
        let held = self.held.lock();
        (held.entries.len(), held.bytes)
    }

    /// The invalidation generation: an exchange records it when it begins
    /// ([`super::Exchange::with_generation`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Drops every result; returns how many.
    pub fn clear(&self) -> usize {
        let mut held = self.held.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        let n = held.entries.len();
        held.entries.clear();
        held.bytes = 0;
        self.stats
            .invalidations
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Drops the results of `methods`; returns how many.
    fn invalidate(&self, methods: &[&str]) -> usize {
        let mut held = self.held.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        let gone: Vec<String> = held
            .entries
            .iter()
            .filter(|(key, _)| methods.iter().any(|m| method_of(key) == *m))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &gone {
            if let Some(entry) = held.entries.pop(key) {
                held.bytes -= entry.size;
            }
        }
        self.stats
            .invalidations
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        gone.len()
    }

    /// The fresh result under `key`, if any (an expired one is dropped).
    fn get(&self, key: &str) -> Option<Bytes> {
        let mut held = self.held.lock();
        let entry = held.entries.get(key)?;
        if entry.expires > Instant::now() {
            return Some(entry.result.clone());
        }
        if let Some(entry) = held.entries.pop(key) {
            held.bytes -= entry.size;
        }
        None
    }

    /// Keeps `result` under `key` for `ttl`, evicting the least recently used to make room,
    /// unless the cache was invalidated since generation `since` (the result may predate the
    /// change).
    fn put(&self, key: String, result: Bytes, ttl: Duration, since: u64) {
        let size = key.len() + result.len();
        if size > self.config.max_bytes {
            return;
        }
        let mut held = self.held.lock();
        if self.generation.load(Ordering::Acquire) != since {
            return;
        }
        if let Some(old) = held.entries.pop(&key) {
            held.bytes -= old.size;
        }
        let mut evicted = 0;
        while held.entries.len() >= self.config.max_entries
            || held.bytes + size > self.config.max_bytes
        {
            match held.entries.pop_lru() {
                Some((_, entry)) => {
                    held.bytes -= entry.size;
                    evicted += 1;
                }
                None => break,
            }
        }
        held.bytes += size;
        held.entries.put(
            key,
            Entry {
                result,
                expires: Instant::now() + ttl,
                size,
            },
        );
        drop(held);
        self.stats.stores.fetch_add(1, Ordering::Relaxed);
        if evicted > 0 {
            self.stats.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
    }
}

/// The key of a request: method, canonical params (without `_meta`), and its scope: a
/// `public` result is kept apart for requests with and without credentials (one fetched with
/// an `Authorization` is not served to a request without one, which the upstream would have
/// refused), a `private` one under the `Authorization` itself (`scope` `Private`). `None` for a
/// request that must not be cached (a multi round-trip retry), or a private key whose
/// `Authorization` is not visible ASCII.
fn key_of(method: &str, request: &Value, scope: Scope<'_>) -> Option<String> {
    let mut params = match request.get("params") {
        Some(Value::Object(map)) => map.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return None,
    };
    if params.contains_key("inputResponses") || params.contains_key("requestState") {
        return None;
    }
    params.remove("_meta");
    let mut key = String::with_capacity(64);
    key.push_str(method);
    key.push('\n');
    write_canonical(&Value::Object(params), &mut key);
    key.push('\n');
    match scope {
        Scope::Public { credentials: false } => key.push_str("public"),
        Scope::Public { credentials: true } => key.push_str("public+credentials"),
        Scope::Private(context) => {
            key.push_str("private ");
            key.push_str(context.to_str().ok()?);
        }
    }
    Some(key)
}

/// Which results a key names.
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    /// `cacheScope: "public"`, for requests with or without credentials.
    Public { credentials: bool },
    /// `cacheScope: "private"`, for requests with this `Authorization`.
    Private(&'a HeaderValue),
}

/// The method a key was made for.
fn method_of(key: &str) -> &str {
    key.split('\n').next().unwrap_or_default()
}

/// `value` as JSON with every object's keys sorted, no whitespace.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The lists a change notification makes stale.
fn invalidated_by(method: &str) -> &'static [&'static str] {
    match method {
        "notifications/tools/list_changed" => &["tools/list"],
        "notifications/prompts/list_changed" => &["prompts/list"],
        "notifications/resources/list_changed" => &[
            "resources/list",
            "resources/templates/list",
            "resources/read",
        ],
        "notifications/resources/updated" => &["resources/read"],
        _ => &[],
    }
}

impl Interceptor for Cache {
    fn name(&self) -> &'static str {
        "cache"
    }

    fn wants_client(&self, method: &str) -> bool {
        CACHEABLE.contains(&method)
    }

    fn on_client(&self, message: &mut ClientMessage<'_>) -> Verdict {
        if message.request.era != Era::Modern || message.request.id.is_none() {
            return Verdict::Pass;
        }
        let Some(request) = message.message.json() else {
            return Verdict::Pass;
        };
        let credentials = message.request.context.is_some();
        let found = key_of(
            message.request.method,
            request,
            Scope::Public { credentials },
        )
        .and_then(|key| self.get(&key))
        .or_else(|| {
            let context = message.request.context?;
            self.get(&key_of(
                message.request.method,
                request,
                Scope::Private(context),
            )?)
        });
        match found {
            Some(result) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                Verdict::Answer(Answer::result(result))
            }
            None => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                Verdict::Pass
            }
        }
    }

    fn wants_server(&self, _request_method: Option<&str>) -> bool {
        // Change notifications may come on any stream.
        true
    }

    fn wants_response(&self, request_method: &str) -> bool {
        // A JSON body is one response: only a cacheable one matters.
        CACHEABLE.contains(&request_method)
    }

    fn on_server(&self, message: &mut ServerMessage<'_>) -> Verdict {
        let Some(method) = message.answers else {
            // Not a response of this exchange: a change notification?
            if !super::may_contain(message.message.raw(), b"notifications/") {
                return Verdict::Pass;
            }
            if let Some(notification) = message
                .message
                .json()
                .and_then(|v| v.get("method")?.as_str())
            {
                let stale = invalidated_by(notification);
                if !stale.is_empty() {
                    self.invalidate(stale);
                }
            }
            return Verdict::Pass;
        };
        if message.era != Era::Modern || !CACHEABLE.contains(&method) {
            return Verdict::Pass;
        }
        let Some(request) = message
            .request
            .and_then(|r| serde_json::from_slice::<Value>(r).ok())
        else {
            return Verdict::Pass;
        };
        // What the client gets: another interceptor (the policy) may have changed it.
        let raw = message.message.current_bytes();
        let Some(result) = message.message.json().and_then(|v| v.get("result")) else {
            return Verdict::Pass;
        };
        if result.get("resultType").and_then(Value::as_str) == Some("input_required")
            || result.get("inputResponses").is_some()
            || result.get("requestState").is_some()
        {
            return Verdict::Pass;
        }
        let ttl_ms = result.get("ttlMs").and_then(Value::as_u64).unwrap_or(0);
        let scope = result.get("cacheScope").and_then(Value::as_str);
        let scope = match scope {
            Some("public") => Scope::Public {
                credentials: message.context.is_some(),
            },
            Some("private") => match message.context {
                Some(context) => Scope::Private(context),
                None => return Verdict::Pass,
            },
            _ => return Verdict::Pass,
        };
        if ttl_ms == 0 {
            return Verdict::Pass;
        }
        let Some(key) = key_of(method, &request, scope) else {
            return Verdict::Pass;
        };
        #[derive(serde::Deserialize)]
        struct Response<'a> {
            #[serde(borrow)]
            result: &'a RawValue,
        }
        let Ok(response) = serde_json::from_slice::<Response<'_>>(&raw) else {
            return Verdict::Pass;
        };
        let bytes = raw.slice_ref(response.result.get().as_bytes());
        let ttl = Duration::from_millis(ttl_ms.min(self.config.max_ttl_ms));
        self.put(key, bytes, ttl, message.generation);
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Chain, ClientOutcome, ClientRequest, Exchange};
    use super::*;
    use std::sync::Arc;

    fn id(n: u64) -> Box<RawValue> {
        RawValue::from_string(n.to_string()).unwrap()
    }

    const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

    fn chain(config: &CacheConfig) -> (Arc<Chain>, Arc<Cache>) {
        let cache = Arc::new(Cache::new(config));
        (Chain::with_cache("r".into(), cache.clone()), cache)
    }

    fn ask(chain: &Chain, n: u64, body: &str, context: Option<&HeaderValue>) -> ClientOutcome {
        let id = id(n);
        let request = ClientRequest {
            era: Era::Modern,
            method: "tools/list",
            name: None,
            id: Some(&id),
            client: None,
            context,
        };
        chain.on_client(request, Bytes::copy_from_slice(body.as_bytes()))
    }

    fn answer(chain: &Chain, body: &str, context: Option<HeaderValue>, response: &str) {
        let request = Bytes::copy_from_slice(body.as_bytes());
        let generation = chain.cache().map_or(0, |c| c.generation());
        let exchange = Exchange::new(Era::Modern, context, [(&*id(1), "tools/list", request)])
            .with_generation(generation);
        chain.on_server(&exchange, Bytes::copy_from_slice(response.as_bytes()));
    }

    #[test]
    fn a_public_result_is_served_byte_for_byte_until_a_change_notification() {
        let (chain, cache) = chain(&CacheConfig {
            enabled: true,
            ..Default::default()
        });
        assert!(
            matches!(ask(&chain, 1, LIST, None), ClientOutcome::Forward(_)),
            "miss"
        );
        answer(
            &chain,
            LIST,
            None,
            r#"{"jsonrpc":"2.0","id":1,"result":{ "tools": [ {"name":"echo"} ], "ttlMs": 60000, "cacheScope": "public" }}"#,
        );
        // Another id, another `_meta`, keys in another order: the same key.
        let again = r#"{"params":{"_meta":{"x":1}},"method":"tools/list","id":9,"jsonrpc":"2.0"}"#;
        match ask(&chain, 9, again, None) {
            ClientOutcome::Answer(a) => assert_eq!(
                &a.body(Some(&id(9)))[..],
                br#"{"jsonrpc":"2.0","id":9,"result":{ "tools": [ {"name":"echo"} ], "ttlMs": 60000, "cacheScope": "public" }}"#
            ),
            other => panic!("{other:?}"),
        }
        // Another cursor: another key.
        let page2 = r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"cursor":"2"}}"#;
        assert!(matches!(
            ask(&chain, 3, page2, None),
            ClientOutcome::Forward(_)
        ));
        // A change notification on some stream drops the list.
        let exchange = Exchange::new(Era::Modern, None, []);
        chain.on_server(
            &exchange,
            Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#),
        );
        assert!(matches!(
            ask(&chain, 4, LIST, None),
            ClientOutcome::Forward(_)
        ));
        // An escaped spelling is a change notification all the same.
        answer(
            &chain,
            LIST,
            None,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"ttlMs":60000,"cacheScope":"public"}}"#,
        );
        chain.on_server(
            &exchange,
            Bytes::from_static(
                br#"{"jsonrpc":"2.0","method":"notifications\/tools\/list_changed"}"#,
            ),
        );
        assert!(matches!(
            ask(&chain, 5, LIST, None),
            ClientOutcome::Forward(_)
        ));
        let s = &cache.stats;
        assert_eq!(
            [&s.hits, &s.misses, &s.stores, &s.invalidations].map(|c| c.load(Ordering::Relaxed)),
            [1, 4, 2, 2]
        );
    }

    #[test]
    fn private_results_stay_in_their_authorization_context_and_input_required_is_never_kept() {
        let (chain, _) = chain(&CacheConfig {
            enabled: true,
            ..Default::default()
        });
        let alice = HeaderValue::from_static("Bearer alice");
        let bob = HeaderValue::from_static("Bearer bob");
        let private = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"ttlMs":60000,"cacheScope":"private"}}"#;
        answer(&chain, LIST, Some(alice.clone()), private);
        assert!(matches!(
            ask(&chain, 2, LIST, Some(&alice)),
            ClientOutcome::Answer(_)
        ));
        assert!(matches!(
            ask(&chain, 3, LIST, Some(&bob)),
            ClientOutcome::Forward(_)
        ));
        assert!(matches!(
            ask(&chain, 4, LIST, None),
            ClientOutcome::Forward(_)
        ));
        // No context: a private result is not kept at all.
        let (chain, cache) = super::tests::chain(&CacheConfig {
            enabled: true,
            ..Default::default()
        });
        answer(&chain, LIST, None, private);
        answer(
            &chain,
            LIST,
            None,
            r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","ttlMs":60000,"cacheScope":"public"}}"#,
        );
        answer(
            &chain,
            LIST,
            None,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"ttlMs":0,"cacheScope":"public"}}"#,
        );
        assert_eq!(cache.size().0, 0);
    }

    /// Review findings: a public result fetched with credentials was served to requests
    /// without any; a result whose request started before a change notification was kept
    /// after it; a route with a cache read every JSON answer whole.
    #[test]
    fn public_results_stay_with_or_without_credentials_and_a_result_older_than_a_change_is_not_kept()
     {
        let (chain, cache) = chain(&CacheConfig {
            enabled: true,
            ..Default::default()
        });
        let token = HeaderValue::from_static("Bearer alice");
        let public =
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"ttlMs":60000,"cacheScope":"public"}}"#;
        answer(&chain, LIST, Some(token.clone()), public);
        assert!(
            matches!(ask(&chain, 2, LIST, None), ClientOutcome::Forward(_)),
            "no credentials"
        );
        let bob = HeaderValue::from_static("Bearer bob");
        assert!(
            matches!(ask(&chain, 3, LIST, Some(&bob)), ClientOutcome::Answer(_)),
            "public: any credentials"
        );

        // The exchange began, then the list changed, then its answer came: not kept.
        cache.clear();
        let exchange = Exchange::new(
            Era::Modern,
            None,
            [(&*id(1), "tools/list", Bytes::from_static(LIST.as_bytes()))],
        )
        .with_generation(cache.generation());
        let listen = Exchange::new(Era::Modern, None, []);
        chain.on_server(
            &listen,
            Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#),
        );
        chain.on_server(&exchange, Bytes::from_static(public.as_bytes()));
        assert_eq!(cache.size().0, 0, "stale: fetched before the change");

        // Only the answers of cacheable requests are read whole.
        let call = Exchange::new(Era::Modern, None, [(&*id(4), "tools/call", Bytes::new())]);
        let filter =
            super::super::ServerFilter::new(Some(&chain), call).expect("streams are watched");
        assert!(!filter.wants_body(), "a tools/call answer streams on");
        let list = Exchange::new(Era::Modern, None, [(&*id(5), "tools/list", Bytes::new())]);
        assert!(
            super::super::ServerFilter::new(Some(&chain), list)
                .unwrap()
                .wants_body()
        );
    }

    #[test]
    fn entries_and_bytes_are_bounded_least_recently_used_first() {
        let (chain, cache) = chain(&CacheConfig {
            enabled: true,
            max_entries: 2,
            ..Default::default()
        });
        for cursor in 0..5 {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"cursor":"{cursor}"}}}}"#
            );
            answer(
                &chain,
                &body,
                None,
                r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"ttlMs":60000,"cacheScope":"public"}}"#,
            );
        }
        assert_eq!(cache.size().0, 2);
        assert_eq!(cache.stats.evictions.load(Ordering::Relaxed), 3);
        let (_, bytes) = cache.size();
        let small = Cache::new(&CacheConfig {
            enabled: true,
            max_bytes: bytes / 2,
            ..Default::default()
        });
        small.put(
            "tools/list\n{}\npublic".into(),
            Bytes::from(vec![b'x'; bytes]),
            Duration::from_secs(1),
            0,
        );
        assert_eq!(small.size().0, 0, "larger than max_bytes: not kept");
    }
}
