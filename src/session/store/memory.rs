//! The embedded in-memory store: the default, with nothing to set up. It survives neither a
//! restart nor a second replica; use the Redis store for those.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{SessionRecord, SessionStore, StoreError, StreamPosition};

/// An in-process store. Expired entries are dropped on access and on every write batch.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, (SessionRecord, Instant)>,
    /// session id → stream id → (position, expiry)
    streams: HashMap<String, HashMap<String, (StreamPosition, Instant)>>,
}

impl Inner {
    fn purge_expired(&mut self, now: Instant) {
        self.sessions.retain(|_, (_, exp)| *exp > now);
        self.streams.retain(|_, m| {
            m.retain(|_, (_, exp)| *exp > now);
            !m.is_empty()
        });
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn put_sessions(
        &self,
        records: &[SessionRecord],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.purge_expired(now);
        for r in records {
            inner
                .sessions
                .insert(r.session_id.clone(), (r.clone(), now + ttl));
        }
        Ok(())
    }

    async fn get_sessions(&self, ids: &[String]) -> Result<Vec<Option<SessionRecord>>, StoreError> {
        let now = Instant::now();
        let inner = self.inner.lock();
        Ok(ids
            .iter()
            .map(|id| {
                inner
                    .sessions
                    .get(id)
                    .filter(|(_, exp)| *exp > now)
                    .map(|(r, _)| r.clone())
            })
            .collect())
    }

    async fn delete_sessions(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        for id in ids {
            inner.sessions.remove(id);
            inner.streams.remove(id);
        }
        Ok(())
    }

    async fn put_stream_positions(
        &self,
        positions: &[StreamPosition],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.purge_expired(now);
        for p in positions {
            inner
                .streams
                .entry(p.session_id.clone())
                .or_default()
                .insert(p.stream_id.clone(), (p.clone(), now + ttl));
        }
        Ok(())
    }

    async fn get_stream_positions(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<StreamPosition>>, StoreError> {
        let now = Instant::now();
        let inner = self.inner.lock();
        Ok(keys
            .iter()
            .map(|(session, stream)| {
                inner
                    .streams
                    .get(session)
                    .and_then(|m| m.get(stream))
                    .filter(|(_, exp)| *exp > now)
                    .map(|(p, _)| p.clone())
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn record(id: &str) -> SessionRecord {
        SessionRecord {
            session_id: id.into(),
            upstream_session_id: format!("up-{id}"),
            upstream: "http://127.0.0.1:1/mcp".into(),
            protocol_version: "2025-11-25".into(),
            created: SystemTime::now(),
            last_activity: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn sessions_round_trip_and_delete_removes_their_streams() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(60);
        let a = record("a");
        store
            .put_sessions(&[a.clone(), record("b")], ttl)
            .await
            .unwrap();
        let pos = StreamPosition {
            session_id: "a".into(),
            stream_id: "s".into(),
            upstream_event_id: "42".into(),
        };
        store
            .put_stream_positions(std::slice::from_ref(&pos), ttl)
            .await
            .unwrap();
        let got = store
            .get_sessions(&["a".into(), "zz".into()])
            .await
            .unwrap();
        assert_eq!(got, vec![Some(a), None]);
        let key = [("a".to_string(), "s".to_string())];
        assert_eq!(
            store.get_stream_positions(&key).await.unwrap(),
            vec![Some(pos)]
        );
        store.delete_sessions(&["a".into()]).await.unwrap();
        assert_eq!(store.get_sessions(&["a".into()]).await.unwrap(), vec![None]);
        assert_eq!(store.get_stream_positions(&key).await.unwrap(), vec![None]);
    }

    #[tokio::test]
    async fn entries_expire_after_their_ttl() {
        let store = MemoryStore::new();
        store
            .put_sessions(&[record("a")], Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(store.get_sessions(&["a".into()]).await.unwrap(), vec![None]);
    }
}
