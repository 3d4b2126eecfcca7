//! Garbage under the proxy's Redis keys (issue 11, item 4): a wrong-typed key must not stop
//! flushes or claims forever, and a malformed record claimed by idle expiry must not send a
//! `DELETE` upstream with whatever id it holds. Real Redis (`MCP_RELAY_TEST_REDIS_URL`), each
//! test under its own key prefix.

mod support;

use std::time::{Duration, SystemTime};

use http::Method;
use mcp_relay::session::store::{SessionRecord, WriteBatch};
use redis::AsyncCommands;
use support::{
    durable::{redis_conn, redis_store, require_redis, start_daemon, unique_prefix},
    upstream::TestUpstream,
};

const TTL: Duration = Duration::from_secs(600);
const WAIT: Duration = Duration::from_secs(10);

fn record(id: &str, upstream_session_id: &str, upstream: &str) -> SessionRecord {
    let now = SystemTime::now();
    SessionRecord {
        session_id: id.into(),
        upstream_session_id: upstream_session_id.into(),
        upstream: upstream.into(),
        route: "/mcp".into(),
        protocol_version: "2025-11-25".into(),
        created: now,
        last_activity: now,
    }
}

#[tokio::test]
async fn a_wrong_typed_activity_key_is_repaired_and_writes_go_on() {
    let url = require_redis().await;
    let prefix = unique_prefix("wrongtype-activity");
    let mut conn = redis_conn(&url).await;
    let activity = format!("{prefix}activity");
    let _: () = conn.set(&activity, "junk").await.expect("SET");

    let store = redis_store(&url, &prefix);
    let batch = WriteBatch {
        sessions: vec![record("s1", "UP-1", "http://127.0.0.1:1/mcp")],
        ..WriteBatch::default()
    };
    store
        .write(&batch, TTL)
        .await
        .expect("a write over a wrong-typed activity key succeeds after the repair");
    assert_eq!(store.take_repairs(), 1, "the repair is counted");
    let kind: String = redis::cmd("TYPE")
        .arg(&activity)
        .query_async(&mut conn)
        .await
        .expect("TYPE");
    assert_eq!(kind, "zset", "the proxy's own key is re-created");
    let got = store.get_sessions(&["s1".into()]).await.expect("read");
    assert_eq!(
        got[0].as_ref().map(|r| r.upstream_session_id.as_str()),
        Some("UP-1")
    );

    // Claims over a wrong-typed index recover the same way.
    let _: () = conn.del(&activity).await.expect("DEL");
    let _: () = conn.set(&activity, "junk").await.expect("SET");
    let claimed = store
        .claim_idle_sessions(SystemTime::now() + Duration::from_secs(60), 10)
        .await
        .expect("a claim over a wrong-typed activity key succeeds");
    assert!(claimed.is_empty());
    assert_eq!(store.take_repairs(), 1);
    store.write(&batch, TTL).await.expect("and writes go on");
}

#[tokio::test]
async fn a_wrong_typed_session_key_reads_as_absent_and_is_counted() {
    let url = require_redis().await;
    let prefix = unique_prefix("wrongtype-session");
    let mut conn = redis_conn(&url).await;
    let _: () = conn
        .set(format!("{prefix}session:s1"), "junk")
        .await
        .expect("SET");
    let store = redis_store(&url, &prefix);
    let got = store
        .get_sessions(&["s1".into(), "s2".into()])
        .await
        .expect("a wrong-typed record is skipped, not an error");
    assert_eq!(got, vec![None, None]);
    assert_eq!(store.take_repairs(), 1);
    let batch = WriteBatch {
        sessions: vec![record("s1", "UP-1", "http://127.0.0.1:1/mcp")],
        ..WriteBatch::default()
    };
    store
        .write(&batch, TTL)
        .await
        .expect("the record is re-written");
    let got = store.get_sessions(&["s1".into()]).await.expect("read");
    assert!(got[0].is_some());
}

#[tokio::test]
async fn malformed_records_claimed_by_idle_expiry_send_no_delete_upstream() {
    let url = require_redis().await;
    let prefix = unique_prefix("garbage-claim");
    let upstream = TestUpstream::start().await;
    let proxy = start_daemon(&upstream.url(), redis_store(&url, &prefix), |c| {
        c.session.idle_ttl = Duration::from_millis(400);
        c.worker.flush_interval = Duration::from_millis(20);
    })
    .await;

    // Three records idle since the epoch: a junk upstream id (spaces, not a session id), one
    // too long to be one, and one naming another upstream.
    let mut conn = redis_conn(&url).await;
    let upstream_url = upstream.url();
    let long = "A".repeat(5000);
    let records = [
        (
            "AAAAAAAAAAAAAAAAAAAAA1",
            "junk id; with spaces",
            upstream_url.as_str(),
        ),
        (
            "AAAAAAAAAAAAAAAAAAAAA2",
            long.as_str(),
            upstream_url.as_str(),
        ),
        (
            "AAAAAAAAAAAAAAAAAAAAA3",
            "UP-OTHER",
            "http://10.9.9.9:1/mcp",
        ),
    ];
    for (id, upstream_sid, up) in records {
        let _: () = redis::cmd("HSET")
            .arg(format!("{prefix}session:{id}"))
            .arg("upstream_session_id")
            .arg(upstream_sid)
            .arg("upstream")
            .arg(up)
            .arg("protocol_version")
            .arg("2025-11-25")
            .arg("created_ms")
            .arg(0)
            .query_async(&mut conn)
            .await
            .expect("HSET");
        let _: () = conn
            .zadd(format!("{prefix}activity"), id, 1)
            .await
            .expect("ZADD");
    }

    let metrics = proxy.manager().persistence().metrics();
    let deadline = tokio::time::Instant::now() + WAIT;
    while metrics.snapshot().bad_records < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the malformed records were not skipped within {WAIT:?}: {:?}",
            metrics.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metrics.snapshot().sessions_claimed, 3);
    let deletes: Vec<_> = upstream
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::DELETE)
        .collect();
    assert!(deletes.is_empty(), "DELETEs sent upstream: {deletes:?}");
}

#[tokio::test]
async fn a_wrong_typed_or_malformed_stream_position_reads_as_absent_and_is_counted() {
    let url = require_redis().await;
    let prefix = unique_prefix("garbage-position");
    let mut conn = redis_conn(&url).await;
    let _: () = conn
        .set(format!("{prefix}streams:s1"), "junk")
        .await
        .expect("SET");
    let _: () = conn
        .hset(format!("{prefix}streams:s2"), "st", "line\r\nbreak")
        .await
        .expect("HSET");
    let _: () = conn
        .hset(format!("{prefix}streams:s3"), "st", "ok-7")
        .await
        .expect("HSET");
    let store = redis_store(&url, &prefix);
    let keys = [
        ("s1".to_owned(), "st".to_owned()),
        ("s2".to_owned(), "st".to_owned()),
        ("s3".to_owned(), "st".to_owned()),
    ];
    let got = store
        .get_stream_positions(&keys)
        .await
        .expect("garbage is skipped, not an error");
    let ids: Vec<Option<&str>> = got
        .iter()
        .map(|p| p.as_ref().map(|p| p.upstream_event_id.as_str()))
        .collect();
    assert_eq!(ids, [None, None, Some("ok-7")]);
    assert_eq!(store.take_repairs(), 2);
}
