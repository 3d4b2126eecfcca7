//! Control-plane helpers: tonic clients of the admin API, grpcurl calls that are expected to
//! fail (their gRPC code), grpcurl's streamed JSON, and a control plane on a Unix socket.

use std::{net::SocketAddr, path::Path, time::Duration};

use mcp_relay::{
    control::{
        self, BearerToken, ControlListener, ControlOptions,
        pb::{
            metrics_service_client::MetricsServiceClient,
            session_service_client::SessionServiceClient,
        },
    },
    daemon::Daemon,
};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::peers::grpcurl_raw;

/// A channel to a control plane on TCP.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the control plane")
}

pub async fn sessions_client(addr: SocketAddr) -> SessionServiceClient<Channel> {
    SessionServiceClient::new(channel(addr).await)
}

pub async fn metrics_client(addr: SocketAddr) -> MetricsServiceClient<Channel> {
    MetricsServiceClient::new(channel(addr).await)
}

/// Runs a grpcurl call (plaintext, to `addr`) that must fail; returns the gRPC code grpcurl
/// reports (`NotFound`, `InvalidArgument`, …) and the message.
pub async fn grpcurl_error(addr: &str, args: &[&str]) -> (String, String) {
    let mut all = vec!["-plaintext"];
    all.extend_from_slice(args);
    let (ok, out, err) = grpcurl_raw(&[addr], &all).await;
    assert!(
        !ok,
        "grpcurl {args:?} succeeded but should have failed: {out}"
    );
    error_code(&err).unwrap_or_else(|| panic!("no gRPC code in grpcurl's error: {err}"))
}

/// `Code: X` and `Message: Y` from grpcurl's error output.
pub fn error_code(stderr: &str) -> Option<(String, String)> {
    let code = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Code: "))?
        .to_owned();
    let message = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Message: "))
        .unwrap_or("")
        .to_owned();
    Some((code, message))
}

/// The JSON messages grpcurl printed for a streaming call, in order.
pub fn json_messages(stdout: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(stdout)
        .into_iter::<Value>()
        .map(|v| v.expect("grpcurl printed JSON"))
        .collect()
}

/// A control plane on a Unix socket beside a daemon's own, over the same session core,
/// counters and upstream ender.
pub struct UnixControl {
    pub stop: CancellationToken,
    pub task: JoinHandle<Result<(), control::ControlError>>,
}

impl UnixControl {
    pub fn start(path: &Path, daemon: &Daemon, token: Option<&str>) -> Self {
        let listener = ControlListener::bind_unix(path).expect("bind the control socket");
        let stop = CancellationToken::new();
        let options = ControlOptions {
            bearer_token: token.and_then(BearerToken::new),
            upstream_ender: Some(daemon.upstream_ender().clone()),
            routing: Some(daemon.routing().clone()),
            tls: None,
        };
        let task = tokio::spawn(control::serve_with(
            listener,
            daemon.observed(),
            options,
            stop.clone(),
        ));
        Self { stop, task }
    }

    /// Stops it and waits (bounded) for it to end.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the control plane stops promptly")
            .expect("join")
            .expect("served cleanly");
    }
}

/// A channel whose HTTP/2 receive windows are tiny, so a consumer that stops reading stops the
/// server within a few messages (as a slow consumer does after 64 KiB).
pub async fn narrow_channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .initial_stream_window_size(256)
        .initial_connection_window_size(256)
        .connect()
        .await
        .expect("connect to the control plane")
}
