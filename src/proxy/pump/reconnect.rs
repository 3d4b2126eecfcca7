//! A pump's upstream side breaking off: re-opening the upstream stream with `GET` +
//! `Last-Event-ID: <the last upstream id the proxy recorded>` under a bounded exponential
//! backoff (DESIGN.md, "How a legacy session flows through the proxy", step 4). The id sent is
//! always the one the proxy recorded, never one a client supplied.

use super::*;

/// Re-opens the upstream stream with `GET` + `Last-Event-ID: <last upstream id>`, retrying
/// with exponential backoff. `Err` carries the state to end in: `Failed` when the upstream
/// cannot resume (no id to resume from, a refusal, attempts exhausted), `Stopped` when
/// interrupted.
pub(super) async fn resume_upstream(
    ctx: &PumpContext,
    consumed: &mut watch::Receiver<u64>,
    first_delay: Option<Duration>,
) -> Result<UpstreamBody, UpstreamState> {
    let tracker = &ctx.tracker;
    let Some(last_id) = tracker.last_upstream_id() else {
        tracing::info!(
            session = %ctx.session.id(),
            stream = %tracker.stream(),
            "upstream stream ended early and sent no event id to resume from",
        );
        return Err(UpstreamState::Failed);
    };
    tracker.set_upstream(UpstreamState::Reconnecting);
    ctx.streams.manager.stream_changed(tracker);
    let config = ctx.streams.manager.config();
    let backoff = ExponentialBuilder::new()
        .with_min_delay(config.reconnect_min_delay)
        .with_max_delay(config.reconnect_max_delay)
        .with_max_times(config.reconnect_attempts.saturating_sub(1))
        .with_jitter()
        .build();
    let delays = std::iter::once(first_delay.unwrap_or(Duration::ZERO)).chain(backoff);
    for (attempt, delay) in delays.enumerate() {
        tokio::select! {
            interrupt = wait_interrupt(ctx, consumed) => return Err(interrupt_state(ctx, interrupt)),
            () = tokio::time::sleep(delay) => {}
        }
        ProxyStats::incr(&ctx.streams.stats.upstream_reconnects);
        match open_resumption(&ctx.upstream, &ctx.session, &ctx.resume_headers, &last_id).await {
            Ok(body) => {
                tracing::info!(
                    session = %ctx.session.id(),
                    stream = %tracker.stream(),
                    last_event_id = %last_id,
                    attempt = attempt + 1,
                    "resumed the upstream stream",
                );
                return Ok(body);
            }
            Err(Resumption::Refused(status)) => {
                tracing::warn!(
                    session = %ctx.session.id(),
                    stream = %tracker.stream(),
                    status = status.as_u16(),
                    "upstream refused to resume the stream",
                );
                if status == StatusCode::NOT_FOUND {
                    ctx.streams.manager.end_session(ctx.session.id().as_str());
                }
                return Err(UpstreamState::Failed);
            }
            Err(Resumption::Unavailable(err)) => {
                tracing::info!(
                    session = %ctx.session.id(),
                    stream = %tracker.stream(),
                    attempt = attempt + 1,
                    error = %err,
                    "upstream resumption attempt failed",
                );
            }
        }
    }
    Err(UpstreamState::Failed)
}

/// Why an upstream resumption did not give a stream.
pub enum Resumption {
    /// The upstream answered, but not with an SSE stream (status given).
    Refused(StatusCode),
    /// The upstream could not be reached or did not answer in time.
    Unavailable(String),
}

/// Sends one resumption `GET` for `session` with `Last-Event-ID: last_id`.
pub async fn open_resumption(
    upstream: &Upstream,
    session: &Session,
    headers: &HeaderMap,
    last_id: &str,
) -> Result<UpstreamBody, Resumption> {
    let mut request = http::Request::new(Full::new(Bytes::new()));
    *request.method_mut() = Method::GET;
    *request.uri_mut() = upstream.uri_for(None);
    let h = request.headers_mut();
    for (name, value) in headers {
        if name != header::CONTENT_TYPE && name != LAST_EVENT_ID {
            h.append(name.clone(), value.clone());
        }
    }
    h.insert(
        header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(&MCP_SESSION_ID, session.upstream_session_id().clone());
    let last = HeaderValue::from_str(last_id)
        .map_err(|_| Resumption::Unavailable("upstream event id is not a header value".into()))?;
    h.insert(&LAST_EVENT_ID, last);
    let response = upstream
        .send(request)
        .await
        .map_err(|e| Resumption::Unavailable(crate::proxy::upstream::error_chain(&e)))?;
    let is_sse = crate::protocol::headers::is_event_stream(response.headers());
    if !response.status().is_success() || !is_sse {
        return Err(Resumption::Refused(response.status()));
    }
    Ok(response.into_body())
}
