//! Result caching of a route (`proxy.cache`, overridden per route by `[routes.cache]`): the
//! relay keeps the results 2026-07-28 servers mark cacheable (`ttlMs`, `cacheScope`; MCP
//! 2026-07-28 "server/utilities/caching") and answers the same requests from them while fresh.
//!
//! ```toml
//! [routes.cache]
//! enabled = true
//! max_entries = 4096
//! max_bytes = 16777216
//! max_ttl_ms = 600000
//! ```

use serde::{Deserialize, Serialize};

/// Largest `max_bytes`.
pub const MAX_CACHE_BYTES: usize = 1 << 32;
/// Largest `max_entries`.
pub const MAX_CACHE_ENTRIES: usize = 1 << 22;

/// How a route caches results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Whether the route caches at all. Default false.
    pub enabled: bool,
    /// Most results held; the least recently used goes first. Default 4096.
    pub max_entries: usize,
    /// Most bytes of results held (each counted by its result's JSON and its key). Default
    /// 16 MiB.
    pub max_bytes: usize,
    /// The longest a result is kept, in ms, whatever its `ttlMs` says. Default 600000.
    pub max_ttl_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_entries: 4096,
            max_bytes: 16 << 20,
            max_ttl_ms: 600_000,
        }
    }
}

impl CacheConfig {
    /// Whether it is the default (nothing to serialize).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the bounds: `max_entries` 1 to [`MAX_CACHE_ENTRIES`], `max_bytes` 1 to
    /// [`MAX_CACHE_BYTES`], `max_ttl_ms` at least 1 (one day at most).
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_CACHE_ENTRIES).contains(&self.max_entries) {
            return Err(format!("max_entries must be 1 to {MAX_CACHE_ENTRIES}"));
        }
        if !(1..=MAX_CACHE_BYTES).contains(&self.max_bytes) {
            return Err(format!("max_bytes must be 1 to {MAX_CACHE_BYTES}"));
        }
        if !(1..=86_400_000).contains(&self.max_ttl_ms) {
            return Err("max_ttl_ms must be 1 to 86400000 (one day)".into());
        }
        Ok(())
    }
}
