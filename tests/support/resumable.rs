//! A resumable MCP-like upstream for stream-survival tests, with faults injected precisely.
//!
//! It speaks just enough legacy Streamable HTTP: `initialize` assigns a session; a `POST` of
//! method `stream` with `params.events = N` answers SSE with N progress notifications (ids
//! `<request id>-<k>`, data `{"…","params":{"progress":k}}`) then the JSON-RPC response (id
//! `<request id>-<N+1>`); a `GET` with `Last-Event-ID: <request id>-<k>` resumes that stream after
//! event k. Its sessions and "event store" (events are regenerated from the request id) live in
//! the test process, so [`Resumable::kill`] + [`Resumable::restart`] model an upstream restarted
//! with its event store kept.
//!
//! Faults come from the [`Scenario`]: cut a response after k events (an abrupt close, no
//! terminating chunk), replay already-sent events on resume, send no ids, refuse resumption,
//! close cleanly with `retry:` (2025-11-25 polling), and pace events.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, StatusCode, body::Frame, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::{net::TcpListener, task::JoinHandle};

/// What the upstream does to the next responses.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    /// Send no `id:` lines (the upstream then cannot resume).
    pub no_ids: bool,
    /// One entry per SSE response, in order: abort it after this many events.
    pub cuts: VecDeque<u64>,
    /// On resume, send this many already-sent events again (duplicates).
    pub replay_overlap: u64,
    /// Answer resumption `GET`s with 405.
    pub refuse_resume: bool,
    /// One entry per SSE response: end it cleanly after this many events, with `retry: 20`.
    pub poll_closes: VecDeque<u64>,
    /// Pause before each event.
    pub delay: Duration,
    /// Bytes of padding added to each notification's params (to make events large).
    pub pad: usize,
}

/// Counters of what the upstream saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub streams_opened: AtomicU64,
    pub resumptions: AtomicU64,
    pub cuts: AtomicU64,
}

#[derive(Default)]
struct State {
    sessions: Mutex<HashSet<String>>,
    next_session: AtomicU64,
    /// request id (raw JSON text) → number of notifications of its stream
    streams: Mutex<HashMap<String, u64>>,
    scenario: Mutex<Scenario>,
    seen: Seen,
}

/// The running upstream; [`Drop`] kills it.
pub struct Resumable {
    addr: SocketAddr,
    state: Arc<State>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

type Body = BoxBody<Bytes, io::Error>;

impl Resumable {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut upstream = Self {
            addr: listener.local_addr().expect("addr"),
            state: Arc::default(),
            tasks: Arc::default(),
        };
        upstream.serve(listener);
        upstream
    }

    /// The MCP endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Replaces the scenario for the next responses.
    pub fn set_scenario(&self, scenario: Scenario) {
        *self.state.scenario.lock() = scenario;
    }

    /// What the upstream saw.
    pub fn seen(&self) -> &Seen {
        &self.state.seen
    }

    /// Stops listening and drops every connection abruptly, like a killed process.
    pub fn kill(&mut self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same port, with the same sessions and event store.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind same port");
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let state = self.state.clone();
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let state = state.clone();
                let conn = tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    // Errors here are aborted connections: the faults this upstream injects.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
                tasks.lock().push(conn);
            }
        });
        self.tasks.lock().push(accept);
    }
}

impl Drop for Resumable {
    fn drop(&mut self) {
        self.kill();
    }
}

fn full(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("static"));
    r
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let session_ok = header("mcp-session-id").is_some_and(|s| state.sessions.lock().contains(&s));
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match parts.method.as_str() {
        "POST" => {
            let Ok(msg) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return Ok(full(StatusCode::BAD_REQUEST, "{}".into()));
            };
            let id = msg.get("id").map(|v| v.to_string());
            match (msg["method"].as_str(), id) {
                (Some("initialize"), Some(id)) => {
                    let n = state.next_session.fetch_add(1, Ordering::Relaxed);
                    let sid = format!("up-{n}");
                    state.sessions.lock().insert(sid.clone());
                    let mut r = full(
                        StatusCode::OK,
                        format!(
                            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"protocolVersion":"2025-11-25","capabilities":{{}},"serverInfo":{{"name":"resumable","version":"1"}}}}}}"#
                        ),
                    );
                    r.headers_mut()
                        .insert("mcp-session-id", sid.parse().expect("ascii"));
                    Ok(r)
                }
                (_, _) if !session_ok => Ok(full(StatusCode::NOT_FOUND, "{}".into())),
                (Some("stream"), Some(id)) => {
                    let n = msg["params"]["events"].as_u64().unwrap_or(3);
                    state.streams.lock().insert(id.clone(), n);
                    state.seen.streams_opened.fetch_add(1, Ordering::Relaxed);
                    Ok(sse(&state, id, n, 1))
                }
                (_, None) => Ok(full(StatusCode::ACCEPTED, String::new())),
                (_, Some(id)) => Ok(full(
                    StatusCode::OK,
                    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#),
                )),
            }
        }
        "GET" => {
            if !session_ok {
                return Ok(full(StatusCode::NOT_FOUND, "{}".into()));
            }
            let Some(last) = header("last-event-id") else {
                return Ok(full(StatusCode::METHOD_NOT_ALLOWED, "{}".into()));
            };
            let scenario = state.scenario.lock().clone();
            if scenario.refuse_resume {
                return Ok(full(StatusCode::METHOD_NOT_ALLOWED, "{}".into()));
            }
            let Some((id, k)) = last
                .rsplit_once('-')
                .and_then(|(id, k)| Some((id.to_owned(), k.parse::<u64>().ok()?)))
            else {
                return Ok(full(StatusCode::BAD_REQUEST, "{}".into()));
            };
            let Some(n) = state.streams.lock().get(&id).copied() else {
                return Ok(full(StatusCode::BAD_REQUEST, "{}".into()));
            };
            state.seen.resumptions.fetch_add(1, Ordering::Relaxed);
            let from = (k + 1).saturating_sub(scenario.replay_overlap).max(1);
            Ok(sse(&state, id, n, from))
        }
        "DELETE" => {
            if let Some(s) = header("mcp-session-id") {
                state.sessions.lock().remove(&s);
            }
            Ok(full(StatusCode::OK, String::new()))
        }
        _ => Ok(full(StatusCode::METHOD_NOT_ALLOWED, String::new())),
    }
}

/// The SSE response for request `id` with `n` notifications, starting at event `from`
/// (`n + 1` is the JSON-RPC response).
fn sse(state: &Arc<State>, id: String, n: u64, from: u64) -> Response<Body> {
    let (no_ids, cut, poll_close, delay, pad) = {
        let mut s = state.scenario.lock();
        (
            s.no_ids,
            s.cuts.pop_front(),
            s.poll_closes.pop_front(),
            s.delay,
            s.pad,
        )
    };
    let pad = Arc::new("x".repeat(pad));
    let state = state.clone();
    let events = stream::unfold((from, 0u64, false), move |(k, sent, done)| {
        let id = id.clone();
        let state = state.clone();
        let pad = pad.clone();
        async move {
            if done || k > n + 1 {
                return None;
            }
            if cut == Some(sent) {
                // Let hyper flush what it buffered first: the cut comes after those events.
                tokio::time::sleep(Duration::from_millis(20)).await;
                state.seen.cuts.fetch_add(1, Ordering::Relaxed);
                let err = io::Error::new(io::ErrorKind::ConnectionAborted, "injected cut");
                return Some((Err(err), (k, sent, true)));
            }
            if poll_close == Some(sent) {
                let frame = Frame::data(Bytes::from_static(b"retry: 20\n\n"));
                return Some((Ok(frame), (k, sent, true)));
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let data = if k <= n {
                format!(
                    r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{id},"progress":{k},"total":{n},"pad":"{pad}"}}}}"#
                )
            } else {
                format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"events":{n}}}}}"#)
            };
            let event = if no_ids {
                format!("event: message\ndata: {data}\n\n")
            } else {
                format!("id: {id}-{k}\nevent: message\ndata: {data}\n\n")
            };
            Some((
                Ok(Frame::data(Bytes::from(event))),
                (k + 1, sent + 1, false),
            ))
        }
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(events)));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().expect("static"));
    r
}
