//! Distributed traces (`[traces]`): W3C trace context in, a span per request and per SSE stream,
//! the context propagated to the upstream, exported with OTLP/gRPC (the `opentelemetry` crates).
//! Off unless `traces.otlp_endpoint` is set, and then nothing of it runs on a request.
//!
//! - **Incoming context.** A request's parent is its `params._meta` `traceparent`/`tracestate`
//!   (MCP SEP-414: what the official SDK clients write and servers read) or its HTTP
//!   `traceparent`/`tracestate` headers (W3C Trace Context). When both are valid and name other
//!   traces, `_meta` wins and the header's context becomes a link of the span: `_meta` travels
//!   with the message itself, end to end, and is the MCP client's own; a header that disagrees
//!   was set by an HTTP hop that did not see the message's context (a gateway starting a trace
//!   of its own), and is kept as a link, not lost.
//! - **Spans.** `{method} {name}` (kind server; the MCP semantic conventions' name), with
//!   `mcp.method.name`, `gen_ai.tool.name` (a `tools/call`), `mcp.route`, `mcp.session.id`,
//!   `jsonrpc.request.id`, `mcp.protocol.era`; a child `forward {method}` (kind client) around
//!   the upstream request with `server.address` (the endpoint's URL) and `http.response.status_code`;
//!   an SSE answer gets a child `SSE stream` (kind internal, `mcp.stream.id`) that ends with
//!   the stream. A request the relay answers itself (an interceptor) has no client span.
//! - **Outgoing context.** The client span's context goes to the upstream in the HTTP headers
//!   and in the message's `params._meta` (the message is re-serialized once for it; a batch
//!   gets the headers only), so an SDK server's own span is its child.

use std::{collections::HashMap, sync::Arc};

use http::{HeaderMap, HeaderValue};
use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, TextMapPropagator},
    trace::{Link, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Tracer},
};
use serde_json::value::RawValue;

use crate::config::TracesConfig;

/// The W3C `traceparent` key (header and `_meta`).
const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` key (header and `_meta`).
const TRACESTATE: &str = "tracestate";
/// Longest value a span takes from a request (a name, a method, an id), in bytes.
pub const MAX_ATTRIBUTE: usize = 128;

/// `value` cut to at most [`MAX_ATTRIBUTE`] bytes, on a character boundary.
fn cut(value: &str) -> &str {
    if value.len() <= MAX_ATTRIBUTE {
        return value;
    }
    let mut end = MAX_ATTRIBUTE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// The daemon's tracer and exporter.
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: Tracer,
    propagator: TraceContextPropagator,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Traces")
    }
}

impl Traces {
    /// The tracer of `config`, exporting to its OTLP endpoint; `None` when traces are off.
    /// Must run inside a tokio runtime (the gRPC exporter's channel lives there). Errors: the
    /// exporter could not be built.
    pub fn start(config: &TracesConfig) -> Result<Option<Arc<Self>>, String> {
        if config.otlp_endpoint.is_empty() {
            return Ok(None);
        }
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .build()
            .map_err(|e| format!("OTLP exporter for {}: {e}", config.otlp_endpoint))?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(config.export_delay)
            .with_max_queue_size(config.max_queued_spans)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch)
                    .build(),
            )
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("mcp-relay");
        Ok(Some(Arc::new(Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })))
    }

    /// Exports what is held and stops the exporter (daemon shutdown). Blocks: call it off the
    /// async threads.
    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::warn!(error = %err, "trace exporter did not shut down cleanly");
        }
    }

    /// Begins the server span of one request (see the module docs). Every value taken from
    /// the request is cut to [`MAX_ATTRIBUTE`] bytes.
    pub fn begin(&self, start: &TraceStart<'_>) -> RequestTrace {
        let mut meta = HashMap::new();
        if let Some(v) = start.meta_traceparent {
            meta.insert(TRACEPARENT.to_owned(), v.to_owned());
        }
        if let Some(v) = start.meta_tracestate {
            meta.insert(TRACESTATE.to_owned(), v.to_owned());
        }
        let from_meta =
            Some(self.propagator.extract(&meta)).filter(|cx| cx.span().span_context().is_valid());
        let from_headers = Some(self.propagator.extract(&HeaderCarrier(start.headers)))
            .filter(|cx| cx.span().span_context().is_valid());
        let mut links = Vec::new();
        let parent = match (from_meta, from_headers) {
            (Some(meta), Some(header)) => {
                let h = header.span().span_context().clone();
                if meta.span().span_context().trace_id() != h.trace_id() {
                    links.push(Link::with_context(h));
                }
                meta
            }
            (Some(meta), None) => meta,
            (None, Some(header)) => header,
            (None, None) => Context::new(),
        };
        let method = cut(start.method.unwrap_or(start.http_method));
        let name = match start.name {
            Some(name) => format!("{method} {}", cut(name)),
            None => method.to_owned(),
        };
        let mut attributes = vec![
            KeyValue::new("mcp.method.name", method.to_owned()),
            KeyValue::new("mcp.route", start.route.to_owned()),
            KeyValue::new("mcp.protocol.era", start.era),
            KeyValue::new("http.request.method", start.http_method.to_owned()),
        ];
        if let Some(name) = start.name {
            let key = match method {
                "tools/call" => "gen_ai.tool.name",
                "prompts/get" => "gen_ai.prompt.name",
                _ => "mcp.resource.uri",
            };
            attributes.push(KeyValue::new(key, cut(name).to_owned()));
        }
        if let Some(session) = start.session {
            attributes.push(KeyValue::new("mcp.session.id", session.to_owned()));
        }
        if let Some(id) = start.id {
            attributes.push(KeyValue::new("jsonrpc.request.id", cut(id).to_owned()));
        }
        let server = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .with_links(links)
            .start_with_context(&self.tracer, &parent);
        RequestTrace {
            server: parent.with_span(server),
            method: method.to_owned(),
            client: None,
            outgoing: HashMap::new(),
        }
    }

    /// Begins `trace`'s client span around its upstream request (call it just before the
    /// forward phase), whose context goes upstream.
    pub fn start_forward(&self, trace: &mut RequestTrace) {
        let client = self
            .tracer
            .span_builder(format!("forward {}", trace.method))
            .with_kind(SpanKind::Client)
            .start_with_context(&self.tracer, &trace.server);
        let client = trace.server.with_span(client);
        trace.outgoing.clear();
        self.propagator.inject_context(&client, &mut trace.outgoing);
        trace.outgoing.retain(|_, v| !v.is_empty());
        trace.client = Some(client);
    }

    /// A span for the SSE stream of `trace`'s answer, ended when the returned guard drops.
    pub fn stream(&self, trace: &RequestTrace, stream: &str) -> StreamSpan {
        let span = self
            .tracer
            .span_builder("SSE stream")
            .with_kind(SpanKind::Internal)
            .with_attributes([KeyValue::new("mcp.stream.id", stream.to_owned())])
            .start_with_context(&self.tracer, &trace.server);
        StreamSpan(trace.server.with_span(span))
    }
}

/// What a request's spans start from.
#[derive(Debug)]
pub struct TraceStart<'a> {
    /// The request's headers (`traceparent`, `tracestate`).
    pub headers: &'a HeaderMap,
    /// Its `params._meta.traceparent` (bounded by the admit phase's peek).
    pub meta_traceparent: Option<&'a str>,
    /// Its `params._meta.tracestate` (bounded likewise).
    pub meta_tracestate: Option<&'a str>,
    /// Its JSON-RPC method.
    pub method: Option<&'a str>,
    /// `params.name` or `params.uri`.
    pub name: Option<&'a str>,
    /// Its JSON-RPC id (raw JSON).
    pub id: Option<&'a str>,
    /// The HTTP method.
    pub http_method: &'a str,
    /// The route's name.
    pub route: &'a str,
    /// The legacy session's proxy id.
    pub session: Option<&'a str>,
    /// `legacy` or `modern`.
    pub era: &'static str,
}

/// The spans of one request: the server span, and the client span around the upstream
/// request until it has its answer head.
#[derive(Debug)]
pub struct RequestTrace {
    server: Context,
    /// The (cut) method, for the client span's name.
    method: String,
    client: Option<Context>,
    /// The client span's W3C context, for the upstream.
    outgoing: HashMap<String, String>,
}

impl RequestTrace {
    /// Sets the outgoing `traceparent`/`tracestate` headers.
    pub fn inject_headers(&self, headers: &mut HeaderMap) {
        headers.remove(TRACESTATE);
        for key in [TRACEPARENT, TRACESTATE] {
            if let Some(value) = self
                .outgoing
                .get(key)
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                headers.insert(key, value);
            }
        }
    }

    /// The message `body` with the outgoing `traceparent`/`tracestate` in its `params._meta`
    /// (both made when absent), every other member's bytes kept as they were (spliced, not
    /// re-read: numbers, escapes and order stay). `None` when there is nothing to set or the
    /// body is not one request or notification (an object with a `method`) whose `params`
    /// and `_meta`, when present, are objects: a response never gets `params`.
    pub fn inject_message(&self, body: &[u8]) -> Option<bytes::Bytes> {
        type Members = indexmap::IndexMap<String, Box<RawValue>>;
        let traceparent = self.outgoing.get(TRACEPARENT)?;
        let mut message: Members = serde_json::from_slice(body).ok()?;
        if !message.contains_key("method") {
            return None;
        }
        let mut params: Members = match message.get("params") {
            Some(raw) => serde_json::from_str(raw.get()).ok()?,
            None => Members::new(),
        };
        let mut meta: Members = match params.get("_meta") {
            Some(raw) => serde_json::from_str(raw.get()).ok()?,
            None => Members::new(),
        };
        let string = |s: &str| serde_json::value::to_raw_value(s).ok();
        meta.insert(TRACEPARENT.to_owned(), string(traceparent)?);
        match self.outgoing.get(TRACESTATE) {
            Some(state) => {
                meta.insert(TRACESTATE.to_owned(), string(state)?);
            }
            None => {
                meta.shift_remove(TRACESTATE);
            }
        }
        params.insert(
            "_meta".to_owned(),
            serde_json::value::to_raw_value(&meta).ok()?,
        );
        message.insert(
            "params".to_owned(),
            serde_json::value::to_raw_value(&params).ok()?,
        );
        serde_json::to_vec(&message).ok().map(bytes::Bytes::from)
    }

    /// The upstream request was sent to `endpoint` (its `host:port`) and answered `status` (or
    /// failed: `None`): the client span ends.
    pub fn forwarded(&mut self, endpoint: &str, status: Option<u16>) {
        let server = self.server.span();
        server.set_attribute(KeyValue::new("server.address", endpoint.to_owned()));
        if let Some(client) = self.client.take() {
            let span = client.span();
            span.set_attribute(KeyValue::new("server.address", endpoint.to_owned()));
            match status {
                Some(status) => {
                    span.set_attribute(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status),
                    ));
                    if status >= 500 {
                        span.set_status(Status::error(format!("upstream answered {status}")));
                    }
                }
                None => span.set_status(Status::error("upstream request failed")),
            }
            span.end();
        }
    }

    /// The relay answered the request itself (`by`: an interceptor): it has no client span.
    pub fn answered_here(&mut self, by: &str) {
        self.server
            .span()
            .set_attribute(KeyValue::new("mcp.relay.answered_by", by.to_owned()));
    }

    /// The answer head went out with `status`: the server span ends (an SSE answer's stream
    /// span goes on).
    pub fn responded(mut self, status: u16) {
        if let Some(client) = self.client.take() {
            // Refused before anything was sent (no endpoint available, say).
            let span = client.span();
            span.set_status(Status::error("not sent upstream"));
            span.end();
        }
        let span = self.server.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(format!("answered {status}")));
        }
        span.end();
    }
}

/// An SSE stream's span, ended on drop.
#[derive(Debug)]
pub struct StreamSpan(Context);

impl Drop for StreamSpan {
    fn drop(&mut self) {
        self.0.span().end();
    }
}

/// A response body that holds its SSE stream's span until it ends (or the client leaves).
#[derive(Debug)]
pub struct Traced<B> {
    inner: B,
    _span: StreamSpan,
}

impl<B> Traced<B> {
    /// `inner`, with `span` ended when it is dropped.
    pub fn new(inner: B, span: StreamSpan) -> Self {
        Self { inner, _span: span }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Traced<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

struct HeaderCarrier<'a>(&'a HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traces() -> Traces {
        // No exporter: spans are made and dropped.
        let provider = SdkTracerProvider::builder().build();
        Traces {
            tracer: provider.tracer("t"),
            provider,
            propagator: TraceContextPropagator::new(),
        }
    }

    const META_PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const HEADER_PARENT: &str = "00-11111111111111111111111111111111-2222222222222222-01";

    fn start<'a>(headers: &'a HeaderMap, traceparent: Option<&'a str>) -> TraceStart<'a> {
        TraceStart {
            headers,
            meta_traceparent: traceparent,
            meta_tracestate: None,
            method: Some("tools/call"),
            name: Some("echo"),
            id: Some("1"),
            http_method: "POST",
            route: "/mcp",
            session: None,
            era: "modern",
        }
    }

    #[test]
    fn meta_wins_over_a_header_of_another_trace_and_the_upstream_gets_a_child() {
        let t = traces();
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(HEADER_PARENT));
        let mut trace = t.begin(&start(&headers, Some(META_PARENT)));
        t.start_forward(&mut trace);
        let outgoing = trace.outgoing.get(TRACEPARENT).unwrap().clone();
        assert!(
            outgoing.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "the _meta trace: {outgoing}"
        );
        assert!(
            !outgoing.contains("b7ad6b7169203331"),
            "a span of ours, not the client's"
        );
        assert!(
            !trace.outgoing.contains_key(TRACESTATE),
            "no empty tracestate"
        );
        // The header alone: its trace.
        let mut trace = t.begin(&start(&headers, None));
        t.start_forward(&mut trace);
        assert!(trace.outgoing[TRACEPARENT].starts_with("00-11111111111111111111111111111111-"));
        // Spliced into `_meta` (made when absent), every other byte kept; headers set.
        let body = br#"{"jsonrpc":"2.0","id":12345678901234567890123,"method":"tools/call","params":{"name":"e\u0063ho","arguments":{"x":1.50}}}"#;
        let out = trace.inject_message(body).expect("a request");
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.starts_with(r#"{"jsonrpc":"2.0","id":12345678901234567890123,"method":"tools/call","params":{"name":"e\u0063ho","arguments":{"x":1.50},"_meta":{"traceparent":""#),
            "{text}"
        );
        assert!(
            trace
                .inject_message(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#)
                .is_none(),
            "a response gets no params"
        );
        assert!(
            trace
                .inject_message(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#)
                .is_none()
        );
        let mut out = HeaderMap::new();
        trace.inject_headers(&mut out);
        assert_eq!(out[TRACEPARENT], trace.outgoing[TRACEPARENT].as_str());
        // A name of 3 MiB is cut in the span.
        let long = "x".repeat(3 << 20);
        let mut start = start(&headers, None);
        start.name = Some(&long);
        let trace = t.begin(&start);
        assert!(trace.method.len() <= MAX_ATTRIBUTE);
    }
}
