//! The client-visible SSE event id (`id:` field, and the `Last-Event-ID` a client resumes with):
//! `{stream}:{seq}` or `{stream}:{seq}:{upstream id}` (DESIGN.md, "How a legacy session flows
//! through the proxy"). It names the proxy's stream, the stream's sequence number and the
//! upstream's own event id, so any replica can resolve it without shared memory.
//!
//! A client's id is a claim, not a fact: the session core checks `stream` and `seq` against what
//! it recorded (`EventTracker::restored_position`, `EventTracker::issued`) before using either,
//! and never forwards the claimed upstream id.

use bytes::{BufMut as _, BytesMut};

/// A client-visible event id taken apart: `{stream}:{seq}` or `{stream}:{seq}:{upstream id}`
/// (the inverse of [`ClientEventId::write`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEventId<'a> {
    /// The proxy's stream id (16 lowercase hex digits when the proxy minted it, see
    /// [`crate::protocol::is_stream_id`]; unchecked here).
    pub stream: &'a str,
    /// The event's sequence number on the stream, from 1.
    pub seq: u64,
    /// The upstream's event id the proxy wrote after the second `:`, if any (may itself hold `:`).
    pub upstream_id: Option<&'a str>,
}

impl<'a> ClientEventId<'a> {
    /// Parses a `Last-Event-ID`; `None` when it is not one of ours (no stream, or a `seq` that is
    /// not a decimal `u64`).
    pub fn parse(id: &'a str) -> Option<Self> {
        let mut parts = id.splitn(3, ':');
        let stream = parts.next().filter(|s| !s.is_empty())?;
        let seq = parts.next()?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let seq = seq.parse().ok()?;
        Some(Self {
            stream,
            seq,
            upstream_id: parts.next(),
        })
    }

    /// Appends the id of event `seq` of `stream`, carrying `upstream_id`, to `out` without an
    /// intermediate allocation (the SSE hot path writes it straight into the outgoing event).
    pub fn write(stream: &str, seq: u64, upstream_id: Option<&str>, out: &mut BytesMut) {
        out.put_slice(stream.as_bytes());
        out.put_u8(b':');
        out.put_slice(itoa::Buffer::new().format(seq).as_bytes());
        if let Some(up) = upstream_id {
            out.put_u8(b':');
            out.put_slice(up.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(stream: &str, seq: u64, up: Option<&str>) -> String {
        let mut out = BytesMut::new();
        ClientEventId::write(stream, seq, up, &mut out);
        String::from_utf8(out.to_vec()).expect("ids are UTF-8")
    }

    #[test]
    fn client_event_id_names_stream_seq_and_upstream_id_and_parses_back() {
        assert_eq!(format("s1", 7, Some("u:1")), "s1:7:u:1");
        assert_eq!(format("s1", 8, None), "s1:8");
        let parsed = ClientEventId::parse("s1:7:u:1").unwrap();
        assert_eq!(
            (parsed.stream, parsed.seq, parsed.upstream_id),
            ("s1", 7, Some("u:1"))
        );
        let parsed = ClientEventId::parse("s1:8").unwrap();
        assert_eq!(
            (parsed.stream, parsed.seq, parsed.upstream_id),
            ("s1", 8, None)
        );
        for bad in [
            "",
            "s1",
            ":1",
            "s1:",
            "s1:x",
            "s1:-1",
            "s1:99999999999999999999999",
        ] {
            assert_eq!(ClientEventId::parse(bad), None, "{bad:?}");
        }
    }
}
