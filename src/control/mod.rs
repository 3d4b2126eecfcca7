//! The control plane: a tonic gRPC server over the same `Arc<SessionManager>` as the data plane.
//! Serves `mcprelay.admin.v1`, gRPC reflection (v1 and v1alpha, so old and new grpcurl both
//! work) and `grpc.health.v1`.

mod filter;
mod sessions;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::session::SessionManager;

pub use sessions::SessionAdmin;

/// Generated protobuf and gRPC code of `proto/mcprelay/admin/v1/admin.proto`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("mcprelay.admin.v1");

    /// The encoded `FileDescriptorSet` of the admin API, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/admin_descriptor.bin"));
}

/// The control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("building gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the control plane on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    manager: Arc<SessionManager>,
    shutdown: CancellationToken,
) -> Result<(), ControlError> {
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
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::session_service_server::SessionServiceServer<SessionAdmin>>()
        .await;

    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::session_service_server::SessionServiceServer::new(
            SessionAdmin::new(manager),
        ))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await?;
    Ok(())
}
