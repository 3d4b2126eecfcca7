//! Ending a session at its upstream. The session core knows *that* a session must end upstream
//! (idle expiry, an operator's `TerminateSession`) but not *how*: the data plane owns the one
//! pooled upstream client, and registers it here as an [`UpstreamSessionEnder`] when it starts
//! (`SessionManager::set_upstream_ender`). So the control plane can end a session upstream
//! without holding the data plane.

use std::fmt;

use async_trait::async_trait;
use http::StatusCode;

use super::Session;

/// Sends the `DELETE` that ends a session at its upstream (Streamable HTTP, "Session
/// Management": a client ends a session with `DELETE` and its `Mcp-Session-Id`).
#[async_trait]
pub trait UpstreamSessionEnder: Send + Sync + fmt::Debug {
    /// `DELETE` with the session's upstream id; the upstream's status, or why none came.
    async fn end_upstream_session(&self, session: &Session) -> Result<StatusCode, String>;
}
