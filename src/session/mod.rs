//! The session core between the two planes: the [`SessionManager`] owns every live legacy
//! session and its streams' [`EventTracker`]s, mints ids, runs idle expiry and feeds the
//! [`PersistenceWorker`]. Both the data plane and the control plane hold it as one
//! `Arc<SessionManager>`.

pub mod ending;
pub mod events;
pub mod expiry;
pub mod gate;
pub mod stats;
pub mod store;
pub mod tracker;
pub mod worker;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::HeaderValue;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::protocol::{Era, is_session_id, is_stream_id};
pub use crate::protocol::{RandomError, SessionId, StreamId};
pub use ending::{EndUpstreamError, UpstreamSessionEnder};
pub use events::{SessionChange, SessionChangeKind, SessionChanges};
pub use expiry::expiry_period;
pub use gate::{GateWait, StandaloneGate};
pub use stats::{SessionStats, SessionStatsSnapshot};
pub use tracker::{
    Admission, AttachError, EventTracker, LastEventIds, ParkedPump, Read, Recorded, StreamKind,
    TrackerLimits, UpstreamState,
};
pub use worker::{
    PersistenceHandle, PersistenceWorker, WorkerConfig, WorkerMetrics, WorkerSnapshot,
    activity_refresh,
};

use store::{SessionRecord, StoreError, unix_ms};

/// A legacy MCP session as the proxy holds it: the client knows it as `id`, the upstream as
/// `upstream_session_id`.
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    upstream_session_id: HeaderValue,
    upstream: Arc<str>,
    protocol_version: Mutex<Arc<str>>,
    created: SystemTime,
    /// Last client activity, milliseconds since the Unix epoch.
    last_activity_ms: AtomicU64,
    /// The last activity queued for the session store (ms since the Unix epoch): the record is
    /// written again once activity is [`activity_refresh`] newer, never once per request.
    persisted_activity_ms: AtomicU64,
    streams: Mutex<StreamTable>,
    ended: AtomicBool,
    /// Cancelled when the session ends or the daemon stops: the session's stream pumps stop.
    cancel: CancellationToken,
    /// Holds the session's requests after `notifications/initialized` until its standalone
    /// `GET` stream is established upstream (shared by every data-plane thread).
    standalone: StandaloneGate,
}

/// The streams of one session: the open ones, plus the most recently closed ones (bounded) so
/// operators can still query their last event ids.
#[derive(Debug, Default)]
struct StreamTable {
    by_id: HashMap<StreamId, Arc<EventTracker>>,
    closed: VecDeque<StreamId>,
}

impl Session {
    /// The proxy's session id (the client's `Mcp-Session-Id`).
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The upstream's session id, sent upstream as `Mcp-Session-Id` in place of the proxy's.
    pub fn upstream_session_id(&self) -> &HeaderValue {
        &self.upstream_session_id
    }

    /// The upstream MCP endpoint URL.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The negotiated protocol version, e.g. `2025-11-25`.
    pub fn protocol_version(&self) -> Arc<str> {
        self.protocol_version.lock().clone()
    }

    /// The session's protocol generation, from its negotiated version (always
    /// [`Era::Legacy`] today: a modern exchange makes no session; kept on the session so every
    /// plane reads it from one place).
    pub fn era(&self) -> Era {
        Era::of_version(&self.protocol_version.lock())
    }

    /// When the session was created.
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// The time of the last client request in the session.
    pub fn last_activity(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed))
    }

    /// The session's tracked streams, in no particular order.
    pub fn streams(&self) -> Vec<Arc<EventTracker>> {
        self.streams.lock().by_id.values().cloned().collect()
    }

    /// One tracked stream.
    pub fn stream(&self, id: &str) -> Option<Arc<EventTracker>> {
        self.streams.lock().by_id.get(id).cloned()
    }

    /// Whether the session has ended (deleted, expired or ended by the upstream).
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Fires when the session ends or the daemon stops its streams.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The gate ordering the session's requests after its standalone `GET` stream.
    pub fn standalone(&self) -> &StandaloneGate {
        &self.standalone
    }

    fn touch(&self, now: SystemTime) {
        self.last_activity_ms.store(unix_ms(now), Ordering::Relaxed);
    }

    /// Whether the activity at `now` is due for the store (and claims it, so of concurrent
    /// requests exactly one queues the record).
    fn activity_due(&self, now: SystemTime, refresh: Duration) -> bool {
        let now = unix_ms(now);
        let persisted = self.persisted_activity_ms.load(Ordering::Relaxed);
        now.saturating_sub(persisted) >= refresh.as_millis() as u64
            && self
                .persisted_activity_ms
                .compare_exchange(persisted, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// A session known only from a store record, already ended: what idle expiry needs to end
    /// it upstream. `None` if the record's upstream session id is not a header value.
    fn detached(record: SessionRecord) -> Option<Arc<Self>> {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let upstream = record.upstream.as_str().into();
        Self::from_record(&record, upstream, cancel, true).map(Arc::new)
    }

    /// A session rebuilt from its store record, reaching `upstream`, its streams stopped by
    /// `cancel`. `None` if the record's upstream session id is not a header value.
    fn from_record(
        record: &SessionRecord,
        upstream: Arc<str>,
        cancel: CancellationToken,
        ended: bool,
    ) -> Option<Self> {
        Some(Self {
            id: SessionId::from(record.session_id.as_str()),
            upstream_session_id: HeaderValue::from_str(&record.upstream_session_id).ok()?,
            upstream,
            protocol_version: Mutex::new(record.protocol_version.as_str().into()),
            created: record.created,
            last_activity_ms: AtomicU64::new(unix_ms(record.last_activity)),
            persisted_activity_ms: AtomicU64::new(unix_ms(record.last_activity)),
            streams: Mutex::new(StreamTable::default()),
            ended: AtomicBool::new(ended),
            cancel,
            standalone: StandaloneGate::default(),
        })
    }

    fn record(&self) -> SessionRecord {
        SessionRecord {
            session_id: self.id.to_string(),
            upstream_session_id: String::from_utf8_lossy(self.upstream_session_id.as_bytes())
                .into_owned(),
            upstream: self.upstream.to_string(),
            protocol_version: self.protocol_version().to_string(),
            created: self.created,
            last_activity: self.last_activity(),
        }
    }
}

/// Settings of the session core (`[session]` in the configuration file).
#[serde_with::serde_as]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// A session with no client request for this long expires. Default 30 min.
    #[serde(rename = "idle_ttl_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub idle_ttl: Duration,
    /// Closed streams kept listed per session (count). Default 16.
    pub closed_streams_kept: usize,
    /// How long a legacy stream keeps reading the upstream after its client went away, waiting
    /// for the client to resume. Default 30 s.
    #[serde(rename = "linger_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub linger: Duration,
    /// Upstream resumption attempts after a legacy stream broke (count). Default 6.
    pub reconnect_attempts: usize,
    /// First delay between upstream resumption attempts; doubles up to `reconnect_max_delay`.
    /// Default 100 ms.
    #[serde(rename = "reconnect_min_delay_ms")]
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    pub reconnect_min_delay: Duration,
    /// Longest delay between upstream resumption attempts. Default 2 s.
    #[serde(rename = "reconnect_max_delay_ms")]
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    pub reconnect_max_delay: Duration,
    /// Most live sessions; past it `initialize` gets `503` with a JSON-RPC error (counted in
    /// `mcp_relay_sessions_refused_total`, logged). Sessions restored from the store are not
    /// refused (they exist already). Default 100000.
    pub max_sessions: usize,
    /// Longest time a session's first request after `notifications/initialized` waits for
    /// the session's standalone `GET` stream to be established upstream (once per session; see
    /// [`StandaloneGate`]). Zero disables the wait. Default 100 ms.
    #[serde(rename = "standalone_stream_wait_ms")]
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    pub standalone_stream_wait: Duration,
    /// Bounds of every stream's tracker (the subtable `[session.tracker]`; declared last, so an
    /// unknown key's error lists the keys in the file's order).
    #[serde(rename = "tracker")]
    pub tracker_limits: TrackerLimits,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_ttl: Duration::from_secs(30 * 60),
            tracker_limits: TrackerLimits::default(),
            closed_streams_kept: 16,
            linger: Duration::from_secs(30),
            reconnect_attempts: 6,
            reconnect_min_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(2),
            max_sessions: 100_000,
            standalone_stream_wait: Duration::from_millis(100),
        }
    }
}

/// A session could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateSessionError {
    /// `session.max_sessions` sessions are live.
    #[error("{max} sessions are live (session.max_sessions)")]
    TooMany { max: usize },
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// The one owner of live sessions. Lookups take a read lock on a map; nothing here awaits.
#[derive(Debug)]
pub struct SessionManager {
    sessions: RwLock<HashMap<SessionId, Arc<Session>>>,
    config: SessionConfig,
    persistence: PersistenceHandle,
    stats: SessionStats,
    /// Parent of every session's token: cancelling it stops every stream pump.
    streams_cancel: CancellationToken,
    /// Session changes, for the control plane's watches.
    changes: SessionChanges,
}

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

    /// Records a new session for an upstream that assigned `upstream_session_id` on its
    /// `InitializeResult`, under a freshly minted proxy id. Errors: `session.max_sessions`
    /// sessions are live (counted and logged, see [`SessionManager::refuse_session`]), or no
    /// randomness for the id.
    pub fn create_session(
        &self,
        upstream_session_id: HeaderValue,
        upstream: Arc<str>,
        protocol_version: &str,
    ) -> Result<Arc<Session>, CreateSessionError> {
        let now = SystemTime::now();
        let session = Arc::new(Session {
            id: SessionId::mint()?,
            upstream_session_id,
            upstream,
            protocol_version: Mutex::new(protocol_version.into()),
            created: now,
            last_activity_ms: AtomicU64::new(unix_ms(now)),
            persisted_activity_ms: AtomicU64::new(unix_ms(now)),
            streams: Mutex::new(StreamTable::default()),
            ended: AtomicBool::new(false),
            cancel: self.streams_cancel.child_token(),
            standalone: StandaloneGate::default(),
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
        let refused = self.stats.sessions_refused.fetch_add(1, Ordering::Relaxed) + 1;
        if refused.is_power_of_two() {
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
        let session = self.sessions.read().get(id).cloned()?;
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
        Some(session)
    }

    /// Restores a session this process does not hold from the session store (it was created
    /// before a restart, or by another replica sharing the store), under the same proxy id, and
    /// marks it active. `Ok(None)` when the id is not one this proxy mints, the store has no
    /// record of it, its deletion is pending here, it was idle past the TTL (idle expiry ends
    /// it), or it belongs to another upstream than `upstream`. Errors: the store did not answer.
    pub async fn restore_session(
        &self,
        id: &str,
        protocol_version: Option<&str>,
        upstream: &Arc<str>,
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
        if record.upstream != **upstream {
            tracing::warn!(
                session = id,
                "a stored session belongs to another upstream; not restored",
            );
            return Ok(None);
        }
        if record.last_activity + self.config.idle_ttl < SystemTime::now() {
            return Ok(None);
        }
        let Some(restored) = Session::from_record(
            &record,
            upstream.clone(),
            self.streams_cancel.child_token(),
            false,
        ) else {
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

/// Why [`SessionManager::restore_stream`] restored no stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamRestoreError {
    /// The store has no position for the stream under this session (or the session ended).
    #[error("the stream is unknown in this session")]
    Unknown,
    /// The client's id names another position than the one recorded (`recorded_seq`: its
    /// sequence number; `None` for a record that has none).
    #[error("the event id is not the stream's recorded position")]
    NotRecorded { recorded_seq: Option<u64> },
    /// The store did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The largest sequence number a restored stream starts at (ids are client input).
const MAX_RESTORED_SEQ: u64 = 1 << 53;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ClientEventId;
    use crate::session::store::MemoryStore;

    fn manager(idle_ttl: Duration) -> SessionManager {
        let (_worker, handle) =
            PersistenceWorker::new(Arc::new(MemoryStore::new()), WorkerConfig::default());
        SessionManager::new(
            SessionConfig {
                idle_ttl,
                ..SessionConfig::default()
            },
            handle,
        )
    }

    #[test]
    fn sessions_map_proxy_ids_to_upstream_ids_and_end_once() {
        let m = manager(Duration::from_secs(60));
        let s = m
            .create_session(
                HeaderValue::from_static("UP-1"),
                "http://u/mcp".into(),
                "2025-06-18",
            )
            .unwrap();
        assert_ne!(s.id().as_str(), "UP-1");
        let again = m.resume(s.id().as_str(), Some("2025-11-25")).unwrap();
        assert_eq!(again.upstream_session_id(), "UP-1");
        assert_eq!(&*again.protocol_version(), "2025-11-25");
        assert!(m.resume("nope", None).is_none());
        assert!(m.end_session(s.id().as_str()).is_some());
        assert!(s.is_ended());
        assert!(m.end_session(s.id().as_str()).is_none());
        assert!(m.resume(s.id().as_str(), None).is_none());
    }

    #[test]
    fn closed_streams_stay_listed_until_evicted_by_later_closes() {
        let m = manager(Duration::from_secs(60));
        let m = SessionManager {
            config: SessionConfig {
                closed_streams_kept: 1,
                ..m.config
            },
            ..m
        };
        let s = m
            .create_session(
                HeaderValue::from_static("u"),
                "http://u/mcp".into(),
                "2025-11-25",
            )
            .unwrap();
        let first = m.open_stream(Some(&s), StreamKind::Get).unwrap();
        let second = m.open_stream(Some(&s), StreamKind::Post).unwrap();
        assert!(s.stream(first.stream().as_str()).is_some());
        m.close_stream(&first);
        assert!(
            s.stream(first.stream().as_str()).is_some(),
            "kept after close"
        );
        m.close_stream(&second);
        assert!(
            s.stream(first.stream().as_str()).is_none(),
            "evicted by a later close"
        );
        assert!(s.stream(second.stream().as_str()).is_some());
    }

    #[test]
    fn idle_sessions_are_evicted_and_active_ones_stay() {
        let m = manager(Duration::from_secs(60));
        let s = m
            .create_session(
                HeaderValue::from_static("u"),
                "http://u/mcp".into(),
                "2025-11-25",
            )
            .unwrap();
        assert!(m.expire_idle(SystemTime::now(), Vec::new()).is_empty());
        assert_eq!(m.len(), 1);
        let later = SystemTime::now() + Duration::from_secs(61);
        // Evicted here; ended (and returned for DELETE upstream) once the store says so.
        assert!(m.expire_idle(later, Vec::new()).is_empty());
        assert!(m.is_empty());
        assert!(s.is_ended());
    }

    #[tokio::test]
    async fn sessions_idle_in_the_store_are_ended_once_and_returned_for_delete_upstream() {
        let store = Arc::new(MemoryStore::new());
        let (worker, handle) = PersistenceWorker::new(store, WorkerConfig::default());
        let m = SessionManager::new(
            SessionConfig {
                idle_ttl: Duration::from_millis(100),
                ..SessionConfig::default()
            },
            handle,
        );
        let s = m
            .create_session(
                HeaderValue::from_static("UP"),
                "http://u/mcp".into(),
                "2025-11-25",
            )
            .unwrap();
        worker.flush().await.unwrap();
        // Idle past the TTL (100 ms) and the activity refresh lag (50 ms).
        let later = SystemTime::now() + Duration::from_millis(200);
        let claim = || expiry::claim_idle_sessions(m.persistence(), m.idle_ttl(), later);
        // Evicted here first: the store still has it until expiry claims it.
        assert!(m.expire_idle(later, Vec::new()).is_empty());
        assert!(m.is_empty());
        let expired = m.expire_idle(later, claim().await);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].id(), s.id());
        assert_eq!(expired[0].upstream_session_id(), "UP");
        assert!(expired[0].is_ended());
        assert!(
            m.expire_idle(later, claim().await).is_empty(),
            "claimed once"
        );
    }

    #[tokio::test]
    async fn unknown_sessions_and_streams_are_restored_from_the_store_only_under_their_session() {
        let store = Arc::new(MemoryStore::new());
        let (worker_a, handle_a) = PersistenceWorker::new(store.clone(), WorkerConfig::default());
        let a = SessionManager::new(SessionConfig::default(), handle_a);
        let upstream: Arc<str> = "http://u/mcp".into();
        let s = a
            .create_session(
                HeaderValue::from_static("UP"),
                upstream.clone(),
                "2025-11-25",
            )
            .unwrap();
        let other = a
            .create_session(
                HeaderValue::from_static("UP2"),
                upstream.clone(),
                "2025-11-25",
            )
            .unwrap();
        let t = a.open_stream(Some(&s), StreamKind::Post).unwrap();
        t.admit(Some("e1"));
        a.persistence().stream_advanced(&t);
        worker_a.flush().await.unwrap();

        let (_worker_b, handle_b) = PersistenceWorker::new(store, WorkerConfig::default());
        let b = SessionManager::new(SessionConfig::default(), handle_b);
        assert!(b.resume(s.id().as_str(), None).is_none());
        let restored = b
            .restore_session(s.id().as_str(), None, &upstream)
            .await
            .unwrap()
            .expect("restored");
        assert_eq!(restored.id(), s.id());
        assert_eq!(restored.upstream_session_id(), "UP");
        assert!(
            b.resume(s.id().as_str(), None).is_some(),
            "held from now on"
        );
        let other_upstream: Arc<str> = "http://elsewhere/mcp".into();
        assert!(
            b.restore_session(other.id().as_str(), None, &other_upstream)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            b.restore_session("nope", None, &upstream)
                .await
                .unwrap()
                .is_none()
        );

        let stream = t.stream().as_str();
        // Another position, or another upstream id at the recorded one: refused (the client's
        // upstream id is never trusted).
        for (seq, upstream_id) in [(2, None), (0, Some("e1")), (1, Some("e-other"))] {
            assert!(
                matches!(
                    b.restore_stream(&restored, stream, seq, upstream_id).await,
                    Err(StreamRestoreError::NotRecorded {
                        recorded_seq: Some(1)
                    })
                ),
                "{seq} {upstream_id:?}"
            );
        }
        let (tracker, at) = b
            .restore_stream(&restored, stream, 1, Some("e1"))
            .await
            .expect("stream restored");
        assert_eq!(at, 1);
        assert_eq!(tracker.last_upstream_id().as_deref(), Some("e1"));
        assert_eq!(tracker.last_seq(), 1);
        assert_eq!(tracker.upstream(), UpstreamState::Stopped);
        // The same stream id under another session is refused: the cross-session guard.
        let other_here = b
            .restore_session(other.id().as_str(), None, &upstream)
            .await
            .unwrap()
            .expect("restored");
        assert!(matches!(
            b.restore_stream(&other_here, stream, 1, None).await,
            Err(StreamRestoreError::Unknown)
        ));
    }

    /// A position written before sequence numbers were persisted names its position by the
    /// upstream id alone: a client id carrying that upstream id is served (after it), any other
    /// is refused.
    #[tokio::test]
    async fn positions_of_the_old_format_are_served_only_to_their_upstream_id() {
        use store::{SessionStore as _, StreamPosition, WriteBatch};
        let store = Arc::new(MemoryStore::new());
        let (_worker, handle) = PersistenceWorker::new(store.clone(), WorkerConfig::default());
        let m = SessionManager::new(SessionConfig::default(), handle);
        let s = m
            .create_session(
                HeaderValue::from_static("UP"),
                "http://u/mcp".into(),
                "2025-11-25",
            )
            .unwrap();
        let stream = "00000000000000ab";
        let batch = WriteBatch {
            positions: vec![StreamPosition {
                session_id: s.id().to_string(),
                stream_id: stream.into(),
                seq: None,
                last_seq: None,
                upstream_event_id: "e7".into(),
            }],
            ..WriteBatch::default()
        };
        store.write(&batch, Duration::from_secs(60)).await.unwrap();
        for upstream_id in [None, Some("e6")] {
            assert!(matches!(
                m.restore_stream(&s, stream, 7, upstream_id).await,
                Err(StreamRestoreError::NotRecorded { recorded_seq: None })
            ));
        }
        let (tracker, at) = m
            .restore_stream(&s, stream, 7, Some("e7"))
            .await
            .expect("restored");
        assert_eq!(at, 7);
        assert_eq!(tracker.last_upstream_position(), Some((7, "e7".into())));
    }

    /// Issue 11 (M1): the events after the last one that carried an upstream id came without
    /// one. A client anywhere from that event to the stream's last is served: the stream
    /// resumes upstream after the recorded id and numbers its next event after the last seq.
    /// An upstream part anywhere but at the recorded seq, or a position outside, is refused.
    #[tokio::test]
    async fn a_client_up_to_the_recorded_last_seq_is_served() {
        use store::{SessionStore as _, StreamPosition, WriteBatch};
        let store = Arc::new(MemoryStore::new());
        let (_worker, handle) = PersistenceWorker::new(store.clone(), WorkerConfig::default());
        let m = SessionManager::new(SessionConfig::default(), handle);
        let s = m
            .create_session(
                HeaderValue::from_static("UP"),
                "http://u/mcp".into(),
                "2025-11-25",
            )
            .unwrap();
        let stream = "00000000000000cd";
        let batch = WriteBatch {
            positions: vec![StreamPosition {
                session_id: s.id().to_string(),
                stream_id: stream.into(),
                seq: Some(2),
                last_seq: Some(4),
                upstream_event_id: "e2".into(),
            }],
            ..WriteBatch::default()
        };
        store.write(&batch, Duration::from_secs(60)).await.unwrap();
        for (seq, upstream_id) in [
            (1, None),
            (5, None),
            (3, Some("e2")),
            (4, Some("e2")),
            (2, Some("e1")),
        ] {
            assert!(
                matches!(
                    m.restore_stream(&s, stream, seq, upstream_id).await,
                    Err(StreamRestoreError::NotRecorded {
                        recorded_seq: Some(2)
                    })
                ),
                "{seq} {upstream_id:?}"
            );
        }
        for (seq, upstream_id) in [(2, Some("e2")), (2, None), (3, None), (4, None)] {
            let (tracker, at) = m
                .restore_stream(&s, stream, seq, upstream_id)
                .await
                .expect("restored");
            assert_eq!(at, 4, "{seq} {upstream_id:?}");
            assert_eq!(tracker.last_seq(), 4);
            assert_eq!(tracker.last_upstream_position(), Some((2, "e2".into())));
            // Held from now on: the same ids attach where the restore did, no others.
            let client_id = |seq, upstream_id| ClientEventId {
                stream,
                seq,
                upstream_id,
            };
            for (seq, upstream_id) in [(2, Some("e2")), (2, None), (3, None), (4, None)] {
                assert_eq!(
                    tracker.restored_position(&client_id(seq, upstream_id)),
                    Some(4)
                );
            }
            for (seq, upstream_id) in [(1, None), (5, None), (3, Some("e2")), (2, Some("e1"))] {
                assert_eq!(
                    tracker.restored_position(&client_id(seq, upstream_id)),
                    None
                );
            }
            assert!(matches!(tracker.admit(None), Admission::Forward { seq: 5 }));
            // Forget it again, as if it had left memory.
            *s.streams.lock() = StreamTable::default();
        }
    }
}
