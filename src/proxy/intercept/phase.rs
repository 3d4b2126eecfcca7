//! **Intercept**, the phase between resolve and forward: a client `POST`'s messages through
//! the route's chain ([`super::Chain::on_client`]), and the [`super::ServerFilter`] its
//! answer's messages go through.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::value::RawValue;

use super::{Answer, ClientOutcome, ClientRequest, Exchange, ServerFilter, join_batch};
use crate::protocol::{era::peek_message, headers::MCP_SESSION_ID};
use crate::proxy::{Proxy, phases::RequestCtx};

/// JSON-RPC Invalid Request: what the other requests of a batch the proxy answered get.
const INVALID_REQUEST: i64 = -32600;

impl Proxy {
    /// **Intercept**: runs a client `POST`'s message (each message of a batch) through the
    /// route's chain. Returns the proxy's own answer when an interceptor answered a request
    /// (the JSON-RPC error with the request's id, the interceptor's HTTP status and
    /// `Retry-After`; a batch's other requests get `-32600`) or dropped a notification
    /// (`202`); otherwise the request goes on, its body replaced when an interceptor changed
    /// it. `GET`, `DELETE`, client responses and routes without a chain pass untouched.
    /// Sets the filter the answer's messages go through ([`RequestCtx::filter`]).
    pub(in crate::proxy) fn intercept(&self, ctx: &mut RequestCtx) -> Option<Response> {
        self.route().chain()?;
        let answered = self.intercept_client(ctx);
        if answered.is_none() {
            ctx.filter = self.server_filter(ctx);
        }
        answered
    }

    fn intercept_client(&self, ctx: &mut RequestCtx) -> Option<Response> {
        let chain = self.route().chain()?;
        if ctx.request.parts.method != Method::POST {
            return None;
        }
        let peek = ctx.request.peek.as_ref()?;
        if peek.batch {
            return self.intercept_batch(ctx);
        }
        if peek.method.is_none()
            && peek.id.is_none()
            && !crate::protocol::era::is_readable(&ctx.request.body)
        {
            // A message with neither could not be read (a duplicate key): the interceptors
            // cannot judge it, so it does not go on unjudged.
            return Some(self.unreadable(ctx));
        }
        let method = peek.method.as_deref()?;
        if !chain.wants_client(method) {
            return None;
        }
        let client = self.forwarded.client_ip(&ctx.request.parts);
        let outcome = chain.on_client(
            ClientRequest {
                era: ctx.era,
                method,
                name: peek.name.as_deref(),
                id: peek.id.as_deref(),
                client,
                context: ctx.request.parts.headers.get(header::AUTHORIZATION),
            },
            ctx.request.body.clone(),
        );
        match outcome {
            ClientOutcome::Forward(body) => {
                ctx.request.body = body;
                None
            }
            ClientOutcome::Answer(answer) => {
                let body = answer.body(peek.id.as_deref());
                Some(self.intercepted(ctx, &answer, body))
            }
            ClientOutcome::Drop => Some(self.accepted(ctx)),
        }
    }

    /// [`Proxy::intercept`] for a batch.
    fn intercept_batch(&self, ctx: &mut RequestCtx) -> Option<Response> {
        let chain = self.route().chain()?;
        let items: Vec<Box<RawValue>> = serde_json::from_slice(&ctx.request.body).ok()?;
        let mut peeks = Vec::with_capacity(items.len());
        let mut wanted = false;
        for item in &items {
            let peek = peek_message(item.get().as_bytes()).ok();
            if peek
                .as_ref()
                .is_none_or(|p| p.method.is_none() && p.id.is_none())
                && !crate::protocol::era::is_readable(item.get().as_bytes())
            {
                // An unreadable message (not an object, a duplicate key): not passed unjudged.
                return Some(self.unreadable(ctx));
            }
            wanted |= peek
                .as_ref()
                .and_then(|p| p.method.as_deref())
                .is_some_and(|m| chain.wants_client(m));
            peeks.push(peek);
        }
        if !wanted {
            return None;
        }
        let client = self.forwarded.client_ip(&ctx.request.parts);
        let mut forwarded: Vec<Bytes> = Vec::with_capacity(items.len());
        let mut answers: Vec<Option<Answer>> = vec![None; items.len()];
        let mut changed = false;
        for ((item, peek), answer) in items.iter().zip(&peeks).zip(answers.iter_mut()) {
            let raw = Bytes::copy_from_slice(item.get().as_bytes());
            let Some((peek, method)) = peek.as_ref().and_then(|p| Some((p, p.method.as_deref()?)))
            else {
                forwarded.push(raw);
                continue;
            };
            let request = ClientRequest {
                era: ctx.era,
                method,
                name: peek.name.as_deref(),
                id: peek.id.as_deref(),
                client,
                context: ctx.request.parts.headers.get(header::AUTHORIZATION),
            };
            match chain.on_client(request, raw.clone()) {
                ClientOutcome::Forward(bytes) => {
                    changed |= bytes != raw;
                    forwarded.push(bytes);
                }
                ClientOutcome::Answer(a) => *answer = Some(a),
                ClientOutcome::Drop => changed = true,
            }
        }
        if let Some(first) = answers.iter().flatten().next().cloned() {
            // The whole batch is answered here: the answered requests with their answers, the
            // other requests refused; notifications get nothing.
            let bodies: Vec<Bytes> = peeks
                .iter()
                .zip(&answers)
                .filter_map(|(peek, answer)| {
                    let id = peek.as_ref()?.id.as_deref()?;
                    Some(match answer {
                        Some(a) => a.body(Some(id)),
                        None => Answer::error(
                            INVALID_REQUEST,
                            "batch refused: it holds a request the proxy answered",
                        )
                        .body(Some(id)),
                    })
                })
                .collect();
            // The status and Retry-After of the first answer (a limit's 429 stays a 429).
            return Some(self.intercepted(ctx, &first, join_batch(&bodies)));
        }
        if forwarded.is_empty() {
            return Some(self.accepted(ctx));
        }
        if changed {
            ctx.request.body = join_batch(&forwarded);
        }
        None
    }

    /// The proxy's answer `body` with `answer`'s status and `Retry-After`, and the session's
    /// id in a session.
    fn intercepted(&self, ctx: &RequestCtx, answer: &Answer, body: Bytes) -> Response {
        let mut response = (
            answer.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if let Some(after) = answer.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        self.with_session_id(ctx, response)
    }

    /// `400` with JSON-RPC `-32600` for a message the intercept phase could not read.
    fn unreadable(&self, ctx: &RequestCtx) -> Response {
        crate::proxy::stats::ProxyStats::incr(&self.stats().unreadable_refused);
        let answer = Answer {
            status: StatusCode::BAD_REQUEST,
            ..Answer::error(
                INVALID_REQUEST,
                "Invalid Request: the message could not be read (a duplicate key?)",
            )
        };
        tracing::debug!(route = %self.route().name(), "unreadable message refused before the interceptors");
        self.intercepted(ctx, &answer, answer.body(None))
    }

    /// `202 Accepted` for notifications the chain dropped.
    fn accepted(&self, ctx: &RequestCtx) -> Response {
        self.with_session_id(ctx, StatusCode::ACCEPTED.into_response())
    }

    fn with_session_id(&self, ctx: &RequestCtx, mut response: Response) -> Response {
        if let Some(s) = &ctx.session
            && let Ok(v) = HeaderValue::from_str(s.id().as_str())
        {
            response.headers_mut().insert(&MCP_SESSION_ID, v);
        }
        response
    }

    /// The filter the server messages of `ctx`'s answer go through, when the route's chain
    /// wants them: a `POST`'s requests (every request of a batch), or a `GET` stream.
    fn server_filter(&self, ctx: &RequestCtx) -> Option<ServerFilter> {
        let chain = self.route().chain()?;
        // Asked first, on what the admit phase read: an exchange no interceptor wants costs
        // nothing more (no id parsed, nothing copied).
        let peek = ctx.request.peek.as_ref();
        let single = peek.filter(|p| !p.batch && ctx.request.parts.method == Method::POST);
        let wanted = match single {
            Some(p) => chain.wants_server(p.id.as_ref().and(p.method.as_deref())),
            None if peek.is_some_and(|p| p.batch) => true,
            None => chain.wants_server(None),
        };
        if !wanted {
            return None;
        }
        let context = ctx
            .request
            .parts
            .headers
            .get(header::AUTHORIZATION)
            .cloned();
        let exchange = match (&ctx.request.parts.method, ctx.request.peek.as_ref()) {
            (&Method::POST, Some(peek)) if peek.batch => {
                let items: Vec<&RawValue> =
                    serde_json::from_slice(&ctx.request.body).unwrap_or_default();
                let requests: Vec<_> = items
                    .iter()
                    .filter_map(|i| {
                        let raw = i.get().as_bytes();
                        let p = peek_message(raw).ok()?;
                        Some((p.id?, p.method?, Bytes::copy_from_slice(raw)))
                    })
                    .collect();
                Exchange::new(
                    ctx.era,
                    context,
                    requests
                        .iter()
                        .map(|(id, method, raw)| (&**id, method.as_str(), raw.clone())),
                )
            }
            (&Method::POST, Some(peek)) => Exchange::new(
                ctx.era,
                context,
                peek.id
                    .as_deref()
                    .zip(peek.method.as_deref())
                    .map(|(id, method)| (id, method, ctx.request.body.clone())),
            ),
            _ => Exchange::new(ctx.era, context, []),
        };
        let generation = chain.cache().map_or(0, |c| c.generation());
        ServerFilter::new(Some(chain), exchange.with_generation(generation))
    }
}
