//! The upstream connector: hyper-util's `HttpConnector` (TCP_NODELAY on), with sockets that ACK
//! what they receive at once (`TCP_QUICKACK`, Linux).
//!
//! Why: many MCP servers (uvicorn-based Python ones, for a start) leave Nagle's algorithm on and
//! write a response head and its first SSE event as two segments. On a fresh connection the
//! kernel is in quick-ACK mode and nobody notices; on a pooled keep-alive connection the proxy's
//! kernel delays its ACK of the head by up to 40 ms, and Nagle holds the event back until that
//! ACK arrives. Quick ACKs on the proxy's side remove the stall without touching the upstream.
//!
//! Its sockets also probe an idle upstream (TCP keep-alive, `proxy.upstream_tcp_keepalive_secs`): an upstream
//! host that died or a network that split leaves no FIN, and an SSE stream waiting on it would
//! stay open for ever — the more so since the proxy keeps the client side alive with keep-alive
//! comments. The probes end such a connection within about a minute; the stream then ends (or
//! a legacy pump resumes it elsewhere) as after any broken upstream.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use crate::tls::Transport;
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioIo};

/// `HttpConnector` whose connections quick-ACK every read.
#[derive(Debug, Clone)]
pub struct QuickAckConnector {
    inner: HttpConnector,
}

/// Unanswered TCP keep-alive probes after which an upstream connection is dropped; probes go
/// every third of `proxy.upstream_tcp_keepalive_secs`, so a dead upstream is found about twice
/// that long after it went silent.
pub const TCP_KEEPALIVE_RETRIES: u32 = 3;

impl QuickAckConnector {
    /// Wraps `inner` as it is.
    pub fn new(inner: HttpConnector) -> Self {
        Self { inner }
    }

    /// The upstream connector: TCP for `http://` and `https://` URLs, TCP_NODELAY, `connect_timeout`, and TCP
    /// keep-alive probes after `keepalive` idle, every third of it (at least 1 s),
    /// [`TCP_KEEPALIVE_RETRIES`] of them (zero `keepalive`: no probes).
    pub fn upstream(connect_timeout: Duration, keepalive: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        // `https://` endpoints connect here too; TLS goes on top (`into_tls`).
        connector.enforce_http(false);
        if !keepalive.is_zero() {
            connector.set_keepalive(Some(keepalive));
            connector.set_keepalive_interval(Some((keepalive / 3).max(Duration::from_secs(1))));
            connector.set_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
        }
        Self::new(connector)
    }
}

/// A TCP connection to the upstream (plain, or TLS for an `https://` endpoint) that re-arms
/// `TCP_QUICKACK` after each read (the kernel clears the flag as it sees fit, so one
/// `setsockopt` at connect time is not enough).
#[derive(Debug)]
pub struct QuickAckStream {
    io: TokioIo<Transport>,
}

impl QuickAckStream {
    fn rearm(&self) {
        #[cfg(target_os = "linux")]
        {
            // Best effort: a failure only costs latency, never correctness.
            if let Err(err) = socket2::SockRef::from(self.io.inner().tcp()).set_tcp_quickack(true) {
                tracing::trace!(error = %err, "TCP_QUICKACK not set");
            }
        }
    }

    /// This connection with a TLS session over it: the handshake with `connector` for
    /// `server_name` (SNI, and the name the certificate must carry). Errors: the handshake
    /// failed (an untrusted or mismatched certificate, a peer that does not speak TLS), as
    /// `io::Error`s whose message rustls wrote.
    pub async fn into_tls(
        self,
        connector: &tokio_rustls::TlsConnector,
        server_name: rustls_pki_types::ServerName<'static>,
    ) -> io::Result<Self> {
        let Transport::Plain(tcp) = self.io.into_inner() else {
            return Err(io::Error::other("TLS over TLS"));
        };
        let tls = connector.connect(server_name, tcp).await?;
        Ok(Self {
            io: TokioIo::new(Transport::Tls(Box::new(tls.into()))),
        })
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
                io: TokioIo::new(Transport::Plain(connecting.await?.into_inner())),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream connections probe an idle peer, so a dead upstream host is noticed.
    #[tokio::test]
    async fn upstream_connections_have_tcp_keep_alive_probes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let uri: Uri = format!("http://{}/mcp", listener.local_addr().expect("addr"))
            .parse()
            .expect("uri");
        let mut connector =
            QuickAckConnector::upstream(Duration::from_secs(1), Duration::from_secs(30));
        let stream = tower_service::Service::call(&mut connector, uri)
            .await
            .expect("connect");
        let socket = socket2::SockRef::from(stream.io.inner().tcp());
        assert!(socket.keepalive().expect("SO_KEEPALIVE"));
        #[cfg(target_os = "linux")]
        {
            assert_eq!(
                socket.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
                Duration::from_secs(30)
            );
            assert_eq!(
                socket.tcp_keepalive_interval().expect("TCP_KEEPINTVL"),
                Duration::from_secs(10)
            );
            assert_eq!(
                socket.tcp_keepalive_retries().expect("TCP_KEEPCNT"),
                TCP_KEEPALIVE_RETRIES
            );
        }
    }
}
