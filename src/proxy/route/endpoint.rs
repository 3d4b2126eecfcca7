//! One upstream endpoint of a route's pool as every data-plane thread sees it: its requests
//! outstanding (what the balancer compares), whether an operator drained it, and its passive
//! health (consecutive failures eject it for a growing time: Envoy's outlier detection,
//! `consecutive_gateway_failure` with `base_ejection_time` times the ejection count, capped
//! at `max_ejection_time`).

use std::{
    sync::{
        Arc, LazyLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use http::Uri;

use crate::config::ProxyConfig;

/// The process's clock origin for the ejection deadlines kept in atomics.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since [`EPOCH`] (at least 1, so 0 can mean "not ejected").
fn now_ms() -> u64 {
    (EPOCH.elapsed().as_millis() as u64).max(1)
}

/// When an endpoint is ejected and for how long, from its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionPolicy {
    /// Consecutive failures that eject (`proxy.eject_after_failures`); 0: never.
    pub after_failures: u32,
    /// The first ejection's length (`proxy.base_ejection_time_ms`).
    pub base: Duration,
    /// The longest ejection (`proxy.max_ejection_time_ms`).
    pub max: Duration,
}

impl EjectionPolicy {
    /// The policy of a route's effective settings.
    pub fn of(config: &ProxyConfig) -> Self {
        Self {
            after_failures: config.eject_after_failures,
            base: config.base_ejection_time,
            max: config.max_ejection_time,
        }
    }

    /// The length of an endpoint's `n`th ejection (1-based): `base × n`, at most `max`.
    pub fn length(&self, n: u32) -> Duration {
        self.base.saturating_mul(n.max(1)).min(self.max)
    }
}

/// Why a request to an endpoint counts as failed (passive health).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made, or the request could not be written.
    Connect,
    /// The exchange broke (reset, a bad head) or no answer came in time.
    Exchange,
    /// The endpoint answered `5xx`.
    ServerError,
    /// An active health check failed.
    HealthCheck,
}

/// An upstream endpoint shared by every data-plane thread (each has its own connections to
/// it). Counters are monotonic over the endpoint's life, which spans reloads that keep it.
#[derive(Debug)]
pub struct Endpoint {
    /// The name of its route.
    route: parking_lot::RwLock<Arc<str>>,
    /// Its URL.
    uri: Uri,
    /// Its URL as sessions record it and logs, metrics and the control plane show it: any
    /// password masked.
    url: Arc<str>,
    weight: AtomicU32,
    policy: parking_lot::RwLock<EjectionPolicy>,
    outstanding: AtomicUsize,
    drained: AtomicBool,
    /// Kept only for the sessions pinned to it: a reload removed it from its pool.
    retired: AtomicBool,
    consecutive_failures: AtomicU32,
    /// Until when it is ejected (ms since [`EPOCH`]); 0: not ejected.
    ejected_until_ms: AtomicU64,
    /// Times it was ejected.
    ejections: AtomicU32,
    /// Requests sent to it (each attempt).
    pub requests: AtomicU64,
    /// Requests to it that failed ([`Failure`]), active checks included.
    pub failures: AtomicU64,
    /// Requests retried on another endpoint after failing on this one before it saw them.
    pub retried: AtomicU64,
    /// Legacy sessions answered `404` because this endpoint was gone.
    pub sessions_lost: AtomicU64,
    /// Bumped at every change of state the control plane watches (ejected, recovered,
    /// drained, undrained).
    version: AtomicU64,
    /// Time from sending a request to its response head, in seconds
    /// (`mcp_relay_upstream_request_duration_seconds`).
    pub latency: metrics::Histogram,
}

impl Endpoint {
    /// An endpoint of route `route` at `uri` with `weight`, ejected by `policy`, its latency
    /// recorded nowhere (see [`Endpoint::with_latency`]).
    pub fn new(route: Arc<str>, uri: Uri, weight: u32, policy: EjectionPolicy) -> Arc<Self> {
        Self::with_latency(route, uri, weight, policy, metrics::Histogram::noop())
    }

    /// [`Endpoint::new`], its latency recorded in `latency`.
    pub fn with_latency(
        route: Arc<str>,
        uri: Uri,
        weight: u32,
        policy: EjectionPolicy,
        latency: metrics::Histogram,
    ) -> Arc<Self> {
        let text = uri.to_string();
        let url = crate::config::file::redact_url(&text)
            .unwrap_or(text)
            .into();
        Arc::new(Self {
            route: parking_lot::RwLock::new(route),
            uri,
            url,
            weight: AtomicU32::new(weight.max(1)),
            policy: parking_lot::RwLock::new(policy),
            outstanding: AtomicUsize::new(0),
            drained: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            sessions_lost: AtomicU64::new(0),
            version: AtomicU64::new(0),
            latency,
        })
    }

    /// The name of its route (its current name, after a reload that renamed the route).
    pub fn route(&self) -> Arc<str> {
        self.route.read().clone()
    }

    /// Renames its route (a reload that named or renamed the route at its path).
    pub fn set_route(&self, route: Arc<str>) {
        *self.route.write() = route;
    }

    /// Its URL.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Its URL, passwords masked: what sessions record.
    pub fn url(&self) -> &Arc<str> {
        &self.url
    }

    /// Its weight (1 to 100).
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Sets its weight (a reload that keeps it with another weight).
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight.max(1), Ordering::Relaxed);
    }

    /// Requests sent to it whose answer has not ended (an SSE stream counts until it ends).
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Whether an operator drained it (no new sessions or requests; existing sessions go on).
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Drains (`true`) or undrains it; returns whether that changed anything.
    pub fn set_drained(&self, drained: bool) -> bool {
        let changed = self.drained.swap(drained, Ordering::Relaxed) != drained;
        if changed {
            self.bump();
            tracing::info!(route = %self.route(), endpoint = %self.url, drained, "endpoint drain changed");
        }
        changed
    }

    /// Whether a reload removed it from its pool (it serves only the sessions pinned to it).
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Marks it retired (see [`Endpoint::is_retired`]) or back in a pool.
    pub fn set_retired(&self, retired: bool) {
        if self.retired.swap(retired, Ordering::Relaxed) != retired {
            self.bump();
        }
    }

    /// Replaces its ejection policy (a reload that keeps it with other settings). A policy
    /// that never ejects ends a current ejection; a shorter `max` caps it.
    pub fn set_policy(&self, policy: EjectionPolicy) {
        *self.policy.write() = policy;
        let now = now_ms();
        let cap = if policy.after_failures == 0 {
            0
        } else {
            now.saturating_add(policy.max.as_millis() as u64)
        };
        let capped =
            self.ejected_until_ms
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |until| {
                    (until > now && until > cap).then_some(cap)
                });
        if capped.is_ok() {
            self.bump();
            tracing::info!(route = %self.route(), endpoint = %self.url, "ejection shortened by the reloaded policy");
        }
    }

    /// Time left of its current ejection; `None` when it is not ejected.
    pub fn ejected_for(&self) -> Option<Duration> {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Whether it is ejected now.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && until > now_ms()
    }

    /// Times it was ejected.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Consecutive failures since its last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Whether new work may go to it: in its pool, not drained, not ejected.
    pub fn is_available(&self) -> bool {
        !self.is_drained() && !self.is_retired() && !self.is_ejected()
    }

    /// A counter of its state changes, for watchers.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    fn bump(&self) {
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    /// One request to it starts: counted, and outstanding until the guard drops.
    pub fn begin(self: &Arc<Self>) -> Outstanding {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(self.clone())
    }

    /// A request (or an active check) succeeded: its consecutive failures are forgotten. An
    /// active check's success also ends an ejection (`active`).
    pub fn succeeded(&self, active: bool) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if active && self.ejected_until_ms.swap(0, Ordering::Relaxed) > now_ms() {
            self.bump();
            tracing::info!(route = %self.route(), endpoint = %self.url, "endpoint passed its health check; ejection ended");
        }
    }

    /// A request (or an active check) failed: counted; at `eject_after_failures` consecutive
    /// ones the endpoint is ejected (logged). Returns whether this failure ejected it.
    pub fn failed(&self, failure: Failure) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let policy = *self.policy.read();
        let consecutive = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if policy.after_failures == 0 || consecutive < policy.after_failures {
            return false;
        }
        // Failures racing on several threads eject once: only the one that moves the deadline
        // from "not ejected" ejects, and counts.
        let now = now_ms();
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        if until > now {
            return false;
        }
        let n = self.ejections.load(Ordering::Relaxed) + 1;
        let length = policy.length(n);
        if self
            .ejected_until_ms
            .compare_exchange(
                until,
                now + length.as_millis() as u64,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        self.ejections.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.bump();
        tracing::warn!(
            route = %self.route(),
            endpoint = %self.url,
            failure = ?failure,
            consecutive,
            ejections = n,
            ejected_ms = length.as_millis() as u64,
            "upstream endpoint ejected after consecutive failures",
        );
        true
    }
}

/// A request outstanding at an endpoint; dropping it ends it.
#[derive(Debug)]
pub struct Outstanding(Arc<Endpoint>);

impl Outstanding {
    /// The endpoint.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(after: u32) -> Arc<Endpoint> {
        Endpoint::new(
            "r".into(),
            Uri::from_static("http://u:p@127.0.0.1:1/mcp"),
            1,
            EjectionPolicy {
                after_failures: after,
                base: Duration::from_secs(30),
                max: Duration::from_secs(70),
            },
        )
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_capped_time() {
        let e = endpoint(3);
        assert!(!e.url().contains(":p@"), "{}", e.url());
        assert!(!e.failed(Failure::Connect));
        e.succeeded(false);
        assert!(!e.failed(Failure::Connect));
        assert!(!e.failed(Failure::Connect));
        assert!(e.is_available(), "a success in between reset the count");
        assert!(e.failed(Failure::ServerError));
        assert!(e.is_ejected() && !e.is_available());
        let first = e.ejected_for().unwrap();
        assert!(first <= Duration::from_secs(30) && first > Duration::from_secs(29));
        // An active check's success ends the ejection; the next one lasts longer.
        e.succeeded(true);
        assert!(e.is_available());
        for _ in 0..3 {
            e.failed(Failure::HealthCheck);
        }
        assert!(e.ejected_for().unwrap() > Duration::from_secs(59));
        e.succeeded(true);
        for _ in 0..3 {
            e.failed(Failure::Exchange);
        }
        assert!(
            e.ejected_for().unwrap() <= Duration::from_secs(70),
            "capped"
        );
        assert_eq!(e.ejections(), 3);
        assert_eq!(e.failures.load(Ordering::Relaxed), 10);
    }

    /// Failures that race on several threads (a killed endpoint fails every request in flight
    /// at once) eject it once: one ejection counted, one deadline of the first length.
    #[test]
    fn failures_racing_on_threads_eject_once() {
        const THREADS: usize = 8;
        for round in 0..3000 {
            let e = endpoint(1);
            let start = Arc::new(std::sync::Barrier::new(THREADS));
            let ejected: usize = std::thread::scope(|s| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|_| {
                        let (e, start) = (e.clone(), start.clone());
                        s.spawn(move || {
                            start.wait();
                            usize::from(e.failed(Failure::Connect))
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("thread")).sum()
            });
            assert_eq!(
                ejected, 1,
                "round {round}: failed() said `ejected` {ejected} times"
            );
            assert_eq!(e.ejections(), 1, "round {round}: one ejection counted");
            assert!(
                e.ejected_for().expect("ejected") <= Duration::from_secs(30),
                "round {round}: the first ejection's length"
            );
        }
    }

    /// A reload that turns ejection off (`eject_after_failures = 0`) ends a current ejection:
    /// the operator said failures no longer keep the endpoint out; and a shorter
    /// `max_ejection_time` caps one running.
    #[test]
    fn a_policy_without_ejection_ends_a_current_one_and_a_shorter_max_caps_it() {
        let e = endpoint(1);
        assert!(e.failed(Failure::Connect));
        assert!(e.is_ejected());
        e.set_policy(EjectionPolicy {
            after_failures: 1,
            base: Duration::from_secs(1),
            max: Duration::from_secs(5),
        });
        assert!(
            e.ejected_for().expect("still ejected") <= Duration::from_secs(5),
            "capped by the new max"
        );
        e.set_policy(EjectionPolicy {
            after_failures: 0,
            base: Duration::from_secs(30),
            max: Duration::from_secs(70),
        });
        assert!(e.is_available(), "ejection is off: the endpoint is back");
    }

    #[test]
    fn no_ejection_when_off_and_outstanding_follows_guards() {
        let e = endpoint(0);
        for _ in 0..100 {
            e.failed(Failure::Connect);
        }
        assert!(e.is_available());
        let a = e.begin();
        let b = e.begin();
        assert_eq!(e.outstanding(), 2);
        drop(a);
        assert_eq!(e.outstanding(), 1);
        drop(b);
        assert_eq!(e.outstanding(), 0);
        assert!(e.set_drained(true) && !e.is_available());
    }
}
