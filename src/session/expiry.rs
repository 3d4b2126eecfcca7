//! Idle expiry's side of the session store. The store is the authority on idleness, since
//! another replica may serve a session this one holds: the daemon's expiry loop, every
//! [`expiry_period`], asks the store for the sessions no replica has seen active for the idle
//! TTL ([`claim_idle_sessions`]: each is claimed by exactly one replica) and hands them to
//! [`SessionManager::expire_idle`], which also evicts the sessions idle in this process and
//! ends the claimed ones; the loop ([`run`], spawned by the daemon) then ends those upstream
//! through the daemon's one [`UpstreamSessionEnder`].
//!
//! The persistence worker only writes; it keeps the counters of every store operation
//! ([`WorkerMetrics`](super::WorkerMetrics): claims count in `sessions_claimed`, `errors` and
//! `bad_records`).

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use tokio_util::sync::CancellationToken;

use super::{
    EndUpstreamError, PersistenceHandle, SessionManager, UpstreamSessionEnder, activity_refresh,
    store::SessionRecord,
};

/// Most idle sessions claimed from the store per expiry round.
pub const SWEEP_LIMIT: usize = 256;

/// How often idle sessions are looked for, in memory and in the store: a quarter of the idle
/// TTL, 100 ms to 30 s.
pub fn expiry_period(idle_ttl: Duration) -> Duration {
    (idle_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

/// Claims up to [`SWEEP_LIMIT`] sessions idle in the store at `now`: their last activity, from
/// any replica, older than `idle_ttl` plus the lag of the activity a record carries
/// ([`activity_refresh`]). Claimed records are gone from the store; the caller ends them (see
/// [`SessionManager::expire_idle`](super::SessionManager::expire_idle)).
///
/// Nothing is claimed while the worker's writes fail (the activity of sessions active here
/// may not have reached the store), nor with a zero `idle_ttl`. A failed claim claims nothing:
/// it is counted in `errors` and logged, and the next round tries again.
pub async fn claim_idle_sessions(
    persistence: &PersistenceHandle,
    idle_ttl: Duration,
    now: SystemTime,
) -> Vec<SessionRecord> {
    if idle_ttl.is_zero() || persistence.writes_failing() {
        return Vec::new();
    }
    let Some(cutoff) = now.checked_sub(idle_ttl + activity_refresh(idle_ttl)) else {
        return Vec::new();
    };
    let result = persistence
        .store()
        .claim_idle_sessions(cutoff, SWEEP_LIMIT)
        .await;
    persistence.count_repairs();
    let metrics = persistence.metrics();
    match result {
        Ok(claimed) => {
            if !claimed.is_empty() {
                metrics
                    .sessions_claimed
                    .fetch_add(claimed.len() as u64, Ordering::Relaxed);
                tracing::debug!(
                    count = claimed.len(),
                    "claimed idle sessions from the store"
                );
            }
            claimed
        }
        Err(err) => {
            metrics.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = %format_args!("{err:#}"),
                "claiming idle sessions from the store failed",
            );
            Vec::new()
        }
    }
}

/// Ends idle sessions (those idle here are evicted; those the store says no replica used are
/// claimed from it and ended), then ends the ended ones upstream through `ender` (best effort:
/// failures are logged, never retried; a session naming another upstream is counted as a bad
/// record).
pub async fn run(
    ender: Arc<dyn UpstreamSessionEnder>,
    manager: Arc<SessionManager>,
    shutdown: CancellationToken,
) {
    let idle_ttl = manager.idle_ttl();
    let mut tick = tokio::time::interval(expiry_period(idle_ttl));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let now = SystemTime::now();
        let claimed = claim_idle_sessions(manager.persistence(), idle_ttl, now).await;
        for session in manager.expire_idle(now, claimed) {
            tracing::info!(session = %session.id(), "session expired after idle TTL");
            match ender.end_upstream_session(&session).await {
                Ok(status) => tracing::info!(
                    session = %session.id(),
                    status = status.as_u16(),
                    "ended expired session upstream",
                ),
                Err(err @ EndUpstreamError::OtherUpstream(_)) => {
                    manager
                        .persistence()
                        .metrics()
                        .bad_records
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(session = %session.id(), error = %err, "expired session not ended upstream");
                }
                Err(err) => tracing::warn!(
                    session = %session.id(),
                    error = %err,
                    "could not end expired session upstream",
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::session::{
        PersistenceWorker, SessionId, WorkerConfig,
        store::{
            MemoryStore, SessionStore,
            testing::{FlakyStore, record},
        },
    };

    const IDLE_TTL: Duration = Duration::from_secs(60);

    /// Moves the paused clock on by `step` until `done` holds (at most 1000 steps).
    async fn advance_until(step: Duration, done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::advance(step).await;
        }
        panic!("not done after 1000 steps of {step:?}");
    }

    #[tokio::test]
    async fn sessions_idle_in_the_store_are_claimed_once_and_counted() {
        let store = Arc::new(MemoryStore::new());
        let (worker, handle) = PersistenceWorker::new(store.clone(), WorkerConfig::default());
        let now = SystemTime::now();
        handle.session_saved(record("old", now - Duration::from_secs(3600)));
        // Idle for the TTL, but not past the activity refresh lag: not claimed yet.
        handle.session_saved(record("lagging", now - IDLE_TTL));
        handle.session_saved(record("fresh", now));
        worker.flush().await.unwrap();
        let claimed = claim_idle_sessions(&handle, IDLE_TTL, now).await;
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].session_id, "old");
        assert!(claim_idle_sessions(&handle, IDLE_TTL, now).await.is_empty());
        assert_eq!(handle.metrics().snapshot().sessions_claimed, 1);
        assert!(
            claim_idle_sessions(&handle, Duration::ZERO, now + IDLE_TTL * 10)
                .await
                .is_empty(),
            "no idle expiry without a TTL"
        );
        let later = now + activity_refresh(IDLE_TTL) + Duration::from_millis(1);
        let claimed = claim_idle_sessions(&handle, IDLE_TTL, later).await;
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].session_id, "lagging");
    }

    #[tokio::test]
    async fn a_failed_claim_is_counted_and_claims_nothing() {
        let store = Arc::new(FlakyStore::default());
        let (worker, handle) = PersistenceWorker::new(store.clone(), WorkerConfig::default());
        let now = SystemTime::now();
        handle.session_saved(record("old", now - Duration::from_secs(3600)));
        worker.flush().await.unwrap();
        store.set_down(true);
        assert!(claim_idle_sessions(&handle, IDLE_TTL, now).await.is_empty());
        assert_eq!(handle.metrics().snapshot().errors, 1);
        store.set_down(false);
        assert_eq!(claim_idle_sessions(&handle, IDLE_TTL, now).await.len(), 1);
    }

    /// The activity of sessions active here may be waiting in the worker's queue: while its
    /// writes fail, nothing is claimed, so no active session is ended as idle.
    #[tokio::test(start_paused = true)]
    async fn nothing_is_claimed_while_the_workers_writes_fail() {
        let store = Arc::new(FlakyStore::default());
        let config = WorkerConfig::default();
        let (worker, handle) = PersistenceWorker::new(store.clone(), config);
        let now = SystemTime::now();
        handle.session_saved(record("old", now - Duration::from_secs(3600)));
        worker.flush().await.unwrap();

        store.set_down(true);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker.run(shutdown.clone()));
        handle.session_removed(&SessionId::from("gone"));
        let failing = || handle.metrics().snapshot().consecutive_failures > 0;
        advance_until(config.flush_interval, failing).await;
        // The store answers again, but the worker has not written yet.
        store.set_down(false);
        assert!(claim_idle_sessions(&handle, IDLE_TTL, now).await.is_empty());
        assert_eq!(handle.metrics().snapshot().errors, 1, "the write only");
        assert!(
            store.get_sessions(&["old".into()]).await.unwrap()[0].is_some(),
            "not claimed"
        );
        // Once its probe finds the store and the write succeeds, claims resume.
        advance_until(config.flush_interval, || !failing()).await;
        assert_eq!(claim_idle_sessions(&handle, IDLE_TTL, now).await.len(), 1);
        shutdown.cancel();
        task.await.unwrap();
    }
}
