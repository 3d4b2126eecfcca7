//! The daemon's settings, with their defaults and units. `main.rs` fills them from flags.

use std::{net::SocketAddr, time::Duration};

use http::Uri;

use crate::session::{SessionConfig, WorkerConfig};

/// Everything the daemon needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data plane listen address. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Control plane (gRPC) listen address. Default `127.0.0.1:50051`.
    pub admin_listen: SocketAddr,
    pub proxy: ProxyConfig,
    pub session: SessionConfig,
    pub worker: WorkerConfig,
    /// How long shutdown waits for open requests and streams before it closes them. Default 10 s.
    pub shutdown_grace: Duration,
}

/// Settings of the data plane.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The upstream MCP endpoint, e.g. `http://127.0.0.1:3001/mcp`.
    pub upstream: Uri,
    /// The path clients use for the MCP endpoint. Default `/mcp`.
    pub endpoint_path: String,
    /// Origins allowed in addition to loopback ones, exactly as browsers send them
    /// (`scheme://host[:port]`); `*` allows any. Default: none.
    pub allowed_origins: Vec<String>,
    /// Whether `Origin`s on loopback hosts (`localhost`, `127.0.0.0/8`, `[::1]`) are allowed.
    /// Default true.
    pub allow_loopback_origins: bool,
    /// Largest client request body accepted, in bytes. Default 4 MiB.
    pub max_request_body_bytes: usize,
    /// Largest single SSE event accepted from the upstream, in bytes. Default 16 MiB.
    pub max_event_bytes: usize,
    /// Time allowed to connect to the upstream. Default 5 s.
    pub upstream_connect_timeout: Duration,
    /// Time allowed for the upstream's response headers once the request is sent. Default 60 s.
    pub upstream_response_timeout: Duration,
}

impl ProxyConfig {
    /// Defaults for a proxy in front of `upstream`.
    pub fn new(upstream: Uri) -> Self {
        Self {
            upstream,
            endpoint_path: "/mcp".into(),
            allowed_origins: Vec::new(),
            allow_loopback_origins: true,
            max_request_body_bytes: 4 << 20,
            max_event_bytes: 16 << 20,
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Defaults for a proxy in front of `upstream`.
    pub fn new(upstream: Uri) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            proxy: ProxyConfig::new(upstream),
            session: SessionConfig::default(),
            worker: WorkerConfig::default(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
