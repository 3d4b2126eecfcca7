//! A test upstream that behaves like an SDK server towards its standalone `GET` stream: it holds
//! the stream a session's `GET` opens, and when a `tools/call` arrives it sends a server→client
//! request (`elicitation/create`, no related request) on that stream — only if a `GET` is
//! registered at that very moment. Otherwise the request is lost (an SDK server stores it for a
//! replay that a `GET` without `Last-Event-ID` never asks for), and counted as such.
//!
//! Every new connection is served only 20 ms after it was accepted, so a request that needs a
//! fresh upstream connection reaches this server later than one on a pooled connection: the
//! condition under which the proxy used to reorder a session's `GET` and `POST`.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::{
    net::TcpListener,
    sync::mpsc,
    task::{JoinHandle, JoinSet},
};

/// How long each new connection waits before it is served.
pub const ACCEPT_DELAY: Duration = Duration::from_millis(20);

/// The server→client request sent on the standalone stream (SSE `data:`).
pub const ELICITATION: &str = r#"{"jsonrpc":"2.0","id":"srv-1","method":"elicitation/create","params":{"message":"Proceed?","requestedSchema":{"type":"object","properties":{}}}}"#;

#[derive(Default)]
struct State {
    /// Standalone streams by upstream session id.
    streams: Mutex<HashMap<String, mpsc::Sender<Bytes>>>,
    next_session: AtomicU64,
    /// Server→client requests written to a registered standalone stream.
    delivered: AtomicU64,
    /// Server→client requests that found no standalone stream registered.
    lost: AtomicU64,
    /// Answer `GET` with `405` (a server that offers no standalone stream).
    refuse_get: bool,
}

/// The running upstream; dropping it stops the server and its connections.
pub struct StandaloneUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl StandaloneUpstream {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// Like [`StandaloneUpstream::start`], but every `GET` is answered `405 Method Not Allowed`.
    pub async fn start_refusing_get() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(refuse_get: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind standalone upstream");
        let addr = listener.local_addr().expect("standalone upstream address");
        let state = Arc::new(State {
            refuse_get,
            ..State::default()
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Self { addr, state, task }
    }

    /// The MCP endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Server→client requests sent on a registered standalone stream.
    pub fn delivered(&self) -> u64 {
        self.state.delivered.load(Ordering::Relaxed)
    }

    /// Server→client requests that had no standalone stream to go to.
    pub fn lost(&self) -> u64 {
        self.state.lost.load(Ordering::Relaxed)
    }
}

impl Drop for StandaloneUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let state = state.clone();
        connections.spawn(async move {
            tokio::time::sleep(ACCEPT_DELAY).await;
            let service = service_fn(move |req| answer(state.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type UpstreamBody = BoxBody<Bytes, Infallible>;

fn reply(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: UpstreamBody,
) -> Response<UpstreamBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Some(ct) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, ct.parse().expect("content type"));
    }
    response
}

async fn answer(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<UpstreamBody>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let session = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    if parts.method == Method::GET && state.refuse_get {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            Full::default().boxed(),
        ));
    }
    if parts.method == Method::GET {
        let Some(session) = session else {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                None,
                Full::default().boxed(),
            ));
        };
        let (tx, rx) = mpsc::channel(16);
        state.streams.lock().insert(session, tx);
        return Ok(reply(
            StatusCode::OK,
            Some("text/event-stream"),
            ChannelBody(rx).boxed(),
        ));
    }
    if parts.method == Method::DELETE {
        if let Some(session) = session {
            state.streams.lock().remove(&session);
        }
        return Ok(reply(StatusCode::OK, None, Full::default().boxed()));
    }

    let message: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = message.get("id").cloned();
    let method = message.get("method").and_then(|m| m.as_str());
    match (method, id) {
        (Some("initialize"), Some(id)) => {
            let n = state.next_session.fetch_add(1, Ordering::Relaxed);
            let text = format!(
                r#"{{"jsonrpc":"2.0","id":{id},"result":{{"protocolVersion":"2025-11-25","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"standalone-upstream","version":"0"}}}}}}"#
            );
            let mut response = reply(
                StatusCode::OK,
                Some("application/json"),
                Full::new(Bytes::from(text)).boxed(),
            );
            response.headers_mut().insert(
                "mcp-session-id",
                format!("UPSTREAM-{n}").parse().expect("session id"),
            );
            Ok(response)
        }
        (Some(method), Some(id)) => {
            if method == "tools/call" {
                let stream = session.and_then(|s| state.streams.lock().get(&s).cloned());
                let sent = match stream {
                    Some(tx) => tx
                        .try_send(Bytes::from(format!("data: {ELICITATION}\n\n")))
                        .is_ok(),
                    None => false,
                };
                let counter = if sent { &state.delivered } else { &state.lost };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[]}}}}"#);
            Ok(reply(
                StatusCode::OK,
                Some("application/json"),
                Full::new(Bytes::from(text)).boxed(),
            ))
        }
        // Notifications and responses.
        _ => Ok(reply(StatusCode::ACCEPTED, None, Full::default().boxed())),
    }
}

/// An SSE body fed by a channel; open until the sender is dropped.
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
