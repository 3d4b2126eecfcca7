//! The interceptors (issue 15). The tool policy: a route's `[routes.policy]` hides denied tools from
//! `tools/list` and answers their `tools/call` itself, so the upstream never sees them — shown
//! with the official Python SDK client in both eras and the official TypeScript SDK client
//! (legacy era, its only one) against the official Python SDK server, whose own request log
//! (`--request-log`) is the evidence of what reached it. Scripted clients show the SSE and
//! JSON answer paths, batches, resources and prompts, and that a route without a policy passes
//! every byte. Rate limits: a burst past a client's bucket gets exact `429`s with
//! `Retry-After` while another client (told apart by a trusted proxy's `X-Forwarded-For`) is
//! served.

mod support;

use std::time::Duration;

use mcp_relay::config::{PolicyConfig, RateLimitConfig};
use serde_json::Value;
use support::{
    admin::grpcurl_error,
    http::Client,
    peers::{Peer, grpcurl_json, run_script},
    pool::{MODERN, message_of, route, run_ts_policy_client, start_routes, tool_names, url_of},
};

/// Upper bound of one driver run; never a performance assertion.
const DRIVER_WAIT: Duration = Duration::from_secs(120);

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;

/// The policy of the must-show: `delete_*` allowed by a glob, then denied (deny wins); `ask`
/// absent from the allow list.
fn tools_policy() -> PolicyConfig {
    PolicyConfig {
        allow_tools: vec!["echo".into(), "progress".into(), "delete_*".into()],
        deny_tools: vec!["delete_*".into()],
        ..Default::default()
    }
}

/// The lines of the upstream's request log naming `tools/call` of `tool`.
fn calls_of(log: &std::path::Path, tool: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| *l == format!("tools/call {tool}"))
        .count()
}

fn decisions(daemon: &mcp_relay::daemon::Daemon, route: &str, decision: &str) -> f64 {
    let text = daemon.metrics().render();
    let labels = format!(
        "mcp_relay_interceptor_decisions_total{{route=\"{route}\",interceptor=\"policy\",decision=\"{decision}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&labels)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {labels} in /metrics"))
}

/// The must-show. Directly, the upstream lists and runs `delete_all` (and logs the call);
/// through the route with the policy, for the Python SDK client in the legacy and the
/// 2026-07-28 era and the TypeScript SDK client: `tools/list` has only the allowed tools,
/// `delete_all` gets `-32602` "Unknown tool: delete_all", `echo` works — and the upstream's log
/// shows no `tools/call delete_all` beyond the direct one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_tool_is_hidden_and_never_reaches_the_upstream_for_python_and_typescript_clients()
{
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.log");
    let log_arg = log.to_str().unwrap().to_owned();
    let peer = Peer::py_server(&["--delete-tool", "--request-log", &log_arg]).await;

    // The control: the upstream itself lists delete_all and runs it.
    let direct = run_script(
        "py_policy_client.py",
        &["--url", &peer.url(), "--mode", "legacy"],
        DRIVER_WAIT,
    )
    .await;
    assert!(
        tool_names(&direct).contains(&"delete_all".to_owned()),
        "{direct}"
    );
    assert_eq!(direct["denied_result"], "deleted", "{direct}");
    assert_eq!(
        calls_of(&log, "delete_all"),
        1,
        "the upstream logs each call"
    );

    let mut r = route("/mcp/tools", &[peer.url()]);
    r.policy = Some(tools_policy());
    let daemon = start_routes(vec![r], |_| {}).await;
    let url = url_of(&daemon, "/mcp/tools");

    let denied = serde_json::json!({"code": -32602, "message": "Unknown tool: delete_all"});
    for mode in ["legacy", "modern"] {
        let summary = run_script(
            "py_policy_client.py",
            &["--url", &url, "--mode", mode],
            DRIVER_WAIT,
        )
        .await;
        let version = if mode == "modern" {
            MODERN
        } else {
            "2025-11-25"
        };
        assert_eq!(summary["protocol_version"], version, "{summary}");
        assert_eq!(
            tool_names(&summary),
            ["progress", "echo"],
            "{mode}: {summary}"
        );
        assert_eq!(summary["allowed_text"], "allowed", "{mode}: {summary}");
        assert_eq!(summary["denied_error"], denied, "{mode}: {summary}");
        assert_eq!(summary["denied_result"], Value::Null, "{mode}");
    }
    let ts = run_ts_policy_client(&url, "echo", "delete_all").await;
    assert_eq!(tool_names(&ts), ["progress", "echo"], "{ts}");
    assert_eq!(ts["allowed_text"], "allowed", "{ts}");
    assert_eq!(ts["denied_error"], denied, "{ts}");

    assert_eq!(
        calls_of(&log, "delete_all"),
        1,
        "only the direct call reached the upstream"
    );
    assert_eq!(
        calls_of(&log, "echo"),
        4,
        "every allowed call did (the direct one and three through the relay)"
    );
    assert_eq!(decisions(&daemon, "/mcp/tools", "answer"), 3.0);
    assert_eq!(
        decisions(&daemon, "/mcp/tools", "change"),
        3.0,
        "three tools/list answers filtered"
    );

    // The control plane shows the policy and its decisions (grpcurl, reflection).
    let admin = daemon.admin_addr().expect("TCP control plane").to_string();
    let shown = grpcurl_json(
        &admin,
        &[
            "-d",
            r#"{"route":"/mcp/tools"}"#,
            "--",
            "mcprelay.admin.v1.UpstreamService/GetRoutePolicy",
        ],
    )
    .await;
    assert_eq!(shown["route"], "/mcp/tools");
    assert_eq!(
        shown["denyTools"],
        serde_json::json!(["delete_*"]),
        "{shown}"
    );
    assert_eq!(
        shown["allowTools"],
        serde_json::json!(["echo", "progress", "delete_*"])
    );
    assert_eq!(shown["interceptors"][0]["name"], "policy", "{shown}");
    assert_eq!(shown["interceptors"][0]["answered"], "3", "{shown}");
    assert_eq!(shown["interceptors"][0]["changed"], "3", "{shown}");
    assert!(shown.get("rateLimit").is_none(), "no limits: {shown}");
    let (code, _) = grpcurl_error(
        &admin,
        &[
            "-d",
            r#"{"route":"/nope"}"#,
            "--",
            "mcprelay.admin.v1.UpstreamService/GetRoutePolicy",
        ],
    )
    .await;
    assert_eq!(code, "NotFound");
    daemon.shutdown().await.expect("clean shutdown");
}

/// What the relay answers a raw client for a route with a policy, on the upstream's SSE and
/// JSON answers alike: a filtered `tools/list` keeps the rest of the message (key order
/// included); a denied call in a legacy session carries the session id and the request's own
/// id; a batch with a denied call is answered whole by the relay and reaches nobody; resources
/// and prompts have their own lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_and_json_answers_batches_resources_and_prompts_follow_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    for json in [false, true] {
        let log = dir.path().join(format!("requests-{json}.log"));
        let log_arg = log.to_str().unwrap().to_owned();
        let mut args = vec!["--delete-tool", "--request-log", &log_arg];
        if json {
            args.push("--json-response");
        }
        let peer = Peer::py_server(&args).await;
        let mut r = route("/mcp/tools", &[peer.url()]);
        r.policy = Some(PolicyConfig {
            deny_resources: vec!["file:///secret/*".into()],
            deny_prompts: vec!["*".into()],
            ..tools_policy()
        });
        let daemon = start_routes(vec![r], |_| {}).await;
        let url = url_of(&daemon, "/mcp/tools");
        let client = Client::new();
        let base = [
            ("mcp-protocol-version", "2025-11-25"),
            ("accept", "application/json, text/event-stream"),
        ];
        let init = client.post_read(&url, &base, INITIALIZE).await;
        assert_eq!(init.status, 200, "{}", init.text());
        let sid = init.header("mcp-session-id").expect("session").to_owned();
        let mut headers = base.to_vec();
        headers.push(("mcp-session-id", &sid));
        client
            .post_read(
                &url,
                &headers,
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            )
            .await;

        let list = client
            .post_read(
                &url,
                &headers,
                r#"{"jsonrpc":"2.0","id":"list-1","method":"tools/list"}"#,
            )
            .await;
        let sse = list
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"));
        assert_eq!(sse, !json, "the upstream's own answer kind passes");
        let message = message_of(&list).expect("a message");
        assert_eq!(message["id"], "list-1");
        let names: Vec<&str> = message["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["progress", "echo"], "json={json}");
        let keys: Vec<&String> = message.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["jsonrpc", "id", "result"], "the server's key order");
        if json {
            assert_eq!(
                list.header("content-length"),
                Some(list.body.len().to_string().as_str()),
                "the length of the filtered body"
            );
        }

        let call = client
            .post_read(
                &url,
                &headers,
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete_all","arguments":{}}}"#,
            )
            .await;
        assert_eq!(call.status, 200);
        assert_eq!(call.header("mcp-session-id"), Some(sid.as_str()));
        assert_eq!(
            call.json(),
            serde_json::json!({"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"Unknown tool: delete_all"}})
        );

        let batch = client
            .post_read(
                &url,
                &headers,
                r#"[{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}},{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"delete_all"}}]"#,
            )
            .await;
        assert_eq!(batch.status, 200, "{}", batch.text());
        let answers = batch.json();
        assert_eq!(answers[0]["id"], 8);
        assert_eq!(answers[0]["error"]["code"], -32600);
        assert_eq!(answers[1]["id"], 9);
        assert_eq!(answers[1]["error"]["code"], -32602);

        for (body, message) in [
            (
                r#"{"jsonrpc":"2.0","id":10,"method":"resources/read","params":{"uri":"file:///secret/key"}}"#,
                "Resource not found: file:///secret/key",
            ),
            (
                r#"{"jsonrpc":"2.0","id":11,"method":"prompts/get","params":{"name":"greet"}}"#,
                "Unknown prompt: greet",
            ),
        ] {
            let answer = client.post_read(&url, &headers, body).await;
            assert_eq!(answer.json()["error"]["code"], -32602, "{body}");
            assert_eq!(answer.json()["error"]["message"], message, "{body}");
        }

        // Review finding: duplicate keys made the message unreadable to the relay (so
        // unjudged) while the upstream reads the last value.
        for body in [
            r#"{"jsonrpc":"2.0","id":12,"id":12,"method":"tools/call","params":{"name":"delete_all"}}"#,
            r#"[{"jsonrpc":"2.0","id":13,"method":"tools/call","method":"tools/call","params":{"name":"delete_all"}}]"#,
        ] {
            let answer = client.post_read(&url, &headers, body).await;
            assert_eq!(answer.status, 400, "{body}: {}", answer.text());
            assert_eq!(answer.json()["error"]["code"], -32600, "{body}");
        }
        assert!(
            daemon
                .metrics()
                .render()
                .contains("mcp_relay_interceptor_unreadable_refused_total 2"),
            "both refusals counted"
        );

        let log_text = std::fs::read_to_string(&log).unwrap();
        for absent in [
            "tools/call delete_all",
            "tools/call echo",
            "resources/read",
            "prompts/get",
        ] {
            assert!(
                !log_text.contains(absent),
                "json={json}: the upstream saw `{absent}`:\n{log_text}"
            );
        }
        assert!(log_text.contains("tools/list"), "{log_text}");
        daemon.shutdown().await.expect("clean shutdown");
    }
}

/// A route without a policy has no chain: the upstream's `tools/list` bytes and a tool call
/// pass untouched, and no interceptor series is exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_a_policy_passes_every_byte() {
    let peer = Peer::py_server(&["--delete-tool", "--json-response"]).await;
    let daemon = start_routes(vec![route("/mcp/open", &[peer.url()])], |_| {}).await;
    let client = Client::new();
    let headers = [
        ("mcp-protocol-version", MODERN),
        ("accept", "application/json, text/event-stream"),
        ("mcp-method", "tools/list"),
    ];
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let direct = client.post_read(&peer.url(), &headers, body).await;
    let relayed = client
        .post_read(&url_of(&daemon, "/mcp/open"), &headers, body)
        .await;
    assert_eq!(direct.status, 200, "{}", direct.text());
    assert_eq!(relayed.body, direct.body, "byte for byte");
    assert!(relayed.text().contains("delete_all"));
    assert!(
        !daemon
            .metrics()
            .render()
            .contains("mcp_relay_interceptor_decisions_total"),
        "no chain, no series"
    );
    daemon.shutdown().await.expect("clean shutdown");
}

/// A 2026-07-28 `tools/call echo(who)` with `X-Forwarded-For: who`.
async fn echo_as(client: &Client, url: &str, id: u64, who: &str) -> support::http::Answer {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": who}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {}}},
    })
    .to_string();
    let headers = [
        ("mcp-protocol-version", MODERN),
        ("accept", "application/json, text/event-stream"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
        ("x-forwarded-for", who),
    ];
    client.post_read(url, &headers, &body).await
}

/// The must-show for rate limits: client A (`X-Forwarded-For` from a trusted proxy) sends 9
/// `tools/call`s back to back against a bucket of 5 refilling 1 per second: exactly 5 (plus
/// one per whole second the burst took) reach the upstream, the rest get `429`, `Retry-After:
/// 1` and the JSON-RPC error with their own id; client B, during and after, is served every
/// time; the upstream's log has exactly the calls let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_a_clients_limit_gets_exact_429s_and_other_clients_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.log");
    let log_arg = log.to_str().unwrap().to_owned();
    let peer = Peer::py_server(&["--json-response", "--request-log", &log_arg]).await;
    let mut r = route("/mcp/limited", &[peer.url()]);
    r.rate_limit = Some(RateLimitConfig {
        client_requests_per_second: 1,
        client_burst: 5,
        ..Default::default()
    });
    let daemon = start_routes(vec![r], |config| {
        config.proxy.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let url = url_of(&daemon, "/mcp/limited");
    let client = Client::new();
    const A: &str = "198.51.100.1";
    const B: &str = "203.0.113.2";

    let started = std::time::Instant::now();
    let mut answers = Vec::new();
    for id in 1..=9 {
        answers.push((id, echo_as(&client, &url, id, A).await));
        if id == 7 {
            let b = echo_as(&client, &url, 100, B).await;
            assert_eq!(b.status, 200, "client B during A's burst: {}", b.text());
        }
    }
    let elapsed = started.elapsed().as_secs();
    let served: Vec<u64> = answers
        .iter()
        .filter(|(_, a)| a.status == 200)
        .map(|(id, _)| *id)
        .collect();
    let refused: Vec<&(u64, support::http::Answer)> =
        answers.iter().filter(|(_, a)| a.status == 429).collect();
    let expected_served = (5 + elapsed).min(9) as usize;
    assert_eq!(
        served.len(),
        expected_served,
        "a burst of 5, one more per second ({elapsed} s)"
    );
    assert_eq!(served.len() + refused.len(), 9, "only 200 or 429");
    assert_eq!(served, (1..=expected_served as u64).collect::<Vec<_>>());
    for (id, answer) in refused {
        assert_eq!(answer.header("retry-after"), Some("1"), "{id}");
        assert_eq!(
            answer.json(),
            serde_json::json!({"jsonrpc":"2.0","id":id,"error":{"code":-32000,"message":"Rate limit exceeded"}})
        );
    }
    for id in 101..104 {
        let b = echo_as(&client, &url, id, B).await;
        assert_eq!(b.status, 200, "client B after A's burst: {}", b.text());
    }
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log_text.lines().filter(|l| *l == "tools/call echo").count(),
        expected_served + 4,
        "the upstream saw exactly the calls let through:\n{log_text}"
    );
    let metrics = daemon.metrics().render();
    let answered = format!(
        "mcp_relay_interceptor_decisions_total{{route=\"/mcp/limited\",interceptor=\"rate_limit\",decision=\"answer\"}} {}",
        9 - expected_served
    );
    assert!(metrics.contains(&answered), "{answered} in\n{metrics}");
    daemon.shutdown().await.expect("clean shutdown");
}

/// A 2026-07-28 request `method` with `params` (the version in `_meta`) and its mirrored
/// headers.
async fn modern(
    client: &Client,
    url: &str,
    id: u64,
    method: &str,
    params: Value,
) -> support::http::Answer {
    let mut params = params;
    params["_meta"] = serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let name = params["name"].as_str().map(str::to_owned);
    let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        .to_string();
    let mut headers = vec![
        ("mcp-protocol-version", MODERN),
        ("accept", "application/json, text/event-stream"),
        ("mcp-method", method),
    ];
    if let Some(name) = &name {
        headers.push(("mcp-name", name));
    }
    client.post_read(url, &headers, &body).await
}

/// The `result` member of an answer (JSON body or the last SSE event), as raw text.
fn raw_result(answer: &support::http::Answer) -> String {
    #[derive(serde::Deserialize)]
    struct R<'a> {
        #[serde(borrow)]
        result: &'a serde_json::value::RawValue,
    }
    let text = answer.text();
    let json = if text.trim_start().starts_with('{') {
        text.to_owned()
    } else {
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back()
            .expect("an SSE event")
            .to_owned()
    };
    serde_json::from_str::<R<'_>>(&json)
        .expect("a result")
        .result
        .get()
        .to_owned()
}

/// The cache must-show, functionally: the official Python SDK server marks 2026-07-28
/// `tools/list` results `ttlMs: 60000`, `cacheScope: "public"`; through a route with a cache, a
/// second `tools/list` (another id, another client) is answered by the relay — its `result`
/// byte for byte the server's, the upstream's log showing one `tools/list` — and so is the
/// official Python SDK client's; `change_tools`, whose own stream carries
/// `notifications/tools/list_changed`, makes the next `tools/list` reach the upstream. The
/// hits, misses and invalidation are in `/metrics` and GetRoutePolicy; InvalidateCache empties
/// the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cacheable_results_are_answered_from_the_cache_until_a_list_changed_notification() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.log");
    let log_arg = log.to_str().unwrap().to_owned();
    let peer = Peer::py_server(&[
        "--cache-ttl-ms",
        "60000",
        "--change-tool",
        "--request-log",
        &log_arg,
    ])
    .await;
    let mut r = route("/mcp/cached", &[peer.url()]);
    r.cache = Some(mcp_relay::config::CacheConfig {
        enabled: true,
        ..Default::default()
    });
    let daemon = start_routes(vec![r], |_| {}).await;
    let url = url_of(&daemon, "/mcp/cached");
    let lists = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("tools/list"))
            .count()
    };
    let client = Client::new();

    let first = modern(&client, &url, 1, "tools/list", serde_json::json!({})).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(
        raw_result(&first).contains(r#""ttlMs":60000"#),
        "{}",
        first.text()
    );
    assert_eq!(lists(), 1);
    let second = modern(&Client::new(), &url, 2, "tools/list", serde_json::json!({})).await;
    assert_eq!(second.status, 200);
    assert_eq!(raw_result(&second), raw_result(&first), "byte for byte");
    assert_eq!(
        message_of(&second).unwrap()["id"],
        2,
        "the new request's id"
    );
    assert_eq!(lists(), 1, "answered from the cache");

    // The official Python SDK client (modern) gets its list from the cache too.
    let sdk = run_script(
        "py_policy_client.py",
        &["--url", &url, "--mode", "modern", "--denied", "nope"],
        DRIVER_WAIT,
    )
    .await;
    assert!(
        tool_names(&sdk).contains(&"change_tools".to_owned()),
        "{sdk}"
    );
    assert_eq!(lists(), 1, "the SDK client's tools/list too");

    // A change notification through the relay drops the list.
    let changed = modern(
        &client,
        &url,
        3,
        "tools/call",
        serde_json::json!({"name": "change_tools", "arguments": {}}),
    )
    .await;
    assert!(
        changed.text().contains("notifications/tools/list_changed"),
        "{}",
        changed.text()
    );
    let third = modern(&client, &url, 4, "tools/list", serde_json::json!({})).await;
    assert_eq!(third.status, 200);
    assert_eq!(lists(), 2, "after list_changed the upstream is asked again");

    let metrics = daemon.metrics().render();
    for (series, value) in [
        ("mcp_relay_cache_hits_total", 2),
        ("mcp_relay_cache_misses_total", 2),
        ("mcp_relay_cache_invalidations_total", 1),
        ("mcp_relay_cache_entries", 1),
    ] {
        let line = format!("{series}{{route=\"/mcp/cached\"}} {value}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    let admin = daemon.admin_addr().expect("TCP control plane").to_string();
    let body = r#"{"route":"/mcp/cached"}"#;
    let shown = grpcurl_json(
        &admin,
        &[
            "-d",
            body,
            "--",
            "mcprelay.admin.v1.UpstreamService/GetRoutePolicy",
        ],
    )
    .await;
    assert_eq!(shown["cache"]["hits"], "2", "{shown}");
    assert_eq!(shown["cache"]["entries"], "1", "{shown}");
    let dropped = grpcurl_json(
        &admin,
        &[
            "-d",
            body,
            "--",
            "mcprelay.admin.v1.UpstreamService/InvalidateCache",
        ],
    )
    .await;
    assert_eq!(dropped["invalidated"], "1", "{dropped}");
    modern(&client, &url, 5, "tools/list", serde_json::json!({})).await;
    assert_eq!(
        lists(),
        3,
        "after InvalidateCache the upstream is asked again"
    );
    daemon.shutdown().await.expect("clean shutdown");
}

/// The spans of trace `trace_id` in the receiver's file.
fn spans_of(file: &std::path::Path, trace_id: &str) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|s| s["trace_id"] == trace_id)
        .collect()
}

/// The one span of `spans` from `service` named `name`.
fn span<'a>(spans: &'a [Value], service: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = spans
        .iter()
        .filter(|s| s["service"] == service && s["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "one {service} `{name}` span in {spans:#?}");
    found[0]
}

/// The traces must-show: one `tools/call` is one trace in a real OTLP receiver (a gRPC
/// `TraceService` on the official `opentelemetry-proto` packages): the official Python SDK
/// client's spans (its root and the SDK's own client span, whose context it writes into
/// `params._meta`), mcp-relay's server span (`tools/call echo`, with route, endpoint, session,
/// method and tool) and its `forward tools/call` client span, and the official Python SDK
/// server's own server span — each the child of the one before, in both protocol eras; the
/// legacy answer's SSE stream has its span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tool_call_is_one_trace_from_the_sdk_client_through_the_relay_to_the_sdk_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spans.jsonl");
    let receiver = Peer::otlp_receiver(&file).await;
    let otlp = format!("http://127.0.0.1:{}", receiver.port());
    let peer = Peer::py_server(&["--otlp", &otlp]).await;
    let daemon = start_routes(vec![route("/mcp/traced", &[peer.url()])], |config| {
        config.traces = mcp_relay::config::TracesConfig {
            otlp_endpoint: otlp.clone(),
            export_delay: Duration::from_millis(100),
            ..Default::default()
        };
    })
    .await;
    let url = url_of(&daemon, "/mcp/traced");
    let mut traces = Vec::new();
    for mode in ["legacy", "modern"] {
        let out = run_script(
            "py_trace_client.py",
            &["--url", &url, "--mode", mode, "--otlp", &otlp],
            DRIVER_WAIT,
        )
        .await;
        assert_eq!(out["result_text"], "traced", "{mode}: {out}");
        traces.push((mode, out["trace_id"].as_str().unwrap().to_owned()));
    }
    // Shutdown exports what the relay still holds.
    daemon.shutdown().await.expect("clean shutdown");

    for (mode, trace_id) in &traces {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let spans = loop {
            let spans = spans_of(&file, trace_id);
            let upstream = spans.iter().any(|s| s["service"] == "py-server");
            let relay = spans.iter().filter(|s| s["service"] == "mcp-relay").count();
            if upstream && relay >= 2 {
                break spans;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{mode}: trace {trace_id} incomplete after 30 s: {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let root = span(&spans, "py-client", "client tools/call");
        let sdk = span(&spans, "py-client", "MCP send tools/call echo");
        let relay = span(&spans, "mcp-relay", "tools/call echo");
        let forward = span(&spans, "mcp-relay", "forward tools/call");
        let upstream = span(&spans, "py-server", "tools/call echo");
        for (child, parent, what) in [
            (sdk, root, "the SDK's client span under the client's root"),
            (
                relay,
                sdk,
                "the relay's server span under the SDK client span",
            ),
            (
                forward,
                relay,
                "the relay's forward span under its server span",
            ),
            (
                upstream,
                forward,
                "the SDK server's span under the relay's forward span",
            ),
        ] {
            assert_eq!(child["parent_span_id"], parent["span_id"], "{mode}: {what}");
        }
        assert_eq!(relay["kind"], "SPAN_KIND_SERVER");
        assert_eq!(forward["kind"], "SPAN_KIND_CLIENT");
        let attributes = &relay["attributes"];
        assert_eq!(attributes["mcp.route"], "/mcp/traced", "{relay}");
        assert_eq!(attributes["mcp.method.name"], "tools/call");
        assert_eq!(attributes["gen_ai.tool.name"], "echo");
        let address = format!("127.0.0.1:{}", peer.port());
        assert_eq!(
            attributes["server.address"],
            address.as_str(),
            "host:port only"
        );
        assert_eq!(forward["attributes"]["http.response.status_code"], 200);
        assert_eq!(attributes["mcp.protocol.era"], *mode);
        if *mode == "legacy" {
            assert!(attributes["mcp.session.id"].is_string(), "{relay}");
            // (The SDK client lists the tools inside the call too: its own spans, same trace.)
            let stream = spans
                .iter()
                .find(|s| s["name"] == "SSE stream" && s["parent_span_id"] == relay["span_id"])
                .unwrap_or_else(|| panic!("{mode}: the answer's SSE stream span: {spans:#?}"));
            assert!(
                stream["attributes"]["mcp.stream.id"].is_string(),
                "{stream}"
            );
        }
    }
}
