//! End to end with real peers over real sockets: the official Python SDK client drives a full
//! MCP flow (connect, `tools/list`, a `tools/call` streaming progress over SSE, `ping`, session
//! end) through mcp-relay to the official Python SDK server and to server-everything, in both
//! protocol eras; grpcurl reads the live session back from the control plane.

mod support;

use serde_json::Value;
use support::{
    peers::{Peer, grpcurl, grpcurl_json, hold_client, run_client},
    proxy_url, start_proxy,
};

const STEPS: u64 = 5;

fn progress(summary: &Value) -> Vec<u64> {
    summary["progress"]
        .as_array()
        .expect("progress array")
        .iter()
        .map(|v| v.as_u64().expect("integer progress"))
        .collect()
}

fn exchanges<'a>(summary: &'a Value, http_method: &str) -> Vec<&'a Value> {
    summary["http"]
        .as_array()
        .expect("http log")
        .iter()
        .filter(|x| x["http_method"] == http_method)
        .collect()
}

/// Asserts the legacy flow completed with every progress notification and a proxy-minted
/// session id that the proxy ended on `DELETE`.
fn assert_legacy_flow(summary: &Value, upstream_ids_seen: &[String]) {
    assert_eq!(summary["protocol_version"], "2025-11-25");
    assert_eq!(progress(summary), (1..=STEPS).collect::<Vec<_>>());
    assert_eq!(summary["ping_ok"], true);
    assert_eq!(summary["delete_status"], 200);
    let sid = summary["session_id"].as_str().expect("a session id");
    assert_eq!(
        sid.len(),
        22,
        "the proxy's 128-bit base64url id, got {sid:?}"
    );
    assert!(
        !upstream_ids_seen.iter().any(|u| u == sid),
        "the client saw the upstream's session id"
    );
    // Every request after initialize carried the proxy's id.
    for x in summary["http"].as_array().unwrap().iter().skip(1) {
        assert_eq!(x["headers"]["mcp-session-id"], sid, "{x}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_python_sdk_flow_through_proxy_to_python_server() {
    for store_args in [&[][..], &["--event-store"][..]] {
        let server = Peer::py_server(store_args).await;
        let proxy = start_proxy(&server.url()).await;
        let args = ["--mode", "legacy", "--steps", "5", "--delay-ms", "20"];
        let summary = run_client(&proxy_url(&proxy), &args).await;
        assert_legacy_flow(&summary, &[]);
        assert_eq!(
            summary["tools"],
            serde_json::json!(["progress", "echo", "ask"])
        );
        assert_eq!(summary["result_text"], "done 5");
        assert!(
            proxy.manager().is_empty(),
            "DELETE ended the session in the proxy"
        );
        proxy.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_python_sdk_flow_through_proxy_to_python_server() {
    let server = Peer::py_server(&[]).await;
    let proxy = start_proxy(&server.url()).await;
    let args = ["--mode", "modern", "--steps", "5", "--delay-ms", "20"];
    let summary = run_client(&proxy_url(&proxy), &args).await;
    assert_eq!(summary["protocol_version"], "2026-07-28");
    assert_eq!(
        summary["discover_versions"],
        serde_json::json!(["2026-07-28"])
    );
    assert_eq!(progress(&summary), (1..=STEPS).collect::<Vec<_>>());
    assert_eq!(summary["result_text"], "done 5");
    // `ping` left the protocol in 2026-07-28: the upstream's -32601 came through unchanged.
    assert_eq!(summary["ping_error"]["code"], -32601);
    assert_eq!(summary["session_id"], Value::Null);
    assert!(exchanges(&summary, "GET").is_empty() && exchanges(&summary, "DELETE").is_empty());
    let call = exchanges(&summary, "POST")
        .into_iter()
        .find(|x| x["rpc_method"] == "tools/call")
        .expect("tools/call exchange");
    assert_eq!(call["headers"]["mcp-method"], "tools/call");
    assert_eq!(call["headers"]["mcp-name"], "progress");
    assert_eq!(call["content_type"], "text/event-stream");
    assert!(
        proxy.manager().is_empty(),
        "the modern era keeps no session"
    );
    proxy.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_python_sdk_flow_through_proxy_to_server_everything() {
    let server = Peer::everything().await;
    let proxy = start_proxy(&server.url()).await;
    let args = [
        "--mode",
        "legacy",
        "--tool",
        "trigger-long-running-operation",
        "--steps",
        "5",
        "--delay-ms",
        "60",
    ];
    let summary = run_client(&proxy_url(&proxy), &args).await;
    assert_legacy_flow(&summary, &[]);
    assert!(
        summary["result_text"]
            .as_str()
            .unwrap()
            .starts_with("Long running operation completed")
    );
    assert!(proxy.manager().is_empty());
    proxy.shutdown().await.expect("clean shutdown");
}

/// server-everything speaks only the legacy era. The SDK client's default `auto` mode tries
/// 2026-07-28 first and must see the upstream's own 400 answer to fall back to `initialize`:
/// the proxy has to pass that error status and body through faithfully.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_falls_back_to_legacy_through_proxy_to_server_everything() {
    let server = Peer::everything().await;
    let proxy = start_proxy(&server.url()).await;
    let args = [
        "--mode",
        "auto",
        "--tool",
        "trigger-long-running-operation",
        "--steps",
        "5",
        "--delay-ms",
        "60",
    ];
    let summary = run_client(&proxy_url(&proxy), &args).await;
    let posts = exchanges(&summary, "POST");
    assert_eq!(posts[0]["rpc_method"], "server/discover");
    assert_eq!(posts[0]["status"], 400);
    assert_eq!(posts[1]["rpc_method"], "initialize");
    assert_eq!(summary["protocol_version"], "2025-11-25");
    assert_eq!(progress(&summary), (1..=STEPS).collect::<Vec<_>>());
    assert_eq!(summary["delete_status"], 200);
    proxy.shutdown().await.expect("clean shutdown");
}

/// The control plane reads the live legacy session from the same SessionManager: grpcurl
/// lists the admin, health and reflection services, `ListSessions` shows the session under the
/// proxy id the client holds (never the upstream's), and the last-event-id query answers for
/// the stream that carried the tool call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_reads_the_live_session_and_its_last_event_ids() {
    let server = Peer::everything().await;
    let proxy = start_proxy(&server.url()).await;
    let admin = proxy
        .admin_addr()
        .expect("the control plane listens on TCP")
        .to_string();

    let (ok, services, err) = grpcurl(&admin, &["--", "list"]).await;
    assert!(ok, "grpcurl list failed: {err}");
    for service in [
        "mcprelay.admin.v1.SessionService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.lines().any(|l| l == service),
            "{service} missing in {services}"
        );
    }
    let health = grpcurl_json(&admin, &["--", "grpc.health.v1.Health/Check"]).await;
    assert_eq!(health["status"], "SERVING");

    let args = [
        "--mode",
        "legacy",
        "--tool",
        "trigger-long-running-operation",
        "--steps",
        "3",
        "--delay-ms",
        "30",
    ];
    let client = hold_client(&proxy_url(&proxy), &args).await;
    let client_sid = client
        .session_id
        .clone()
        .expect("client holds a session id");

    let listed = grpcurl_json(
        &admin,
        &[
            "-d",
            "{}",
            "--",
            "mcprelay.admin.v1.SessionService/ListSessions",
        ],
    )
    .await;
    let sessions = listed["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "{listed}");
    let session = &sessions[0];
    assert_eq!(session["name"], format!("sessions/{client_sid}"));
    let upstream_sid = session["upstreamSessionId"].as_str().expect("upstream id");
    assert_ne!(
        upstream_sid, client_sid,
        "client must never see the upstream id"
    );
    assert_eq!(session["era"], "PROTOCOL_ERA_LEGACY");
    assert_eq!(session["protocolVersion"], "2025-11-25");

    // The tool call's stream carried a priming event, 3 progress notifications and the result.
    let streams = session["streams"].as_array().expect("streams");
    let call_stream = streams
        .iter()
        .find(|s| s["eventsForwarded"].as_str().unwrap_or("0") == "5")
        .unwrap_or_else(|| panic!("no stream with 5 events in {session}"));
    let name = format!("{}/lastEventId", call_stream["name"].as_str().unwrap());
    let last = grpcurl_json(
        &admin,
        &[
            "-d",
            &serde_json::json!({ "name": name }).to_string(),
            "--",
            "mcprelay.admin.v1.SessionService/GetLastEventId",
        ],
    )
    .await;
    let upstream_event = last["upstreamEventId"].as_str().expect("upstream event id");
    let stream_id = call_stream["name"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    assert_eq!(
        last["clientEventId"],
        format!("{stream_id}:5:{upstream_event}"),
        "the client id names the stream, the sequence and the upstream id"
    );

    let got = grpcurl_json(
        &admin,
        &[
            "-d",
            &serde_json::json!({ "name": format!("sessions/{client_sid}") }).to_string(),
            "--",
            "mcprelay.admin.v1.SessionService/GetSession",
        ],
    )
    .await;
    assert_eq!(got["upstreamSessionId"], upstream_sid);

    let (ok, _, err) = grpcurl(
        &admin,
        &[
            "-d",
            r#"{"name":"sessions/nope"}"#,
            "--",
            "mcprelay.admin.v1.SessionService/GetSession",
        ],
    )
    .await;
    assert!(!ok && err.contains("NotFound"), "unknown session: {err}");

    let summary = client.release().await;
    assert_eq!(summary["session_id"], client_sid.as_str());
    assert_eq!(summary["delete_status"], 200);
    let after = grpcurl_json(
        &admin,
        &[
            "-d",
            "{}",
            "--",
            "mcprelay.admin.v1.SessionService/ListSessions",
        ],
    )
    .await;
    assert!(after.get("sessions").is_none(), "session ended: {after}");
    proxy.shutdown().await.expect("clean shutdown");
}
