//! SSE through one stream, direct vs through mcp-relay, and the proxy's memory per open stream.
//!
//!     cargo bench --bench sse_stream     # EVENTS=200000 ROUNDS=5 STREAMS=1000 ERAS=legacy,modern
//!
//! A fast upstream of our own (hyper, in this process) answers `initialize` and a `stream`
//! request with EVENTS small SSE events written as fast as the socket takes them. The client
//! (also here) reads them directly, then through a release `mcp-relay` process, alternating
//! rounds so machine noise hits both; it reports the median events/s of each and the ratio, for
//! a legacy stream (pump + window reader) and a modern one (direct relay). It also reports the CPU
//! time per event spent by the upstream and client (this process) and by the proxy (from
//! `/proc/<pid>/task/*/schedstat`): a figure that machine noise moves far less than events/s.
//!
//! Memory: STREAMS legacy POST streams are opened through the proxy and held open (the upstream
//! sends one event each, then waits); the proxy's RSS growth divided by STREAMS is its cost per
//! open stream with the default windows, connections on both sides included.

#[path = "shared/proc_status.rs"]
mod proc_status;

use std::{
    convert::Infallible,
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt as _, stream};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{body::Frame, body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;
type Headers<'a> = Vec<(&'a str, &'a str)>;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Events `from..from + 64` (ids unique per stream, as the proxy drops repeated ids).
fn event_chunk(from: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(64 * 110);
    for k in from..from + 64 {
        b.extend_from_slice(
            format!(
                "id: {k}\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progress\":{k}}}}}\n\n"
            )
            .as_bytes(),
        );
    }
    b.freeze()
}

/// The JSON-RPC response that ends a `stream` request's SSE stream.
const RESPONSE: &[u8] = b"id: end\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";

async fn upstream(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let msg: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let full = |status: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
        *r.status_mut() = status;
        r.headers_mut()
            .insert("content-type", "application/json".parse().expect("static"));
        r
    };
    if parts.method != Method::POST {
        return Ok(full(StatusCode::METHOD_NOT_ALLOWED, ""));
    }
    match msg["method"].as_str() {
        Some("initialize") => {
            let mut r = full(
                StatusCode::OK,
                r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"bench","version":"1"}}}"#,
            );
            r.headers_mut()
                .insert("mcp-session-id", "bench-session".parse().expect("static"));
            Ok(r)
        }
        Some("stream") => {
            let events = msg["params"]["events"].as_u64().unwrap_or(0);
            let hold = msg["params"]["hold"].as_bool().unwrap_or(false);
            let chunks = events.div_ceil(64);
            let body: Body = if hold {
                let first = Bytes::from_static(b"id: 0\ndata: {}\n\n");
                let s =
                    stream::once(async move { Ok(Frame::data(first)) }).chain(stream::pending());
                BodyExt::boxed(StreamBody::new(s))
            } else {
                let s = stream::iter((0..chunks).map(|c| Ok(Frame::data(event_chunk(c * 64)))))
                    .chain(stream::once(async {
                        Ok(Frame::data(Bytes::from_static(RESPONSE)))
                    }));
                BodyExt::boxed(StreamBody::new(s))
            };
            let mut r = Response::new(body);
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().expect("static"));
            Ok(r)
        }
        _ => Ok(full(StatusCode::ACCEPTED, "")),
    }
}

async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).ok();
            tokio::spawn(async move {
                let svc = service_fn(upstream);
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await
                    .ok();
            });
        }
    });
    addr
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn post(
    client: &HttpClient,
    url: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Response<Incoming> {
    let mut req = Request::new(Full::new(Bytes::from(body)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = url.parse().expect("url");
    let h = req.headers_mut();
    h.insert("content-type", "application/json".parse().expect("static"));
    h.insert(
        "accept",
        "application/json, text/event-stream"
            .parse()
            .expect("static"),
    );
    for (k, v) in headers {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    client.request(req).await.expect("request")
}

/// Opens a legacy session at `url`; returns its `Mcp-Session-Id`.
async fn initialize(client: &HttpClient, url: &str) -> String {
    let r = post(
        client,
        url,
        &[],
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#.into(),
    )
    .await;
    let sid = r.headers()["mcp-session-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    r.into_body().collect().await.ok();
    sid
}

/// Streams `events` events through `url`; returns events per second as the client counts them.
async fn one_stream(client: &HttpClient, url: &str, headers: &[(&str, &str)], events: u64) -> f64 {
    let body =
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"stream","params":{{"events":{events}}}}}"#);
    let started = Instant::now();
    let mut body_stream = post(client, url, headers, body).await.into_body();
    let mut seen = 0u64;
    let mut last = 0u8;
    while let Some(frame) = body_stream.frame().await {
        let Ok(data) = frame.expect("frame").into_data() else {
            continue;
        };
        for &b in data.iter() {
            if b == b'\n' && last == b'\n' {
                seen += 1;
            }
            last = b;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(seen >= events, "saw {seen} of {events} events");
    seen as f64 / elapsed
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Relay {
    child: tokio::process::Child,
    url: String,
}

async fn start_relay(upstream: SocketAddr) -> Relay {
    let port = free_port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-relay"))
        .args(["serve", "--upstream", &format!("http://{upstream}/mcp")])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--no-metrics")
        .env("RUST_LOG", "warn")
        .env_remove("MCP_RELAY_CONFIG")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mcp-relay");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Relay {
        child,
        url: format!("http://127.0.0.1:{port}/mcp"),
    }
}

/// CPU time (ns) all threads of process `pid` have run so far (`/proc/<pid>/task/*/schedstat`,
/// first field). Threads that already exited are not counted; our runtimes keep theirs.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events = env_or("EVENTS", 200_000);
    let rounds = env_or("ROUNDS", 5);
    let streams = env_or("STREAMS", 1000);
    let up = start_upstream().await;
    let relay = start_relay(up).await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let direct_url = format!("http://{up}/mcp");

    let direct_sid = initialize(&client, &direct_url).await;
    let proxied_sid = initialize(&client, &relay.url).await;
    let modern = [("mcp-protocol-version", "2026-07-28")];
    println!("SSE through one stream: {events} events/round, {rounds} alternating rounds (median)");
    let eras = std::env::var("ERAS").unwrap_or_else(|_| "legacy,modern".into());
    let (me, relay_pid) = (std::process::id(), relay.child.id().expect("pid"));
    for era in eras.split(',') {
        let (mut d, mut p) = (Vec::new(), Vec::new());
        // CPU ns spent: in this process (upstream + client) on direct rounds, in this process and
        // in the proxy on proxied rounds.
        let (mut cpu_direct, mut cpu_here, mut cpu_relay) = (0, 0, 0);
        for _ in 0..rounds {
            let (dh, ph): (Headers, Headers) = if era == "legacy" {
                (
                    vec![
                        ("mcp-session-id", &direct_sid),
                        ("mcp-protocol-version", "2025-11-25"),
                    ],
                    vec![
                        ("mcp-session-id", &proxied_sid),
                        ("mcp-protocol-version", "2025-11-25"),
                    ],
                )
            } else {
                (modern.to_vec(), modern.to_vec())
            };
            let t0 = cpu_ns(me);
            d.push(one_stream(&client, &direct_url, &dh, events).await);
            let (t1, r1) = (cpu_ns(me), cpu_ns(relay_pid));
            p.push(one_stream(&client, &relay.url, &ph, events).await);
            let (t2, r2) = (cpu_ns(me), cpu_ns(relay_pid));
            cpu_direct += t1 - t0;
            cpu_here += t2 - t1;
            cpu_relay += r2 - r1;
        }
        let (dm, pm) = (median(d), median(p));
        let per_event = |ns: u64| ns as f64 / (events * rounds) as f64;
        println!(
            "  {era:6}  direct {:>10.0} ev/s   mcp-relay {:>10.0} ev/s   ratio {:.2}   \
             CPU ns/event: upstream+client {:.0} direct, {:.0} proxied; mcp-relay {:.0}",
            dm,
            pm,
            pm / dm,
            per_event(cpu_direct),
            per_event(cpu_here),
            per_event(cpu_relay),
        );
    }

    // Memory per open stream.
    let pid = relay_pid;
    let before = proc_status::rss_bytes(pid);
    let hold_client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let mut open = Vec::new();
    for i in 0..streams {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"stream","params":{{"events":1,"hold":true}}}}"#,
            i + 10
        );
        let headers = [
            ("mcp-session-id", proxied_sid.as_str()),
            ("mcp-protocol-version", "2025-11-25"),
        ];
        let mut body = post(&hold_client, &relay.url, &headers, body)
            .await
            .into_body();
        body.frame().await.expect("first event").expect("frame");
        open.push(body);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = proc_status::rss_bytes(pid);
    println!(
        "memory: {streams} open legacy streams: proxy RSS {:.1} MiB -> {:.1} MiB = {:.1} KiB per open stream",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after.saturating_sub(before)) as f64 / streams as f64 / 1024.0
    );
    drop(open);
}
