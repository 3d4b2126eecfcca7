//! Ending sessions upstream when the proxy ends them (idle expiry, an operator's
//! `TerminateSession`), at whichever endpoint of whichever route the session is pinned to.

use std::sync::Arc;

use async_trait::async_trait;
use http::StatusCode;

use super::Routing;
use crate::{
    proxy::{
        Shared,
        upstream::{Upstream, error_chain},
    },
    session::{EndUpstreamError, Session, UpstreamSessionEnder},
};

/// The one path by which sessions end upstream when the proxy ends them: `DELETE` at the
/// session's endpoint, found by its route and URL in the current table (retired endpoints
/// included), through the main runtime's client. A session naming an endpoint the table does
/// not hold is refused, nothing sent: a record claimed from a shared store may name another
/// deployment's upstream, where its id means nothing.
#[derive(Debug)]
pub struct RoutingEnder {
    routing: Arc<Routing>,
    shared: Shared,
}

impl RoutingEnder {
    /// Ends sessions at the endpoints of `routing`, its connections counted in `shared`.
    pub fn new(routing: Arc<Routing>, shared: Shared) -> Self {
        Self { routing, shared }
    }
}

#[async_trait]
impl UpstreamSessionEnder for RoutingEnder {
    async fn end_upstream_session(
        &self,
        session: &Session,
    ) -> Result<StatusCode, EndUpstreamError> {
        let Some((route, endpoint)) = self
            .routing
            .find_endpoint(session.route(), session.upstream())
        else {
            let named = session.upstream();
            let masked = crate::config::file::redact_url(named).unwrap_or_else(|| named.to_owned());
            return Err(EndUpstreamError::OtherUpstream(masked));
        };
        let client = Upstream::for_endpoint(
            route.config(),
            endpoint.uri().clone(),
            self.shared.connections.clone(),
            self.shared.stats.clone(),
        );
        client
            .end_session(session)
            .await
            .map_err(|e| EndUpstreamError::Failed(error_chain(&e)))
    }
}
