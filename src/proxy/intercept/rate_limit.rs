//! The rate limit interceptor (`proxy.rate_limit`, `[routes.rate_limit]`;
//! [`RateLimitConfig`]): token buckets (GCRA, from the `governor` crate) over the JSON-RPC
//! requests of a route — per client, per route, per client and tool.
//!
//! Each request (each of a batch) is checked against its tool's bucket (a `tools/call` whose
//! tool matches a `tools` entry), its client's, then the route's; the first that has no token
//! answers it: HTTP `429`, `Retry-After` (whole seconds, rounded up, at least 1) when the
//! bucket has a token again, JSON-RPC error [`RATE_LIMITED`] "Rate limit exceeded" with the
//! request's id; the upstream never sees it. (A token taken from an earlier bucket of a
//! request a later one refused is not given back.) Notifications and responses are not
//! limited.
//!
//! A client is [`crate::proxy::forwarded::ForwardedPolicy::client_ip`]'s address (the
//! connection's peer, or what a trusted proxy forwarded for), an IPv6 one by its /64; requests
//! without one share one bucket. Client buckets are keyed by a hash of the address (SipHash with a per-process
//! random key) modulo `max_clients`, so at most that many exist per limit whatever the number
//! of clients, and an attacker cannot aim at another client's bucket; buckets full again (idle
//! clients) are dropped every [`RECLAIM_PERIOD`].

use std::{
    hash::BuildHasher,
    net::IpAddr,
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use governor::{
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use http::StatusCode;

use super::{Answer, AnswerBody, ClientMessage, Interceptor, ServerMessage, Verdict};
use crate::config::{RateLimitConfig, policy::glob};

/// The JSON-RPC error code of a request refused by a rate limit (implementation-defined server
/// error range; the HTTP status, `429`, is what clients and tools act on).
pub const RATE_LIMITED: i64 = -32000;

/// How often idle client buckets are reclaimed.
pub const RECLAIM_PERIOD: Duration = Duration::from_secs(10);

/// A bucket refilling `rate` tokens per second holding `burst` (0: `rate`).
fn quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

/// The rate limits of one route.
pub struct RateLimit {
    client: Option<DefaultKeyedRateLimiter<u64>>,
    route: Option<DefaultDirectRateLimiter>,
    /// Per tool pattern, its per-client buckets.
    tools: Vec<(globset::GlobMatcher, DefaultKeyedRateLimiter<u64>)>,
    /// Keys client addresses (random per process).
    hasher: std::collections::hash_map::RandomState,
    max_clients: u64,
    clock: DefaultClock,
    started: Instant,
    /// When idle buckets were last reclaimed (ms since `started`).
    reclaimed_ms: AtomicU64,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("client", &self.client.is_some())
            .field("route", &self.route.is_some())
            .field("tools", &self.tools.len())
            .field("max_clients", &self.max_clients)
            .finish()
    }
}

impl RateLimit {
    /// The limits of `config`. Errors: a tool pattern that is not a glob (configuration
    /// loading refuses those first, [`RateLimitConfig::check`]).
    pub fn new(config: &RateLimitConfig) -> Result<Self, globset::Error> {
        let keyed = |q: Quota| RateLimiter::keyed(q);
        let tools = config
            .tools
            .iter()
            .filter_map(|t| {
                let q = quota(t.requests_per_second, t.burst)?;
                Some(glob(&t.name).map(|g| (g.compile_matcher(), keyed(q))))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            client: quota(config.client_requests_per_second, config.client_burst).map(keyed),
            route: quota(config.route_requests_per_second, config.route_burst)
                .map(RateLimiter::direct),
            tools,
            hasher: Default::default(),
            max_clients: config.max_clients.max(1) as u64,
            clock: DefaultClock::default(),
            started: Instant::now(),
            reclaimed_ms: AtomicU64::new(0),
        })
    }

    /// The bucket key of `client`: its IPv4 address, or its IPv6 /64 (one host usually holds
    /// a whole /64, so an address each would give it unlimited buckets).
    fn key(&self, client: Option<IpAddr>) -> u64 {
        match client {
            Some(IpAddr::V6(v6)) => {
                let prefix = u128::from(v6) >> 64;
                self.hasher.hash_one(prefix) % self.max_clients
            }
            Some(ip) => self.hasher.hash_one(ip) % self.max_clients,
            None => self.max_clients, // one more bucket: requests with no address
        }
    }

    /// Client buckets held now, over every keyed limit.
    pub fn buckets(&self) -> usize {
        self.client.as_ref().map_or(0, |l| l.len())
            + self.tools.iter().map(|(_, l)| l.len()).sum::<usize>()
    }

    /// Drops the buckets of idle clients (full again), at most once per [`RECLAIM_PERIOD`].
    fn reclaim(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.reclaimed_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < RECLAIM_PERIOD.as_millis() as u64
            || self
                .reclaimed_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for limiter in self.client.iter().chain(self.tools.iter().map(|(_, l)| l)) {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Takes a token for a request of `method` (tool `name`) from `client`; the time until a
    /// token is there when a bucket has none.
    pub fn check(
        &self,
        method: &str,
        name: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<(), Duration> {
        self.reclaim();
        let key = self.key(client);
        let refused = |n: governor::NotUntil<_>| n.wait_time_from(self.clock.now());
        if method == "tools/call"
            && let Some(name) = name
            && let Some((_, limiter)) = self.tools.iter().find(|(m, _)| m.is_match(name))
        {
            limiter.check_key(&key).map_err(refused)?;
        }
        if let Some(limiter) = &self.client {
            limiter.check_key(&key).map_err(refused)?;
        }
        if let Some(limiter) = &self.route {
            limiter.check().map_err(refused)?;
        }
        Ok(())
    }

    fn wants(&self, method: &str) -> bool {
        self.client.is_some()
            || self.route.is_some()
            || (method == "tools/call" && !self.tools.is_empty())
    }
}

impl Interceptor for RateLimit {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn wants_client(&self, method: &str) -> bool {
        self.wants(method)
    }

    fn on_client(&self, message: &mut ClientMessage<'_>) -> Verdict {
        if message.request.id.is_none() {
            return Verdict::Pass;
        }
        match self.check(
            message.request.method,
            message.request.name,
            message.request.client,
        ) {
            Ok(()) => Verdict::Pass,
            Err(wait) => Verdict::Answer(Answer {
                status: StatusCode::TOO_MANY_REQUESTS,
                body: AnswerBody::Error {
                    code: RATE_LIMITED,
                    message: "Rate limit exceeded".into(),
                },
                retry_after: Some(wait),
            }),
        }
    }

    fn wants_server(&self, _request_method: Option<&str>) -> bool {
        false
    }

    fn on_server(&self, _message: &mut ServerMessage<'_>) -> Verdict {
        Verdict::Pass
    }

    fn buckets(&self) -> usize {
        RateLimit::buckets(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ToolRateLimit;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_client_past_its_burst_waits_and_others_are_unaffected() {
        let limit = RateLimit::new(&RateLimitConfig {
            client_requests_per_second: 1,
            client_burst: 3,
            ..Default::default()
        })
        .unwrap();
        for _ in 0..3 {
            assert_eq!(limit.check("tools/list", None, ip("192.0.2.1")), Ok(()));
        }
        let wait = limit
            .check("tools/list", None, ip("192.0.2.1"))
            .unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(limit.check("tools/list", None, ip("192.0.2.2")), Ok(()));
    }

    #[test]
    fn a_tool_limit_applies_to_its_tools_only_and_the_route_limit_to_everyone() {
        let limit = RateLimit::new(&RateLimitConfig {
            route_requests_per_second: 1,
            route_burst: 4,
            tools: vec![ToolRateLimit {
                name: "search_*".into(),
                requests_per_second: 1,
                burst: 1,
            }],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            limit.check("tools/call", Some("search_web"), ip("192.0.2.1")),
            Ok(())
        );
        assert!(
            limit
                .check("tools/call", Some("search_web"), ip("192.0.2.1"))
                .is_err()
        );
        assert_eq!(
            limit.check("tools/call", Some("search_web"), ip("192.0.2.2")),
            Ok(())
        );
        assert_eq!(
            limit.check("tools/call", Some("echo"), ip("192.0.2.1")),
            Ok(())
        );
        // The route's 4 tokens: 3 taken above (the refused call took none of the route's).
        assert_eq!(limit.check("ping", None, ip("192.0.2.3")), Ok(()));
        assert!(
            limit.check("ping", None, ip("192.0.2.4")).is_err(),
            "route bucket empty"
        );
        assert!(!limit.wants("ping") || limit.route.is_some());
    }

    /// Review finding: every IPv6 address had a bucket of its own, so one host with a /64
    /// had unlimited fresh buckets.
    #[test]
    fn an_ipv6_64_shares_one_bucket() {
        let limit = RateLimit::new(&RateLimitConfig {
            client_requests_per_second: 1,
            client_burst: 1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(limit.check("ping", None, ip("2001:db8:1:2::1")), Ok(()));
        assert!(
            limit
                .check("ping", None, ip("2001:db8:1:2:ffff::9"))
                .is_err()
        );
        assert_eq!(limit.check("ping", None, ip("2001:db8:1:3::1")), Ok(()));
    }

    #[test]
    fn client_buckets_are_bounded_by_max_clients() {
        let limit = RateLimit::new(&RateLimitConfig {
            client_requests_per_second: 100,
            max_clients: 16,
            ..Default::default()
        })
        .unwrap();
        for i in 0..1000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = limit.check("ping", None, Some(addr));
        }
        assert!(limit.buckets() <= 16, "{}", limit.buckets());
    }
}
