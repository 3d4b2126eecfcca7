//! The server-streaming watches, built as streams that tonic polls (no task per watch, nothing
//! buffered beyond a bounded queue):
//!
//! - [`sessions`]: the current sessions (`EXISTING` … `SYNCED`), then each change from the
//!   SessionManager's broadcast. A watcher slower than the broadcast ring (it does not read, so
//!   HTTP/2 flow control stops tonic polling) is told `RESET` with the count it missed, then
//!   gets the current state again: bounded memory, and a view that converges. The current
//!   state is not built up front: the watch holds a weak pointer per session (8 bytes; a
//!   session that ends before the watch passes it keeps its allocation, not its streams, until
//!   then) and makes each `EXISTING` message only when tonic asks for
//!   the next one, so a watcher that stops reading holds at most one message besides what
//!   HTTP/2 flow control lets tonic and h2 buffer (a window and one encoded chunk).
//! - [`metrics`]: a full snapshot now and every interval. A slow reader skips snapshots (they
//!   are complete, so nothing but resolution is lost) and the next one counts them.
//!
//! Both end when `stop` fires (daemon shutdown), with `UNAVAILABLE`, since tonic's graceful
//! shutdown waits for every open stream.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{Arc, Weak},
    time::{Duration, Instant, SystemTime},
};

use futures_util::{Stream, stream};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{convert::session_to_pb, filter::SessionFilter, metrics::snapshot, pb};
use crate::session::{Session, SessionChange, SessionChangeKind, SessionManager};
use crate::telemetry::metrics::Observed;

/// The stream `WatchSessions` answers with.
pub type SessionWatch =
    Pin<Box<dyn Stream<Item = Result<pb::WatchSessionsResponse, Status>> + Send>>;
/// The stream `WatchMetrics` answers with.
pub type MetricsWatch =
    Pin<Box<dyn Stream<Item = Result<pb::WatchMetricsResponse, Status>> + Send>>;

fn shutting_down() -> Status {
    Status::unavailable("mcp-relay is shutting down; watch again on another instance")
}

struct SessionsState {
    manager: Arc<SessionManager>,
    filter: SessionFilter,
    changes: broadcast::Receiver<SessionChange>,
    /// Messages ready to send (at most a `RESET` and one change).
    queue: VecDeque<pb::WatchSessionsResponse>,
    /// The current state still to send, oldest session first: each becomes an `EXISTING`
    /// message when its turn comes (one that ended meanwhile is skipped; its `ENDED` follows).
    existing: std::vec::IntoIter<Weak<Session>>,
    /// When the current state still to send was taken; `SYNCED` follows it.
    syncing: Option<SystemTime>,
    stop: CancellationToken,
    done: bool,
}

impl SessionsState {
    /// Starts sending the current state: each matching session as `EXISTING`, then `SYNCED`,
    /// replacing what was left of any earlier one.
    fn queue_current(&mut self) {
        let mut sessions = self.manager.sessions();
        sessions
            .sort_by(|a, b| (a.created(), a.id().as_str()).cmp(&(b.created(), b.id().as_str())));
        self.existing = sessions
            .iter()
            .map(Arc::downgrade)
            .collect::<Vec<_>>()
            .into_iter();
        self.syncing = Some(SystemTime::now());
    }

    /// The next message of the current state being sent, if any is left.
    fn next_existing(&mut self) -> Option<pb::WatchSessionsResponse> {
        let at = self.syncing?;
        for session in self.existing.by_ref() {
            if let Some(s) = session.upgrade()
                && self.filter.matches(&s)
            {
                return Some(message(
                    pb::SessionChangeType::Existing,
                    Some(session_to_pb(&s)),
                    at,
                ));
            }
        }
        self.syncing = None;
        Some(message(pb::SessionChangeType::Synced, None, at))
    }

    fn queue_change(&mut self, change: &SessionChange) {
        let kind = match change.kind {
            SessionChangeKind::Created => pb::SessionChangeType::Created,
            SessionChangeKind::Updated => pb::SessionChangeType::Updated,
            SessionChangeKind::Ended => pb::SessionChangeType::Ended,
        };
        // An ended session keeps its era, upstream and version: the filter still applies.
        let matches = if change.kind == SessionChangeKind::Ended {
            SessionFilter {
                state: None,
                ..self.filter.clone()
            }
            .matches(&change.session)
        } else {
            self.filter.matches(&change.session)
        };
        if matches {
            let session = session_to_pb(&change.session);
            self.queue
                .push_back(message(kind, Some(session), change.at));
        }
    }
}

fn message(
    kind: pb::SessionChangeType,
    session: Option<pb::Session>,
    at: SystemTime,
) -> pb::WatchSessionsResponse {
    pb::WatchSessionsResponse {
        change_type: kind as i32,
        session,
        change_time: Some(at.into()),
        missed_changes: 0,
    }
}

/// `WatchSessions`: the current state, then changes, until `stop`.
pub fn sessions(
    manager: Arc<SessionManager>,
    filter: SessionFilter,
    stop: CancellationToken,
) -> SessionWatch {
    // Subscribe before reading the current state, so no change falls between the two.
    let changes = manager.changes().subscribe();
    let mut state = SessionsState {
        manager,
        filter,
        changes,
        queue: VecDeque::new(),
        existing: Vec::new().into_iter(),
        syncing: None,
        stop,
        done: false,
    };
    state.queue_current();
    Box::pin(stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if st.stop.is_cancelled() {
                st.done = true;
                return Some((Err(shutting_down()), st));
            }
            if let Some(next) = st.queue.pop_front() {
                return Some((Ok(next), st));
            }
            if let Some(next) = st.next_existing() {
                return Some((Ok(next), st));
            }
            tokio::select! {
                biased;
                () = st.stop.cancelled() => {}
                received = st.changes.recv() => match received {
                    Ok(change) => st.queue_change(&change),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a session watcher fell behind; resetting it");
                        // Skip the changes still queued too: the current state supersedes them.
                        let skipped = st.changes.len() as u64;
                        st.changes = st.changes.resubscribe();
                        st.queue.push_back(pb::WatchSessionsResponse {
                            missed_changes: missed + skipped,
                            ..message(pb::SessionChangeType::Reset, None, SystemTime::now())
                        });
                        st.queue_current();
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }))
}

/// Shortest and longest interval a metrics watch may ask for.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// The interval of a watch that names none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Checks a requested interval (`None`: the default).
pub fn metrics_interval(requested: Option<prost_types::Duration>) -> Result<Duration, Status> {
    let Some(d) = requested else {
        return Ok(DEFAULT_INTERVAL);
    };
    let interval = Duration::try_from(d)
        .map_err(|_| Status::invalid_argument("interval must be a positive duration"))?;
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
        return Err(Status::invalid_argument(format!(
            "interval must be between {MIN_INTERVAL:?} and {MAX_INTERVAL:?}, not {interval:?}"
        )));
    }
    Ok(interval)
}

struct MetricsState {
    observed: Observed,
    interval: Duration,
    ticks: tokio::time::Interval,
    /// When the previous snapshot was taken, and its events-forwarded counter.
    previous: Option<(Instant, u64)>,
    stop: CancellationToken,
    done: bool,
}

/// `WatchMetrics`: a snapshot now and every `interval`, until `stop`.
pub fn metrics(observed: Observed, interval: Duration, stop: CancellationToken) -> MetricsWatch {
    let mut ticks = tokio::time::interval(interval);
    // A consumer that stopped reading is not sent a burst of stale snapshots when it comes back.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let state = MetricsState {
        observed,
        interval,
        ticks,
        previous: None,
        stop,
        done: false,
    };
    Box::pin(stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        tokio::select! {
            biased;
            () = st.stop.cancelled() => {
                st.done = true;
                return Some((Err(shutting_down()), st));
            }
            _ = st.ticks.tick() => {}
        }
        let now = Instant::now();
        let snap = snapshot(&st.observed);
        let events = snap.proxy.as_ref().map_or(0, |p| p.events_forwarded);
        let (skipped_snapshots, events_per_second) = match st.previous {
            None => (0, 0.0),
            Some((at, before)) => {
                let elapsed = now.duration_since(at);
                let periods = elapsed.as_nanos() / st.interval.as_nanos().max(1);
                let skipped = u64::try_from(periods.saturating_sub(1)).unwrap_or(u64::MAX);
                let rate = events.saturating_sub(before) as f64 / elapsed.as_secs_f64().max(1e-9);
                (skipped, rate)
            }
        };
        st.previous = Some((now, events));
        let message = pb::WatchMetricsResponse {
            snapshot: Some(snap),
            skipped_snapshots,
            events_per_second,
        };
        Some((Ok(message), st))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_bounded_and_default_to_one_second() {
        assert_eq!(metrics_interval(None).unwrap(), DEFAULT_INTERVAL);
        let d = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
        assert_eq!(
            metrics_interval(d(0, 250_000_000)).unwrap(),
            Duration::from_millis(250)
        );
        for bad in [d(0, 0), d(0, 99_000_000), d(-1, 0), d(3601, 0)] {
            assert_eq!(
                metrics_interval(bad).unwrap_err().code(),
                tonic::Code::InvalidArgument
            );
        }
    }
}
