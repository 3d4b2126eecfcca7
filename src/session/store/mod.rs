//! The SessionStore: where session records and the last upstream event id of every stream are
//! persisted, so a restarted proxy or another replica can resume a stream from the upstream.
//! Only the PersistenceWorker writes to it; every operation is a batch.

mod memory;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

pub use memory::MemoryStore;

/// A persisted session: what a proxy needs to serve the session's next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The proxy's session id (the client's `Mcp-Session-Id`).
    pub session_id: String,
    /// The upstream server's session id.
    pub upstream_session_id: String,
    /// The upstream MCP endpoint URL.
    pub upstream: String,
    /// The negotiated protocol version, e.g. `2025-11-25`.
    pub protocol_version: String,
    pub created: SystemTime,
    pub last_activity: SystemTime,
}

/// The persisted position of one stream: the last upstream event id received on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    pub session_id: String,
    pub stream_id: String,
    /// The last upstream event id received on the stream.
    pub upstream_event_id: String,
}

/// A store operation failed. The worker retries; the data plane never sees this.
#[derive(Debug, thiserror::Error)]
#[error("session store {backend}: {message}")]
pub struct StoreError {
    /// Which backend failed, e.g. `memory` or `redis`.
    pub backend: &'static str,
    pub message: String,
}

/// Async, batch-oriented persistence of sessions and stream positions. Every entry carries a TTL
/// (`ttl`), refreshed on each write, so abandoned state expires in the store by itself.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The backend's name for logs and metrics (`memory`, `redis`).
    fn backend(&self) -> &'static str;

    /// Writes (inserts or replaces) session records.
    async fn put_sessions(
        &self,
        records: &[SessionRecord],
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Reads session records by proxy session id; the answer has one entry per id, `None` where
    /// the store has none (never written, deleted or expired).
    async fn get_sessions(&self, ids: &[String]) -> Result<Vec<Option<SessionRecord>>, StoreError>;

    /// Deletes sessions and every stream position recorded under them.
    async fn delete_sessions(&self, ids: &[String]) -> Result<(), StoreError>;

    /// Writes the latest position of each stream.
    async fn put_stream_positions(
        &self,
        positions: &[StreamPosition],
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Reads stream positions by `(session id, stream id)`; one entry per key.
    async fn get_stream_positions(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<StreamPosition>>, StoreError>;
}
