//! The control plane: a tonic gRPC server over the daemon's session core (the same
//! `Arc<SessionManager>` as the data plane) and its counters ([`Observed`]); it ends sessions
//! upstream through the daemon's one [`UpstreamSessionEnder`] when given it, and reads (and
//! drains endpoints of) the daemon's route table ([`Routing`]) when given it.
//! Serves `mcprelay.admin.v1` (SessionService, MetricsService, UpstreamService), gRPC
//! reflection (v1 and v1alpha, so old and new grpcurl both work) and `grpc.health.v1` with a
//! status per service.
//!
//! It listens on TCP (loopback by default) or a Unix socket ([`ControlListener`]); with a
//! [`BearerToken`] configured, every call must present it. When `shutdown` fires, health turns
//! `NOT_SERVING`, every watch ends, and the server stops once the unary calls in flight finish.

mod auth;
mod convert;
mod filter;
mod health;
mod listener;
mod metrics;
mod sessions;
mod upstreams;
mod watch;

use std::sync::Arc;

use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{server::NamedService, service::InterceptorLayer};
use tonic_health::pb::health_server::HealthServer;

use crate::{
    proxy::route::Routing,
    session::UpstreamSessionEnder,
    telemetry::metrics::Observed,
    tls::{ServerTls, Transport},
};

pub use auth::BearerToken;
pub use listener::{ControlListener, UNIX_SOCKET_MODE};
pub use metrics::MetricsAdmin;
pub use sessions::SessionAdmin;
pub use upstreams::UpstreamAdmin;

/// Generated protobuf and gRPC code of `proto/mcprelay/admin/v1/admin.proto`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("mcprelay.admin.v1");

    /// The encoded `FileDescriptorSet` of the admin API, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/admin_descriptor.bin"));
}

type SessionServer = pb::session_service_server::SessionServiceServer<SessionAdmin>;
type MetricsServer = pb::metrics_service_server::MetricsServiceServer<MetricsAdmin>;
type UpstreamServer = pb::upstream_service_server::UpstreamServiceServer<UpstreamAdmin>;

/// Settings of the control plane beyond its listener.
#[derive(Debug, Clone, Default)]
pub struct ControlOptions {
    /// When set, every call must carry `authorization: Bearer <token>` (else UNAUTHENTICATED).
    /// Required when listening on a non-loopback TCP address.
    pub bearer_token: Option<BearerToken>,
    /// How `TerminateSession` ends a session at its upstream: the daemon's one path (idle
    /// expiry ends sessions through the same). Without one, sessions end here only and the
    /// answer's `upstream_error` says so.
    pub upstream_ender: Option<Arc<dyn UpstreamSessionEnder>>,
    /// The daemon's routes and their pools, which UpstreamService shows and drains endpoints
    /// of. Without them UpstreamService answers FAILED_PRECONDITION (its health: NOT_SERVING).
    pub routing: Option<Arc<Routing>>,
    /// `[admin_tls]`: the TCP listener speaks TLS (with client certificates required when its
    /// `client_ca_file` is set). A client certificate verified at the handshake stands in for
    /// the bearer token's "required off loopback".
    pub tls: Option<Arc<ServerTls>>,
}

/// The control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The reflection service could not read the descriptor sets.
    #[error("building gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed (accepting or serving).
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(
        "the control plane listens on {0}, which is not loopback: configure a bearer token \
         (admin_token) or client certificates ([admin_tls] client_ca_file), or listen on \
         loopback or a Unix socket"
    )]
    /// A non-loopback TCP listener without a bearer token or mTLS (its address carried).
    Unprotected(String),
}

/// Serves the control plane on `listener` over the `observed` daemon (its session core and
/// counters) with `options` until `shutdown` fires. Refuses a non-loopback TCP listener
/// without a bearer token.
pub async fn serve_with(
    listener: impl Into<ControlListener>,
    observed: Observed,
    options: ControlOptions,
    shutdown: CancellationToken,
) -> Result<(), ControlError> {
    let listener = listener.into();
    let mtls = options
        .tls
        .as_ref()
        .is_some_and(|tls| tls.requires_client_certificates());
    if listener.is_exposed() && options.bearer_token.is_none() && !mtls {
        return Err(ControlError::Unprotected(listener.describe()));
    }
    // Both reflection versions describe every service served, including health and each other.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    // Watches (ours and health's) end on `stop`, fired once health reads NOT_SERVING.
    let stop = CancellationToken::new();
    let reporter = tonic_health::server::HealthReporter::new();
    for service in SERVICES {
        let status =
            if service == <UpstreamServer as NamedService>::NAME && options.routing.is_none() {
                tonic_health::ServingStatus::NotServing
            } else {
                tonic_health::ServingStatus::Serving
            };
        reporter.set_service_status(service, status).await;
    }
    let health = HealthServer::new(health::ShutdownAwareHealth::new(
        reporter.clone(),
        stop.clone(),
    ));
    let signal = {
        let stop = stop.clone();
        async move {
            shutdown.cancelled().await;
            for service in SERVICES.iter().chain([&""]) {
                reporter
                    .set_service_status(service, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            stop.cancel();
        }
    };

    // Where refused TLS handshakes are counted (the data plane's counters, as /metrics shows).
    let refused = observed.proxy.clone();
    let auth = InterceptorLayer::new(auth::Authenticate::new(options.bearer_token.clone()));
    let router = tonic::transport::Server::builder()
        .layer(auth)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(SessionServer::new(
            SessionAdmin::new(observed.manager.clone(), stop.clone())
                .with_upstream_ender(options.upstream_ender.clone()),
        ))
        .add_service(UpstreamServer::new(UpstreamAdmin::new(
            observed.manager.clone(),
            options.routing.clone(),
            stop.clone(),
        )))
        .add_service(MetricsServer::new(MetricsAdmin::new(observed, stop)));

    tracing::info!(
        listen = %listener.describe(),
        bearer_token = options.bearer_token.is_some(),
        tls = options.tls.is_some(),
        client_certificates = mtls,
        "control plane is serving",
    );
    match listener {
        ControlListener::Tcp(tcp) => match options.tls {
            Some(tls) => {
                let (accepted, incoming) = tokio::sync::mpsc::channel(TLS_ACCEPT_QUEUE);
                let handshakes = tokio::spawn(tls_accept(tcp, tls, accepted, refused));
                let served = router
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::ReceiverStream::new(incoming),
                        signal,
                    )
                    .await;
                handshakes.abort();
                served?;
            }
            None => {
                router
                    .serve_with_incoming_shutdown(TcpListenerStream::new(tcp), signal)
                    .await?;
            }
        },
        ControlListener::Unix { listener, path } => {
            let served = router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), signal)
                .await;
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %err, "could not remove the control socket");
            }
            served?;
        }
    }
    Ok(())
}

/// The services whose health is reported by name.
const SERVICES: [&str; 3] = [
    <SessionServer as NamedService>::NAME,
    <MetricsServer as NamedService>::NAME,
    <UpstreamServer as NamedService>::NAME,
];

/// Control-plane connections whose TLS handshake is done, waiting for the gRPC server.
const TLS_ACCEPT_QUEUE: usize = 64;

/// Accepts control-plane connections on `tcp` and hands each to the gRPC server once its TLS
/// handshake with `tls`'s current certificate is done, each handshake in its own task (a slow
/// client holds up no one), at most `admin_tls.max_handshakes` at once and
/// `max_handshakes_per_address` from one address, each within `handshake_timeout_secs`.
/// A failed handshake (no or an untrusted client certificate with mTLS, a client that does not
/// speak TLS) is logged at debug with the peer and closed.
async fn tls_accept(
    tcp: tokio::net::TcpListener,
    tls: Arc<ServerTls>,
    accepted: tokio::sync::mpsc::Sender<std::io::Result<Transport>>,
    refused: Arc<crate::proxy::stats::ProxyStats>,
) {
    use crate::proxy::stats::ProxyStats;
    let limits = tls.config().clone();
    let in_progress = Arc::new(tokio::sync::Semaphore::new(limits.max_handshakes.max(1)));
    let per_address: Arc<parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> =
        Arc::default();
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(pair) => pair,
            Err(err) => {
                // Out of descriptors and the like: say so, and retry shortly.
                tracing::warn!(error = %err, "control plane: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = peer.ip().to_canonical();
        {
            let mut counts = per_address.lock();
            let count = counts.entry(ip).or_insert(0);
            if *count >= limits.max_handshakes_per_address {
                ProxyStats::incr(&refused.admin_tls_refused);
                tracing::debug!(%peer, "control plane: too many TLS handshakes from this address; closing");
                continue;
            }
            *count += 1;
        }
        let done = AddressDone(per_address.clone(), ip);
        let Ok(permit) = in_progress.clone().try_acquire_owned() else {
            ProxyStats::incr(&refused.admin_tls_refused);
            tracing::debug!(%peer, "control plane: too many TLS handshakes in progress; closing");
            continue;
        };
        let acceptor = tls.acceptor();
        let accepted = accepted.clone();
        let refused = refused.clone();
        let timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let _done = done;
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    // The server is gone (shutdown): the connection closes.
                    let _ = accepted
                        .send(Ok(Transport::Tls(Box::new(stream.into()))))
                        .await;
                }
                // Scanners and clients without a certificate make these routinely: debug only.
                Ok(Err(err)) => {
                    ProxyStats::incr(&refused.admin_tls_refused);
                    tracing::debug!(%peer, error = %err, "control plane: TLS handshake refused");
                }
                Err(_) => {
                    ProxyStats::incr(&refused.admin_tls_refused);
                    tracing::debug!(%peer, "control plane: TLS handshake timed out");
                }
            }
        });
    }
}

/// Gives back one address's place in the handshake count when the handshake ends.
struct AddressDone(
    Arc<parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    std::net::IpAddr,
);

impl Drop for AddressDone {
    fn drop(&mut self) {
        let mut counts = self.0.lock();
        if let Some(count) = counts.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.1);
            }
        }
    }
}
