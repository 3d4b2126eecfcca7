//! A scripted test upstream: a hyper HTTP/1.1 server on `127.0.0.1:0` that answers each request
//! with the next [`Reply`] a test queued, and records every request it received.
//!
//! It exists for the faults a real MCP server will not produce on demand: an exact SSE byte
//! stream (duplicate ids, comments, `retry:`), a stream held open and released event by event,
//! a status of the test's choosing, a session id, or no answer at all.

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header,
};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::{
    net::TcpListener,
    sync::{Notify, mpsc},
    task::{JoinHandle, JoinSet},
};

/// How long [`TestUpstream::wait_for_requests`] waits before failing the test.
const WAIT: Duration = Duration::from_secs(5);

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// A header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream received a JSON body")
    }
}

/// What the upstream answers to one request.
pub struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: ReplyBody,
    /// When set, the response head waits until the test releases it.
    held: Option<tokio::sync::oneshot::Receiver<()>>,
}

enum ReplyBody {
    Full(Bytes),
    /// `text/event-stream`, each received chunk sent as one body frame; ends when every sender is
    /// dropped.
    Sse(mpsc::Receiver<Bytes>),
    /// Never send the response head.
    Stall,
}

impl Reply {
    /// `200` with an `application/json` body of exactly `text`.
    pub fn json(text: &str) -> Self {
        Self::status(200, text).header("content-type", "application/json")
    }

    /// `202 Accepted` with no body (the answer to a notification or a response).
    pub fn accepted() -> Self {
        Self::status(202, "")
    }

    /// `code` with a body of exactly `body` and no `Content-Type`.
    pub fn status(code: u16, body: &str) -> Self {
        Self {
            status: StatusCode::from_u16(code).expect("valid status code"),
            headers: Vec::new(),
            body: ReplyBody::Full(Bytes::copy_from_slice(body.as_bytes())),
            held: None,
        }
    }

    /// A complete SSE stream: the `blocks` verbatim, one body frame each, then the end.
    pub fn sse(blocks: &[&str]) -> Self {
        let (tx, rx) = mpsc::channel(blocks.len().max(1));
        for block in blocks {
            tx.try_send(Bytes::copy_from_slice(block.as_bytes()))
                .expect("channel sized for every block");
        }
        Self::sse_from(rx)
    }

    /// An SSE stream the test paces through the returned [`SseSender`]; it stays open until the
    /// sender is dropped.
    pub fn sse_stream() -> (Self, SseSender) {
        Self::sse_stream_buffered(16)
    }

    /// [`Reply::sse_stream`] holding at most `chunks` chunks the proxy has not read yet (a
    /// flooding test keeps it at 1, so what it sent has mostly reached the socket).
    pub fn sse_stream_buffered(chunks: usize) -> (Self, SseSender) {
        let (tx, rx) = mpsc::channel(chunks.max(1));
        (Self::sse_from(rx), SseSender { tx })
    }

    /// `200` `application/json` announcing `Content-Length: declared` but sending only `sent`
    /// before the body ends: an upstream that dies in the middle of its answer.
    pub fn json_cut_short(declared: usize, sent: &str) -> Self {
        let (tx, rx) = mpsc::channel(1);
        tx.try_send(Bytes::copy_from_slice(sent.as_bytes()))
            .expect("room for one chunk");
        Self {
            status: StatusCode::OK,
            headers: vec![
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CONTENT_LENGTH, HeaderValue::from(declared)),
            ],
            body: ReplyBody::Sse(rx),
            held: None,
        }
    }

    /// `200` `text/event-stream` announcing `Content-Length: declared` but sending only `sent`
    /// (whole SSE blocks) before the connection ends: an upstream that dies mid-stream.
    /// The connection ends once the head and `sent` have gone out (a moment later).
    pub fn sse_cut_short(declared: usize, sent: &str) -> Self {
        let (tx, rx) = mpsc::channel(1);
        tx.try_send(Bytes::copy_from_slice(sent.as_bytes()))
            .expect("room for one chunk");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(tx);
        });
        Self {
            status: StatusCode::OK,
            headers: vec![
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                ),
                (header::CONTENT_LENGTH, HeaderValue::from(declared)),
            ],
            body: ReplyBody::Sse(rx),
            held: None,
        }
    }

    /// Never answers: the connection stays open with no response head.
    pub fn stall() -> Self {
        Self {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: ReplyBody::Stall,
            held: None,
        }
    }

    /// This reply's head is sent only once the returned sender is used (or dropped): the test
    /// decides when the proxy gets its answer.
    pub fn held(mut self) -> (Self, tokio::sync::oneshot::Sender<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.held = Some(rx);
        (self, tx)
    }

    /// Adds a response header.
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        let value = HeaderValue::from_str(value).expect("valid header value");
        self.headers.push((HeaderName::from_static(name), value));
        self
    }

    /// Adds `Mcp-Session-Id: id`.
    pub fn session_id(self, id: &str) -> Self {
        self.header("mcp-session-id", id)
    }

    fn sse_from(rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            status: StatusCode::OK,
            headers: vec![(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            )],
            body: ReplyBody::Sse(rx),
            held: None,
        }
    }
}

/// The test's end of a [`Reply::sse_stream`].
pub struct SseSender {
    tx: mpsc::Sender<Bytes>,
}

impl SseSender {
    /// Sends `block` verbatim (include the blank line that ends it). `false` when the response
    /// body is gone: the connection to the proxy closed.
    pub async fn send(&self, block: &str) -> bool {
        self.tx
            .send(Bytes::copy_from_slice(block.as_bytes()))
            .await
            .is_ok()
    }

    /// Sends `chunk` verbatim, as one body frame (no copy: a test can send one large buffer
    /// over and over). `false` when the response body is gone.
    pub async fn send_bytes(&self, chunk: Bytes) -> bool {
        self.tx.send(chunk).await.is_ok()
    }

    /// Resolves once the response body was dropped: hyper drops it when the proxy's connection
    /// closes (or fails a write), which is how the upstream sees a client go away.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// The body of an SSE reply: frames from the test's channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    arrived: Notify,
    /// Connections accepted so far.
    accepted: std::sync::atomic::AtomicUsize,
}

/// The running upstream. Dropping it stops the server and every connection it holds.
pub struct TestUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl TestUpstream {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test upstream");
        let addr = listener.local_addr().expect("test upstream address");
        let state = Arc::new(State::default());
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Self { addr, state, task }
    }

    /// How many connections the upstream has accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.state
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The MCP endpoint URL, `http://127.0.0.1:<port>/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// `127.0.0.1:<port>`, the `Host` the proxy must send.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Queues the answer to the next unanswered request. With nothing queued, a request gets
    /// `200 {"jsonrpc":"2.0","id":<its id>,"result":{}}`.
    pub fn push(&self, reply: Reply) {
        self.state.script.lock().push_back(reply);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().clone()
    }

    /// Waits (up to 5 s, else panics) until at least `n` requests have arrived; returns them all.
    pub async fn wait_for_requests(&self, n: usize) -> Vec<Recorded> {
        let wait = async {
            loop {
                let arrived = self.state.arrived.notified();
                let requests = self.requests();
                if requests.len() >= n {
                    return requests;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("upstream did not receive {n} request(s) within {WAIT:?}"))
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections; the `JoinSet` owns their tasks, so aborting this task ends them all.
async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        state
            .accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| answer(state.clone(), req));
            // A connection error (the proxy went away mid-stream) is what some tests provoke.
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("test upstream: connection ended: {err}");
            }
        });
    }
}

type UpstreamBody = BoxBody<Bytes, Infallible>;

/// Records the request, then answers with the next scripted reply (or the default).
async fn answer(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<UpstreamBody>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let reply = state.script.lock().pop_front();
    let reply = reply.unwrap_or_else(|| default_reply(&body));
    state.requests.lock().push(Recorded {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
    });
    state.arrived.notify_waiters();

    if let Some(held) = reply.held {
        // Released or dropped: either way the answer goes.
        let _ = held.await;
    }
    let body = match reply.body {
        ReplyBody::Full(bytes) => Full::new(bytes).boxed(),
        ReplyBody::Sse(rx) => ChannelBody(rx).boxed(),
        ReplyBody::Stall => std::future::pending().await,
    };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    for (name, value) in reply.headers {
        response.headers_mut().append(name, value);
    }
    Ok(response)
}

/// `200` JSON result echoing the request's id (`null` when it has none).
fn default_reply(body: &[u8]) -> Reply {
    let id = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(serde_json::Value::Null);
    Reply::json(&format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#))
}
