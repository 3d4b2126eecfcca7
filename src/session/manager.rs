//! The session lifecycle: creating, resuming and ending sessions, the stream registry and idle
//! eviction ([`SessionManager`]'s state is declared in the parent module; restoring from the
//! store is `restore.rs`).

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use http::HeaderValue;
use tokio_util::sync::CancellationToken;

use crate::counters::incr_sampled;

use super::*;

impl SessionManager {
    /// A manager that persists through `persistence`.
    pub fn new(config: SessionConfig, persistence: PersistenceHandle) -> Self {
        persistence.set_idle_ttl(config.idle_ttl);
        Self {
            sessions: RwLock::new(HashMap::new()),
            config,
            persistence,
            stats: SessionStats::default(),
            streams_cancel: CancellationToken::new(),
            changes: SessionChanges::default(),
        }
    }

    /// Session changes (created, streams changed, ended), for watchers.
    pub fn changes(&self) -> &SessionChanges {
        &self.changes
    }

    /// Cancels every session's token (daemon shutdown): every stream pump sees it when next
    /// polled, and legacy client streams end with a `retry` hint so clients resume elsewhere.
    /// The data plane moves the pumps no reader polls to tasks of its own so they end now
    /// (the data plane's `Pumps::stop`).
    pub fn cancel_streams(&self) {
        self.streams_cancel.cancel();
    }

    /// The configuration of the session core.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The session core's counters.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// Counts `events` re-sent to a client from a stream's replay window (a resumption or a
    /// forced replay).
    pub fn count_replayed(&self, events: u64) {
        self.stats
            .events_replayed
            .fetch_add(events, Ordering::Relaxed);
    }

    /// Records a new session on route `route` (its name), pinned to the endpoint `upstream`
    /// (its URL, passwords masked) that assigned `upstream_session_id` on its
    /// `InitializeResult`, under a freshly minted proxy id. Errors: `session.max_sessions`
    /// sessions are live (counted and logged, see [`SessionManager::refuse_session`]), or no
    /// randomness for the id.
    pub fn create_session(
        &self,
        upstream_session_id: HeaderValue,
        route: Arc<str>,
        upstream: Arc<str>,
        protocol_version: &str,
    ) -> Result<Arc<Session>, CreateSessionError> {
        let now = SystemTime::now();
        let session = Arc::new(Session {
            id: SessionId::mint()?,
            upstream_session_id,
            upstream,
            route,
            protocol_version: Mutex::new(protocol_version.into()),
            created: now,
            last_activity_ms: AtomicU64::new(unix_ms(now)),
            persisted_activity_ms: AtomicU64::new(unix_ms(now)),
            streams: Mutex::new(StreamTable::default()),
            ended: AtomicBool::new(false),
            cancel: self.streams_cancel.child_token(),
            standalone: StandaloneGate::default(),
            bound_to: std::sync::OnceLock::new(),
        });
        {
            let mut sessions = self.sessions.write();
            if sessions.len() >= self.config.max_sessions {
                drop(sessions);
                return Err(self.refuse_session());
            }
            sessions.insert(session.id.clone(), session.clone());
        }
        self.persistence.session_saved(session.record());
        self.changes.publish(SessionChangeKind::Created, &session);
        Ok(session)
    }

    /// Whether `session.max_sessions` sessions are live (a new one would be refused).
    pub fn at_session_cap(&self) -> bool {
        self.sessions.read().len() >= self.config.max_sessions
    }

    /// Counts a refused session (`sessions_refused`), logs it (the first refusal, then at
    /// powers of two, so a flood does not flood the log) and returns the error to answer.
    pub fn refuse_session(&self) -> CreateSessionError {
        let max = self.config.max_sessions;
        if let Some(refused) = incr_sampled(&self.stats.sessions_refused) {
            tracing::warn!(
                max_sessions = max,
                refused_total = refused,
                "session limit reached (session.max_sessions); refusing initialize",
            );
        }
        CreateSessionError::TooMany { max }
    }

    /// Looks up a live session by the client's `Mcp-Session-Id` and marks it active. When the
    /// client names a newer `MCP-Protocol-Version`, the session records it. The store's copy
    /// of the record is refreshed at most once per [`activity_refresh`] (through the worker).
    pub fn resume(&self, id: &str, protocol_version: Option<&str>) -> Option<Arc<Session>> {
        self.resume_if(id, protocol_version, |_| {
            Ok::<_, std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {})
    }

    /// [`SessionManager::resume`] of a live session that `accept` takes; one it refuses (a
    /// session of another route) is left as it was, neither marked active nor given the
    /// protocol version, and its refusal returned.
    pub fn resume_if<E>(
        &self,
        id: &str,
        protocol_version: Option<&str>,
        accept: impl FnOnce(&Session) -> Result<(), E>,
    ) -> Result<Option<Arc<Session>>, E> {
        let Some(session) = self.sessions.read().get(id).cloned() else {
            return Ok(None);
        };
        accept(&session)?;
        let now = SystemTime::now();
        session.touch(now);
        let mut version_changed = false;
        if let Some(v) = protocol_version {
            let mut current = session.protocol_version.lock();
            if **current != *v {
                *current = v.into();
                version_changed = true;
            }
        }
        if session.activity_due(now, activity_refresh(self.config.idle_ttl)) || version_changed {
            self.persistence.session_saved(session.record());
        }
        Ok(Some(session))
    }

    /// Looks up a live session without touching it (for the control plane).
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.read().get(id).cloned()
    }

    /// Ends a session: it is removed, its streams are forgotten, and its record is deleted from
    /// the store. Returns the session if it was live.
    pub fn end_session(&self, id: &str) -> Option<Arc<Session>> {
        let session = self.forget(id)?;
        self.persistence.session_removed(&session.id);
        Some(session)
    }

    /// Every live session, in no particular order.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.read().values().cloned().collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.read().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates the tracker of a new SSE stream, registered under `session` when there is one
    /// (a modern-era or sessionless stream is tracked only by its relay).
    pub fn open_stream(
        &self,
        session: Option<&Arc<Session>>,
        kind: StreamKind,
    ) -> Result<Arc<EventTracker>, RandomError> {
        let tracker = Arc::new(EventTracker::new(
            session.map(|s| s.id.clone()),
            StreamId::mint()?,
            kind,
            self.config.tracker_limits,
        ));
        if let Some(session) = session {
            session
                .streams
                .lock()
                .by_id
                .insert(tracker.stream().clone(), tracker.clone());
            // Published by the caller once the opening client's reader is attached
            // ([`Self::stream_changed`]), so a watcher sees the stream with its client.
        }
        Ok(tracker)
    }

    /// Tells session watchers that a stream of a live session changed in a way its record
    /// shows — a client attached or left, its upstream side reconnecting or resumed: one
    /// `UPDATED` change of the session (`WatchSessions`).
    pub fn stream_changed(&self, tracker: &EventTracker) {
        if let Some(session) = tracker.session().and_then(|id| self.get(id.as_str())) {
            self.changes.publish(SessionChangeKind::Updated, &session);
        }
    }

    /// Notes that a stream's relay (or, for a legacy stream, its pump) ended; a closed stream
    /// that is resumed is simply used again. The stream stays listed under its session until more
    /// than `closed_streams_kept` streams have closed after it.
    pub fn close_stream(&self, tracker: &EventTracker) {
        let Some(session) = tracker.session().and_then(|id| self.get(id.as_str())) else {
            return;
        };
        {
            let mut table = session.streams.lock();
            if !table.by_id.contains_key(tracker.stream().as_str())
                || table.closed.contains(tracker.stream())
            {
                return;
            }
            table.closed.push_back(tracker.stream().clone());
            while table.closed.len() > self.config.closed_streams_kept {
                if let Some(old) = table.closed.pop_front() {
                    table.by_id.remove(&old);
                }
            }
        }
        self.changes.publish(SessionChangeKind::Updated, &session);
    }

    /// Notes that a closed stream was resumed, so it is no longer a candidate for eviction.
    pub fn reopen_stream(&self, tracker: &EventTracker) {
        if let Some(session) = tracker.session().and_then(|id| self.get(id.as_str())) {
            let reopened = {
                let closed = &mut session.streams.lock().closed;
                let before = closed.len();
                closed.retain(|id| id != tracker.stream());
                closed.len() != before
            };
            // A stream opening for the first time is published once its reader is attached.
            if reopened {
                self.changes.publish(SessionChangeKind::Updated, &session);
            }
        }
    }

    /// Ends and returns every session idle for longer than the configured TTL at `now`; the
    /// caller ends them upstream (best effort).
    ///
    /// The session store is the authority, since another replica may serve a session this one
    /// holds: a session idle *here* for longer than the TTL at `now` is only evicted from this
    /// process (its streams stop; its store record stays). `claimed` are the sessions no
    /// replica has seen active for the TTL, claimed from the store
    /// ([`expiry::claim_idle_sessions`]); those are ended here (if held) and returned, each to
    /// exactly one replica.
    pub fn expire_idle(&self, now: SystemTime, claimed: Vec<SessionRecord>) -> Vec<Arc<Session>> {
        let cutoff = unix_ms(now).saturating_sub(self.config.idle_ttl.as_millis() as u64);
        let idle: Vec<SessionId> = self
            .sessions
            .read()
            .values()
            .filter(|s| s.last_activity_ms.load(Ordering::Relaxed) < cutoff)
            .map(|s| s.id.clone())
            .collect();
        for id in &idle {
            self.evict(id.as_str());
        }
        claimed
            .into_iter()
            .filter(|record| self.claimed_record_is_sound(record))
            .filter_map(|record| {
                self.end_session(&record.session_id)
                    .or_else(|| Session::detached(record))
            })
            .collect()
    }

    /// Whether a record claimed from the store may be ended upstream: its id has the shape
    /// this proxy mints and its upstream session id is a well-formed `Mcp-Session-Id`.
    /// Anything else is garbage (never sent upstream): logged and counted in `bad_records`.
    /// The upstream URL is checked where the `DELETE` is sent.
    fn claimed_record_is_sound(&self, record: &SessionRecord) -> bool {
        let sound = is_session_id(&record.session_id)
            && store::is_upstream_session_id(&record.upstream_session_id);
        if !sound {
            self.persistence
                .metrics()
                .bad_records
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                session = %record.session_id.chars().take(64).collect::<String>(),
                "a claimed session record is malformed; not ended upstream",
            );
        }
        sound
    }

    /// Forgets a session in this process only (its store record stays, so it can be restored
    /// here or served by another replica): its streams stop. Returns it if it was held.
    pub fn evict(&self, id: &str) -> Option<Arc<Session>> {
        let session = self.forget(id)?;
        tracing::debug!(session = id, "idle session evicted from memory");
        Some(session)
    }

    /// Removes a live session from this process: it is marked ended, its streams stop and are
    /// forgotten, and watchers learn it ended. The store is the caller's business.
    fn forget(&self, id: &str) -> Option<Arc<Session>> {
        let session = self.sessions.write().remove(id)?;
        session.ended.store(true, Ordering::Release);
        session.cancel.cancel();
        *session.streams.lock() = StreamTable::default();
        self.changes.publish(SessionChangeKind::Ended, &session);
        Some(session)
    }

    /// The configured idle TTL.
    pub fn idle_ttl(&self) -> Duration {
        self.config.idle_ttl
    }

    /// The persistence handle trackers report to.
    pub fn persistence(&self) -> &PersistenceHandle {
        &self.persistence
    }
}
