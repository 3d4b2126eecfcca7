//! Rate limits of a route (`proxy.rate_limit`, overridden per route by `[routes.rate_limit]`):
//! token buckets over the JSON-RPC requests clients send through it.
//!
//! ```toml
//! [[routes]]
//! path = "/mcp/files"
//! upstreams = ["http://127.0.0.1:3001/mcp"]
//! [routes.rate_limit]
//! client_requests_per_second = 10   # each client's bucket refills at this rate; 0: no limit
//! client_burst = 20                 # its size; 0: the rate
//! route_requests_per_second = 200   # the route's one bucket, all clients together
//! [[routes.rate_limit.tools]]       # per client and tool, for `tools/call` of matching tools
//! name = "search_*"
//! requests_per_second = 1
//! burst = 5
//! ```
//!
//! A client is its address (the connection's peer, or what a trusted proxy says it forwarded
//! for, `proxy.trusted_proxies`). A route's `rate_limit` table replaces the global one whole.

use serde::{Deserialize, Serialize};

/// Most per-tool limits of one route.
pub const MAX_TOOL_LIMITS: usize = 64;
/// Most client buckets one limit may keep.
pub const MAX_CLIENTS: usize = 1 << 22;

/// Token-bucket limits of one route (GCRA, the `governor` crate): per client, per route, per
/// client and tool. Every JSON-RPC request counts once (each of a batch); notifications and
/// responses do not. Past a limit: `429` with `Retry-After` and a JSON-RPC error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per second one client may send through the route; 0: no per-client limit.
    pub client_requests_per_second: u32,
    /// Requests one client may send at once (its bucket's size); 0: the rate. Default 0.
    pub client_burst: u32,
    /// Requests per second all clients together may send through the route; 0: no limit.
    pub route_requests_per_second: u32,
    /// The route bucket's size; 0: the rate. Default 0.
    pub route_burst: u32,
    /// Per client and tool: `tools/call` of a tool whose name matches `name` (a glob, as in
    /// `policy`). The first matching entry applies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolRateLimit>,
    /// Most client buckets each limit keeps: clients are hashed (with a per-process random
    /// key) into this many, so memory stays bounded whatever the number of clients; two
    /// clients that share a bucket share its limit, which is rare while fewer clients than
    /// this are active. Idle buckets are reclaimed. Default 65536.
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            client_requests_per_second: 0,
            client_burst: 0,
            route_requests_per_second: 0,
            route_burst: 0,
            tools: Vec::new(),
            max_clients: 65536,
        }
    }
}

/// A per-client limit of the `tools/call`s of the tools whose name matches `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRateLimit {
    /// The tools' name pattern (glob).
    pub name: String,
    /// Calls per second one client may make; at least 1.
    pub requests_per_second: u32,
    /// Calls one client may make at once; 0: the rate.
    #[serde(default)]
    pub burst: u32,
}

impl RateLimitConfig {
    /// Whether it limits nothing: the route needs no rate limiter.
    pub fn is_empty(&self) -> bool {
        self.client_requests_per_second == 0
            && self.route_requests_per_second == 0
            && self.tools.is_empty()
    }

    /// Whether it is the default (nothing to serialize).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the limits: `max_clients` 1 to [`MAX_CLIENTS`], at most [`MAX_TOOL_LIMITS`]
    /// tool entries, each a glob with a rate of at least 1.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_CLIENTS).contains(&self.max_clients) {
            return Err(format!("max_clients must be 1 to {MAX_CLIENTS}"));
        }
        if self.tools.len() > MAX_TOOL_LIMITS {
            return Err(format!("at most {MAX_TOOL_LIMITS} tools entries"));
        }
        for tool in &self.tools {
            if tool.requests_per_second == 0 {
                return Err(format!(
                    "tools `{}`: requests_per_second must be at least 1",
                    tool.name
                ));
            }
            if tool.name.is_empty() || tool.name.len() > super::policy::MAX_PATTERN_BYTES {
                return Err(format!(
                    "tools: a name must be 1 to {} bytes",
                    super::policy::MAX_PATTERN_BYTES
                ));
            }
            super::policy::glob(&tool.name).map_err(|e| format!("tools `{}`: {e}", tool.name))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_limits_are_refused() {
        let mut c = RateLimitConfig {
            max_clients: 0,
            ..Default::default()
        };
        assert!(c.check().unwrap_err().starts_with("max_clients"));
        c.max_clients = 10;
        c.tools = vec![ToolRateLimit {
            name: "search_[".into(),
            requests_per_second: 1,
            burst: 0,
        }];
        assert!(c.check().unwrap_err().starts_with("tools `search_[`"));
        c.tools[0].name = "search_*".into();
        c.tools[0].requests_per_second = 0;
        assert!(c.check().is_err());
        c.tools[0].requests_per_second = 1;
        assert!(c.check().is_ok() && !c.is_empty());
        assert!(RateLimitConfig::default().is_empty());
    }
}
