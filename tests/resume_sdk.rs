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
    assert_eq!(proxy.manager().stats().snapshot().resumptions, 2);
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
