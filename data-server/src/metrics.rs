//! Prometheus metrics of a data server.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
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
    /// DataInfoIds waiting to be shipped to replicas.
    pub replication_pending: IntGauge,
    /// Time from a change at the primary to its acknowledgement by a replica, in seconds.
    pub replication_lag: Histogram,
    /// Replication requests that failed and were retried.
    pub replication_failures: IntCounter,
    /// Slot copies made on gaining a slot, by outcome.
    pub slot_syncs: IntCounterVec,
    /// Slots by phase (syncing, ready, retained).
    pub slots: prometheus::IntGaugeVec,
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
        let replication_pending = IntGauge::new(
            "registry_data_replication_pending",
            "DataInfoIds waiting to be shipped to replicas",
        )
        .expect("static metric definition");
        let replication_lag = Histogram::with_opts(
            HistogramOpts::new(
                "registry_data_replication_lag_seconds",
                "Change at the primary to acknowledgement by a replica",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ]),
        )
        .expect("static metric definition");
        let replication_failures = IntCounter::new(
            "registry_data_replication_failures_total",
            "Replication requests that failed",
        )
        .expect("static metric definition");
        let slot_syncs = IntCounterVec::new(
            Opts::new("registry_data_slot_syncs_total", "Slot copies by outcome"),
            &["outcome"],
        )
        .expect("static metric definition");
        let slots = prometheus::IntGaugeVec::new(
            Opts::new("registry_data_slots", "Slots by phase"),
            &["phase"],
        )
        .expect("static metric definition");
        register(&registry, &replication_pending);
        register(&registry, &replication_lag);
        register(&registry, &replication_failures);
        register(&registry, &slot_syncs);
        register(&registry, &slots);
        Self {
            replication_pending,
            replication_lag,
            replication_failures,
            slot_syncs,
            slots,
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
