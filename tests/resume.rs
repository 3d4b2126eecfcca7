//! Streams that survive (DESIGN.md, steps 3–5): a client that drops resumes with
//! `Last-Event-ID` and gets exactly the events after it; an upstream that drops is resumed by the
//! proxy and the client sees one unbroken stream; bad ids are refused and never served from
//! another stream or session; a slow client cannot grow memory past the window. The upstream is
//! `support::resumable`, which injects each fault precisely.

mod support;

use std::{sync::Arc, time::Duration};

use http::StatusCode;
use mcp_relay::{
    daemon::Daemon,
    session::{Session, UpstreamState},
};
use support::{
    proxy_url,
    resumable::{Resumable, Scenario},
    start_proxy, start_proxy_with,
    stream_client::{EventReader, Session as Client, progress_values, responses_to},
};

fn stream_request(id: u64, events: u64) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"stream","params":{{"events":{events}}}}}"#)
}

fn assert_exactly_once(events: &[support::stream_client::Event], id: u64, n: u64) {
    assert_eq!(
        progress_values(events),
        (1..=n).collect::<Vec<_>>(),
        "{events:#?}"
    );
    assert_eq!(responses_to(events, id), 1);
}

fn only_session(proxy: &Daemon) -> Arc<Session> {
    let sessions = proxy.manager().sessions();
    assert_eq!(sessions.len(), 1);
    sessions[0].clone()
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test]
async fn client_cuts_resume_exactly_after_the_last_event_id() {
    let upstream = Resumable::start().await;
    let proxy = start_proxy(&upstream.url()).await;
    let client = Client::initialize(&proxy_url(&proxy)).await;
    let first = client.post(&stream_request(1, 10)).await;
    let (events, resumptions) = client.follow(first, 1, [3, 4].into_iter()).await;
    assert_exactly_once(&events, 1, 10);
    assert_eq!(resumptions, 2);
    assert_eq!(
        upstream
            .seen()
            .resumptions
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let stats = proxy.proxy_stats().snapshot();
    assert_eq!(stats.resumptions, 2);
    assert_eq!(stats.resumptions_refused, 0);
}

/// The upstream keeps no event store (no ids): the proxy's window is the only memory.
#[tokio::test]
async fn client_cuts_resume_from_the_proxy_window_when_the_upstream_sends_no_ids() {
    let upstream = Resumable::start().await;
    upstream.set_scenario(Scenario {
        no_ids: true,
        ..Scenario::default()
    });
    let proxy = start_proxy(&upstream.url()).await;
    let client = Client::initialize(&proxy_url(&proxy)).await;
    let first = client.post(&stream_request(1, 12)).await;
    let (events, _) = client.follow(first, 1, [1, 5, 2].into_iter()).await;
    assert_exactly_once(&events, 1, 12);
    let stream = only_session(&proxy).streams()[0].stream().to_string();
    for (seq, e) in events.iter().enumerate() {
        assert_eq!(
            e.id.as_deref(),
            Some(format!("{stream}:{}", seq + 1).as_str())
        );
    }
}

#[tokio::test]
async fn upstream_cut_is_resumed_and_duplicates_it_replays_are_dropped() {
    let upstream = Resumable::start().await;
    upstream.set_scenario(Scenario {
        cuts: [4, 3].into(),
        replay_overlap: 2,
        ..Scenario::default()
    });
    let proxy = start_proxy(&upstream.url()).await;
    let client = Client::initialize(&proxy_url(&proxy)).await;
    let first = client.post(&stream_request(7, 15)).await;
    let (events, resumptions) = client.follow(first, 7, std::iter::empty()).await;
    assert_exactly_once(&events, 7, 15);
    assert_eq!(resumptions, 0, "the client saw one unbroken stream");
    let seen = upstream.seen();
    assert_eq!(seen.cuts.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(
        seen.resumptions.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let stats = proxy.proxy_stats().snapshot();
    assert_eq!(
        stats.duplicates_dropped, 4,
        "two replayed events per resumption"
    );
    assert_eq!(stats.upstream_reconnects, 2);
}

/// 2025-11-25 polling: the upstream closes the POST stream after an event with an id and a
/// `retry:` hint, before the response; the proxy reconnects with `Last-Event-ID` itself.
#[tokio::test]
async fn upstream_polling_closes_are_followed_by_the_proxy() {
    let upstream = Resumable::start().await;
    upstream.set_scenario(Scenario {
        poll_closes: [2, 3].into(),
        ..Scenario::default()
    });
    let proxy = start_proxy(&upstream.url()).await;
    let client = Client::initialize(&proxy_url(&proxy)).await;
    let first = client.post(&stream_request(3, 9)).await;
    let (events, resumptions) = client.follow(first, 3, std::iter::empty()).await;
    assert_exactly_once(&events, 3, 9);
    assert_eq!(resumptions, 0);
    assert_eq!(
        upstream
            .seen()
            .resumptions
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn upstream_that_cannot_resume_ends_the_client_stream_with_a_retry_hint() {
    let upstream = Resumable::start().await;
    upstream.set_scenario(Scenario {
        cuts: [3].into(),
        refuse_resume: true,
        ..Scenario::default()
    });
    let proxy = start_proxy(&upstream.url()).await;
    let client = Client::initialize(&proxy_url(&proxy)).await;
    let response = client.post(&stream_request(2, 10)).await;
    let body = support::http::SseReader::new(response).read_to_end().await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(text.matches("notifications/progress").count(), 3, "{text}");
    assert!(text.ends_with("retry: 1000\n\n"), "{text}");
    // Resuming through the proxy tries the upstream again; it refuses, so the client is told.
    let stream = only_session(&proxy).streams()[0].clone();
    assert_eq!(stream.upstream(), UpstreamState::Failed);
    let last = stream.last_event_ids().client_event_id.expect("an id");
    let resumed = client.resume(&last).await;
    assert_eq!(resumed.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn upstream_killed_and_restarted_with_its_event_store_continues_without_gap() {
    let mut upstream = Resumable::start().await;
    upstream.set_scenario(Scenario {
        delay: Duration::from_millis(20),
        ..Scenario::default()
    });
    let proxy = start_proxy(&upstream.url()).await;
    let client = Client::initialize(&proxy_url(&proxy)).await;
    let mut reader = EventReader::new(client.post(&stream_request(5, 30)).await);
    let mut events = Vec::new();
    for _ in 0..5 {
        events.push(reader.next().await.expect("event"));
    }
    upstream.kill();
    tokio::time::sleep(Duration::from_millis(150)).await;
    upstream.restart().await;
    while let Some(event) = reader.next().await {
        events.push(event);
    }
    assert_exactly_once(&events, 5, 30);
    assert!(proxy.proxy_stats().snapshot().upstream_reconnects >= 1);
}

/// A client that went away for longer than the linger time: the proxy stopped reading the
/// upstream, and the client's `Last-Event-ID` re-opens the stream upstream from the last
/// upstream id; the client still gets every event exactly once.
#[tokio::test]
async fn a_client_back_after_the_linger_time_resumes_through_the_upstream() {
    let upstream = Resumable::start().await;
    upstream.set_scenario(Scenario {
        delay: Duration::from_millis(30),
        ..Scenario::default()
    });
    let proxy = start_proxy_with(&upstream.url(), |c| {
        c.session.linger = Duration::from_millis(100);
    })
    .await;
    let client = Client::initialize(&proxy_url(&proxy)).await;
    let mut reader = EventReader::new(client.post(&stream_request(4, 20)).await);
    let mut events = vec![
        reader.next().await.expect("event"),
        reader.next().await.expect("event"),
    ];
    drop(reader);
    let stream = only_session(&proxy).streams()[0].clone();
    eventually("the pump stopping after the linger time", || {
        stream.upstream() == UpstreamState::Stopped
    })
    .await;
    let last = events.last().and_then(|e| e.id.clone()).expect("id");
    let (rest, _) = client
        .follow(client.resume(&last).await, 4, std::iter::empty())
        .await;
    events.extend(rest);
    assert_exactly_once(&events, 4, 20);
    assert_eq!(
        upstream
            .seen()
            .resumptions
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn bad_last_event_ids_are_refused_and_never_replay_another_stream_or_session() {
    let upstream = Resumable::start().await;
    let proxy = start_proxy_with(&upstream.url(), |c| {
        c.session.tracker_limits.replay_events = 4;
    })
    .await;
    let url = proxy_url(&proxy);
    let alice = Client::initialize(&url).await;
    let bob = Client::initialize(&url).await;
    let (events, _) = alice
        .follow(
            alice.post(&stream_request(1, 10)).await,
            1,
            std::iter::empty(),
        )
        .await;
    let alice_id = events[3].id.clone().expect("id");

    let refused = |status: StatusCode| assert_eq!(status, StatusCode::BAD_REQUEST);
    // Another session's event id: unknown stream in Bob's session.
    refused(bob.resume(&alice_id).await.status());
    // Malformed.
    refused(alice.resume("garbage").await.status());
    refused(alice.resume("abc:xyz").await.status());
    // A stream that does not exist in this session.
    refused(alice.resume("0000000000000000:1").await.status());
    // Left the window (4 events kept of 11).
    let stream = alice_id.split(':').next().expect("stream");
    refused(alice.resume(&format!("{stream}:1")).await.status());
    // From the future.
    refused(alice.resume(&format!("{stream}:99")).await.status());
    assert_eq!(proxy.proxy_stats().snapshot().resumptions_refused, 6);
    assert_eq!(proxy.proxy_stats().snapshot().resumptions, 0);
}

/// The window keeps what the client has not been handed; when that fills it, the proxy stops
/// reading the upstream (backpressure) instead of buffering more. Events of 64 KiB make the
/// client's socket buffers fill, so the proxy's reader stops being polled.
#[tokio::test]
async fn a_slow_client_cannot_grow_memory_past_the_window() {
    const WINDOW: usize = 8;
    const N: u64 = 200;
    let upstream = Resumable::start().await;
    upstream.set_scenario(Scenario {
        pad: 64 << 10,
        ..Scenario::default()
    });
    let proxy = start_proxy_with(&upstream.url(), |c| {
        c.session.tracker_limits.replay_events = WINDOW;
        c.session.tracker_limits.replay_bytes = 4 << 20;
    })
    .await;
    let client = Client::initialize(&proxy_url(&proxy)).await;
    let response = client.post(&stream_request(9, N)).await;
    let stream = only_session(&proxy).streams()[0].clone();
    // The client reads nothing for a while.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = stream
        .last_event_ids()
        .client_event_id
        .and_then(|id| id.split(':').nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let admitted = stream.last_seq();
    assert!(admitted < N + 1, "the pump stopped reading the upstream");
    assert!(
        admitted - delivered <= WINDOW as u64,
        "admitted {admitted}, handed to the client {delivered}: at most {WINDOW} held"
    );
    assert!(stream.window_bytes() <= WINDOW * (65 << 10));
    let (events, _) = client.follow(response, 9, std::iter::empty()).await;
    assert_exactly_once(&events, 9, N);
}

/// splitmix64: a tiny seeded generator, so failures replay exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 200 seeded trials cutting the client side, the upstream side, or both, at random points and
/// several times per stream (with replayed duplicates, and some upstreams sending no ids):
/// every event arrives exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_cuts_on_both_sides_deliver_every_event_exactly_once_in_order() {
    let seed = std::env::var("RESUME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6d63_702d_7265_6c61);
    let mut rng = Rng(seed);
    let upstream = Resumable::start().await;
    let proxy = start_proxy(&upstream.url()).await;
    let client = Client::initialize(&proxy_url(&proxy)).await;
    for trial in 0..200u64 {
        let n = 1 + rng.below(25);
        let no_ids = rng.below(8) == 0;
        // An upstream that breaks before its first event id leaves nothing to resume from
        // (real 2025-11-25 servers send a priming event first), so the first cut comes after
        // at least one event; cuts of resumed responses may come at once.
        let upstream_cuts: Vec<u64> = if no_ids {
            Vec::new()
        } else {
            (0..rng.below(4))
                .map(|i| {
                    if i == 0 {
                        1 + rng.below(n)
                    } else {
                        rng.below(n + 1)
                    }
                })
                .collect()
        };
        let client_cuts: Vec<usize> = (0..rng.below(4))
            .map(|_| 1 + rng.below(n) as usize)
            .collect();
        upstream.set_scenario(Scenario {
            no_ids,
            cuts: upstream_cuts.iter().copied().collect(),
            replay_overlap: rng.below(3),
            ..Scenario::default()
        });
        let id = 1000 + trial;
        let first = client.post(&stream_request(id, n)).await;
        let (events, _) = client
            .follow(first, id, client_cuts.clone().into_iter())
            .await;
        assert_eq!(
            progress_values(&events),
            (1..=n).collect::<Vec<_>>(),
            "seed {seed:#x} trial {trial}: n={n} no_ids={no_ids} upstream cuts {upstream_cuts:?} \
             client cuts {client_cuts:?}"
        );
        assert_eq!(responses_to(&events, id), 1, "seed {seed:#x} trial {trial}");
    }
}

/// Issue 11: a `Last-Event-ID` whose upstream part is not the one the stream issued at that
/// position is refused while the stream is held in memory, like any id the proxy did not issue.
#[tokio::test]
async fn an_id_with_another_upstream_part_is_refused_while_the_stream_is_held() {
    let upstream = Resumable::start().await;
    let proxy = start_proxy(&upstream.url()).await;
    let client = Client::initialize(&proxy_url(&proxy)).await;
    let (events, _) = client
        .follow(
            client.post(&stream_request(1, 3)).await,
            1,
            std::iter::empty(),
        )
        .await;
    let last = events.last().and_then(|e| e.id.clone()).expect("id");
    let (position, _upstream) = last.rsplit_once(':').expect("an upstream part");
    let refused = client.resume(&format!("{position}:1-2")).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let refused = client.resume(&format!("{position}:forged")).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let stats = proxy.proxy_stats().snapshot();
    assert_eq!(stats.resumptions_refused, 2);
    assert_eq!(stats.resumptions, 0);
    // The id the stream issued is still served (nothing after it: the stream ends).
    let served = client.resume(&last).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(proxy.proxy_stats().snapshot().resumptions, 1);
}

/// Issue 11: a stream no longer held in memory (here: closed, with no closed stream kept) is
/// resumed upstream only after the upstream id the proxy recorded for it, and only from the
/// position that id belongs to. A client id naming another upstream id, or another position,
/// is refused with 400 and never reaches the upstream; the recorded position resumes upstream
/// with the recorded id.
#[tokio::test]
async fn a_stream_no_longer_held_resumes_upstream_only_from_its_recorded_position() {
    use support::upstream::{Reply, TestUpstream};
    let upstream = TestUpstream::start().await;
    upstream.push(
        Reply::json(
            r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"up","version":"1"}}}"#,
        )
        .session_id("UP-1"),
    );
    upstream.push(Reply::accepted());
    let proxy = start_proxy_with(&upstream.url(), |c| {
        c.session.closed_streams_kept = 0;
    })
    .await;
    let client = Client::initialize(&proxy_url(&proxy)).await;
    upstream.push(Reply::sse(&[
        "id: u1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n",
        "id: u2\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n",
    ]));
    let (events, _) = client
        .follow(
            client.post(&stream_request(1, 1)).await,
            1,
            std::iter::empty(),
        )
        .await;
    let ids: Vec<String> = events.iter().filter_map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 2, "{events:#?}");
    let stream = ids[0].split(':').next().expect("stream").to_owned();
    assert_eq!(ids[1], format!("{stream}:2:u2"));

    // The stream closed and left memory; its position is in the store.
    let session = proxy.manager().get(&client.session_id).expect("session");
    eventually("the closed stream leaving memory", || {
        session.stream(&stream).is_none()
    })
    .await;
    let store = proxy.manager().persistence().store().clone();
    let key = [(client.session_id.clone(), stream.clone())];
    let mut persisted = false;
    for _ in 0..500 {
        if store.get_stream_positions(&key).await.expect("store")[0].is_some() {
            persisted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        persisted,
        "the stream's position was not persisted within 5 s"
    );

    let get_requests = || {
        upstream
            .requests()
            .into_iter()
            .filter(|r| r.method == http::Method::GET)
            .map(|r| r.header("last-event-id").unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    // Another upstream id at the recorded position, and a position before the recorded one
    // (the proxy kept nothing to serve the events between exactly once): refused, unsent.
    for forged in [
        format!("{stream}:2:someone-elses-id"),
        format!("{stream}:1:u1"),
        format!("{stream}:3:u2"),
    ] {
        let refused = support::http::read_full(client.resume(&forged).await).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{forged}: {}",
            refused.text()
        );
        assert!(refused.text().contains("-32600"), "{}", refused.text());
    }
    assert_eq!(
        get_requests(),
        Vec::<String>::new(),
        "nothing reached the upstream"
    );
    assert_eq!(proxy.proxy_stats().snapshot().resumptions_refused, 3);

    // The recorded position resumes upstream after the recorded id.
    upstream.push(Reply::sse(&[]));
    let resumed = client.resume(&format!("{stream}:2:u2")).await;
    assert_eq!(resumed.status(), StatusCode::OK);
    drop(resumed);
    assert_eq!(get_requests(), ["u2"]);
}

/// Issue 11 (M1): a client at its true latest position resumes a stream that left memory even
/// when the stream's last events carried no upstream id. The upstream sent `id: e1`, then an
/// event without an id (seq 2); the client holds `<stream>:2`. The stream resumes upstream
/// after `e1` (the last id the upstream gave; it cannot replay id-less events) and numbers the
/// new events after 2, so the client gets each later event once, in order. A position ahead of
/// the stream, or an upstream part at a position that carried none, is still refused.
#[tokio::test]
async fn a_client_past_the_last_upstream_id_resumes_a_stream_no_longer_held() {
    use support::upstream::{Reply, TestUpstream};
    let upstream = TestUpstream::start().await;
    upstream.push(
        Reply::json(
            r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"up","version":"1"}}}"#,
        )
        .session_id("UP-1"),
    );
    upstream.push(Reply::accepted());
    let proxy = start_proxy_with(&upstream.url(), |c| {
        c.session.closed_streams_kept = 0;
    })
    .await;
    let client = Client::initialize(&proxy_url(&proxy)).await;
    let progress = |n: u64| {
        format!(
            "data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progressToken\":1,\"progress\":{n}}}}}\n\n"
        )
    };
    upstream.push(Reply::sse(&[
        &format!("id: e1\n{}", progress(1)),
        "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n",
    ]));
    let (events, _) = client
        .follow(
            client.post(&stream_request(1, 1)).await,
            1,
            std::iter::empty(),
        )
        .await;
    let ids: Vec<String> = events.iter().filter_map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 2, "{events:#?}");
    let stream = ids[0].split(':').next().expect("stream").to_owned();
    assert_eq!(ids, [format!("{stream}:1:e1"), format!("{stream}:2")]);

    // The stream closed and left memory; its position reached the store.
    let session = proxy.manager().get(&client.session_id).expect("session");
    eventually("the closed stream leaving memory", || {
        session.stream(&stream).is_none()
    })
    .await;
    let store = proxy.manager().persistence().store().clone();
    let key = [(client.session_id.clone(), stream.clone())];
    let mut persisted = None;
    for _ in 0..500 {
        persisted = store.get_stream_positions(&key).await.expect("store")[0].clone();
        if persisted.as_ref().and_then(|p| p.last_seq) == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let persisted = persisted.expect("the stream's position persisted within 5 s");
    assert_eq!(
        (
            persisted.seq,
            persisted.last_seq,
            persisted.upstream_event_id.as_str()
        ),
        (Some(1), Some(2), "e1"),
        "event 1 carried the last upstream id; event 2 is the stream's last"
    );

    let get_requests = || {
        upstream
            .requests()
            .into_iter()
            .filter(|r| r.method == http::Method::GET)
            .map(|r| r.header("last-event-id").unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    // Ahead of the stream, or an upstream part where the event carried none: refused, unsent.
    for refused_id in [
        format!("{stream}:3"),
        format!("{stream}:2:other"),
        format!("{stream}:2:e1"),
    ] {
        let refused = support::http::read_full(client.resume(&refused_id).await).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{refused_id}: {}",
            refused.text()
        );
    }
    assert_eq!(
        get_requests(),
        Vec::<String>::new(),
        "nothing went upstream"
    );

    // The client's latest position resumes upstream after the last upstream id.
    upstream.push(Reply::sse(&[
        &format!("id: e2\n{}", progress(2)),
        &progress(3),
    ]));
    let resumed = client.resume(&format!("{stream}:2")).await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let mut reader = EventReader::new(resumed);
    let mut later = Vec::new();
    while later.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), reader.next())
            .await
            .expect("the resumed events within 5 s")
            .expect("the resumed stream ended before its events");
        later.push(event);
    }
    drop(reader);
    assert_eq!(get_requests(), ["e1"]);
    assert_eq!(progress_values(&later), [2, 3], "{later:#?}");
    let later_ids: Vec<String> = later.iter().filter_map(|e| e.id.clone()).collect();
    assert_eq!(
        later_ids,
        [format!("{stream}:3:e2"), format!("{stream}:4")],
        "numbered after the client's position, each once"
    );
}

/// A client's resumption is counted in the session core's `events_replayed` with the events
/// the window re-sends it: here every event after the first, the stream being whole.
#[tokio::test]
async fn a_resumption_counts_the_events_it_replays() {
    let upstream = Resumable::start().await;
    let proxy = start_proxy(&upstream.url()).await;
    let client = Client::initialize(&proxy_url(&proxy)).await;
    let (events, _) = client
        .follow(
            client.post(&stream_request(1, 4)).await,
            1,
            std::iter::empty(),
        )
        .await;
    let ids: Vec<String> = events.iter().filter_map(|e| e.id.clone()).collect();
    assert!(
        ids.len() >= 5,
        "4 progress events and the response: {ids:?}"
    );
    assert_eq!(proxy.manager().stats().snapshot().events_replayed, 0);
    let resumed = client.resume(&ids[0]).await;
    assert_eq!(resumed.status(), StatusCode::OK);
    assert_eq!(
        proxy.manager().stats().snapshot().events_replayed,
        ids.len() as u64 - 1
    );
}
