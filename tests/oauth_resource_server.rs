//! OAuth through mcp-relay with a real authorization server (npm `oidc-provider`,
//! `tests/peers/oidc_provider.mjs`) and the official TypeScript SDK client's OAuth flow
//! (`tests/peers/ts_oauth_client.mjs`: discovery, dynamic registration, authorization code with
//! PKCE, token with the RFC 8707 `resource`), issue 14:
//!
//! - resource-server mode: the relay validates the tokens in front of the Python SDK server,
//!   which has no auth at all; transparent mode: the Python SDK server that itself requires
//!   JWTs (`py_auth_server.py --jwks-issuer`) behind the relay, which only rewrites discovery;
//! - the refusals of resource-server mode, each with the spec's status and challenge, and a key
//!   rotated at the authorization server picked up without a restart;
//! - another subject's token on a legacy session: `404`, and the upstream never sees it.

mod support;

use std::{path::Path, time::Duration};

use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_relay::{
    config::{AuthConfig, AuthMode, RouteConfig},
    daemon::Daemon,
};
use serde_json::{Value, json};
use support::{
    http::{Answer, Client},
    peers::{Peer, grpcurl_json, run_driver},
};

/// The official TypeScript SDK client completing the OAuth flow against `url` as `login`.
async fn ts_oauth(url: &str, login: &str, extra: &[&str]) -> Value {
    let mut args = vec!["tests/peers/ts_oauth_client.mjs", url, "--login", login];
    args.extend_from_slice(extra);
    run_driver(Path::new("node"), &args, &[], Duration::from_secs(90)).await
}

/// The authorization server: oidc-provider with its private keys in `keys`.
async fn provider(keys: &Path, port: u16, rotate: bool) -> Peer {
    let port = port.to_string();
    let mut args = vec!["--port", &port, "--key-file", keys.to_str().expect("UTF-8")];
    if rotate {
        args.push("--rotate");
    }
    Peer::node("oidc_provider.mjs", &args).await
}

fn issuer(provider: &Peer) -> String {
    format!("http://127.0.0.1:{}", provider.port())
}

/// A resource-server route at `path` of the relay at `relay` in front of `upstream`, trusting
/// `issuer` (its `public_url`, the audience of its tokens, is `relay` + `path`).
fn rs_route(relay: &str, path: &str, upstream: &str, issuer: &str) -> RouteConfig {
    let mut route = RouteConfig::new(path, [upstream.to_owned()]);
    route.public_url = Some(format!("{relay}{path}"));
    route.auth = Some(AuthConfig {
        mode: AuthMode::ResourceServer,
        issuer: issuer.to_owned(),
        required_scopes: vec!["mcp:tools".into()],
        jwks_min_refresh: Duration::from_secs(1),
        ..AuthConfig::default()
    });
    route
}

/// Signs `claims` with the authorization server's current key (its `kid` in the header), as
/// only the authorization server could: for the refusals a real one would not mint.
fn forge(keys: &Path, claims: &Value) -> String {
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(keys).expect("keys")).expect("JWKS");
    let kid = jwks["keys"][0]["kid"].as_str().expect("kid").to_owned();
    let pem = std::fs::read(format!("{}.pem", keys.display())).expect("the signing key's PEM");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid);
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(&pem).expect("RSA key"),
    )
    .expect("sign")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;

/// A 2026-07-28 `tools/list` with `Authorization: Bearer <token>` (none when `None`).
async fn list(url: &str, token: Option<&str>) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/list"),
    ];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth));
    }
    Client::new().post_read(url, &headers, LIST).await
}

fn challenge(answer: &Answer) -> String {
    answer
        .header("www-authenticate")
        .unwrap_or_else(|| {
            panic!(
                "no WWW-Authenticate on {}: {}",
                answer.status,
                answer.text()
            )
        })
        .to_owned()
}

/// The relay's data plane bound first (its URL is in the routes), and that URL.
async fn bind() -> (tokio::net::TcpListener, String) {
    let data = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", data.local_addr().expect("addr"));
    (data, url)
}

/// The relay serving `routes` on `data`.
async fn start(data: tokio::net::TcpListener, routes: Vec<RouteConfig>) -> Daemon {
    let mut config = mcp_relay::config::Config::new(http::Uri::default());
    config.shutdown_grace = Duration::from_secs(2);
    config.routes = routes;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    Daemon::start(config, data, admin).await.expect("start")
}

async fn stop(daemon: Daemon) {
    daemon.shutdown().await.expect("shut down");
}

/// The TypeScript SDK's whole OAuth flow through the relay, both modes, then a tool call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_oauth_flow_works_through_the_relay_in_both_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys.json");
    let as_ = provider(&keys, 0, false).await;
    let plain = Peer::py_server(&[]).await;
    // The transparent upstream must accept tokens for the relay's URL (the resource clients
    // ask tokens for): the data plane is bound first, so its URL is known.
    let (data, relay) = bind().await;
    let secured = Peer::py_auth_server(&[
        "--jwks-issuer",
        &issuer(&as_),
        "--scope",
        "mcp:tools",
        "--audience",
        &format!("{relay}/mcp"),
    ])
    .await;
    let daemon = start(
        data,
        vec![
            rs_route(&relay, "/mcp/rs", &plain.url(), &issuer(&as_)),
            // The same path as the upstream's own (`/mcp`): its metadata is served at the
            // path-aware URL of its resource, which the relay asks for its endpoint's path.
            RouteConfig::new("/mcp", [secured.url()]),
        ],
    )
    .await;

    // (b) The relay as the resource server, the upstream without any auth.
    let summary = ts_oauth(
        &format!("{relay}/mcp/rs"),
        "alice",
        &[
            "--tool",
            "echo",
            "--args",
            r#"{"text":"through the relay"}"#,
        ],
    )
    .await;
    assert_eq!(summary["result_text"], "through the relay", "{summary}");
    assert_eq!(summary["resource"], format!("{relay}/mcp/rs"), "{summary}");
    assert_eq!(summary["scope"], "mcp:tools", "{summary}");
    let steps: Vec<String> = summary["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| format!("{} {} {}", r["method"], r["url"], r["status"]))
        .collect();
    eprintln!(
        "resource-server mode, the SDK's exchanges:\n  {}",
        steps.join("\n  ")
    );
    assert!(steps[0].ends_with("401"), "{steps:?}");

    // (a) Transparent: the upstream is the resource server.
    let summary = ts_oauth(&format!("{relay}/mcp"), "bob", &["--tool", "subject"]).await;
    assert_eq!(summary["result_text"], "bob", "{summary}");
    assert_eq!(summary["resource"], format!("{relay}/mcp"), "{summary}");
    eprintln!(
        "transparent mode: the upstream saw subject {}",
        summary["result_text"]
    );
    stop(daemon).await;
}

/// Each refusal of resource-server mode with its status and challenge; a key rotated at the
/// authorization server is fetched on its first token, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refused_with_the_spec_challenge_and_a_rotated_key_is_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys.json");
    let as_ = provider(&keys, 0, false).await;
    let iss = issuer(&as_);
    let upstream = Peer::py_server(&[]).await;
    let (data, relay) = bind().await;
    let mut route = rs_route(&relay, "/mcp/rs", &upstream.url(), &iss);
    if let Some(auth) = &mut route.auth {
        auth.tool_scopes
            .insert("echo".into(), vec!["mcp:admin".into()]);
    }
    let daemon = start(data, vec![route]).await;
    let url = format!("http://{}/mcp/rs", daemon.data_addr());
    let url_for_calls = url.clone();
    let metadata = format!(
        "http://{}/.well-known/oauth-protected-resource/mcp/rs",
        daemon.data_addr()
    );

    // The relay's own protected-resource metadata.
    let doc = Client::new()
        .send(http::Method::GET, &metadata, &[], "")
        .await;
    assert_eq!(doc.status(), StatusCode::OK);
    let doc: Value = serde_json::from_slice(
        &http_body_util::BodyExt::collect(doc.into_body())
            .await
            .expect("body")
            .to_bytes(),
    )
    .expect("JSON");
    assert_eq!(doc["resource"], url);
    assert_eq!(doc["authorization_servers"], json!([iss]));
    assert_eq!(doc["scopes_supported"], json!(["mcp:tools"]));

    let t = now();
    let good = json!({"iss": iss, "sub": "carol", "aud": url, "exp": t + 300, "iat": t, "scope": "mcp:tools"});
    let with = |patch: Value| {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().expect("object") {
            claims[k] = v.clone();
        }
        forge(&keys, &claims)
    };
    let valid = forge(&keys, &good);
    assert_eq!(list(&url, Some(&valid)).await.status, StatusCode::OK);

    // No token: 401, the metadata URL and the scope to ask for, no error code.
    let answer = list(&url, None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&answer),
        format!("Bearer scope=\"mcp:tools\", resource_metadata=\"{metadata}\"")
    );
    // One character in the middle of the signature changed (the last one may only carry
    // padding bits).
    let mut bad_signature = valid.clone().into_bytes();
    let at = bad_signature.len() - 10;
    bad_signature[at] = if bad_signature[at] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let bad_signature = String::from_utf8(bad_signature).expect("ASCII");
    // The same claims in a token typed `JWT` (as an ID token is): not an access token.
    let untyped = {
        let jwks: Value =
            serde_json::from_str(&std::fs::read_to_string(&keys).expect("keys")).expect("JWKS");
        let mut header = Header::new(Algorithm::RS256);
        header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_owned);
        let pem = std::fs::read(format!("{}.pem", keys.display())).expect("PEM");
        jsonwebtoken::encode(
            &header,
            &good,
            &EncodingKey::from_rsa_pem(&pem).expect("key"),
        )
        .expect("sign")
    };
    let cases = [
        (
            "wrong audience",
            with(json!({"aud": "http://127.0.0.1:1/mcp"})),
            "not issued for this resource",
        ),
        (
            "expired",
            with(json!({"exp": t - 3600, "iat": t - 7200})),
            "expired",
        ),
        (
            "wrong issuer",
            with(json!({"iss": "http://127.0.0.1:1"})),
            "issuer",
        ),
        ("bad signature", bad_signature, "signature"),
        ("not a JWT", "opaque-token".to_owned(), "not a JWT"),
        ("typed JWT, not at+jwt (an ID token)", untyped, "typ at+jwt"),
    ];
    for (what, token, reason) in cases {
        let answer = list(&url, Some(&token)).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            answer.text()
        );
        let c = challenge(&answer);
        assert!(
            c.starts_with("Bearer error=\"invalid_token\""),
            "{what}: {c}"
        );
        assert!(c.contains(reason), "{what}: {c}");
        assert!(
            c.contains(&format!("resource_metadata=\"{metadata}\"")),
            "{what}: {c}"
        );
        eprintln!("{what}: 401 {c}");
    }
    // Missing scope: 403 insufficient_scope naming the scope.
    let answer = list(&url, Some(&with(json!({"scope": "openid"})))).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let c = challenge(&answer);
    assert!(c.starts_with("Bearer error=\"insufficient_scope\""), "{c}");
    assert!(c.contains("scope=\"mcp:tools\""), "{c}");
    eprintln!("missing scope: 403 {c}");

    // Per-tool scopes: `echo` needs mcp:admin besides the route's mcp:tools.
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let call_with = |token: String| {
        let url = url_for_calls.clone();
        async move {
            let auth = format!("Bearer {token}");
            let headers = [
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo"),
                ("authorization", auth.as_str()),
            ];
            Client::new().post_read(&url, &headers, call).await
        }
    };
    let answer = call_with(valid.clone()).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
    let c = challenge(&answer);
    assert!(c.contains("scope=\"mcp:tools mcp:admin\""), "{c}");
    let answer = call_with(with(json!({"scope": "mcp:tools mcp:admin"}))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    eprintln!("per-tool scope: echo without mcp:admin 403 {c}; with it 200");
    // tools/list shows a token only the tools it may call.
    let names = |answer: Answer| -> Vec<String> {
        let text = answer.text().to_owned();
        let json = text
            .lines()
            .find_map(|l| l.strip_prefix("data:").map(str::trim))
            .unwrap_or(text.trim())
            .to_owned();
        let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {text}"));
        v["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("no tools: {text}"))
            .iter()
            .map(|t| t["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let without = names(list(&url, Some(&valid)).await);
    assert!(!without.contains(&"echo".to_owned()), "{without:?}");
    assert!(without.contains(&"progress".to_owned()), "{without:?}");
    let admin = with(json!({"scope": "mcp:tools mcp:admin"}));
    assert_eq!(list(&url, Some(&admin)).await.status, StatusCode::OK);
    let with_admin = names(list(&url, Some(&admin)).await);
    assert!(with_admin.contains(&"echo".to_owned()), "{with_admin:?}");
    eprintln!("tools/list: {without:?} without mcp:admin, {with_admin:?} with it");
    // A repeated `name` in a legacy call (no Mcp-Name to check it against; the SDK server
    // runs the last one): not judged by a name the relay cannot read, refused.
    let auth = format!("Bearer {valid}");
    let client = Client::new();
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"rs-test","version":"0"}}}"#;
    let answer = client
        .post_read(&url, &[("authorization", &auth)], init)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let sid = answer
        .header("mcp-session-id")
        .expect("a session")
        .to_owned();
    let session = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
        ("authorization", auth.as_str()),
    ];
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    client.post_read(&url, &session, initialized).await;
    let sneaky = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"progress","name":"echo","arguments":{"text":"x"}}}"#;
    let answer = client.post_read(&url, &session, sneaky).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
    assert!(challenge(&answer).contains("invalid_request"));

    // Rotation: the authorization server restarts with a new signing key; a token of the
    // SDK's flow signed with it is accepted by the running relay.
    let port = as_.port();
    as_.kill().await;
    let as_ = provider(&keys, port, true).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // jwks_min_refresh = 1 s
    let summary = ts_oauth(&url, "dave", &["--print-token"]).await;
    let token = summary["access_token"].as_str().expect("access_token");
    let kid = jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid");
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(&keys).expect("keys")).expect("JWKS");
    assert_eq!(
        jwks["keys"][0]["kid"],
        kid.as_str(),
        "signed with the new key"
    );
    assert_ne!(jwks["keys"][1]["kid"], kid.as_str());
    assert_eq!(
        list(&url, Some(token)).await.status,
        StatusCode::OK,
        "the rotated key is used"
    );
    // The old key is still published: a token of it still passes.
    assert_eq!(list(&url, Some(&valid)).await.status, StatusCode::OK);
    drop(as_);

    let metrics = daemon.metrics().render();
    for (name, at_least) in [
        ("mcp_relay_auth_accepted_total", 5.0),
        ("mcp_relay_auth_missing_total", 1.0),
        ("mcp_relay_auth_invalid_total", 6.0),
        ("mcp_relay_auth_insufficient_scope_total", 2.0),
    ] {
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}"));
        assert!(value >= at_least, "{name} = {value}");
    }
    stop(daemon).await;
}

/// A legacy session is bound to the subject of the token that created it: another subject's
/// (valid) token naming it gets `404`, and the upstream never sees that request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_subjects_token_does_not_find_a_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys.json");
    let as_ = provider(&keys, 0, false).await;
    let log = dir.path().join("requests.log");
    let upstream = Peer::py_server(&["--request-log", log.to_str().expect("UTF-8")]).await;
    let (data, relay) = bind().await;
    let daemon = start(
        data,
        vec![rs_route(&relay, "/mcp/rs", &upstream.url(), &issuer(&as_))],
    )
    .await;
    let url = format!("http://{}/mcp/rs", daemon.data_addr());
    // Two real users' tokens, from the SDK's flow.
    let alice = ts_oauth(&url, "alice", &["--print-token"]).await;
    let bob = ts_oauth(&url, "bob", &["--print-token"]).await;
    let (alice, bob) = (
        format!("Bearer {}", alice["access_token"].as_str().expect("token")),
        format!("Bearer {}", bob["access_token"].as_str().expect("token")),
    );
    let client = Client::new();
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"rs-test","version":"0"}}}"#;
    let answer = client
        .post_read(&url, &[("authorization", &alice)], init)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let sid = answer
        .header("mcp-session-id")
        .expect("a session")
        .to_owned();
    // The operator sees whom the session is bound to (never a token).
    let admin = daemon.admin_addr().expect("admin address").to_string();
    let shown = grpcurl_json(
        &admin,
        &[
            "-d",
            &format!(r#"{{"name":"sessions/{sid}"}}"#),
            "--",
            "mcprelay.admin.v1.SessionService/GetSession",
        ],
    )
    .await;
    assert_eq!(
        shown["subject"],
        format!("{} alice", issuer(&as_)),
        "{shown}"
    );
    let session = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let mut headers = session.to_vec();
    headers.push(("authorization", &alice));
    assert_eq!(
        client.post_read(&url, &headers, initialized).await.status,
        StatusCode::ACCEPTED
    );

    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"secret"}}}"#;
    let mut as_bob = session.to_vec();
    as_bob.push(("authorization", &bob));
    let answer = client.post_read(&url, &as_bob, call).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], -32001);
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !seen.contains("tools/call echo"),
        "the upstream saw bob's call: {seen}"
    );

    // Alice's own call on it works (the session was not touched), and reaches the upstream.
    let answer = client.post_read(&url, &headers, call).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(answer.text().contains("secret"), "{}", answer.text());
    let seen = std::fs::read_to_string(&log).expect("log");
    assert_eq!(seen.matches("tools/call echo").count(), 1, "{seen}");
    drop(as_);
    stop(daemon).await;
}

/// Forged `kid`s, and stale keys while the authorization server fails, do not make the relay
/// hammer it: its keys are fetched at most once per `jwks_min_refresh`, however many requests
/// name keys it lacks or find the keys stale; tokens of a key it holds keep passing meanwhile. (An authorization server of
/// the test's own here, counting the fetches; the fixture key of `benches/fixtures`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_ids_fetch_the_keys_at_most_once_per_interval() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let fetches = std::sync::Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let metadata = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}).to_string();
    let jwks = include_str!("../benches/fixtures/rs256-test-jwks.json");
    let counted = fetches.clone();
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fails = failing.clone();
    let router = axum::Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            axum::routing::get(move || async move { metadata }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let status = if fails.load(Ordering::SeqCst) {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                };
                async move { (status, jwks) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });

    let upstream = Peer::py_server(&[]).await;
    let (data, relay) = bind().await;
    let mut route = rs_route(&relay, "/mcp/rs", &upstream.url(), &issuer);
    if let Some(auth) = &mut route.auth {
        auth.jwks_min_refresh = Duration::from_secs(30);
    }
    let daemon = start(data, vec![route]).await;
    let url = format!("{relay}/mcp/rs");
    let key = EncodingKey::from_rsa_pem(include_bytes!("../benches/fixtures/rs256-test-key.pem"))
        .expect("the fixture key");
    let sign = |kid: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        header.typ = Some("at+jwt".into());
        let t = now();
        let claims = json!({"iss": issuer, "sub": "erin", "aud": url, "exp": t + 300, "iat": t, "scope": "mcp:tools"});
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    };
    assert_eq!(
        list(&url, Some(&sign("bench-1"))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "the first token fetched the keys"
    );
    for i in 0..20 {
        let answer = list(&url, Some(&sign(&format!("forged-{i}")))).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text());
        assert!(challenge(&answer).contains("key is not the authorization server's"));
    }
    // Within jwks_min_refresh of the first fetch: none more.
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "forged kids fetched the keys again"
    );
    assert_eq!(
        list(&url, Some(&sign("bench-1"))).await.status,
        StatusCode::OK
    );
    stop(daemon).await;

    // Stale keys (jwks_max_age 1 s) and an authorization server answering 500: one fetch per
    // second at most, and the keys held keep serving.
    let (data, relay) = bind().await;
    let mut route = rs_route(&relay, "/mcp/rs", &upstream.url(), &issuer);
    if let Some(auth) = &mut route.auth {
        auth.jwks_min_refresh = Duration::from_secs(1);
        auth.jwks_max_age = Duration::from_secs(1);
    }
    let daemon = start(data, vec![route]).await;
    let url = format!("{relay}/mcp/rs");
    let sign = |jti: usize| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("bench-1".into());
        header.typ = Some("at+jwt".into());
        let t = now();
        let claims = json!({"iss": issuer, "sub": "erin", "aud": url, "exp": t + 300, "iat": t, "scope": "mcp:tools", "jti": jti});
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    };
    let before = fetches.load(Ordering::SeqCst);
    assert_eq!(list(&url, Some(&sign(0))).await.status, StatusCode::OK);
    failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = std::time::Instant::now();
    for jti in 1..=30 {
        // A new token each time: none is in the accepted-token cache.
        assert_eq!(list(&url, Some(&sign(jti))).await.status, StatusCode::OK);
    }
    let elapsed = started.elapsed().as_secs() as usize;
    let fetched = fetches.load(Ordering::SeqCst) - before;
    eprintln!("30 tokens over {elapsed} s with stale keys and a failing server: {fetched} fetches");
    assert!(fetched <= 2 + elapsed, "{fetched} fetches in {elapsed} s");
    stop(daemon).await;
}

/// Opaque access tokens (the authorization server issues no JWTs) are introspected (RFC 7662)
/// by the relay as a confidential client: the TypeScript SDK's flow through the relay works with
/// them; a token the server says is not active is refused `401 invalid_token`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_are_introspected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys.json");
    let port = "0";
    let as_ = Peer::node(
        "oidc_provider.mjs",
        &[
            "--port",
            port,
            "--key-file",
            keys.to_str().expect("UTF-8"),
            "--opaque",
        ],
    )
    .await;
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "mcp-relay-cc-secret\n").expect("write the secret");
    let upstream = Peer::py_server(&[]).await;
    let (data, relay) = bind().await;
    let mut route = rs_route(&relay, "/mcp/rs", &upstream.url(), &issuer(&as_));
    if let Some(auth) = &mut route.auth {
        auth.client_id = "mcp-relay-cc".into();
        auth.client_secret_file = Some(secret);
    }
    let daemon = start(data, vec![route]).await;
    let url = format!("{relay}/mcp/rs");
    let summary = ts_oauth(
        &url,
        "frank",
        &[
            "--tool",
            "echo",
            "--args",
            r#"{"text":"opaque"}"#,
            "--print-token",
        ],
    )
    .await;
    assert_eq!(summary["result_text"], "opaque", "{summary}");
    let token = summary["access_token"].as_str().expect("token");
    assert!(
        jsonwebtoken::decode_header(token).is_err(),
        "an opaque token, not a JWT: {token}"
    );
    eprintln!(
        "opaque token {}… introspected; the SDK's call went through",
        &token[..8]
    );
    let answer = list(&url, Some("not-a-token-the-server-issued")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let c = challenge(&answer);
    assert!(
        c.contains("invalid_token") && c.contains("not active"),
        "{c}"
    );
    stop(daemon).await;
}
