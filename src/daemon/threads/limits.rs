//! The data plane's limits at the edge, read from the configuration, with the connection
//! maximum checked against the process's descriptor limit.

use std::time::Duration;

/// Descriptors kept out of the connection maximum for listeners, the store, logs and the like.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The data plane's limits at the edge (from [`crate::config::ProxyConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    /// Most client connections open at once (all threads); past it new ones are refused.
    pub max_connections: usize,
    /// Most upstream connections open at once (every thread's and the main runtime's client);
    /// `usize::MAX` when unbounded (no descriptor limit known and none configured).
    pub max_upstream_connections: usize,
    /// Time from a request head's first byte to its end (HTTP/1).
    pub header_read_timeout: Duration,
    /// Time a connection may stay with no request in flight.
    pub keep_alive_idle_timeout: Duration,
    /// Most concurrent streams on one h2 connection (set explicitly rather than left to
    /// hyper's default of 200: each stream can hold an upstream connection).
    pub h2_max_concurrent_streams: u32,
}

impl EdgeLimits {
    /// The limits of `config`, with `max_connections` clamped to what the process's descriptor
    /// limit leaves room for (two descriptors per connection: client and upstream, after
    /// [`RESERVED_DESCRIPTORS`]), and `max_upstream_connections` (0: as many as the limit
    /// allows) clamped to what it leaves after `max_connections` and the reserve; a warning
    /// says so when either is clamped.
    pub fn from_config(config: &crate::config::ProxyConfig) -> Self {
        let nofile = descriptor_limit();
        let max_connections = Self::clamp_connections(config.max_connections, nofile);
        let configured = config.max_upstream_connections;
        let max_upstream_connections = match nofile {
            None if configured == 0 => usize::MAX,
            None => configured,
            Some(nofile) => {
                let room = usize::try_from(nofile.saturating_sub(RESERVED_DESCRIPTORS))
                    .unwrap_or(usize::MAX)
                    .saturating_sub(max_connections)
                    .max(1);
                if configured == 0 {
                    room
                } else if configured > room {
                    tracing::warn!(
                        configured,
                        clamped = room,
                        rlimit_nofile = nofile,
                        max_connections,
                        "proxy.max_upstream_connections exceeds what the descriptor limit leaves \
                         after proxy.max_connections; clamping it",
                    );
                    room
                } else {
                    configured
                }
            }
        };
        Self {
            max_connections,
            max_upstream_connections,
            header_read_timeout: config.header_read_timeout,
            keep_alive_idle_timeout: config.keep_alive_idle_timeout,
            h2_max_concurrent_streams: config.h2_max_concurrent_streams,
        }
    }

    /// `configured` client connections, clamped to half of what `nofile` leaves after the
    /// reserve.
    fn clamp_connections(configured: usize, nofile: Option<u64>) -> usize {
        let mut max_connections = configured;
        if let Some(nofile) = nofile {
            let room = usize::try_from(nofile.saturating_sub(RESERVED_DESCRIPTORS) / 2)
                .unwrap_or(usize::MAX)
                .max(1);
            if max_connections > room {
                tracing::warn!(
                    configured = max_connections,
                    clamped = room,
                    rlimit_nofile = nofile,
                    "proxy.max_connections exceeds what the descriptor limit leaves room for \
                     (two per connection); clamping it",
                );
                max_connections = room;
            }
        }
        max_connections
    }
}

/// The soft `RLIMIT_NOFILE` of the process (from `/proc/self/limits`, Linux); `None` when
/// unknown or unlimited.
fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
