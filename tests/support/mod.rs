//! Shared helpers of the integration tests: real MCP peers as child processes (`peers`), a Rust
//! test upstream for precise faults (`upstream`), a raw HTTP client (`http`), and the proxy
//! started in-process on loopback ports.
#![allow(dead_code)]

pub mod admin;
pub mod daemon_proc;
pub mod durable;
pub mod http;
pub mod nginx;
pub mod peers;
pub mod pool;
pub mod resumable;
pub mod standalone;
pub mod stream_client;
pub mod upstream;

use std::time::Duration;

use ::http::Uri;
use mcp_relay::{config::Config, daemon::Daemon};
use tokio::net::TcpListener;

/// Starts mcp-relay in front of `upstream` on `127.0.0.1:0` (both planes), letting `tune` adjust
/// the configuration first.
pub async fn start_proxy_with(upstream: &str, tune: impl FnOnce(&mut Config)) -> Daemon {
    let uri: Uri = upstream.parse().expect("upstream URL");
    let mut config = Config::new(uri);
    config.shutdown_grace = Duration::from_secs(2);
    tune(&mut config);
    let data = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind data plane");
    let admin = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind control plane");
    Daemon::start(config, data, admin)
        .await
        .expect("start mcp-relay")
}

/// Starts mcp-relay in front of `upstream` with the default configuration.
pub async fn start_proxy(upstream: &str) -> Daemon {
    start_proxy_with(upstream, |_| {}).await
}

/// The MCP endpoint URL of a running proxy.
pub fn proxy_url(daemon: &Daemon) -> String {
    format!("http://{}/mcp", daemon.data_addr())
}
