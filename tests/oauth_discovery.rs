//! OAuth discovery through mcp-relay in transparent mode (issue 14, part 1): the upstream MCP
//! server is the OAuth resource server (the official Python SDK server with `AuthSettings` and a
//! token verifier, `tests/peers/py_auth_server.py`), and a route at another path than the
//! upstream's answers its discovery documents and challenges naming the relay: the protected-
//! resource metadata (RFC 9728) path-aware and root forms with `resource` = the relay's URL of
//! the route (or its `public_url`), the `401`/`403` `resource_metadata` on the relay's origin,
//! authorization-server metadata passed through. The official Python SDK client's discovery
//! accepts the relay's document for the URL it uses (and refuses one naming another), and a
//! token reaches the tool. A scripted upstream shows the faults: a fallback to the root form,
//! a document that is not JSON or too large, several challenges, refused methods and hosts.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, Uri};
use mcp_relay::{
    config::{Config, RouteConfig},
    daemon::Daemon,
};
use serde_json::Value;
use support::{
    http::{Answer, Client, read_full},
    peers::{Peer, run_script},
    pool::{route, start_routes, url_of},
    upstream::{Reply, TestUpstream},
};
use tokio::net::TcpListener;

/// The token the peer accepts, with its required scope.
const TOKEN: &str = "relay-test-token-7d41";
/// A token the peer accepts without any scope (`403 insufficient_scope`).
const NO_SCOPE: &str = "relay-test-token-noscope";
/// Upper bound of one Python driver run; never a performance assertion.
const DRIVER_WAIT: Duration = Duration::from_secs(120);

const PRM: &str = "/.well-known/oauth-protected-resource";
const ASM: &str = "/.well-known/oauth-authorization-server";

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;

async fn get(client: &Client, url: &str, headers: &[(&str, &str)]) -> Answer {
    read_full(client.send(Method::GET, url, headers, Bytes::new()).await).await
}

/// A legacy `initialize` to `url` with `headers`.
async fn initialize(client: &Client, url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut all = vec![("mcp-protocol-version", "2025-11-25")];
    all.extend_from_slice(headers);
    client.post_read(url, &all, INITIALIZE).await
}

async fn auth_peer() -> Peer {
    Peer::py_auth_server(&["--token", TOKEN, "--token-no-scope", NO_SCOPE]).await
}

/// The route `/mcp/secure` (the upstream serves `/mcp`) in front of the SDK server that requires
/// tokens: both well-known forms answer the upstream's document with only `resource` changed
/// (to the relay's URL of the route), `401` and `403` challenges name the relay's metadata URL
/// and change nothing else, the official Python SDK client's discovery accepts the document for
/// the relay URL, and with a token its tool call succeeds through the relay.
/// Authorization-server metadata passes unchanged (root form on the upstream), an OpenID
/// document the upstream does not serve is its `404`, and a path no route serves is the relay's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_through_the_relay_names_the_relay_and_a_token_reaches_the_tool() {
    let peer = auth_peer().await;
    let daemon = start_routes(vec![route("/mcp/secure", &[peer.url()])], |_| {}).await;
    let relay = url_of(&daemon, "/mcp/secure");
    let origin = format!("http://{}", daemon.data_addr());
    let upstream_origin = format!("http://127.0.0.1:{}", peer.port());
    let upstream_resource = format!("{upstream_origin}/mcp");
    let client = Client::new();

    // The upstream's own document and challenge, read directly.
    let direct = get(&client, &format!("{upstream_origin}{PRM}/mcp"), &[]).await;
    assert_eq!(direct.status, StatusCode::OK, "{}", direct.text());
    assert_eq!(direct.json()["resource"], upstream_resource.as_str());
    let direct_401 = initialize(&client, &peer.url(), &[]).await;
    assert_eq!(direct_401.status, StatusCode::UNAUTHORIZED);
    let direct_challenge = direct_401.header("www-authenticate").expect("challenge");
    let upstream_metadata_url = format!("{upstream_origin}{PRM}/mcp");
    assert!(
        direct_challenge.contains(&format!("resource_metadata=\"{upstream_metadata_url}\"")),
        "{direct_challenge}"
    );

    // The relay's document, path-aware (RFC 9728 §3.1) and root form (the only route).
    let expected = direct
        .text()
        .replace(&format!("\"{upstream_resource}\""), &format!("\"{relay}\""));
    assert_ne!(expected, direct.text());
    for path in [format!("{PRM}/mcp/secure"), PRM.to_owned()] {
        let answer = get(&client, &format!("{origin}{path}"), &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
        assert_eq!(
            answer.text(),
            expected,
            "{path}: only `resource` changes, byte for byte"
        );
        assert_eq!(answer.json()["resource"], relay.as_str());
        assert_eq!(
            answer.json()["authorization_servers"],
            direct.json()["authorization_servers"]
        );
        assert_eq!(answer.header("content-type"), direct.header("content-type"));
        assert_eq!(
            answer.header("cache-control"),
            direct.header("cache-control")
        );
    }

    // No token: the upstream's 401, its challenge naming the relay's metadata URL.
    let relay_metadata_url = format!("{origin}{PRM}/mcp/secure");
    let answer = initialize(&client, &relay, &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.header("www-authenticate"),
        Some(
            direct_challenge
                .replace(&upstream_metadata_url, &relay_metadata_url)
                .as_str()
        ),
        "only resource_metadata changes"
    );
    assert_eq!(answer.body, direct_401.body);
    // A token without the scope: 403 insufficient_scope, rewritten the same way.
    let bearer = format!("Bearer {NO_SCOPE}");
    let answer = initialize(&client, &relay, &[("authorization", &bearer)]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let challenge = answer.header("www-authenticate").expect("challenge");
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains(&format!("resource_metadata=\"{relay_metadata_url}\"")),
        "{challenge}"
    );

    // The official Python SDK client: discovery through the relay, then a tool call with a token.
    let summary = run_script(
        "py_oauth_client.py",
        &["--url", &relay, "--token", TOKEN],
        DRIVER_WAIT,
    )
    .await;
    assert_eq!(summary["discovery_error"], Value::Null, "{summary}");
    let exchanges = summary["exchanges"].as_array().expect("exchanges");
    assert_eq!(exchanges[0]["url"], relay.as_str(), "{summary}");
    assert_eq!(exchanges[0]["status"], 401, "{summary}");
    assert_eq!(
        exchanges[1]["url"],
        relay_metadata_url.as_str(),
        "the SDK follows the challenge's resource_metadata: {summary}"
    );
    assert_eq!(exchanges[1]["status"], 200, "{summary}");
    assert_eq!(summary["prm"]["resource"], relay.as_str(), "{summary}");
    let issuer = direct.json()["authorization_servers"][0].clone();
    assert_eq!(summary["auth_server_url"], issuer, "{summary}");
    assert!(
        summary["stopped_at"]
            .as_str()
            .is_some_and(|u| u.starts_with(&upstream_origin)),
        "next: the authorization server's metadata at the issuer: {summary}"
    );
    assert_eq!(summary["result_text"], "through the relay", "{summary}");
    assert!(
        summary["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|n| n == "echo")),
        "{summary}"
    );

    // Authorization-server metadata: the upstream's root document, unchanged, for both forms.
    let direct_as = get(&client, &format!("{upstream_origin}{ASM}"), &[]).await;
    assert_eq!(direct_as.status, StatusCode::OK);
    for path in [ASM.to_owned(), format!("{ASM}/mcp/secure")] {
        let answer = get(&client, &format!("{origin}{path}"), &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.body, direct_as.body, "{path}: passed unchanged");
    }
    // OpenID discovery the upstream does not serve: its 404 passes through.
    let direct_oidc = get(
        &client,
        &format!("{upstream_origin}/.well-known/openid-configuration"),
        &[],
    )
    .await;
    let answer = get(
        &client,
        &format!("{origin}/.well-known/openid-configuration/mcp/secure"),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body, direct_oidc.body, "the upstream's own 404");
    // A resource path no route serves: the relay's own 404.
    let answer = get(&client, &format!("{origin}{PRM}/mcp/other"), &[]).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json()["error"]["code"], -32600);
    daemon.shutdown().await.expect("clean shutdown");
}

/// Starts mcp-relay on a listener bound first, so `routes` may name the relay's own address.
async fn start_bound(routes: impl FnOnce(&str) -> Vec<RouteConfig>) -> Daemon {
    let data = TcpListener::bind("127.0.0.1:0").await.expect("bind data");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let addr = data.local_addr().expect("data address").to_string();
    let mut config = Config::new(Uri::default());
    config.shutdown_grace = Duration::from_secs(2);
    config.routes = routes(&addr);
    Daemon::start(config, data, admin)
        .await
        .expect("start mcp-relay")
}

/// A route's `public_url` wins: its document's `resource` is that URL and its challenge names
/// the metadata URL on that origin and path, which the relay answers too. The root form is
/// the route at `proxy.endpoint_path` when there are several. And the SDK client's resource
/// check is live: a route whose public URL is another path of the relay is refused by the SDK
/// for the URL it used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_url_wins_and_the_root_form_is_the_endpoint_path_route() {
    let peer = auth_peer().await;
    let upstream = peer.url();
    let daemon = start_bound(|addr| {
        let mut public = route("/mcp/secure", std::slice::from_ref(&upstream));
        public.public_url = Some("https://mcp.example.com/tools/secure".into());
        let mut elsewhere = route("/mcp/moved", std::slice::from_ref(&upstream));
        elsewhere.public_url = Some(format!("http://{addr}/elsewhere"));
        vec![
            public,
            elsewhere,
            route("/mcp", std::slice::from_ref(&upstream)),
        ]
    })
    .await;
    let origin = format!("http://{}", daemon.data_addr());
    let client = Client::new();

    for path in ["/mcp/secure", "/tools/secure"] {
        let answer = get(&client, &format!("{origin}{PRM}{path}"), &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
        assert_eq!(
            answer.json()["resource"],
            "https://mcp.example.com/tools/secure"
        );
    }
    let answer = initialize(&client, &format!("{origin}/mcp/secure"), &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let challenge = answer.header("www-authenticate").expect("challenge");
    assert!(
        challenge.contains(
            "resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/tools/secure\""
        ),
        "{challenge}"
    );

    // Three routes: the root form is the one at proxy.endpoint_path (`/mcp`).
    let answer = get(&client, &format!("{origin}{PRM}"), &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["resource"], format!("{origin}/mcp"));

    // The SDK client refuses a document whose resource is not the URL it uses.
    let moved = format!("{origin}/mcp/moved");
    let summary = run_script("py_oauth_client.py", &["--url", &moved], DRIVER_WAIT).await;
    assert_eq!(
        summary["exchanges"][1]["url"],
        format!("{origin}{PRM}/elsewhere"),
        "{summary}"
    );
    assert_eq!(summary["exchanges"][1]["status"], 200, "{summary}");
    let error = summary["discovery_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("{origin}/elsewhere")) && error.contains("does not match"),
        "{summary}"
    );
    // The same client accepts the route that names itself.
    let summary = run_script(
        "py_oauth_client.py",
        &["--url", &format!("{origin}/mcp")],
        DRIVER_WAIT,
    )
    .await;
    assert_eq!(summary["discovery_error"], Value::Null, "{summary}");
    assert_eq!(summary["prm"]["resource"], format!("{origin}/mcp"));
    daemon.shutdown().await.expect("clean shutdown");
}

/// Faults, with a scripted upstream behind the `proxy.upstream` route at `/mcp`: a path-aware
/// `404` falls back to the root form (the client's `Authorization` reaching it untouched, no
/// `Accept-Encoding`); a document that is not JSON, or larger than 64 KiB, is a `502`; every
/// `resource_metadata` of several challenges is rewritten and nothing else; methods other than
/// `GET`/`OPTIONS` get `405` and a `Host` not served `421` before the upstream is asked.
#[tokio::test]
async fn faults_of_the_upstream_and_the_client_get_clear_answers() {
    let upstream = TestUpstream::start().await;
    let daemon = support::start_proxy(&upstream.url()).await;
    let origin = format!("http://{}", daemon.data_addr());
    let resource = format!("{origin}/mcp");
    let client = Client::new();
    let prm = format!("{origin}{PRM}/mcp");

    // Path-aware 404, then the root form.
    upstream.push(Reply::status(404, "no"));
    upstream.push(Reply::json(
        r#"{"resource":"http://10.0.0.7/mcp","authorization_servers":["https://as.example"]}"#,
    ));
    let answer = get(
        &client,
        &prm,
        &[
            ("authorization", "Bearer opaque-123"),
            ("accept-encoding", "gzip"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        answer.text(),
        format!(r#"{{"resource":"{resource}","authorization_servers":["https://as.example"]}}"#)
    );
    let asked = upstream.wait_for_requests(2).await;
    assert_eq!(asked[0].uri.path(), format!("{PRM}/mcp"));
    assert_eq!(asked[1].uri.path(), PRM);
    for request in &asked {
        assert_eq!(request.method, Method::GET);
        assert_eq!(request.header("authorization"), Some("Bearer opaque-123"));
        assert_eq!(request.header("accept-encoding"), None);
        assert_eq!(request.header("host"), Some(upstream.authority().as_str()));
    }

    // Not JSON; too large: 502 with a JSON-RPC error, nothing of the upstream's body.
    upstream.push(Reply::status(200, "<html>metadata</html>").header("content-type", "text/html"));
    let big = format!(r#"{{"resource":"x","pad":"{}"}}"#, "a".repeat(70 * 1024));
    upstream.push(Reply::json(&big));
    for _ in 0..2 {
        let answer = get(&client, &prm, &[]).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
        assert_eq!(answer.json()["error"]["code"], -32603);
        assert!(!answer.text().contains("html") && !answer.text().contains("aaaa"));
    }

    // Two challenge lines on the MCP endpoint: each resource_metadata rewritten, the rest kept.
    upstream.push(
        Reply::status(401, r#"{"error":"invalid_token"}"#)
            .header("content-type", "application/json")
            .header(
                "www-authenticate",
                r#"Bearer realm="up", resource_metadata="http://10.0.0.7/.well-known/oauth-protected-resource/mcp", error="invalid_token""#,
            )
            .header("www-authenticate", r#"Basic realm="resource_metadata=\"x\"""#),
    );
    let answer = initialize(&client, &format!("{origin}/mcp"), &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let challenges: Vec<&str> = answer
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().expect("ASCII"))
        .collect();
    assert_eq!(
        challenges,
        [
            format!(
                r#"Bearer realm="up", resource_metadata="{origin}{PRM}/mcp", error="invalid_token""#
            )
            .as_str(),
            r#"Basic realm="resource_metadata=\"x\"""#,
        ]
    );
    assert_eq!(answer.text(), r#"{"error":"invalid_token"}"#);

    // Refused before the upstream: a method, a Host.
    let seen = upstream.requests().len();
    let answer = read_full(client.send(Method::POST, &prm, &[], "{}").await).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.header("allow"), Some("GET, OPTIONS"));
    let answer = get(&client, &prm, &[("host", "evil.example")]).await;
    assert_eq!(answer.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(
        upstream.requests().len(),
        seen,
        "the upstream was not asked"
    );
    daemon.shutdown().await.expect("clean shutdown");
}
