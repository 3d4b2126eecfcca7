//! SSE framing and event recording (`src/sse.rs`, `src/session/tracker/`) on arbitrary byte
//! streams. Input: one byte of chunk size, then the stream. Invariants: chunking changes no
//! block; the blocks are the input byte for byte (parse∘write is the identity); rewriting an id
//! changes only the id; every event recorded reaches the reader once, in order, duplicates
//! (same upstream id) dropped.
#![no_main]

use mcp_relay::protocol::ClientEventId;
use std::collections::VecDeque;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mcp_relay::{
    session::{EventTracker, Read, StreamId, StreamKind, TrackerLimits, tracker::Recording},
    sse::{SseBlock, SseParser},
};

const BIG: usize = 1 << 20;

fn parse(input: &[u8], chunk: usize) -> (Vec<SseBlock>, usize) {
    let mut p = SseParser::new(BIG);
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        p.push(piece);
        while let Some(b) = p.next_block().expect("within the limit") {
            out.push(b);
        }
    }
    if input.is_empty() {
        while let Some(b) = p.next_block().expect("within the limit") {
            out.push(b);
        }
    }
    (out, p.buffered_len())
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let (whole, left) = parse(input, input.len().max(1));
    let (chunked, left_chunked) = parse(input, usize::from(chunk % 16) + 1);
    assert_eq!(left, left_chunked);
    assert_eq!(whole.len(), chunked.len());
    for (a, b) in whole.iter().zip(&chunked) {
        assert_eq!(a.raw(), b.raw());
        assert_eq!(
            (a.id(), a.has_id(), a.has_data()),
            (b.id(), b.has_id(), b.has_data())
        );
        assert_eq!(a.data(), b.data());
        assert_eq!(a.retry_ms(), b.retry_ms());
    }
    let written: Vec<u8> = whole.iter().flat_map(|b| b.raw().iter().copied()).collect();
    assert_eq!(&written[..], &input[..input.len() - left]);

    // Id rewriting: one block with the new id and the same data.
    for block in &whole {
        if !block.has_id() && !block.has_data() {
            continue;
        }
        let mut out = BytesMut::new();
        block.write_with_id("s:1:x", &mut out);
        if out.ends_with(b"\r") {
            out.extend_from_slice(b"\n");
        }
        let (again, _) = parse(&out, out.len());
        assert_eq!(again.len(), 1, "{:?} became {:?}", block.raw(), out);
        assert_eq!(again[0].id(), Some("s:1:x"));
        assert_eq!(again[0].data(), block.data());
    }

    // Recording: windowed, read as the pump allows; each event once, in order.
    let limits = TrackerLimits {
        dedup_ids: 4,
        replay_events: usize::from(chunk % 5) + 1,
        replay_bytes: BIG,
    };
    let t = EventTracker::new(None, StreamId::from("s"), StreamKind::Get, limits);
    let reader = t.attach(None).expect("attach");
    let mut pending: VecDeque<SseBlock> = whole.iter().cloned().collect();
    let mut scratch = BytesMut::new();
    let mut client = Vec::new();
    loop {
        let r = t.record(&mut pending, &mut scratch, Recording::Window);
        t.publish();
        while let Read::Events(chunks) = t.read(reader) {
            chunks.iter().for_each(|c| client.extend_from_slice(c));
        }
        if !r.window_full {
            break;
        }
    }
    assert!(pending.is_empty());
    let mut seen: VecDeque<&str> = VecDeque::new();
    let mut expected = Vec::new();
    for b in &whole {
        if !b.has_id() && !b.has_data() {
            continue;
        }
        let up = b.id().filter(|id| !id.is_empty());
        if let Some(id) = up {
            if seen.contains(&id) {
                continue;
            }
            if seen.len() >= limits.dedup_ids {
                seen.pop_front();
            }
            seen.push_back(id);
        }
        expected.push((up, b));
    }
    // Every event parses back from what the client received.
    if client.ends_with(b"\r") {
        client.extend_from_slice(b"\n");
    }
    let (got, _) = parse(&client, client.len());
    let got: Vec<&SseBlock> = got.iter().filter(|b| b.has_id() || b.has_data()).collect();
    assert_eq!(got.len(), expected.len());
    for (i, (g, (up, b))) in got.iter().zip(&expected).enumerate() {
        let id = ClientEventId::parse(g.id().expect("our id")).expect("our format");
        assert_eq!(
            (id.stream, id.seq, id.upstream_id),
            ("s", i as u64 + 1, *up)
        );
        assert_eq!(g.data(), b.data());
    }
});
