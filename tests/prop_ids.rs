//! Property tests of client-visible event ids (`EventTracker::client_event_id`,
//! `ClientEventId::parse`): what the proxy writes it reads back, whatever the upstream's id
//! holds, and no string makes the parser panic.

use mcp_relay::protocol::ClientEventId;
use mcp_relay::session::{
    EventTracker, StreamId,
    tracker::{StreamKind, TrackerLimits},
};
use proptest::prelude::*;

fn tracker(stream: &str) -> EventTracker {
    EventTracker::new(
        None,
        StreamId::from(stream),
        StreamKind::Get,
        TrackerLimits::default(),
    )
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
        let t = tracker(&stream);
        let id = t.client_event_id(seq, upstream.as_deref());
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
            let again = tracker(parsed.stream).client_event_id(parsed.seq, parsed.upstream_id);
            let seq_text = s.split(':').nth(1).unwrap_or_default();
            if !(seq_text.len() > 1 && seq_text.starts_with('0')) {
                prop_assert_eq!(again, s);
            }
        }
    }
}
