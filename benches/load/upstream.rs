//! The upstream: a trivial, fast MCP server (hyper, HTTP/1.1 keep-alive) in a process of its
//! own — this bench binary re-executed with `LOAD_ROLE=upstream` — so its RSS, descriptors and
//! CPU are not the driver's. It prints its port on stdout and exits when its stdin closes (the
//! driver went away, however it went).
//!
//! It answers JSON-RPC `POST`s of both eras:
//!
//! - `initialize` → a JSON result with a fresh `Mcp-Session-Id` each time (legacy);
//! - `bench/stream` `{"events":N,"hold":bool,"gate":"g"}` → `text/event-stream`: N events
//!   (`id: <k>`, a ~100-byte `notifications/progress` as data) written 128 to a frame as fast as
//!   the socket takes them, then the JSON-RPC response event (which ends a POST stream for
//!   mcp-relay's legacy pump). With `hold` it sends the first event and keeps the stream open
//!   until the client goes away (counted in `/stats` as `held`). With `gate` it sends the first
//!   event, then waits for a `bench/go` naming the gate before the rest: the driver opens all
//!   its streams first and times only the events after `go`.
//! - `bench/go` `{"gate":"g"}` → releases the streams waiting at `g`;
//! - any other request → `{"jsonrpc":"2.0","id":<same id>,"result":{}}` (application/json);
//! - notifications → `202`; `GET /stats` → `{"held":…,"sessions":…}`.
//!
//! Like a real dual-era server it checks the era's headers: a modern request (by
//! `MCP-Protocol-Version` ≥ 2026-07-28) must mirror its method in `Mcp-Method`; a legacy request
//! other than `initialize` must carry an `Mcp-Session-Id` (400 otherwise), so a proxy that
//! dropped or garbled them would show up as errors, not as speed.

use std::{
    borrow::Cow,
    collections::HashMap,
    convert::Infallible,
    io::{BufRead as _, Read as _, Write as _},
    net::SocketAddr,
    path::Path,
    pin::Pin,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    task::Poll,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _, stream};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{body::Frame, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::{
    error::{Context as _, Result, bail},
    mcp::{GO_METHOD, MODERN_VERSION, STREAM_METHOD},
    procs::ChildGuard,
};

/// The environment variable that makes this binary the upstream.
pub const ROLE_VAR: &str = "LOAD_ROLE";
const THREADS_VAR: &str = "LOAD_UPSTREAM_THREADS";
/// Events per body frame.
const CHUNK_EVENTS: u64 = 128;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The upstream process, seen from the driver.
pub struct Upstream {
    /// Kills the process when the driver is done with it (`None`: an external upstream).
    _guard: Option<ChildGuard>,
    pub addr: SocketAddr,
}

/// The environment variable naming an MCP server already listening (`127.0.0.1:PORT`, its
/// endpoint at `/mcp`) to measure instead of this bench's own upstream: an official SDK
/// server, say. Only the `json` phase makes sense with it (the others need this upstream's
/// event streams).
pub const EXTERNAL_VAR: &str = "LOAD_UPSTREAM_ADDR";

/// The external upstream of [`EXTERNAL_VAR`], if set.
pub fn external() -> Result<Option<Upstream>> {
    let Ok(addr) = std::env::var(EXTERNAL_VAR) else {
        return Ok(None);
    };
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("{EXTERNAL_VAR}={addr:?}: expected IP:PORT"))?;
    Ok(Some(Upstream { _guard: None, addr }))
}

/// Starts the upstream process with `threads` tokio workers; its stderr goes to `dir`.
pub async fn start(threads: usize, dir: &Path) -> Result<Upstream> {
    let exe = std::env::current_exe().context("finding the bench executable")?;
    let log = dir.join("upstream.log");
    let stderr = std::fs::File::create(&log).context("creating upstream.log")?;
    let mut child = std::process::Command::new(&exe)
        .env(ROLE_VAR, "upstream")
        .env(THREADS_VAR, threads.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting the upstream ({})", exe.display()))?;
    let stdout = child.stdout.take().context("upstream stdout")?;
    let mut guard = ChildGuard::new("upstream", child, Some(log));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(15)))
        .await
        .context("waiting for the upstream's port")?;
    let port: u16 = match line {
        Ok(l) => l
            .trim()
            .parse()
            .with_context(|| format!("upstream printed {l:?}, not a port"))?,
        Err(_) => {
            guard.check_alive()?;
            bail!("the upstream printed no port within 15 s");
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    guard.wait_listening(addr, Duration::from_secs(10)).await?;
    Ok(Upstream {
        _guard: Some(guard),
        addr,
    })
}

/// Runs the upstream role (this process was started by [`start`]). Returns only on error.
pub fn run_role() -> Result<()> {
    let threads = std::env::var(THREADS_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("building the upstream's runtime")?
        .block_on(serve())
}

#[derive(Default)]
struct State {
    sessions: AtomicU64,
    held: AtomicI64,
    gates: parking_lot::Mutex<HashMap<String, watch::Sender<bool>>>,
}

impl State {
    fn gate(&self, name: &str) -> watch::Receiver<bool> {
        self.gates
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }

    fn go(&self, name: &str) {
        if let Some(gate) = self.gates.lock().remove(name) {
            gate.send_replace(true);
        }
    }
}

async fn serve() -> Result<()> {
    let socket = tokio::net::TcpSocket::new_v4().context("upstream socket")?;
    socket.set_reuseaddr(true).context("SO_REUSEADDR")?;
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .context("binding 127.0.0.1:0")?;
    let listener = socket.listen(4096).context("listening")?;
    let port = listener.local_addr().context("local address")?.port();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{port}").context("printing the port")?;
        out.flush().context("printing the port")?;
    }
    // The driver holds our stdin: when it goes (even killed), so do we.
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let state = Arc::new(State::default());
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // EMFILE and the like: say so, and keep serving the connections we have.
                eprintln!("upstream: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tcp.set_nodelay(true).ok();
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    params: Option<Params>,
}

#[derive(Deserialize, Default)]
struct Params {
    #[serde(default)]
    events: u64,
    #[serde(default)]
    hold: bool,
    #[serde(default)]
    gate: Option<String>,
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, id: Option<&RawValue>, code: i32, message: &str) -> Response<Body> {
    let id = id.map_or("null", RawValue::get);
    json(
        status,
        format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":"{message}"}}}}"#),
    )
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *r.status_mut() = status;
    r
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> std::result::Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    if parts.method == Method::GET && parts.uri.path() == "/stats" {
        return Ok(json(
            StatusCode::OK,
            format!(
                r#"{{"held":{},"sessions":{}}}"#,
                state.held.load(Ordering::Relaxed),
                state.sessions.load(Ordering::Relaxed)
            ),
        ));
    }
    if parts.method != Method::POST {
        return Ok(empty(StatusCode::METHOD_NOT_ALLOWED));
    }
    let Ok(bytes) = body.collect().await.map(|b| b.to_bytes()) else {
        return Ok(empty(StatusCode::BAD_REQUEST));
    };
    let Ok(msg) = serde_json::from_slice::<Message>(&bytes) else {
        return Ok(error(StatusCode::BAD_REQUEST, None, -32700, "parse error"));
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let method = msg.method.as_deref();
    let modern =
        header("mcp-protocol-version").is_some_and(|v| v.len() == 10 && v >= MODERN_VERSION);
    if modern {
        if header("mcp-method") != method {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                msg.id,
                -32020,
                "Mcp-Method does not match the body",
            ));
        }
    } else if msg.id.is_some()
        && method != Some("initialize")
        && method != Some(GO_METHOD)
        && header("mcp-session-id").is_none()
    {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            msg.id,
            -32600,
            "Mcp-Session-Id required",
        ));
    }
    let Some(id) = msg.id else {
        return Ok(empty(StatusCode::ACCEPTED));
    };
    let params = msg.params.unwrap_or_default();
    Ok(match method {
        Some("initialize") => {
            let n = state.sessions.fetch_add(1, Ordering::Relaxed);
            let mut r = json(
                StatusCode::OK,
                format!(
                    r#"{{"jsonrpc":"2.0","id":{},"result":{{"protocolVersion":"2025-11-25","capabilities":{{}},"serverInfo":{{"name":"load-upstream","version":"1"}}}}}}"#,
                    id.get()
                ),
            );
            let sid = format!("up-{n:016x}-{:08x}", std::process::id());
            r.headers_mut().insert(
                "mcp-session-id",
                http::HeaderValue::from_str(&sid).expect("visible ASCII"),
            );
            r
        }
        Some(STREAM_METHOD) => sse(&state, id.get(), params),
        Some(GO_METHOD) => {
            state.go(params.gate.as_deref().unwrap_or_default());
            json(
                StatusCode::OK,
                format!(r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#, id.get()),
            )
        }
        _ => json(
            StatusCode::OK,
            format!(r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#, id.get()),
        ),
    })
}

/// Events `from..to` of a stream of `total`, as one buffer.
fn events(from: u64, to: u64, total: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(((to - from) * 112) as usize);
    let mut k_buf = itoa::Buffer::new();
    let mut total_buf = itoa::Buffer::new();
    let total = total_buf.format(total);
    for k in from..to {
        let k = k_buf.format(k);
        b.extend_from_slice(b"id: ");
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(
            b"\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":",
        );
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(b",\"total\":");
        b.extend_from_slice(total.as_bytes());
        b.extend_from_slice(b"}}\n\n");
    }
    b.freeze()
}

/// Counts a held stream for `/stats` while it lives.
struct Held(Arc<State>);

impl Held {
    fn new(state: &Arc<State>) -> Self {
        state.held.fetch_add(1, Ordering::Relaxed);
        Self(state.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

type Frames = Pin<Box<dyn Stream<Item = std::result::Result<Frame<Bytes>, Infallible>> + Send>>;

fn sse(state: &Arc<State>, id: &str, p: Params) -> Response<Body> {
    let total = p.events;
    let frames: Frames = if p.hold {
        let held = Held::new(state);
        let first = events(0, 1.min(total), total);
        Box::pin(
            stream::once(async move { Ok(Frame::data(first)) }).chain(stream::poll_fn(move |_| {
                let _ = &held;
                Poll::Pending
            })),
        )
    } else {
        let response = Bytes::from(format!(
            "id: end\ndata: {{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{}}}}\n\n"
        ));
        let gate = p.gate.as_deref().map(|g| state.gate(g));
        // A gated stream sends event 0 alone, waits at the gate, then the rest.
        let first = gate.as_ref().map(|_| events(0, 1.min(total), total));
        let start = u64::from(first.is_some()).min(total);
        let rest = stream::unfold((start, gate), move |(next, gate)| async move {
            if let Some(mut gate) = gate {
                let _ = gate.wait_for(|open| *open).await;
            }
            (next < total).then(|| {
                let to = (next + CHUNK_EVENTS).min(total);
                (Ok(Frame::data(events(next, to, total))), (to, None))
            })
        });
        Box::pin(
            stream::iter(first.map(|f| Ok(Frame::data(f))))
                .chain(rest)
                .chain(stream::once(async move { Ok(Frame::data(response)) })),
        )
    };
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    h.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    r
}
