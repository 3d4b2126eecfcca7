//! The `mcp-relay` command line: parses flags and runs the daemon.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use http::Uri;
use mcp_relay::{config::Config, daemon};
use tracing_subscriber::EnvFilter;

/// A reverse proxy for MCP Streamable HTTP whose streams survive dropped connections.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Proxy MCP traffic to an upstream server and serve the gRPC control plane.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Upstream MCP endpoint URL (http), e.g. http://127.0.0.1:3001/mcp.
    #[arg(long, env = "MCP_RELAY_UPSTREAM")]
    upstream: Uri,
    /// Data plane listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Control plane (gRPC) listen address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    admin_listen: SocketAddr,
    /// Path of the MCP endpoint clients use.
    #[arg(long, default_value = "/mcp")]
    endpoint_path: String,
    /// An Origin to allow besides loopback ones (repeatable; `*` allows any).
    #[arg(long = "allow-origin")]
    allowed_origins: Vec<String>,
    /// Largest client request body, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_request_body_bytes: usize,
    /// Seconds a session may stay idle before it expires.
    #[arg(long, default_value_t = 1800)]
    session_idle_ttl_secs: u64,
    /// Seconds allowed for the upstream's response headers.
    #[arg(long, default_value_t = 60)]
    upstream_timeout_secs: u64,
    /// Seconds shutdown waits for open requests and streams.
    #[arg(long, default_value_t = 10)]
    shutdown_grace_secs: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let Command::Serve(args) = cli.command;
    if args.upstream.scheme_str() != Some("http") || args.upstream.authority().is_none() {
        tracing::error!(upstream = %args.upstream, "--upstream must be an http:// URL with a host");
        return ExitCode::from(2);
    }
    let mut config = Config::new(args.upstream);
    config.listen = args.listen;
    config.admin_listen = args.admin_listen;
    config.proxy.endpoint_path = args.endpoint_path;
    config.proxy.allowed_origins = args.allowed_origins;
    config.proxy.max_request_body_bytes = args.max_request_body_bytes;
    config.proxy.upstream_response_timeout = Duration::from_secs(args.upstream_timeout_secs);
    config.session.idle_ttl = Duration::from_secs(args.session_idle_ttl_secs);
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace_secs);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            tracing::error!(error = %err, "could not start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "mcp-relay failed");
            ExitCode::FAILURE
        }
    }
}
