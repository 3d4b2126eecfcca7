//! The SessionStore contract, on the embedded memory store and on a real Redis over a real
//! connection (`MCP_RELAY_TEST_REDIS_URL`; these tests fail when it is unset or unreachable).
//! Each Redis test has its own key prefix, so tests never see each other's keys.

mod support;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use mcp_relay::session::store::{
    self, MemoryStore, SessionRecord, SessionStore, StoreBackend, StoreConfig, StoreErrorKind,
    StreamPosition, WriteBatch,
};
use support::durable::{keys_with_ttl, redis_store, require_redis, unique_prefix};

const TTL: Duration = Duration::from_secs(600);

/// A time with the millisecond precision stores keep.
fn ms(t: SystemTime) -> SystemTime {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_millis(d.as_millis() as u64)
}

fn record(id: &str, last_activity: SystemTime) -> SessionRecord {
    SessionRecord {
        session_id: id.into(),
        upstream_session_id: format!("UP:{id}:with:colons"),
        upstream: "http://127.0.0.1:1/mcp".into(),
        route: "/mcp".into(),
        protocol_version: "2025-11-25".into(),
        created: ms(last_activity - Duration::from_secs(5)),
        last_activity: ms(last_activity),
    }
}

fn position(session: &str, stream: &str, seq: u64, id: &str) -> StreamPosition {
    StreamPosition {
        session_id: session.into(),
        stream_id: stream.into(),
        seq: Some(seq),
        last_seq: Some(seq),
        upstream_event_id: id.into(),
    }
}

fn sessions(records: Vec<SessionRecord>) -> WriteBatch {
    WriteBatch {
        sessions: records,
        ..WriteBatch::default()
    }
}

/// The contract every backend keeps.
async fn contract(store: Arc<dyn SessionStore>) {
    let now = SystemTime::now();
    store.ping().await.expect("ping");

    // Round trip of a batch; absent keys read as None, one answer per key.
    let a = record("a", now);
    let batch = WriteBatch {
        sessions: vec![a.clone(), record("b", now)],
        positions: vec![
            position("a", "s1", 1, "ev/1"),
            position("a", "s2", 12, "id:with:colons"),
        ],
        deletes: vec![],
    };
    store.write(&batch, TTL).await.expect("write");
    let got = store
        .get_sessions(&["a".into(), "nope".into(), "b".into()])
        .await
        .expect("get");
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], Some(a.clone()));
    assert_eq!(got[1], None);
    let keys = [
        ("a".to_string(), "s1".to_string()),
        ("a".to_string(), "s2".to_string()),
        ("b".to_string(), "s1".to_string()),
    ];
    assert_eq!(
        store.get_stream_positions(&keys).await.expect("positions"),
        vec![
            Some(position("a", "s1", 1, "ev/1")),
            Some(position("a", "s2", 12, "id:with:colons")),
            None
        ]
    );

    // Latest position wins; the latest activity of any writer wins (never moves back).
    let older = record("a", now - Duration::from_secs(60));
    let batch = WriteBatch {
        sessions: vec![older],
        positions: vec![position("a", "s1", 9, "ev/9")],
        deletes: vec![],
    };
    store.write(&batch, TTL).await.expect("write");
    let got = store.get_sessions(&["a".into()]).await.expect("get");
    assert_eq!(got[0].as_ref().map(|r| r.last_activity), Some(ms(now)));
    assert_eq!(
        store.get_stream_positions(&keys[..1]).await.expect("get")[0],
        Some(position("a", "s1", 9, "ev/9"))
    );

    // A deletion removes the session and every stream position under it.
    let delete = WriteBatch {
        deletes: vec!["a".into()],
        ..WriteBatch::default()
    };
    store.write(&delete, TTL).await.expect("delete");
    assert_eq!(
        store.get_sessions(&["a".into()]).await.expect("get"),
        vec![None]
    );
    assert_eq!(
        store.get_stream_positions(&keys[..2]).await.expect("get"),
        vec![None, None]
    );

    // Idle sessions are claimed once, with their records; active ones stay.
    let idle = record("idle", now - Duration::from_secs(3600));
    store
        .write(&sessions(vec![idle.clone()]), TTL)
        .await
        .expect("write");
    let cutoff = now - Duration::from_secs(60);
    let claimed = store.claim_idle_sessions(cutoff, 100).await.expect("claim");
    assert_eq!(claimed, vec![idle]);
    assert!(
        store
            .claim_idle_sessions(cutoff, 100)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(
        store.get_sessions(&["idle".into()]).await.expect("get"),
        vec![None]
    );
    assert!(
        store.get_sessions(&["b".into()]).await.expect("get")[0].is_some(),
        "an active session is not claimed"
    );
}

#[tokio::test]
async fn the_memory_store_keeps_the_store_contract() {
    contract(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn the_redis_store_keeps_the_store_contract_over_a_real_connection() {
    let url = require_redis().await;
    contract(redis_store(&url, &unique_prefix("contract"))).await;
}

#[tokio::test]
async fn every_redis_key_is_namespaced_by_the_prefix_and_has_a_ttl() {
    let url = require_redis().await;
    let prefix = unique_prefix("ttl");
    let store = redis_store(&url, &prefix);
    let now = SystemTime::now();
    let batch = WriteBatch {
        sessions: vec![record("s", now)],
        positions: vec![position("s", "st", 1, "1")],
        deletes: vec![],
    };
    store
        .write(&batch, Duration::from_secs(30))
        .await
        .expect("write");
    let keys = keys_with_ttl(&url, &prefix).await;
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        vec![
            format!("{prefix}activity"),
            format!("{prefix}session:s"),
            format!("{prefix}streams:s"),
        ]
    );
    for (key, ttl) in &keys {
        assert!(
            *ttl > 0 && *ttl <= 30_000,
            "{key} has TTL {ttl} ms, want (0, 30 s]"
        );
    }

    // Another prefix is another namespace.
    let other = redis_store(&url, &unique_prefix("ttl-other"));
    assert_eq!(
        other.get_sessions(&["s".into()]).await.expect("get"),
        vec![None]
    );
}

#[tokio::test]
async fn concurrent_replicas_claim_each_idle_session_exactly_once() {
    let url = require_redis().await;
    let prefix = unique_prefix("claim");
    let a = redis_store(&url, &prefix);
    let b = redis_store(&url, &prefix);
    let old = SystemTime::now() - Duration::from_secs(3600);
    let records: Vec<_> = (0..60).map(|i| record(&format!("s{i}"), old)).collect();
    a.write(&sessions(records), TTL).await.expect("write");
    let cutoff = SystemTime::now() - Duration::from_secs(60);
    let mut claimed = Vec::new();
    for _ in 0..10 {
        let (x, y) = tokio::join!(
            a.claim_idle_sessions(cutoff, 7),
            b.claim_idle_sessions(cutoff, 7)
        );
        claimed.extend(x.expect("claim a"));
        claimed.extend(y.expect("claim b"));
    }
    let mut ids: Vec<_> = claimed.iter().map(|r| r.session_id.clone()).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "a session was claimed twice");
    assert_eq!(ids.len(), 60, "every idle session was claimed");
}

#[tokio::test]
async fn an_unreachable_redis_fails_fast_as_unreachable_and_bad_settings_are_refused() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let store = redis_store(&format!("redis://127.0.0.1:{port}"), "p:");
    let started = std::time::Instant::now();
    let err = store
        .write(&sessions(vec![record("s", SystemTime::now())]), TTL)
        .await
        .expect_err("nothing listens there");
    assert!(err.is_unreachable(), "{err:#}");
    assert_eq!(err.backend, "redis");
    assert!(store.ping().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the store timeout"
    );

    let config = |url: Option<&str>, prefix: &str| StoreConfig {
        backend: StoreBackend::Redis,
        url: url.map(str::to_owned),
        key_prefix: prefix.into(),
        timeout: Duration::from_secs(1),
    };
    for (bad, key) in [
        (config(None, "p:"), "store.url"),
        (config(Some("http://h:1"), "p:"), "store.url"),
        (config(Some("rediss://user:secret@h:1"), "p:"), "store.url"),
        (config(Some("redis://h:1"), ""), "store.key_prefix"),
    ] {
        let err = store::open(&bad).err().expect("refused");
        assert_eq!(err.kind, StoreErrorKind::Config { key }, "{err:#}");
        assert!(err.to_string().contains(key), "{err:#}");
        assert!(
            !format!("{err:#}").contains("secret"),
            "never echo a password: {err:#}"
        );
    }
}

/// Positions written before sequence numbers were persisted (the hash field `<stream>` holding
/// the upstream id alone) are read with no seq; a position written since supersedes them; a
/// value the store did not write reads as absent, never a panic.
#[tokio::test]
async fn the_redis_store_reads_positions_of_the_old_format_without_a_seq() {
    let url = require_redis().await;
    let prefix = unique_prefix("old-format");
    let store = redis_store(&url, &prefix);
    let mut conn = support::durable::redis_conn(&url).await;
    let key = format!("{prefix}streams:sess");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("old")
        .arg("ev:7")
        .arg("pos:bad")
        .arg("not-a-position")
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let keys = [
        ("sess".to_string(), "old".to_string()),
        ("sess".to_string(), "bad".to_string()),
    ];
    let old = StreamPosition {
        seq: None,
        last_seq: None,
        ..position("sess", "old", 0, "ev:7")
    };
    assert_eq!(
        store.get_stream_positions(&keys).await.expect("read"),
        vec![Some(old), None]
    );
    let batch = WriteBatch {
        positions: vec![position("sess", "old", 4, "ev:9")],
        ..WriteBatch::default()
    };
    store.write(&batch, TTL).await.expect("write");
    assert_eq!(
        store.get_stream_positions(&keys[..1]).await.expect("read"),
        vec![Some(position("sess", "old", 4, "ev:9"))]
    );
}

/// Rolling upgrade (issue 11, L1): a position is also written to the old-format field
/// `<stream>` (the upstream id alone), which replicas of the old version read; when that field
/// names another id than `pos:<stream>`, a replica of the old version wrote it later, and the
/// position reads as one without a seq (served only to a client id carrying that upstream id).
#[tokio::test]
async fn positions_are_written_in_the_old_format_too_and_a_later_old_write_wins() {
    let url = require_redis().await;
    let prefix = unique_prefix("both-formats");
    let store = redis_store(&url, &prefix);
    let mut conn = support::durable::redis_conn(&url).await;
    let key = format!("{prefix}streams:sess");
    // Event 3 carried `ev:3`; events 4 and 5 came without an upstream id.
    let written = StreamPosition {
        last_seq: Some(5),
        ..position("sess", "st", 3, "ev:3")
    };
    let batch = WriteBatch {
        positions: vec![written.clone()],
        ..WriteBatch::default()
    };
    store.write(&batch, TTL).await.expect("write");
    let old: Option<String> = redis::cmd("HGET")
        .arg(&key)
        .arg("st")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(old.as_deref(), Some("ev:3"), "the old-format field");
    let keys = [("sess".to_string(), "st".to_string())];
    assert_eq!(
        store.get_stream_positions(&keys).await.expect("read"),
        vec![Some(written.clone())]
    );

    // A replica of the old version moves the stream on.
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("st")
        .arg("ev:5")
        .query_async(&mut conn)
        .await
        .expect("HSET");
    assert_eq!(
        store.get_stream_positions(&keys).await.expect("read"),
        vec![Some(StreamPosition {
            seq: None,
            last_seq: None,
            ..position("sess", "st", 0, "ev:5")
        })]
    );
    // A replica of this version writes again: its position is the latest.
    store.write(&batch, TTL).await.expect("write");
    assert_eq!(
        store.get_stream_positions(&keys).await.expect("read"),
        vec![Some(written)]
    );
}
