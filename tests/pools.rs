//! Routes and pools with real SDK servers and clients (issue 13): modern load shared by a pool
//! and nothing lost when one endpoint is killed mid-run (ejection, then recovery through active
//! health checks); legacy sessions of a killed endpoint get `404` and the official Python SDK
//! client starts over; a drained endpoint gets no new sessions while its open stream finishes;
//! two routes to two different SDK servers used at once by Python and TypeScript clients; a
//! SIGHUP that adds a route and removes an endpoint while a legacy stream goes on, and one that
//! is refused; `check-config` on `[[routes]]`.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::StatusCode;
use mcp_relay::{config::HealthCheck, daemon::Daemon};
use serde_json::Value;
use support::{
    daemon_proc::{NotifySocket, PROC_WAIT, RelayProcess, addrs_of_ready_status, status_of},
    http::{Client, read_full},
    peers::{Peer, grpcurl_json, hold_client, hold_script, run_client},
    pool::{
        metric, modern_echo, poll_until, route, run_ts_client, session_endpoint, start_routes,
        tool_names, url_of,
    },
    stream_client::{Event, EventReader, Session as StreamSession, progress_values, responses_to},
};

/// The health of endpoint `url` of route `route` as an operator reads it with grpcurl
/// (`UpstreamService/ListEndpoints`): `ENDPOINT_HEALTH_HEALTHY` or `ENDPOINT_HEALTH_EJECTED`.
async fn grpcurl_health(daemon: &Daemon, route: &str, url: &str) -> String {
    let admin = daemon.admin_addr().expect("admin address").to_string();
    let listed = grpcurl_json(
        &admin,
        &[
            "-emit-defaults",
            "-d",
            &serde_json::json!({ "route": route }).to_string(),
            "--",
            "mcprelay.admin.v1.UpstreamService/ListEndpoints",
        ],
    )
    .await;
    let endpoint = listed["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["url"] == url)
        .unwrap_or_else(|| panic!("{url} not listed: {listed}"));
    endpoint["health"].as_str().expect("health").to_owned()
}

/// Upper bound of any wait on a condition; never a performance assertion.
const WAIT: Duration = Duration::from_secs(60);

const REQUESTS: &str = "mcp_relay_upstream_requests_total";
const FAILURES: &str = "mcp_relay_upstream_failures_total";
const EJECTIONS: &str = "mcp_relay_upstream_ejections_total";
const EJECTED: &str = "mcp_relay_upstream_ejected";
const RETRIES: &str = "mcp_relay_upstream_retries_total";
const SESSIONS_LOST: &str = "mcp_relay_upstream_sessions_lost_total";

/// One endpoint's series `name` in the daemon's `/metrics` text (0 when absent).
fn series(daemon: &Daemon, name: &str, endpoint: &str) -> f64 {
    metric(&daemon.metrics().render(), name, None, endpoint).unwrap_or(0.0)
}

/// Phases of a load run around a kill, as each request saw it when it started.
const RUNNING: u8 = 0;
/// From just before SIGKILL until the process is reaped (requests may still reach it).
const DYING: u8 = 1;
/// After the process is reaped: its sockets are closed.
const DEAD: u8 = 2;

/// One request of a load run: the phase it started in, and its failure if any.
#[derive(Debug)]
struct Outcome {
    phase: u8,
    error: Option<String>,
}

/// `total` modern `tools/call echo` requests to `url`, `workers` at a time (each worker a
/// client with its own connection), ids from `first_id`; `done` counts finished requests.
struct Load {
    done: Arc<AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    fn start(
        url: &str,
        first_id: u64,
        total: usize,
        workers: usize,
        phase: &Arc<AtomicU8>,
    ) -> Self {
        let next = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let workers = (0..workers)
            .map(|_| {
                let (url, next, done, phase) =
                    (url.to_owned(), next.clone(), done.clone(), phase.clone());
                tokio::spawn(async move {
                    let client = Client::new();
                    let mut outcomes = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= total {
                            return outcomes;
                        }
                        let started_in = phase.load(Ordering::SeqCst);
                        let id = first_id + i as u64;
                        let result = modern_echo(&client, &url, id, &format!("load {id}")).await;
                        done.fetch_add(1, Ordering::SeqCst);
                        outcomes.push(Outcome {
                            phase: started_in,
                            error: result.err(),
                        });
                    }
                })
            })
            .collect();
        Self { done, workers }
    }

    async fn finish(self) -> Vec<Outcome> {
        let mut all = Vec::new();
        for worker in self.workers {
            let outcomes = tokio::time::timeout(Duration::from_secs(240), worker)
                .await
                .expect("the load finishes within 240 s")
                .expect("a load worker panicked");
            all.extend(outcomes);
        }
        all
    }
}

/// Three Python SDK servers in one route's pool share 3,000 modern requests (4 at a time, plus
/// a few official Python SDK modern clients) evenly; then one is SIGKILLed in the middle of a
/// second run: no request sent after the kill fails (those refused are retried on another
/// endpoint), the endpoint is ejected, and once a server is back on the same port the active
/// `ping` check ends the ejection and it gets requests again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sdk_servers_share_modern_load_and_one_killed_mid_run_loses_nothing() {
    const WORKERS: usize = 4;
    // Large enough that refused connections after the kill are seen (and retried) before the
    // victim is ejected.
    const EJECT_AFTER: u32 = 10;
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Some(Peer::py_server(&[]).await));
    }
    let urls: Vec<String> = servers.iter().flatten().map(Peer::url).collect();
    let daemon = start_routes(vec![route("/mcp/pool", &urls)], |c| {
        c.proxy.eject_after_failures = EJECT_AFTER;
        // Longer than any wait here: only a passed health check can end the ejection.
        c.proxy.base_ejection_time = Duration::from_secs(600);
        c.proxy.max_ejection_time = Duration::from_secs(600);
        c.proxy.health_check = HealthCheck::Ping;
        // Also each check's timeout: short enough for a quick recovery, long enough for a
        // Python server on a busy machine to answer.
        c.proxy.health_check_interval = Duration::from_millis(500);
    })
    .await;
    let url = url_of(&daemon, "/mcp/pool");
    let no_kill = Arc::new(AtomicU8::new(RUNNING));

    // Run 1: 3,000 raw requests and three SDK clients at once.
    let load = Load::start(&url, 1, 3000, WORKERS, &no_kill);
    let sdk = {
        let url = url.clone();
        tokio::spawn(async move {
            let mut summaries = Vec::new();
            for _ in 0..3 {
                summaries.push(
                    run_client(
                        &url,
                        &["--mode", "modern", "--steps", "3", "--delay-ms", "10"],
                    )
                    .await,
                );
            }
            summaries
        })
    };
    let outcomes = load.finish().await;
    let failed: Vec<_> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    assert!(
        failed.is_empty(),
        "{} of 3000 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    for summary in sdk.await.expect("SDK clients") {
        assert_eq!(summary["protocol_version"], "2026-07-28");
        assert_eq!(summary["progress"], serde_json::json!([1, 2, 3]));
        assert_eq!(summary["session_id"], Value::Null, "modern: no session");
    }
    let spread: Vec<f64> = urls.iter().map(|u| series(&daemon, REQUESTS, u)).collect();
    let total: f64 = spread.iter().sum();
    eprintln!("run 1: requests per endpoint {spread:?} (total {total})");
    for (u, n) in urls.iter().zip(&spread) {
        let share = n / (total / 3.0);
        assert!(
            (0.8..=1.2).contains(&share),
            "{u} got {n} of {total} requests ({share:.2} of an even share): {spread:?}"
        );
    }

    // Run 2: 1,500 more; server 1 is killed once 500 are done.
    let victim_url = urls[1].clone();
    let victim_port = servers[1].as_ref().expect("server 1").port();
    let phase = Arc::new(AtomicU8::new(RUNNING));
    let before_kill = (
        series(&daemon, FAILURES, &victim_url),
        series(&daemon, RETRIES, &victim_url),
    );
    let load = Load::start(&url, 10_001, 1500, WORKERS, &phase);
    let done = load.done.clone();
    poll_until("500 requests of run 2 done", WAIT, || {
        done.load(Ordering::SeqCst) >= 500
    })
    .await;
    let in_flight_at_victim = daemon
        .routing()
        .table()
        .by_path("/mcp/pool")
        .expect("the route")
        .pool()[1]
        .outstanding();
    phase.store(DYING, Ordering::SeqCst);
    let kill_started = std::time::Instant::now();
    servers[1].take().expect("server 1").kill().await;
    let dying_for = kill_started.elapsed();
    phase.store(DEAD, Ordering::SeqCst);
    let outcomes = load.finish().await;
    let started_in = |p: u8| outcomes.iter().filter(move |o| o.phase == p);
    let failed_in =
        |p: u8| -> Vec<&String> { started_in(p).filter_map(|o| o.error.as_ref()).collect() };
    let retries = series(&daemon, RETRIES, &victim_url) - before_kill.1;
    let victim_failures = series(&daemon, FAILURES, &victim_url) - before_kill.0;
    eprintln!(
        "run 2: {} requests; failed: {} of those sent before SIGKILL ({in_flight_at_victim} \
         outstanding at the victim just before it), {} of the {} sent while it died ({dying_for:?} \
         from SIGKILL to reaped), {} of the {} sent after; the victim's failures \
         {victim_failures} (health checks included), retried elsewhere {retries}; failures: {:?}",
        outcomes.len(),
        failed_in(RUNNING).len(),
        failed_in(DYING).len(),
        started_in(DYING).count(),
        failed_in(DEAD).len(),
        started_in(DEAD).count(),
        [failed_in(RUNNING), failed_in(DYING)].concat(),
    );
    assert_eq!(outcomes.len(), 1500);
    assert!(
        started_in(DEAD).count() > 0,
        "the kill came after the whole run"
    );
    assert!(
        failed_in(DEAD).is_empty(),
        "requests sent after the kill failed: {:?}",
        failed_in(DEAD)
    );
    // Only requests that reached the victim before it was gone may fail: one per worker at
    // most before the SIGKILL, and those sent while it died, until it is ejected.
    assert!(
        failed_in(RUNNING).len() <= WORKERS,
        "more failures than requests in flight: {:?}",
        failed_in(RUNNING)
    );
    assert!(
        failed_in(RUNNING).len() + failed_in(DYING).len() <= EJECT_AFTER as usize,
        "failures went on after the victim must have been ejected"
    );
    // At most WORKERS requests can hang on the dying victim, so most of the failures that
    // eject it are refused connections, each retried on a live endpoint.
    assert!(retries >= 1.0, "no refused request was retried");

    // The victim is ejected (the exported gauge says so while it is down) and counted.
    poll_until("the killed endpoint shows as ejected", WAIT, || {
        series(&daemon, EJECTED, &victim_url) == 1.0
    })
    .await;
    assert!(series(&daemon, EJECTIONS, &victim_url) >= 1.0);
    assert_eq!(
        grpcurl_health(&daemon, "/mcp/pool", &victim_url).await,
        "ENDPOINT_HEALTH_EJECTED",
        "grpcurl shows the ejection"
    );
    // Reported, not asserted: a live server starved of CPU for two check intervals (each
    // check's timeout is the interval) is ejected too, until its next passed check.
    for live in [&urls[0], &urls[2]] {
        eprintln!(
            "live endpoint {live}: failures {}, ejections {}",
            series(&daemon, FAILURES, live),
            series(&daemon, EJECTIONS, live)
        );
    }

    // A server is back on the same port: the `ping` check ends the ejection (which would
    // otherwise last 10 minutes), and it gets requests again.
    assert_eq!(series(&daemon, EJECTED, &victim_url), 1.0, "still ejected");
    let _back = Peer::py_server_on(victim_port).await;
    let recovered = poll_until("the ejection ends after the server is back", WAIT, || {
        series(&daemon, EJECTED, &victim_url) == 0.0
    })
    .await;
    assert_eq!(
        grpcurl_health(&daemon, "/mcp/pool", &victim_url).await,
        "ENDPOINT_HEALTH_HEALTHY",
        "grpcurl shows the recovery"
    );
    let requests_before = series(&daemon, REQUESTS, &victim_url);
    let outcomes = Load::start(&url, 20_001, 300, WORKERS, &no_kill)
        .finish()
        .await;
    let failed: Vec<_> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    assert!(failed.is_empty(), "after recovery: {failed:?}");
    let got = series(&daemon, REQUESTS, &victim_url) - requests_before;
    eprintln!(
        "recovery: ejection ended {recovered:?} after the restart; the endpoint got {got} of 300"
    );
    assert!(
        got >= 30.0,
        "the recovered endpoint got only {got} of 300 requests"
    );
    daemon.shutdown().await.expect("clean shutdown");
}

/// A `tools/call echo` of a legacy session (2025-11-25), id `id`.
fn legacy_echo(id: u64, text: &str) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": { "name": "echo", "arguments": { "text": text } },
    })
    .to_string()
}

/// Legacy sessions are pinned to their endpoint: when it is killed, the next request of each
/// of its sessions gets `404`/-32001 (the session ended, counted), sessions on other endpoints
/// go on, and the official Python SDK client, told its session is gone, opens a new one that
/// lands on a live endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sessions_of_a_killed_endpoint_get_404_and_the_python_sdk_client_reinitializes() {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Some(Peer::py_server(&[]).await));
    }
    let urls: Vec<String> = servers.iter().flatten().map(Peer::url).collect();
    let daemon = start_routes(vec![route("/mcp", &urls)], |c| {
        c.proxy.eject_after_failures = 2;
        c.proxy.base_ejection_time = Duration::from_secs(30);
    })
    .await;
    let url = url_of(&daemon, "/mcp");

    // Raw sessions first, until every endpoint has one (an idle session holds nothing open, so
    // the balancer spreads them); then the SDK client, whose open GET stream makes its endpoint
    // the busier one from then on.
    let mut raw: Vec<(StreamSession, String)> = Vec::new();
    for _ in 0..60 {
        if urls.iter().all(|u| raw.iter().any(|(_, e)| e == u)) {
            break;
        }
        let session = StreamSession::initialize(&url).await;
        let endpoint = session_endpoint(&daemon, &session.session_id).expect("live session");
        raw.push((session, endpoint));
    }
    assert!(
        urls.iter().all(|u| raw.iter().any(|(_, e)| e == u)),
        "60 sessions and an endpoint got none"
    );
    let sdk = hold_script("py_reinit_client.py", &["--url", &url], WAIT).await;
    let sdk_session = sdk.session_id.clone().expect("the SDK client's session id");
    let doomed = session_endpoint(&daemon, &sdk_session).expect("the SDK session is live");
    let doomed_index = urls
        .iter()
        .position(|u| *u == doomed)
        .expect("a pool endpoint");
    let (on_doomed, elsewhere): (Vec<_>, Vec<_>) = raw.into_iter().partition(|(_, e)| *e == doomed);
    let on_doomed: Vec<StreamSession> = on_doomed.into_iter().map(|(s, _)| s).collect();
    let elsewhere: Vec<StreamSession> = elsewhere.into_iter().map(|(s, _)| s).collect();

    servers[doomed_index]
        .take()
        .expect("the doomed server")
        .kill()
        .await;

    for (i, session) in on_doomed.iter().enumerate() {
        let answer = read_full(session.post(&legacy_echo(10 + i as u64, "lost?")).await).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text());
        assert_eq!(answer.json()["error"]["code"], -32001, "{}", answer.text());
        assert_eq!(answer.json()["id"], 10 + i as u64);
        assert!(
            session_endpoint(&daemon, &session.session_id).is_none(),
            "ended"
        );
    }
    for (i, session) in elsewhere.iter().enumerate() {
        let answer = read_full(session.post(&legacy_echo(100 + i as u64, "alive")).await).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }

    let summary = sdk.release_within(WAIT).await;
    eprintln!(
        "SDK client: error {} then session {} answered {}; raw sessions: {} on the killed \
         endpoint, {} elsewhere",
        summary["error"],
        summary["second_session_id"],
        summary["result_text"],
        on_doomed.len(),
        elsewhere.len()
    );
    let error = &summary["error"];
    assert_eq!(error["status"], 404, "{summary}");
    assert_eq!(
        error["code"], -32001,
        "the proxy's error reaches the SDK caller: {summary}"
    );
    let second = summary["second_session_id"]
        .as_str()
        .expect("a new session");
    assert_ne!(second, sdk_session);
    // The doomed server is dead: the call that succeeded ran on a live endpoint.
    assert_eq!(summary["result_text"], "after");
    let lost = series(&daemon, SESSIONS_LOST, &doomed);
    eprintln!("sessions lost at the killed endpoint: {lost}");
    assert!(lost >= on_doomed.len() as f64, "sessions_lost_total {lost}");
    for live in urls.iter().filter(|u| **u != doomed) {
        assert_eq!(series(&daemon, SESSIONS_LOST, live), 0.0, "{live}");
    }
    daemon.shutdown().await.expect("clean shutdown");
}

/// A legacy `tools/call progress(steps, delay_ms)`, id `id`.
fn legacy_progress(id: u64, steps: u64, delay_ms: u64) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {
            "name": "progress",
            "arguments": { "steps": steps, "delay_ms": delay_ms },
            "_meta": { "progressToken": format!("p{id}") },
        },
    })
    .to_string()
}

const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":99,"method":"tools/list"}"#;

/// The text of the JSON-RPC response to `id` among `events`.
fn result_text(events: &[Event], id: u64) -> Option<String> {
    events
        .iter()
        .find(|e| e.data["id"].as_u64() == Some(id) && e.data.get("method").is_none())
        .and_then(|e| e.data["result"]["content"][0]["text"].as_str())
        .map(str::to_owned)
}

/// Opens the standalone `GET` SSE stream of a legacy session (the server keeps it open while
/// the session lives, so it counts as a request outstanding at the session's endpoint).
async fn open_standalone_stream(session: &StreamSession) -> http::Response<hyper::body::Incoming> {
    let headers = [
        ("mcp-session-id", session.session_id.as_str()),
        ("mcp-protocol-version", session.protocol_version),
        ("accept", "text/event-stream"),
    ];
    let response = session
        .http
        .send(http::Method::GET, &session.url, &headers, "")
        .await;
    assert_eq!(response.status(), StatusCode::OK, "standalone GET");
    response
}

/// An operator drains endpoint X while a legacy SSE stream is open on it, and while X is the
/// less loaded endpoint (two standalone streams are open on Y), so a new session would go to X
/// (checked first): after the drain, new sessions (raw and the official Python SDK client's)
/// all go to Y and X gets no new request at all, while the open stream delivers every progress
/// event and its result, and X's session still works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_new_sessions_away_while_an_open_stream_finishes() {
    const STEPS: u64 = 20;
    let a = Peer::py_server(&[]).await;
    let b = Peer::py_server(&[]).await;
    let urls = [a.url(), b.url()];
    let daemon = start_routes(vec![route("/mcp", &urls)], |_| {}).await;
    let url = url_of(&daemon, "/mcp");
    let table = daemon.routing().table();
    let pool = table.by_path("/mcp").expect("the route").pool();
    let endpoint_at = |url: &str| {
        pool.iter()
            .find(|e| **e.url() == *url)
            .expect("in the pool")
            .clone()
    };

    let session = StreamSession::initialize(&url).await;
    let x = session_endpoint(&daemon, &session.session_id).expect("live session");
    let y = urls
        .iter()
        .find(|u| **u != x)
        .expect("the other endpoint")
        .clone();
    let (endpoint, y_endpoint) = (endpoint_at(&x), endpoint_at(&y));
    let response = session.post(&legacy_progress(7, STEPS, 200)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut reader = EventReader::new(response);
    let mut events = Vec::new();
    while progress_values(&events).is_empty() {
        events.push(reader.next().await.expect("the stream goes on"));
    }

    // Two standalone streams on Y (sessions land where the fewest requests are open: the
    // first surely on Y, the next ones on either while both have one).
    let mut on_y = Vec::new();
    for _ in 0..40 {
        if on_y.len() == 2 {
            break;
        }
        let s = StreamSession::initialize(&url).await;
        if session_endpoint(&daemon, &s.session_id).expect("live session") == y {
            let stream = open_standalone_stream(&s).await;
            on_y.push((s, stream));
        }
    }
    assert_eq!(on_y.len(), 2, "40 sessions and not two on Y");
    assert_eq!(y_endpoint.outstanding(), 2);
    // Not drained, X (its one stream) is the lighter: a new session goes there.
    let probe = StreamSession::initialize(&url).await;
    assert_eq!(
        session_endpoint(&daemon, &probe.session_id).as_deref(),
        Some(x.as_str()),
        "before the drain a new session goes to the less loaded X"
    );

    // The operator drains X with grpcurl.
    assert!(!endpoint.is_drained(), "X was not drained before");
    let admin = daemon.admin_addr().expect("admin address").to_string();
    let drained = grpcurl_json(
        &admin,
        &[
            "-emit-defaults",
            "-d",
            &serde_json::json!({ "route": "/mcp", "url": x }).to_string(),
            "--",
            "mcprelay.admin.v1.UpstreamService/DrainEndpoint",
        ],
    )
    .await;
    assert_eq!(drained["drained"], true, "{drained}");
    assert!(endpoint.is_drained());
    assert!(endpoint.outstanding() >= 1, "the stream is open at X");
    assert_eq!(
        metric(
            &daemon.metrics().render(),
            "mcp_relay_upstream_drained",
            None,
            &x
        ),
        Some(1.0)
    );
    let x_requests = series(&daemon, REQUESTS, &x);

    let mut sessions = Vec::new();
    for _ in 0..10 {
        let s = StreamSession::initialize(&url).await;
        let at = session_endpoint(&daemon, &s.session_id).expect("live session");
        assert_ne!(at, x, "a new session went to the drained endpoint");
        sessions.push(s);
    }
    let sdk = hold_client(
        &url,
        &["--mode", "legacy", "--steps", "3", "--delay-ms", "10"],
    )
    .await;
    let sdk_at = session_endpoint(&daemon, sdk.session_id.as_deref().expect("SDK session id"))
        .expect("the SDK session is live");
    assert_ne!(
        sdk_at, x,
        "the SDK client's session went to the drained endpoint"
    );
    assert!(
        y_endpoint.outstanding() > endpoint.outstanding(),
        "X stayed the lighter throughout"
    );
    // Whether the stream was still running upstream by then (reported, not asserted: it
    // depends on the machine's speed).
    let open_after_new_sessions = endpoint.outstanding();
    assert_eq!(
        series(&daemon, REQUESTS, &x),
        x_requests,
        "the drained endpoint got new requests"
    );
    sdk.release_within(WAIT).await;

    while result_text(&events, 7).is_none() {
        let Some(event) = reader.next().await else {
            panic!("the stream ended without its result: {events:?}");
        };
        events.push(event);
    }
    eprintln!(
        "drain: 11 new sessions, none on X (requests still open at X after them: \
         {open_after_new_sessions}); the open stream finished with {:?}",
        progress_values(&events)
    );
    assert_eq!(progress_values(&events), (1..=STEPS).collect::<Vec<_>>());
    assert_eq!(responses_to(&events, 7), 1);
    assert_eq!(
        result_text(&events, 7).as_deref(),
        Some(format!("done {STEPS}").as_str())
    );
    let answer = read_full(session.post(TOOLS_LIST).await).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "X's session goes on: {}",
        answer.text()
    );
    daemon.shutdown().await.expect("clean shutdown");
}

/// Two routes, each to a different official SDK server: `/mcp/py` to the Python SDK server,
/// `/mcp/ts` to server-everything (TypeScript SDK). The official Python and TypeScript SDK
/// clients use both at once, and each sees its own route's server; a session id of one route
/// is unknown on the other's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routes_two_sdk_servers_used_at_once_by_python_and_typescript_clients() {
    let py = Peer::py_server(&[]).await;
    let ts = Peer::everything().await;
    let daemon = start_routes(
        vec![route("/mcp/py", &[py.url()]), route("/mcp/ts", &[ts.url()])],
        |_| {},
    )
    .await;
    let (py_url, ts_url) = (url_of(&daemon, "/mcp/py"), url_of(&daemon, "/mcp/ts"));
    let long_running = "trigger-long-running-operation";
    let ts_args = [
        "--mode",
        "legacy",
        "--tool",
        long_running,
        "--steps",
        "3",
        "--delay-ms",
        "200",
    ];
    let (py_on_py, py_on_ts, ts_on_py, ts_on_ts, modern_on_py) = tokio::join!(
        run_client(
            &py_url,
            &["--mode", "legacy", "--steps", "3", "--delay-ms", "100"]
        ),
        run_client(&ts_url, &ts_args),
        run_ts_client(&py_url, Some(("progress", r#"{"steps":3,"delay_ms":100}"#))),
        run_ts_client(
            &ts_url,
            Some((long_running, r#"{"duration":0.6,"steps":3}"#))
        ),
        run_client(
            &py_url,
            &["--mode", "modern", "--steps", "3", "--delay-ms", "100"]
        ),
    );
    for (who, summary) in [
        ("Python SDK client, legacy, on /mcp/py", &py_on_py),
        ("TypeScript SDK client on /mcp/py", &ts_on_py),
        ("Python SDK client, modern, on /mcp/py", &modern_on_py),
    ] {
        let tools = tool_names(summary);
        assert!(tools.iter().any(|t| t == "progress"), "{who}: {tools:?}");
        assert!(!tools.iter().any(|t| t == long_running), "{who}: {tools:?}");
        assert_eq!(summary["progress"], serde_json::json!([1, 2, 3]), "{who}");
        assert_eq!(summary["result_text"], "done 3", "{who}");
    }
    for (who, summary) in [
        ("Python SDK client on /mcp/ts", &py_on_ts),
        ("TypeScript SDK client on /mcp/ts", &ts_on_ts),
    ] {
        let tools = tool_names(summary);
        assert!(tools.iter().any(|t| t == long_running), "{who}: {tools:?}");
        assert!(!tools.iter().any(|t| t == "progress"), "{who}: {tools:?}");
        assert_eq!(summary["progress"], serde_json::json!([1, 2, 3]), "{who}");
    }
    assert_eq!(ts_on_py["server_name"], "mcp-relay-py-peer");
    assert_ne!(ts_on_ts["server_name"], "mcp-relay-py-peer");
    assert_eq!(modern_on_py["protocol_version"], "2026-07-28");
    eprintln!(
        "two routes: /mcp/py served {:?}, /mcp/ts served {:?} ({})",
        tool_names(&ts_on_py),
        tool_names(&ts_on_ts),
        ts_on_ts["server_name"]
    );

    // A session of one route is not found on the other's path (and is not ended by trying).
    for (own, other) in [(&py_url, &ts_url), (&ts_url, &py_url)] {
        let session = StreamSession::initialize(own).await;
        let headers = [
            ("mcp-session-id", session.session_id.as_str()),
            ("mcp-protocol-version", session.protocol_version),
        ];
        let answer = session.http.post_read(other, &headers, TOOLS_LIST).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{own} session on {other}"
        );
        assert_eq!(answer.json()["error"]["code"], -32001);
        let answer = read_full(session.post(TOOLS_LIST).await).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{own} session on its own path"
        );
    }
    daemon.shutdown().await.expect("clean shutdown");
}

/// A configuration file for the binary: loopback listeners on ephemeral ports (metrics on),
/// logs on stderr, and `routes` as `(name, path, endpoint URLs)`.
fn config_file(routes: &[(&str, &str, &[&str])]) -> String {
    let mut text = String::from(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_secs = 2\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n[log]\ntarget = \"stderr\"\n",
    );
    for (name, path, urls) in routes {
        let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
        text.push_str(&format!(
            "\n[[routes]]\nname = \"{name}\"\npath = \"{path}\"\nupstreams = [{}]\n",
            urls.join(", ")
        ));
    }
    text
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"pools-test","version":"0"}}}"#;

/// The process's `/metrics` text.
async fn scrape(client: &Client, metrics: std::net::SocketAddr) -> String {
    let response = client
        .send(
            http::Method::GET,
            &format!("http://{metrics}/metrics"),
            &[],
            "",
        )
        .await;
    let answer = read_full(response).await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.text().to_owned()
}

/// The status of a legacy `initialize` on `url` (each one a new session).
async fn initialize_status(client: &Client, url: &str) -> StatusCode {
    client.post_read(url, &[], INITIALIZE).await.status
}

/// The built binary with a configuration file of one route (two Python SDK servers): a legacy
/// progress stream runs on endpoint E while the file is rewritten (a second route added, E
/// removed from the pool) and SIGHUP is sent. The new route answers while the stream is still
/// open; the stream delivers every progress value in order; new sessions never go to E; E's
/// session still works (E is retired, not gone). Then a file that does not load (bad TOML, then
/// a bad URL) is refused at SIGHUP, logged, and the old table keeps serving both routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_route_and_removes_an_endpoint_while_a_legacy_stream_goes_on() {
    const STEPS: u64 = 40;
    let one = Peer::py_server(&[]).await;
    let two = Peer::py_server(&[]).await;
    let three = Peer::py_server(&[]).await;
    let (one_url, two_url, three_url) = (one.url(), two.url(), three.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("relay.toml");
    let file_arg = file.to_str().expect("UTF-8 path").to_owned();
    std::fs::write(
        &file,
        config_file(&[("main", "/mcp", &[&one_url, &two_url])]),
    )
    .expect("write the configuration");
    let mut notify = NotifySocket::bind();
    let mut relay = RelayProcess::spawn(&notify, &["--config", &file_arg], &[]);
    let ready = notify.wait_for("READY=1", PROC_WAIT).await;
    let (data, _admin, metrics) = addrs_of_ready_status(status_of(&ready).expect("STATUS="));
    let metrics = metrics.expect("a metrics listener");
    let (main_url, new_url) = (
        format!("http://{data}/mcp"),
        format!("http://{data}/mcp/new"),
    );
    let client = Client::new();
    let requests = |text: &str, url: &str| metric(text, REQUESTS, Some("main"), url).unwrap_or(0.0);

    // A new session's endpoint: the one whose requests went up with its handshake.
    let new_session = async || {
        let before = scrape(&client, metrics).await;
        let session = StreamSession::initialize(&main_url).await;
        let after = scrape(&client, metrics).await;
        let on = [&one_url, &two_url]
            .into_iter()
            .find(|u| requests(&after, u) > requests(&before, u))
            .expect("an endpoint got the handshake")
            .clone();
        (session, on)
    };
    // The stream's session is on E. Then two standalone streams are opened on the other
    // endpoint (sessions land where the fewest requests are open: the first surely on the
    // other, the next on either while both have one), so that, were E still in the pool, new
    // sessions would go to E (checked before the reload).
    let (session, e) = new_session().await;
    let other = if e == one_url {
        two_url.clone()
    } else {
        one_url.clone()
    };
    let response = session.post(&legacy_progress(7, STEPS, 200)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let events = Arc::new(parking_lot::Mutex::new(Vec::<Event>::new()));
    let reader = tokio::spawn({
        let events = events.clone();
        async move {
            let mut reader = EventReader::new(response);
            while let Some(event) = reader.next().await {
                let done = event.data["id"] == 7 && event.data.get("method").is_none();
                events.lock().push(event);
                if done {
                    return;
                }
            }
        }
    });
    poll_until("the first progress event", WAIT, || {
        !progress_values(&events.lock()).is_empty()
    })
    .await;
    let mut streams = Vec::new();
    for _ in 0..60 {
        if streams.len() == 2 {
            break;
        }
        let (s, on) = new_session().await;
        if on == other {
            streams.push(open_standalone_stream(&s).await);
        }
    }
    assert_eq!(
        streams.len(),
        2,
        "60 sessions and not two on the other endpoint"
    );
    let (_probe, on) = new_session().await;
    assert_eq!(
        on, e,
        "before the reload a new session goes to the less loaded E"
    );
    assert_eq!(
        initialize_status(&client, &new_url).await,
        StatusCode::NOT_FOUND
    );

    // Reload: route `new` added, E removed from `main`'s pool.
    std::fs::write(
        &file,
        config_file(&[
            ("main", "/mcp", &[&other]),
            ("new", "/mcp/new", &[&three_url]),
        ]),
    )
    .expect("rewrite the configuration");
    assert!(
        result_text(&events.lock(), 7).is_none(),
        "the stream ended before the reload (a very slow machine?)"
    );
    relay.signal("HUP").await;
    let started = std::time::Instant::now();
    while initialize_status(&client, &new_url).await != StatusCode::OK {
        assert!(started.elapsed() < WAIT, "the new route never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let open_then = result_text(&events.lock(), 7).is_none();
    let progress_then = progress_values(&events.lock()).len();
    eprintln!(
        "SIGHUP: the new route answered {took:?} after the signal, with {progress_then} of \
         {STEPS} progress events in"
    );
    assert!(open_then, "the stream ended before the new route answered");

    // New sessions on `main` never go to E (retired), though E's series is still exported.
    let at_reload = scrape(&client, metrics).await;
    for _ in 0..6 {
        StreamSession::initialize(&main_url).await;
    }
    let later = scrape(&client, metrics).await;
    assert_eq!(
        requests(&later, &e),
        requests(&at_reload, &e),
        "new work went to E"
    );
    assert!(requests(&later, &other) >= requests(&at_reload, &other) + 12.0);

    tokio::time::timeout(WAIT, reader)
        .await
        .expect("the stream ends")
        .expect("stream reader");
    let events = events.lock().clone();
    assert_eq!(
        progress_values(&events),
        (1..=STEPS).collect::<Vec<_>>(),
        "every value, in order"
    );
    assert_eq!(
        result_text(&events, 7).as_deref(),
        Some(format!("done {STEPS}").as_str())
    );
    let answer = read_full(session.post(TOOLS_LIST).await).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "E's session: {}",
        answer.text()
    );
    let last = scrape(&client, metrics).await;
    assert_eq!(
        requests(&last, &e),
        requests(&later, &e) + 1.0,
        "served by E"
    );
    assert!(relay.stderr().contains("SIGHUP: routes reloaded"));

    // Files that do not load are refused; the old table keeps serving both routes.
    for (i, broken) in [
        "this is [ not TOML".to_owned(),
        config_file(&[("main", "/mcp", &["ftp://127.0.0.1:1/mcp"])]),
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(&file, broken).expect("write a broken configuration");
        relay.signal("HUP").await;
        poll_until("the refusal in the log", WAIT, || {
            relay
                .stderr()
                .matches("SIGHUP: the configuration was refused")
                .count()
                > i
        })
        .await;
        assert_eq!(initialize_status(&client, &main_url).await, StatusCode::OK);
        assert_eq!(initialize_status(&client, &new_url).await, StatusCode::OK);
    }
    let log = relay.stderr();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("SIGHUP: the configuration was refused"))
        .collect();
    eprintln!("refusals: {refusals:#?}");
    assert!(
        refusals[1].contains("ftp://"),
        "the refusal names the bad URL"
    );

    relay.signal("TERM").await;
    assert!(relay.exit(PROC_WAIT).await.success());
    drop((one, two, three));
}

fn check_config(args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-relay"));
    cmd.arg("check-config").args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("MCP_RELAY_") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run mcp-relay check-config")
}

/// `check-config` on a file with only `[[routes]]`: it passes and shows the routes (`/mcp/a`
/// and `/mcp/a/` are two paths); `--route` adds one; a bad route is refused (status 2) with an
/// error naming it: a path served twice, a URL that is not `http://`, an unknown key.
#[test]
fn check_config_shows_routes_and_refuses_a_bad_one_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("UTF-8 path").to_owned()
    };
    let good = write(
        "good.toml",
        "[[routes]]\nname = \"files\"\npath = \"/mcp/files\"\n\
         upstreams = [\"http://127.0.0.1:3001/mcp\", \"http://127.0.0.1:3002/mcp\"]\n\n\
         [[routes]]\nname = \"a\"\npath = \"/mcp/a\"\nupstreams = [\"http://127.0.0.1:3003/mcp\"]\n\n\
         [[routes]]\nname = \"a-slash\"\npath = \"/mcp/a/\"\nupstreams = [\"http://127.0.0.1:3004/mcp\"]\n",
    );
    let output = check_config(&[&good, "--route", "/mcp/extra=http://127.0.0.1:3005/mcp"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown: toml::Table = text.parse().expect("TOML");
    let routes = shown["routes"].as_array().expect("routes shown");
    let paths: Vec<&str> = routes
        .iter()
        .map(|r| r["path"].as_str().expect("path"))
        .collect();
    assert_eq!(
        paths,
        ["/mcp/files", "/mcp/a", "/mcp/a/", "/mcp/extra"],
        "{text}"
    );
    assert_eq!(routes[0]["name"].as_str(), Some("files"));
    assert_eq!(
        routes[0]["upstreams"],
        toml::Value::Array(vec![
            "http://127.0.0.1:3001/mcp".into(),
            "http://127.0.0.1:3002/mcp".into()
        ])
    );
    assert!(
        shown["proxy"].get("upstream").is_none(),
        "no shorthand route: {text}"
    );

    let route =
        |path: &str, url: &str| format!("[[routes]]\npath = \"{path}\"\nupstreams = [\"{url}\"]\n");
    let cases = [
        (
            "twice.toml",
            format!(
                "{}{}name = \"second\"\n",
                route("/mcp/x", "http://127.0.0.1:1/mcp"),
                route("/mcp/x", "http://127.0.0.1:2/mcp")
            ),
            vec!["route `/mcp/x`", "served twice"],
        ),
        (
            "ftp.toml",
            route("/mcp/ftp", "ftp://127.0.0.1:1/mcp"),
            vec![
                "route `/mcp/ftp`",
                "ftp://127.0.0.1:1/mcp",
                "http:// or https://",
            ],
        ),
        (
            "unknown.toml",
            format!(
                "{}{}colour = \"blue\"\n",
                route("/mcp/ok", "http://127.0.0.1:1/mcp"),
                route("/mcp/typo", "http://127.0.0.1:2/mcp")
            ),
            vec!["colour", "routes.1"],
        ),
    ];
    for (name, text, expected) in cases {
        let path = write(name, &text);
        let output = check_config(&[&path]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!("{name}: {}", stderr.trim());
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        for needle in expected {
            assert!(stderr.contains(needle), "{name}: no {needle:?} in {stderr}");
        }
    }
}
