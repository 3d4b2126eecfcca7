//! The server-streaming watches over a live daemon: metric snapshots whose counters move with
//! real traffic (the official Python SDK client through the proxy to the Python SDK server),
//! session changes after the current state, consumers that fall behind being told so, and
//! every watch — health's included — ending promptly when the daemon shuts down.

mod support;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use http::HeaderValue;
use mcp_relay::control::pb::{
    SessionChangeType, WatchMetricsRequest, WatchMetricsResponse, WatchSessionsRequest,
    WatchSessionsResponse, metrics_service_client::MetricsServiceClient,
    session_service_client::SessionServiceClient,
};
use support::{
    admin::{channel, metrics_client, narrow_channel, sessions_client},
    peers::{Peer, run_client},
    proxy_url, start_proxy,
    stream_client::{EventReader, Session as StreamSession},
};
use tonic::{Code, Streaming, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const WAIT: Duration = Duration::from_secs(10);

async fn next<T>(stream: &mut Streaming<T>) -> T {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a message within the wait")
        .expect("the watch is healthy")
        .expect("the watch is open")
}

fn interval(ms: u64) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(Duration::from_millis(ms)).ok()
}

fn events(m: &WatchMetricsResponse) -> u64 {
    m.snapshot
        .as_ref()
        .unwrap()
        .proxy
        .as_ref()
        .unwrap()
        .events_forwarded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_snapshots_move_with_real_sdk_traffic() {
    let server = Peer::py_server(&["--event-store"]).await;
    let proxy = start_proxy(&server.url()).await;
    let mut watch = metrics_client(
        proxy
            .admin_addr()
            .expect("the control plane listens on TCP"),
    )
    .await
    .watch_metrics(WatchMetricsRequest {
        interval: interval(100),
    })
    .await
    .expect("WatchMetrics")
    .into_inner();
    let first = next(&mut watch).await;
    assert_eq!(events(&first), 0);
    assert_eq!(first.skipped_snapshots, 0);

    let url = proxy_url(&proxy);
    let traffic = tokio::spawn(async move {
        let args = ["--mode", "legacy", "--steps", "6", "--delay-ms", "100"];
        run_client(&url, &args).await
    });
    let mut seen = vec![first];
    while !traffic.is_finished() {
        seen.push(next(&mut watch).await);
    }
    let summary = traffic.await.expect("client task");
    assert_eq!(summary["result_text"], "done 6");
    for _ in 0..3 {
        seen.push(next(&mut watch).await);
    }

    let last = seen.last().unwrap().snapshot.unwrap();
    let proxy_metrics = last.proxy.unwrap();
    let worker = last.worker.unwrap();
    // A priming event, 6 progress notifications and the result, at least.
    assert!(proxy_metrics.events_forwarded >= 8, "{proxy_metrics:?}");
    assert!(proxy_metrics.streams_opened >= 1);
    assert_eq!(
        proxy_metrics.sessions, 0,
        "the client's DELETE ended its session"
    );
    assert!(
        seen.iter().any(|m| m
            .snapshot
            .as_ref()
            .unwrap()
            .proxy
            .as_ref()
            .unwrap()
            .sessions
            == 1),
        "a snapshot saw the live session"
    );
    assert!(seen.iter().any(|m| m.events_per_second > 0.0));
    // The event store's ids went through the persistence worker.
    assert!(
        worker.updates >= 7 && worker.stream_writes >= 1,
        "{worker:?}"
    );
    assert!(
        worker.batches >= 1 && worker.coalesce_ratio >= 1.0,
        "{worker:?}"
    );
    assert!(worker.last_flush_duration.is_some());
    // Counters never go back.
    for pair in seen.windows(2) {
        assert!(events(&pair[1]) >= events(&pair[0]));
        let at = |m: &WatchMetricsResponse| {
            let t = m.snapshot.as_ref().unwrap().observe_time.unwrap();
            (t.seconds, t.nanos)
        };
        assert!(at(&pair[1]) > at(&pair[0]));
    }
    proxy.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_consumer_that_falls_behind_is_told_how_many_snapshots_it_missed() {
    let server = Peer::py_server(&[]).await;
    let proxy = start_proxy(&server.url()).await;
    let mut client = MetricsServiceClient::new(
        narrow_channel(
            proxy
                .admin_addr()
                .expect("the control plane listens on TCP"),
        )
        .await,
    );
    let mut watch = client
        .watch_metrics(WatchMetricsRequest {
            interval: interval(100),
        })
        .await
        .expect("WatchMetrics")
        .into_inner();
    assert_eq!(next(&mut watch).await.skipped_snapshots, 0);
    // Not reading for 2 s: the window fills within a few snapshots, then the server waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut skipped = 0;
    for _ in 0..40 {
        skipped += next(&mut watch).await.skipped_snapshots;
        if skipped > 0 {
            break;
        }
    }
    assert!(skipped >= 5, "told it missed snapshots, got {skipped}");
    proxy.shutdown().await.expect("clean shutdown");
}

/// How a stream ended: its status code (`Ok` if it ended without one).
fn ended<T>(r: Result<Option<T>, tonic::Status>) -> Code {
    r.map_or_else(|status| status.code(), |_| Code::Ok)
}

/// `WatchSessions` with `filter` (empty: every session).
async fn watch_sessions(
    client: &mut SessionServiceClient<Channel>,
    filter: &str,
) -> Streaming<WatchSessionsResponse> {
    client
        .watch_sessions(WatchSessionsRequest {
            filter: filter.into(),
        })
        .await
        .expect("WatchSessions")
        .into_inner()
}

fn kind(m: &WatchSessionsResponse) -> SessionChangeType {
    SessionChangeType::try_from(m.change_type).expect("known change type")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_watch_sends_the_current_state_then_each_change() {
    let server = Peer::py_server(&[]).await;
    let proxy = start_proxy(&server.url()).await;
    let url = proxy_url(&proxy);
    let existing = StreamSession::initialize(&url).await;

    let mut client = sessions_client(
        proxy
            .admin_addr()
            .expect("the control plane listens on TCP"),
    )
    .await;
    let mut watch = watch_sessions(&mut client, "").await;
    let mut modern_only = watch_sessions(&mut client, r#"era = "MODERN""#).await;
    let first = next(&mut watch).await;
    assert_eq!(kind(&first), SessionChangeType::Existing);
    assert_eq!(
        first.session.unwrap().name,
        format!("sessions/{}", existing.session_id)
    );
    assert_eq!(kind(&next(&mut watch).await), SessionChangeType::Synced);
    assert_eq!(
        kind(&next(&mut modern_only).await),
        SessionChangeType::Synced
    );

    // A new session, a tool call streaming on it, and its end.
    let client_session = StreamSession::initialize(&url).await;
    let name = format!("sessions/{}", client_session.session_id);
    let created = next(&mut watch).await;
    assert_eq!(kind(&created), SessionChangeType::Created);
    assert_eq!(created.session.as_ref().unwrap().name, name);
    assert!(created.change_time.is_some());
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"progress","arguments":{"steps":2,"delay_ms":10},"_meta":{"progressToken":3}}}"#;
    let mut reader = EventReader::new(client_session.post(call).await);
    while reader.next().await.is_some() {}
    let updated = next(&mut watch).await;
    assert_eq!(kind(&updated), SessionChangeType::Updated);
    assert_eq!(updated.session.as_ref().unwrap().streams.len(), 1);
    let delete = client_session
        .http
        .send(
            http::Method::DELETE,
            &url,
            &[
                ("mcp-session-id", client_session.session_id.as_str()),
                ("mcp-protocol-version", "2025-11-25"),
            ],
            bytes::Bytes::new(),
        )
        .await;
    assert!(delete.status().is_success());
    let ended = loop {
        let m = next(&mut watch).await;
        match kind(&m) {
            SessionChangeType::Updated => continue, // the stream's close
            _ => break m,
        }
    };
    assert_eq!(kind(&ended), SessionChangeType::Ended);
    let ended = ended.session.unwrap();
    assert_eq!(ended.name, name);
    assert_eq!(
        ended.state,
        mcp_relay::control::pb::SessionState::Ended as i32
    );

    // The filtered watch saw none of it.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), modern_only.message())
            .await
            .is_err(),
        "no legacy change passes an era = MODERN filter"
    );
    proxy.shutdown().await.expect("clean shutdown");
}

/// Reads `watch` until an `UPDATED` change with a stream (named `stream`, if given) whose
/// `client_connected` is `connected`, and returns that stream's name (other changes pass by).
async fn until_client_connected(
    watch: &mut Streaming<WatchSessionsResponse>,
    stream: Option<&str>,
    connected: bool,
) -> String {
    loop {
        let m = next(watch).await;
        if kind(&m) != SessionChangeType::Updated {
            continue;
        }
        let found =
            m.session.iter().flat_map(|s| &s.streams).find(|t| {
                stream.is_none_or(|name| t.name == name) && t.client_connected == connected
            });
        if let Some(found) = found {
            return found.name.clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_attaching_to_and_leaving_a_stream_is_an_update() {
    let server = Peer::py_server(&[]).await;
    let proxy = start_proxy(&server.url()).await;
    let url = proxy_url(&proxy);
    let session = StreamSession::initialize(&url).await;
    let mut client = sessions_client(
        proxy
            .admin_addr()
            .expect("the control plane listens on TCP"),
    )
    .await;
    let mut watch = watch_sessions(&mut client, "").await;
    assert_eq!(kind(&next(&mut watch).await), SessionChangeType::Existing);
    assert_eq!(kind(&next(&mut watch).await), SessionChangeType::Synced);

    // A long tool call (1,000 steps of 50 ms: it outlives the wait, and the pump lingers after
    // the client, so only the client's arrival and departure can produce these updates).
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"progress","arguments":{"steps":1000,"delay_ms":50},"_meta":{"progressToken":7}}}"#;
    let mut reader = EventReader::new(session.post(call).await);
    assert!(reader.next().await.is_some(), "a first progress event");
    // The stream `initialize` was answered on has ended: the one with a client is the call's.
    let stream = until_client_connected(&mut watch, None, true).await;
    drop(reader);
    until_client_connected(&mut watch, Some(&stream), false).await;
    proxy.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_watcher_that_falls_behind_is_reset_then_resynchronised() {
    let server = Peer::py_server(&[]).await;
    let proxy = start_proxy(&server.url()).await;
    let manager = proxy.manager().clone();
    let mut client = SessionServiceClient::new(
        narrow_channel(
            proxy
                .admin_addr()
                .expect("the control plane listens on TCP"),
        )
        .await,
    );
    let mut watch = watch_sessions(&mut client, "").await;
    assert_eq!(kind(&next(&mut watch).await), SessionChangeType::Synced);

    // 1500 sessions created and 1497 ended while the watcher does not read: far more changes
    // than the ring keeps.
    let mut kept = Vec::new();
    for i in 0..1500 {
        let s = manager
            .create_session(
                HeaderValue::from_static("up"),
                "/mcp".into(),
                server.url().into(),
                "2025-11-25",
            )
            .expect("create");
        if i % 500 == 0 {
            kept.push(s.id().to_string());
        } else {
            manager.end_session(s.id().as_str());
        }
    }
    let reset = loop {
        let m = next(&mut watch).await;
        if kind(&m) == SessionChangeType::Reset {
            break m;
        }
        assert!(
            matches!(
                kind(&m),
                SessionChangeType::Created | SessionChangeType::Ended
            ),
            "changes sent before the watcher stopped reading"
        );
    };
    assert!(reset.missed_changes > 0);
    assert!(reset.session.is_none());
    // The watcher may fall behind while the loop above is still running, so the state it
    // resends can be taken part-way through; the changes after `SYNCED` then carry the view
    // the rest of the way. What must hold is that the view converges on the sessions kept
    // (`next` panics if it stops short of them).
    let expected: BTreeSet<String> = kept.iter().map(|id| format!("sessions/{id}")).collect();
    let mut view = BTreeSet::new();
    let mut syncing = true;
    while syncing || view != expected {
        let m = next(&mut watch).await;
        let name = m.session.as_ref().map(|s| s.name.clone());
        match (kind(&m), syncing) {
            (SessionChangeType::Existing, true) => {
                view.insert(name.expect("EXISTING carries its session"));
            }
            (SessionChangeType::Synced, true) => syncing = false,
            (SessionChangeType::Created, false) => {
                view.insert(name.expect("CREATED carries its session"));
            }
            (SessionChangeType::Ended, false) => {
                view.remove(&name.expect("ENDED carries its session"));
            }
            (SessionChangeType::Reset, false) => {
                assert!(m.missed_changes > 0);
                view.clear();
                syncing = true;
            }
            (other, syncing) => panic!("unexpected {other:?} (resynchronising: {syncing})"),
        }
    }
    proxy.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watch_ends_promptly_at_shutdown() {
    let server = Peer::py_server(&[]).await;
    // A long grace period: watches that held the drain would hold it to this deadline, so
    // finishing far before it shows they ended on the shutdown signal itself.
    let proxy = support::start_proxy_with(&server.url(), |c| {
        c.shutdown_grace = Duration::from_secs(30);
    })
    .await;
    let addr = proxy
        .admin_addr()
        .expect("the control plane listens on TCP");
    let mut metrics = metrics_client(addr)
        .await
        .watch_metrics(WatchMetricsRequest {
            interval: interval(60_000),
        })
        .await
        .expect("WatchMetrics")
        .into_inner();
    let mut sessions = watch_sessions(&mut sessions_client(addr).await, "").await;
    let mut health = HealthClient::new(channel(addr).await)
        .watch(HealthCheckRequest {
            service: "mcprelay.admin.v1.SessionService".into(),
        })
        .await
        .expect("Health/Watch")
        .into_inner();
    next(&mut metrics).await;
    assert_eq!(kind(&next(&mut sessions).await), SessionChangeType::Synced);
    assert_eq!(next(&mut health).await.status, 1, "SERVING");

    let started = Instant::now();
    let shutdown = tokio::spawn(proxy.shutdown());
    let m = tokio::time::timeout(Duration::from_secs(10), metrics.message()).await;
    assert_eq!(ended(m.expect("metrics watch ended")), Code::Unavailable);
    let s = tokio::time::timeout(Duration::from_secs(10), sessions.message()).await;
    assert_eq!(ended(s.expect("session watch ended")), Code::Unavailable);
    let last = tokio::time::timeout(Duration::from_secs(10), health.message())
        .await
        .expect("health watch answered")
        .expect("health watch")
        .expect("a last status");
    assert_eq!(last.status, 2, "NOT_SERVING");
    let end = tokio::time::timeout(Duration::from_secs(10), health.message())
        .await
        .expect("health watch ended");
    assert!(matches!(end, Ok(None)), "{end:?}");
    tokio::time::timeout(Duration::from_secs(20), shutdown)
        .await
        .expect("shutdown finished")
        .expect("join")
        .expect("clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the open watches did not hold the drain to its deadline ({:?})",
        started.elapsed()
    );
}

/// The process's resident memory, in bytes (`/proc/self/statm`, 4 KiB pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages in statm");
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_watchers_that_never_read_hold_bounded_memory_then_are_reset() {
    // Sessions whose records are large when sent (a 1 KiB upstream URL each): the current
    // state a watcher is sent is ~40 MiB of messages.
    const SESSIONS: usize = 30_000;
    const WATCHERS: usize = 3;
    let upstream = format!("http://127.0.0.1:9/{}", "u".repeat(1024));
    let proxy = start_proxy(&upstream).await;
    let manager = proxy.manager().clone();
    let admin = proxy
        .admin_addr()
        .expect("the control plane listens on TCP");
    let upstream: std::sync::Arc<str> = upstream.into();
    for _ in 0..SESSIONS {
        manager
            .create_session(
                HeaderValue::from_static("up"),
                "/mcp".into(),
                upstream.clone(),
                "2025-11-25",
            )
            .expect("create");
    }
    // The persistence worker writes the records first (they are memory too, not the watchers').
    let persisted = async {
        while mcp_relay::telemetry::metrics::DaemonSnapshot::take(&proxy.observed())
            .worker
            .session_writes
            < SESSIONS as u64
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, persisted)
        .await
        .expect("the sessions are persisted");
    let before = rss_bytes();
    // Watchers that never read: each stops the server once HTTP/2's windows are full.
    let mut watches = Vec::new();
    for _ in 0..WATCHERS {
        let mut client = SessionServiceClient::new(channel(admin).await);
        watches.push(watch_sessions(&mut client, "").await);
    }
    // What a stalled watch may hold: a pointer per session for the state still to send
    // (generously 64 bytes), plus what HTTP/2 lets tonic, h2 and (in this same process) the
    // client buffer: a few MiB of windows (generously 4 MiB); 16 MiB of slack for the
    // connections and allocator. Building the whole state up front (40 MiB per watcher) does
    // not fit.
    let bound = (WATCHERS * (SESSIONS * 64 + (4 << 20)) + (16 << 20)) as u64;
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown <= bound,
        "{WATCHERS} stalled watchers grew the daemon by {grown} bytes (bound {bound})"
    );

    // Churn far past the change ring while nobody reads; a watcher that resumes is reset.
    for _ in 0..3000 {
        let s = manager
            .create_session(
                HeaderValue::from_static("up"),
                "/mcp".into(),
                upstream.clone(),
                "2025-11-25",
            )
            .expect("create");
        manager.end_session(s.id().as_str());
    }
    let mut watch = watches.pop().expect("a watch");
    let reset = async {
        loop {
            if kind(&next(&mut watch).await) == SessionChangeType::Reset {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), reset)
        .await
        .expect("the watcher that resumes reading is reset");
    drop(watches);
    proxy.shutdown().await.expect("clean shutdown");
}
