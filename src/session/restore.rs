//! Restoring what this process does not hold from the session store: a session created before
//! a restart or by another replica, and a stream of it at the position a client's
//! `Last-Event-ID` names (the cross-session guard: only positions the store recorded under the
//! session).

use std::{sync::Arc, time::SystemTime};

use super::*;

impl SessionManager {
    /// Restores a session this process does not hold from the session store (it was created
    /// before a restart, or by another replica sharing the store), under the same proxy id, and
    /// marks it active. `Ok(None)` when the id is not one this proxy mints, the store has no
    /// record of it, its deletion is pending here, it was idle past the TTL (idle expiry ends
    /// it), or it belongs to another route than `route` or to no endpoint `endpoint` accepts.
    /// `endpoint` maps the record's endpoint URL to the one the route holds (`None`: not one of
    /// its endpoints). A record written before routes existed names no route: its endpoint
    /// decides. Errors: the store did not answer.
    pub async fn restore_session(
        &self,
        id: &str,
        protocol_version: Option<&str>,
        route: &str,
        endpoint: impl FnOnce(&str) -> Option<Arc<str>>,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        if !is_session_id(id) || self.persistence.is_deleting(id) {
            return Ok(None);
        }
        let record = self
            .persistence
            .store()
            .get_sessions(&[id.to_owned()])
            .await?
            .pop()
            .flatten();
        let Some(record) = record else {
            return Ok(None);
        };
        if !record.route.is_empty() && record.route != route {
            tracing::debug!(
                session = id,
                route,
                "a stored session belongs to another route; not restored",
            );
            return Ok(None);
        }
        let Some(upstream) = endpoint(&record.upstream) else {
            tracing::warn!(
                session = id,
                route,
                "a stored session belongs to an upstream this route does not have; not restored",
            );
            return Ok(None);
        };
        if record.last_activity + self.config.idle_ttl < SystemTime::now() {
            return Ok(None);
        }
        let Some(restored) =
            Session::from_record(&record, upstream, self.streams_cancel.child_token(), false)
        else {
            return Ok(None);
        };
        let restored = Arc::new(restored);
        let inserted = {
            // Checked again under the map's lock: the session may have ended meanwhile.
            let mut sessions = self.sessions.write();
            if self.persistence.is_deleting(id) {
                return Ok(None);
            }
            // Of concurrent restores, the first one in wins.
            let held = sessions
                .entry(restored.id.clone())
                .or_insert_with(|| restored.clone());
            Arc::ptr_eq(held, &restored)
        };
        if inserted {
            self.changes.publish(SessionChangeKind::Created, &restored);
        }
        Ok(self.resume(id, protocol_version))
    }

    /// Restores a stream of `session` that this process does not hold, if the session store
    /// has a position for it under this session (the cross-session guard: a stream id of
    /// another session is never found here) and the client's `Last-Event-ID` names that
    /// position: sequence number `seq` from the recorded one (the event that carried the last
    /// upstream id) to the stream's recorded last seq (the events after it came without an
    /// upstream id, so no one can replay them), and `upstream_id`, when given, equal to the
    /// recorded upstream id at the recorded seq. The stream resumes upstream after the
    /// recorded upstream id, never after one the client supplied (an upstream whose event ids
    /// are global would replay another session's events after it), and numbers its next event
    /// after the recorded last seq. A record written before sequence numbers were persisted
    /// names its position by the upstream id alone: the client's id must then carry that
    /// upstream id.
    ///
    /// Returns the tracker and the sequence number the client's reader attaches after (the
    /// recorded last seq, or `seq` for a record without one).
    ///
    /// Errors: [`StreamRestoreError::Unknown`] (unknown here and in the store),
    /// [`StreamRestoreError::NotRecorded`] (another position: what lies between cannot be
    /// served exactly once), [`StreamRestoreError::Store`] (the store did not answer).
    pub async fn restore_stream(
        &self,
        session: &Arc<Session>,
        stream: &str,
        seq: u64,
        upstream_id: Option<&str>,
    ) -> Result<(Arc<EventTracker>, u64), StreamRestoreError> {
        if !is_stream_id(stream) || seq > MAX_RESTORED_SEQ {
            return Err(StreamRestoreError::Unknown);
        }
        let key = (session.id.to_string(), stream.to_owned());
        let position = self
            .persistence
            .store()
            .get_stream_positions(std::slice::from_ref(&key))
            .await?
            .pop()
            .flatten();
        let Some(position) = position else {
            return Err(StreamRestoreError::Unknown);
        };
        let recorded = position.upstream_event_id.as_str();
        // (seq of the event that carried `recorded`, the stream's last seq)
        let named = match position.seq {
            Some(recorded_seq) => {
                // Store input: bounded like a client's seq (past it, nothing matches).
                let last = position
                    .last_seq
                    .unwrap_or(recorded_seq)
                    .max(recorded_seq)
                    .min(MAX_RESTORED_SEQ);
                let at_position = match upstream_id {
                    // Only the event at `recorded_seq` carried an upstream id.
                    Some(u) => seq == recorded_seq && u == recorded,
                    None => (recorded_seq..=last).contains(&seq),
                };
                at_position.then_some((recorded_seq, last))
            }
            None => (upstream_id == Some(recorded)).then_some((seq, seq)),
        };
        let Some((recorded_seq, last_seq)) = named else {
            return Err(StreamRestoreError::NotRecorded {
                recorded_seq: position.seq,
            });
        };
        let tracker = Arc::new(EventTracker::restored(
            session.id.clone(),
            StreamId::from(stream),
            self.config.tracker_limits,
            recorded_seq,
            recorded,
            last_seq,
            Some(recorded.into()),
        ));
        let tracker = {
            let mut table = session.streams.lock();
            if session.is_ended() {
                return Err(StreamRestoreError::Unknown);
            }
            // Of concurrent restores, the first one in wins.
            table
                .by_id
                .entry(tracker.stream().clone())
                .or_insert(tracker)
                .clone()
        };
        self.changes.publish(SessionChangeKind::Updated, session);
        Ok((tracker, last_seq))
    }
}

/// Why [`SessionManager::restore_stream`] restored no stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamRestoreError {
    /// The store has no position for the stream under this session (or the session ended).
    #[error("the stream is unknown in this session")]
    Unknown,
    /// The client's id names another position than the one recorded (`recorded_seq`: its
    /// sequence number; `None` for a record that has none).
    #[error("the event id is not the stream's recorded position")]
    NotRecorded {
        /// The recorded position's sequence number (`None`: the record has none).
        recorded_seq: Option<u64>,
    },
    /// The store did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The largest sequence number a restored stream starts at (ids are client input).
const MAX_RESTORED_SEQ: u64 = 1 << 53;
