//! Domain → proto: sessions, streams and their states as the admin API shows them, and the
//! resource names (`sessions/{session}[/streams/{stream}[/lastEventId]]`) parsed back.

use std::sync::Arc;

use tonic::Status;

use super::pb;
use crate::{
    protocol::Era,
    session::{EventTracker, Session, StreamKind, UpstreamState},
};

/// A session as the API shows it, with its tracked streams oldest first.
pub fn session_to_pb(s: &Session) -> pb::Session {
    let mut streams: Vec<Arc<EventTracker>> = s.streams();
    streams.sort_by_key(|t| t.created());
    pb::Session {
        name: format!("sessions/{}", s.id()),
        upstream_session_id: String::from_utf8_lossy(s.upstream_session_id().as_bytes())
            .into_owned(),
        upstream: s.upstream().to_owned(),
        protocol_version: s.protocol_version().to_string(),
        era: era_to_pb(s.era()) as i32,
        create_time: Some(s.created().into()),
        last_activity_time: Some(s.last_activity().into()),
        state: state_of(s, &streams) as i32,
        streams: streams.iter().map(|t| stream_to_pb(s, t)).collect(),
    }
}

/// Where a session stands: a client reading any stream makes it `STREAMING`; otherwise a stream
/// still read from the upstream makes it `LINGERING`; otherwise it is `IDLE`.
pub fn state_of(s: &Session, streams: &[Arc<EventTracker>]) -> pb::SessionState {
    if s.is_ended() {
        pb::SessionState::Ended
    } else if streams.iter().any(|t| t.client_connected()) {
        pb::SessionState::Streaming
    } else if streams.iter().any(|t| !t.upstream().is_terminal()) {
        pb::SessionState::Lingering
    } else {
        pb::SessionState::Idle
    }
}

pub fn era_to_pb(era: Era) -> pb::ProtocolEra {
    match era {
        Era::Legacy => pb::ProtocolEra::Legacy,
        Era::Modern => pb::ProtocolEra::Modern,
    }
}

fn stream_to_pb(s: &Session, t: &EventTracker) -> pb::Stream {
    pb::Stream {
        name: format!("sessions/{}/streams/{}", s.id(), t.stream()),
        kind: match t.kind() {
            StreamKind::Post => pb::StreamKind::Post,
            StreamKind::Get => pb::StreamKind::Get,
        } as i32,
        create_time: Some(t.created().into()),
        events_forwarded: t.events_forwarded(),
        duplicates_dropped: t.duplicates_dropped(),
        client_connected: t.client_connected(),
        upstream_state: upstream_state_to_pb(t.upstream()) as i32,
        replay_window_bytes: t.window_bytes() as u64,
        last_client_event_id: t.last_event_ids().client_event_id.unwrap_or_default(),
    }
}

fn upstream_state_to_pb(state: UpstreamState) -> pb::UpstreamState {
    match state {
        UpstreamState::Live => pb::UpstreamState::Live,
        UpstreamState::Reconnecting => pb::UpstreamState::Reconnecting,
        UpstreamState::Complete => pb::UpstreamState::Complete,
        UpstreamState::Failed => pb::UpstreamState::Failed,
        UpstreamState::Stopped => pb::UpstreamState::Stopped,
    }
}

/// Splits a resource name by its pattern (`*` = one non-empty segment) and returns the
/// segments the wildcards matched; INVALID_ARGUMENT names the expected pattern.
pub fn parse_name<'a>(name: &'a str, shape: &[&str]) -> Result<Vec<&'a str>, Status> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = parts.len() == shape.len()
        && parts
            .iter()
            .zip(shape)
            .all(|(p, s)| if *s == "*" { !p.is_empty() } else { p == s });
    if !ok {
        return Err(Status::invalid_argument(format!(
            "name {name:?} must look like {:?}",
            shape.join("/")
        )));
    }
    Ok(parts
        .iter()
        .zip(shape)
        .filter(|(_, s)| **s == "*")
        .map(|(p, _)| *p)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_match_their_pattern() {
        assert_eq!(
            parse_name("sessions/abc", &["sessions", "*"]).unwrap(),
            ["abc"]
        );
        assert!(parse_name("sessions/", &["sessions", "*"]).is_err());
        assert!(parse_name("session/abc", &["sessions", "*"]).is_err());
        let shape = ["sessions", "*", "streams", "*", "lastEventId"];
        assert_eq!(
            parse_name("sessions/a/streams/b/lastEventId", &shape).unwrap(),
            ["a", "b"]
        );
        assert!(parse_name("sessions/a/streams/b", &shape).is_err());
    }
}
