//! `mcprelay.admin.v1.SessionService`: sessions, streams and last event ids, answered from the
//! live SessionManager (never from the store, which may lag by one flush).

use std::{sync::Arc, time::UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use tonic::{Request, Response, Status};

use super::{filter::SessionFilter, pb};
use crate::{
    proxy::era::Era,
    session::{EventTracker, Session, SessionManager, StreamKind},
};

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

/// The SessionService implementation.
#[derive(Debug, Clone)]
pub struct SessionAdmin {
    manager: Arc<SessionManager>,
}

impl SessionAdmin {
    pub fn new(manager: Arc<SessionManager>) -> Self {
        Self { manager }
    }

    fn session(&self, id: &str) -> Result<Arc<Session>, Status> {
        self.manager
            .get(id)
            .ok_or_else(|| Status::not_found(format!("session {id:?} not found")))
    }
}

/// The sort key of a session in listings: creation time (ms since the epoch), then id.
fn order_key(s: &Session) -> (u128, String) {
    let ms = s
        .created()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    (ms, s.id().to_string())
}

fn encode_page_token(key: &(u128, String)) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}/{}", key.0, key.1))
}

fn decode_page_token(token: &str) -> Result<(u128, String), Status> {
    let invalid = || Status::invalid_argument("page_token is malformed");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (ms, id) = text.split_once('/').ok_or_else(invalid)?;
    Ok((ms.parse().map_err(|_| invalid())?, id.to_owned()))
}

fn session_to_pb(s: &Session) -> pb::Session {
    let mut streams: Vec<Arc<EventTracker>> = s.streams();
    streams.sort_by_key(|t| t.created());
    pb::Session {
        name: format!("sessions/{}", s.id()),
        upstream_session_id: String::from_utf8_lossy(s.upstream_session_id().as_bytes())
            .into_owned(),
        upstream: s.upstream().to_owned(),
        protocol_version: s.protocol_version().to_string(),
        era: era_to_pb(Era::of_version(&s.protocol_version())) as i32,
        create_time: Some(s.created().into()),
        last_activity_time: Some(s.last_activity().into()),
        streams: streams.iter().map(|t| stream_to_pb(s, t)).collect(),
    }
}

fn era_to_pb(era: Era) -> pb::ProtocolEra {
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
    }
}

/// Splits `sessions/{session}` (or with more segments, `rest` names them) into its parts.
fn parse_name<'a>(name: &'a str, shape: &[&str]) -> Result<Vec<&'a str>, Status> {
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

#[tonic::async_trait]
impl pb::session_service_server::SessionService for SessionAdmin {
    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let req = request.into_inner();
        let page_size = match req.page_size {
            n if n < 0 => return Err(Status::invalid_argument("page_size must not be negative")),
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(decode_page_token(&req.page_token)?)
        };
        let filter = SessionFilter::parse(&req.filter).map_err(Status::invalid_argument)?;

        let mut sessions: Vec<((u128, String), Arc<Session>)> = self
            .manager
            .sessions()
            .into_iter()
            .filter(|s| {
                let era = era_to_pb(Era::of_version(&s.protocol_version())).as_str_name();
                filter.era.as_deref().is_none_or(|e| era.ends_with(e))
                    && filter.upstream.as_deref().is_none_or(|u| u == s.upstream())
                    && filter
                        .protocol_version
                        .as_deref()
                        .is_none_or(|v| v == &*s.protocol_version())
            })
            .map(|s| (order_key(&s), s))
            .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
            .collect();
        sessions.sort_by(|a, b| a.0.cmp(&b.0));
        let next_page_token = if sessions.len() > page_size {
            encode_page_token(&sessions[page_size - 1].0)
        } else {
            String::new()
        };
        sessions.truncate(page_size);
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.iter().map(|(_, s)| session_to_pb(s)).collect(),
            next_page_token,
        }))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let name = request.into_inner().name;
        let ids = parse_name(&name, &["sessions", "*"])?;
        let session = self.session(ids[0])?;
        Ok(Response::new(session_to_pb(&session)))
    }

    async fn get_last_event_id(
        &self,
        request: Request<pb::GetLastEventIdRequest>,
    ) -> Result<Response<pb::LastEventId>, Status> {
        let name = request.into_inner().name;
        let ids = parse_name(&name, &["sessions", "*", "streams", "*", "lastEventId"])?;
        let session = self.session(ids[0])?;
        let tracker = session.stream(ids[1]).ok_or_else(|| {
            Status::not_found(format!(
                "stream {:?} not found in session {:?}",
                ids[1], ids[0]
            ))
        })?;
        let last = tracker.last_event_ids();
        Ok(Response::new(pb::LastEventId {
            name,
            client_event_id: last.client_event_id.unwrap_or_default(),
            upstream_event_id: last
                .upstream_event_id
                .map(|s| s.to_string())
                .unwrap_or_default(),
            persisted_upstream_event_id: last
                .persisted
                .as_ref()
                .map(|(id, _)| id.to_string())
                .unwrap_or_default(),
            persist_time: last.persisted.map(|(_, at)| at.into()),
        }))
    }
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

    #[test]
    fn page_tokens_round_trip_and_garbage_is_invalid() {
        let key = (1234u128, "abc_-X".to_string());
        assert_eq!(decode_page_token(&encode_page_token(&key)).unwrap(), key);
        assert_eq!(
            decode_page_token("!!!").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
