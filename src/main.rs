//! The `mcp-relay` command line: parses flags, loads the layered configuration, sets up logs
//! and runs the daemon (or prints the effective configuration).

#![deny(clippy::unwrap_used)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use mcp_relay::{
    config::{
        Config, ForwardedMode, LogFormat, LogTarget, RouteConfig,
        file::{self, Loaded, Overrides, Sources},
    },
    daemon,
    systemd::Activated,
    telemetry::logging,
};

/// Exit status for a configuration that cannot be used (the unit does not restart on it).
const EXIT_CONFIG: u8 = 2;

/// A reverse proxy for MCP Streamable HTTP whose streams survive dropped connections.
///
/// Settings come from, in increasing precedence: built-in defaults, a TOML file (`--config`
/// or MCP_RELAY_CONFIG), MCP_RELAY_* environment variables (`__` between levels, e.g.
/// MCP_RELAY_SESSION__IDLE_TTL_SECS=600), and the flags below. `deploy/systemd/mcp-relay.toml`
/// documents every setting with its default and unit.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Proxy MCP traffic to an upstream server, serve the gRPC control plane and metrics.
    Serve {
        /// TOML configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        flags: Flags,
    },
    /// Validate the configuration and print it, merged from every layer, with secrets masked.
    CheckConfig {
        /// TOML configuration file (or `--config`, or MCP_RELAY_CONFIG).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// TOML configuration file.
        #[arg(short, long, value_name = "FILE", conflicts_with = "file")]
        config: Option<PathBuf>,
        #[command(flatten)]
        flags: Flags,
    },
}

/// Settings that can be given as flags; each wins over the file and the environment.
#[derive(clap::Args, Debug)]
struct Flags {
    /// Upstream MCP endpoint URL (http), e.g. http://127.0.0.1:3001/mcp. [proxy.upstream]
    #[arg(long)]
    upstream: Option<String>,
    /// A route: clients' requests on PATH go to the pool of upstream URLs (repeatable; adds to
    /// the file's [[routes]]), e.g. --route /mcp/files=http://127.0.0.1:3001/mcp,http://127.0.0.1:3002/mcp.
    /// [[routes]] path, upstreams]
    #[arg(long = "route", value_name = "PATH=URL[,URL…]", value_parser = RouteConfig::parse_flag)]
    routes: Vec<RouteConfig>,
    /// Data plane listen address. [listen; default 127.0.0.1:8080]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Control plane (gRPC) listen address. [admin_listen; default 127.0.0.1:50051]
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Serve the control plane on this Unix socket instead of --admin-listen. [admin_socket]
    /// (The bearer token, admin_token, comes from the file or MCP_RELAY_ADMIN_TOKEN, never a
    /// flag: flags show in process listings.)
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<std::path::PathBuf>,
    /// Metrics listen address (/metrics, /healthz, /readyz). [metrics.listen; default
    /// 127.0.0.1:9464]
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Serve no metrics listener. [metrics.enabled = false]
    #[arg(long, conflicts_with = "metrics_listen")]
    no_metrics: bool,
    /// Path of the MCP endpoint clients use. [proxy.endpoint_path; default /mcp]
    #[arg(long)]
    endpoint_path: Option<String>,
    /// The public URL clients use for the --upstream route (e.g. behind a TLS terminator,
    /// https://mcp.example.com/mcp): the `resource` of its OAuth protected-resource metadata.
    /// [proxy.public_url; default http:// + the request's Host + the path]
    #[arg(long)]
    public_url: Option<String>,
    /// An Origin to allow besides loopback ones (repeatable; `*` allows any); replaces the
    /// configured list. [proxy.allowed_origins]
    #[arg(long = "allow-origin")]
    allowed_origins: Vec<String>,
    /// A Host to serve besides loopback names (repeatable; `host` or `host:port`; `*` allows
    /// any); replaces the configured list. Required with a non-loopback --listen.
    /// [proxy.allowed_hosts]
    #[arg(long = "allow-host")]
    allowed_hosts: Vec<String>,
    /// Forwarded and X-Forwarded-* headers toward the upstream: off, append (keep incoming
    /// values only from a --trusted-proxy, then add this hop) or replace (only this hop).
    /// [proxy.forwarded; default append]
    #[arg(long, value_parser = parse_forwarded)]
    forwarded: Option<ForwardedMode>,
    /// A proxy in front of this one (an address or CIDR range, e.g. 10.0.0.0/8; repeatable)
    /// whose forwarded headers are kept; replaces the configured list. [proxy.trusted_proxies]
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<String>,
    /// Largest client request body, in bytes. [proxy.max_request_body_bytes; default 4 MiB]
    #[arg(long)]
    max_request_body_bytes: Option<usize>,
    /// Seconds a session may stay idle before it expires. [session.idle_ttl_secs; default 1800]
    #[arg(long)]
    session_idle_ttl_secs: Option<u64>,
    /// Seconds allowed for the upstream's response headers.
    /// [proxy.upstream_response_timeout_secs; default 60]
    #[arg(long)]
    upstream_timeout_secs: Option<u64>,
    /// Data-plane threads, each serving the connections handed to it; 0: one per CPU.
    /// [proxy.threads; default 0]
    #[arg(long)]
    threads: Option<usize>,
    /// Most client connections open at once; more are refused with 503 (clamped to the
    /// descriptor limit). [proxy.max_connections; default 16384]
    #[arg(long)]
    max_connections: Option<usize>,
    /// Seconds shutdown waits for open requests and streams. [shutdown_grace_secs; default 10]
    #[arg(long)]
    shutdown_grace_secs: Option<u64>,
    /// Where logs go: auto (the journal under systemd, else stderr), stderr, journald.
    /// [log.target; default auto]
    #[arg(long, value_parser = parse_log_target)]
    log_target: Option<LogTarget>,
    /// Format of logs written to stderr: text or json. [log.format; default text]
    #[arg(long, value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
}

fn parse_log_target(s: &str) -> Result<LogTarget, String> {
    match s {
        "auto" => Ok(LogTarget::Auto),
        "stderr" => Ok(LogTarget::Stderr),
        "journald" => Ok(LogTarget::Journald),
        _ => Err("expected auto, stderr or journald".into()),
    }
}

fn parse_forwarded(s: &str) -> Result<ForwardedMode, String> {
    match s {
        "off" => Ok(ForwardedMode::Off),
        "append" => Ok(ForwardedMode::Append),
        "replace" => Ok(ForwardedMode::Replace),
        _ => Err("expected off, append or replace".into()),
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected text or json".into()),
    }
}

impl Flags {
    fn overrides(self) -> Overrides {
        let mut o = Overrides::default();
        o.set_opt("proxy.upstream", self.upstream)
            .set_opt("listen", self.listen.map(|a| a.to_string()))
            .set_opt("admin_listen", self.admin_listen.map(|a| a.to_string()))
            .set_opt(
                "admin_socket",
                self.admin_socket.map(|p| p.to_string_lossy().into_owned()),
            )
            .set_opt("metrics.listen", self.metrics_listen.map(|a| a.to_string()))
            .set_opt("proxy.endpoint_path", self.endpoint_path)
            .set_opt("proxy.public_url", self.public_url)
            .set_opt("proxy.max_request_body_bytes", self.max_request_body_bytes)
            .set_opt("session.idle_ttl_secs", self.session_idle_ttl_secs)
            .set_opt(
                "proxy.upstream_response_timeout_secs",
                self.upstream_timeout_secs,
            )
            .set_opt("proxy.threads", self.threads)
            .set_opt("proxy.max_connections", self.max_connections)
            .set_opt("shutdown_grace_secs", self.shutdown_grace_secs)
            .set_opt("log.target", self.log_target)
            .set_opt("log.format", self.log_format)
            .set_opt("proxy.forwarded", self.forwarded);
        if self.metrics_listen.is_some() {
            o.set("metrics.enabled", true);
        }
        if self.no_metrics {
            o.set("metrics.enabled", false);
        }
        if !self.allowed_hosts.is_empty() {
            o.set("proxy.allowed_hosts", self.allowed_hosts);
        }
        if !self.allowed_origins.is_empty() {
            o.set("proxy.allowed_origins", self.allowed_origins);
        }
        if !self.trusted_proxies.is_empty() {
            o.set("proxy.trusted_proxies", self.trusted_proxies);
        }
        if !self.routes.is_empty() {
            o.append("routes", self.routes);
        }
        o
    }
}

/// The layers the configuration is read from: the file named by flag or environment, the
/// environment, the flags.
fn sources(config: Option<PathBuf>, flags: Flags) -> Sources {
    Sources {
        file: file::config_path(config.as_deref()),
        env: true,
        overrides: flags.overrides(),
    }
}

fn load(sources: &Sources) -> Result<Loaded, ExitCode> {
    file::load(sources).map_err(|err| {
        eprintln!("mcp-relay: configuration: {err}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig {
            file,
            config,
            flags,
        } => match load(&sources(file.or(config), flags)) {
            Ok(loaded) => {
                print!(
                    "# mcp-relay: effective configuration (defaults < file < MCP_RELAY_* \
                     environment < flags); secrets masked\n{}",
                    loaded.to_masked_toml()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve { config, flags } => {
            // First, while the process has one thread: taking the sockets unsets LISTEN_FDS.
            let activated = match Activated::take_from_env() {
                Ok(a) => a,
                Err(err) => {
                    eprintln!("mcp-relay: {err}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let sources = sources(config, flags);
            let config = match load(&sources) {
                Ok(loaded) => loaded.config,
                Err(code) => return code,
            };
            // SIGHUP reads the same layers again (the file may have changed).
            let reload: daemon::Reloader = Box::new(move || {
                file::load(&sources)
                    .map(|loaded| loaded.config)
                    .map_err(|err| err.to_string())
            });
            serve(config, activated, reload)
        }
    }
}

fn serve(config: Config, activated: Activated, reload: daemon::Reloader) -> ExitCode {
    if let Err(err) = logging::init(&config.log) {
        eprintln!("mcp-relay: {err}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            tracing::error!(error = %err, "could not start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run_with(config, activated, Some(reload))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "mcp-relay failed");
            ExitCode::FAILURE
        }
    }
}
