//! Legacy stream resumption: a `GET` with `Last-Event-ID` in a legacy session
//! ([`super::phases::RequestCtx::stream_resumption`]) is served from the proxy's replay window
//! instead of the forward phase, and re-opened upstream only when the proxy's side of the
//! stream has stopped (ARCHITECTURE.md, "Resumption answers" and "The client's upstream id is
//! never trusted").

use std::sync::Arc;

use axum::response::Response;
use http::{HeaderMap, HeaderValue, header};

use super::{
    Proxy, error::Reject, headers, pump, sse_headers, stats::ProxyStats, upstream::Upstream,
};
use crate::{
    protocol::ClientEventId,
    session::{Session, StreamRestoreError, UpstreamState},
};

impl Proxy {
    /// Serves a legacy `GET` with `Last-Event-ID`: attaches the client to the stream the id
    /// names, at the position it names, re-opening the stream upstream (after the upstream id
    /// the proxy recorded, never one the client supplied) when the proxy's side of it has
    /// stopped. Ids that are malformed, name a stream this session does not have, point before
    /// the replay window, carry an upstream id part the stream did not issue at that position,
    /// or (for a stream no longer held here) name another position than the recorded one are
    /// refused with 400, logged and counted — never served from another stream or session.
    ///
    /// Rejections (with the request's id, which a `GET` has not): `400`/-32600 as above
    /// (`resumptions_refused`, a warning); a store that cannot answer for a stream not held
    /// here `503`/-32603; an upstream that refuses or cannot re-open a stream whose buffered
    /// events the client has all had `502`/-32603. Counts `resumptions` and `events_replayed`.
    pub(super) async fn resume(
        self: &Arc<Self>,
        session: &Arc<Session>,
        last_event_id: &HeaderValue,
        request: &http::request::Parts,
        upstream: &Upstream,
    ) -> Result<Response, Reject> {
        let stats = &self.stats;
        let refuse = |reason: String| {
            ProxyStats::incr(&stats.resumptions_refused);
            tracing::warn!(
                session = %session.id(),
                last_event_id = ?last_event_id,
                reason = %reason,
                "refused a stream resumption",
            );
            Reject::LastEventId(reason)
        };
        let id = last_event_id
            .to_str()
            .ok()
            .and_then(ClientEventId::parse)
            .ok_or_else(|| refuse("Last-Event-ID is not an event id this proxy issued".into()))?;
        // The reader attaches after `at`: the client's seq, or for a restored stream the
        // recorded last seq (what lies between cannot be replayed by anyone).
        let (tracker, at) = match session.stream(id.stream) {
            // An upstream id part must be the one the stream issued at that position.
            Some(tracker) if id.upstream_id.is_some() && tracker.issued(&id) == Some(false) => {
                return Err(refuse(
                    "Last-Event-ID is not an event id this stream issued".into(),
                ));
            }
            // Restored here earlier: a position the restore accepted attaches where it did.
            Some(tracker) => {
                let at = tracker.restored_position(&id).unwrap_or(id.seq);
                (tracker, at)
            }
            // Not held here: persisted under this session (before a restart, or by another
            // replica)? Then it resumes from the upstream after the recorded upstream id, if
            // the client is at the recorded position; otherwise it is refused.
            None => match self
                .manager
                .restore_stream(session, id.stream, id.seq, id.upstream_id)
                .await
            {
                Ok(restored) => restored,
                Err(StreamRestoreError::Store(e)) => {
                    return Err(Reject::StoreUnavailable(e.into()));
                }
                Err(StreamRestoreError::Unknown) => {
                    return Err(refuse(format!(
                        "stream {:?} is unknown in this session",
                        id.stream
                    )));
                }
                Err(StreamRestoreError::NotRecorded { recorded_seq }) => {
                    tracing::debug!(
                        session = %session.id(),
                        stream = id.stream,
                        seq = id.seq,
                        recorded_seq,
                        "a stream not held here was resumed at another position than the one \
                         recorded; its events in between cannot be served exactly once",
                    );
                    return Err(refuse(
                        "Last-Event-ID is not the recorded position of a stream no longer held"
                            .into(),
                    ));
                }
            },
        };

        let mut resume_headers = HeaderMap::new();
        self.upstream_headers(request, &mut resume_headers);
        if self.route().chain().is_some() {
            // A re-opened stream may be read by the interceptors: uncompressed.
            resume_headers.remove(http::header::ACCEPT_ENCODING);
        }
        headers::own_values(&mut resume_headers);
        // A stream whose pump stopped is re-opened upstream from its last upstream id.
        let mut reopened = None;
        if matches!(
            tracker.upstream(),
            UpstreamState::Failed | UpstreamState::Stopped
        ) && let Some(last) = tracker.last_upstream_id()
        {
            match pump::open_resumption(upstream, session, &resume_headers, &last).await {
                Ok(body) => reopened = Some(body),
                Err(pump::Resumption::Refused(status)) if tracker.last_seq() == at => {
                    return Err(Reject::ResumeFailed(format!(
                        "the upstream refused to resume the stream ({status})"
                    )));
                }
                Err(pump::Resumption::Unavailable(err)) if tracker.last_seq() == at => {
                    return Err(Reject::ResumeFailed(err));
                }
                // Events are still buffered for the client: serve them, then end.
                Err(_) => {}
            }
        }
        let reader = tracker
            .attach(Some(at))
            .map_err(|e| refuse(e.to_string()))?;
        self.manager.stream_changed(&tracker);
        // This reader drives the pump: a re-opened one, or the one the replaced reader drove
        // (which may never be polled again: its client may have stopped reading).
        let pump = reopened
            .and_then(|body| {
                pump::start(
                    pump::PumpContext {
                        streams: self.streams.clone(),
                        session: session.clone(),
                        tracker: tracker.clone(),
                        upstream: upstream.clone(),
                        resume_headers,
                        request_id: None,
                        // The stream's request is not known here: its answers are judged by
                        // their shape.
                        filter: crate::proxy::intercept::ServerFilter::new(
                            self.route().chain(),
                            crate::proxy::intercept::Exchange::resumed(
                                crate::protocol::era::Era::Legacy,
                            ),
                        ),
                    },
                    body,
                    reader,
                )
            })
            .or_else(|| pump::adopt(&tracker, &self.streams, reader));
        ProxyStats::incr(&stats.resumptions);
        let replayed = tracker.last_seq().saturating_sub(at);
        self.manager.count_replayed(replayed);
        tracing::info!(
            session = %session.id(),
            stream = %tracker.stream(),
            after_seq = at,
            replayed,
            "client resumed a stream",
        );
        let mut response = Response::new(pump::reader_body(
            tracker,
            reader,
            pump,
            self.streams.clone(),
        ));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        sse_headers(response.headers_mut());
        Ok(response)
    }
}
