use std::collections::VecDeque;

use bytes::Bytes;

use super::*;
use crate::sse::SseBlock;

fn tracker(limits: TrackerLimits) -> EventTracker {
    EventTracker::new(None, StreamId::from("s1"), StreamKind::Post, limits)
}

fn push(t: &EventTracker, up: Option<&str>, body: &'static [u8]) -> u64 {
    let Admission::Forward { seq } = t.admit(up) else {
        panic!("duplicate")
    };
    t.append(seq, up, Bytes::from_static(body));
    seq
}

fn events(read: Read) -> Vec<Bytes> {
    match read {
        Read::Events(v) => v,
        other => panic!("expected events, got {other:?}"),
    }
}

#[test]
fn duplicate_upstream_ids_are_dropped_and_counted() {
    let t = tracker(TrackerLimits::default());
    assert_eq!(t.admit(Some("a")), Admission::Forward { seq: 1 });
    assert_eq!(t.admit(Some("b")), Admission::Forward { seq: 2 });
    assert_eq!(t.admit(Some("a")), Admission::Duplicate);
    assert_eq!(t.admit(None), Admission::Forward { seq: 3 });
    assert_eq!(t.duplicates_dropped(), 1);
    assert_eq!(t.last_upstream_id().as_deref(), Some("b"));
}

#[test]
fn issued_ids_are_told_from_forged_ones_while_their_event_is_in_the_window() {
    let t = tracker(TrackerLimits {
        replay_events: 2,
        ..TrackerLimits::default()
    });
    let id = |seq, up| ClientEventId {
        stream: "s1",
        seq,
        upstream_id: up,
    };
    push(&t, Some("u1"), b"data: 1\n\n");
    push(&t, None, b"data: 2\n\n");
    assert_eq!(t.issued(&id(1, Some("u1"))), Some(true));
    assert_eq!(t.issued(&id(1, Some("u9"))), Some(false));
    assert_eq!(t.issued(&id(1, None)), Some(false));
    assert_eq!(t.issued(&id(2, None)), Some(true));
    assert_eq!(t.issued(&id(2, Some("u2"))), Some(false));
    // Position 0, before the first event, carries no upstream id.
    assert_eq!(t.issued(&id(0, None)), Some(true));
    assert_eq!(t.issued(&id(0, Some("u1"))), Some(false));
    // Past the last: cannot be told.
    assert_eq!(t.issued(&id(3, None)), None);
    push(&t, Some("u3"), b"data: 3\n\n");
    push(&t, Some("u4"), b"data: 4\n\n");
    // Event 2 was just evicted: its position (right before the window) is still told;
    // event 1 cannot be.
    assert_eq!(t.issued(&id(2, None)), Some(true));
    assert_eq!(t.issued(&id(2, Some("u2"))), Some(false));
    assert_eq!(t.issued(&id(1, Some("u9"))), None);
    assert_eq!(t.issued(&id(3, Some("u3"))), Some(true));
}

#[test]
fn a_restored_stream_tells_its_starting_position_from_forged_ones() {
    let t = EventTracker::restored(
        SessionId::from("sess"),
        StreamId::from("s1"),
        TrackerLimits::default(),
        5,
        "u5",
        5,
        None,
    );
    let id = |seq, up| ClientEventId {
        stream: "s1",
        seq,
        upstream_id: up,
    };
    assert_eq!(t.issued(&id(5, Some("u5"))), Some(true));
    assert_eq!(t.issued(&id(5, Some("other-session-id"))), Some(false));
    assert_eq!(t.last_upstream_position(), Some((5, "u5".into())));
}

#[test]
fn the_last_upstream_position_is_the_event_that_carried_the_last_upstream_id() {
    let t = tracker(TrackerLimits::default());
    assert_eq!(t.last_upstream_position(), None);
    let mut scratch = BytesMut::new();
    t.record(
        &mut blocks(b"id: a\ndata: 1\n\nid: b\ndata: 2\n\ndata: 3\n\n"),
        &mut scratch,
        Recording::Window,
    );
    assert_eq!(t.last_upstream_position(), Some((2, "b".into())));
    push(&t, Some("c"), b"4");
    assert_eq!(t.last_upstream_position(), Some((4, "c".into())));
    let direct = tracker(TrackerLimits::default());
    direct.record(
        &mut blocks(b"id: x\ndata: 1\n\ndata: 2\n\n"),
        &mut scratch,
        Recording::Direct,
    );
    assert_eq!(direct.last_upstream_position(), Some((1, "x".into())));
}

#[test]
fn rewind_refuses_a_position_past_what_the_reader_was_handed() {
    let t = tracker(TrackerLimits::default());
    let r = t.attach(None).unwrap();
    push(&t, Some("a"), b"1");
    push(&t, Some("b"), b"2");
    events(t.read(r));
    push(&t, Some("c"), b"3");
    push(&t, Some("d"), b"4");
    assert_eq!(
        t.rewind(3),
        Err(AttachError::NotDelivered {
            after: 3,
            delivered: 2
        })
    );
    // Nothing moved: the reader gets 3 and 4, once.
    assert_eq!(events(t.read(r)), [&b"3"[..], &b"4"[..]]);
    assert_eq!(t.rewind(4), Ok(Some(0)));
}

#[test]
fn dedup_window_evicts_oldest_first() {
    let t = tracker(TrackerLimits {
        dedup_ids: 2,
        ..TrackerLimits::default()
    });
    t.admit(Some("a"));
    t.admit(Some("b"));
    t.admit(Some("c"));
    assert!(matches!(t.admit(Some("a")), Admission::Forward { .. }));
    assert_eq!(t.admit(Some("c")), Admission::Duplicate);
}

#[test]
fn reader_gets_events_in_order_then_waits_then_ends() {
    let t = tracker(TrackerLimits::default());
    let r = t.attach(None).unwrap();
    assert_eq!(t.read(r), Read::Wait);
    push(&t, Some("a"), b"1");
    push(&t, None, b"2");
    assert_eq!(events(t.read(r)), [&b"1"[..], &b"2"[..]]);
    assert_eq!(t.read(r), Read::Wait);
    t.set_upstream(UpstreamState::Complete);
    assert_eq!(t.read(r), Read::End(UpstreamState::Complete));
    assert_eq!(t.last_event_ids().client_event_id.as_deref(), Some("s1:2"));
}

#[test]
fn resuming_reader_gets_exactly_the_events_after_its_position_and_replaces_the_old() {
    let t = tracker(TrackerLimits::default());
    let first = t.attach(None).unwrap();
    for body in [b"1", b"2", b"3"] {
        push(&t, None, body);
    }
    assert_eq!(events(t.read(first)).len(), 3);
    t.detach(first);
    assert!(!t.client_connected());
    push(&t, None, b"4");
    let second = t.attach(Some(1)).unwrap();
    assert_eq!(t.read(first), Read::Replaced);
    assert_eq!(events(t.read(second)), [&b"2"[..], &b"3"[..], &b"4"[..]]);
}

#[test]
fn undelivered_events_are_never_evicted_and_delivered_ones_are() {
    let t = tracker(TrackerLimits {
        dedup_ids: 8,
        replay_events: 3,
        replay_bytes: 1 << 20,
    });
    let r = t.attach(None).unwrap();
    for body in [b"1", b"2", b"3"] {
        assert!(t.has_room(1));
        push(&t, None, body);
    }
    assert!(
        !t.has_room(1),
        "three undelivered events fill a window of three"
    );
    assert_eq!(events(t.read(r)).len(), 3);
    assert!(t.has_room(1));
    push(&t, None, b"4");
    assert_eq!(
        t.attach(Some(0)),
        Err(AttachError::LeftWindow {
            after: 0,
            oldest: 2
        })
    );
    assert_eq!(
        t.attach(Some(9)),
        Err(AttachError::Future { after: 9, last: 4 })
    );
}

#[test]
fn byte_bound_holds_except_for_one_oversized_event() {
    let t = tracker(TrackerLimits {
        dedup_ids: 8,
        replay_events: 100,
        replay_bytes: 4,
    });
    let r = t.attach(None).unwrap();
    push(&t, None, b"ab");
    assert!(t.has_room(2));
    assert!(!t.has_room(3));
    events(t.read(r));
    assert!(
        t.has_room(10),
        "an oversized event fits alone once the rest is delivered"
    );
    push(&t, None, b"0123456789");
    assert_eq!(t.window_bytes(), 10);
}

#[test]
fn keep_alives_reach_the_attached_reader_in_order_and_are_never_replayed() {
    let t = tracker(TrackerLimits::default());
    let mut scratch = BytesMut::new();
    t.record(
        &mut blocks(b": dropped, no reader\n\n"),
        &mut scratch,
        Recording::Window,
    );
    let r = t.attach(None).unwrap();
    t.record(
        &mut blocks(b"data: 1\n\n: ka\n\ndata: 2\n\n"),
        &mut scratch,
        Recording::Window,
    );
    assert_eq!(
        events(t.read(r)),
        [
            &b"id: s1:1\ndata: 1\n\n"[..],
            &b": ka\n\n"[..],
            &b"id: s1:2\ndata: 2\n\n"[..]
        ]
    );
    t.detach(r);
    let again = t.attach(Some(0)).unwrap();
    assert_eq!(
        events(t.read(again)),
        [&b"id: s1:1\ndata: 1\n\nid: s1:2\ndata: 2\n\n"[..]],
        "replayed without the keep-alive, as one slice"
    );
}

#[test]
fn keep_alives_count_against_the_byte_budget_and_wait_for_the_reader() {
    let t = tracker(TrackerLimits {
        dedup_ids: 8,
        replay_events: 100,
        replay_bytes: 128,
    });
    let r = t.attach(None).unwrap();
    let mut scratch = BytesMut::new();
    let comment = format!(": {}\n\n", "x".repeat(26)); // 30 bytes
    let mut read = blocks(comment.repeat(6).as_bytes());
    let first = t.record(&mut read, &mut scratch, Recording::Window);
    assert!(first.window_full, "comments past the byte budget wait");
    assert_eq!(read.len(), 2, "four 30-byte comments fit in 128 bytes");
    assert_eq!(events(t.read(r)).concat(), comment.repeat(4).as_bytes());
    assert!(
        !t.record(&mut read, &mut scratch, Recording::Window)
            .window_full
    );
    // An event waits behind comments the reader has not taken, as behind events.
    let mut event = blocks(b"data: 0123456789\n\n");
    assert!(
        t.record(&mut event, &mut scratch, Recording::Window)
            .window_full
    );
    assert_eq!(events(t.read(r)).concat(), comment.repeat(2).as_bytes());
    assert!(
        !t.record(&mut event, &mut scratch, Recording::Window)
            .window_full
    );
    events(t.read(r));
    // A comment larger than the whole budget still goes through, alone.
    let mut big = blocks(format!(": {}\n\n: small\n\n", "y".repeat(200)).as_bytes());
    assert!(
        t.record(&mut big, &mut scratch, Recording::Window)
            .window_full
    );
    assert_eq!(
        big.len(),
        1,
        "the next comment waits behind the oversized one"
    );
    assert_eq!(events(t.read(r)).concat().len(), 204);
    assert!(
        !t.record(&mut big, &mut scratch, Recording::Window)
            .window_full
    );
}

#[test]
fn rewind_re_sends_buffered_events_to_the_attached_reader() {
    let t = tracker(TrackerLimits::default());
    assert_eq!(t.rewind(0), Ok(None), "no reader");
    let r = t.attach(None).unwrap();
    push(&t, Some("a"), b"1");
    push(&t, Some("b"), b"2");
    events(t.read(r));
    assert_eq!(t.rewind(1), Ok(Some(1)));
    assert_eq!(events(t.read(r)), [&b"2"[..]]);
    assert_eq!(
        t.last_event_ids().client_event_id.as_deref(),
        Some("s1:2:b")
    );
}

fn blocks(input: &[u8]) -> VecDeque<SseBlock> {
    let mut parser = crate::sse::SseParser::new(1 << 20);
    parser.push(input);
    std::iter::from_fn(|| parser.next_block().unwrap()).collect()
}

#[test]
fn one_read_is_recorded_under_one_lock_and_read_back_as_one_slice() {
    let t = tracker(TrackerLimits::default());
    let r = t.attach(None).unwrap();
    let mut scratch = BytesMut::new();
    let mut read = blocks(b"id: a\ndata: 1\n\nid: b\ndata: 2\n\nid: a\ndata: again\n\ndata: 3\n\n");
    let recorded = t.record(&mut read, &mut scratch, Recording::Window);
    assert_eq!(
        recorded,
        Recorded {
            forwarded: 3,
            advanced: 2,
            duplicates: 1,
            window_full: false
        }
    );
    assert!(read.is_empty());
    assert_eq!(t.duplicates_dropped(), 1);
    assert_eq!(t.last_upstream_id().as_deref(), Some("b"));
    assert_eq!(
        events(t.read(r)),
        [&b"id: s1:1:a\ndata: 1\n\nid: s1:2:b\ndata: 2\n\nid: s1:3\ndata: 3\n\n"[..]],
        "contiguous events of one read go out as one slice"
    );
    assert_eq!(t.last_event_ids().client_event_id.as_deref(), Some("s1:3"));
    // A resuming reader gets exactly the events after its position, upstream ids intact.
    t.detach(r);
    let again = t.attach(Some(1)).unwrap();
    assert_eq!(
        events(t.read(again)),
        [&b"id: s1:2:b\ndata: 2\n\nid: s1:3\ndata: 3\n\n"[..]]
    );
    t.rewind(1).unwrap();
    assert_eq!(
        t.last_event_ids().client_event_id.as_deref(),
        Some("s1:1:a"),
        "the upstream id of a windowed event is read back from its encoding"
    );
}

#[test]
fn recording_stops_when_the_window_is_full_of_undelivered_events() {
    let t = tracker(TrackerLimits {
        dedup_ids: 8,
        replay_events: 2,
        replay_bytes: 1 << 20,
    });
    let r = t.attach(None).unwrap();
    let mut scratch = BytesMut::new();
    let mut read = blocks(b"id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: c\n\n");
    let first = t.record(&mut read, &mut scratch, Recording::Window);
    assert_eq!((first.forwarded, first.window_full), (2, true));
    assert_eq!(read.len(), 1, "the third event waits for room");
    assert_eq!(
        events(t.read(r)).concat().len(),
        2 * b"id: s1:1:1\ndata: a\n\n".len()
    );
    let second = t.record(&mut read, &mut scratch, Recording::Window);
    assert_eq!((second.forwarded, second.window_full), (1, false));
    assert_eq!(events(t.read(r)), [&b"id: s1:3:3\ndata: c\n\n"[..]]);
}

#[test]
fn direct_recording_encodes_into_the_output_and_counts_as_delivered() {
    let t = tracker(TrackerLimits::default());
    let mut out = BytesMut::new();
    let mut read = blocks(b"id: x\ndata: 1\n\n: ka\n\nid: x\ndata: 1\n\ndata: 2\n\n");
    let recorded = t.record(&mut read, &mut out, Recording::Direct);
    assert_eq!(
        (recorded.forwarded, recorded.advanced, recorded.duplicates),
        (2, 1, 1)
    );
    assert_eq!(
        &out[..],
        b"id: s1:1:x\ndata: 1\n\n: ka\n\ndata: 2\n\n",
        "an event without an upstream id gets no id of the proxy's making"
    );
    let ids = t.last_event_ids();
    assert_eq!(ids.client_event_id.as_deref(), Some("s1:2"));
    assert_eq!(ids.upstream_event_id.as_deref(), Some("x"));
}

#[tokio::test(start_paused = true)]
async fn the_detached_time_follows_the_tokio_clock() {
    let t = tracker(TrackerLimits::default());
    assert_eq!(
        t.detached_since(),
        Some(tokio::time::Instant::now()),
        "none yet"
    );
    let r = t.attach(None).unwrap();
    tokio::time::advance(std::time::Duration::from_secs(5)).await;
    assert_eq!(t.detached_since(), None);
    t.detach(r);
    let since = t.detached_since().expect("detached");
    tokio::time::advance(std::time::Duration::from_secs(30)).await;
    assert_eq!(since.elapsed(), std::time::Duration::from_secs(30));
}
