//! Limits at the edge of the data plane (issue 11, item 4), over real sockets: a slow request
//! head, a slow body, an idle keep-alive connection, the connection maximum, the session cap.
//! Every wait is bounded and fails with a message; no assertion is about speed beyond "closed
//! within a generous bound".

mod support;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use mcp_relay::{
    config::Config,
    daemon::{Daemon, Listeners},
    session::store::MemoryStore,
};
use support::{
    start_proxy_with,
    upstream::{Reply, TestUpstream},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Generous bound for anything the proxy must do by itself (close, answer).
const BOUND: Duration = Duration::from_secs(10);

/// A test upstream, a daemon in front of it tuned by `tune`, and one raw client connection to
/// the daemon's data listener.
async fn connected(tune: impl FnOnce(&mut Config)) -> (TestUpstream, Daemon, TcpStream) {
    let upstream = TestUpstream::start().await;
    let proxy = start_proxy_with(&upstream.url(), tune).await;
    let stream = TcpStream::connect(proxy.data_addr())
        .await
        .expect("connect");
    (upstream, proxy, stream)
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"edge-test","version":"0"}}}"#;
const INITIALIZE_RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"test-upstream","version":"0"}}}"#;

/// Reads until the peer closes (EOF or reset) or `BOUND` passes; returns what was read, or
/// panics naming `what`.
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    if tokio::time::timeout(BOUND, read).await.is_err() {
        panic!(
            "{what}: the proxy did not close the connection within {BOUND:?} (read so far: {:?})",
            String::from_utf8_lossy(&got)
        );
    }
    got
}

/// A plain request the data plane answers itself (no such route: 404), keeping the connection.
const OTHER_PATH: &[u8] = b"GET /not-mcp HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";

/// Reads one response head (up to its blank line) within `BOUND`.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("a response head within the bound");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_request_head_sent_slowly_is_cut_off_and_counted() {
    let (_upstream, proxy, mut stream) = connected(|c| {
        c.proxy.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let head = b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nx-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    // One byte per 100 ms: the whole head would take ~17 s; the proxy must cut it off first.
    let trickle = async {
        for byte in head {
            if stream.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut probe = [0u8; 256];
            // A closed connection reads EOF (or resets) while the trickle goes on.
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await
            {
                return true;
            }
        }
        false
    };
    let closed = tokio::time::timeout(BOUND, trickle).await.unwrap_or(false);
    assert!(
        closed,
        "a head trickled at 1 byte / 100 ms stayed open past {BOUND:?}"
    );
    assert_eq!(
        proxy.proxy_stats().snapshot().header_read_timeouts,
        1,
        "the cut-off is counted"
    );
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_request_body_sent_slowly_gets_408_and_the_connection_closes() {
    let (upstream, proxy, mut stream) = connected(|c| {
        c.proxy.request_body_timeout = Duration::from_secs(1);
    })
    .await;
    stream
        .write_all(
            b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
              accept: application/json, text/event-stream\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .expect("send the head");
    // The rest of the body, one byte per 200 ms in the background (20 s in all), until the
    // proxy closes.
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..99 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(BOUND, read).await.is_ok();
    trickle.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "a body slower than the timeout gets 408, got {text:?}"
    );
    assert!(
        text.contains(r#""error":{"code":-32600"#),
        "with a JSON-RPC error: {text:?}"
    );
    assert!(
        closed,
        "the connection closes after the 408 (within {BOUND:?})"
    );
    assert_eq!(proxy.proxy_stats().snapshot().request_body_timeouts, 1);
    assert!(
        upstream.requests().is_empty(),
        "nothing went to the upstream"
    );
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (_upstream, proxy, mut stream) = connected(|c| {
        c.proxy.keep_alive_idle_timeout = Duration::from_secs(1);
    })
    .await;
    stream.write_all(OTHER_PATH).await.expect("send");
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 404"), "answered: {head:?}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "the connection is kept alive after the answer: {head:?}"
    );
    read_until_closed(&mut stream, "an idle keep-alive connection").await;
    assert_eq!(proxy.proxy_stats().snapshot().idle_connections_closed, 1);
    proxy.shutdown().await.expect("shutdown");
}

/// A daemon with a metrics listener, `tune`d.
async fn start_with_metrics(upstream: &str, tune: impl FnOnce(&mut Config)) -> Daemon {
    let mut config = Config::new(upstream.parse().expect("upstream URL"));
    config.shutdown_grace = Duration::from_secs(2);
    tune(&mut config);
    let bind = || TcpListener::bind("127.0.0.1:0");
    let listeners = Listeners {
        data: bind().await.expect("bind data"),
        admin: bind().await.expect("bind admin").into(),
        metrics: Some(bind().await.expect("bind metrics")),
    };
    Daemon::start_with(config, listeners, Arc::new(MemoryStore::new()))
        .await
        .expect("start mcp-relay")
}

/// `GET path` on `addr` with `connection: close`; the whole answer, within `BOUND`.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::time::timeout(BOUND, TcpStream::connect(addr))
        .await
        .expect("connect within the bound")
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    String::from_utf8_lossy(&read_until_closed(&mut stream, path).await).into_owned()
}

#[tokio::test]
async fn past_max_connections_a_new_connection_is_refused_and_metrics_still_answer() {
    let upstream = TestUpstream::start().await;
    let proxy = start_with_metrics(&upstream.url(), |c| {
        c.proxy.max_connections = 3;
        c.proxy.threads = 2;
    })
    .await;
    let metrics = proxy.metrics_addr().expect("metrics listener");
    // Three connections, each answered once (so each is open on a thread), then kept.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(proxy.data_addr())
            .await
            .expect("connect");
        stream.write_all(OTHER_PATH).await.expect("send");
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 404"), "served: {head:?}");
        held.push(stream);
    }
    let mut refused = TcpStream::connect(proxy.data_addr())
        .await
        .expect("connect");
    let answer = String::from_utf8_lossy(
        &read_until_closed(&mut refused, "a connection past the maximum").await,
    )
    .into_owned();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "refused with 503 or a plain close: {answer:?}"
    );
    assert_eq!(proxy.proxy_stats().snapshot().connections_refused, 1);
    let scraped = get(metrics, "/metrics").await;
    assert!(
        scraped.starts_with("HTTP/1.1 200"),
        "/metrics answers: {scraped:?}"
    );
    assert!(
        scraped.contains("mcp_relay_connections_refused_total 1"),
        "the refusal is exported"
    );

    // A connection freed makes room again (its thread notices the close soon; bounded).
    drop(held.pop());
    let served = async {
        loop {
            let answer = get(proxy.data_addr(), "/not-mcp").await;
            if answer.starts_with("HTTP/1.1 404") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(BOUND, served)
        .await
        .expect("a new connection is served once one closed");
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn past_max_sessions_initialize_gets_503_until_a_session_ends() {
    let upstream = TestUpstream::start().await;
    let proxy = start_proxy_with(&upstream.url(), |c| c.session.max_sessions = 2).await;
    let client = support::http::Client::new();
    let url = support::proxy_url(&proxy);
    let mut sessions = Vec::new();
    for i in 0..2 {
        upstream.push(Reply::json(INITIALIZE_RESULT).session_id(&format!("UP-{i}")));
        let answer = client.post_read(&url, &[], INITIALIZE).await;
        assert_eq!(answer.status, http::StatusCode::OK, "session {i} admitted");
        sessions.push(
            answer
                .header("mcp-session-id")
                .expect("a session id")
                .to_owned(),
        );
    }
    upstream.push(Reply::json(INITIALIZE_RESULT).session_id("UP-2"));
    let answer = client.post_read(&url, &[], INITIALIZE).await;
    assert_eq!(
        answer.status,
        http::StatusCode::SERVICE_UNAVAILABLE,
        "the third session is refused: {:?}",
        answer.text()
    );
    assert_eq!(
        answer.json()["error"]["code"],
        -32603,
        "{:?}",
        answer.text()
    );
    assert_eq!(answer.json()["id"], 1, "the error names the request");
    assert_eq!(proxy.manager().len(), 2, "no third session");
    assert_eq!(proxy.manager().stats().snapshot().sessions_refused, 1);

    // One session ends (DELETE); a new one is admitted.
    upstream.push(Reply::status(200, ""));
    let ended = client
        .send(
            http::Method::DELETE,
            &url,
            &[("mcp-session-id", sessions[0].as_str())],
            "",
        )
        .await;
    assert!(ended.status().is_success(), "DELETE: {}", ended.status());
    upstream.push(Reply::json(INITIALIZE_RESULT).session_id("UP-3"));
    let answer = client.post_read(&url, &[], INITIALIZE).await;
    assert_eq!(
        answer.status,
        http::StatusCode::OK,
        "admitted again: {:?}",
        answer.text()
    );
    proxy.shutdown().await.expect("shutdown");
}

/// TCP states (`/proc/net/tcp` `st`) of this process's sockets whose remote port is `port`
/// (the test and the in-process proxy share the network namespace; only the proxy connects
/// to the upstream).
fn states_towards(port: u16) -> Vec<String> {
    let mut states = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state)) = (fields.get(2), fields.get(3)) else {
                continue;
            };
            let remote_port = remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) {
                states.push((*state).to_owned());
            }
        }
    }
    states
}

/// `/proc/net/tcp` states.
const ESTABLISHED: &str = "01";
const CLOSE_WAIT: &str = "08";

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_leaves_close_wait_without_new_traffic() {
    // An upstream that answers one request with a small JSON body (keep-alive), then closes
    // the connection while the proxy holds it idle in its pool.
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let port = listener.local_addr().expect("upstream address").port();
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.expect("read request");
            assert!(n > 0, "the proxy closed before its request");
            head.extend_from_slice(&buf[..n]);
        }
        conn.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        )
        .await
        .expect("answer");
        let _ = close_rx.await;
        drop(conn);
        let _ = closed_tx.send(());
        // Keep the listener's task (not the connection) alive for the rest of the test.
        std::future::pending::<()>().await;
    });
    let proxy = start_proxy_with(&format!("http://127.0.0.1:{port}/mcp"), |c| {
        c.proxy.threads = 1;
    })
    .await;
    let mut client = TcpStream::connect(proxy.data_addr())
        .await
        .expect("connect");
    client
        .write_all(b"GET /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n")
        .await
        .expect("send");
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "proxied: {head:?}");
    assert!(
        states_towards(port).contains(&ESTABLISHED.to_owned()),
        "the proxy keeps its upstream connection (pooled): {:?}",
        states_towards(port)
    );

    close_tx.send(()).expect("upstream task alive");
    closed_rx.await.expect("the upstream closed its side");
    // No new traffic: the proxy must notice the close by itself and close its socket.
    let reaped = async {
        loop {
            let states = states_towards(port);
            if !states.iter().any(|s| s == CLOSE_WAIT || s == ESTABLISHED) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if tokio::time::timeout(BOUND, reaped).await.is_err() {
        panic!(
            "the proxy's pooled socket to the upstream is still open {BOUND:?} after the \
             upstream closed it: states {:?} (08 = CLOSE-WAIT)",
            states_towards(port)
        );
    }
    drop(client);
    proxy.shutdown().await.expect("shutdown");
}

/// Two `initialize` requests pass the early cap check together (one session short of the cap);
/// the upstream answers the second first, which takes the last place. The first is refused when
/// its answer comes, and the session the upstream created for it is ended there with `DELETE`
/// instead of being left to the upstream's own expiry.
#[tokio::test]
async fn a_session_refused_after_the_upstream_created_it_is_ended_upstream() {
    let upstream = TestUpstream::start().await;
    let proxy = start_proxy_with(&upstream.url(), |c| c.session.max_sessions = 1).await;
    let client = support::http::Client::new();
    let url = support::proxy_url(&proxy);
    let (first, release) = Reply::json(INITIALIZE_RESULT).session_id("UP-A").held();
    upstream.push(first);
    upstream.push(Reply::json(INITIALIZE_RESULT).session_id("UP-B"));
    let first = tokio::spawn({
        let (client, url) = (support::http::Client::new(), url.clone());
        async move { client.post_read(&url, &[], INITIALIZE).await }
    });
    upstream.wait_for_requests(1).await;
    let second = client.post_read(&url, &[], INITIALIZE).await;
    assert_eq!(
        second.status,
        http::StatusCode::OK,
        "the second takes the place"
    );
    release.send(()).expect("the first answer is still held");
    let first = tokio::time::timeout(BOUND, first)
        .await
        .expect("the first initialize is answered")
        .expect("client task");
    assert_eq!(
        first.status,
        http::StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        first.text()
    );
    let requests = upstream.wait_for_requests(3).await;
    let delete = requests
        .iter()
        .find(|r| r.method == http::Method::DELETE)
        .expect("a DELETE reached the upstream");
    assert_eq!(delete.header("mcp-session-id"), Some("UP-A"));
    assert_eq!(proxy.manager().len(), 1);
}

/// A daemon whose request heads must complete within 1 s, while an idle connection may stay
/// for the default keep-alive idle timeout (60 s, far past `BOUND`): a connection closed within
/// `BOUND` was closed by the head timer.
async fn start_with_short_head_timeout(upstream: &str) -> Daemon {
    start_proxy_with(upstream, |c| {
        c.proxy.header_read_timeout = Duration::from_secs(1);
        c.proxy.keep_alive_idle_timeout = Duration::from_secs(60);
    })
    .await
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_by_the_head_timer() {
    let upstream = TestUpstream::start().await;
    let proxy = start_with_short_head_timeout(&upstream.url()).await;
    let mut stream = TcpStream::connect(proxy.data_addr())
        .await
        .expect("connect");
    read_until_closed(&mut stream, "a connection that sends nothing").await;
    assert_eq!(proxy.proxy_stats().snapshot().header_read_timeouts, 1);
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_partial_h2_preface_then_silence_is_closed_by_the_head_timer() {
    let upstream = TestUpstream::start().await;
    let proxy = start_with_short_head_timeout(&upstream.url()).await;
    let mut stream = TcpStream::connect(proxy.data_addr())
        .await
        .expect("connect");
    stream
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("send the preface's start");
    read_until_closed(&mut stream, "a partial HTTP/2 preface").await;
    assert_eq!(proxy.proxy_stats().snapshot().header_read_timeouts, 1);
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_partial_head_pipelined_behind_a_request_in_flight_is_closed_by_the_head_timer() {
    let upstream = TestUpstream::start().await;
    let proxy = start_with_short_head_timeout(&upstream.url()).await;
    let (reply, release) = Reply::json(INITIALIZE_RESULT).session_id("UP-P").held();
    upstream.push(reply);
    let mut stream = TcpStream::connect(proxy.data_addr())
        .await
        .expect("connect");
    let request = format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\ncontent-length: {}\r\n\r\n{INITIALIZE}",
        INITIALIZE.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    // The request is in flight (the upstream holds its answer) when the next head starts.
    upstream.wait_for_requests(1).await;
    stream
        .write_all(b"GET /not-mcp HTTP/1.1\r\nhost: 12")
        .await
        .expect("send a partial second head");
    // Give the proxy time to read the partial head while the first request is still in
    // flight (what is asserted is the close below, not this wait).
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.send(()).expect("the answer is still held");
    let got = read_until_closed(&mut stream, "a pipelined partial head").await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the first request is answered: {text:?}"
    );
    assert_eq!(proxy.proxy_stats().snapshot().header_read_timeouts, 1);
    proxy.shutdown().await.expect("shutdown");
}

/// A client transport whose first write carries only the first 5 bytes of whatever is written
/// (the HTTP/2 preface's start), and whose next write waits 100 ms: the proxy's first read is
/// shorter than the preface, as a real client's may be.
struct SplitFirstWrite {
    io: TcpStream,
    written: usize,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl tokio::io::AsyncRead for SplitFirstWrite {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SplitFirstWrite {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        const FIRST: usize = 5;
        if self.written == FIRST {
            let pause = self
                .pause
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(100))));
            std::task::ready!(std::future::Future::poll(pause.as_mut(), cx));
        }
        let cap = if self.written < FIRST {
            FIRST - self.written
        } else {
            buf.len()
        };
        let len = buf.len().min(cap);
        let polled = std::pin::Pin::new(&mut self.io).poll_write(cx, &buf[..len]);
        if let std::task::Poll::Ready(Ok(n)) = polled {
            self.written += n;
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn an_h2c_connection_idle_between_requests_outlives_the_head_timeout() {
    let upstream = TestUpstream::start().await;
    let proxy = start_with_short_head_timeout(&upstream.url()).await;
    let io = SplitFirstWrite {
        io: TcpStream::connect(proxy.data_addr())
            .await
            .expect("connect"),
        written: 0,
        pause: None,
    };
    // Prior knowledge (h2c); PINGs while idle, as a client keeping its connection warm does.
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(300))
            .keep_alive_while_idle(true)
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(io))
            .await
            .expect("h2c handshake");
    let driver = tokio::spawn(connection);
    for round in 0..2 {
        let request = http::Request::get(format!("http://{}/not-mcp", proxy.data_addr()))
            .body(http_body_util::Empty::new())
            .expect("request");
        let answer = tokio::time::timeout(BOUND, sender.send_request(request))
            .await
            .unwrap_or_else(|_| panic!("request {round} answered within {BOUND:?}"))
            .unwrap_or_else(|err| panic!("request {round} on the same h2c connection: {err}"));
        assert_eq!(
            answer.status(),
            http::StatusCode::NOT_FOUND,
            "round {round}"
        );
        assert_eq!(answer.version(), http::Version::HTTP_2, "round {round}");
        if round == 0 {
            // Idle (but for PINGs) for longer than the head timeout, shorter than the idle one.
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
    }
    assert_eq!(
        proxy.proxy_stats().snapshot().header_read_timeouts,
        0,
        "an HTTP/2 connection has no request heads to time"
    );
    drop(sender);
    driver.abort();
    proxy.shutdown().await.expect("shutdown");
}

/// Upstream connections are bounded process-wide (H1): with `max_upstream_connections = 3`,
/// three streams the upstream holds open take every place; a fourth request that needs an
/// upstream connection gets a clean `503` with a JSON-RPC error (not a `502` from a failed
/// connect, and no fourth socket to the upstream); once the streams end, requests are served
/// again.
#[tokio::test]
async fn past_max_upstream_connections_a_request_gets_503_until_one_frees() {
    const BOUND_UPSTREAM: usize = 3;
    let upstream = TestUpstream::start().await;
    let port: u16 = upstream
        .url()
        .parse::<http::Uri>()
        .expect("upstream URL")
        .port_u16()
        .expect("upstream port");
    let proxy = start_with_metrics(&upstream.url(), |c| {
        c.proxy.max_upstream_connections = BOUND_UPSTREAM;
        c.proxy.threads = 2;
    })
    .await;
    let open_stream = || async {
        let mut client = TcpStream::connect(proxy.data_addr())
            .await
            .expect("connect");
        client
            .write_all(b"GET /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\nconnection: close\r\n\r\n")
            .await
            .expect("send");
        let head = read_head(&mut client).await;
        (client, head)
    };
    let mut held = Vec::new();
    let mut senders = Vec::new();
    for i in 0..BOUND_UPSTREAM {
        let (reply, sender) = Reply::sse_stream();
        upstream.push(reply);
        senders.push(sender);
        let (client, head) = open_stream().await;
        assert!(head.starts_with("HTTP/1.1 200"), "stream {i}: {head:?}");
        held.push(client);
    }
    let (reply, extra) = Reply::sse_stream();
    upstream.push(reply);
    let (mut refused, head) = open_stream().await;
    assert!(
        head.starts_with("HTTP/1.1 503"),
        "past the upstream connection bound: a clean 503, got {head:?}"
    );
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(BOUND, refused.read_to_end(&mut rest)).await;
    let text = format!("{head}{}", String::from_utf8_lossy(&rest));
    assert!(
        text.contains(r#""code":-32603"#),
        "with a JSON-RPC error: {text:?}"
    );
    let towards: Vec<String> = states_towards(port)
        .into_iter()
        .filter(|s| s == ESTABLISHED)
        .collect();
    assert!(
        towards.len() <= BOUND_UPSTREAM,
        "at most {BOUND_UPSTREAM} sockets to the upstream: {towards:?}"
    );
    assert_eq!(
        proxy.proxy_stats().snapshot().upstream_connections_refused,
        1
    );
    let scraped = get(proxy.metrics_addr().expect("metrics"), "/metrics").await;
    assert!(
        scraped.contains("mcp_relay_upstream_connections_refused_total 1"),
        "the refusal is exported"
    );

    // The upstream ends its streams: their connections are free again.
    drop(senders);
    drop(extra);
    drop(held);
    let served = async {
        loop {
            upstream.push(Reply::json(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#));
            let (_client, head) = open_stream().await;
            if head.starts_with("HTTP/1.1 200") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(BOUND, served)
        .await
        .expect("served again once the streams ended");
    proxy.shutdown().await.expect("shutdown");
}

/// At the upstream connection bound, live traffic wins over a stream nobody reads: a legacy
/// stream's pump lingering after its client left (for `session.linger`, 30 s by default) is
/// stopped when a request finds no upstream connection free, and that request is served at
/// once instead of waiting out (or being refused for) the linger time.
#[tokio::test]
async fn at_the_upstream_bound_a_lingering_pump_gives_way_to_live_traffic() {
    const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let upstream = TestUpstream::start().await;
    let proxy = start_proxy_with(&upstream.url(), |c| {
        c.proxy.max_upstream_connections = 1;
        c.proxy.threads = 1;
    })
    .await;
    let client = support::http::Client::new();
    let url = support::proxy_url(&proxy);
    upstream.push(Reply::json(INITIALIZE_RESULT).session_id("UP-L"));
    let answer = client.post_read(&url, &[], INITIALIZE).await;
    assert_eq!(answer.status, http::StatusCode::OK, "initialize");
    let sid = answer
        .header("mcp-session-id")
        .expect("a session id")
        .to_owned();
    // A stream the upstream keeps open; its client reads the first event, then leaves.
    let (reply, events) = Reply::sse_stream();
    upstream.push(reply);
    let mut stream = TcpStream::connect(proxy.data_addr())
        .await
        .expect("connect");
    let request = format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-session-id: {sid}\r\n\
         mcp-protocol-version: 2025-11-25\r\ncontent-length: {}\r\n\r\n{TOOLS_LIST}",
        TOOLS_LIST.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    assert!(events.send("id: e0\ndata: {}\n\n").await);
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "the stream: {head:?}");
    drop(stream);

    // The lingering pump holds the only upstream connection; a new request needs one, and
    // gets it: the pump gives way (the linger time is 30 s).
    upstream.push(Reply::json(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#));
    let answer = client
        .post_read(
            &url,
            &[("mcp-session-id", sid.as_str())],
            r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
        )
        .await;
    assert_eq!(
        answer.status,
        http::StatusCode::OK,
        "live traffic is served: {:?}",
        answer.text()
    );
    tokio::time::timeout(BOUND, events.closed())
        .await
        .expect("the lingering stream was closed upstream");
    proxy.shutdown().await.expect("shutdown");
}
