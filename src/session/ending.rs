//! Ending a session at its upstream. The session core knows *that* a session must end upstream
//! (idle expiry, an operator's `TerminateSession`) but not *how*: the data plane owns the
//! upstream client. The daemon hands one [`UpstreamSessionEnder`] (the data plane's client of
//! its main runtime) to both callers, so a session is ended upstream by one path whoever ends
//! it, and the control plane does so without holding the data plane.

use std::fmt;

use async_trait::async_trait;
use http::StatusCode;

use super::Session;

/// Sends the `DELETE` that ends a session at its upstream (Streamable HTTP, "Session
/// Management": a client ends a session with `DELETE` and its `Mcp-Session-Id`).
#[async_trait]
pub trait UpstreamSessionEnder: Send + Sync + fmt::Debug {
    /// `DELETE` with the session's upstream id; the upstream's status, or why none came.
    async fn end_upstream_session(&self, session: &Session)
    -> Result<StatusCode, EndUpstreamError>;
}

/// Why a session was not ended at its upstream.
#[derive(Debug, thiserror::Error)]
pub enum EndUpstreamError {
    /// The session names another upstream than the one this proxy forwards to (a record
    /// claimed from a shared store, written by another deployment): its id means nothing to
    /// ours, so nothing was sent. The upstream it names is carried (password masked).
    #[error("the session names another upstream ({0}); not ended upstream")]
    OtherUpstream(String),
    /// The `DELETE` failed: the error and its sources, joined with `: ` (for the log and the
    /// operator, never an MCP client).
    #[error("{0}")]
    Failed(String),
}
