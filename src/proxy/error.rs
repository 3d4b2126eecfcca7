//! Answers the proxy gives itself, instead of the upstream's: each condition maps once to an
//! HTTP status and a JSON-RPC error object (`{"jsonrpc":"2.0","id":…,"error":{code,message}}`),
//! with the request's id when the proxy could read one, so the client can fail the right call.
//!
//! What the client reads is a short, stable message per condition ([`Reject::client_message`]);
//! the detail (`Display` and the `source` chain: upstream socket and HTTP errors, store errors,
//! the offending header) is for the log only ([`super::upstream::error_chain`]), never the
//! answer.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::value::RawValue;

use super::upstream::UpstreamError;

/// JSON-RPC 2.0 "Parse error".
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC 2.0 "Invalid Request".
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC 2.0 "Internal error"; used for failures between the proxy and the upstream.
pub const INTERNAL_ERROR: i64 = -32603;
/// "Session not found", as the official TypeScript SDK answers an unknown `Mcp-Session-Id`.
pub const SESSION_NOT_FOUND: i64 = -32001;
/// MCP 2026-07-28 `HeaderMismatch`: a mirrored header disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// MCP 2026-07-28 `UnsupportedProtocolVersion`: the request names a protocol version the
/// server does not support; `error.data.supported` lists the ones it does.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// Why the proxy answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum Reject {
    /// A resource-server route refused the request's token (`401`/`403`/`400`, or `503` when
    /// the keys are unavailable), with its `WWW-Authenticate` challenge; -32600 in the body
    /// (clients act on the status and the challenge).
    #[error("access token refused: {}", .0.reason)]
    Unauthorized(Box<super::auth::AuthRefusal>),
    /// A present `Origin` is not an allowed origin (the value, cut to 256 characters, for the
    /// log): `403`/-32600.
    #[error("Origin {0:?} is not allowed")]
    OriginNotAllowed(String),
    /// The request's `Host` (or `:authority`) is not one the proxy serves (DNS-rebinding
    /// protection): `421 Misdirected Request`/-32600. The value, cut to 256 characters, is for
    /// the log.
    #[error("Host {0:?} is not allowed")]
    MisdirectedRequest(String),
    /// A header that may appear once (its name carried) appeared several times: `400`/-32600.
    #[error("header {0} appears more than once")]
    RepeatedHeader(&'static str),
    /// `MCP-Protocol-Version` (or the `_meta` version) names a version the proxy does not know:
    /// `400` with `-32022` and `data.supported` (PROTOCOL.md, "Both eras").
    #[error("unsupported protocol version {0:?}")]
    UnsupportedProtocolVersion(String),
    /// The path names no MCP endpoint (paths match exactly; the path, cut to 256
    /// characters, is for the log): `404`/-32600.
    #[error("no MCP endpoint at {0:?}")]
    NoEndpoint(String),
    /// A method other than `POST`, `GET` and `DELETE`: `405`/-32600 with `Allow`.
    #[error("method {0} is not allowed on the MCP endpoint")]
    MethodNotAllowed(http::Method),
    /// A method other than `GET` and `OPTIONS` on a well-known discovery document
    /// (`proxy::oauth`): `405`/-32600 with `Allow`.
    #[error("method {0} is not allowed on a discovery document")]
    WellKnownMethod(http::Method),
    /// The upstream's discovery document cannot be served (larger than the bound, broken off,
    /// compressed, or a protected-resource document that is not a JSON object; why, for the
    /// log): `502`/-32603.
    #[error("{0}")]
    BadMetadata(String),
    /// An upstream answer the route's interceptors must read is larger than
    /// `proxy.max_event_bytes`: it is neither read whole nor passed unjudged.
    #[error("upstream answer exceeds {limit} bytes, the most the route's interceptors read")]
    AnswerTooLarge {
        /// `proxy.max_event_bytes`.
        limit: usize,
    },
    /// The body is larger than `proxy.max_request_body_bytes`: `413`/-32600.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// `proxy.max_request_body_bytes`, in bytes.
        limit: usize,
    },
    /// The client did not send the whole body within `proxy.request_body_timeout`; the
    /// connection is closed after the answer (its unread rest cannot be skipped):
    /// `408`/-32600.
    #[error("request body not received within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// `session.max_sessions` sessions are live; the client may retry later: `503`/-32603.
    #[error("too many sessions")]
    TooManySessions,
    /// The body could not be read (the connection broke; the error text for the log):
    /// `400`/-32600.
    #[error("request body could not be read: {0}")]
    BodyUnreadable(String),
    /// The body is not a JSON-RPC message (the parser's error for the log): `400`/-32700.
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    /// A legacy `Mcp-Session-Id` names no session held here or in the store: `404`/-32001
    /// (SDK clients then start a new session).
    #[error("session not found")]
    SessionNotFound,
    /// A legacy session's upstream endpoint is gone (it refused the connection, or closed it
    /// before the request was written: the session cannot move to another endpoint, which
    /// does not know it); the
    /// session is ended (the route's name, for the log): `404`/-32001, so the client starts a
    /// new session (on an endpoint that is up), as the spec asks.
    #[error("the session's upstream endpoint on route {0:?} is gone")]
    SessionEndpointGone(std::sync::Arc<str>),
    /// Every endpoint of the route's pool is ejected or drained (the route's name, for the
    /// log): `503`/-32603 at once, with `Retry-After`, instead of waiting on timeouts.
    #[error("no upstream endpoint of route {0:?} is available")]
    NoEndpointAvailable(std::sync::Arc<str>),
    /// A mirrored header (modern era) disagrees with the body, or is repeated:
    /// `400`/-32020.
    #[error("header {header} does not match the request body")]
    HeaderMismatch {
        /// The header's name (`Mcp-Method`, `Mcp-Name`).
        header: &'static str,
    },
    /// The exchange with the upstream failed; the status depends on the kind:
    /// [`UpstreamError::TooManyConnections`] `503` (the client may retry),
    /// [`UpstreamError::Timeout`] `504`, the others `502`. Its chain is the log's.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A `Last-Event-ID` the proxy cannot serve exactly once (why, for the log): `400`/-32600,
    /// never `404` (ARCHITECTURE.md, "Resumption answers").
    #[error("cannot resume the stream: {0}")]
    LastEventId(String),
    /// The upstream refused or could not re-open a stream whose buffered events the client
    /// has all had (why, for the log): `502`/-32603.
    #[error("the upstream MCP server could not resume the stream: {0}")]
    ResumeFailed(String),
    /// A session or stream this process does not hold could not be looked up in the session
    /// store (the store's error is the source); the client may retry (its session is not lost):
    /// `503`/-32603.
    #[error("the session store is unavailable")]
    StoreUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A failure of the proxy itself (a stream tracker that cannot be opened or attached, no
    /// randomness for a session id; the detail for the log): `500`/-32603.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Reject {
    /// The HTTP status and JSON-RPC error code of this condition.
    pub fn status_and_code(&self) -> (StatusCode, i64) {
        match self {
            Self::Unauthorized(refusal) => (refusal.status, INVALID_REQUEST),
            Self::OriginNotAllowed(_) => (StatusCode::FORBIDDEN, INVALID_REQUEST),
            Self::MisdirectedRequest(_) => (StatusCode::MISDIRECTED_REQUEST, INVALID_REQUEST),
            Self::RepeatedHeader(_) => (StatusCode::BAD_REQUEST, INVALID_REQUEST),
            Self::UnsupportedProtocolVersion(_) => {
                (StatusCode::BAD_REQUEST, UNSUPPORTED_PROTOCOL_VERSION)
            }
            Self::NoEndpoint(_) => (StatusCode::NOT_FOUND, INVALID_REQUEST),
            Self::MethodNotAllowed(_) | Self::WellKnownMethod(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, INVALID_REQUEST)
            }
            Self::BadMetadata(_) => (StatusCode::BAD_GATEWAY, INTERNAL_ERROR),
            Self::AnswerTooLarge { .. } => (StatusCode::BAD_GATEWAY, INTERNAL_ERROR),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, INVALID_REQUEST),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, INVALID_REQUEST),
            Self::TooManySessions => (StatusCode::SERVICE_UNAVAILABLE, INTERNAL_ERROR),
            Self::BodyUnreadable(_) => (StatusCode::BAD_REQUEST, INVALID_REQUEST),
            Self::NotJson(_) => (StatusCode::BAD_REQUEST, PARSE_ERROR),
            Self::SessionNotFound => (StatusCode::NOT_FOUND, SESSION_NOT_FOUND),
            Self::SessionEndpointGone(_) => (StatusCode::NOT_FOUND, SESSION_NOT_FOUND),
            Self::NoEndpointAvailable(_) => (StatusCode::SERVICE_UNAVAILABLE, INTERNAL_ERROR),
            Self::HeaderMismatch { .. } => (StatusCode::BAD_REQUEST, HEADER_MISMATCH),
            Self::Upstream(err) => match err {
                UpstreamError::TooManyConnections { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, INTERNAL_ERROR)
                }
                UpstreamError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, INTERNAL_ERROR),
                UpstreamError::Connect(_)
                | UpstreamError::Exchange(_)
                | UpstreamError::Unsent(_)
                | UpstreamError::Body(_) => (StatusCode::BAD_GATEWAY, INTERNAL_ERROR),
            },
            Self::LastEventId(_) => (StatusCode::BAD_REQUEST, INVALID_REQUEST),
            Self::ResumeFailed(_) => (StatusCode::BAD_GATEWAY, INTERNAL_ERROR),
            Self::StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, INTERNAL_ERROR),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR),
        }
    }

    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::OriginNotAllowed(_) => "origin_not_allowed",
            Self::MisdirectedRequest(_) => "misdirected_request",
            Self::RepeatedHeader(_) => "repeated_header",
            Self::UnsupportedProtocolVersion(_) => "unsupported_protocol_version",
            Self::NoEndpoint(_) => "no_endpoint",
            Self::MethodNotAllowed(_) | Self::WellKnownMethod(_) => "method_not_allowed",
            Self::BadMetadata(_) => "bad_metadata",
            Self::AnswerTooLarge { .. } => "answer_too_large",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyTimeout(_) => "body_timeout",
            Self::TooManySessions => "too_many_sessions",
            Self::BodyUnreadable(_) => "body_unreadable",
            Self::NotJson(_) => "not_json",
            Self::SessionNotFound => "session_not_found",
            Self::SessionEndpointGone(_) => "session_endpoint_gone",
            Self::NoEndpointAvailable(_) => "no_endpoint_available",
            Self::HeaderMismatch { .. } => "header_mismatch",
            Self::Upstream(err) => match err {
                UpstreamError::TooManyConnections { .. } => "upstream_connections_exhausted",
                UpstreamError::Timeout(_) => "upstream_timeout",
                UpstreamError::Connect(_)
                | UpstreamError::Exchange(_)
                | UpstreamError::Unsent(_)
                | UpstreamError::Body(_) => "upstream_unavailable",
            },
            Self::LastEventId(_) => "last_event_id",
            Self::ResumeFailed(_) => "resume_failed",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The message the client reads: short and stable per condition, never carrying upstream
    /// or store error text (that is in `Display`, for the log).
    pub fn client_message(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Unauthorized(refusal) => refusal.reason.into(),
            Self::OriginNotAllowed(_) => "Origin is not allowed".into(),
            Self::MisdirectedRequest(_) => "Host is not allowed".into(),
            Self::RepeatedHeader(name) => format!("header {name} appears more than once").into(),
            Self::UnsupportedProtocolVersion(_) => "Unsupported protocol version".into(),
            Self::NoEndpoint(_) => "no MCP endpoint at this path".into(),
            Self::MethodNotAllowed(_) => "method not allowed on the MCP endpoint".into(),
            Self::WellKnownMethod(_) => "method not allowed on a discovery document".into(),
            Self::BadMetadata(_) => "upstream discovery document unusable".into(),
            Self::AnswerTooLarge { .. } => "upstream answer too large".into(),
            Self::BodyTooLarge { limit } => format!("request body exceeds {limit} bytes").into(),
            Self::BodyTimeout(_) => "request body not received in time".into(),
            Self::TooManySessions => "too many sessions; retry later".into(),
            Self::BodyUnreadable(_) => "request body could not be read".into(),
            Self::NotJson(_) => "request body is not a JSON-RPC message".into(),
            Self::SessionNotFound | Self::SessionEndpointGone(_) => "session not found".into(),
            Self::NoEndpointAvailable(_) => "no upstream MCP server available; retry later".into(),
            Self::HeaderMismatch { header } => {
                format!("header {header} does not match the request body").into()
            }
            Self::Upstream(err) => match err {
                UpstreamError::TooManyConnections { .. } => {
                    "too many upstream connections; retry later".into()
                }
                UpstreamError::Timeout(_) => "upstream MCP server did not answer in time".into(),
                UpstreamError::Connect(_)
                | UpstreamError::Exchange(_)
                | UpstreamError::Unsent(_)
                | UpstreamError::Body(_) => "upstream MCP server unavailable".into(),
            },
            Self::LastEventId(_) => "Last-Event-ID cannot be resumed".into(),
            Self::ResumeFailed(_) => "the upstream MCP server could not resume the stream".into(),
            Self::StoreUnavailable(_) => "session store unavailable; retry".into(),
            Self::Internal(_) => "internal error".into(),
        }
    }

    /// Whether the condition is the proxy's or the upstream's fault (5xx), logged as a warning.
    pub fn is_server_side(&self) -> bool {
        self.status_and_code().0.is_server_error()
    }

    /// The answer to the client, carrying `id` (the request's JSON-RPC id) when known. The
    /// message is [`Reject::client_message`]; `error.data` carries `supported` for
    /// [`Reject::UnsupportedProtocolVersion`].
    pub fn into_response_with_id(self, id: Option<&RawValue>) -> Response {
        let (status, code) = self.status_and_code();
        let data = matches!(self, Self::UnsupportedProtocolVersion(_)).then(|| ErrorData {
            supported: crate::protocol::era::KNOWN_VERSIONS,
        });
        let body = ErrorResponse {
            jsonrpc: "2.0",
            id,
            error: ErrorObject {
                code,
                message: self.client_message(),
                data,
            },
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            Bytes::from(body),
        )
            .into_response();
        if let Self::Unauthorized(refusal) = &self
            && let Some(challenge) = refusal.challenge()
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        if matches!(self, Self::NoEndpointAvailable(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, Self::BodyTimeout(_)) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let allow = match self {
            Self::MethodNotAllowed(_) => Some("GET, POST, DELETE"),
            Self::WellKnownMethod(_) => Some("GET, OPTIONS"),
            _ => None,
        };
        if let Some(allow) = allow {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// A JSON-RPC 2.0 error response, fields in the order the specification lists them.
#[derive(serde::Serialize)]
struct ErrorResponse<'a> {
    jsonrpc: &'static str,
    id: Option<&'a RawValue>,
    error: ErrorObject,
}

#[derive(serde::Serialize)]
struct ErrorObject {
    code: i64,
    message: std::borrow::Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<ErrorData>,
}

#[derive(serde::Serialize)]
struct ErrorData {
    supported: &'static [&'static str],
}

impl From<crate::session::CreateSessionError> for Reject {
    fn from(err: crate::session::CreateSessionError) -> Self {
        match err {
            crate::session::CreateSessionError::TooMany { .. } => Self::TooManySessions,
            crate::session::CreateSessionError::Random(err) => Self::Internal(err.to_string()),
        }
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        self.into_response_with_id(None)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn body(reject: Reject, id: Option<&RawValue>) -> serde_json::Value {
        let response = reject.into_response_with_id(id);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn answers_carry_a_fixed_message_and_the_id_never_the_detail() {
        let id = RawValue::from_string("\"req-1\"".into()).unwrap();
        for reject in [
            refused().into(),
            Reject::StoreUnavailable(
                "session store redis: WRONGTYPE Operation against a key".into(),
            ),
            Reject::ResumeFailed("client error (Connect): 10.0.0.7:3001".into()),
            Reject::Internal("tracker: window full at 10.0.0.7".into()),
            Reject::NotJson("expected value at line 1 column 1".into()),
            Reject::OriginNotAllowed("http://evil.example/<script>".into()),
            Reject::MisdirectedRequest("evil.example.com".into()),
        ] {
            let detail = reject.to_string();
            let json = body(reject, Some(&id)).await;
            assert_eq!(json["id"], "req-1");
            let message = json["error"]["message"].as_str().unwrap();
            for word in [
                "refused",
                "WRONGTYPE",
                "10.0.0.7",
                "line 1",
                "evil",
                "script",
            ] {
                assert!(
                    !message.contains(word),
                    "{message:?} leaks {word:?} from {detail:?}"
                );
            }
        }
    }

    /// A connect error as the connector makes one: a message and an OS error under it.
    fn refused() -> UpstreamError {
        let os = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111) to 10.0.0.7:3001",
        );
        UpstreamError::Connect(Box::new(TcpConnect(os)))
    }

    #[derive(Debug, thiserror::Error)]
    #[error("tcp connect error")]
    struct TcpConnect(#[source] std::io::Error);

    #[tokio::test]
    async fn each_upstream_failure_keeps_its_status_and_the_log_gets_the_whole_chain() {
        let cases: [(Reject, StatusCode, &str); 3] = [
            (
                refused().into(),
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
            ),
            (
                UpstreamError::Timeout(std::time::Duration::from_secs(3)).into(),
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
            ),
            (
                UpstreamError::TooManyConnections { max: 8 }.into(),
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_connections_exhausted",
            ),
        ];
        for (reject, status, kind) in cases {
            assert_eq!(reject.status_and_code(), (status, INTERNAL_ERROR));
            assert_eq!(reject.kind(), kind);
            assert!(reject.is_server_side());
        }
        let chain = crate::proxy::upstream::error_chain(&Reject::from(refused()));
        assert!(
            chain.starts_with("cannot connect to the upstream MCP server: "),
            "{chain}"
        );
        assert!(chain.contains("tcp connect error"), "{chain}");
        assert!(
            chain.contains("Connection refused (os error 111)"),
            "{chain}"
        );
        let chain = crate::proxy::upstream::error_chain(&Reject::StoreUnavailable(
            "redis: connection refused".into(),
        ));
        assert_eq!(
            chain,
            "the session store is unavailable: redis: connection refused"
        );
    }

    #[tokio::test]
    async fn unsupported_version_lists_the_supported_ones() {
        let json = body(Reject::UnsupportedProtocolVersion("junk".into()), None).await;
        assert_eq!(json["error"]["code"], UNSUPPORTED_PROTOCOL_VERSION);
        let supported = json["error"]["data"]["supported"].as_array().unwrap();
        assert!(supported.iter().any(|v| v == "2025-11-25"));
        assert!(supported.iter().any(|v| v == "2026-07-28"));
        assert!(!json["error"]["message"].as_str().unwrap().contains("junk"));
    }
}
