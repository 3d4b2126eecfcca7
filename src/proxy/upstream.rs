//! The upstream client: one pooled hyper HTTP/1.1 client for the whole process, sending exactly
//! one upstream request per client request.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, uri::PathAndQuery};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{
    connector::QuickAckConnector,
    error::Reject,
    headers::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID},
};
use crate::{
    config::ProxyConfig,
    session::{Session, UpstreamSessionEnder},
};

/// The pooled client bound to one upstream MCP endpoint.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<QuickAckConnector, Full<Bytes>>,
    endpoint: Uri,
    url: Arc<str>,
    response_timeout: Duration,
}

impl Upstream {
    /// A client for `config.upstream` (an `http://` URL) with the configured timeouts.
    pub fn new(config: &ProxyConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.upstream_connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(QuickAckConnector::new(connector));
        Self {
            client,
            endpoint: config.upstream.clone(),
            url: {
                let url = config.upstream.to_string();
                crate::config::file::redact_url(&url).unwrap_or(url).into()
            },
            response_timeout: config.upstream_response_timeout,
        }
    }

    /// The upstream endpoint URL, as sessions record it and logs show it: any password in it
    /// is masked.
    pub fn url(&self) -> &Arc<str> {
        &self.url
    }

    /// The upstream URI for a client request whose query string is `query`: the endpoint's own
    /// query (if any) wins; otherwise the client's passes through.
    pub fn uri_for(&self, query: Option<&str>) -> Uri {
        let Some(query) = query.filter(|_| self.endpoint.query().is_none()) else {
            return self.endpoint.clone();
        };
        let mut parts = self.endpoint.clone().into_parts();
        let pq = format!("{}?{query}", self.endpoint.path());
        match PathAndQuery::try_from(pq) {
            Ok(pq) => {
                parts.path_and_query = Some(pq);
                Uri::from_parts(parts).unwrap_or_else(|_| self.endpoint.clone())
            }
            Err(_) => self.endpoint.clone(),
        }
    }

    /// Sends one request and waits for the response head, up to the response timeout. The
    /// client sets `Host` to the upstream's authority.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, Reject> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(Reject::UpstreamUnavailable(error_chain(&err))),
            Err(_) => Err(Reject::UpstreamTimeout(self.response_timeout)),
        }
    }

    /// Ends `session` at the upstream: `DELETE` with its upstream `Mcp-Session-Id` (and its
    /// `MCP-Protocol-Version`). Returns the upstream's status.
    pub async fn end_session(&self, session: &Session) -> Result<StatusCode, Reject> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.method_mut() = Method::DELETE;
        *request.uri_mut() = self.uri_for(None);
        let h = request.headers_mut();
        h.insert(&MCP_SESSION_ID, session.upstream_session_id().clone());
        if let Ok(v) = HeaderValue::from_str(&session.protocol_version()) {
            h.insert(&MCP_PROTOCOL_VERSION, v);
        }
        Ok(self.send(request).await?.status())
    }
}

/// The session core ends sessions upstream (operator termination) through the same pooled
/// client.
#[async_trait]
impl UpstreamSessionEnder for Upstream {
    async fn end_upstream_session(&self, session: &Session) -> Result<StatusCode, String> {
        self.end_session(session).await.map_err(|e| e.to_string())
    }
}

/// An error and its sources, joined with `: `.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
