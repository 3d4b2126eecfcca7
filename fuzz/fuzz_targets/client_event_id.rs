//! `ClientEventId::parse` on arbitrary text, and format∘parse on the parts it yields.
#![no_main]

use mcp_relay::protocol::ClientEventId;
use libfuzzer_sys::fuzz_target;

/// The client id of event `seq` of stream `stream`, as the tracker writes it.
fn client_event_id(stream: &str, seq: u64, upstream_id: Option<&str>) -> String {
    let mut out = bytes::BytesMut::new();
    ClientEventId::write(stream, seq, upstream_id, &mut out);
    String::from_utf8(out.to_vec()).expect("written from UTF-8 parts")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Garbage: parses or not, never panics; what parses formats back (up to leading zeros).
    if let Some(id) = ClientEventId::parse(text) {
        assert!(!id.stream.is_empty() && !id.stream.contains(':'));
        let again = client_event_id(id.stream, id.seq, id.upstream_id);
        let seq_text = text.split(':').nth(1).unwrap_or_default();
        if !(seq_text.len() > 1 && seq_text.starts_with('0')) {
            assert_eq!(again, text);
        }
    }
    // Round trip: the input as an upstream id (it may hold ':'), under a fixed stream and seq.
    let seq = data
        .iter()
        .fold(0u64, |acc, &b| acc.rotate_left(7) ^ u64::from(b));
    for up in [None, Some(text)] {
        let id = client_event_id("0123456789abcdef", seq, up);
        assert_eq!(
            ClientEventId::parse(&id),
            Some(ClientEventId {
                stream: "0123456789abcdef",
                seq,
                upstream_id: up
            })
        );
    }
});
