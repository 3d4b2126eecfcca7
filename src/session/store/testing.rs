//! Store doubles for unit tests.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;

use super::{
    MemoryStore, SessionRecord, SessionStore, StoreError, StoreErrorKind, StreamPosition,
    WriteBatch,
};

/// A [`MemoryStore`] that fails every operation as unreachable while `down` is set.
#[derive(Debug, Default)]
pub(crate) struct FlakyStore {
    /// While set, every operation fails.
    pub(crate) down: AtomicBool,
    /// Where operations go while the store is up.
    pub(crate) inner: MemoryStore,
}

impl FlakyStore {
    /// Sets whether the store fails.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(StoreError::new(
                "flaky",
                "an operation",
                StoreErrorKind::Unreachable,
                "down",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl SessionStore for FlakyStore {
    fn backend(&self) -> &'static str {
        "flaky"
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()
    }
    async fn write(&self, b: &WriteBatch, t: Duration) -> Result<(), StoreError> {
        self.check()?;
        self.inner.write(b, t).await
    }
    async fn get_sessions(&self, ids: &[String]) -> Result<Vec<Option<SessionRecord>>, StoreError> {
        self.check()?;
        self.inner.get_sessions(ids).await
    }
    async fn get_stream_positions(
        &self,
        k: &[(String, String)],
    ) -> Result<Vec<Option<StreamPosition>>, StoreError> {
        self.check()?;
        self.inner.get_stream_positions(k).await
    }
    async fn claim_idle_sessions(
        &self,
        before: SystemTime,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.check()?;
        self.inner.claim_idle_sessions(before, limit).await
    }
}

/// A record of session `id` (upstream id `up-<id>`, upstream `http://127.0.0.1:1/mcp`), created
/// and last active at `last_activity`.
pub(crate) fn record(id: &str, last_activity: SystemTime) -> SessionRecord {
    SessionRecord {
        session_id: id.into(),
        upstream_session_id: format!("up-{id}"),
        upstream: "http://127.0.0.1:1/mcp".into(),
        route: "/mcp".into(),
        protocol_version: "2025-11-25".into(),
        created: last_activity,
        last_activity,
    }
}
