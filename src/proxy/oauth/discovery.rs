//! Serving a route's well-known discovery documents from its upstream (see the module above):
//! admission as on the MCP endpoint, one endpoint of the pool, the path-aware document then
//! the root form, a bounded read, and the protected-resource document's `resource` rewritten.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse as _, Response},
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use http_body_util::{BodyExt, Full, Limited};

use super::{PublicUrl, WellKnown, document};
use crate::proxy::{
    Proxy,
    error::Reject,
    headers,
    upstream::{ErrorChain, UpstreamError},
};

/// Largest discovery document read from the upstream, in bytes; a larger one gets `502`.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Response headers that describe the upstream's bytes, dropped from a rewritten document.
const REPRESENTATION_HEADERS: [&str; 5] = [
    "etag",
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
];

/// The upstream's answer to one discovery request, read whole.
struct Fetched {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Proxy {
    /// Answers `GET` (or a CORS preflight `OPTIONS`) of the well-known document `kind` of this
    /// proxy's route (see [`super`]); a refusal is logged and answered with a JSON-RPC error
    /// body like the MCP endpoint's: a method other than `GET`/`OPTIONS` `405`; the admission
    /// refusals (`400`, `421`, `403`); every endpoint ejected or drained `503`; the upstream
    /// unreachable or broken `502`, not answering in time `504`; a document over
    /// [`MAX_DOCUMENT_BYTES`], compressed, or (protected-resource) not a JSON object `502`.
    /// Any status of the upstream (its `404` included) passes through with its body.
    pub(crate) async fn serve_well_known(
        self: Arc<Self>,
        kind: WellKnown,
        request: Request,
    ) -> Response {
        match self.well_known(kind, request).await {
            Ok(response) => response,
            Err(reject) => {
                super::super::log_reject(&self, &reject, None);
                reject.into_response_with_id(None)
            }
        }
    }

    async fn well_known(&self, kind: WellKnown, request: Request) -> Result<Response, Reject> {
        let (parts, _body) = request.into_parts();
        if parts.method != Method::GET && parts.method != Method::OPTIONS {
            return Err(Reject::WellKnownMethod(parts.method));
        }
        self.admission.check(&parts)?;
        let route = &self.route;
        if let Some(auth) = route.auth() {
            // The relay is the resource server: its own document; the authorization server's
            // metadata is the issuer's to serve (clients fetch it there).
            if kind != WellKnown::ProtectedResource {
                return Err(Reject::NoEndpoint(parts.uri.path().to_owned()));
            }
            let public = PublicUrl::of(route, &parts);
            let body = if parts.method == Method::GET {
                auth.metadata(public.resource())
            } else {
                Bytes::new()
            };
            return Ok((
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response());
        }
        let index = route
            .pick(None)
            .ok_or_else(|| Reject::NoEndpointAvailable(route.name().clone()))?;
        let upstream_path = route.endpoints()[index].uri().path();
        let path_aware = kind.path_for(upstream_path);
        let mut fetched = self.fetch(&parts, index, &path_aware).await?;
        let root = kind.path_for("");
        if fetched.status == StatusCode::NOT_FOUND && path_aware != root {
            fetched = self.fetch(&parts, index, &root).await?;
        }
        let mut body = fetched.body;
        let mut client_headers = HeaderMap::with_capacity(fetched.headers.len() + 1);
        headers::copy_end_to_end(&fetched.headers, &mut client_headers);
        if kind == WellKnown::ProtectedResource
            && parts.method == Method::GET
            && fetched.status.is_success()
        {
            if let Some(encoding) = fetched
                .headers
                .get(header::CONTENT_ENCODING)
                .filter(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
            {
                return Err(Reject::BadMetadata(format!(
                    "the protected-resource metadata came with Content-Encoding {encoding:?}"
                )));
            }
            let public = PublicUrl::of(route, &parts);
            body = document::rewrite_resource(&body, public.resource())
                .map_err(|e| {
                    Reject::BadMetadata(format!(
                        "the protected-resource metadata of route {:?} is unusable: {e}",
                        route.name()
                    ))
                })?
                .into();
            for name in REPRESENTATION_HEADERS {
                client_headers.remove(name);
            }
        }
        client_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        tracing::debug!(
            route = %route.name(),
            upstream = %route.endpoints()[index].url(),
            document = kind.prefix(),
            status = fetched.status.as_u16(),
            "discovery document proxied",
        );
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = fetched.status;
        *response.headers_mut() = client_headers;
        Ok(response)
    }

    /// One discovery request to endpoint `index` at `path`: the client's method and
    /// end-to-end headers (as on the MCP endpoint, `Authorization` included, but no
    /// `Accept-Encoding`: the document is read here), no body; the answer read whole, at most
    /// [`MAX_DOCUMENT_BYTES`], within `proxy.upstream_response_timeout`.
    async fn fetch(&self, client: &Parts, index: usize, path: &str) -> Result<Fetched, Reject> {
        let mut request = http::Request::new(Full::new(Bytes::new()));
        *request.method_mut() = client.method.clone();
        *request.uri_mut() = path
            .parse()
            .map_err(|e| Reject::Internal(format!("well-known path {path:?}: {e}")))?;
        self.upstream_headers(client, request.headers_mut());
        request.headers_mut().remove(header::ACCEPT_ENCODING);
        let endpoint = &self.route.endpoints()[index];
        let _outstanding = endpoint.begin();
        let response = self.upstreams[index].send(request).await?;
        let (head, body) = response.into_parts();
        let timeout = self.config.upstream_response_timeout;
        let read = Limited::new(body, MAX_DOCUMENT_BYTES).collect();
        let body = match tokio::time::timeout(timeout, read).await {
            Err(_) => return Err(UpstreamError::Timeout(timeout).into()),
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
                return Err(Reject::BadMetadata(format!(
                    "{path} of {} is larger than {MAX_DOCUMENT_BYTES} bytes",
                    endpoint.url()
                )));
            }
            Ok(Err(err)) => {
                return Err(Reject::BadMetadata(format!(
                    "{path} of {} broke off: {}",
                    endpoint.url(),
                    ErrorChain(&*err)
                )));
            }
        };
        Ok(Fetched {
            status: head.status,
            headers: head.headers,
            body,
        })
    }
}
