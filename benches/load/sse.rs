//! SSE and session load from the driver (hyper client, one connection per HTTP/1.1 stream):
//!
//! - [`one_stream`]: events per second through one stream — the clock runs from the request to
//!   the end of the body; every event, and the JSON-RPC response that ends the stream, counted.
//! - [`fanout`]: aggregate events per second over many concurrent streams. Every stream is opened
//!   and has received its first event before the upstream is told (`bench/go`, directly) to send
//!   the rest, so all of them really run at once; the clock runs from `go` to the last stream's
//!   end and counts only the events after `go`.
//! - [`hold`]: opens streams that the upstream keeps open after one event (`hold: true`), each
//!   confirmed by receiving that event, over HTTP/1.1 (one connection each) or h2c (many
//!   streams per connection), and keeps them until [`Held::close`].
//! - [`initialize_many`]: `initialize` requests over keep-alive HTTP/1.1 connections.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use http::StatusCode;
use hyper::body::Incoming;
use tokio::{
    sync::{Semaphore, mpsc},
    task::{JoinHandle, JoinSet},
};

use crate::{
    client::{self, EventCounter, H2Sender, Proto},
    error::{Context as _, Error, Result, bail},
    mcp::{self, Era, GO_METHOD, STREAM_METHOD},
};

fn stream_request(
    proto: Proto,
    addr: SocketAddr,
    era: Era,
    session: Option<&str>,
    id: u64,
    params: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    client::post(
        proto,
        addr,
        &mcp::headers(era, STREAM_METHOD, session),
        mcp::body(era, id, STREAM_METHOD, params),
    )
}

/// Events per second through one stream of `events` events (plus the response event).
pub async fn one_stream(
    addr: SocketAddr,
    era: Era,
    session: Option<&str>,
    events: u64,
) -> Result<f64> {
    let (mut send, conn) = client::h1(addr).await?;
    let req = stream_request(
        Proto::H1,
        addr,
        era,
        session,
        1,
        &mcp::stream_params(events, false, None),
    );
    let started = Instant::now();
    let response = send
        .send_request(req)
        .await
        .context("sending bench/stream")?;
    let mut body = client::expect_sse(response).await?;
    let mut counter = EventCounter::default();
    client::read_events(&mut body, &mut counter, u64::MAX).await?;
    let elapsed = started.elapsed().as_secs_f64();
    conn.abort();
    if counter.events < events + 1 {
        bail!(
            "the stream ended after {} of {} events",
            counter.events,
            events + 1
        );
    }
    Ok(counter.events as f64 / elapsed)
}

/// Releases the streams waiting at `gate` (a request straight to the upstream).
async fn go(upstream: SocketAddr, gate: &str) -> Result<()> {
    let req = client::post(
        Proto::H1,
        upstream,
        &mcp::headers(Era::Legacy, GO_METHOD, None),
        mcp::body(Era::Legacy, 0, GO_METHOD, &format!(r#""gate":"{gate}""#)),
    );
    let (status, _, body) = client::exchange(upstream, req).await?;
    if status != StatusCode::OK {
        bail!(
            "bench/go: status {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

static GATES: AtomicU64 = AtomicU64::new(0);

/// Aggregate events per second over `streams` concurrent streams of `events` events each.
pub async fn fanout(
    addr: SocketAddr,
    upstream: SocketAddr,
    era: Era,
    session: Option<&str>,
    streams: u64,
    events: u64,
    open_concurrency: usize,
) -> Result<f64> {
    let gate = format!("g{}", GATES.fetch_add(1, Ordering::Relaxed));
    let permits = Arc::new(Semaphore::new(open_concurrency.max(1)));
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<Result<()>>();
    let mut tasks = JoinSet::new();
    for i in 0..streams {
        let (permits, opened, gate) = (permits.clone(), opened_tx.clone(), gate.clone());
        let session = session.map(str::to_owned);
        tasks.spawn(async move {
            let permit = permits.acquire_owned().await.expect("never closed");
            let open = async {
                let (mut send, conn) = client::h1(addr).await?;
                let params = mcp::stream_params(events, false, Some(&gate));
                let req = stream_request(Proto::H1, addr, era, session.as_deref(), i + 1, &params);
                let response = send
                    .send_request(req)
                    .await
                    .context("sending bench/stream")?;
                let mut body = client::expect_sse(response).await?;
                let mut counter = EventCounter::default();
                if !client::read_events(&mut body, &mut counter, 1).await? {
                    bail!("the stream ended before its first event");
                }
                Ok((body, counter, conn))
            };
            let (mut body, mut counter, conn) = match open.await {
                Ok(opened) => opened,
                Err(e) => {
                    let _ = opened.send(Err(Error::msg(format!("stream {i}: {e}"))));
                    return Err(e);
                }
            };
            drop(permit);
            let before_go = counter.events;
            let _ = opened.send(Ok(()));
            client::read_events(&mut body, &mut counter, u64::MAX).await?;
            let done = Instant::now();
            conn.abort();
            if counter.events < events + 1 {
                bail!(
                    "stream {i} ended after {} of {} events",
                    counter.events,
                    events + 1
                );
            }
            Ok((counter.events - before_go, done))
        });
    }
    drop(opened_tx);
    for _ in 0..streams {
        opened_rx
            .recv()
            .await
            .context("a stream task ended without opening")??;
    }
    let started = Instant::now();
    go(upstream, &gate).await?;
    let (mut total, mut last) = (0u64, started);
    while let Some(joined) = tasks.join_next().await {
        let (n, done) = joined.context("a stream task panicked")??;
        total += n;
        last = last.max(done);
    }
    Ok(total as f64 / (last - started).as_secs_f64())
}

/// Streams held open; dropping them (or [`Held::close`]) closes them and their connections.
pub struct Held {
    bodies: Vec<Incoming>,
    senders: Vec<H2Sender>,
    conns: Vec<JoinHandle<()>>,
}

impl Held {
    pub fn len(&self) -> usize {
        self.bodies.len()
    }

    pub fn close(self) {}
}

impl Drop for Held {
    fn drop(&mut self) {
        self.bodies.clear();
        self.senders.clear();
        for c in &self.conns {
            c.abort();
        }
    }
}

/// Opens `streams` held streams through `addr`: HTTP/1.1 one connection each, or h2c spread
/// round-robin over `conns` connections.
pub async fn hold(
    proto: Proto,
    addr: SocketAddr,
    era: Era,
    session: Option<&str>,
    streams: u64,
    conns: u64,
    open_concurrency: usize,
) -> Result<Held> {
    let mut held = Held {
        bodies: Vec::with_capacity(streams as usize),
        senders: Vec::new(),
        conns: Vec::new(),
    };
    if proto == Proto::H2c {
        for _ in 0..conns.max(1) {
            let (send, conn) = client::h2(addr).await?;
            held.senders.push(send);
            held.conns.push(conn);
        }
    }
    let permits = Arc::new(Semaphore::new(open_concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..streams {
        let permits = permits.clone();
        let session = session.map(str::to_owned);
        let h2 = (!held.senders.is_empty())
            .then(|| held.senders[(i as usize) % held.senders.len()].clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            let params = mcp::stream_params(1, true, None);
            let req = stream_request(proto, addr, era, session.as_deref(), i + 1, &params);
            let (response, conn) = match h2 {
                Some(mut send) => {
                    send.ready().await.context("h2c connection not ready")?;
                    (send.send_request(req).await, None)
                }
                None => {
                    let (mut send, conn) = client::h1(addr).await?;
                    (send.send_request(req).await, Some(conn))
                }
            };
            let response = response.with_context(|| format!("opening held stream {i}"))?;
            let mut body = client::expect_sse(response).await?;
            let mut counter = EventCounter::default();
            if !client::read_events(&mut body, &mut counter, 1).await? {
                bail!("held stream {i} ended before its first event");
            }
            Ok::<_, Error>((body, conn))
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (body, conn) = joined.context("a stream task panicked")??;
        held.bodies.push(body);
        held.conns.extend(conn);
    }
    Ok(held)
}

/// `total` `initialize` requests through `addr` over `concurrency` keep-alive HTTP/1.1
/// connections; each must answer with a session id. Returns requests per second.
pub async fn initialize_many(addr: SocketAddr, total: u64, concurrency: u64) -> Result<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let next = next.clone();
        tasks.spawn(async move {
            let (mut send, conn) = client::h1(addr).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let req = client::post(
                    Proto::H1,
                    addr,
                    &mcp::initialize_headers(),
                    mcp::initialize_body(i),
                );
                let (status, headers, body) = client::send_and_read(&mut send, req).await?;
                client::session_id(status, &headers, &body)
                    .with_context(|| format!("initialize {i}"))?;
            }
            drop(send);
            conn.abort();
            Ok::<_, Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("an initialize task panicked")??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
