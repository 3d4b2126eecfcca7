use super::*;
use crate::protocol::ClientEventId;
use crate::session::store::MemoryStore;

/// A live session of `m` the upstream knows as `upstream_session_id` (upstream
/// `http://u/mcp`, version 2025-11-25).
fn session(m: &SessionManager, upstream_session_id: &'static str) -> Arc<Session> {
    m.create_session(
        HeaderValue::from_static(upstream_session_id),
        "/mcp".into(),
        "http://u/mcp".into(),
        "2025-11-25",
    )
    .unwrap()
}

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
            "/mcp".into(),
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
    let s = session(&m, "u");
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
    let s = session(&m, "u");
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
    let s = session(&m, "UP");
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
            "/mcp".into(),
            upstream.clone(),
            "2025-11-25",
        )
        .unwrap();
    let other = a
        .create_session(
            HeaderValue::from_static("UP2"),
            "/mcp".into(),
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
        .restore_session(s.id().as_str(), None, "/mcp", accept(&upstream))
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
        b.restore_session(other.id().as_str(), None, "/mcp", accept(&other_upstream))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        b.restore_session("nope", None, "/mcp", accept(&upstream))
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
        .restore_session(other.id().as_str(), None, "/mcp", accept(&upstream))
        .await
        .unwrap()
        .expect("restored");
    assert!(matches!(
        b.restore_stream(&other_here, stream, 1, None).await,
        Err(StreamRestoreError::Unknown)
    ));
}

/// A manager over a memory store holding one session (upstream id `UP`) whose stream `stream`
/// has the recorded position (`seq`, `last_seq`, `upstream_event_id`), as a replica or an
/// earlier process wrote it; the stream is not held here.
async fn with_recorded_position(
    stream: &str,
    seq: Option<u64>,
    last_seq: Option<u64>,
    upstream_event_id: &str,
) -> (SessionManager, Arc<Session>) {
    use store::{SessionStore as _, StreamPosition, WriteBatch};
    let store = Arc::new(MemoryStore::new());
    let (_worker, handle) = PersistenceWorker::new(store.clone(), WorkerConfig::default());
    let m = SessionManager::new(SessionConfig::default(), handle);
    let s = session(&m, "UP");
    let batch = WriteBatch {
        positions: vec![StreamPosition {
            session_id: s.id().to_string(),
            stream_id: stream.into(),
            seq,
            last_seq,
            upstream_event_id: upstream_event_id.into(),
        }],
        ..WriteBatch::default()
    };
    store.write(&batch, Duration::from_secs(60)).await.unwrap();
    (m, s)
}

/// A position written before sequence numbers were persisted names its position by the
/// upstream id alone: a client id carrying that upstream id is served (after it), any other
/// is refused.
#[tokio::test]
async fn positions_of_the_old_format_are_served_only_to_their_upstream_id() {
    let stream = "00000000000000ab";
    let (m, s) = with_recorded_position(stream, None, None, "e7").await;
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
    let stream = "00000000000000cd";
    let (m, s) = with_recorded_position(stream, Some(2), Some(4), "e2").await;
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

/// What a route holding only `upstream` answers for a record's endpoint URL.
fn accept(upstream: &Arc<str>) -> impl FnOnce(&str) -> Option<Arc<str>> + '_ {
    move |url| (url == &**upstream).then(|| upstream.clone())
}
