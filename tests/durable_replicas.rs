//! Replicas (issue 4): two `mcp-relay` processes sharing one Redis serve one session
//! interchangeably behind a load balancer (a TCP switch here), with the official Python SDK
//! client; a stream started through one resumes through the other after the first is killed.

mod support;

use http::StatusCode;
use support::{
    durable::{
        Relay, SessionClient, Switch, persisted_position, progress_call, require_redis,
        unique_prefix, upstream_part, wait_persisted, wait_session_saved,
    },
    http::Client,
    peers::Peer,
    stream_client::{EventReader, Session, progress_values, responses_to},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_serve_one_python_sdk_session_interchangeably() {
    let redis = require_redis().await;
    let prefix = unique_prefix("replicas-sdk");
    let server = Peer::py_server(&["--event-store"]).await;
    let a = Relay::start(&server.url(), &redis, &prefix, None).await;
    let b = Relay::start(&server.url(), &redis, &prefix, None).await;
    let switch = Switch::start(a.data).await;

    // initialize and a tool call through A...
    let client = SessionClient::hold(&switch.url()).await;
    let session_id = client.session_id.clone();
    // ...then, once A's worker has saved the session record, the balancer sends everything to
    // B (open connections to A are closed).
    wait_session_saved(&redis, &prefix, &session_id).await;
    switch.route_to(b.data);
    let summary = client.release().await;

    assert_eq!(summary["session_ids"], serde_json::json!([session_id]));
    assert_eq!(summary["before"]["progress"], serde_json::json!([1, 2, 3]));
    assert_eq!(summary["after"]["progress"], serde_json::json!([1, 2, 3]));
    assert_eq!(summary["after"]["result_text"], "done 3");
    assert!(
        summary["after"]["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "progress"))
    );
    assert_eq!(summary["delete_status"], 200);
    assert!(
        !a.process
            .stderr()
            .contains("session restored from the store"),
        "A created the session"
    );
    assert!(
        b.process
            .stderr()
            .contains("session restored from the store"),
        "B served it from Redis"
    );
    assert_eq!(b.metric("mcp_relay_sessions").await, 0.0, "ended by DELETE");
    a.terminate().await;
    b.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_started_through_one_replica_resumes_through_the_other_after_it_is_killed() {
    let redis = require_redis().await;
    let prefix = unique_prefix("replicas-stream");
    let server = Peer::py_server(&["--event-store"]).await;
    let a = Relay::start(&server.url(), &redis, &prefix, None).await;
    let b = Relay::start(&server.url(), &redis, &prefix, None).await;

    let through_a = Session::initialize(&a.url()).await;
    let response = through_a.post(&progress_call(5, 10, 300)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut reader = EventReader::new(response);
    let mut seen = Vec::new();
    while progress_values(&seen).len() < 3 {
        seen.push(reader.next().await.expect("an event from A"));
    }
    let persisted_at = seen
        .iter()
        .rev()
        .find_map(|e| e.id.clone())
        .expect("event ids");
    let (stream, upstream_id) = upstream_part(&persisted_at);
    wait_persisted(&redis, &prefix, &through_a.session_id, stream, upstream_id).await;
    a.kill().await;
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
        persisted_position(&redis, &prefix, &through_a.session_id, stream)
            .await
            .as_deref(),
        Some(upstream_part(&last).1),
        "the kill came between an event reaching the client and its position being flushed \
         (events are paced wider than the flush interval to avoid that)"
    );

    let through_b = Session {
        http: Client::new(),
        url: b.url(),
        session_id: through_a.session_id.clone(),
        protocol_version: through_a.protocol_version,
    };
    let (rest, _) = through_b
        .follow(through_b.resume(&last).await, 5, std::iter::empty())
        .await;
    seen.extend(rest);
    assert_eq!(
        progress_values(&seen),
        (1..=10).collect::<Vec<_>>(),
        "every notification exactly once: {seen:#?}"
    );
    assert_eq!(responses_to(&seen, 5), 1);
    assert!(b.metric("mcp_relay_sse_resumptions_total").await >= 1.0);
    b.terminate().await;
}
