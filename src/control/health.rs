//! `grpc.health.v1.Health` with a status per service, whose `Watch` streams end at shutdown.
//!
//! tonic-health's own `Watch` never ends, and tonic's graceful shutdown waits for every open
//! stream: a single `grpcurl … Health/Watch` would hold the daemon's drain until its deadline.
//! So the service is wrapped: when the control plane stops, every status turns `NOT_SERVING`,
//! watchers are sent that, and their streams end.

use std::pin::Pin;

use futures_util::{Stream, StreamExt as _, stream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::{
    pb::{
        HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
        health_server::Health,
    },
    server::{HealthReporter, HealthService},
};

/// Health, answered from `reporter`'s statuses, with watches that end when `stop` fires.
pub struct ShutdownAwareHealth {
    inner: HealthService,
    stop: CancellationToken,
}

impl ShutdownAwareHealth {
    pub fn new(reporter: HealthReporter, stop: CancellationToken) -> Self {
        Self {
            inner: HealthService::from_health_reporter(reporter),
            stop,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for ShutdownAwareHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inner = self.inner.watch(request).await?.into_inner();
        let last = stream::once(async {
            Ok(HealthCheckResponse {
                status: ServingStatus::NotServing as i32,
            })
        });
        let stream = inner
            .take_until(self.stop.clone().cancelled_owned())
            .chain(last);
        Ok(Response::new(Box::pin(stream)))
    }
}
