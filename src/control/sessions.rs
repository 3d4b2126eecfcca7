//! `mcprelay.admin.v1.SessionService`: sessions, streams and last event ids, answered from the
//! live SessionManager (never from the store, which may lag by one flush); forced replays into a
//! live client stream; operator termination; and the session watch ([`super::watch`]).

use crate::protocol::ClientEventId;
use std::{sync::Arc, time::UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    convert::{parse_name, session_to_pb},
    filter::SessionFilter,
    pb,
    watch::{self, SessionWatch},
};
use crate::session::{
    AttachError, EndUpstreamError, EventTracker, Session, SessionManager, UpstreamSessionEnder,
};

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

/// The SessionService implementation.
#[derive(Debug, Clone)]
pub struct SessionAdmin {
    manager: Arc<SessionManager>,
    /// How `TerminateSession` ends a session upstream; without one it reports that none is
    /// configured (`upstream_error`).
    upstream_ender: Option<Arc<dyn UpstreamSessionEnder>>,
    /// Ends the session watches (daemon shutdown).
    stop: CancellationToken,
}

impl SessionAdmin {
    /// Serves `manager`'s sessions; watches end when `stop` fires. `TerminateSession` ends a
    /// session here only, until [`SessionAdmin::with_upstream_ender`] says how to end it
    /// upstream.
    pub fn new(manager: Arc<SessionManager>, stop: CancellationToken) -> Self {
        Self {
            manager,
            upstream_ender: None,
            stop,
        }
    }

    /// Ends terminated sessions upstream through `ender` (the daemon's: the one expiry uses).
    pub fn with_upstream_ender(mut self, ender: Option<Arc<dyn UpstreamSessionEnder>>) -> Self {
        self.upstream_ender = ender;
        self
    }

    fn session(&self, id: &str) -> Result<Arc<Session>, Status> {
        self.manager
            .get(id)
            .ok_or_else(|| Status::not_found(format!("session {id:?} not found")))
    }

    fn stream(&self, session: &Session, id: &str) -> Result<Arc<EventTracker>, Status> {
        session.stream(id).ok_or_else(|| {
            Status::not_found(format!(
                "stream {id:?} not found in session {:?}",
                session.id().as_str()
            ))
        })
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

/// The gRPC status of a replay position the window cannot serve.
fn out_of_range(err: AttachError) -> Status {
    Status::out_of_range(match err {
        AttachError::LeftWindow { after, oldest } => format!(
            "events after sequence {after} have left the replay window (the oldest kept is \
             {oldest})"
        ),
        AttachError::Future { after, last } => {
            format!("sequence {after} is past the stream's last event ({last})")
        }
        AttachError::NotDelivered { after, delivered } => format!(
            "sequence {after} is past the last event handed to the client ({delivered}): \
             the events in between would be skipped"
        ),
    })
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
            .map(|s| (order_key(&s), s))
            .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
            .filter(|(_, s)| filter.matches(s))
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
        let tracker = self.stream(&session, ids[1])?;
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

    async fn force_replay(
        &self,
        request: Request<pb::ForceReplayRequest>,
    ) -> Result<Response<pb::ForceReplayResponse>, Status> {
        let req = request.into_inner();
        let ids = parse_name(&req.name, &["sessions", "*", "streams", "*"])?;
        let after = ClientEventId::parse(&req.after_event_id).ok_or_else(|| {
            Status::invalid_argument(format!(
                "after_event_id {:?} is not an event id of this proxy \
                 (`{{stream}}:{{seq}}[:{{upstream id}}]`)",
                req.after_event_id
            ))
        })?;
        if after.stream != ids[1] {
            return Err(Status::invalid_argument(format!(
                "after_event_id names stream {:?}, not {:?}",
                after.stream, ids[1]
            )));
        }
        let session = self.session(ids[0])?;
        let tracker = self.stream(&session, ids[1])?;
        // `{stream}:{seq}` names a position; an upstream id part, when given, must be the one
        // that event carries.
        if after.upstream_id.is_some() && tracker.issued(&after) == Some(false) {
            return Err(Status::invalid_argument(format!(
                "after_event_id {:?} was not issued by this stream: its event {} carries another \
                 upstream event id",
                req.after_event_id, after.seq
            )));
        }
        let sent = tracker
            .rewind(after.seq)
            .map_err(out_of_range)?
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "no client is connected to stream {:?}; a client resumes it with GET and \
                     Last-Event-ID",
                    ids[1]
                ))
            })?;
        self.manager.count_replayed(sent as u64);
        tracing::info!(
            session = %session.id(),
            stream = %tracker.stream(),
            after_seq = after.seq,
            events = sent,
            "forced a replay to the client",
        );
        Ok(Response::new(pb::ForceReplayResponse {
            events_replayed: sent as u64,
        }))
    }

    async fn terminate_session(
        &self,
        request: Request<pb::TerminateSessionRequest>,
    ) -> Result<Response<pb::TerminateSessionResponse>, Status> {
        let name = request.into_inner().name;
        let ids = parse_name(&name, &["sessions", "*"])?;
        // The last state, streams included, before ending clears them.
        let before = session_to_pb(&*self.session(ids[0])?);
        let session = self
            .manager
            .end_session(ids[0])
            .ok_or_else(|| Status::not_found(format!("session {:?} not found", ids[0])))?;
        let ended = match &self.upstream_ender {
            Some(ender) => ender.end_upstream_session(&session).await,
            None => Err(EndUpstreamError::Failed(
                "no upstream client is configured".to_owned(),
            )),
        };
        let (upstream_status, upstream_error) = match ended {
            Ok(status) => (i32::from(status.as_u16()), String::new()),
            Err(err) => (0, err.to_string()),
        };
        tracing::info!(
            session = %session.id(),
            upstream_status,
            upstream_error = %upstream_error,
            "session terminated by an operator",
        );
        Ok(Response::new(pb::TerminateSessionResponse {
            session: Some(pb::Session {
                state: pb::SessionState::Ended as i32,
                ..before
            }),
            upstream_status,
            upstream_error,
        }))
    }

    type WatchSessionsStream = SessionWatch;

    async fn watch_sessions(
        &self,
        request: Request<pb::WatchSessionsRequest>,
    ) -> Result<Response<Self::WatchSessionsStream>, Status> {
        let filter =
            SessionFilter::parse(&request.into_inner().filter).map_err(Status::invalid_argument)?;
        Ok(Response::new(watch::sessions(
            self.manager.clone(),
            filter,
            self.stop.clone(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
