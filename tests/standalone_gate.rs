//! A session's standalone `GET` stream is established upstream before the session's next
//! request is forwarded, even when the two travel on connections served by different data-plane
//! threads (issue 11, item 1): a server that sends a server→client request without a related
//! request (elicitation, sampling, `roots/list`) puts it on the standalone stream only if one is
//! registered at that moment.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, client::conn::http1};
use hyper_util::rt::TokioIo;
use mcp_relay::daemon::Daemon;
use support::{
    proxy_url,
    standalone::{ELICITATION, StandaloneUpstream},
    start_proxy_with,
};
use tokio::net::TcpStream;

/// Upper bound for any single wait; never a performance assertion.
const WAIT: Duration = Duration::from_secs(5);

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{}},"clientInfo":{"name":"gate-test","version":"0"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
const TOOLS_CALL: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"ask","arguments":{}}}"#;

/// One client connection to the proxy, kept open (it stays on the thread it was handed to).
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn open(daemon: &Daemon) -> Self {
        let stream = TcpStream::connect(daemon.data_addr())
            .await
            .expect("connect to the proxy");
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        Self { sender }
    }

    /// Waits until the connection can take the next request (the previous answer was read).
    async fn ready(&mut self) -> &mut Self {
        tokio::time::timeout(WAIT, self.sender.ready())
            .await
            .expect("connection ready within the wait")
            .expect("connection to the proxy still open");
        self
    }

    /// Sends one request; resolves with the response head (bounded by [`WAIT`]). Call
    /// [`Connection::ready`] first.
    fn send(
        &mut self,
        method: Method,
        url: &str,
        session: Option<&str>,
        body: &'static str,
    ) -> impl Future<Output = http::Response<Incoming>> + use<> {
        let mut request = Request::new(Full::new(Bytes::from_static(body.as_bytes())));
        *request.method_mut() = method.clone();
        *request.uri_mut() = url.parse().expect("proxy URL");
        let headers = request.headers_mut();
        if method == Method::GET {
            headers.insert("accept", "text/event-stream".parse().expect("accept"));
        } else {
            headers.insert("content-type", "application/json".parse().expect("ct"));
            headers.insert(
                "accept",
                "application/json, text/event-stream"
                    .parse()
                    .expect("accept"),
            );
        }
        if let Some(session) = session {
            headers.insert("mcp-session-id", session.parse().expect("session id"));
            headers.insert("mcp-protocol-version", "2025-11-25".parse().expect("v"));
        }
        let sent = self.sender.send_request(request);
        async move {
            tokio::time::timeout(WAIT, sent)
                .await
                .expect("response head within the wait")
                .expect("HTTP exchange with the proxy")
        }
    }
}

/// Reads `body` until `needle` appears; panics after [`WAIT`].
async fn read_until(body: &mut Incoming, needle: &str) {
    let mut seen = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("SSE body frame").into_data() {
                seen.extend_from_slice(&data);
                if String::from_utf8_lossy(&seen).contains(needle) {
                    return;
                }
            }
        }
        panic!("the stream ended without {needle}");
    };
    tokio::time::timeout(WAIT, read).await.unwrap_or_else(|_| {
        panic!(
            "no {needle} on the standalone stream within {WAIT:?}; got {:?}",
            String::from_utf8_lossy(&seen)
        )
    });
}

/// `mcp_relay_data_plane_connections{thread="i"}` from the proxy's metrics.
fn connections_on(daemon: &Daemon, thread: usize) -> String {
    let key = format!("mcp_relay_data_plane_connections{{thread=\"{thread}\"}} ");
    daemon
        .metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&key).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {key} in the metrics"))
}

/// One session as an SDK client runs it, with the `GET` and the `tools/call` on connections
/// served by different threads, and the `GET` needing a fresh upstream connection (which the
/// upstream serves 20 ms late) while the `tools/call` reuses a pooled one. Returns the proxy's
/// `(delivered, lost)` server→client requests.
async fn one_session() -> (u64, u64) {
    let upstream = StandaloneUpstream::start().await;
    let daemon = start_proxy_with(&upstream.url(), |c| c.proxy.threads = 2).await;
    let url = proxy_url(&daemon);

    // The first connection goes to thread 0; the second (warmed with a request the proxy
    // answers itself, so no upstream connection is made for it) to thread 1.
    let mut first = Connection::open(&daemon).await;
    let mut second = Connection::open(&daemon).await;
    let warm = second.send(Method::PUT, &url, None, "").await;
    assert_eq!(warm.status(), StatusCode::METHOD_NOT_ALLOWED);
    warm.into_body().collect().await.expect("405 body");
    assert_eq!(connections_on(&daemon, 0), "1");
    assert_eq!(connections_on(&daemon, 1), "1");

    let init = first.send(Method::POST, &url, None, INITIALIZE).await;
    assert_eq!(init.status(), StatusCode::OK);
    let session = init
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("a session id")
        .to_owned();
    init.into_body().collect().await.expect("initialize body");
    let initialized = first
        .ready()
        .await
        .send(Method::POST, &url, Some(&session), INITIALIZED)
        .await;
    assert_eq!(initialized.status(), StatusCode::ACCEPTED);

    // The SDK client opens the standalone stream without waiting for it, and calls a tool.
    let get = tokio::spawn(
        second
            .ready()
            .await
            .send(Method::GET, &url, Some(&session), ""),
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    let call = first
        .ready()
        .await
        .send(Method::POST, &url, Some(&session), TOOLS_CALL)
        .await;
    assert_eq!(call.status(), StatusCode::OK);
    call.into_body().collect().await.expect("tools/call body");

    let outcome = (upstream.delivered(), upstream.lost());
    if outcome.0 == 1 {
        let mut get = get.await.expect("GET task");
        assert_eq!(get.status(), StatusCode::OK);
        read_until(get.body_mut(), ELICITATION).await;
    } else {
        get.abort();
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_request_on_the_standalone_stream_is_not_lost_across_threads() {
    let mut lost = 0;
    for _ in 0..5 {
        let (delivered, lost_now) = one_session().await;
        assert_eq!(delivered + lost_now, 1, "the upstream saw one tools/call");
        lost += lost_now;
    }
    assert_eq!(
        lost, 0,
        "server→client requests lost (no standalone GET registered upstream when tools/call arrived): {lost}/5"
    );
}

/// `initialize` and `notifications/initialized` on `connection`; returns the session id.
async fn initialized_session(connection: &mut Connection, url: &str) -> String {
    let init = connection
        .ready()
        .await
        .send(Method::POST, url, None, INITIALIZE)
        .await;
    assert_eq!(init.status(), StatusCode::OK);
    let session = init
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("a session id")
        .to_owned();
    init.into_body().collect().await.expect("initialize body");
    let initialized = connection
        .ready()
        .await
        .send(Method::POST, url, Some(&session), INITIALIZED)
        .await;
    assert_eq!(initialized.status(), StatusCode::ACCEPTED);
    initialized
        .into_body()
        .collect()
        .await
        .expect("initialized body");
    session
}

/// A `tools/call` on `connection`, read whole; asserts `200`.
async fn call(connection: &mut Connection, url: &str, session: &str) {
    let call = connection
        .ready()
        .await
        .send(Method::POST, url, Some(session), TOOLS_CALL)
        .await;
    assert_eq!(call.status(), StatusCode::OK);
    call.into_body().collect().await.expect("tools/call body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_opens_a_get_waits_once() {
    let upstream = StandaloneUpstream::start().await;
    let daemon = start_proxy_with(&upstream.url(), |c| {
        c.session.standalone_stream_wait = Duration::from_millis(50);
    })
    .await;
    let url = proxy_url(&daemon);
    let mut connection = Connection::open(&daemon).await;
    let session = initialized_session(&mut connection, &url).await;

    call(&mut connection, &url, &session).await;
    call(&mut connection, &url, &session).await;

    let stats = daemon.proxy_stats().snapshot();
    assert_eq!(stats.standalone_waits, 1, "{stats:?}");
    assert_eq!(stats.standalone_wait_timeouts, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_get_releases_the_waiting_request() {
    let upstream = StandaloneUpstream::start_refusing_get().await;
    // Far longer than the test's own wait: a request still held by the gate fails the test.
    let daemon = start_proxy_with(&upstream.url(), |c| {
        c.session.standalone_stream_wait = Duration::from_secs(60);
    })
    .await;
    let url = proxy_url(&daemon);
    let mut first = Connection::open(&daemon).await;
    let mut second = Connection::open(&daemon).await;
    let session = initialized_session(&mut first, &url).await;

    let call_sent = first
        .ready()
        .await
        .send(Method::POST, &url, Some(&session), TOOLS_CALL);
    let call_task = tokio::spawn(call_sent);
    let get = second
        .ready()
        .await
        .send(Method::GET, &url, Some(&session), "")
        .await;
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    let call = call_task.await.expect("tools/call task");
    assert_eq!(call.status(), StatusCode::OK);

    let stats = daemon.proxy_stats().snapshot();
    assert_eq!(stats.standalone_wait_timeouts, 0, "{stats:?}");
}
