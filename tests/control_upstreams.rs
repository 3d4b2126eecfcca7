//! `mcprelay.admin.v1.UpstreamService` driven with grpcurl against a live mcp-relay whose route
//! `/pool` balances over two official Python SDK servers (beside the `/mcp` shorthand route to
//! the first): the routes and endpoints listed, a session pinned to its endpoint and counted
//! there (and listed by route), a drain that keeps new work off its endpoint while the session
//! pinned to it goes on, an undrain, the watch telling the drain as it happens and ending at
//! shutdown, and the refusals.

mod support;

use std::{process::Stdio, time::Duration};

use mcp_relay::config::RouteConfig;
use serde_json::{Value, json};
use support::{
    admin::{error_code, grpcurl_error},
    http::Client,
    peers::{Peer, grpcurl, grpcurl_bin, grpcurl_json, hold_client, run_client},
    start_proxy_with,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

const UPSTREAMS: &str = "mcprelay.admin.v1.UpstreamService";
const SESSIONS: &str = "mcprelay.admin.v1.SessionService";
/// A sessionless (modern) request the balancer places anew each time.
const MODERN_LIST: &str = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
/// How long a watch message may take to come.
const WAIT: Duration = Duration::from_secs(10);

/// `grpcurl -plaintext -emit-defaults -d <body> <addr> <UpstreamService/method>`, parsed.
async fn call(addr: &str, method: &str, body: Value) -> Value {
    grpcurl_json(
        addr,
        &[
            "-emit-defaults",
            "-d",
            &body.to_string(),
            "--",
            &format!("{UPSTREAMS}/{method}"),
        ],
    )
    .await
}

/// The same call, expected to fail: its gRPC code and message.
async fn call_error(addr: &str, method: &str, body: Value) -> (String, String) {
    grpcurl_error(
        addr,
        &[
            "-d",
            &body.to_string(),
            "--",
            &format!("{UPSTREAMS}/{method}"),
        ],
    )
    .await
}

fn u64_field(v: &Value) -> u64 {
    v.as_str()
        .unwrap_or_else(|| panic!("a uint64 as a JSON string, got {v}"))
        .parse()
        .expect("uint64")
}

/// The endpoints of route `/pool`, by URL.
async fn pool(addr: &str) -> Vec<Value> {
    let listed = call(addr, "ListEndpoints", json!({"route": "/pool"})).await;
    listed["endpoints"].as_array().expect("endpoints").clone()
}

/// The endpoint `url` of `/pool`.
async fn endpoint(addr: &str, url: &str) -> Value {
    pool(addr)
        .await
        .into_iter()
        .find(|e| e["url"] == url)
        .unwrap_or_else(|| panic!("no endpoint {url} in /pool"))
}

/// `requests` of the endpoint `url` of `/pool`.
async fn requests(addr: &str, url: &str) -> u64 {
    u64_field(&endpoint(addr, url).await["requests"])
}

/// Sends `n` sessionless (modern) `tools/list` requests to `url`; each must be answered `200`.
async fn modern_requests(url: &str, n: usize) {
    let client = Client::new();
    for _ in 0..n {
        let answer = client
            .post_read(
                url,
                &[
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/list"),
                ],
                MODERN_LIST,
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
}

/// The session names `ListSessions` returns for `filter`.
async fn listed(addr: &str, filter: &str) -> Vec<String> {
    let listed = grpcurl_json(
        addr,
        &[
            "-d",
            &json!({ "filter": filter }).to_string(),
            "--",
            &format!("{SESSIONS}/ListSessions"),
        ],
    )
    .await;
    listed["sessions"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| s["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A `grpcurl … WatchEndpoints` running as a child, its messages read as they come.
struct EndpointWatch {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl EndpointWatch {
    fn start(addr: &str, body: Value) -> Self {
        let mut child = Command::new(grpcurl_bin())
            .args([
                "-plaintext",
                "-emit-defaults",
                "-d",
                &body.to_string(),
                addr,
            ])
            .arg(format!("{UPSTREAMS}/WatchEndpoints"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn grpcurl");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self { child, lines }
    }

    /// The next message (grpcurl prints each as indented JSON), within [`WAIT`].
    async fn next(&mut self) -> Value {
        let read = async {
            let mut text = String::new();
            while let Some(line) = self.lines.next_line().await.expect("read grpcurl") {
                text.push_str(&line);
                text.push('\n');
                if let Ok(message) = serde_json::from_str::<Value>(&text) {
                    return message;
                }
            }
            panic!("the watch ended; received so far: {text}");
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("a watch message within the wait")
    }

    /// The next message whose endpoint `url` has `drained` as given (each message is the
    /// whole state, so other changes may come first).
    async fn until_drained(&mut self, url: &str, drained: bool) -> Value {
        loop {
            let message = self.next().await;
            let endpoint = message["endpoints"]
                .as_array()
                .expect("endpoints")
                .iter()
                .find(|e| e["url"] == url)
                .unwrap_or_else(|| panic!("no endpoint {url}: {message}"))
                .clone();
            if endpoint["drained"] == drained {
                return endpoint;
            }
        }
    }

    /// Waits (bounded) for grpcurl to exit; returns the gRPC code it reported.
    async fn ended(mut self) -> Option<String> {
        let mut stderr = String::new();
        let mut pipe = self.child.stderr.take().expect("stderr");
        tokio::time::timeout(WAIT, async {
            pipe.read_to_string(&mut stderr).await.expect("stderr");
            self.child.wait().await.expect("grpcurl exits")
        })
        .await
        .expect("the watch ends promptly at shutdown");
        error_code(&stderr).map(|(code, _)| code)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_drains_and_watches_the_endpoints_of_a_live_pool() {
    let first = Peer::py_server(&[]).await;
    let second = Peer::py_server(&[]).await;
    let urls = [first.url(), second.url()];
    let proxy = start_proxy_with(&first.url(), |c| {
        c.routes = vec![RouteConfig::new("/pool", urls.clone())];
    })
    .await;
    let admin = proxy
        .admin_addr()
        .expect("the control plane listens on TCP")
        .to_string();
    let a = &admin;
    let pool_url = format!("http://{}/pool", proxy.data_addr());

    // Reflection and health know the service.
    let (ok, described, err) = grpcurl(a, &["--", "describe", UPSTREAMS]).await;
    assert!(ok, "{err}");
    for rpc in [
        "ListRoutes",
        "ListEndpoints",
        "DrainEndpoint",
        "UndrainEndpoint",
        "WatchEndpoints",
    ] {
        assert!(described.contains(&format!("rpc {rpc} (")), "{described}");
    }
    let health = grpcurl_json(
        a,
        &[
            "-d",
            &json!({ "service": UPSTREAMS }).to_string(),
            "--",
            "grpc.health.v1.Health/Check",
        ],
    )
    .await;
    assert_eq!(health["status"], "SERVING");

    // The routes: the shorthand's, then `/pool`, with their effective settings.
    let routes = call(a, "ListRoutes", json!({})).await;
    assert_eq!(u64_field(&routes["generation"]), 1);
    let routes = routes["routes"].as_array().expect("routes");
    let summary: Vec<(&str, &str, u64)> = routes
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap(),
                r["path"].as_str().unwrap(),
                r["endpointCount"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, [("/mcp", "/mcp", 1), ("/pool", "/pool", 2)]);
    assert_eq!(routes[1]["availableEndpointCount"], 2);
    assert_eq!(routes[1]["responseTimeout"], "60s");
    assert_eq!(routes[1]["healthCheck"], "HEALTH_CHECK_KIND_NONE");

    // The endpoints: every route's, or one route's.
    let all = call(a, "ListEndpoints", json!({})).await;
    let all: Vec<(&str, &str)> = all["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| (e["route"].as_str().unwrap(), e["url"].as_str().unwrap()))
        .collect();
    assert_eq!(
        all,
        [
            ("/mcp", urls[0].as_str()),
            ("/pool", urls[0].as_str()),
            ("/pool", urls[1].as_str())
        ]
    );
    for e in pool(a).await {
        assert_eq!(e["health"], "ENDPOINT_HEALTH_HEALTHY", "{e}");
        assert_eq!(
            (&e["drained"], &e["retired"]),
            (&json!(false), &json!(false))
        );
        assert_eq!(e["weight"], 1);
    }

    // A legacy session of the official SDK client on `/pool`: pinned to one endpoint, counted
    // there (on `/pool` only), and listed by its route.
    let held = hold_client(
        &pool_url,
        &[
            "--mode",
            "legacy",
            "--tool",
            "progress",
            "--steps",
            "2",
            "--delay-ms",
            "10",
        ],
    )
    .await;
    let sid = held.session_id.clone().expect("a session id");
    let session = grpcurl_json(
        a,
        &[
            "-d",
            &json!({ "name": format!("sessions/{sid}") }).to_string(),
            "--",
            &format!("{SESSIONS}/GetSession"),
        ],
    )
    .await;
    assert_eq!(session["route"], "/pool");
    let pinned = session["upstream"].as_str().expect("upstream").to_owned();
    let other = urls
        .iter()
        .find(|u| **u != pinned)
        .expect("two endpoints")
        .clone();
    assert!(urls.contains(&pinned), "{pinned}");
    assert_eq!(u64_field(&endpoint(a, &pinned).await["sessionsPinned"]), 1);
    assert_eq!(u64_field(&endpoint(a, &other).await["sessionsPinned"]), 0);
    let mcp_route = call(a, "ListEndpoints", json!({"route": "/mcp"})).await;
    assert_eq!(u64_field(&mcp_route["endpoints"][0]["sessionsPinned"]), 0);
    assert_eq!(
        listed(a, r#"route = "/pool""#).await,
        [format!("sessions/{sid}")]
    );
    assert!(listed(a, r#"route = "/mcp""#).await.is_empty());
    assert_eq!(
        listed(a, &format!(r#"route = "/pool" AND upstream = "{pinned}""#)).await,
        [format!("sessions/{sid}")]
    );

    // The watch's first message is the current state.
    let mut watch = EndpointWatch::start(a, json!({"route": "/pool"}));
    let current = watch.next().await;
    assert_eq!(u64_field(&current["generation"]), 1);
    assert_eq!(current["endpoints"].as_array().map(Vec::len), Some(2));
    assert!(current["observeTime"].as_str().is_some());

    // Drain the session's endpoint: the watch tells, new work goes to the other one only.
    let drained = call(a, "DrainEndpoint", json!({"route": "/pool", "url": pinned})).await;
    assert_eq!(drained["drained"], true);
    assert_eq!(drained["url"], pinned.as_str());
    assert_eq!(watch.until_drained(&pinned, true).await["drained"], true);
    let routes = call(a, "ListRoutes", json!({})).await;
    assert_eq!(routes["routes"][1]["availableEndpointCount"], 1);
    let (before, before_other) = (requests(a, &pinned).await, requests(a, &other).await);
    modern_requests(&pool_url, 20).await;
    let summary = run_client(
        &pool_url,
        &[
            "--mode",
            "legacy",
            "--tool",
            "progress",
            "--steps",
            "1",
            "--delay-ms",
            "10",
        ],
    )
    .await;
    assert!(summary["session_id"].is_string(), "{summary}");
    assert_eq!(
        requests(a, &pinned).await,
        before,
        "the drained endpoint got no new session and no sessionless request"
    );
    assert!(requests(a, &other).await >= before_other + 20);
    // The session pinned to the drained endpoint goes on there: its ping and DELETE.
    let done = held.release().await;
    assert_eq!(done["ping_ok"], true, "{done}");
    assert!(requests(a, &pinned).await > before);

    // Undrained: it gets sessionless requests again.
    let undrained = call(
        a,
        "UndrainEndpoint",
        json!({"route": "/pool", "url": pinned}),
    )
    .await;
    assert_eq!(undrained["drained"], false);
    assert_eq!(watch.until_drained(&pinned, false).await["drained"], false);
    let before = requests(a, &pinned).await;
    modern_requests(&pool_url, 40).await;
    assert!(
        requests(a, &pinned).await > before,
        "40 requests over two endpoints, none to the undrained one"
    );

    // Refusals: unknown route or URL, empty fields, a watch or listing of no route.
    for (method, body, code) in [
        (
            "DrainEndpoint",
            json!({"route": "/nope", "url": pinned}),
            "NotFound",
        ),
        (
            "UndrainEndpoint",
            json!({"route": "/pool", "url": "http://127.0.0.1:1/mcp"}),
            "NotFound",
        ),
        (
            "DrainEndpoint",
            json!({"route": "/pool"}),
            "InvalidArgument",
        ),
        ("DrainEndpoint", json!({"url": pinned}), "InvalidArgument"),
        ("ListEndpoints", json!({"route": "/nope"}), "NotFound"),
        ("WatchEndpoints", json!({"route": "/nope"}), "NotFound"),
    ] {
        let (got, message) = call_error(a, method, body.clone()).await;
        assert_eq!(got, code, "{method} {body}: {message}");
    }
    let (_, message) = call_error(
        a,
        "DrainEndpoint",
        json!({"route": "/pool", "url": "http://127.0.0.1:1/mcp"}),
    )
    .await;
    assert!(
        message.contains("/pool") && message.contains(&pinned),
        "the message names the route and its endpoints: {message}"
    );

    // Shutdown ends the watch.
    proxy.shutdown().await.expect("clean shutdown");
    assert_eq!(watch.ended().await.as_deref(), Some("Unavailable"));
}
