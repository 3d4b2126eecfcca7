//! What the daemon tells operators: Prometheus metrics with health and readiness on their own
//! HTTP listener ([`metrics`]), and logs to the journal or stderr ([`logging`]).

pub mod logging;
pub mod metrics;
pub mod traces;
