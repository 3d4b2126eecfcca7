//! The driver's HTTP client: hyper's connection-level API, so the harness decides exactly how
//! many connections it opens and what runs on each (HTTP/1.1: one request at a time;
//! HTTP/2 prior knowledge, h2c: many streams per connection). No pool hides anything.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;

use crate::{
    error::{Context as _, Result, bail},
    mcp::{self, PATH},
};

pub type H1Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
pub type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// Which HTTP the driver speaks to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    /// HTTP/2 with prior knowledge over cleartext.
    H2c,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Self::H1 => "HTTP/1.1",
            Self::H2c => "h2c",
        }
    }
}

async fn tcp(addr: SocketAddr) -> Result<TokioIo<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true).ok();
    Ok(TokioIo::new(tcp))
}

/// One HTTP/1.1 connection; its task ends when the sender and any response body are gone.
pub async fn h1(addr: SocketAddr) -> Result<(H1Sender, JoinHandle<()>)> {
    let (send, conn) = hyper::client::conn::http1::handshake(tcp(addr).await?)
        .await
        .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
    Ok((send, tokio::spawn(async move { conn.await.unwrap_or(()) })))
}

/// One h2c (prior knowledge) connection.
pub async fn h2(addr: SocketAddr) -> Result<(H2Sender, JoinHandle<()>)> {
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(tcp(addr).await?)
        .await
        .with_context(|| format!("h2c handshake with {addr}"))?;
    Ok((send, tokio::spawn(async move { conn.await.unwrap_or(()) })))
}

/// A POST to the MCP endpoint at `addr`. HTTP/1.1 gets an origin-form target and `Host`;
/// HTTP/2 an absolute URI (its `:scheme` and `:authority`).
pub fn post(
    proto: Proto,
    addr: SocketAddr,
    headers: &[(&'static str, String)],
    body: String,
) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::from(body)));
    *req.method_mut() = Method::POST;
    match proto {
        Proto::H1 => {
            *req.uri_mut() = PATH.parse().expect("static path");
            req.headers_mut().insert(
                header::HOST,
                addr.to_string()
                    .parse()
                    .expect("an address is a header value"),
            );
        }
        Proto::H2c => *req.uri_mut() = format!("http://{addr}{PATH}").parse().expect("a URI"),
    }
    let h = req.headers_mut();
    for (k, v) in headers {
        h.insert(*k, v.parse().expect("header values here are ASCII"));
    }
    req
}

/// Sends one request on a fresh HTTP/1.1 connection and reads the whole answer.
pub async fn exchange(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, HeaderMap, Bytes)> {
    let (mut send, conn) = h1(addr).await?;
    let result = tokio::time::timeout(EXCHANGE_TIMEOUT, send_and_read(&mut send, req)).await;
    drop(send);
    conn.abort();
    result.map_err(|_| {
        crate::error::Error::msg(format!(
            "{addr} did not answer within {} s",
            EXCHANGE_TIMEOUT.as_secs()
        ))
    })?
}

/// The longest a one-off request (initialize, `/stats`, `/metrics`, `bench/go`) may take.
const EXCHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends one request on `send` and reads the whole answer.
pub async fn send_and_read(
    send: &mut H1Sender,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, HeaderMap, Bytes)> {
    send.ready().await.context("connection not ready")?;
    let response = send.send_request(req).await.context("sending a request")?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.context("reading a body")?.to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// Opens a legacy session through `addr`: its `Mcp-Session-Id`.
pub async fn initialize(addr: SocketAddr) -> Result<String> {
    let req = post(
        Proto::H1,
        addr,
        &mcp::initialize_headers(),
        mcp::initialize_body(0),
    );
    let (status, headers, body) = exchange(addr, req).await?;
    session_id(status, &headers, &body).with_context(|| format!("initialize through {addr}"))
}

/// The session id of an `initialize` answer, or why there is none.
pub fn session_id(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<String> {
    if status != StatusCode::OK {
        bail!("status {status}: {}", String::from_utf8_lossy(body));
    }
    headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .context("no Mcp-Session-Id in the answer")
}

/// GETs `path` from `addr` as text (the upstream's `/stats`, a proxy's `/metrics`).
pub async fn get_text(addr: SocketAddr, path: &str) -> Result<String> {
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = path.parse().context("a path")?;
    req.headers_mut().insert(
        header::HOST,
        addr.to_string()
            .parse()
            .expect("an address is a header value"),
    );
    let (status, _, body) = exchange(addr, req).await?;
    if status != StatusCode::OK {
        bail!("GET {path} from {addr}: status {status}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Checks that a response opened an SSE stream; otherwise an error with its status and body.
pub async fn expect_sse(response: Response<Incoming>) -> Result<Incoming> {
    let (parts, body) = response.into_parts();
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if parts.status == StatusCode::OK && is_sse {
        return Ok(body);
    }
    let text = match tokio::time::timeout(std::time::Duration::from_secs(2), body.collect()).await {
        Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        _ => String::new(),
    };
    bail!(
        "expected an SSE stream, got status {} ({:?}): {text}",
        parts.status,
        parts.headers.get(header::CONTENT_TYPE)
    )
}

/// Counts SSE events (blocks ended by a blank line, `\n\n`) across body frames.
#[derive(Default)]
pub struct EventCounter {
    pub events: u64,
    last: u8,
}

impl EventCounter {
    pub fn feed(&mut self, data: &[u8]) {
        let mut last = self.last;
        let mut n = 0;
        for &b in data {
            n += u64::from(b == b'\n' && last == b'\n');
            last = b;
        }
        self.last = last;
        self.events += n;
    }
}

/// Reads `body` until `counter` has seen `until` events (or the body ends: `Ok(false)`).
pub async fn read_events(
    body: &mut Incoming,
    counter: &mut EventCounter,
    until: u64,
) -> Result<bool> {
    while counter.events < until {
        match body.frame().await {
            None => return Ok(false),
            Some(frame) => {
                if let Ok(data) = frame.context("reading an SSE body")?.into_data() {
                    counter.feed(&data);
                }
            }
        }
    }
    Ok(true)
}
