//! How the Redis store lays values out (the fields of a session's streams hash, numbers as
//! Redis gives them back), as pure functions tested on their own. The key layout is in the
//! parent module's docs.

use std::time::Duration;

use crate::session::store::{SessionRecord, from_unix_ms};

/// The field of a stream's position (`<seq>:<upstream id>`) in its session's streams hash.
pub(super) fn position_field(stream: &str) -> String {
    format!("pos:{stream}")
}

/// The field of a stream's last sequence number in its session's streams hash.
pub(super) fn last_seq_field(stream: &str) -> String {
    format!("last:{stream}")
}

/// `<seq>:<upstream id>` taken apart; `None` when it is not one (a value this store did not
/// write: the position is then read as absent).
fn split_position(value: &str) -> Option<(u64, &str)> {
    let (seq, id) = value.split_once(':')?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((seq.parse().ok()?, id))
}

/// A stream's position from its three fields, `pos:<stream>`, `last:<stream>` and the old
/// format's `<stream>`: `(seq, last seq, upstream id)`, or `None` when neither format holds
/// one. When the old field names another upstream id than `pos:`, a replica of an older
/// version wrote it later: that id is the position, without a seq. A last seq that is
/// missing, malformed or behind `seq` reads as `seq` (nothing is known past it).
pub(super) fn decode_position(
    position: Option<&str>,
    last_seq: Option<&str>,
    old_format: Option<String>,
) -> Option<(Option<u64>, Option<u64>, String)> {
    match (position.and_then(split_position), old_format) {
        (Some((_, id)), Some(old)) if old != id => Some((None, None, old)),
        (Some((seq, id)), _) => {
            let last = last_seq
                .and_then(|l| l.parse::<u64>().ok())
                .filter(|&l| l >= seq)
                .unwrap_or(seq);
            Some((Some(seq), Some(last), id.to_owned()))
        }
        (None, Some(old)) => Some((None, None, old)),
        (None, None) => None,
    }
}

/// Milliseconds as Redis gives them back (an integer, or a sorted-set score such as `1e3`);
/// 0 when unreadable.
pub(super) fn parse_ms(text: &str) -> u64 {
    text.parse::<u64>()
        .ok()
        .or_else(|| text.parse::<f64>().ok().map(|f| f.max(0.0) as u64))
        .unwrap_or(0)
}

/// A TTL as `PEXPIRE` takes it: whole milliseconds, at least 1.
pub(super) fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A row of the claim script (`[id, upstream_session_id, upstream, protocol_version,
/// created_ms, last_activity_ms, route]`) as a record; `None` for a row of another length.
pub(super) fn claimed_record(row: Vec<String>) -> Option<SessionRecord> {
    let [
        id,
        upstream_sid,
        upstream,
        version,
        created,
        activity,
        route,
    ]: [String; 7] = row.try_into().ok()?;
    Some(SessionRecord {
        session_id: id,
        upstream_session_id: upstream_sid,
        upstream,
        route,
        protocol_version: version,
        created: from_unix_ms(parse_ms(&created)),
        last_activity: from_unix_ms(parse_ms(&activity)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(
        position: Option<&str>,
        last_seq: Option<&str>,
        old: Option<&str>,
    ) -> Option<(Option<u64>, Option<u64>, String)> {
        decode_position(position, last_seq, old.map(str::to_owned))
    }

    #[test]
    fn a_position_reads_its_seq_last_seq_and_upstream_id() {
        let both = Some((Some(3), Some(5), "ev:7".to_owned()));
        assert_eq!(decode(Some("3:ev:7"), Some("5"), Some("ev:7")), both);
        assert_eq!(decode(Some("3:ev:7"), Some("5"), None), both);
        for last in [None, Some("2"), Some("x"), Some("-1")] {
            assert_eq!(
                decode(Some("3:ev:7"), last, None),
                Some((Some(3), Some(3), "ev:7".to_owned())),
                "{last:?}"
            );
        }
    }

    #[test]
    fn the_old_format_is_read_without_a_seq_and_wins_when_written_later() {
        let old = Some((None, None, "ev:9".to_owned()));
        assert_eq!(decode(None, None, Some("ev:9")), old);
        assert_eq!(decode(Some("3:ev:7"), Some("5"), Some("ev:9")), old);
        // A `pos:` value this store did not write is no position.
        assert_eq!(decode(Some("x3:ev:7"), None, Some("ev:9")), old);
        assert_eq!(decode(Some(":ev:7"), None, None), None);
        assert_eq!(decode(Some("no-colon"), None, None), None);
        assert_eq!(decode(None, Some("5"), None), None);
    }

    #[test]
    fn a_claimed_row_reads_as_a_record_and_a_short_one_as_none() {
        let row = [
            "id",
            "UP",
            "http://u/mcp",
            "2025-11-25",
            "1000",
            "2.5e3",
            "files",
        ]
        .map(String::from);
        let record = claimed_record(row.to_vec()).expect("a record");
        assert_eq!(record.session_id, "id");
        assert_eq!(record.upstream_session_id, "UP");
        assert_eq!(record.upstream, "http://u/mcp");
        assert_eq!(record.protocol_version, "2025-11-25");
        assert_eq!(record.route, "files");
        assert_eq!(record.created, from_unix_ms(1000));
        assert_eq!(record.last_activity, from_unix_ms(2500));
        assert_eq!(claimed_record(row[..6].to_vec()), None);
    }

    #[test]
    fn numbers_read_as_redis_writes_them() {
        assert_eq!(parse_ms("1700000000123"), 1_700_000_000_123);
        assert_eq!(parse_ms("1e3"), 1000);
        assert_eq!(parse_ms("-5"), 0);
        assert_eq!(parse_ms("junk"), 0);
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_secs(2)), 2000);
        assert_eq!(ttl_ms(Duration::MAX), u64::MAX);
    }
}
