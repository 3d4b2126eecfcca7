//! A small HTTP/1.1 client for talking to the proxy as an MCP client would, or as no client
//! should: any method, any headers, any body. Answers are read whole ([`Answer`]) or, for SSE,
//! block by block ([`SseReader`]), so a test can read some events and then drop the connection.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client as LegacyClient, connect::HttpConnector},
    rt::TokioExecutor,
};

/// How long any single wait on the proxy may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// `Accept` of an MCP client `POST`.
pub const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// A client with its own connection pool (one per test keeps tests independent).
pub struct Client {
    inner: LegacyClient<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        Self {
            inner: LegacyClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends `method url` with `headers` and `body`; returns the response once its head arrived.
    /// Panics on a transport error or after [`WAIT`].
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response<Incoming> {
        let mut request = Request::new(Full::new(body.into()));
        *request.method_mut() = method;
        *request.uri_mut() = url.parse().expect("valid URL");
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::try_from(*name).expect("valid header name"),
                HeaderValue::try_from(*value).expect("valid header value"),
            );
        }
        tokio::time::timeout(WAIT, self.inner.request(request))
            .await
            .expect("response head within the wait")
            .expect("HTTP exchange with the proxy")
    }

    /// An MCP `POST`: `Content-Type: application/json`, [`ACCEPT_BOTH`], then `headers`.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response<Incoming> {
        let mut all = vec![
            ("content-type", "application/json"),
            ("accept", ACCEPT_BOTH),
        ];
        all.extend_from_slice(headers);
        self.send(Method::POST, url, &all, body).await
    }

    /// [`Client::post`], then the whole answer.
    pub async fn post_read(&self, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        read_full(self.post(url, headers, body.to_owned()).await).await
    }
}

/// A response read to its end.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// A header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

/// Reads a whole response (panics after [`WAIT`]).
pub async fn read_full(response: Response<Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("whole body within the wait")
        .expect("readable body")
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Reads an SSE body one block at a time. A block ends at the first blank line (`\n\n`; the
/// test upstream and the proxy both end lines with LF). Dropping the reader drops the body,
/// which closes the connection.
pub struct SseReader {
    body: Incoming,
    buf: BytesMut,
}

impl SseReader {
    pub fn new(response: Response<Incoming>) -> Self {
        Self {
            body: response.into_body(),
            buf: BytesMut::new(),
        }
    }

    /// The next block's bytes, including its blank line; `None` at the end of the stream (bytes
    /// of an unfinished block at the end are returned as a last block). Panics after [`WAIT`].
    pub async fn next_block(&mut self) -> Option<Bytes> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\n\n") {
                return Some(self.buf.split_to(at + 2).freeze());
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("next SSE bytes within the wait");
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(err)) => panic!("SSE body broke: {err}"),
                None if self.buf.is_empty() => return None,
                None => return Some(self.buf.split().freeze()),
            }
        }
    }

    /// Every remaining byte of the stream, until the proxy ends it.
    pub async fn read_to_end(mut self) -> Bytes {
        let mut all = BytesMut::new();
        while let Some(block) = self.next_block().await {
            all.extend_from_slice(&block);
        }
        all.freeze()
    }
}
