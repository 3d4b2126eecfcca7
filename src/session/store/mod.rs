//! The SessionStore: where session records and the last upstream event id of every stream are
//! persisted, so a restarted proxy or another replica can serve a session and resume a stream
//! from the upstream (DESIGN.md, "How a legacy session flows through the proxy", step 6).
//!
//! Only the PersistenceWorker writes to it, in batches. The data plane reads it on two cold
//! paths only: an `Mcp-Session-Id` the process does not hold, and a `Last-Event-ID` naming a
//! stream it does not hold. Backends: [`MemoryStore`] (embedded default) and [`RedisStore`]
//! (restarts and replicas); [`open`] builds the configured one.

mod error;
mod memory;
mod redis;
#[cfg(test)]
pub(crate) mod testing;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;

pub use self::{
    error::{StoreError, StoreErrorKind, StoreErrorSource},
    memory::MemoryStore,
    redis::RedisStore,
};

/// A persisted session: what a proxy needs to serve the session's next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The proxy's session id (the client's `Mcp-Session-Id`).
    pub session_id: String,
    /// The upstream server's session id.
    pub upstream_session_id: String,
    /// The upstream MCP endpoint URL (passwords masked): the endpoint of its route's pool the
    /// session is pinned to.
    pub upstream: String,
    /// The name of the route the session was created on (`[[routes]]`); empty in a record
    /// written before routes existed (then any route with its endpoint accepts it).
    pub route: String,
    /// The negotiated protocol version, e.g. `2025-11-25`.
    pub protocol_version: String,
    /// When the session was created (millisecond precision once stored).
    pub created: SystemTime,
    /// The latest client activity any writer reported. Stores keep the latest value they were
    /// given (it never moves back), stored at millisecond precision.
    pub last_activity: SystemTime,
}

/// The persisted position of one stream: the last upstream event id received on it, the proxy
/// sequence number of the event that carried it (the client's id for that event is
/// `<stream>:<seq>:<upstream id>`), and the stream's last sequence number (events after `seq`
/// came without an upstream id). A restored stream resumes upstream after this id, and only for
/// a client between `seq` and `last_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    /// The proxy session id the stream belongs to.
    pub session_id: String,
    /// The proxy's stream id (the first part of the client's event ids).
    pub stream_id: String,
    /// The proxy sequence number of the event that carried `upstream_event_id`; `None` in a
    /// record written before sequence numbers were persisted (the position is then known by
    /// its upstream id alone).
    pub seq: Option<u64>,
    /// The stream's last sequence number when written (≥ `seq`; the events after `seq` carried
    /// no upstream id); `None` where unknown (a record without it: taken as `seq`).
    pub last_seq: Option<u64>,
    /// The last upstream event id received on the stream.
    pub upstream_event_id: String,
}

/// One flush of the PersistenceWorker: applied in this order (session records, stream
/// positions, deletions), every entry written with the batch's TTL. Each operation is
/// idempotent, so a batch that failed half-way is simply written again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Session records to insert or replace.
    pub sessions: Vec<SessionRecord>,
    /// Latest positions of streams.
    pub positions: Vec<StreamPosition>,
    /// Sessions to delete, with every stream position recorded under them.
    pub deletes: Vec<String>,
}

impl WriteBatch {
    /// Entries in the batch.
    pub fn len(&self) -> usize {
        self.sessions.len() + self.positions.len() + self.deletes.len()
    }

    /// Whether the batch has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Async, batch-oriented persistence of sessions and stream positions. Every entry carries a
/// TTL, refreshed on each write, so abandoned state expires in the store by itself.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The backend's name for logs and metrics (`memory`, `redis`).
    fn backend(&self) -> &'static str;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Applies one batch (see [`WriteBatch`]); `ttl` is the lifetime of every key written.
    async fn write(&self, batch: &WriteBatch, ttl: Duration) -> Result<(), StoreError>;

    /// Reads session records by proxy session id; the answer has one entry per id, `None` where
    /// the store has none (never written, deleted, claimed or expired).
    async fn get_sessions(&self, ids: &[String]) -> Result<Vec<Option<SessionRecord>>, StoreError>;

    /// Reads stream positions by `(session id, stream id)`; one entry per key.
    async fn get_stream_positions(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<StreamPosition>>, StoreError>;

    /// Claims up to `limit` sessions whose last activity is before `idle_before`: removes them
    /// and their stream positions, and returns their records. Atomic per session: when several
    /// replicas claim at once, each session is returned to exactly one of them (which then ends
    /// it upstream).
    async fn claim_idle_sessions(
        &self,
        idle_before: SystemTime,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// Garbage met since the last call (wrong-typed keys deleted, malformed records skipped),
    /// and resets the count. The worker adds it to its `bad_records` metric. Default 0.
    fn take_repairs(&self) -> u64 {
        0
    }
}

/// Whether `id` can be an upstream SSE event id sent back as `Last-Event-ID`: 1 to
/// [`MAX_UPSTREAM_SESSION_ID_BYTES`] bytes, no control characters (SSE ids end at a line break).
pub fn is_upstream_event_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_UPSTREAM_SESSION_ID_BYTES && !id.chars().any(char::is_control)
}

/// Longest upstream session id (and event id) accepted from the store, in bytes.
pub const MAX_UPSTREAM_SESSION_ID_BYTES: usize = 1024;

/// Whether `id` can be an upstream `Mcp-Session-Id`: 1 to [`MAX_UPSTREAM_SESSION_ID_BYTES`]
/// visible ASCII characters (0x21–0x7E, 2025-06-18 `basic/transports`). What the store holds
/// is checked against this before the proxy sends it upstream.
pub fn is_upstream_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_UPSTREAM_SESSION_ID_BYTES
        && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Which backend holds sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// In the process: nothing to set up; survives neither a restart nor a second replica.
    #[default]
    Memory,
    /// A Redis server shared by every replica (restarts, several replicas).
    Redis,
}

/// Where sessions are persisted (`[store]` in the configuration file). Record TTLs are the
/// worker's (`WorkerConfig::record_ttl`), since it is the one writer.
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The backend. Default [`StoreBackend::Memory`].
    pub backend: StoreBackend,
    /// The Redis URL, `redis://[user:password@]host:port[/db]` (or `redis+unix:///path`);
    /// required for the Redis backend. It may carry a password: never log it unredacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Prefix of every Redis key, so several deployments can share one Redis (namespacing).
    /// Default `mcp-relay:`.
    pub key_prefix: String,
    /// Time allowed to connect to Redis, and for each answer. Default 2 s.
    #[serde(rename = "timeout_ms")]
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    pub timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            url: None,
            key_prefix: DEFAULT_KEY_PREFIX.into(),
            timeout: Duration::from_secs(2),
        }
    }
}

impl StoreConfig {
    /// Checks the settings without connecting: the Redis backend needs a URL Redis can use and
    /// a non-empty prefix. The error names the offending key (`store.url`, …).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.backend != StoreBackend::Redis {
            return Ok(());
        }
        let Some(url) = self.url.as_deref().filter(|u| !u.is_empty()) else {
            return Err(("store.url", "required when store.backend is redis".into()));
        };
        redis::check_url(url).map_err(|e| ("store.url", e))?;
        if self.key_prefix.is_empty() {
            return Err((
                "store.key_prefix",
                "must not be empty with the redis backend (it namespaces every key)".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(("store.timeout_ms", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// The default Redis key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "mcp-relay:";

/// Builds the configured store. The Redis store connects lazily (and reconnects by itself), so
/// this fails only on a configuration error (no URL, an unparsable URL, an empty prefix), never
/// because Redis is down: the data plane serves from memory meanwhile. Must be called inside a
/// tokio runtime.
pub fn open(config: &StoreConfig) -> Result<Arc<dyn SessionStore>, StoreError> {
    match config.backend {
        StoreBackend::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreBackend::Redis => Ok(Arc::new(RedisStore::open(config)?)),
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time `ms` milliseconds after the Unix epoch.
pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}
