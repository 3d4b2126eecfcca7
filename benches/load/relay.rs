//! The proxy under test: the release `mcp-relay` binary Cargo built for this bench, launched as
//! an operator would (`mcp-relay serve` with flags), in its own process:
//!
//! - `--upstream http://<upstream>/mcp` (or, with `LOAD_POOL=N` above 1, `--route
//!   /mcp=http://<upstream>/mcp,http://<upstream>/mcp/1,…`: one route whose pool has N endpoints,
//!   all the same upstream under other paths, so the balancer's cost is measured against the
//!   same upstream), `--listen` and `--admin-listen` on free loopback ports;
//! - `--metrics-listen` on another, scraped for `mcp_relay_runtime_alive_tasks` (tokio tasks)
//!   and `mcp_relay_sessions`;
//! - the memory session store, a one-day idle TTL (no session expires during the run), and
//!   `session.linger_secs` from the settings (how long a legacy stream's pump keeps reading
//!   after its client left: the held-streams phase waits it out before its "after" reading);
//! - `RUST_LOG=warn` to a log file (shown if it fails); no inherited `MCP_RELAY_*` variables.
//!
//! `LOAD_RELAY_CONFIG=FILE` adds `--config FILE` (e.g. `[proxy.cache] enabled = true`, or a
//! policy: the gateway features on).
//!
//! `LOAD_RELAY_BIN=PATH` runs another build of mcp-relay instead (an older tree's release
//! binary, for an A/B of two trees with one harness: each run's rows still compare with the
//! upstream reached directly in the same run). It must take the flags above; `LOAD_POOL` needs
//! a build with `--route`.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use crate::{
    client,
    error::{Context as _, Result},
    procs::{self, ChildGuard},
};

pub struct Relay {
    pub guard: ChildGuard,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
}

/// Starts mcp-relay in front of `upstream`; `tag` names its log file in `dir`.
pub async fn start(upstream: SocketAddr, dir: &Path, tag: &str, linger_secs: u64) -> Result<Relay> {
    let (addr, admin, metrics) = (
        procs::free_addr()?,
        procs::free_addr()?,
        procs::free_addr()?,
    );
    let log = dir.join(format!("mcp-relay-{tag}.log"));
    let stderr = std::fs::File::create(&log).context("creating the mcp-relay log")?;
    let bin = std::env::var_os("LOAD_RELAY_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_mcp-relay").into());
    let mut cmd = std::process::Command::new(&bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MCP_RELAY_") {
            cmd.env_remove(&k);
        }
    }
    let pool: usize = std::env::var("LOAD_POOL")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    cmd.arg("serve");
    if let Some(config) = std::env::var_os("LOAD_RELAY_CONFIG") {
        cmd.arg("--config").arg(config);
    }
    if pool > 1 {
        let urls: Vec<String> = (0..pool)
            .map(|i| match i {
                0 => format!("http://{upstream}/mcp"),
                i => format!("http://{upstream}/mcp/{i}"),
            })
            .collect();
        cmd.args(["--route", &format!("/mcp={}", urls.join(","))]);
    } else {
        cmd.args(["--upstream", &format!("http://{upstream}/mcp")]);
    }
    cmd.args(["--listen", &addr.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--metrics-listen", &metrics.to_string()])
        .args(["--session-idle-ttl-secs", "86400"])
        .args(["--log-target", "stderr"])
        .env("RUST_LOG", "warn")
        .env("MCP_RELAY_STORE__BACKEND", "memory")
        .env("MCP_RELAY_SESSION__LINGER_SECS", linger_secs.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut guard = ChildGuard::new("mcp-relay", child, Some(log));
    guard.wait_listening(addr, Duration::from_secs(15)).await?;
    guard
        .wait_listening(metrics, Duration::from_secs(5))
        .await?;
    Ok(Relay {
        guard,
        addr,
        metrics,
    })
}

/// What the relay's metrics say now.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    /// `mcp_relay_runtime_alive_tasks` (absent in builds without it).
    pub tasks: Option<f64>,
    /// `mcp_relay_sessions`.
    pub sessions: Option<f64>,
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?;
        // `name value` or `name{labels} value`, not a longer name sharing the prefix.
        let rest = match rest.strip_prefix('{') {
            Some(labels) => &labels[labels.find('}')? + 1..],
            None => rest.starts_with(' ').then_some(rest)?,
        };
        rest.split_whitespace().next()?.parse().ok()
    })
}

impl Relay {
    pub async fn gauges(&self) -> Result<Gauges> {
        let text = client::get_text(self.metrics, "/metrics")
            .await
            .context("scraping mcp-relay's /metrics")?;
        Ok(Gauges {
            tasks: gauge(&text, "mcp_relay_runtime_alive_tasks"),
            sessions: gauge(&text, "mcp_relay_sessions"),
        })
    }
}
