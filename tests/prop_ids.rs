//! Property tests of client-visible event ids (`ClientEventId::write`, which the EventTracker
//! writes them with, and `ClientEventId::parse`): what the proxy writes it reads back, whatever the upstream's id
//! holds, and no string makes the parser panic.

use bytes::BytesMut;
use mcp_relay::protocol::ClientEventId;
use proptest::prelude::*;

/// The client id of event `seq` of stream `stream`, as the tracker writes it.
fn client_event_id(stream: &str, seq: u64, upstream_id: Option<&str>) -> String {
    let mut out = BytesMut::new();
    ClientEventId::write(stream, seq, upstream_id, &mut out);
    String::from_utf8(out.to_vec()).expect("written from UTF-8 parts")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Format then parse gives back the stream, the sequence number and the upstream id, for
    /// any upstream id (including ones holding `:`, and the empty one).
    #[test]
    fn client_event_ids_round_trip(
        stream in "[0-9a-f]{16}|[^:]{1,12}",
        seq in any::<u64>(),
        upstream in proptest::option::of(".{0,24}|[a-z:]{0,12}"),
    ) {
        let id = client_event_id(&stream, seq, upstream.as_deref());
        let parsed = ClientEventId::parse(&id);
        prop_assert_eq!(
            parsed,
            Some(ClientEventId { stream: &stream, seq, upstream_id: upstream.as_deref() })
        );
    }

    /// Any string parses or is refused without panicking; what parses is made of the string's
    /// own parts and formats back to the same text unless its number had leading zeros.
    #[test]
    fn garbage_never_panics_and_what_parses_formats_back(s in ".{0,40}|[0-9a-z:]{0,24}") {
        if let Some(parsed) = ClientEventId::parse(&s) {
            prop_assert!(!parsed.stream.is_empty() && !parsed.stream.contains(':'));
            let again = client_event_id(parsed.stream, parsed.seq, parsed.upstream_id);
            let seq_text = s.split(':').nth(1).unwrap_or_default();
            if !(seq_text.len() > 1 && seq_text.starts_with('0')) {
                prop_assert_eq!(again, s);
            }
        }
    }
}
