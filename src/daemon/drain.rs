//! The end of the shutdown grace period, as seen by open requests: a tower layer around the
//! data-plane router that, once its `cut` token fires, ends every SSE response body cleanly
//! (the client sees the stream end and resumes; it is not reset mid-event) and answers every
//! request still waiting for its upstream with `503` and `Connection: close`.
//!
//! Until the cut, it only passes through; JSON bodies are not wrapped (they end by themselves,
//! and the daemon aborts what is still open shortly after the cut).
//!
//! After the cut, the daemon waits for each plane's task until the abort deadline ([`finish`]).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body::{Frame, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower_layer::Layer;
use tower_service::Service;

/// See the module docs.
#[derive(Clone, Debug)]
pub struct DrainLayer {
    cut: CancellationToken,
}

impl DrainLayer {
    /// A layer that cuts open requests and SSE streams when `cut` fires.
    pub fn new(cut: CancellationToken) -> Self {
        Self { cut }
    }
}

impl<S> Layer<S> for DrainLayer {
    type Service = Drain<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Drain {
            inner,
            cut: self.cut.clone(),
        }
    }
}

/// The service of [`DrainLayer`].
#[derive(Clone, Debug)]
pub struct Drain<S> {
    inner: S,
    cut: CancellationToken,
}

impl<S> Service<Request> for Drain<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = DrainFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        DrainFuture {
            inner: self.inner.call(request),
            cut: self.cut.clone().cancelled_owned(),
            token: self.cut.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response head, or `503` once the cut fires before it.
    pub struct DrainFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        cut: WaitForCancellationFutureOwned,
        token: CancellationToken,
    }
}

impl<F> Future for DrainFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(Ok(response)) = this.inner.poll(cx) {
            return Poll::Ready(Ok(cut_sse_body(response, this.token)));
        }
        if this.cut.poll(cx).is_ready() {
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                "mcp-relay is shutting down\n",
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Poll::Ready(Ok(response));
        }
        Poll::Pending
    }
}

fn cut_sse_body(response: Response, token: &CancellationToken) -> Response {
    let is_sse = crate::protocol::headers::is_event_stream(response.headers());
    if !is_sse {
        return response;
    }
    let cut = token.clone().cancelled_owned();
    response.map(|inner| {
        Body::new(CutBody {
            inner,
            cut,
            ended: false,
        })
    })
}

pin_project_lite::pin_project! {
    /// An SSE body that ends (cleanly, between frames) when the cut fires.
    struct CutBody {
        #[pin]
        inner: Body,
        #[pin]
        cut: WaitForCancellationFutureOwned,
        ended: bool,
    }
}

impl http_body::Body for CutBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        if this.cut.poll(cx).is_ready() {
            *this.ended = true;
            return Poll::Ready(None);
        }
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // The body may end early: promise no exact length.
        SizeHint::default()
    }
}

/// Waits for a plane until `deadline`, then aborts it.
pub(super) async fn finish(
    mut task: tokio::task::JoinHandle<Result<(), super::DaemonError>>,
    deadline: tokio::time::Instant,
    what: &'static str,
) -> Result<(), super::DaemonError> {
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => {
            tracing::error!(plane = what, error = %join, "plane task failed");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(plane = what, "still running after the cut; aborting it");
            task.abort();
            Ok(())
        }
    }
}
