//! The data plane's counters: atomics the data plane owns (one set per daemon, shared by
//! every data-plane thread, [`super::Shared`]) and increments, and the Prometheus endpoint and
//! the control plane's metric watches read ([`crate::telemetry::metrics::Observed`]). Each is
//! declared once, with its Prometheus name and HELP text ([`crate::counters`]).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::counters::counters;

counters! {
    /// Counters of the data plane (monotonic unless noted). Read with [`ProxyStats::snapshot`];
    /// each exported one names its Prometheus series and HELP text.
    pub struct ProxyStats / ProxyStatsSnapshot {
        /// SSE events forwarded to clients (live and replayed).
        events_forwarded: Counter(
            "mcp_relay_sse_events_forwarded_total",
            "SSE events forwarded to clients (live and replayed).",
        ),
        /// Events dropped because their upstream id was already forwarded on the stream.
        duplicates_dropped: Counter(
            "mcp_relay_sse_duplicates_dropped_total",
            "SSE events dropped because their upstream id was already forwarded on the stream.",
        ),
        /// Client resumptions (`GET` + `Last-Event-ID`) served.
        resumptions: Counter(
            "mcp_relay_sse_resumptions_total",
            "Client resumptions (GET with Last-Event-ID) served.",
        ),
        /// Resumption attempts refused (malformed id, unknown stream, id outside the window).
        resumptions_refused: Counter(
            "mcp_relay_sse_resumptions_refused_total",
            "Client resumptions refused (malformed id, unknown stream, id outside the window).",
        ),
        /// Upstream reconnections attempted after an upstream stream broke.
        upstream_reconnects: Counter(
            "mcp_relay_upstream_reconnects_total",
            "Upstream reconnections attempted after an upstream stream broke.",
        ),
        /// Upstream SSE streams ended as malformed: a block grew past `max_event_bytes` without
        /// a blank line (comments included).
        upstream_streams_malformed: Counter(
            "mcp_relay_sse_upstream_malformed_total",
            "Upstream SSE streams ended because a block exceeded max_event_bytes.",
        ),
        /// Upstream SSE streams whose read failed mid-stream (a reset, a connection the TCP
        /// keep-alive probes found dead, `proxy.upstream_tcp_keepalive_secs`).
        upstream_streams_broken: Counter(
            "mcp_relay_sse_upstream_broken_total",
            "Upstream SSE streams whose read failed mid-stream (reset, or found dead by TCP \
             keep-alive probes).",
        ),
        /// Keep-alive comments sent to clients after `proxy.sse_keepalive_secs` of silence.
        keepalives_sent: Counter(
            "mcp_relay_sse_keepalives_total",
            "Keep-alive comments sent on SSE streams to clients after proxy.sse_keepalive_secs \
             of silence.",
        ),
        /// SSE streams opened.
        streams_opened: Counter(
            "mcp_relay_sse_streams_opened_total",
            "SSE streams opened.",
        ),
        /// SSE streams currently open (a gauge).
        streams_open: Gauge(
            "mcp_relay_sse_streams_open",
            "SSE streams open now.",
        ),
        /// Client connections refused because `proxy.max_connections` were open.
        connections_refused: Counter(
            "mcp_relay_connections_refused_total",
            "Client connections refused (503, closed) because proxy.max_connections were open.",
        ),
        /// Requests refused (`503`) because `proxy.max_upstream_connections` upstream connections
        /// were open.
        upstream_connections_refused: Counter(
            "mcp_relay_upstream_connections_refused_total",
            "Requests refused (503) because proxy.max_upstream_connections upstream connections \
             were open.",
        ),
        /// Idle pooled upstream connections closed instead of reused: idle past
        /// `proxy.upstream_idle_timeout`, or closed by the upstream while idle.
        upstream_idle_closed: Counter(
            "mcp_relay_upstream_idle_connections_closed_total",
            "Idle pooled upstream connections closed instead of reused (idle past \
             proxy.upstream_idle_timeout_ms, or closed by the upstream).",
        ),
        /// Client connections closed because a request head took longer than
        /// `proxy.header_read_timeout`.
        header_read_timeouts: Counter(
            "mcp_relay_header_read_timeouts_total",
            "Client connections closed because a request head took longer than \
             proxy.header_read_timeout_secs.",
        ),
        /// Client connections whose TLS handshake failed or did not finish within
        /// `proxy.header_read_timeout` (`[tls]`).
        tls_handshake_failures: Counter(
            "mcp_relay_tls_handshake_failures_total",
            "Client connections closed because their TLS handshake failed or did not finish \
             within proxy.header_read_timeout_secs.",
        ),
        /// Control-plane connections closed before serving: their TLS handshake failed or
        /// timed out, or too many were in progress (`[admin_tls]`).
        admin_tls_refused: Counter(
            "mcp_relay_admin_tls_refused_total",
            "Control-plane connections closed because their TLS handshake failed or timed out, or \
             too many handshakes were in progress.",
        ),
        /// Requests whose bearer token a resource-server route accepted.
        auth_accepted: Counter(
            "mcp_relay_auth_accepted_total",
            "Requests whose access token a resource-server route accepted.",
        ),
        /// Requests a resource-server route refused `401` for want of a token.
        auth_missing: Counter(
            "mcp_relay_auth_missing_total",
            "Requests a resource-server route refused (401) for want of a bearer token.",
        ),
        /// Requests a resource-server route refused because their token did not validate.
        auth_invalid: Counter(
            "mcp_relay_auth_invalid_total",
            "Requests a resource-server route refused (401 invalid_token, 400) because their \
             token did not validate.",
        ),
        /// Requests refused `403 insufficient_scope`.
        auth_insufficient_scope: Counter(
            "mcp_relay_auth_insufficient_scope_total",
            "Requests a resource-server route refused (403 insufficient_scope).",
        ),
        /// Requests refused `503` because the authorization server's keys were unavailable.
        auth_unavailable: Counter(
            "mcp_relay_auth_keys_unavailable_total",
            "Requests a resource-server route refused (503) because the authorization server's \
             keys could not be fetched.",
        ),
        /// Client connections closed after `proxy.keep_alive_idle_timeout` with no request.
        idle_connections_closed: Counter(
            "mcp_relay_idle_connections_closed_total",
            "Client connections closed after proxy.keep_alive_idle_timeout_secs with no request.",
        ),
        /// Requests answered `408` because their body took longer than
        /// `proxy.request_body_timeout`.
        request_body_timeouts: Counter(
            "mcp_relay_request_body_timeouts_total",
            "Requests answered 408 because their body took longer than \
             proxy.request_body_timeout_secs.",
        ),
        /// Requests that waited for their session's standalone `GET` stream to be established
        /// upstream (at most one wait per session).
        standalone_waits: Counter(
            "mcp_relay_standalone_stream_waits_total",
            "Requests that waited for their session's standalone GET stream to be established \
             upstream.",
        ),
        /// Those waits that ran out of time (the client opened no standalone stream in time).
        standalone_wait_timeouts: Counter(
            "mcp_relay_standalone_stream_wait_timeouts_total",
            "Waits for a session's standalone GET stream that ran out of time.",
        ),
        /// Requests answered `503` at once because every endpoint of their route's pool was
        /// ejected or drained.
        no_endpoint_available: Counter(
            "mcp_relay_no_endpoint_available_total",
            "Requests answered 503 at once because every upstream endpoint of their route was ejected or drained.",
        ),
        /// Upstream answers a route's interceptors had to read but that exceeded
        /// `proxy.max_event_bytes` (answered `502`).
        answers_too_large: Counter(
            "mcp_relay_interceptor_answers_too_large_total",
            "Upstream answers a route's interceptors had to read whole but that exceeded proxy.max_event_bytes (answered 502).",
        ),
        /// Client messages refused `400` on a route with interceptors because they could not be
        /// read (a duplicate key).
        unreadable_refused: Counter(
            "mcp_relay_interceptor_unreadable_refused_total",
            "Client messages refused 400 on a route with interceptors because they could not be read (a duplicate key).",
        ),
    }
}

impl ProxyStats {
    /// Adds one to a counter.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
