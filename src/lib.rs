//! mcp-relay: a reverse proxy for MCP Streamable HTTP whose SSE streams survive dropped
//! connections. See `ARCHITECTURE.md` for the map.
//!
//! - [`protocol`]: the protocol's vocabulary every plane shares (eras, versions, MCP headers,
//!   event and session id formats).
//! - [`proxy`]: the axum data plane.
//! - [`control`]: the tonic control plane.
//! - [`session`]: the SessionManager both planes share, EventTrackers, the PersistenceWorker and
//!   the SessionStore behind it.
//! - [`sse`]: SSE framing.
//! - [`counters`]: groups of counters declared once (atomics, snapshot, Prometheus rows).
//! - [`tls`]: rustls at both planes and toward `https://` upstreams.
//! - [`daemon`], [`config`], [`systemd`], [`telemetry`]: running it as a service.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]
// Every public item says what it is (shapes, units, errors, the spec section it follows); CI runs
// clippy with `-D warnings`, so an undocumented item fails the build.
#![warn(missing_docs)]

pub mod config;
pub mod control;
pub mod counters;
pub mod daemon;
pub mod protocol;
pub mod proxy;
pub mod session;
pub mod sse;
pub mod systemd;
pub mod telemetry;
pub mod tls;
