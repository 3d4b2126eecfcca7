//! Active health checks (`proxy.health_check`, per route): every `health_check_interval_ms`,
//! each endpoint of a route that asks for them gets a JSON-RPC `ping` or an HTTP `GET`. A
//! failed check counts as a failure toward ejection ([`Endpoint::failed`]); a passed one
//! forgets the failures and ends an ejection at once ([`Endpoint::succeeded`]), so an endpoint
//! that came back gets work before its ejection would have run out.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use tokio_util::sync::CancellationToken;

use super::{Endpoint, Failure, Route, Routing};
use crate::{
    config::HealthCheck,
    proxy::{Shared, upstream::Upstream},
};

/// The body of a `ping` check.
const PING: &str = r#"{"jsonrpc":"2.0","id":"mcp-relay-health-check","method":"ping"}"#;

/// The protocol version a `ping` check names (the oldest one every current server takes).
const PING_VERSION: &str = "2025-06-18";

/// Most bytes of a check's answer read (the rest is dropped with its connection).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// When an endpoint's next check is due, and its check in flight.
type Due = (Instant, Option<tokio::task::JoinHandle<()>>);

/// Runs the active checks of `routing`'s current table until `stop`: each endpoint of a route
/// with a check is checked once per its route's interval, one check in flight per endpoint.
/// Checks go out through the main runtime's own clients (one per endpoint, counted in the
/// process's upstream connections of `shared`).
pub async fn run(routing: Arc<Routing>, shared: Shared, stop: CancellationToken) {
    let mut due: HashMap<(Arc<str>, Uri), Due> = HashMap::new();
    let mut clients: HashMap<(Arc<str>, Uri, u64), Upstream> = HashMap::new();
    loop {
        let table = routing.table();
        let now = Instant::now();
        // A set: `retain` below looks each checked endpoint up in it (a Vec made it quadratic
        // in the endpoints, every 100 ms on the main runtime).
        let mut live = std::collections::HashSet::new();
        for route in table.routes() {
            let config = route.config();
            if config.health_check == HealthCheck::None {
                continue;
            }
            for endpoint in route.pool() {
                let key = (route.name().clone(), endpoint.uri().clone());
                live.insert(key.clone());
                let entry = due.entry(key.clone()).or_insert((now, None));
                let busy = entry.1.as_ref().is_some_and(|t| !t.is_finished());
                if busy || entry.0 > now {
                    continue;
                }
                entry.0 = now + config.health_check_interval;
                let client = clients
                    .entry((key.0.clone(), key.1.clone(), table.generation()))
                    .or_insert_with(|| {
                        Upstream::for_endpoint(
                            config,
                            endpoint.uri().clone(),
                            shared.connections.clone(),
                            shared.stats.clone(),
                        )
                    })
                    .clone();
                let (route, endpoint) = (route.clone(), endpoint.clone());
                entry.1 = Some(tokio::spawn(async move {
                    check_once(&route, &endpoint, &client).await;
                }));
            }
        }
        due.retain(|key, _| live.contains(key));
        clients.retain(|(_, _, generation), _| *generation == table.generation());
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// How long a check may take: its interval, at least [`MIN_CHECK_TIMEOUT`] (a short interval
/// must not eject a live server that is briefly short of CPU), at most the route's
/// `upstream_response_timeout`. Checks of one endpoint never overlap.
fn check_timeout(config: &crate::config::ProxyConfig) -> Duration {
    config
        .health_check_interval
        .max(MIN_CHECK_TIMEOUT)
        .min(config.upstream_response_timeout)
}

/// The shortest time a health check is given.
pub const MIN_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One check of `endpoint` (of `route`), its outcome applied to the endpoint's health.
async fn check_once(route: &Route, endpoint: &Endpoint, client: &Upstream) {
    let config = route.config();
    let timeout = check_timeout(config);
    let request = match config.health_check {
        HealthCheck::None => return,
        HealthCheck::Ping => {
            let mut request = Request::new(Full::new(Bytes::from_static(PING.as_bytes())));
            *request.method_mut() = Method::POST;
            *request.uri_mut() = endpoint.uri().clone();
            let h = request.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(
                header::ACCEPT,
                HeaderValue::from_static("application/json, text/event-stream"),
            );
            h.insert(
                &crate::protocol::headers::MCP_PROTOCOL_VERSION,
                HeaderValue::from_static(PING_VERSION),
            );
            request
        }
        HealthCheck::Http => {
            let mut request = Request::new(Full::new(Bytes::new()));
            let path = if config.health_check_path.is_empty() {
                endpoint.uri().path()
            } else {
                &config.health_check_path
            };
            let mut parts = endpoint.uri().clone().into_parts();
            parts.path_and_query = path.parse().ok();
            *request.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| endpoint.uri().clone());
            request
        }
    };
    let outcome = tokio::time::timeout(timeout, async {
        let response = client.send(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        // Read (a bounded part of) the answer, so the connection can be reused.
        let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await;
        Ok::<_, String>(status)
    })
    .await;
    let passed = match (&outcome, config.health_check) {
        (Ok(Ok(status)), HealthCheck::Ping) => status.as_u16() < 500,
        (Ok(Ok(status)), _) => status.is_success(),
        _ => false,
    };
    if passed {
        endpoint.succeeded(true);
    } else {
        let why = match outcome {
            Ok(Ok(status)) => format!("status {status}"),
            Ok(Err(err)) => err,
            Err(_) => format!("no answer within {timeout:?}"),
        };
        tracing::debug!(route = %route.name(), endpoint = %endpoint.url(), why, "health check failed");
        endpoint.failed(Failure::HealthCheck);
    }
}
