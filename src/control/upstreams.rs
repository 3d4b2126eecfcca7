//! `mcprelay.admin.v1.UpstreamService`: the routes of the daemon's current route table and their
//! pools of endpoints, read from the endpoints' own atomics (what the balancer reads); operator
//! drains (`Endpoint::set_drained`); and the endpoint watch ([`super::watch::endpoints`]).
//! Pinned sessions are counted from the live SessionManager.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    convert::{endpoint_to_pb, pinned_sessions, route_to_pb},
    pb,
    watch::{self, EndpointWatch},
};
use crate::{
    proxy::route::{Endpoint, RouteTable, Routing},
    session::SessionManager,
};

/// The UpstreamService implementation.
#[derive(Debug, Clone)]
pub struct UpstreamAdmin {
    manager: Arc<SessionManager>,
    /// The daemon's routes; without them every call fails with FAILED_PRECONDITION.
    routing: Option<Arc<Routing>>,
    /// Ends the endpoint watches (daemon shutdown).
    stop: CancellationToken,
}

impl UpstreamAdmin {
    /// Serves `routing`'s routes, counting the sessions of `manager` pinned to each endpoint;
    /// watches end when `stop` fires.
    pub fn new(
        manager: Arc<SessionManager>,
        routing: Option<Arc<Routing>>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            manager,
            routing,
            stop,
        }
    }

    /// The route named `route` in the current table. Errors: INVALID_ARGUMENT when empty,
    /// NOT_FOUND when the table has no such route.
    fn route_named(&self, route: &str) -> Result<Arc<crate::proxy::route::Route>, Status> {
        if route.is_empty() {
            return Err(Status::invalid_argument(
                "route is required (a route's name)",
            ));
        }
        let table = self.routing()?.table();
        table
            .by_name(route)
            .cloned()
            .ok_or_else(|| route_not_found(&table, route))
    }

    fn routing(&self) -> Result<&Arc<Routing>, Status> {
        self.routing.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this control plane was started without the daemon's route table",
            )
        })
    }

    /// Drains or undrains the endpoint `url` of route `route` and returns it as it is then.
    fn set_drained(&self, route: &str, url: &str, drained: bool) -> Result<pb::Endpoint, Status> {
        if route.is_empty() {
            return Err(Status::invalid_argument(
                "route is required (a route's name)",
            ));
        }
        if url.is_empty() {
            return Err(Status::invalid_argument(
                "url is required (an endpoint's URL as ListEndpoints shows it)",
            ));
        }
        let routing = self.routing()?;
        let endpoint = find_endpoint(&routing.table(), route, url)?;
        let changed = endpoint.set_drained(drained);
        routing.touch();
        tracing::info!(
            route,
            endpoint = %endpoint.url(),
            drained,
            changed,
            "endpoint drain set by an operator",
        );
        let pinned = pinned_sessions(&self.manager.sessions());
        Ok(endpoint_to_pb(&endpoint, &pinned))
    }
}

/// The endpoint `url` of route `route` in `table` (pool or retired); NOT_FOUND names what is
/// missing.
fn find_endpoint(table: &RouteTable, route: &str, url: &str) -> Result<Arc<Endpoint>, Status> {
    let found = table
        .by_name(route)
        .ok_or_else(|| route_not_found(table, route))?;
    let i = found.endpoint_of(url).ok_or_else(|| {
        let urls: Vec<&str> = found.endpoints().iter().map(|e| &**e.url()).collect();
        Status::not_found(format!(
            "route {route:?} has no endpoint {url:?}; its endpoints: {urls:?}"
        ))
    })?;
    Ok(found.endpoints()[i].clone())
}

fn route_not_found(table: &RouteTable, route: &str) -> Status {
    let names: Vec<&str> = table.routes().iter().map(|r| &**r.name()).collect();
    Status::not_found(format!(
        "route {route:?} not found; the routes are {names:?}"
    ))
}

/// The endpoints of `table` (of the route named `route` only, unless empty) as the API shows
/// them, with the sessions of `manager` pinned to each.
pub fn endpoints_of(
    table: &RouteTable,
    route: &str,
    manager: &SessionManager,
) -> Vec<pb::Endpoint> {
    let pinned = pinned_sessions(&manager.sessions());
    table
        .routes()
        .iter()
        .filter(|r| route.is_empty() || &**r.name() == route)
        .flat_map(|r| r.endpoints())
        .map(|e| endpoint_to_pb(e, &pinned))
        .collect()
}

#[tonic::async_trait]
impl pb::upstream_service_server::UpstreamService for UpstreamAdmin {
    async fn list_routes(
        &self,
        _request: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        let table = self.routing()?.table();
        Ok(Response::new(pb::ListRoutesResponse {
            routes: table
                .routes()
                .iter()
                .map(|r| route_to_pb(r, table.generation()))
                .collect(),
            generation: table.generation(),
        }))
    }

    async fn list_endpoints(
        &self,
        request: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        let route = request.into_inner().route;
        let table = self.routing()?.table();
        if !route.is_empty() && table.by_name(&route).is_none() {
            return Err(route_not_found(&table, &route));
        }
        Ok(Response::new(pb::ListEndpointsResponse {
            endpoints: endpoints_of(&table, &route, &self.manager),
            generation: table.generation(),
        }))
    }

    async fn drain_endpoint(
        &self,
        request: Request<pb::DrainEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let req = request.into_inner();
        self.set_drained(&req.route, &req.url, true)
            .map(Response::new)
    }

    async fn undrain_endpoint(
        &self,
        request: Request<pb::UndrainEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let req = request.into_inner();
        self.set_drained(&req.route, &req.url, false)
            .map(Response::new)
    }

    type WatchEndpointsStream = EndpointWatch;

    async fn watch_endpoints(
        &self,
        request: Request<pb::WatchEndpointsRequest>,
    ) -> Result<Response<Self::WatchEndpointsStream>, Status> {
        let route = request.into_inner().route;
        let routing = self.routing()?.clone();
        if !route.is_empty() {
            let table = routing.table();
            if table.by_name(&route).is_none() {
                return Err(route_not_found(&table, &route));
            }
        }
        Ok(Response::new(watch::endpoints(
            routing,
            self.manager.clone(),
            route,
            self.stop.clone(),
        )))
    }

    async fn get_route_policy(
        &self,
        request: Request<pb::GetRoutePolicyRequest>,
    ) -> Result<Response<pb::RoutePolicy>, Status> {
        let found = self.route_named(&request.into_inner().route)?;
        Ok(Response::new(route_policy_to_pb(&found)))
    }

    async fn invalidate_cache(
        &self,
        request: Request<pb::InvalidateCacheRequest>,
    ) -> Result<Response<pb::InvalidateCacheResponse>, Status> {
        let route = request.into_inner().route;
        let found = self.route_named(&route)?;
        let cache = found.chain().and_then(|c| c.cache()).ok_or_else(|| {
            Status::failed_precondition(format!("route {route:?} has no cache (cache.enabled)"))
        })?;
        let invalidated = cache.clear() as u64;
        tracing::info!(route = %route, invalidated, "cache invalidated through the control plane");
        Ok(Response::new(pb::InvalidateCacheResponse { invalidated }))
    }
}

/// A route's interceptors as the API shows them.
fn route_policy_to_pb(route: &crate::proxy::route::Route) -> pb::RoutePolicy {
    let config = route.config();
    let policy = &config.policy;
    let limits = &config.rate_limit;
    let chain = route.chain();
    let rate_limit = (!limits.is_empty()).then(|| pb::RateLimits {
        client_requests_per_second: limits.client_requests_per_second,
        client_burst: limits.client_burst,
        route_requests_per_second: limits.route_requests_per_second,
        route_burst: limits.route_burst,
        tools: limits
            .tools
            .iter()
            .map(|t| pb::ToolRateLimit {
                name: t.name.clone(),
                requests_per_second: t.requests_per_second,
                burst: t.burst,
            })
            .collect(),
        max_clients: limits.max_clients as u64,
        client_buckets: chain.map_or(0, |c| c.buckets() as u64),
    });
    pb::RoutePolicy {
        route: route.name().to_string(),
        allow_tools: policy.allow_tools.clone(),
        deny_tools: policy.deny_tools.clone(),
        allow_resources: policy.allow_resources.clone(),
        deny_resources: policy.deny_resources.clone(),
        allow_prompts: policy.allow_prompts.clone(),
        deny_prompts: policy.deny_prompts.clone(),
        rate_limit,
        cache: chain.and_then(|c| c.cache()).map(|cache| {
            let (entries, bytes) = cache.size();
            let stats = &cache.stats;
            let read =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            pb::CacheState {
                max_entries: config.cache.max_entries as u64,
                max_bytes: config.cache.max_bytes as u64,
                max_ttl: Some(prost_types::Duration {
                    seconds: (config.cache.max_ttl_ms / 1000) as i64,
                    nanos: ((config.cache.max_ttl_ms % 1000) * 1_000_000) as i32,
                }),
                entries: entries as u64,
                bytes: bytes as u64,
                hits: read(&stats.hits),
                misses: read(&stats.misses),
                stores: read(&stats.stores),
                evictions: read(&stats.evictions),
                invalidations: read(&stats.invalidations),
            }
        }),
        interceptors: chain
            .into_iter()
            .flat_map(|c| c.decisions())
            .map(|(name, d)| {
                let [passed, changed, answered, dropped] = d.counts().map(|(_, n)| n);
                pb::InterceptorDecisions {
                    name: name.to_owned(),
                    passed,
                    changed,
                    answered,
                    dropped,
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use http::Uri;

    use super::*;
    use crate::{
        config::{Config, RouteConfig},
        proxy::route::LatencyHistograms,
        session::{PersistenceWorker, SessionConfig, WorkerConfig, store::MemoryStore},
    };
    use pb::upstream_service_server::UpstreamService as _;

    fn service(routing: Option<Arc<Routing>>) -> (UpstreamAdmin, Arc<SessionManager>) {
        let (_worker, handle) =
            PersistenceWorker::new(Arc::new(MemoryStore::new()), WorkerConfig::default());
        let manager = Arc::new(SessionManager::new(SessionConfig::default(), handle));
        (
            UpstreamAdmin::new(manager.clone(), routing, CancellationToken::new()),
            manager,
        )
    }

    fn routing() -> Arc<Routing> {
        let mut config = Config::new(Uri::default());
        config.routes = vec![
            RouteConfig::new("/a", ["http://h:1/".to_owned(), "http://h:2/".to_owned()]),
            RouteConfig::new("/b", ["http://h:1/".to_owned()]),
        ];
        Routing::new(&config, LatencyHistograms::default())
    }

    #[tokio::test]
    async fn sessions_are_counted_on_their_route_and_endpoint() {
        let (admin, manager) = service(Some(routing()));
        for (route, upstream) in [
            ("/a", "http://h:1/"),
            ("/a", "http://h:1/"),
            ("/b", "http://h:1/"),
            ("", "http://h:2/"),
        ] {
            manager
                .create_session(
                    http::HeaderValue::from_static("up"),
                    route.into(),
                    upstream.into(),
                    "2025-11-25",
                )
                .expect("session");
        }
        let listed = admin
            .list_endpoints(Request::new(pb::ListEndpointsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        let pinned: Vec<(&str, &str, u64)> = listed
            .endpoints
            .iter()
            .map(|e| (e.route.as_str(), e.url.as_str(), e.sessions_pinned))
            .collect();
        assert_eq!(
            pinned,
            [
                ("/a", "http://h:1/", 2),
                ("/a", "http://h:2/", 1),
                ("/b", "http://h:1/", 1)
            ]
        );
    }

    #[tokio::test]
    async fn drains_check_their_arguments_and_need_the_route_table() {
        let routing = routing();
        let (admin, _) = service(Some(routing.clone()));
        let drain = |route: &str, url: &str| {
            admin.drain_endpoint(Request::new(pb::DrainEndpointRequest {
                route: route.to_owned(),
                url: url.to_owned(),
            }))
        };
        let version = routing.version();
        let drained = drain("/a", "http://h:2/").await.unwrap().into_inner();
        assert!(drained.drained);
        assert!(routing.version() > version, "watchers see the drain");
        let table = routing.table();
        assert!(table.by_name("/a").unwrap().pool()[1].is_drained());
        assert!(
            !table.by_name("/b").unwrap().pool()[0].is_drained(),
            "the same URL in another route is another endpoint"
        );
        for (route, url, code) in [
            ("", "http://h:2/", tonic::Code::InvalidArgument),
            ("/a", "", tonic::Code::InvalidArgument),
            ("/nope", "http://h:2/", tonic::Code::NotFound),
            ("/b", "http://h:2/", tonic::Code::NotFound),
        ] {
            assert_eq!(
                drain(route, url).await.unwrap_err().code(),
                code,
                "{route} {url}"
            );
        }
        let (without, _) = service(None);
        let status = without
            .list_routes(Request::new(pb::ListRoutesRequest {}))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    }
}
