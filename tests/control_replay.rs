//! `ForceReplay` delivers exactly the requested events, in order, to a client stream that is
//! live while the RPC runs: the buffered events after the given id are sent again with their
//! original ids and bytes, and the stream then continues with no gap and no other duplicate.
//! Once against the Rust test upstream with a raw legacy client, once against server-everything
//! with the official TypeScript SDK client.

mod support;

use mcp_relay::protocol::ClientEventId;
use std::{process::Stdio, time::Duration};

use mcp_relay::control::pb::{ForceReplayRequest, GetSessionRequest};
use serde_json::Value;
use support::{
    admin::sessions_client,
    peers::{Peer, repo_root},
    proxy_url,
    resumable::{Resumable, Scenario},
    start_proxy,
    stream_client::{Event, EventReader, Session as StreamSession},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

fn seq(id: &str) -> u64 {
    ClientEventId::parse(id).expect("a proxy event id").seq
}

/// Splits what a client saw around the replay: the events before it (sequence 1..=m, no gap)
/// and from the replay on. Panics if the client never saw an earlier event again.
fn split_at_replay(seqs: &[u64]) -> usize {
    let at = (1..seqs.len())
        .find(|&i| seqs[i] <= seqs[i - 1])
        .unwrap_or_else(|| panic!("no event was re-sent: {seqs:?}"));
    assert_eq!(
        seqs[..at],
        (1..=at as u64).collect::<Vec<_>>(),
        "before the replay"
    );
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_replay_resends_exactly_the_events_after_the_id_to_a_live_legacy_stream() {
    const EVENTS: u64 = 20;
    let upstream = Resumable::start().await;
    upstream.set_scenario(Scenario {
        delay: Duration::from_millis(60),
        ..Scenario::default()
    });
    let proxy = start_proxy(&upstream.url()).await;
    let mut admin = sessions_client(
        proxy
            .admin_addr()
            .expect("the control plane listens on TCP"),
    )
    .await;
    let client = StreamSession::initialize(&proxy_url(&proxy)).await;
    let call =
        format!(r#"{{"jsonrpc":"2.0","id":5,"method":"stream","params":{{"events":{EVENTS}}}}}"#);
    let mut reader = EventReader::new(client.post(&call).await);

    let mut events: Vec<Event> = Vec::new();
    while events.len() < 6 {
        events.push(reader.next().await.expect("an event"));
    }
    let after = events[2].id.clone().expect("id");
    let stream = ClientEventId::parse(&after).unwrap().stream.to_owned();
    // An id this stream did not issue for that position (another upstream id) is refused and
    // replays nothing: the sequence checks below would see a second replay.
    let forged = admin
        .force_replay(ForceReplayRequest {
            name: format!("sessions/{}/streams/{stream}", client.session_id),
            after_event_id: format!("{stream}:{}:forged-upstream-id", seq(&after)),
        })
        .await
        .expect_err("a forged event id is refused");
    assert_eq!(forged.code(), tonic::Code::InvalidArgument, "{forged:?}");
    assert!(
        forged.message().contains("not issued"),
        "{}",
        forged.message()
    );
    let replayed = admin
        .force_replay(ForceReplayRequest {
            name: format!("sessions/{}/streams/{stream}", client.session_id),
            after_event_id: after.clone(),
        })
        .await
        .expect("ForceReplay")
        .into_inner()
        .events_replayed;
    while events
        .last()
        .is_none_or(|e| e.data["id"] != 5 || e.data.get("method").is_some())
    {
        events.push(
            reader
                .next()
                .await
                .expect("the stream runs to the response"),
        );
    }

    let ids: Vec<String> = events.iter().map(|e| e.id.clone().expect("id")).collect();
    let seqs: Vec<u64> = ids.iter().map(|id| seq(id)).collect();
    let at = split_at_replay(&seqs);
    // The six events read before the RPC precede the replay (and `at - 3` below cannot wrap).
    assert!(
        at >= 6,
        "the replay came before the events read first: {seqs:?}"
    );
    // From the replay on: every event after the id, in order, to the response; nothing else.
    assert_eq!(
        seqs[at..],
        (4..=EVENTS + 1).collect::<Vec<_>>(),
        "after the replay: {seqs:?}"
    );
    // The count is the events buffered when the RPC ran: at least those the client had seen.
    assert!(
        replayed >= at as u64 - 3 && 3 + replayed <= EVENTS + 1,
        "replayed {replayed}, client had seen {at}"
    );
    // Re-sent events are the same events: same id, same data.
    for (i, event) in events[at..].iter().enumerate().take(at - 3) {
        assert_eq!(event.id, events[3 + i].id);
        assert_eq!(event.data, events[3 + i].data);
    }
    assert_eq!(
        proxy.manager().stats().snapshot().events_replayed,
        replayed,
        "counted as replayed"
    );
    // The stream's state shows the client connected while it read.
    let session = admin
        .get_session(GetSessionRequest {
            name: format!("sessions/{}", client.session_id),
        })
        .await
        .expect("GetSession")
        .into_inner();
    assert!(session.streams.iter().any(|s| s.name.ends_with(&stream)));
    proxy.shutdown().await.expect("clean shutdown");
}

/// The official TypeScript SDK client calls server-everything's long-running tool through the
/// proxy; mid-call, the operator replays from its first progress notification. The SDK sees
/// every event after that id again, in order, then the rest of the call, then the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_replay_reaches_a_live_official_sdk_client_stream() {
    const STEPS: u64 = 8;
    let server = Peer::everything().await;
    let proxy = start_proxy(&server.url()).await;
    let mut admin = sessions_client(
        proxy
            .admin_addr()
            .expect("the control plane listens on TCP"),
    )
    .await;

    let mut child = Command::new("node")
        .current_dir(repo_root())
        .arg("tests/support/sdk_replay_client.mjs")
        .arg(proxy_url(&proxy))
        .arg(STEPS.to_string())
        .arg("4")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the SDK client reports within 30 s")
            .expect("read")
            .expect("the SDK client exited early; its error is above");
        serde_json::from_str(&line).expect("JSON line")
    };

    let session_id = next().await["session_id"]
        .as_str()
        .expect("session id")
        .to_owned();
    let mut ids: Vec<String> = Vec::new();
    let mut progress: Vec<u64> = Vec::new();
    while progress.len() < 3 {
        let line = next().await;
        if let Some(id) = line["event_id"].as_str() {
            ids.push(id.to_owned());
        } else if let Some(p) = line["progress"].as_u64() {
            progress.push(p);
        }
    }
    // ids: priming event, progress 1, 2, 3. Replay everything after progress 1.
    let after = ids[1].clone();
    let stream = ClientEventId::parse(&after).unwrap().stream.to_owned();
    let replayed = admin
        .force_replay(ForceReplayRequest {
            name: format!("sessions/{session_id}/streams/{stream}"),
            after_event_id: after,
        })
        .await
        .expect("ForceReplay")
        .into_inner()
        .events_replayed;
    let result = loop {
        let line = next().await;
        if let Some(id) = line["event_id"].as_str() {
            ids.push(id.to_owned());
        } else if let Some(p) = line["progress"].as_u64() {
            progress.push(p);
        } else if let Some(r) = line["result"].as_str() {
            break r.to_owned();
        }
    };
    assert!(
        result.starts_with("Long running operation completed"),
        "{result}"
    );
    let status = child.wait().await.expect("wait node");
    assert!(status.success(), "the SDK client failed: {status}");

    let seqs: Vec<u64> = ids.iter().map(|id| seq(id)).collect();
    let at = split_at_replay(&seqs);
    // The replay re-sends from the second event (`at - 2` below cannot wrap).
    assert!(
        at >= 2,
        "the replay came before the events it re-sends: {seqs:?}"
    );
    // Priming event (1), progress 1..=STEPS (2..=STEPS+1), the result (STEPS+2).
    assert_eq!(
        seqs[at..],
        (3..=STEPS + 2).collect::<Vec<_>>(),
        "from the replay on: {seqs:?}"
    );
    assert_eq!(
        ids[at..at + (at - 2)],
        ids[2..at],
        "the re-sent events carry their original ids"
    );
    assert!(replayed >= at as u64 - 2, "replayed {replayed}, seen {at}");
    // The SDK dispatched the re-sent progress notifications again, in order.
    let seen_before = at - 1; // events 2..=at are progress 1..=at-1
    let expected: Vec<u64> = (1..=seen_before as u64).chain(2..=STEPS).collect();
    assert_eq!(progress, expected);
    proxy.shutdown().await.expect("clean shutdown");
}

/// Issue 11: `ForceReplay` with an id ahead of what the client has been handed would skip the
/// events in between: it is refused with OUT_OF_RANGE, and the client still gets every event.
/// A client that does not read (64 KiB events fill its socket buffers) leaves events admitted
/// but not handed to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_replay_refuses_an_id_ahead_of_what_the_client_was_handed() {
    const EVENTS: u64 = 200;
    let upstream = Resumable::start().await;
    upstream.set_scenario(Scenario {
        pad: 64 << 10,
        ..Scenario::default()
    });
    let proxy = support::start_proxy_with(&upstream.url(), |c| {
        c.session.tracker_limits.replay_events = 8;
        c.session.tracker_limits.replay_bytes = 4 << 20;
    })
    .await;
    let mut admin = sessions_client(
        proxy
            .admin_addr()
            .expect("the control plane listens on TCP"),
    )
    .await;
    let client = StreamSession::initialize(&proxy_url(&proxy)).await;
    let call =
        format!(r#"{{"jsonrpc":"2.0","id":6,"method":"stream","params":{{"events":{EVENTS}}}}}"#);
    let response = client.post(&call).await;
    let tracker = proxy
        .manager()
        .get(&client.session_id)
        .expect("session")
        .streams()[0]
        .clone();
    let handed = || {
        tracker
            .last_event_ids()
            .client_event_id
            .map_or(0, |id| seq(&id))
    };
    // "Ahead" lasts only while the reader has events in the window it has not handed out yet
    // (it hands them out as the client's socket takes them), so: whenever it is ahead, ask for
    // a replay from the last event admitted; when the reader caught up before the call arrived
    // that is a legitimate replay (counted, and its events come again); otherwise take one
    // event so the stream moves on.
    let stream = tracker.stream().to_string();
    let mut reader = EventReader::new(response);
    let mut seqs = Vec::new();
    let mut replayed = 0;
    let mut refused = None;
    while refused.is_none() {
        let last = tracker.last_seq();
        if last > handed() {
            match admin
                .force_replay(ForceReplayRequest {
                    name: format!("sessions/{}/streams/{stream}", client.session_id),
                    after_event_id: format!("{stream}:{last}"),
                })
                .await
            {
                Ok(answer) => replayed += answer.into_inner().events_replayed,
                Err(status) => refused = Some(status),
            }
        } else {
            match reader.next().await {
                Some(event) => seqs.push(seq(&event.id.expect("id"))),
                None => break,
            }
        }
    }
    let refused = refused.expect("an id ahead of the client is refused (the stream ended first)");
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert_eq!(
        proxy.manager().stats().snapshot().events_replayed,
        replayed,
        "the refusal replayed nothing"
    );

    // Nothing was skipped: the client reads every event in order (and again at most those a
    // legitimate replay re-sent).
    while let Some(event) = reader.next().await {
        seqs.push(seq(&event.id.expect("id")));
    }
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<u64> = seqs.iter().copied().filter(|s| seen.insert(*s)).collect();
    assert_eq!(firsts, (1..=EVENTS + 1).collect::<Vec<_>>());
    assert!(
        seqs.len() as u64 <= EVENTS + 1 + replayed,
        "only replayed events come again"
    );
    proxy.shutdown().await.expect("clean shutdown");
}
