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
//! - [`endpoints`]: every watched endpoint now, then again whenever their state changes. The
//!   routes' state has no change feed: the watch compares [`Routing::version`] and each
//!   endpoint's ejection (which runs out with no version bump) every [`ENDPOINT_POLL`] while
//!   tonic waits for its next message. Each message is complete and made only when tonic asks
//!   for it, so a reader that stops reading holds nothing but the last state it was sent.
//!
//! All end when `stop` fires (daemon shutdown), with `UNAVAILABLE`, since tonic's graceful
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

use super::{
    convert::session_to_pb, filter::SessionFilter, metrics::snapshot, pb, upstreams::endpoints_of,
};
use crate::proxy::route::Routing;
use crate::session::{Session, SessionChange, SessionChangeKind, SessionManager};
use crate::telemetry::metrics::Observed;

/// The stream `WatchSessions` answers with.
pub type SessionWatch =
    Pin<Box<dyn Stream<Item = Result<pb::WatchSessionsResponse, Status>> + Send>>;
/// The stream `WatchMetrics` answers with.
pub type MetricsWatch =
    Pin<Box<dyn Stream<Item = Result<pb::WatchMetricsResponse, Status>> + Send>>;
/// The stream `WatchEndpoints` answers with.
pub type EndpointWatch =
    Pin<Box<dyn Stream<Item = Result<pb::WatchEndpointsResponse, Status>> + Send>>;

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

/// How often an endpoint watch looks for a change.
pub const ENDPOINT_POLL: Duration = Duration::from_millis(200);

struct EndpointsState {
    routing: Arc<Routing>,
    manager: Arc<SessionManager>,
    /// The watched route's name; empty: every route.
    route: String,
    /// What the last message showed: [`Routing::version`] then, and which endpoints were
    /// ejected (in table order). `None` before the first message.
    sent: Option<(u64, Vec<bool>)>,
    stop: CancellationToken,
    done: bool,
}

impl EndpointsState {
    /// The state a message shows, when it differs from the last one sent.
    fn changed(&self) -> Option<(u64, Vec<bool>)> {
        // The version first: a change after it is read moves it, so the next look sends again.
        let version = self.routing.version();
        let ejected = self
            .routing
            .table()
            .routes()
            .iter()
            .filter(|r| self.route.is_empty() || **r.name() == *self.route)
            .flat_map(|r| r.endpoints())
            .map(|e| e.is_ejected())
            .collect();
        let now = (version, ejected);
        (self.sent.as_ref() != Some(&now)).then_some(now)
    }
}

/// `WatchEndpoints`: the endpoints of `routing` (of the route named `route`, unless empty) now,
/// then whenever their state changes, until `stop`.
pub fn endpoints(
    routing: Arc<Routing>,
    manager: Arc<SessionManager>,
    route: String,
    stop: CancellationToken,
) -> EndpointWatch {
    let state = EndpointsState {
        routing,
        manager,
        route,
        sent: None,
        stop,
        done: false,
    };
    Box::pin(stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if st.stop.is_cancelled() {
                st.done = true;
                return Some((Err(shutting_down()), st));
            }
            if let Some(now) = st.changed() {
                st.sent = Some(now);
                let table = st.routing.table();
                let message = pb::WatchEndpointsResponse {
                    endpoints: endpoints_of(&table, &st.route, &st.manager),
                    generation: table.generation(),
                    observe_time: Some(SystemTime::now().into()),
                };
                return Some((Ok(message), st));
            }
            tokio::select! {
                biased;
                () = st.stop.cancelled() => {}
                () = tokio::time::sleep(ENDPOINT_POLL) => {}
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next message of `watch`, within 5 s.
    async fn next_endpoints(watch: &mut EndpointWatch) -> pb::WatchEndpointsResponse {
        use futures_util::StreamExt as _;
        tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("a message within 5 s")
            .expect("the watch goes on")
            .expect("a message, not an error")
    }

    #[tokio::test]
    async fn an_endpoint_watch_sends_drains_ejections_and_ejections_that_ran_out() {
        use crate::{
            config::{Config, RouteConfig},
            proxy::route::{Failure, LatencyHistograms},
            session::{PersistenceWorker, SessionConfig, WorkerConfig, store::MemoryStore},
        };
        let mut route =
            RouteConfig::new("/a", ["http://h:1/".to_owned(), "http://h:2/".to_owned()]);
        route.eject_after_failures = Some(1);
        route.base_ejection_time = Some(Duration::from_millis(300));
        let mut config = Config::new(http::Uri::default());
        config.routes = vec![route, RouteConfig::new("/b", ["http://h:3/".to_owned()])];
        let routing = Routing::new(&config, LatencyHistograms::default());
        let (_worker, handle) =
            PersistenceWorker::new(Arc::new(MemoryStore::new()), WorkerConfig::default());
        let manager = Arc::new(SessionManager::new(SessionConfig::default(), handle));
        let stop = CancellationToken::new();
        let mut watch = endpoints(routing.clone(), manager, "/a".to_owned(), stop.clone());
        let health = |m: &pb::WatchEndpointsResponse| -> Vec<(pb::EndpointHealth, bool)> {
            m.endpoints
                .iter()
                .map(|e| (e.health(), e.drained))
                .collect()
        };
        use pb::EndpointHealth::{Ejected, Healthy};

        let first = next_endpoints(&mut watch).await;
        assert_eq!(first.generation, 1);
        assert_eq!(
            health(&first),
            [(Healthy, false), (Healthy, false)],
            "only /a's"
        );

        let pool = routing.table().by_name("/a").unwrap().pool().to_vec();
        pool[1].set_drained(true);
        routing.touch();
        assert_eq!(
            health(&next_endpoints(&mut watch).await),
            [(Healthy, false), (Healthy, true)]
        );

        assert!(pool[0].failed(Failure::Connect), "one failure ejects");
        let ejected = next_endpoints(&mut watch).await;
        assert_eq!(health(&ejected), [(Ejected, false), (Healthy, true)]);
        assert!(ejected.endpoints[0].ejected_remaining.is_some());
        // The ejection runs out with no version bump: the watch still tells.
        let recovered = next_endpoints(&mut watch).await;
        assert_eq!(health(&recovered), [(Healthy, false), (Healthy, true)]);
        assert_eq!(recovered.endpoints[0].ejections, 1);

        stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), {
            use futures_util::StreamExt as _;
            watch.next()
        })
        .await
        .expect("the watch ends promptly")
        .expect("a last message");
        assert_eq!(ended.unwrap_err().code(), tonic::Code::Unavailable);
    }

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
