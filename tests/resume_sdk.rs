//! Client cuts against real MCP servers: the official Python SDK server with and without an
//! event store, and server-everything (official TypeScript SDK, with its event store). A tool
//! call streams progress notifications; the client's connection is cut twice mid-stream and it
//! resumes through the proxy with `GET` + `Last-Event-ID`: every notification and the result
//! arrive exactly once, in order.

mod support;

use support::{
    peers::Peer,
    proxy_url, start_proxy,
    stream_client::{Session, progress_values, responses_to},
};

const STEPS: u64 = 8;

async fn call_with_cuts(url: &str, tool_call: &str, request_id: u64) -> Vec<u64> {
    let client = Session::initialize(url).await;
    let first = client.post(tool_call).await;
    let (events, resumptions) = client.follow(first, request_id, [2, 3].into_iter()).await;
    assert_eq!(resumptions, 2, "the client resumed after each cut");
    assert_eq!(responses_to(&events, request_id), 1, "{events:#?}");
    let result = events.last().expect("events");
    assert!(result.data["result"].is_object(), "{result:?}");
    progress_values(&events)
}

fn py_progress_call(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"progress","arguments":{{"steps":{STEPS},"delay_ms":60}},"_meta":{{"progressToken":{id}}}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cuts_are_exactly_once_against_the_python_sdk_server_with_an_event_store() {
    let server = Peer::py_server(&["--event-store"]).await;
    let proxy = start_proxy(&server.url()).await;
    let progress = call_with_cuts(&proxy_url(&proxy), &py_progress_call(11), 11).await;
    assert_eq!(progress, (1..=STEPS).collect::<Vec<_>>());
    assert_eq!(proxy.proxy_stats().snapshot().resumptions, 2);
}

/// Without an event store the upstream sends no event ids: the proxy's window is the only
/// memory of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cuts_are_exactly_once_against_the_python_sdk_server_without_an_event_store() {
    let server = Peer::py_server(&[]).await;
    let proxy = start_proxy(&server.url()).await;
    let progress = call_with_cuts(&proxy_url(&proxy), &py_progress_call(12), 12).await;
    assert_eq!(progress, (1..=STEPS).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cuts_are_exactly_once_against_the_typescript_sdk_server_everything() {
    let server = Peer::everything().await;
    let proxy = start_proxy(&server.url()).await;
    let duration = STEPS as f64 * 0.06;
    let call = format!(
        r#"{{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{{"name":"trigger-long-running-operation","arguments":{{"duration":{duration},"steps":{STEPS}}},"_meta":{{"progressToken":13}}}}}}"#
    );
    let progress = call_with_cuts(&proxy_url(&proxy), &call, 13).await;
    assert_eq!(progress, (1..=STEPS).collect::<Vec<_>>());
}

/// Issue 11: the Python SDK server with one event store for every session (as the SDK wires
/// it: event ids are global, and replay does not check the session). Session A's stream has
/// left the proxy's memory; A resumes it with its own stream and position but the upstream id
/// of an event of session B. The proxy must not pass that id upstream: A gets 400, never B's
/// events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_upstream_id_never_replays_another_sessions_events() {
    use std::time::Duration;

    use http::StatusCode;
    use support::{
        http::read_full,
        start_proxy_with,
        stream_client::{Event, EventReader},
    };

    let server = Peer::py_server(&["--event-store", "--shared-event-store"]).await;
    let proxy = start_proxy_with(&server.url(), |c| {
        c.session.closed_streams_kept = 0;
    })
    .await;
    let url = proxy_url(&proxy);
    let a = Session::initialize(&url).await;
    let b = Session::initialize(&url).await;

    // B: a call whose result only B may see. Its first event (the SDK's priming event) has an
    // upstream id after which the store holds B's result.
    let echo = r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{"text":"B-secret"}}}"#;
    let (b_events, _) = b.follow(b.post(echo).await, 8, std::iter::empty()).await;
    assert!(
        serde_json::to_string(&b_events.last().expect("B's result").data)
            .expect("JSON")
            .contains("B-secret")
    );
    let b_first = b_events[0].id.clone().expect("B's first event id");
    let b_upstream = b_first.splitn(3, ':').nth(2).expect("an upstream id part");

    // A: a call of its own; its stream ends, closes, and leaves memory.
    let (a_events, _) = a
        .follow(a.post(&py_progress_call(7)).await, 7, std::iter::empty())
        .await;
    let a_last = a_events
        .last()
        .and_then(|e| e.id.clone())
        .expect("A's last id");
    let mut parts = a_last.splitn(3, ':');
    let (a_stream, a_seq) = (
        parts.next().expect("stream").to_owned(),
        parts.next().expect("seq").to_owned(),
    );
    let session_a = proxy.manager().get(&a.session_id).expect("session A");
    let store = proxy.manager().persistence().store().clone();
    let key = [(a.session_id.clone(), a_stream.clone())];
    let mut ready = false;
    for _ in 0..500 {
        if session_a.stream(&a_stream).is_none()
            && store.get_stream_positions(&key).await.expect("store")[0].is_some()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        ready,
        "A's stream did not leave memory (persisted) within 5 s"
    );

    // A resumes its own stream and position, with B's upstream id.
    let forged = format!("{a_stream}:{a_seq}:{b_upstream}");
    let response = a.resume(&forged).await;
    let status = response.status();
    let seen: String = if status == StatusCode::OK {
        // Whatever reaches A within 3 s.
        let mut reader = EventReader::new(response);
        let mut events: Vec<Event> = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while let Some(e) = reader.next().await {
                events.push(e);
            }
        })
        .await;
        format!("{events:?}")
    } else {
        read_full(response).await.text().to_owned()
    };
    assert!(!seen.contains("B-secret"), "B's events reached A: {seen}");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{seen}");
    assert!(seen.contains("-32600"), "{seen}");
    assert_eq!(proxy.proxy_stats().snapshot().resumptions_refused, 1);
}
