//! The session core between the two planes: the [`SessionManager`] owns every live legacy
//! session and its streams' [`EventTracker`]s, mints ids, runs idle expiry and feeds the
//! [`PersistenceWorker`]. Both the data plane and the control plane hold it as one
//! `Arc<SessionManager>`.

pub mod ending;
pub mod events;
mod id;
pub mod stats;
pub mod store;
pub mod tracker;
pub mod worker;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::HeaderValue;
use parking_lot::{Mutex, RwLock};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use ending::UpstreamSessionEnder;
pub use events::{SessionChange, SessionChangeKind, SessionChanges};
pub use id::{RandomError, SessionId, StreamId};
pub use stats::{ProxyStats, ProxyStatsSnapshot};
pub use tracker::{
    Admission, AttachError, ClientEventId, EventTracker, LastEventIds, Read, StreamKind,
    TrackerLimits, UpstreamState,
};
pub use worker::{PersistenceHandle, PersistenceWorker, WorkerConfig, WorkerMetrics};

use store::SessionRecord;

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
    streams: Mutex<StreamTable>,
    ended: AtomicBool,
    /// Cancelled when the session ends or the daemon stops: the session's stream pumps stop.
    cancel: CancellationToken,
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

    fn touch(&self, now: SystemTime) {
        self.last_activity_ms.store(unix_ms(now), Ordering::Relaxed);
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

/// Settings of the session core.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// A session with no client request for this long expires. Default 30 min.
    pub idle_ttl: Duration,
    /// Bounds of every stream's tracker.
    pub tracker_limits: TrackerLimits,
    /// Closed streams kept listed per session (count). Default 16.
    pub closed_streams_kept: usize,
    /// How long a legacy stream keeps reading the upstream after its client went away, waiting
    /// for the client to resume. Default 30 s.
    pub linger: Duration,
    /// Upstream resumption attempts after a legacy stream broke (count). Default 6.
    pub reconnect_attempts: usize,
    /// First delay between upstream resumption attempts; doubles up to `reconnect_max_delay`.
    /// Default 100 ms.
    pub reconnect_min_delay: Duration,
    /// Longest delay between upstream resumption attempts. Default 2 s.
    pub reconnect_max_delay: Duration,
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
        }
    }
}

/// The one owner of live sessions. Lookups take a read lock on a map; nothing here awaits.
#[derive(Debug)]
pub struct SessionManager {
    sessions: RwLock<HashMap<SessionId, Arc<Session>>>,
    config: SessionConfig,
    persistence: PersistenceHandle,
    stats: ProxyStats,
    /// Parent of every session's token: cancelling it stops every stream pump.
    streams_cancel: CancellationToken,
    /// Session changes, for the control plane's watches.
    changes: SessionChanges,
    /// How a session is ended upstream; registered by the data plane.
    upstream_ender: OnceLock<Arc<dyn UpstreamSessionEnder>>,
    /// Every stream pump task, so shutdown can wait for them before the final flush.
    pumps: TaskTracker,
}

impl SessionManager {
    /// A manager that persists through `persistence`.
    pub fn new(config: SessionConfig, persistence: PersistenceHandle) -> Self {
        Self {
            sessions: RwLock::new(HashMap::new()),
            config,
            persistence,
            stats: ProxyStats::default(),
            streams_cancel: CancellationToken::new(),
            changes: SessionChanges::default(),
            upstream_ender: OnceLock::new(),
            pumps: TaskTracker::new(),
        }
    }

    /// Session changes (created, streams changed, ended), for watchers.
    pub fn changes(&self) -> &SessionChanges {
        &self.changes
    }

    /// Registers how sessions are ended upstream (the data plane's upstream client). The first
    /// registration wins.
    pub fn set_upstream_ender(&self, ender: Arc<dyn UpstreamSessionEnder>) {
        if self.upstream_ender.set(ender).is_err() {
            tracing::debug!("an upstream session ender is already registered");
        }
    }

    /// Ends `session` at its upstream with `DELETE`: the upstream's status, or why none came
    /// (also when no data plane registered an ender).
    pub async fn end_upstream(&self, session: &Session) -> Result<http::StatusCode, String> {
        let Some(ender) = self.upstream_ender.get() else {
            return Err("no upstream client is registered".to_owned());
        };
        ender.end_upstream_session(session).await
    }

    /// Stops every stream pump (daemon shutdown): legacy client streams end with a `retry`
    /// hint so clients resume elsewhere.
    pub fn stop_streams(&self) {
        self.streams_cancel.cancel();
    }

    /// Runs a stream pump on a task the manager tracks (see [`Self::streams_stopped`]).
    pub fn spawn_pump(&self, pump: impl std::future::Future<Output = ()> + Send + 'static) {
        self.pumps.spawn(pump);
    }

    /// Resolves once every pump has ended; call after [`Self::stop_streams`], before the
    /// persistence worker's final flush, so no event is admitted after it.
    pub async fn streams_stopped(&self) {
        self.pumps.close();
        self.pumps.wait().await;
    }

    /// The configuration of the session core.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The data plane's counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Records a new session for an upstream that assigned `upstream_session_id` on its
    /// `InitializeResult`, under a freshly minted proxy id.
    pub fn create_session(
        &self,
        upstream_session_id: HeaderValue,
        upstream: Arc<str>,
        protocol_version: &str,
    ) -> Result<Arc<Session>, RandomError> {
        let now = SystemTime::now();
        let session = Arc::new(Session {
            id: SessionId::mint()?,
            upstream_session_id,
            upstream,
            protocol_version: Mutex::new(protocol_version.into()),
            created: now,
            last_activity_ms: AtomicU64::new(unix_ms(now)),
            streams: Mutex::new(StreamTable::default()),
            ended: AtomicBool::new(false),
            cancel: self.streams_cancel.child_token(),
        });
        self.persistence.session_saved(session.record());
        self.sessions
            .write()
            .insert(session.id.clone(), session.clone());
        self.changes.publish(SessionChangeKind::Created, &session);
        Ok(session)
    }

    /// Looks up a live session by the client's `Mcp-Session-Id` and marks it active. When the
    /// client names a newer `MCP-Protocol-Version`, the session records it.
    pub fn resume(&self, id: &str, protocol_version: Option<&str>) -> Option<Arc<Session>> {
        let session = self.sessions.read().get(id).cloned()?;
        session.touch(SystemTime::now());
        if let Some(v) = protocol_version {
            let mut current = session.protocol_version.lock();
            if **current != *v {
                *current = v.into();
            }
        }
        Some(session)
    }

    /// Looks up a live session without touching it (for the control plane).
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.read().get(id).cloned()
    }

    /// Ends a session: it is removed, its streams are forgotten, and its record is deleted from
    /// the store. Returns the session if it was live.
    pub fn end_session(&self, id: &str) -> Option<Arc<Session>> {
        let session = self.sessions.write().remove(id)?;
        session.ended.store(true, Ordering::Release);
        session.cancel.cancel();
        *session.streams.lock() = StreamTable::default();
        self.persistence.session_removed(&session.id);
        self.changes.publish(SessionChangeKind::Ended, &session);
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
            self.changes.publish(SessionChangeKind::Updated, session);
        }
        Ok(tracker)
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
            session
                .streams
                .lock()
                .closed
                .retain(|id| id != tracker.stream());
            self.changes.publish(SessionChangeKind::Updated, &session);
        }
    }

    /// Ends and returns every session idle for longer than the configured TTL at `now`; the
    /// caller ends them upstream (best effort).
    pub fn expire_idle(&self, now: SystemTime) -> Vec<Arc<Session>> {
        let cutoff = unix_ms(now).saturating_sub(self.config.idle_ttl.as_millis() as u64);
        let idle: Vec<SessionId> = self
            .sessions
            .read()
            .values()
            .filter(|s| s.last_activity_ms.load(Ordering::Relaxed) < cutoff)
            .map(|s| s.id.clone())
            .collect();
        idle.iter()
            .filter_map(|id| self.end_session(id.as_str()))
            .collect()
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

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn idle_sessions_expire_and_active_ones_stay() {
        let m = manager(Duration::from_secs(60));
        let s = m
            .create_session(
                HeaderValue::from_static("u"),
                "http://u/mcp".into(),
                "2025-11-25",
            )
            .unwrap();
        assert!(m.expire_idle(SystemTime::now()).is_empty());
        let later = SystemTime::now() + Duration::from_secs(61);
        let expired = m.expire_idle(later);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].id(), s.id());
        assert!(m.is_empty());
    }
}
