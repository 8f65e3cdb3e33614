//! Prometheus metrics of a data server.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use registry_rpc::metrics::register;

#[derive(Clone)]
pub struct DataMetrics {
    pub registry: Registry,
    /// Write ops applied, by outcome (changed, unchanged, refused).
    pub writes: IntCounterVec,
    /// Change notifications sent to sessions (one per dataInfoId per session).
    pub notifications: IntCounter,
    /// Notification batches that failed and were retried.
    pub notify_failures: IntCounter,
    /// Epoch of the slot table this server acts on.
    pub epoch: IntGauge,
}

impl DataMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let writes = IntCounterVec::new(
            Opts::new("registry_data_writes_total", "Write ops by outcome"),
            &["outcome"],
        )
        .expect("static metric definition");
        let notifications = IntCounter::new(
            "registry_data_notifications_total",
            "Change notifications sent to sessions",
        )
        .expect("static metric definition");
        let notify_failures = IntCounter::new(
            "registry_data_notify_failures_total",
            "Notification batches that failed",
        )
        .expect("static metric definition");
        let epoch = IntGauge::new("registry_data_epoch", "Epoch of the slot table in use")
            .expect("static metric definition");
        register(&registry, &writes);
        register(&registry, &notifications);
        register(&registry, &notify_failures);
        register(&registry, &epoch);
        Self {
            registry,
            writes,
            notifications,
            notify_failures,
            epoch,
        }
    }
}

impl Default for DataMetrics {
    fn default() -> Self {
        Self::new()
    }
}
