//! The session core between the two planes: the [`SessionManager`] owns every live legacy
//! session and its streams' [`EventTracker`]s, mints ids, runs idle expiry and feeds the
//! [`PersistenceWorker`]. Both the data plane and the control plane hold it as one
//! `Arc<SessionManager>`.
//!
//! This module declares the state (a [`Session`], the manager's maps, the settings); its
//! behaviour is in `manager.rs` (create, resume, end, streams, idle eviction) and
//! `restore.rs` (rebuilding a session or a stream from the store).

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
    route: Arc<str>,
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
    /// On a resource-server route: the issuer and subject of the token that created it
    /// (`Principal::binding`); a request with another subject's token does not find it.
    bound_to: std::sync::OnceLock<Box<str>>,
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

    /// The upstream MCP endpoint URL (passwords masked): the endpoint of its route's pool the
    /// session is pinned to.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The name of the route the session was created on; empty for a session restored from a
    /// record written before routes existed.
    pub fn route(&self) -> &str {
        &self.route
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
            route: record.route.as_str().into(),
            protocol_version: Mutex::new(record.protocol_version.as_str().into()),
            created: record.created,
            last_activity_ms: AtomicU64::new(unix_ms(record.last_activity)),
            persisted_activity_ms: AtomicU64::new(unix_ms(record.last_activity)),
            streams: Mutex::new(StreamTable::default()),
            ended: AtomicBool::new(ended),
            cancel,
            standalone: StandaloneGate::default(),
            bound_to: std::sync::OnceLock::new(),
        })
    }

    /// Binds the session to `who` (a token's issuer and subject), once: later calls change
    /// nothing. Not persisted: a session restored from the store is bound to nobody, which a
    /// resource-server route refuses (`404`, the client initializes again).
    pub fn bind_to(&self, who: &str) {
        let _ = self.bound_to.set(who.into());
    }

    /// Who the session is bound to ([`Session::bind_to`]), if anyone.
    pub fn bound_to(&self) -> Option<&str> {
        self.bound_to.get().map(|b| &**b)
    }

    fn record(&self) -> SessionRecord {
        SessionRecord {
            session_id: self.id.to_string(),
            upstream_session_id: String::from_utf8_lossy(self.upstream_session_id.as_bytes())
                .into_owned(),
            upstream: self.upstream.to_string(),
            route: self.route.to_string(),
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
    TooMany {
        /// `session.max_sessions`.
        max: usize,
    },
    /// The OS gave no randomness for the session id.
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

mod manager;
mod restore;
pub use restore::StreamRestoreError;

#[cfg(test)]
mod tests;
