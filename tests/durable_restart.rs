//! Sessions outlive the process (issue 4): with the Redis store, a restarted proxy answers
//! requests on existing `Mcp-Session-Id`s and resumes a client's stream from the upstream with
//! the persisted event id; a stream id persisted under another session stays refused; idle
//! sessions expire in the store with one `DELETE` upstream. Real `mcp-relay` processes in front
//! of the official Python SDK server, over a real Redis (`MCP_RELAY_TEST_REDIS_URL`).

mod support;

use std::time::Duration;

use http::StatusCode;
use mcp_relay::session::store::MemoryStore;
use support::{
    durable::{
        Relay, SessionClient, persisted_position, progress_call, redis_store, require_redis,
        start_daemon, unique_prefix, upstream_part, wait_persisted,
    },
    http::{Client, read_full},
    peers::Peer,
    stream_client::{EventReader, Session, progress_values, responses_to},
    upstream::{Reply, TestUpstream},
};

const STEPS: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_client_keeps_its_session_across_a_proxy_restart() {
    let redis = require_redis().await;
    let prefix = unique_prefix("restart-sdk");
    let server = Peer::py_server(&["--event-store"]).await;
    let first = Relay::start(&server.url(), &redis, &prefix, None).await;
    let addr = first.data;
    let client = SessionClient::hold(&first.url()).await;
    let session_id = client.session_id.clone();

    // SIGTERM: the proxy drains, flushes and exits; another process takes its port.
    first.terminate().await;
    let second = Relay::start(&server.url(), &redis, &prefix, Some(addr)).await;
    let summary = client.release().await;

    assert_eq!(
        summary["session_ids"],
        serde_json::json!([session_id]),
        "one session throughout"
    );
    assert_eq!(summary["after"]["progress"], serde_json::json!([1, 2, 3]));
    assert_eq!(summary["after"]["result_text"], "done 3");
    assert_eq!(
        summary["delete_status"], 200,
        "the DELETE reached the upstream"
    );
    let posts_after_restart: Vec<_> = summary["http"]
        .as_array()
        .expect("exchanges")
        .iter()
        .filter(|x| x["http_method"] == "POST" && x["rpc_method"] != "initialize")
        .collect();
    assert!(
        posts_after_restart
            .iter()
            .all(|x| x["status"] == 200 || x["status"] == 202),
        "{posts_after_restart:#?}"
    );
    assert!(
        second
            .process
            .stderr()
            .contains("session restored from the store"),
        "the second process served the session from Redis"
    );
    second.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_from_the_upstream_after_the_proxy_is_killed_and_restarted() {
    let redis = require_redis().await;
    let prefix = unique_prefix("restart-stream");
    let server = Peer::py_server(&["--event-store"]).await;
    let first = Relay::start(&server.url(), &redis, &prefix, None).await;
    let client = Session::initialize(&first.url()).await;

    let response = client.post(&progress_call(7, STEPS, 400)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut reader = EventReader::new(response);
    let mut seen = Vec::new();
    while progress_values(&seen).len() < 2 {
        seen.push(reader.next().await.expect("an event before the kill"));
    }
    let persisted_at = seen
        .iter()
        .rev()
        .find_map(|e| e.id.clone())
        .expect("event ids");
    let (stream, upstream_id) = upstream_part(&persisted_at);
    wait_persisted(&redis, &prefix, &client.session_id, stream, upstream_id).await;

    // SIGKILL: no drain, no flush; the upstream keeps the tool call running.
    first.kill().await;
    // What the proxy wrote before it died still reaches the client: read it, so the client
    // resumes from the last event it got, which is the position the proxy recorded (a
    // stream no longer held is resumed only from there).
    while let Some(event) = reader.next().await {
        seen.push(event);
    }
    let last = seen
        .iter()
        .rev()
        .find_map(|e| e.id.clone())
        .expect("event ids");
    assert_eq!(
        persisted_position(&redis, &prefix, &client.session_id, stream)
            .await
            .as_deref(),
        Some(upstream_part(&last).1),
        "the kill came between an event reaching the client and its position being flushed \
         (events are paced wider than the flush interval to avoid that)"
    );
    let second = Relay::start(&server.url(), &redis, &prefix, None).await;
    let resumed = Session {
        http: Client::new(),
        url: second.url(),
        session_id: client.session_id.clone(),
        protocol_version: client.protocol_version,
    };
    let response = resumed.resume(&last).await;
    let (rest, resumptions) = resumed.follow(response, 7, std::iter::empty()).await;
    assert_eq!(resumptions, 0);
    seen.extend(rest);
    assert_eq!(
        progress_values(&seen),
        (1..=STEPS).collect::<Vec<_>>(),
        "every notification exactly once: {seen:#?}"
    );
    assert_eq!(responses_to(&seen, 7), 1);
    assert!(
        seen.iter()
            .filter_map(|e| e.id.as_deref())
            .all(|id| id.starts_with(stream)),
        "the stream keeps its id across processes"
    );

    // A stream persisted under this session is not reachable from another session.
    let other = Session::initialize(&second.url()).await;
    let refused = read_full(other.resume(&last).await).await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{}",
        refused.text()
    );
    second.terminate().await;
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
const INITIALIZE_RESULT: &str = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"up","version":"1"}}}"#;
const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// Idle expiry with the store as the authority: `replicas` daemons share `store`s; a session
/// created through the first and used through the last goes idle, then is ended upstream with
/// exactly one `DELETE` and answered 404 by every replica.
async fn idle_sessions_end_once(
    stores: Vec<std::sync::Arc<dyn mcp_relay::session::store::SessionStore>>,
) {
    let upstream = TestUpstream::start().await;
    upstream.push(Reply::json(INITIALIZE_RESULT).session_id("UP-IDLE"));
    let first_store = stores[0].clone();
    let mut daemons = Vec::new();
    for store in stores {
        daemons.push(
            start_daemon(&upstream.url(), store, |c| {
                c.session.idle_ttl = Duration::from_millis(600);
            })
            .await,
        );
    }
    let url = |i: usize| format!("http://{}/mcp", daemons[i].data_addr());
    let http = Client::new();
    let init = http.post_read(&url(0), &[], INITIALIZE).await;
    let sid = init
        .header("mcp-session-id")
        .expect("session id")
        .to_owned();
    let last = daemons.len() - 1;
    let headers = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    // Through the other replica (restored there from the store, once saved), then idle
    // everywhere.
    let saved = async {
        loop {
            let found = first_store
                .get_sessions(std::slice::from_ref(&sid))
                .await
                .expect("read the store");
            if found.first().is_some_and(Option::is_some) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), saved)
        .await
        .expect("the session is saved to the store within 5 s");
    let ping = http.post_read(&url(last), &headers, PING).await;
    assert_eq!(ping.status, StatusCode::OK, "{}", ping.text());

    let deletes = || {
        upstream
            .requests()
            .into_iter()
            .filter(|r| r.method == http::Method::DELETE)
            .collect::<Vec<_>>()
    };
    let first_delete = async {
        while deletes().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), first_delete)
        .await
        .expect("the idle session is ended upstream within 5 s");
    // Let every replica's expiry run a few more rounds: still one DELETE.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let deletes = deletes();
    assert_eq!(deletes.len(), 1, "exactly one DELETE upstream");
    assert_eq!(deletes[0].header("mcp-session-id"), Some("UP-IDLE"));
    for (i, d) in daemons.iter().enumerate() {
        assert!(
            d.manager().is_empty(),
            "replica {i} still holds the session"
        );
        let answer = http.post_read(&url(i), &headers, PING).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "replica {i}");
    }
    for d in daemons {
        d.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_in_the_redis_store_with_one_delete_upstream_across_replicas() {
    let redis = require_redis().await;
    let prefix = unique_prefix("idle");
    idle_sessions_end_once(vec![
        redis_store(&redis, &prefix),
        redis_store(&redis, &prefix),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_in_the_memory_store_with_a_delete_upstream() {
    idle_sessions_end_once(vec![std::sync::Arc::new(MemoryStore::new())]).await;
}
