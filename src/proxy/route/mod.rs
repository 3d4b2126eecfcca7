//! Routes and their pools (DESIGN.md, "The gateway around the core"): which endpoint path goes
//! to which pool of upstream endpoints, how a request picks one (power of two choices over
//! outstanding requests, by weight), and the table swapped whole on reload.
//!
//! - [`Route`]: a path, its effective settings, its pool of [`Endpoint`]s (shared by every
//!   data-plane thread), and the endpoints a reload removed that sessions are still pinned to
//!   (retired: they get no new work).
//! - [`RouteTable`]: every route of one configuration generation, by path.
//! - [`Routing`]: the current table, swapped atomically ([`Routing::reload`]); each data-plane
//!   thread builds its [`super::Proxy`] per route from it when its generation changes
//!   ([`ThreadRoutes`]).

mod ender;
pub mod endpoint;
pub mod health;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use axum::{
    Router,
    extract::{Request, State},
    response::Response,
};
use http::Uri;
use parking_lot::Mutex;

pub use ender::RoutingEnder;
pub use endpoint::{EjectionPolicy, Endpoint, Failure, Outstanding};

use super::{Proxy, Shared, auth::ResourceServer, intercept::Chain};
use crate::{
    config::{Config, ProxyConfig, ResolvedRoute},
    session::SessionManager,
};

/// One route of a generation: its name, exact path, effective settings and endpoints.
#[derive(Debug)]
pub struct Route {
    name: Arc<str>,
    /// Names it had before reloads renamed it (most recent first, at most [`MAX_ALIASES`]):
    /// sessions created under them are still its own.
    aliases: Vec<Arc<str>>,
    path: String,
    config: ProxyConfig,
    /// The pool (`pool` of them, in configuration order), then retired endpoints.
    endpoints: Vec<Arc<Endpoint>>,
    pool: usize,
    /// Its interceptors ([`crate::proxy::intercept`]); `None`: none configured.
    chain: Option<Arc<Chain>>,
    /// Its resource server (`[routes.auth] mode = "resource_server"`); `None`: transparent.
    auth: Option<Arc<ResourceServer>>,
}

impl Route {
    /// A route with a fresh pool for `resolved`.
    fn new(resolved: &ResolvedRoute, latency: &LatencyHistograms) -> Self {
        let name: Arc<str> = resolved.name.as_str().into();
        let policy = EjectionPolicy::of(&resolved.proxy);
        let endpoints: Vec<_> = resolved
            .endpoints
            .iter()
            .map(|(uri, weight)| {
                Endpoint::with_latency(
                    name.clone(),
                    uri.clone(),
                    *weight,
                    policy,
                    latency.histogram(&name, uri),
                )
            })
            .collect();
        let auth = ResourceServer::for_route(&resolved.proxy);
        Self {
            chain: Chain::for_route(name.clone(), &resolved.proxy, auth.as_ref()),
            auth,
            name,
            aliases: Vec::new(),
            path: resolved.path.clone(),
            config: resolved.proxy.clone(),
            pool: endpoints.len(),
            endpoints,
        }
    }

    /// A route of one endpoint at `config.upstream`, served at `config.endpoint_path` and
    /// named after it: the `proxy.upstream` shorthand, and what [`Proxy::new`] serves.
    pub fn single(config: &ProxyConfig) -> Arc<Self> {
        let resolved = ResolvedRoute {
            name: config.endpoint_path.clone(),
            path: config.endpoint_path.clone(),
            endpoints: vec![(config.upstream.clone(), 1)],
            proxy: config.clone(),
        };
        Arc::new(Self::new(&resolved, &LatencyHistograms::default()))
    }

    /// Its name (the path unless configured).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Whether a session recorded under route name `name` is this route's: its name, or one
    /// it had before a reload renamed it.
    pub fn answers_to(&self, name: &str) -> bool {
        &*self.name == name || self.aliases.iter().any(|a| &**a == name)
    }

    /// Its endpoint path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Its effective settings (`upstream` is its first endpoint).
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// Its interceptor chain; `None` when it has no interceptor.
    pub fn chain(&self) -> Option<&Arc<Chain>> {
        self.chain.as_ref()
    }

    /// Its resource server; `None` when the upstream validates tokens (transparent).
    pub fn auth(&self) -> Option<&Arc<ResourceServer>> {
        self.auth.as_ref()
    }

    /// Its pool's endpoints, then the retired ones (see [`Route::pool`]).
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Its pool: the endpoints that may get new work.
    pub fn pool(&self) -> &[Arc<Endpoint>] {
        &self.endpoints[..self.pool]
    }

    /// The index (in [`Route::endpoints`]) of the endpoint whose URL, as sessions record it, is
    /// `url`: in the pool or retired.
    pub fn endpoint_of(&self, url: &str) -> Option<usize> {
        self.endpoints.iter().position(|e| &**e.url() == url)
    }

    /// Picks the pool endpoint for new work: of two distinct endpoints drawn at random among
    /// the available ones (not drained, not ejected; not `exclude`), the one with fewer
    /// outstanding requests per unit of weight (power of two choices, as linkerd and Envoy's
    /// least-request balancer). `None` when none is available.
    pub fn pick(&self, exclude: Option<usize>) -> Option<usize> {
        let pool = self.pool();
        let usable = |i: usize| Some(i) != exclude && pool[i].is_available();
        match pool.len() {
            0 => return None,
            1 => return usable(0).then_some(0),
            _ => {}
        }
        // The common case: two draws among all, both usable.
        let n = pool.len();
        let a = fastrand::usize(..n);
        let b = (a + 1 + fastrand::usize(..n - 1)) % n;
        if usable(a) && usable(b) {
            return Some(self.lighter(a, b));
        }
        // Some are not: draw two among the usable ones, by their rank among them (no bound on
        // the pool's size: a `Config` built by code skips the file's checks).
        let len = (0..n).filter(|&i| usable(i)).count();
        let nth_usable = |k: usize| (0..n).filter(|&i| usable(i)).nth(k);
        match len {
            0 => None,
            1 => nth_usable(0),
            _ => {
                let a = fastrand::usize(..len);
                let b = (a + 1 + fastrand::usize(..len - 1)) % len;
                Some(self.lighter(nth_usable(a)?, nth_usable(b)?))
            }
        }
    }

    /// Of endpoints `a` and `b`, the one with fewer outstanding requests per unit of weight.
    fn lighter(&self, a: usize, b: usize) -> usize {
        let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
        // outstanding_a / weight_a <= outstanding_b / weight_b, without division.
        let la = ea.outstanding() as u64 * u64::from(eb.weight());
        let lb = eb.outstanding() as u64 * u64::from(ea.weight());
        if la <= lb { a } else { b }
    }
}

/// Most earlier names a route remembers ([`Route::answers_to`]).
pub const MAX_ALIASES: usize = 8;

/// Every route of one configuration generation.
#[derive(Debug, Default)]
pub struct RouteTable {
    generation: u64,
    routes: Vec<Arc<Route>>,
    by_path: HashMap<String, usize>,
    /// The route at `proxy.endpoint_path`, else the only one: see [`RouteTable::root`].
    root: Option<usize>,
}

impl RouteTable {
    /// The table of `routes`, its root route the one at `endpoint_path` (`proxy.endpoint_path`)
    /// or the only one.
    fn new(generation: u64, routes: Vec<Arc<Route>>, endpoint_path: &str) -> Self {
        let by_path: HashMap<String, usize> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.path.clone(), i))
            .collect();
        let root = by_path
            .get(endpoint_path)
            .copied()
            .or((routes.len() == 1).then_some(0));
        Self {
            generation,
            routes,
            by_path,
            root,
        }
    }

    /// The generation: 1 for the first table, one more at each reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The routes, in configuration order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The route served at exactly `path`.
    pub fn by_path(&self, path: &str) -> Option<&Arc<Route>> {
        self.by_path.get(path).map(|&i| &self.routes[i])
    }

    /// The route whose discovery documents the relay's root well-known URLs answer (the
    /// root form of RFC 9728 §3.1, `proxy::oauth`): the route at `proxy.endpoint_path`, else
    /// the only route; `None` when there are several and none is there.
    pub fn root(&self) -> Option<&Arc<Route>> {
        self.root.map(|i| &self.routes[i])
    }

    /// The route named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| &*r.name == name)
    }

    /// Every endpoint of every route (pools and retired).
    pub fn endpoints(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.routes.iter().flat_map(|r| r.endpoints.iter())
    }
}

/// Makes the latency histogram of each endpoint (label set `route`, `endpoint`: bounded by the
/// configuration); the default records nowhere.
#[derive(Clone, Default)]
pub struct LatencyHistograms(Option<Arc<MakeHistogram>>);

/// Makes the histogram of one endpoint: `(route, endpoint URL)`.
type MakeHistogram = dyn Fn(&str, &str) -> metrics::Histogram + Send + Sync;

impl LatencyHistograms {
    /// Histograms made by `make(route, endpoint URL)`.
    pub fn new(make: impl Fn(&str, &str) -> metrics::Histogram + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(make)))
    }

    fn histogram(&self, route: &str, uri: &Uri) -> metrics::Histogram {
        match &self.0 {
            Some(make) => {
                let text = uri.to_string();
                let url = crate::config::file::redact_url(&text).unwrap_or(text);
                make(route, &url)
            }
            None => metrics::Histogram::noop(),
        }
    }
}

impl std::fmt::Debug for LatencyHistograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LatencyHistograms")
    }
}

/// The daemon's routes: the current [`RouteTable`], replaced whole by [`Routing::reload`].
/// Readers load it without a lock; a request keeps the generation it started with.
#[derive(Debug)]
pub struct Routing {
    table: ArcSwap<RouteTable>,
    latency: LatencyHistograms,
    /// Serializes reloads.
    reloading: Mutex<()>,
    /// Bumped when an endpoint's state changes through the control plane or a reload.
    changes: AtomicU64,
}

/// What a reload changed, for its log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The new generation.
    pub generation: u64,
    /// Routes (by name) in the new table and not the old.
    pub routes_added: Vec<String>,
    /// Routes (by name) in the old table and not the new.
    pub routes_removed: Vec<String>,
    /// Endpoints new to their route.
    pub endpoints_added: usize,
    /// Endpoints removed from their route's pool (retired while sessions are pinned to them).
    pub endpoints_removed: usize,
}

impl Routing {
    /// The routes of `config` ([`Config::resolved_routes`]), generation 1.
    pub fn new(config: &Config, latency: LatencyHistograms) -> Arc<Self> {
        let routes = config
            .resolved_routes()
            .iter()
            .map(|r| Arc::new(Route::new(r, &latency)))
            .collect();
        Arc::new(Self {
            table: ArcSwap::from_pointee(RouteTable::new(1, routes, &config.proxy.endpoint_path)),
            latency,
            reloading: Mutex::new(()),
            changes: AtomicU64::new(0),
        })
    }

    /// The current table.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// The current generation (cheaper than [`Routing::table`]).
    pub fn generation(&self) -> u64 {
        self.table.load().generation
    }

    /// A counter of state changes (reloads, drains) plus every endpoint's own, for watchers:
    /// it moves when anything they show may have.
    pub fn version(&self) -> u64 {
        let table = self.table.load();
        table.endpoints().fold(
            self.changes.load(Ordering::Relaxed) + table.generation,
            |v, e| v.wrapping_add(e.version()),
        )
    }

    /// Swaps in the routes of `config`. A route keeps its name's endpoints whose URL stays in
    /// its pool (counters, health and outstanding requests go on; weight and ejection policy
    /// are the new ones); an endpoint removed from its pool is kept as retired while
    /// `pinned(route, endpoint URL)` says sessions are still pinned to it, so they keep their
    /// endpoint until they end; new requests use the new table at once.
    pub fn reload(&self, config: &Config, pinned: impl Fn(&str, &str) -> bool) -> Reloaded {
        let _one_at_a_time = self.reloading.lock();
        let old = self.table.load_full();
        let generation = old.generation + 1;
        let mut reloaded = Reloaded {
            generation,
            ..Reloaded::default()
        };
        let resolved_routes = config.resolved_routes();
        let mut routes = Vec::new();
        for resolved in &resolved_routes {
            // The same route: by name, or by path when it was (re)named and its old name is
            // not another route's now.
            let previous = old.by_name(&resolved.name).or_else(|| {
                old.by_path(&resolved.path)
                    .filter(|p| !resolved_routes.iter().any(|r| *r.name == *p.name))
            });
            let Some(previous) = previous else {
                reloaded.routes_added.push(resolved.name.clone());
                reloaded.endpoints_added += resolved.endpoints.len();
                routes.push(Arc::new(Route::new(resolved, &self.latency)));
                continue;
            };
            let mut aliases = previous.aliases.clone();
            let name: Arc<str> = if *previous.name == *resolved.name {
                previous.name.clone()
            } else {
                aliases.insert(0, previous.name.clone());
                aliases.truncate(MAX_ALIASES);
                for e in &previous.endpoints {
                    e.set_route(resolved.name.as_str().into());
                }
                resolved.name.as_str().into()
            };
            let policy = EjectionPolicy::of(&resolved.proxy);
            let mut endpoints: Vec<Arc<Endpoint>> = resolved
                .endpoints
                .iter()
                .map(
                    |(uri, weight)| match previous.endpoints.iter().find(|e| e.uri() == uri) {
                        Some(kept) => {
                            kept.set_weight(*weight);
                            kept.set_policy(policy);
                            kept.set_retired(false);
                            kept.clone()
                        }
                        None => {
                            reloaded.endpoints_added += 1;
                            Endpoint::with_latency(
                                name.clone(),
                                uri.clone(),
                                *weight,
                                policy,
                                self.latency.histogram(&name, uri),
                            )
                        }
                    },
                )
                .collect();
            let pool = endpoints.len();
            for gone in previous
                .endpoints
                .iter()
                .filter(|e| !resolved.endpoints.iter().any(|(uri, _)| e.uri() == uri))
            {
                if !gone.is_retired() {
                    reloaded.endpoints_removed += 1;
                }
                let names = std::iter::once(&name).chain(&aliases);
                if names.into_iter().any(|n| pinned(n, gone.url())) {
                    gone.set_retired(true);
                    endpoints.push(gone.clone());
                }
            }
            // The same resource-server settings keep the keys and accepted tokens; the
            // credential file is read again either way.
            let auth = match &previous.auth {
                Some(auth)
                    if previous.config.auth == resolved.proxy.auth
                        && resolved.proxy.auth.upstream_authorization_file.is_none()
                        && previous.config.public_url == resolved.proxy.public_url =>
                {
                    Some(auth.clone())
                }
                _ => ResourceServer::for_route(&resolved.proxy),
            };
            // The same interceptors (policy, limits, cache unchanged, the same resource
            // server) keep their state and counters; any change builds the chain anew.
            let same = |a: &ProxyConfig, b: &ProxyConfig| {
                a.policy == b.policy && a.rate_limit == b.rate_limit && a.cache == b.cache
            };
            let same_auth = match (&previous.auth, &auth) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            let chain =
                if previous.name == name && same(&previous.config, &resolved.proxy) && same_auth {
                    previous.chain.clone()
                } else {
                    Chain::for_route(name.clone(), &resolved.proxy, auth.as_ref())
                };
            routes.push(Arc::new(Route {
                name,
                aliases,
                path: resolved.path.clone(),
                config: resolved.proxy.clone(),
                endpoints,
                pool,
                chain,
                auth,
            }));
        }
        for route in old.routes() {
            if !routes.iter().any(|r| r.name == route.name) {
                reloaded.routes_removed.push(route.name.to_string());
            }
        }
        // `version` sums the endpoints' own versions: those the new table drops take theirs
        // away, so the change counter takes them in, and the version still moves.
        let kept: std::collections::HashSet<*const Endpoint> = routes
            .iter()
            .flat_map(|r| r.endpoints.iter().map(Arc::as_ptr))
            .collect();
        let dropped = old
            .endpoints()
            .filter(|e| !kept.contains(&Arc::as_ptr(e)))
            .fold(0u64, |v, e| v.wrapping_add(e.version()));
        self.table.store(Arc::new(RouteTable::new(
            generation,
            routes,
            &config.proxy.endpoint_path,
        )));
        self.changes
            .fetch_add(dropped.wrapping_add(1), Ordering::Relaxed);
        reloaded
    }

    /// The endpoint named by a session: of route `route` (any route when empty, for a record
    /// written before routes existed) with URL `url`, in the current table.
    pub fn find_endpoint(&self, route: &str, url: &str) -> Option<(Arc<Route>, Arc<Endpoint>)> {
        let table = self.table();
        table
            .routes()
            .iter()
            .filter(|r| route.is_empty() || r.answers_to(route))
            .find_map(|r| {
                let i = r.endpoint_of(url)?;
                Some((r.clone(), r.endpoints[i].clone()))
            })
    }

    /// Notes a change watchers should see (a drain through the control plane).
    pub fn touch(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }
}

/// One data-plane thread's proxies, one per route of the current generation, rebuilt when the
/// generation changes (each thread keeps its own upstream connections).
#[derive(Debug)]
pub struct ThreadRoutes {
    routing: Arc<Routing>,
    manager: Arc<SessionManager>,
    shared: Shared,
    built: ArcSwap<ThreadTable>,
}

#[derive(Debug, Default)]
struct ThreadTable {
    generation: u64,
    proxies: HashMap<String, Arc<Proxy>>,
    /// The proxy answering the discovery documents of each resource path
    /// ([`super::oauth::discovery_paths`]).
    discovery: HashMap<String, Arc<Proxy>>,
}

impl ThreadRoutes {
    /// The routes of `routing` on this thread, with sessions in `manager` and what the threads
    /// share in `shared`.
    pub fn new(routing: Arc<Routing>, manager: Arc<SessionManager>, shared: Shared) -> Arc<Self> {
        Arc::new(Self {
            routing,
            manager,
            shared,
            built: ArcSwap::from_pointee(ThreadTable::default()),
        })
    }

    /// The proxy serving `path` in the current generation.
    fn proxy_for(&self, path: &str) -> Option<Arc<Proxy>> {
        self.find(|built| built.proxies.get(path))
    }

    /// The proxy answering the discovery documents of the resource at `path` (`""`: the
    /// root form) in the current generation.
    fn discovery_for(&self, path: &str) -> Option<Arc<Proxy>> {
        self.find(|built| built.discovery.get(path))
    }

    /// What `pick` finds in this thread's table of the current generation (rebuilt first when
    /// the generation moved).
    fn find(&self, pick: impl Fn(&ThreadTable) -> Option<&Arc<Proxy>>) -> Option<Arc<Proxy>> {
        let generation = self.routing.generation();
        let built = self.built.load();
        if built.generation == generation {
            return pick(&built).cloned();
        }
        drop(built);
        pick(&self.rebuild()).cloned()
    }

    /// This thread's proxies for the current table, stored for the next requests.
    fn rebuild(&self) -> Arc<ThreadTable> {
        let table = self.routing.table();
        let proxies = table
            .routes()
            .iter()
            .map(|route| {
                let proxy = Proxy::for_route(route.clone(), self.manager.clone(), &self.shared);
                (route.path.clone(), Arc::new(proxy))
            })
            .collect::<HashMap<_, _>>();
        let built = Arc::new(ThreadTable {
            generation: table.generation,
            discovery: super::oauth::discovery_paths(&table, &proxies),
            proxies,
        });
        self.built.store(built.clone());
        built
    }

    /// The axum router of this thread: every route's path, matched exactly at each request
    /// against the current generation, and each route's OAuth discovery documents under
    /// `/.well-known/` ([`super::oauth`]); any other path gets `404` with a JSON-RPC error.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(dispatch).with_state(self)
    }
}

async fn dispatch(State(routes): State<Arc<ThreadRoutes>>, request: Request) -> Response {
    let well_known = super::oauth::WellKnown::parse(request.uri().path())
        .map(|(document, path)| (document, routes.discovery_for(path)));
    match well_known {
        Some((document, Some(proxy))) => return proxy.serve_well_known(document, request).await,
        Some((_, None)) => return super::no_endpoint(request).await,
        None => {}
    }
    match routes.proxy_for(request.uri().path()) {
        Some(proxy) => super::handle(State(proxy), request).await,
        None => super::no_endpoint(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteConfig;

    fn config(routes: &[(&str, &[&str])]) -> Config {
        let mut config = Config::new(Uri::default());
        config.routes = routes
            .iter()
            .map(|(path, urls)| RouteConfig::new(*path, urls.iter().map(|u| u.to_string())))
            .collect();
        config
    }

    #[test]
    fn power_of_two_choices_prefers_the_less_loaded_and_skips_the_unavailable() {
        let routing = Routing::new(
            &config(&[("/a", &["http://h:1/", "http://h:2/", "http://h:3/"])]),
            LatencyHistograms::default(),
        );
        let table = routing.table();
        let route = table.by_path("/a").unwrap();
        let pool = route.pool();
        // Endpoint 0 is loaded: it is never the lighter of a pair that includes another.
        let _held: Vec<_> = (0..5).map(|_| pool[0].begin()).collect();
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[route.pick(None).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 1000 && counts[2] > 1000, "{counts:?}");
        // Drained and ejected endpoints get nothing; none available: None.
        pool[1].set_drained(true);
        assert!((0..100).all(|_| route.pick(None) != Some(1)));
        assert_eq!(
            route.pick(Some(2)),
            Some(0),
            "only 0 is left besides the excluded"
        );
        pool[0].set_drained(true);
        pool[2].set_drained(true);
        assert_eq!(route.pick(None), None);
    }

    /// `Routing::version` is what `WatchEndpoints` compares: a reload must move it. Here the
    /// reload swaps an endpoint whose own version was 2 (an operator drained and undrained it)
    /// for a new one: the generation and the change counter add 2, the dropped endpoint takes
    /// 2 away, and without care the sum is the same.
    #[test]
    fn a_reload_always_moves_the_version() {
        let routing = Routing::new(
            &config(&[("/a", &["http://h:1/", "http://h:2/"])]),
            LatencyHistograms::default(),
        );
        let gone = routing.table().by_path("/a").unwrap().pool()[1].clone();
        gone.set_drained(true);
        gone.set_drained(false);
        let before = routing.version();
        routing.reload(
            &config(&[("/a", &["http://h:1/", "http://h:3/"])]),
            |_, _| false,
        );
        assert_ne!(
            routing.version(),
            before,
            "a watcher comparing versions would not see the new table"
        );
    }

    /// A pool of more than `MAX_ENDPOINTS` (a `Config` built by code: `Daemon::start_with`
    /// does not run the file checks) with one endpoint unavailable is still balanced.
    #[test]
    fn a_pool_past_max_endpoints_with_one_unavailable_does_not_panic() {
        let urls: Vec<String> = (0..crate::config::routes::MAX_ENDPOINTS + 2)
            .map(|i| format!("http://h:{}/", i + 1))
            .collect();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let routing = Routing::new(
            &config(&[("/a", urls.as_slice())]),
            LatencyHistograms::default(),
        );
        let table = routing.table();
        let route = table.by_path("/a").unwrap();
        route.pool()[0].set_drained(true);
        for _ in 0..2000 {
            let picked = route.pick(None).expect("an endpoint");
            assert_ne!(picked, 0, "the drained one");
        }
    }

    /// Review finding: a reload that changed a route's rate limits or cache (not its policy)
    /// kept the old chain, enforcing the old limits.
    #[test]
    fn a_reload_that_changes_limits_or_cache_builds_a_new_chain() {
        let mut cfg = config(&[("/a", &["http://h:1/"])]);
        cfg.routes[0].rate_limit = Some(crate::config::RateLimitConfig {
            client_requests_per_second: 10,
            ..Default::default()
        });
        let routing = Routing::new(&cfg, LatencyHistograms::default());
        let chain = |r: &Routing| r.table().by_path("/a").unwrap().chain().cloned();
        let before = chain(&routing).expect("a chain");
        routing.reload(&cfg, |_, _| false);
        assert!(
            Arc::ptr_eq(&before, &chain(&routing).unwrap()),
            "unchanged: kept"
        );
        cfg.routes[0]
            .rate_limit
            .as_mut()
            .unwrap()
            .client_requests_per_second = 1;
        routing.reload(&cfg, |_, _| false);
        assert!(
            !Arc::ptr_eq(&before, &chain(&routing).unwrap()),
            "limits changed"
        );
        cfg.routes[0].rate_limit = None;
        routing.reload(&cfg, |_, _| false);
        assert!(chain(&routing).is_none(), "nothing configured: no chain");
        cfg.routes[0].cache = Some(crate::config::CacheConfig {
            enabled: true,
            ..Default::default()
        });
        routing.reload(&cfg, |_, _| false);
        assert!(
            chain(&routing).and_then(|c| c.cache().cloned()).is_some(),
            "cache enabled"
        );
    }

    #[test]
    fn a_reload_keeps_endpoints_by_url_and_retires_pinned_ones() {
        let routing = Routing::new(
            &config(&[("/a", &["http://h:1/", "http://h:2/"])]),
            LatencyHistograms::default(),
        );
        let before = routing.table();
        let kept = before.by_path("/a").unwrap().pool()[0].clone();
        kept.begin(); // dropped at once: counted in requests
        let reloaded = routing.reload(
            &config(&[("/a", &["http://h:1/"]), ("/b", &["http://h:3/"])]),
            |_, url| url == "http://h:2/",
        );
        assert_eq!(reloaded.generation, 2);
        assert_eq!(reloaded.routes_added, ["/b"]);
        assert_eq!(reloaded.endpoints_removed, 1);
        let after = routing.table();
        let a = after.by_path("/a").unwrap();
        assert!(Arc::ptr_eq(&a.pool()[0], &kept), "same endpoint state");
        assert_eq!(a.pool().len(), 1);
        assert_eq!(a.endpoints().len(), 2, "the pinned one is retired, kept");
        assert!(a.endpoints()[1].is_retired() && !a.endpoints()[1].is_available());
        assert!(after.by_path("/b").is_some());
        // Not pinned any more: dropped at the next reload.
        routing.reload(
            &config(&[("/a", &["http://h:1/"]), ("/b", &["http://h:3/"])]),
            |_, _| false,
        );
        assert_eq!(routing.table().by_path("/a").unwrap().endpoints().len(), 1);
    }
}
