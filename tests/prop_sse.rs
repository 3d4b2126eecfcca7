//! Property tests of SSE framing (`src/sse.rs`) and of recording events into an EventTracker
//! (`src/session/tracker/`): chunking never changes the blocks, parsing loses or changes no
//! byte, id rewriting changes only the id, and every event recorded reaches the reader once, in
//! order, with duplicates (same upstream id) dropped. Bounded case counts keep them fast; the
//! cargo-fuzz targets in `fuzz/` run the same invariants for longer.

use mcp_relay::protocol::ClientEventId;
use std::collections::VecDeque;

use bytes::BytesMut;
use mcp_relay::{
    session::{
        EventTracker, Read, StreamId, tracker::Recording, tracker::StreamKind,
        tracker::TrackerLimits,
    },
    sse::{SseBlock, SseParser},
};
use proptest::prelude::*;

const BIG: usize = 1 << 20;

/// One line of an SSE-like stream: mostly well-formed fields, sometimes garbage.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let eol = prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"\r"[..])];
    let field = prop_oneof![
        4 => "[a-z0-9 :._-]{0,12}".prop_map(|v| format!("data: {v}")),
        2 => "[a-zA-Z0-9:_-]{0,8}".prop_map(|v| format!("id: {v}")),
        1 => "[a-zA-Z0-9:_-]{0,8}".prop_map(|v| format!("id:{v}")),
        1 => Just("id".to_owned()),
        1 => "[a-z]{0,8}".prop_map(|v| format!("event: {v}")),
        1 => "[0-9]{1,5}".prop_map(|v| format!("retry: {v}")),
        1 => "[ -~]{0,10}".prop_map(|v| format!(":{v}")),
        1 => Just(String::new()),
        1 => "[ -~]{0,10}".prop_map(|v| v),
    ];
    (field, eol).prop_map(|(f, e)| [f.as_bytes(), e].concat())
}

/// A byte stream: SSE-like lines, sometimes after a byte order mark, sometimes raw bytes.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (any::<bool>(), prop::collection::vec(line(), 0..24)).prop_map(|(bom, lines)| {
            let mut out = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
            lines.iter().for_each(|l| out.extend_from_slice(l));
            out
        }),
        1 => prop::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(b':'), Just(b' '), any::<u8>()],
            0..200
        ),
    ]
}

/// Cut points within `len` bytes, sorted.
fn cuts(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut c: Vec<usize> = raw.iter().map(|r| r % (len + 1)).collect();
    c.sort_unstable();
    c
}

/// Parses `input` fed in the chunks between `cuts`; the blocks and the bytes left buffered.
fn parse_chunked(input: &[u8], cuts: &[usize], limit: usize) -> (Vec<SseBlock>, usize) {
    let mut p = SseParser::new(limit);
    let mut out = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        p.push(&input[at..cut]);
        at = cut;
        while let Some(b) = p.next_block().expect("within the limit") {
            out.push(b);
        }
    }
    (out, p.buffered_len())
}

/// The lines of `raw` with their terminators, split as the SSE rules do (CRLF, LF, lone CR).
fn lines_of(raw: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\n' => {
                out.push(&raw[start..=i]);
                start = i + 1;
            }
            b'\r' => {
                let end = if raw.get(i + 1) == Some(&b'\n') {
                    i + 2
                } else {
                    i + 1
                };
                out.push(&raw[start..end]);
                start = end;
                i = end - 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < raw.len() {
        out.push(&raw[start..]);
    }
    out
}

fn is_id_line(line: &[u8]) -> bool {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let content = line.strip_suffix(b"\n").unwrap_or(line);
    let content = content.strip_suffix(b"\r").unwrap_or(content);
    content == b"id" || content.starts_with(b"id:")
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn all_blocks(bytes: &[u8]) -> Vec<SseBlock> {
    parse_chunked(bytes, &[], BIG).0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary chunking gives the same blocks as one chunk, and the blocks plus what stays
    /// buffered are the input byte for byte (parse then write without rewriting is identity).
    #[test]
    fn chunking_never_changes_blocks_and_no_byte_is_lost(
        input in stream(),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let (whole, left) = parse_chunked(&input, &[], BIG);
        let (chunked, left_chunked) = parse_chunked(&input, &cuts(input.len(), &raw_cuts), BIG);
        prop_assert_eq!(left, left_chunked);
        prop_assert_eq!(whole.len(), chunked.len());
        for (a, b) in whole.iter().zip(&chunked) {
            prop_assert_eq!(a.raw(), b.raw());
            prop_assert_eq!(a.id(), b.id());
            prop_assert_eq!(a.has_id(), b.has_id());
            prop_assert_eq!(a.has_data(), b.has_data());
            prop_assert_eq!(a.data(), b.data());
            prop_assert_eq!(a.retry_ms(), b.retry_ms());
        }
        let written: Vec<u8> = whole.iter().flat_map(|b| b.raw().iter().copied()).collect();
        prop_assert_eq!(&written[..], &input[..input.len() - left]);
    }

    /// After the parser says "no complete block yet", it holds at most its limit (or the two
    /// bytes of a byte order mark it has not seen the end of, whatever the limit).
    #[test]
    fn parser_holds_at_most_its_limit_between_blocks(
        input in stream(),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..12),
        limit in 1usize..64,
    ) {
        let mut p = SseParser::new(limit);
        let mut at = 0;
        for cut in cuts(input.len(), &raw_cuts).into_iter().chain(std::iter::once(input.len())) {
            p.push(&input[at..cut]);
            at = cut;
            loop {
                match p.next_block() {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        prop_assert!(p.buffered_len() <= limit.max(2));
                        break;
                    }
                    Err(_) => return Ok(()),
                }
            }
        }
    }

    /// Rewriting the id of an event block changes only its id lines: the rest of the block is
    /// byte-identical and the result parses back to one block with the new id and the same data.
    #[test]
    fn id_rewrite_changes_only_the_id(input in stream(), new_id in "[a-zA-Z0-9:_-]{0,20}") {
        for (i, block) in all_blocks(&input).iter().enumerate() {
            check_rewrite(block, &new_id, i == 0)?;
        }
    }

    /// [`id_rewrite_changes_only_the_id`] for blocks that start with a field (no byte order
    /// mark, no blank lines carried over from before the block) and have no line ended by a
    /// lone CR, which held already on e25505a.
    #[test]
    fn id_rewrite_changes_only_the_id_of_blocks_starting_with_a_field(
        input in stream(),
        new_id in "[a-zA-Z0-9:_-]{0,20}",
    ) {
        for block in all_blocks(&input) {
            let raw = block.raw();
            let lone_cr = raw.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n');
            if raw.starts_with(b"\xEF\xBB\xBF") || raw.starts_with(b"\n") || raw.starts_with(b"\r") || lone_cr {
                continue;
            }
            check_rewrite(&block, &new_id, false)?;
        }
    }
}

/// `first`: the block is the stream's first (only it may start with the stream's byte order
/// mark).
fn check_rewrite(block: &SseBlock, new_id: &str, first: bool) -> Result<(), TestCaseError> {
    if !block.has_id() && !block.has_data() {
        return Ok(());
    }
    let mut out = BytesMut::new();
    block.write_with_id(new_id, &mut out);
    let raw = block.raw();
    // What stays in front of the new id line: the stream's byte order mark, then the blank
    // lines the block starts with.
    let bom = if first && raw.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let prefix = bom
        + raw[bom..]
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
    prop_assert_eq!(&out[..prefix], &raw[..prefix]);
    let expected_head = format!("id: {new_id}\n");
    prop_assert!(out[prefix..].starts_with(expected_head.as_bytes()));
    // Every other line's content is kept, in order (a line end may change where an id line
    // after a lone CR took the CR's place).
    let content = |l: &&[u8]| -> Vec<u8> {
        let c = l.strip_suffix(b"\n").unwrap_or(l);
        c.strip_suffix(b"\r").unwrap_or(c).to_vec()
    };
    let kept: Vec<Vec<u8>> = lines_of(&raw[prefix..])
        .iter()
        .filter(|l| !is_id_line(l))
        .map(content)
        .collect();
    let rest: Vec<Vec<u8>> = lines_of(&out[prefix + expected_head.len()..])
        .iter()
        .filter(|l| !is_id_line(l))
        .map(content)
        .collect();
    prop_assert_eq!(&rest, &kept, "only id lines may change");
    // A block may end in a lone CR, which a parser cannot tell from the start of a CRLF
    // until the next byte: end the stream as a CRLF would.
    if out.ends_with(b"\r") {
        out.extend_from_slice(b"\n");
    }
    let reparsed = all_blocks(&out);
    let shown = format!("{:?} became {:?}", show(block.raw()), show(&out));
    prop_assert_eq!(reparsed.len(), 1, "one block in, one block out: {}", shown);
    prop_assert_eq!(reparsed[0].id(), Some(new_id), "{}", shown);
    prop_assert_eq!(reparsed[0].has_data(), block.has_data(), "{}", shown);
    prop_assert_eq!(reparsed[0].data(), block.data(), "{}", shown);
    Ok(())
}

/// The rewritten event of a stream that starts with a byte order mark keeps its data: the BOM
/// is only stripped at the very start of a stream, so after `id: …\n` it would become part of
/// the next field's name (`\u{feff}data`) and the client would drop the data line.
#[test]
fn rewrite_keeps_the_data_of_a_block_after_a_byte_order_mark() {
    let block = &all_blocks(b"\xEF\xBB\xBFdata: x\n\n")[0];
    let mut out = BytesMut::new();
    block.write_with_id("s:1", &mut out);
    let re = all_blocks(&out);
    assert_eq!(re.len(), 1, "{:?}", show(&out));
    assert_eq!(
        (re[0].id(), &*re[0].data()),
        (Some("s:1"), &b"x"[..]),
        "{:?}",
        show(&out)
    );
}

/// Blank lines an upstream sends between events are folded into the next block; the rewritten
/// id must stay in the same event as its data, not form an empty event of its own before them.
#[test]
fn rewrite_keeps_the_id_with_the_data_after_leading_blank_lines() {
    let blocks = all_blocks(b"data: a\n\n\n\ndata: b\n\n");
    assert_eq!(blocks[1].raw().as_ref(), b"\n\ndata: b\n\n");
    let mut out = BytesMut::new();
    blocks[1].write_with_id("s:2", &mut out);
    let re = all_blocks(&out);
    assert_eq!(re.len(), 1, "{:?}", show(&out));
    assert_eq!(
        (re[0].id(), &*re[0].data()),
        (Some("s:2"), &b"b"[..]),
        "{:?}",
        show(&out)
    );
}

/// One step of a stream's life as the pump and the client see it.
#[derive(Debug, Clone)]
enum Step {
    /// The pump reads these blocks from the upstream and records them.
    Record(Vec<u8>),
    /// The client reads what is there.
    Read,
    /// The client reconnects with the last id it saw (`Last-Event-ID`).
    Resume,
}

fn event_line() -> impl Strategy<Value = Vec<u8>> {
    // Few distinct upstream ids, so duplicates are common.
    prop_oneof![
        3 => ("[a-e]{1,2}", "[a-z]{0,6}").prop_map(|(id, d)| format!("id: {id}\ndata: {d}\n\n")),
        2 => "[a-z]{0,6}".prop_map(|d| format!("data: {d}\n\n")),
        1 => Just(": keep-alive\n\n".to_owned()),
        1 => Just("id:\ndata: reset\n\n".to_owned()),
    ]
    .prop_map(String::into_bytes)
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::collection::vec(event_line(), 1..6).prop_map(|v| Step::Record(v.concat())),
            3 => Just(Step::Read),
            1 => Just(Step::Resume),
        ],
        0..40,
    )
}

/// What the stream should deliver: the event blocks with their upstream ids (empty ids count
/// as none), first occurrences only within the last `dedup` upstream ids.
fn expected_events(blocks: &[SseBlock], dedup: usize) -> Vec<(Option<String>, Vec<u8>)> {
    let mut seen: VecDeque<String> = VecDeque::new();
    let mut out = Vec::new();
    for b in blocks {
        if !b.has_id() && !b.has_data() {
            continue;
        }
        let up = b.id().filter(|id| !id.is_empty()).map(str::to_owned);
        if let Some(id) = &up {
            if seen.contains(id) {
                continue;
            }
            if seen.len() >= dedup {
                seen.pop_front();
            }
            seen.push_back(id.clone());
        }
        out.push((up, b.data().into_owned()));
    }
    out
}

/// The events in a client's byte stream: (client id, data).
fn client_events(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    all_blocks(bytes)
        .into_iter()
        .filter(|b| b.has_data())
        .map(|b| {
            (
                b.id().expect("every event carries our id").to_owned(),
                b.data().into_owned(),
            )
        })
        .collect()
}

fn drain(t: &EventTracker, reader: u64, client: &mut Vec<u8>) {
    loop {
        match t.read(reader) {
            Read::Events(chunks) => chunks.iter().for_each(|c| client.extend_from_slice(c)),
            Read::Wait | Read::End(_) => return,
            Read::Replaced => panic!("the only reader was replaced"),
        }
    }
}

/// Removing the upstream's id line must not join a lone CR before it with the LF of the blank
/// line after it: `event: x\r` + `id: 1\n` + `\n` would become `event: x\r\n` (one CRLF), the
/// block would lose its end, and the client would merge this event with the next one.
#[test]
fn rewrite_keeps_the_end_of_a_block_whose_lines_end_in_lone_cr() {
    let block = &all_blocks(b"event: x\rid: 1\n\ndata: next\n\n")[0];
    let mut out = BytesMut::new();
    block.write_with_id("s:1", &mut out);
    out.extend_from_slice(b"data: next\n\n");
    let re = all_blocks(&out);
    assert_eq!(re.len(), 2, "{:?}", show(&out));
    assert_eq!(re[0].id(), Some("s:1"), "{:?}", show(&out));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Events recorded into a windowed tracker reach the reader exactly once, in order, with
    /// gapless sequence numbers and their upstream ids in the client id, across reads, window
    /// back-pressure and client reconnects; duplicate upstream ids are dropped.
    #[test]
    fn recorded_events_are_delivered_once_in_order(
        steps in steps(),
        replay_events in 1usize..6,
        dedup_ids in 1usize..8,
    ) {
        let limits = TrackerLimits { dedup_ids, replay_events, replay_bytes: BIG };
        let t = EventTracker::new(None, StreamId::from("s1"), StreamKind::Get, limits);
        let mut reader = t.attach(None).expect("attach at the start");
        let mut pending: VecDeque<SseBlock> = VecDeque::new();
        let mut upstream = Vec::new();
        let mut client = Vec::new();
        let mut scratch = BytesMut::new();
        let mut record = |t: &EventTracker, pending: &mut VecDeque<SseBlock>, client: &mut Vec<u8>, reader: u64| {
            // Like the pump: record, and while the window is full let the reader take events.
            loop {
                let r = t.record(pending, &mut scratch, Recording::Window);
                t.publish();
                if !r.window_full {
                    break;
                }
                drain(t, reader, client);
            }
        };
        for step in steps {
            match step {
                Step::Record(bytes) => {
                    let blocks = all_blocks(&bytes);
                    upstream.extend(blocks.iter().cloned());
                    pending.extend(blocks);
                    record(&t, &mut pending, &mut client, reader);
                }
                Step::Read => drain(&t, reader, &mut client),
                Step::Resume => {
                    // The client saw up to its last event; it resumes after that sequence.
                    let last = client_events(&client)
                        .last()
                        .map(|(id, _)| ClientEventId::parse(id).expect("our id").seq);
                    t.detach(reader);
                    reader = t.attach(Some(last.unwrap_or(0))).expect("resume within the window");
                }
            }
        }
        drain(&t, reader, &mut client);
        let expected = expected_events(&upstream, dedup_ids);
        let got = client_events(&client);
        prop_assert_eq!(got.len(), expected.len(), "client got {:?}", got);
        for (i, ((id, data), (up, want))) in got.iter().zip(&expected).enumerate() {
            let parsed = ClientEventId::parse(id).expect("our id");
            prop_assert_eq!(parsed.stream, "s1");
            prop_assert_eq!(parsed.seq, i as u64 + 1);
            prop_assert_eq!(parsed.upstream_id, up.as_deref());
            prop_assert_eq!(data, want);
        }
    }

    /// The same for a stream relayed without a window (modern era): every event exactly once,
    /// in order, with keep-alives passed through.
    #[test]
    fn directly_relayed_events_are_delivered_once_in_order(
        reads in prop::collection::vec(prop::collection::vec(event_line(), 0..6), 0..12),
        dedup_ids in 1usize..8,
    ) {
        let limits = TrackerLimits { dedup_ids, ..TrackerLimits::default() };
        let t = EventTracker::new(None, StreamId::from("s2"), StreamKind::Post, limits);
        let mut upstream = Vec::new();
        let mut client = BytesMut::new();
        for read in reads {
            let blocks = all_blocks(&read.concat());
            upstream.extend(blocks.iter().cloned());
            let mut queue: VecDeque<SseBlock> = blocks.into();
            t.record(&mut queue, &mut client, Recording::Direct);
            prop_assert!(queue.is_empty());
        }
        let expected = expected_events(&upstream, dedup_ids);
        // Without a window only an upstream id can resume: an event that came without one
        // leaves without one, the others carry ours.
        let got: Vec<(Option<String>, Vec<u8>)> = all_blocks(&client)
            .into_iter()
            .filter(|b| b.has_data())
            .map(|b| (b.id().map(str::to_owned), b.data().into_owned()))
            .collect();
        prop_assert_eq!(got.len(), expected.len());
        for (i, ((id, data), (up, want))) in got.iter().zip(&expected).enumerate() {
            match up {
                Some(up) => {
                    let parsed = ClientEventId::parse(id.as_deref().expect("our id"))
                        .expect("our format");
                    prop_assert_eq!(parsed.seq, i as u64 + 1);
                    prop_assert_eq!(parsed.upstream_id, Some(up.as_str()));
                }
                // As the upstream sent it: no id, or an empty one (which resets the client's).
                None => prop_assert!(
                    id.as_deref().is_none_or(str::is_empty),
                    "no id of the proxy's making: {:?}",
                    id
                ),
            }
            prop_assert_eq!(data, want);
        }
        let keepalives = |blocks: &[SseBlock]| {
            blocks.iter().filter(|b| !b.has_id() && !b.has_data()).count()
        };
        prop_assert_eq!(keepalives(&all_blocks(&client)), keepalives(&upstream));
    }
}

#[test]
fn client_bytes_helper_sees_events() {
    // The helpers above must see events, or the properties would pass vacuously.
    let got = client_events(b"id: s1:1:a\ndata: x\n\n: k\n\n");
    assert_eq!(got, vec![("s1:1:a".to_owned(), b"x".to_vec())]);
    assert_eq!(
        lines_of(b"a\r\nb\rc\nd"),
        vec![&b"a\r\n"[..], b"b\r", b"c\n", b"d"]
    );
}
