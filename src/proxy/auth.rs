//! Resource-server mode (`[routes.auth] mode = "resource_server"`, issue 14 part 2): the relay
//! is the route's OAuth 2.1 resource server, as the MCP authorization spec (2025-06-18 and
//! later) asks of an MCP server, so the upstream needs no auth code.
//!
//! - **Metadata** (RFC 9728): the route's protected-resource document is served here
//!   ([`ResourceServer::metadata`]): `resource` (the route's URL), `authorization_servers`
//!   (the issuer), `scopes_supported`, `bearer_methods_supported: ["header"]`.
//! - **Tokens**: `Authorization: Bearer <JWT>` (RFC 6750 §2.1; no query or form tokens),
//!   an access token per RFC 9068 signed with an asymmetric algorithm (RS*, PS*, ES*, EdDSA;
//!   `none` and HMAC refused) by a key of the issuer's JWKS (its `jwks_uri` from RFC 8414
//!   metadata, else OpenID discovery). Checked: signature, `iss` equal to the issuer, `aud`
//!   containing the route's resource URL (RFC 8707: a token minted for another server is
//!   refused), `exp` and `nbf` within the leeway, `sub` present, the required scopes (`scope`,
//!   space-separated, or `scp`). The jsonwebtoken crate does the JOSE work (ring).
//! - **Keys** are fetched on first use, used for `jwks_max_age`, fetched again on a `kid` they
//!   do not have (a rotation at the authorization server) at most every `jwks_min_refresh`,
//!   one fetch at a time; a failed fetch keeps the keys there were.
//! - **Accepted tokens** are remembered (per audience, at most `max_cached_tokens`, until
//!   they expire), so a request with a token seen before costs a map lookup, not a signature
//!   check.
//! - **Refusals** (RFC 6750 §3, RFC 9728 §5.1): no token → `401` with `WWW-Authenticate:
//!   Bearer resource_metadata="…"` (and `scope` when scopes are required); a token that does
//!   not validate → `401` `error="invalid_token"`; a missing scope → `403`
//!   `error="insufficient_scope", scope="…"`; the keys unavailable → `503`. The body is a
//!   JSON-RPC error; the reason goes to the log (never the token).

use std::{
    collections::HashMap,
    num::NonZeroUsize,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderValue, Uri, header, request::Parts};
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use parking_lot::Mutex;
use serde::Deserialize;

use super::{
    stats::ProxyStats,
    upstream::{Upstream, UpstreamConnections, error_chain},
};
use crate::config::{AuthConfig, ProxyConfig};

/// Default of `auth.max_cached_tokens`: accepted tokens remembered per route (least
/// recently used dropped first).
pub const MAX_CACHED_TOKENS: usize = 10_000;
/// Largest metadata or JWKS document read from the authorization server, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Longest bearer token looked at, in bytes (longer: `invalid_token`).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Most keys kept from one JWKS.
pub const MAX_KEYS: usize = 64;

/// Who a validated token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// The granted scopes.
    pub scopes: Vec<String>,
    /// `exp`, seconds since the Unix epoch.
    pub expires: u64,
    /// `iss` and `sub`, space-separated (see [`Principal::binding`]).
    binding: String,
}

impl Principal {
    /// What a legacy session is bound to: issuer and subject (a subject is unique per issuer).
    pub fn binding(&self) -> &str {
        &self.binding
    }

    fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a request was refused here.
#[derive(Debug, Clone)]
pub struct AuthRefusal {
    /// `401`, `403`, `400` or `503`.
    pub status: http::StatusCode,
    /// The RFC 6750 error code, when one applies (`invalid_token`, `insufficient_scope`,
    /// `invalid_request`).
    pub error: Option<&'static str>,
    /// The scopes the request needed (for `insufficient_scope`, and the `401` hint).
    pub scope: Option<String>,
    /// The `resource_metadata` URL of the challenge.
    pub metadata_url: String,
    /// Why, for the log and `error_description` (stable, never token contents).
    pub reason: &'static str,
}

impl AuthRefusal {
    /// The `WWW-Authenticate` value (RFC 6750 §3, RFC 9728 §5.1); `None` for a `503`.
    pub fn challenge(&self) -> Option<HeaderValue> {
        if self.status == http::StatusCode::SERVICE_UNAVAILABLE {
            return None;
        }
        let mut value = String::from("Bearer ");
        let mut params = Vec::new();
        if let Some(error) = self.error {
            params.push(format!("error=\"{error}\""));
            params.push(format!("error_description=\"{}\"", self.reason));
        }
        if let Some(scope) = &self.scope {
            params.push(format!("scope=\"{scope}\""));
        }
        params.push(format!("resource_metadata=\"{}\"", self.metadata_url));
        value.push_str(&params.join(", "));
        HeaderValue::from_str(&value).ok()
    }
}

/// The issuer's keys, as last fetched.
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    /// The one key without a `kid`, when the set has exactly one key and it has none.
    only: Option<DecodingKey>,
    fetched: Instant,
}

/// One route's resource server: its settings, the issuer's keys, the tokens it accepted.
pub struct ResourceServer {
    config: AuthConfig,
    /// The route's settings, for fetching from the authorization server (timeouts, CA).
    fetch: ProxyConfig,
    connections: Arc<UpstreamConnections>,
    fetch_stats: Arc<ProxyStats>,
    keys: ArcSwapOption<Keys>,
    /// One fetch at a time; when the last one started.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    /// SHA-256 of `audience ␀ token` → who it speaks for (no token kept in memory).
    accepted: Mutex<lru::LruCache<[u8; 32], Arc<Principal>>>,
    /// The `Authorization` the upstream gets with `upstream_authorization = "file"`.
    credential: Option<HeaderValue>,
    /// The audience tokens must carry and the challenges' `resource_metadata`, when the
    /// configuration fixes them (`audience`, `public_url`): computed once, not per request.
    fixed: Option<(String, String)>,
    /// `Basic <client_id:secret>` for introspection (RFC 7662 §2.1, client_secret_basic).
    introspection_auth: Option<HeaderValue>,
    /// The introspection endpoint found in the issuer's metadata.
    introspection_endpoint: ArcSwapOption<String>,
    introspections: tokio::sync::Semaphore,
}

impl std::fmt::Debug for ResourceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceServer")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    exp: u64,
    /// RFC 9068 / RFC 8693: a space-separated string (some servers send an array).
    #[serde(default)]
    scope: Option<Scopes>,
    /// Microsoft Entra's and Okta's name for it, either shape.
    #[serde(default)]
    scp: Option<Scopes>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scopes {
    Text(String),
    List(Vec<String>),
}

impl Scopes {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::Text(text) => text
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            Self::List(list) => list,
        }
    }
}

/// Longest `sub` accepted, in bytes (it is kept per session and per accepted token).
pub const MAX_SUBJECT_BYTES: usize = 1024;
/// How long one fetch of the keys (metadata and JWKS together) may take.
pub const KEYS_FETCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Deserialize)]
struct AsMetadata {
    issuer: String,
    jwks_uri: Option<String>,
    introspection_endpoint: Option<String>,
}

/// An introspection answer (RFC 7662 §2.2): what the relay reads of it.
#[derive(Deserialize)]
struct Introspection {
    active: bool,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    scope: Option<Scopes>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Default of `auth.max_introspections`: introspection requests in flight at once per route
/// (past it: `503`, counted in `mcp_relay_auth_keys_unavailable_total`), so a flood of unknown
/// tokens cannot make the relay flood the authorization server.
pub const MAX_INTROSPECTIONS: usize = 16;

/// What a fetch from the authorization server ends with, for the log.
type FetchError = String;

impl ResourceServer {
    /// The resource server of a route whose settings are `proxy` (with `proxy.auth` in
    /// resource-server mode; `None` otherwise). A credential file that cannot be read (it was
    /// checked at load) is logged and nothing is sent upstream.
    pub fn for_route(proxy: &ProxyConfig) -> Option<Arc<Self>> {
        let config = &proxy.auth;
        if !config.is_resource_server() {
            return None;
        }
        let credential = match (
            config.upstream_authorization,
            &config.upstream_authorization_file,
        ) {
            (crate::config::UpstreamAuthorization::File, Some(path)) => {
                match crate::config::auth::read_credential(path) {
                    Ok(value) => Some(value),
                    Err(err) => {
                        tracing::error!(error = %err, "resource server: the upstream credential is not sent");
                        None
                    }
                }
            }
            _ => None,
        };
        // The authorization server is verified against `auth.ca_file` (else the system's
        // roots), not the upstreams' CA.
        let mut fetch = proxy.clone();
        fetch.upstream_ca_file = config.ca_file.clone();
        let public = proxy
            .public_url
            .as_deref()
            .and_then(|u| super::oauth::PublicUrl::parse(u).ok());
        let fixed = match (&public, config.audience.is_empty()) {
            (Some(public), true) => Some((public.resource().to_owned(), public.metadata_url())),
            (Some(public), false) => Some((config.audience.clone(), public.metadata_url())),
            (None, _) => None,
        };
        let introspection_auth = (!config.client_id.is_empty())
            .then_some(config.client_secret_file.as_deref())
            .flatten()
            .and_then(|path| match crate::config::auth::read_secret(path) {
                Ok(secret) => {
                    use base64::Engine as _;
                    let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
                    let pair = format!("{}:{}", enc(&config.client_id), enc(&secret));
                    let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair));
                    let mut value = HeaderValue::from_str(&value).ok()?;
                    value.set_sensitive(true);
                    Some(value)
                }
                Err(err) => {
                    tracing::error!(error = %err, "resource server: opaque tokens cannot be introspected");
                    None
                }
            });
        Some(Arc::new(Self {
            introspection_auth,
            introspection_endpoint: ArcSwapOption::empty(),
            introspections: tokio::sync::Semaphore::new(config.max_introspections.max(1)),
            config: config.clone(),
            fetch,
            connections: UpstreamConnections::new(8),
            fetch_stats: Arc::default(),
            keys: ArcSwapOption::empty(),
            refresh: tokio::sync::Mutex::new(None),
            accepted: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(config.max_cached_tokens).unwrap_or(NonZeroUsize::MIN),
            )),
            credential,
            fixed,
        }))
    }

    /// The settings.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Who the token in `authorization` speaks for, if this route accepted it (and it has not
    /// expired): for the `tools/list` filter, after the authenticate step accepted it. `None`
    /// without a fixed audience (the cache key needs it).
    pub fn accepted(&self, authorization: Option<&HeaderValue>) -> Option<Arc<Principal>> {
        let token = bearer(authorization?)?;
        let audience = if self.config.audience.is_empty() {
            self.fixed.as_ref().map(|(a, _)| a.as_str())?
        } else {
            &self.config.audience
        };
        let principal = self
            .accepted
            .lock()
            .peek(&token_key(audience, token))
            .cloned()?;
        (principal
            .expires
            .saturating_add(self.config.leeway.as_secs())
            > unix_now())
        .then_some(principal)
    }

    /// The audience and the `resource_metadata` URL fixed by the configuration (its
    /// `public_url`, and `audience` when set); `None`: derived from each request.
    pub fn fixed_urls(&self) -> Option<(&str, &str)> {
        self.fixed.as_ref().map(|(a, m)| (a.as_str(), m.as_str()))
    }

    /// Sets what the upstream gets as `Authorization` on `upstream` (headers of a request
    /// toward it, the client's end-to-end ones copied in): nothing, the client's, or the
    /// configured credential.
    pub fn upstream_authorization(&self, upstream: &mut http::HeaderMap) {
        match self.config.upstream_authorization {
            crate::config::UpstreamAuthorization::Pass => {}
            crate::config::UpstreamAuthorization::Strip => {
                upstream.remove(header::AUTHORIZATION);
            }
            crate::config::UpstreamAuthorization::File => {
                upstream.remove(header::AUTHORIZATION);
                if let Some(value) = &self.credential {
                    upstream.insert(header::AUTHORIZATION, value.clone());
                }
            }
        }
    }

    /// The protected-resource metadata document (RFC 9728 §2) of the resource `resource`.
    pub fn metadata(&self, resource: &str) -> Bytes {
        let scopes = if self.config.scopes_supported.is_empty() {
            &self.config.required_scopes
        } else {
            &self.config.scopes_supported
        };
        let document = serde_json::json!({
            "resource": resource,
            "authorization_servers": [self.config.issuer],
            "scopes_supported": scopes,
            "bearer_methods_supported": ["header"],
        });
        Bytes::from(serde_json::to_vec(&document).unwrap_or_default())
    }

    /// Validates the request's bearer token for the resource `resource` (its audience unless
    /// `audience` is configured), with `tool` the tool a `tools/call` names (its scopes are
    /// required too). Counts the outcome in `stats`. Errors: see the module doc.
    pub async fn authenticate(
        &self,
        parts: &Parts,
        resource: &str,
        metadata_url: &str,
        tool: Option<&str>,
        stats: &ProxyStats,
    ) -> Result<Arc<Principal>, AuthRefusal> {
        let result = self.validate(parts, resource, metadata_url, tool).await;
        let counter = match &result {
            Ok(_) => &stats.auth_accepted,
            Err(r) if r.error.is_none() && r.status == http::StatusCode::UNAUTHORIZED => {
                &stats.auth_missing
            }
            Err(r) if r.status == http::StatusCode::FORBIDDEN => &stats.auth_insufficient_scope,
            Err(r) if r.status == http::StatusCode::SERVICE_UNAVAILABLE => &stats.auth_unavailable,
            Err(_) => &stats.auth_invalid,
        };
        ProxyStats::incr(counter);
        result
    }

    async fn validate(
        &self,
        parts: &Parts,
        resource: &str,
        metadata_url: &str,
        tool: Option<&str>,
    ) -> Result<Arc<Principal>, AuthRefusal> {
        let refuse = |status, error, reason| AuthRefusal {
            status,
            error,
            scope: None,
            metadata_url: metadata_url.to_owned(),
            reason,
        };
        let unauthorized = http::StatusCode::UNAUTHORIZED;
        let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            let mut refusal = refuse(unauthorized, None, "no access token");
            refusal.scope = self.scope_hint(&[]);
            return Err(refusal);
        };
        if values.next().is_some() {
            return Err(refuse(
                http::StatusCode::BAD_REQUEST,
                Some("invalid_request"),
                "more than one Authorization header",
            ));
        }
        let token = bearer(value).ok_or_else(|| {
            let mut refusal = refuse(unauthorized, None, "no bearer token");
            refusal.scope = self.scope_hint(&[]);
            refusal
        })?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refuse(
                unauthorized,
                Some("invalid_token"),
                "token too long",
            ));
        }
        let audience = if self.config.audience.is_empty() {
            resource
        } else {
            &self.config.audience
        };
        let key = token_key(audience, token);
        let now = unix_now();
        let cached = self.accepted.lock().get(&key).cloned();
        let principal = match cached {
            Some(p) if p.expires.saturating_add(self.config.leeway.as_secs()) > now => p,
            _ => {
                let principal = Arc::new(
                    self.verify(token, audience)
                        .await
                        .map_err(|(status, error, reason)| refuse(status, error, reason))?,
                );
                self.accepted.lock().put(key, principal.clone());
                principal
            }
        };
        let tool_scopes = tool
            .and_then(|t| self.config.tool_scopes.get(t))
            .map_or(&[][..], Vec::as_slice);
        let missing = self
            .config
            .required_scopes
            .iter()
            .chain(tool_scopes)
            .any(|s| !principal.has(s));
        if missing {
            let mut refusal = refuse(
                http::StatusCode::FORBIDDEN,
                Some("insufficient_scope"),
                "the token lacks a required scope",
            );
            refusal.scope = self.scope_hint(tool_scopes);
            return Err(refusal);
        }
        Ok(principal)
    }

    /// Of the scopes a token was granted, those this route asks about (bounded by the
    /// configuration, whatever the token carries).
    fn kept_scopes(&self, granted: Vec<String>) -> Vec<String> {
        granted
            .into_iter()
            .filter(|s| {
                self.config.required_scopes.contains(s)
                    || self.config.tool_scopes.values().any(|v| v.contains(s))
            })
            .collect()
    }

    /// The scopes to ask for (required plus `extra`), space-separated; `None` when none.
    fn scope_hint(&self, extra: &[String]) -> Option<String> {
        let mut all: Vec<&str> = self
            .config
            .required_scopes
            .iter()
            .map(String::as_str)
            .collect();
        for s in extra {
            if !all.contains(&s.as_str()) {
                all.push(s);
            }
        }
        (!all.is_empty()).then(|| all.join(" "))
    }

    /// Checks `token`'s signature and claims for `audience`.
    async fn verify(&self, token: &str, audience: &str) -> Result<Principal, Refused> {
        let head = match jsonwebtoken::decode_header(token) {
            Ok(head) => head,
            Err(_) if self.introspection_auth.is_some() => {
                return self.introspect(token, audience).await;
            }
            Err(_) => return Err(invalid("not a JWT")),
        };
        // RFC 9068 §4: an access token says so (`at+jwt`), so an ID token of the same issuer
        // and audience is not taken for one.
        let typ_ok = head.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if self.config.require_access_token_type && !typ_ok {
            return Err(invalid("the token is not a JWT access token (typ at+jwt)"));
        }
        if !matches!(
            head.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(invalid("the token's algorithm is not accepted"));
        }
        let key = self.key(head.kid.as_deref()).await?;
        let mut validation = Validation::new(head.alg);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "the token expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet",
                ErrorKind::InvalidIssuer => "the token's issuer is not this resource's",
                ErrorKind::InvalidAudience => "the token was not issued for this resource",
                ErrorKind::InvalidSignature => "the token's signature does not verify",
                ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                _ => "the token does not validate",
            })
        })?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > MAX_SUBJECT_BYTES {
            return Err(invalid("the token's subject is empty or too long"));
        }
        // Only the scopes this route asks about are kept (bounded by the configuration).
        let granted = claims
            .scope
            .or(claims.scp)
            .map(Scopes::into_vec)
            .unwrap_or_default();

        let scopes = self.kept_scopes(granted);
        Ok(Principal {
            binding: format!("{} {}", claims.iss, claims.sub),
            issuer: claims.iss,
            subject: claims.sub,
            scopes,
            expires: claims.exp,
        })
    }

    /// The key named `kid` (or the only key, for a token without one): from the keys held,
    /// else after a fetch (see the module doc).
    async fn key(
        &self,
        kid: Option<&str>,
    ) -> Result<DecodingKey, (http::StatusCode, Option<&'static str>, &'static str)> {
        let find = |keys: &Keys| match kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            None => keys.only.clone(),
        };
        let fresh = |keys: &Keys| keys.fetched.elapsed() < self.config.jwks_max_age;
        if let Some(keys) = self.keys.load_full()
            && fresh(&keys)
            && let Some(key) = find(&keys)
        {
            return Ok(key);
        }
        // One fetch at a time; a request waits for another's at most the fetch deadline, then
        // goes on with the keys held.
        let mut last = tokio::time::timeout(KEYS_FETCH_DEADLINE, self.refresh.lock())
            .await
            .ok();
        // Another request may have fetched while this one waited.
        let held = self.keys.load_full();
        if let Some(keys) = &held
            && fresh(keys)
            && let Some(key) = find(keys)
        {
            return Ok(key);
        }
        // At most one fetch per `jwks_min_refresh`, stale keys or not: an authorization server
        // that is down is not asked once per request, and forged `kid`s cannot make it so.
        let may_fetch = last
            .as_deref()
            .is_some_and(|t| t.is_none_or(|t| t.elapsed() >= self.config.jwks_min_refresh));
        if let Some(last) = last.as_mut().filter(|_| may_fetch) {
            **last = Some(Instant::now());
            let fetched = tokio::time::timeout(KEYS_FETCH_DEADLINE, self.fetch_keys())
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {KEYS_FETCH_DEADLINE:?}")));
            match fetched {
                Ok(keys) => {
                    tracing::info!(issuer = %self.config.issuer, keys = keys.by_kid.len() + usize::from(keys.only.is_some()), "resource server: keys fetched");
                    self.keys.store(Some(Arc::new(keys)));
                }
                Err(err) => {
                    tracing::warn!(issuer = %self.config.issuer, error = %err, "resource server: fetching the authorization server's keys failed; the keys held stay");
                }
            }
        }
        drop(last);
        // The keys held, stale or not, when no fresher ones could be had.
        match self.keys.load_full() {
            Some(keys) => find(&keys).ok_or((
                http::StatusCode::UNAUTHORIZED,
                Some("invalid_token"),
                "the token's key is not the authorization server's",
            )),
            None => Err((
                http::StatusCode::SERVICE_UNAVAILABLE,
                None,
                "the authorization server's keys are unavailable",
            )),
        }
    }

    /// An opaque token asked about at the introspection endpoint (RFC 7662): it must be
    /// `active`, of the issuer (when `iss` is given), for `audience` (`aud`, required: RFC
    /// 8707), not expired; its subject is `sub`, else its `client_id`. Taken as active for at
    /// most `introspection_cache` (never past `exp`).
    async fn introspect(&self, token: &str, audience: &str) -> Result<Principal, Refused> {
        let unavailable = |reason| (http::StatusCode::SERVICE_UNAVAILABLE, None, reason);
        let Ok(_permit) = self.introspections.try_acquire() else {
            return Err(unavailable("too many token introspections in progress"));
        };
        let endpoint = match self.introspection_url().await {
            Ok(url) => url,
            Err(err) => {
                tracing::warn!(issuer = %self.config.issuer, error = %err, "resource server: no introspection endpoint");
                return Err(unavailable("the token cannot be introspected"));
            }
        };
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let answer = tokio::time::timeout(
            KEYS_FETCH_DEADLINE,
            self.fetch(
                &endpoint,
                Some((Bytes::from(body), self.introspection_auth.clone())),
            ),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {KEYS_FETCH_DEADLINE:?}")));
        let answer: Introspection = match answer.and_then(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| format!("{endpoint}: not an introspection answer: {e}"))
        }) {
            Ok(answer) => answer,
            Err(err) => {
                tracing::warn!(issuer = %self.config.issuer, error = %err, "resource server: introspection failed");
                return Err(unavailable("the token cannot be introspected"));
            }
        };
        if !answer.active {
            return Err(invalid("the token is not active"));
        }
        if answer.iss.as_deref().is_some_and(|iss| {
            iss.trim_end_matches('/') != self.config.issuer.trim_end_matches('/')
        }) {
            return Err(invalid("the token's issuer is not this resource's"));
        }
        let for_us = match &answer.aud {
            Some(Audience::One(aud)) => aud == audience,
            Some(Audience::Many(auds)) => auds.iter().any(|a| a == audience),
            None => false,
        };
        if !for_us {
            return Err(invalid("the token was not issued for this resource"));
        }
        let now = unix_now();
        if answer
            .exp
            .is_some_and(|exp| exp.saturating_add(self.config.leeway.as_secs()) <= now)
        {
            return Err(invalid("the token expired"));
        }
        let subject = answer
            .sub
            .or(answer.client_id)
            .filter(|s| !s.is_empty() && s.len() <= MAX_SUBJECT_BYTES)
            .ok_or_else(|| invalid("the token lacks a subject"))?;
        let granted = answer.scope.map(Scopes::into_vec).unwrap_or_default();

        let cached_until = now.saturating_add(self.config.introspection_cache.as_secs());
        let issuer = self.config.issuer.clone();
        Ok(Principal {
            binding: format!("{issuer} {subject}"),
            issuer,
            subject,
            scopes: self.kept_scopes(granted),
            expires: answer.exp.map_or(cached_until, |exp| exp.min(cached_until)),
        })
    }

    /// The introspection endpoint: configured, else from the issuer's metadata (found once).
    async fn introspection_url(&self) -> Result<String, FetchError> {
        if !self.config.introspection_endpoint.is_empty() {
            return Ok(self.config.introspection_endpoint.clone());
        }
        if let Some(url) = self.introspection_endpoint.load_full() {
            return Ok((*url).clone());
        }
        let meta = self.discover().await?;
        let url = meta
            .introspection_endpoint
            .ok_or("the issuer's metadata names no introspection_endpoint")?;
        crate::config::auth::check_secure_url("introspection_endpoint", &url)?;
        self.introspection_endpoint
            .store(Some(Arc::new(url.clone())));
        Ok(url)
    }

    async fn fetch_keys(&self) -> Result<Keys, FetchError> {
        let jwks_uri = if self.config.jwks_uri.is_empty() {
            self.discover_jwks_uri().await?
        } else {
            self.config.jwks_uri.clone()
        };
        let body = self.fetch_json(&jwks_uri).await?;
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("{jwks_uri}: not a JWKS: {e}"))?;
        let mut keys = Keys {
            by_kid: HashMap::new(),
            only: None,
            fetched: Instant::now(),
        };
        let count = set.keys.len();
        for jwk in set.keys.iter().take(MAX_KEYS) {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), key);
                }
                None if count == 1 => keys.only = Some(key),
                None => {}
            }
        }
        if keys.by_kid.is_empty() && keys.only.is_none() {
            return Err(format!("{jwks_uri}: no usable key"));
        }
        Ok(keys)
    }

    /// The issuer's `jwks_uri`: RFC 8414 metadata (the well-known segment inserted before the
    /// issuer's path), else OpenID discovery (appended); the document's `issuer` must be the
    /// configured one (RFC 8414 §3.3).
    async fn discover_jwks_uri(&self) -> Result<String, FetchError> {
        let meta = self.discover().await?;
        let jwks_uri = meta
            .jwks_uri
            .ok_or("the issuer's metadata names no jwks_uri")?;
        crate::config::auth::check_secure_url("jwks_uri", &jwks_uri)?;
        Ok(jwks_uri)
    }

    /// The issuer's metadata (see [`ResourceServer::discover_jwks_uri`]).
    async fn discover(&self) -> Result<AsMetadata, FetchError> {
        let issuer = self.config.issuer.trim_end_matches('/');
        let uri: Uri = issuer.parse().map_err(|e| format!("issuer: {e}"))?;
        let origin = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("https"),
            uri.authority().map(|a| a.as_str()).unwrap_or_default()
        );
        let path = uri.path().trim_end_matches('/');
        let candidates = [
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{issuer}/.well-known/openid-configuration"),
        ];
        let mut errors = Vec::new();
        for url in candidates {
            let meta = self.fetch_json(&url).await.and_then(|body| {
                serde_json::from_slice::<AsMetadata>(&body)
                    .map_err(|e| format!("{url}: not authorization-server metadata: {e}"))
            });
            match meta {
                Ok(meta) => {
                    if meta.issuer.trim_end_matches('/') != issuer {
                        return Err(format!(
                            "{url}: names issuer {:?}, not the configured one",
                            meta.issuer
                        ));
                    }
                    return Ok(meta);
                }
                Err(err) => errors.push(err),
            }
        }
        Err(errors.join("; "))
    }

    /// `GET url`, a `2xx` JSON body of at most [`MAX_DOCUMENT_BYTES`], within the route's
    /// response timeout.
    async fn fetch_json(&self, url: &str) -> Result<Bytes, FetchError> {
        self.fetch(url, None).await
    }

    /// `GET url`, or with `post` a form `POST` with that body and `Authorization`: a `2xx`
    /// JSON body of at most [`MAX_DOCUMENT_BYTES`], within the route's response timeout.
    async fn fetch(
        &self,
        url: &str,
        post: Option<(Bytes, Option<HeaderValue>)>,
    ) -> Result<Bytes, FetchError> {
        let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!("{url}: not an http(s) URL"));
        }
        let client = Upstream::for_endpoint(
            &self.fetch,
            uri.clone(),
            self.connections.clone(),
            self.fetch_stats.clone(),
        );
        let mut request = http::Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri;
        request
            .headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some((body, authorization)) = post {
            *request.method_mut() = http::Method::POST;
            *request.body_mut() = Full::new(body);
            let h = request.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            if let Some(value) = authorization {
                h.insert(header::AUTHORIZATION, value);
            }
        }
        let response = client
            .send(request)
            .await
            .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("{url}: {}", response.status()));
        }
        let body = tokio::time::timeout(
            self.fetch.upstream_response_timeout,
            Limited::new(response.into_body(), MAX_DOCUMENT_BYTES).collect(),
        )
        .await
        .map_err(|_| format!("{url}: body not received in time"))?
        .map_err(|e| format!("{url}: {e}"))?;
        Ok(body.to_bytes())
    }
}

/// The accepted-token cache's key: SHA-256 of `audience ␀ token` (no token kept in memory).
fn token_key(audience: &str, token: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(audience.as_bytes());
    ctx.update(&[0]);
    ctx.update(token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// The bearer token of an `Authorization` value, if it is one.
fn bearer(value: &HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A refusal before it gets its challenge: status, RFC 6750 error code, reason.
type Refused = (http::StatusCode, Option<&'static str>, &'static str);

/// `401 invalid_token` for `reason`.
fn invalid(reason: &'static str) -> Refused {
    (
        http::StatusCode::UNAUTHORIZED,
        Some("invalid_token"),
        reason,
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
