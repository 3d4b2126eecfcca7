//! `mcprelay.admin.v1.MetricsService`: the numbers the Prometheus endpoint exports
//! ([`DaemonSnapshot`]), as one snapshot or as a watch ([`super::watch::metrics`]).

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    pb,
    watch::{self, MetricsWatch},
};
use crate::{session::SessionManager, telemetry::metrics::DaemonSnapshot};

/// The MetricsService implementation.
#[derive(Debug, Clone)]
pub struct MetricsAdmin {
    manager: Arc<SessionManager>,
    stop: CancellationToken,
}

impl MetricsAdmin {
    /// Reports `manager`'s numbers; watches end when `stop` fires.
    pub fn new(manager: Arc<SessionManager>, stop: CancellationToken) -> Self {
        Self { manager, stop }
    }
}

/// Reads every number now.
pub fn snapshot(manager: &SessionManager) -> pb::MetricsSnapshot {
    let s = DaemonSnapshot::take(manager);
    let coalesce_ratio = if s.worker_stream_writes == 0 {
        0.0
    } else {
        s.worker_updates as f64 / s.worker_stream_writes as f64
    };
    let flush = Duration::from_micros(s.worker_last_flush_micros);
    pb::MetricsSnapshot {
        observe_time: Some(std::time::SystemTime::now().into()),
        proxy: Some(pb::ProxyMetrics {
            sessions: s.sessions,
            streams_open: s.proxy.streams_open,
            streams_opened: s.proxy.streams_opened,
            events_forwarded: s.proxy.events_forwarded,
            duplicates_dropped: s.proxy.duplicates_dropped,
            events_replayed: s.proxy.events_replayed,
            resumptions: s.proxy.resumptions,
            resumptions_refused: s.proxy.resumptions_refused,
            upstream_reconnects: s.proxy.upstream_reconnects,
        }),
        worker: Some(pb::WorkerMetrics {
            pending: s.worker_pending,
            updates: s.worker_updates,
            stream_writes: s.worker_stream_writes,
            session_writes: s.worker_session_writes,
            batches: s.worker_batches,
            coalesce_ratio,
            last_flush_duration: prost_types::Duration::try_from(flush).ok(),
            errors: s.worker_errors,
            // Not counted by this worker yet (the durable-sessions work adds them).
            retries: 0,
            shed: 0,
        }),
    }
}

#[tonic::async_trait]
impl pb::metrics_service_server::MetricsService for MetricsAdmin {
    async fn get_metrics(
        &self,
        _request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::MetricsSnapshot>, Status> {
        Ok(Response::new(snapshot(&self.manager)))
    }

    type WatchMetricsStream = MetricsWatch;

    async fn watch_metrics(
        &self,
        request: Request<pb::WatchMetricsRequest>,
    ) -> Result<Response<Self::WatchMetricsStream>, Status> {
        let interval = watch::metrics_interval(request.into_inner().interval)?;
        Ok(Response::new(watch::metrics(
            self.manager.clone(),
            interval,
            self.stop.clone(),
        )))
    }
}
