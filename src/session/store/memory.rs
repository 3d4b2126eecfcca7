//! The embedded in-memory store: the default, with nothing to set up. It survives neither a
//! restart nor a second replica; use the Redis store for those. It keeps the same contract as
//! Redis (TTLs, latest activity wins, atomic claims), so the daemon behaves alike on both.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use parking_lot::Mutex;
// TTLs run on tokio's clock (the monotonic clock, unless a test paused it).
use tokio::time::Instant;

use super::{SessionRecord, SessionStore, StoreError, StreamPosition, WriteBatch};

/// How often a write also sweeps expired entries out (a full scan).
const PURGE_PERIOD: Duration = Duration::from_secs(1);

/// An in-process store. Expired entries are invisible at once and dropped by the next write at
/// least `PURGE_PERIOD` (1 s) after the previous sweep.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    sessions: HashMap<String, (SessionRecord, Instant)>,
    /// session id → stream id → (position, expiry)
    streams: HashMap<String, HashMap<String, (StreamPosition, Instant)>>,
    last_purge: Instant,
}

impl Inner {
    fn purge_expired(&mut self, now: Instant) {
        if now.duration_since(self.last_purge) < PURGE_PERIOD {
            return;
        }
        self.last_purge = now;
        self.sessions.retain(|_, (_, exp)| *exp > now);
        self.streams.retain(|_, m| {
            m.retain(|_, (_, exp)| *exp > now);
            !m.is_empty()
        });
    }

    fn live_session(&self, id: &str, now: Instant) -> Option<&SessionRecord> {
        self.sessions
            .get(id)
            .filter(|(_, exp)| *exp > now)
            .map(|(r, _)| r)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                streams: HashMap::new(),
                last_purge: Instant::now(),
            }),
        }
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn write(&self, batch: &WriteBatch, ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let expiry = now + ttl;
        let mut inner = self.inner.lock();
        inner.purge_expired(now);
        for r in &batch.sessions {
            let mut record = r.clone();
            if let Some(old) = inner.live_session(&r.session_id, now) {
                record.last_activity = record.last_activity.max(old.last_activity);
            }
            inner
                .sessions
                .insert(r.session_id.clone(), (record, expiry));
        }
        for p in &batch.positions {
            inner
                .streams
                .entry(p.session_id.clone())
                .or_default()
                .insert(p.stream_id.clone(), (normalized(p), expiry));
        }
        for id in &batch.deletes {
            inner.sessions.remove(id);
            inner.streams.remove(id);
        }
        Ok(())
    }

    async fn get_sessions(&self, ids: &[String]) -> Result<Vec<Option<SessionRecord>>, StoreError> {
        let now = Instant::now();
        let inner = self.inner.lock();
        Ok(ids
            .iter()
            .map(|id| inner.live_session(id, now).cloned())
            .collect())
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
                    .map(|(position, _)| position.clone())
            })
            .collect())
    }

    async fn claim_idle_sessions(
        &self,
        idle_before: SystemTime,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let idle: Vec<String> = inner
            .sessions
            .iter()
            .filter(|(_, (r, exp))| *exp > now && r.last_activity < idle_before)
            .map(|(id, _)| id.clone())
            .take(limit)
            .collect();
        Ok(idle
            .iter()
            .filter_map(|id| {
                inner.streams.remove(id);
                inner.sessions.remove(id).map(|(r, _)| r)
            })
            .collect())
    }
}

/// `position` as the Redis store reads it back: a last seq at least `seq` (`seq` when
/// unknown), none without a seq.
fn normalized(position: &StreamPosition) -> StreamPosition {
    StreamPosition {
        last_seq: position
            .seq
            .map(|seq| position.last_seq.unwrap_or(seq).max(seq)),
        ..position.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::store::testing::record;

    fn position(session: &str, stream: &str, id: &str) -> StreamPosition {
        StreamPosition {
            session_id: session.into(),
            stream_id: stream.into(),
            seq: Some(3),
            last_seq: Some(3),
            upstream_event_id: id.into(),
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn sessions_round_trip_and_delete_removes_their_streams() {
        let store = MemoryStore::new();
        let now = SystemTime::now();
        let a = record("a", now);
        let batch = WriteBatch {
            sessions: vec![a.clone(), record("b", now)],
            positions: vec![position("a", "s", "42")],
            deletes: vec![],
        };
        store.write(&batch, TTL).await.unwrap();
        let got = store
            .get_sessions(&["a".into(), "zz".into()])
            .await
            .unwrap();
        assert_eq!(got, vec![Some(a), None]);
        let key = [("a".to_string(), "s".to_string())];
        assert_eq!(
            store.get_stream_positions(&key).await.unwrap(),
            vec![Some(position("a", "s", "42"))]
        );
        let delete = WriteBatch {
            deletes: vec!["a".into()],
            ..WriteBatch::default()
        };
        store.write(&delete, TTL).await.unwrap();
        assert_eq!(store.get_sessions(&["a".into()]).await.unwrap(), vec![None]);
        assert_eq!(store.get_stream_positions(&key).await.unwrap(), vec![None]);
    }

    #[tokio::test]
    async fn entries_expire_after_their_ttl() {
        let store = MemoryStore::new();
        let batch = WriteBatch {
            sessions: vec![record("a", SystemTime::now())],
            ..WriteBatch::default()
        };
        store.write(&batch, Duration::ZERO).await.unwrap();
        assert_eq!(store.get_sessions(&["a".into()]).await.unwrap(), vec![None]);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_live_for_their_ttl_are_then_invisible_and_purged_by_a_later_write() {
        let store = MemoryStore::new();
        let long_ago = SystemTime::UNIX_EPOCH;
        let batch = WriteBatch {
            sessions: vec![record("a", long_ago)],
            positions: vec![position("a", "s", "42")],
            ..WriteBatch::default()
        };
        store.write(&batch, TTL).await.unwrap();
        let key = [("a".to_string(), "s".to_string())];
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert!(store.get_sessions(&["a".into()]).await.unwrap()[0].is_some());
        assert!(store.get_stream_positions(&key).await.unwrap()[0].is_some());

        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(store.get_sessions(&["a".into()]).await.unwrap(), vec![None]);
        assert_eq!(store.get_stream_positions(&key).await.unwrap(), vec![None]);
        let now = SystemTime::now();
        assert!(
            store.claim_idle_sessions(now, 10).await.unwrap().is_empty(),
            "an expired session is not claimed"
        );
        // Still held until a write sweeps (at most once per purge period).
        assert_eq!(store.inner.lock().sessions.len(), 1);
        store.write(&WriteBatch::default(), TTL).await.unwrap();
        let inner = store.inner.lock();
        assert!(inner.sessions.is_empty() && inner.streams.is_empty());
    }

    #[tokio::test]
    async fn last_activity_never_moves_back_and_idle_sessions_are_claimed_once() {
        let store = MemoryStore::new();
        let now = SystemTime::now();
        let old = now - Duration::from_secs(600);
        let write = |r| WriteBatch {
            sessions: vec![r],
            ..WriteBatch::default()
        };
        store
            .write(&write(record("fresh", now)), TTL)
            .await
            .unwrap();
        store
            .write(&write(record("fresh", old)), TTL)
            .await
            .unwrap();
        store.write(&write(record("idle", old)), TTL).await.unwrap();
        let got = store.get_sessions(&["fresh".into()]).await.unwrap();
        assert_eq!(got[0].as_ref().unwrap().last_activity, now);

        let cutoff = now - Duration::from_secs(60);
        let claimed = store.claim_idle_sessions(cutoff, 10).await.unwrap();
        assert_eq!(claimed, vec![record("idle", old)]);
        assert!(
            store
                .claim_idle_sessions(cutoff, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.get_sessions(&["idle".into()]).await.unwrap(),
            vec![None]
        );
    }
}
