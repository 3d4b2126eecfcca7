//! The upstream connector: hyper-util's `HttpConnector` (TCP_NODELAY on), with sockets that ACK
//! what they receive at once (`TCP_QUICKACK`, Linux).
//!
//! Why: many MCP servers (uvicorn-based Python ones, for a start) leave Nagle's algorithm on and
//! write a response head and its first SSE event as two segments. On a fresh connection the
//! kernel is in quick-ACK mode and nobody notices; on a pooled keep-alive connection the proxy's
//! kernel delays its ACK of the head by up to 40 ms, and Nagle holds the event back until that
//! ACK arrives. Quick ACKs on the proxy's side remove the stall without touching the upstream.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioIo};
use tokio::net::TcpStream;

/// `HttpConnector` whose connections quick-ACK every read.
#[derive(Debug, Clone)]
pub struct QuickAckConnector {
    inner: HttpConnector,
}

impl QuickAckConnector {
    pub fn new(inner: HttpConnector) -> Self {
        Self { inner }
    }
}

/// A TCP connection to the upstream that re-arms `TCP_QUICKACK` after each read (the kernel
/// clears the flag as it sees fit, so one `setsockopt` at connect time is not enough).
#[derive(Debug)]
pub struct QuickAckStream {
    io: TokioIo<TcpStream>,
}

impl QuickAckStream {
    fn rearm(&self) {
        #[cfg(target_os = "linux")]
        {
            // Best effort: a failure only costs latency, never correctness.
            if let Err(err) = socket2::SockRef::from(self.io.inner()).set_tcp_quickack(true) {
                tracing::trace!(error = %err, "TCP_QUICKACK not set");
            }
        }
    }
}

impl tower_service::Service<Uri> for QuickAckConnector {
    type Response = QuickAckStream;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<QuickAckStream, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let stream = QuickAckStream {
                io: connecting.await?,
            };
            stream.rearm();
            Ok(stream)
        })
    }
}

impl Read for QuickAckStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.rearm();
        }
        polled
    }
}

impl Write for QuickAckStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
