//! The reference proxy: nginx (`nginx -p <tmp> -c <tmp>/nginx.conf -g 'daemon off;'`) with
//! the configuration rendered from `nginx.conf.in`: `worker_processes` from the settings (2,
//! like mcp-relay's two tokio workers on the 2-core reference machine), 20,000 descriptors and
//! connections per worker, an HTTP/1.1 listener and an h2c (`listen … http2`) one, an upstream
//! block with `keepalive 256`, no buffering, long read timeouts. Its memory is the sum over the
//! master and its workers (shared pages counted once per process, as `VmRSS` does).

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use crate::{
    error::{Context as _, Result},
    procs::{self, ChildGuard},
};

const TEMPLATE: &str = include_str!("nginx.conf.in");

pub struct Nginx {
    pub guard: ChildGuard,
    pub addr: SocketAddr,
    pub h2_addr: SocketAddr,
}

/// The configuration for these addresses, with every path under `prefix`.
pub fn render(
    prefix: &Path,
    upstream: SocketAddr,
    listen: SocketAddr,
    listen_h2: SocketAddr,
    workers: usize,
    h2_streams: u64,
) -> String {
    TEMPLATE
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@UPSTREAM@", &upstream.to_string())
        .replace("@LISTEN@", &listen.to_string())
        .replace("@LISTEN_H2@", &listen_h2.to_string())
        .replace("@WORKERS@", &workers.to_string())
        .replace("@H2_STREAMS@", &h2_streams.max(128).to_string())
}

/// Starts nginx in front of `upstream`, in a fresh directory `dir/nginx-<tag>`.
pub async fn start(
    upstream: SocketAddr,
    dir: &Path,
    tag: &str,
    workers: usize,
    h2_streams: u64,
) -> Result<Nginx> {
    let prefix = dir.join(format!("nginx-{tag}"));
    std::fs::create_dir_all(&prefix).with_context(|| format!("creating {}", prefix.display()))?;
    let (addr, h2_addr) = (procs::free_addr()?, procs::free_addr()?);
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        render(&prefix, upstream, addr, h2_addr, workers, h2_streams),
    )
    .with_context(|| format!("writing {}", conf.display()))?;
    // Everything nginx says, before and after it reads the configuration, goes to one file.
    let log = prefix.join("error.log");
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .context("creating nginx's error.log")?;
    let child = std::process::Command::new(nginx_binary())
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&log)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("starting nginx (is it installed? scripts/bench.sh installs nginx-light)")?;
    // TERM: nginx's fast shutdown, the master stops its workers.
    let mut guard = ChildGuard::new("nginx", child, Some(log)).graceful("TERM");
    guard.wait_listening(addr, Duration::from_secs(10)).await?;
    guard
        .wait_listening(h2_addr, Duration::from_secs(5))
        .await?;
    Ok(Nginx {
        guard,
        addr,
        h2_addr,
    })
}

/// `nginx` on the PATH, else Debian's `/usr/sbin/nginx` (sbin is not on every user's PATH).
pub fn nginx_binary() -> &'static str {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("nginx").is_file()));
    if on_path { "nginx" } else { "/usr/sbin/nginx" }
}
