//! The per-request numbers: a tower layer around the data-plane router that counts and times
//! each answered request (`mcp_relay_http_requests_total`, `mcp_relay_http_request_duration_seconds`)
//! into its daemon's [`Metrics`], labelled by method, status and era.

use super::*;

/// The era a request declares in `MCP-Protocol-Version` (absent: legacy).
fn era_of(request: &Request) -> Era {
    request
        .headers()
        .get(&MCP_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        .map_or(Era::Legacy, Era::of_version)
}

/// Wraps a service so each answered request is counted and timed (see the module docs).
#[derive(Clone, Debug)]
pub struct RequestMetricsLayer {
    pub(super) metrics: Arc<Metrics>,
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`RequestMetricsLayer`].
#[derive(Clone, Debug)]
pub struct RequestMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request> for RequestMetrics<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RequestMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        RequestMetricsFuture {
            method: request.method().clone(),
            era: era_of(&request),
            started: Instant::now(),
            metrics: self.metrics.clone(),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// Records the request when the response head is ready. A request whose client went away
    /// before that is not recorded.
    pub struct RequestMetricsFuture<F> {
        #[pin]
        inner: F,
        method: Method,
        era: Era,
        started: Instant,
        metrics: Arc<Metrics>,
    }
}

impl<F, E> Future for RequestMetricsFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &output {
            this.metrics
                .record_request(this.method, response.status(), *this.era, *this.started);
        }
        Poll::Ready(output)
    }
}
