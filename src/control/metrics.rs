//! `mcprelay.admin.v1.MetricsService`: the numbers the Prometheus endpoint exports
//! ([`DaemonSnapshot`]), as one snapshot or as a watch ([`super::watch::metrics`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    pb,
    watch::{self, MetricsWatch},
};
use crate::telemetry::metrics::{DaemonSnapshot, Observed};

/// The MetricsService implementation.
#[derive(Debug, Clone)]
pub struct MetricsAdmin {
    observed: Observed,
    stop: CancellationToken,
}

impl MetricsAdmin {
    /// Reports the `observed` numbers; watches end when `stop` fires.
    pub fn new(observed: Observed, stop: CancellationToken) -> Self {
        Self { observed, stop }
    }
}

/// Reads every number now.
pub fn snapshot(observed: &Observed) -> pb::MetricsSnapshot {
    let s = DaemonSnapshot::take(observed);
    let flush = Duration::from_micros(s.worker.last_flush_micros);
    pb::MetricsSnapshot {
        observe_time: Some(std::time::SystemTime::now().into()),
        proxy: Some(pb::ProxyMetrics {
            sessions: s.sessions,
            streams_open: s.proxy.streams_open,
            streams_opened: s.proxy.streams_opened,
            events_forwarded: s.proxy.events_forwarded,
            duplicates_dropped: s.proxy.duplicates_dropped,
            events_replayed: s.session.events_replayed,
            resumptions: s.proxy.resumptions,
            resumptions_refused: s.proxy.resumptions_refused,
            upstream_reconnects: s.proxy.upstream_reconnects,
        }),
        worker: Some(pb::WorkerMetrics {
            pending: s.worker_pending,
            updates: s.worker.updates,
            stream_writes: s.worker.stream_writes,
            session_writes: s.worker.session_writes,
            batches: s.worker.batches,
            coalesce_ratio: s.coalesce_ratio(),
            last_flush_duration: prost_types::Duration::try_from(flush).ok(),
            errors: s.worker.errors,
            retries: s.worker.retries,
            shed: s.worker.shed,
        }),
    }
}

#[tonic::async_trait]
impl pb::metrics_service_server::MetricsService for MetricsAdmin {
    async fn get_metrics(
        &self,
        _request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::MetricsSnapshot>, Status> {
        Ok(Response::new(snapshot(&self.observed)))
    }

    type WatchMetricsStream = MetricsWatch;

    async fn watch_metrics(
        &self,
        request: Request<pb::WatchMetricsRequest>,
    ) -> Result<Response<Self::WatchMetricsStream>, Status> {
        let interval = watch::metrics_interval(request.into_inner().interval)?;
        Ok(Response::new(watch::metrics(
            self.observed.clone(),
            interval,
            self.stop.clone(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, atomic::Ordering};

    use super::*;
    use crate::session::{
        PersistenceWorker, SessionConfig, SessionManager, WorkerConfig, store::MemoryStore,
    };

    #[test]
    fn the_snapshot_carries_the_workers_retries_shed_and_coalesce_ratio() {
        let (_worker, handle) =
            PersistenceWorker::new(Arc::new(MemoryStore::new()), WorkerConfig::default());
        let metrics = handle.metrics();
        metrics.retries.store(3, Ordering::Relaxed);
        metrics.shed.store(2, Ordering::Relaxed);
        metrics.updates.store(50, Ordering::Relaxed);
        metrics.stream_writes.store(5, Ordering::Relaxed);
        let observed = Observed {
            manager: Arc::new(SessionManager::new(SessionConfig::default(), handle)),
            proxy: Arc::default(),
        };
        let worker = snapshot(&observed).worker.expect("worker metrics");
        assert_eq!((worker.retries, worker.shed), (3, 2));
        assert_eq!(worker.coalesce_ratio, 10.0);
    }

    #[test]
    fn every_field_reads_its_own_number() {
        let observed = crate::telemetry::metrics::tests::numbered();
        let mut snapshot = snapshot(&observed);
        assert!(snapshot.observe_time.take().is_some());
        let expected = pb::MetricsSnapshot {
            observe_time: None,
            proxy: Some(pb::ProxyMetrics {
                sessions: 3,
                streams_open: 1009,
                streams_opened: 1008,
                events_forwarded: 1001,
                duplicates_dropped: 1002,
                events_replayed: 1003,
                resumptions: 1004,
                resumptions_refused: 1005,
                upstream_reconnects: 1006,
            }),
            worker: Some(pb::WorkerMetrics {
                pending: 3,
                updates: 2001,
                stream_writes: 2002,
                session_writes: 2003,
                batches: 2004,
                coalesce_ratio: 2001.0 / 2002.0,
                last_flush_duration: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 2_012_000,
                }),
                errors: 2007,
                retries: 2008,
                shed: 2009,
            }),
        };
        assert_eq!(snapshot, expected);
    }
}
