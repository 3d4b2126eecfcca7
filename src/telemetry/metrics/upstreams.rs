//! Per route and endpoint series (and per route interceptor decisions), copied at scrape time from the endpoints' atomics
//! ([`crate::proxy::route::Endpoint`]), labelled `route` (its name) and `endpoint` (its URL,
//! passwords masked): label sets bounded by the configuration, never by client input. The
//! latency histogram is recorded by the data plane itself (its handles are made here,
//! [`Metrics::latency_histograms`]).

use super::*;
use crate::proxy::route::{LatencyHistograms, Routing};

/// Time from an upstream request sent to its response head, per endpoint.
pub(super) const UPSTREAM_DURATION: &str = "mcp_relay_upstream_request_duration_seconds";

/// Counters per endpoint: name, help, read.
type Read = fn(&crate::proxy::route::Endpoint) -> u64;

const COUNTERS: &[(&str, &str, Read)] = &[
    (
        "mcp_relay_upstream_requests_total",
        "Requests sent to each upstream endpoint (each attempt; a retry counts at both), by route and endpoint.",
        |e| e.requests.load(Ordering::Relaxed),
    ),
    (
        "mcp_relay_upstream_failures_total",
        "Failures of each upstream endpoint: no connection, a broken exchange, no answer in time, a 5xx, a failed health check.",
        |e| e.failures.load(Ordering::Relaxed),
    ),
    (
        "mcp_relay_upstream_ejections_total",
        "Times each upstream endpoint was ejected from its pool after consecutive failures.",
        |e| u64::from(e.ejections()),
    ),
    (
        "mcp_relay_upstream_retries_total",
        "Requests that failed on this endpoint before it could have seen them and were sent once more to another.",
        |e| e.retried.load(Ordering::Relaxed),
    ),
    (
        "mcp_relay_upstream_sessions_lost_total",
        "Legacy sessions answered 404 (and ended) because their endpoint was gone; their clients re-initialize.",
        |e| e.sessions_lost.load(Ordering::Relaxed),
    ),
];

const GAUGES: &[(&str, &str, Read)] = &[
    (
        "mcp_relay_upstream_outstanding_requests",
        "Requests outstanding at each upstream endpoint (an SSE stream counts until it ends): what the balancer compares.",
        |e| e.outstanding() as u64,
    ),
    (
        "mcp_relay_upstream_ejected",
        "1 while an upstream endpoint is ejected from its pool, else 0.",
        |e| u64::from(e.is_ejected()),
    ),
    (
        "mcp_relay_upstream_drained",
        "1 while an operator has drained an upstream endpoint (DrainEndpoint), else 0.",
        |e| u64::from(e.is_drained()),
    ),
];

impl Metrics {
    /// Exports `routing`'s endpoints at each render.
    pub fn watch_routing(&self, routing: Arc<Routing>) {
        self.recorder.describe_histogram(
            KeyName::from_const_str(UPSTREAM_DURATION),
            Some(Unit::Seconds),
            "Time from a request sent to an upstream endpoint to its response head, by route and endpoint."
                .into(),
        );
        *self.routing.lock() = Some(routing);
    }

    /// The latency histograms of endpoints, registered with this recorder.
    pub fn latency_histograms(self: &Arc<Self>) -> LatencyHistograms {
        let metrics = Arc::downgrade(self);
        LatencyHistograms::new(move |route, endpoint| match metrics.upgrade() {
            Some(metrics) => metrics.recorder.register_histogram(
                &Key::from_parts(UPSTREAM_DURATION, labels(route, endpoint)),
                &METADATA,
            ),
            None => Histogram::noop(),
        })
    }

    /// `rendered` (the recorder's text) with the endpoints of the current route table: their
    /// counters and gauges written here from their atomics, and the latency histograms of
    /// endpoints no longer in the table left out. The recorder never forgets a series, so
    /// these are not registered with it: an endpoint a reload removed must not stay exported
    /// (an `ejected` 1 alerting for ever, label sets growing with every URL ever configured).
    pub(super) fn with_upstreams(&self, rendered: String) -> String {
        let Some(routing) = self.routing.lock().clone() else {
            return rendered;
        };
        let table = routing.table();
        let current: std::collections::HashSet<String> = table
            .endpoints()
            .map(|e| format!("endpoint=\"{}\"", escape(e.url())))
            .collect();
        let mut out = String::with_capacity(rendered.len() + 4096);
        for line in rendered.lines() {
            let stale = line.starts_with(UPSTREAM_DURATION)
                && line
                    .find("endpoint=\"")
                    .and_then(|at| {
                        let rest = &line[at + 10..];
                        let end = rest.find("\",").or_else(|| rest.find("\"}"))?;
                        Some(&line[at..at + 10 + end + 1])
                    })
                    .is_some_and(|label| !current.contains(label));
            if !stale {
                out.push_str(line);
                out.push('\n');
            }
        }
        let endpoints: Vec<_> = table.endpoints().collect();
        for (kind, rows) in [("counter", COUNTERS), ("gauge", GAUGES)] {
            for (name, help, read) in rows {
                out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
                for e in &endpoints {
                    out.push_str(&format!(
                        "{name}{{route=\"{}\",endpoint=\"{}\"}} {}\n",
                        escape(&e.route()),
                        escape(e.url()),
                        read(e)
                    ));
                }
                out.push('\n');
            }
        }
        write_interceptors(&table, &mut out);
        out
    }
}

/// Interceptor decisions per route, interceptor and decision.
pub(super) const INTERCEPTOR_DECISIONS: &str = "mcp_relay_interceptor_decisions_total";

/// Writes every route's interceptor decisions (routes without a chain write nothing; the
/// family's header is written once there is a series).
fn write_interceptors(table: &crate::proxy::route::RouteTable, out: &mut String) {
    let mut header = false;
    for route in table.routes() {
        let Some(chain) = route.chain() else {
            continue;
        };
        if !header {
            out.push_str(&format!(
                "# HELP {INTERCEPTOR_DECISIONS} Decisions of each interceptor of each route on the messages it looked at: pass, change, answer (a client request answered by the proxy), drop (a notification).\n# TYPE {INTERCEPTOR_DECISIONS} counter\n"
            ));
            header = true;
        }
        for (interceptor, decisions) in chain.decisions() {
            for (decision, count) in decisions.counts() {
                out.push_str(&format!(
                    "{INTERCEPTOR_DECISIONS}{{route=\"{}\",interceptor=\"{interceptor}\",decision=\"{decision}\"}} {count}\n",
                    escape(route.name()),
                ));
            }
        }
    }
    if header {
        out.push('\n');
    }
    write_caches(table, out);
}

/// Counters and gauges of each route's result cache: name, help, kind, read.
type ReadCache = fn(&crate::proxy::intercept::cache::Cache) -> u64;

const CACHE_SERIES: &[(&str, &str, &str, ReadCache)] = &[
    (
        "mcp_relay_cache_hits_total",
        "Requests a route's result cache answered (the upstream never saw them).",
        "counter",
        |c| c.stats.hits.load(Ordering::Relaxed),
    ),
    (
        "mcp_relay_cache_misses_total",
        "Cacheable requests a route's result cache had nothing fresh for.",
        "counter",
        |c| c.stats.misses.load(Ordering::Relaxed),
    ),
    (
        "mcp_relay_cache_stores_total",
        "Results a route's cache kept.",
        "counter",
        |c| c.stats.stores.load(Ordering::Relaxed),
    ),
    (
        "mcp_relay_cache_evictions_total",
        "Results a route's cache dropped to stay within max_entries and max_bytes.",
        "counter",
        |c| c.stats.evictions.load(Ordering::Relaxed),
    ),
    (
        "mcp_relay_cache_invalidations_total",
        "Results a route's cache dropped on change notifications and InvalidateCache.",
        "counter",
        |c| c.stats.invalidations.load(Ordering::Relaxed),
    ),
    (
        "mcp_relay_cache_entries",
        "Results a route's cache holds.",
        "gauge",
        |c| c.size().0 as u64,
    ),
    (
        "mcp_relay_cache_bytes",
        "Bytes a route's cache holds (results and keys).",
        "gauge",
        |c| c.size().1 as u64,
    ),
];

fn write_caches(table: &crate::proxy::route::RouteTable, out: &mut String) {
    let caches: Vec<_> = table
        .routes()
        .iter()
        .filter_map(|r| Some((r.name(), r.chain()?.cache()?)))
        .collect();
    if caches.is_empty() {
        return;
    }
    for (name, help, kind, read) in CACHE_SERIES {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (route, cache) in &caches {
            out.push_str(&format!(
                "{name}{{route=\"{}\"}} {}\n",
                escape(route),
                read(cache)
            ));
        }
        out.push('\n');
    }
}

/// A label value as the Prometheus text format writes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(route: &str, endpoint: &str) -> Vec<Label> {
    vec![
        Label::new("route", route.to_owned()),
        Label::new("endpoint", endpoint.to_owned()),
    ]
}
