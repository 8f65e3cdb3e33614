//! Prometheus metrics of a data server.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use registry_rpc::metrics::{counter, counter_vec, gauge, gauge_vec, latency, register_process};

#[derive(Clone)]
pub struct DataMetrics {
    pub registry: Registry,
    /// Write ops applied, by outcome (changed, unchanged, refused).
    pub writes: IntCounterVec,
    /// Time to apply one batch of write ops from a session.
    pub write_latency: Histogram,
    /// Change notifications sent to sessions (one per dataInfoId per session).
    pub notifications: IntCounter,
    /// Notification batches that failed and were retried.
    pub notify_failures: IntCounter,
    /// Round trip of one batch of change notifications to a session.
    pub notify_latency: Histogram,
    /// Changes waiting to be notified, all sessions together.
    pub notify_pending: IntGauge,
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
    pub slots: IntGaugeVec,
    /// Publishers held, as primary or replica (updated at each scrape and status call).
    pub publishers: IntGauge,
    /// DataInfoIds held (likewise).
    pub data_info_ids: IntGauge,
}

impl DataMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        register_process(&r);
        Self {
            writes: counter_vec(
                &r,
                "registry_data_writes_total",
                "Write ops by outcome",
                "outcome",
                &["changed", "unchanged", "refused"],
            ),
            write_latency: latency(
                &r,
                "registry_data_write_seconds",
                "Time to apply a batch of write ops from a session",
            ),
            notifications: counter(
                &r,
                "registry_data_notifications_total",
                "Change notifications sent to sessions",
            ),
            notify_failures: counter(
                &r,
                "registry_data_notify_failures_total",
                "Notification batches that failed",
            ),
            notify_latency: latency(
                &r,
                "registry_data_notify_seconds",
                "Round trip of a batch of change notifications to a session",
            ),
            notify_pending: gauge(
                &r,
                "registry_data_notify_pending",
                "Changes waiting to be notified to sessions",
            ),
            epoch: gauge(&r, "registry_data_epoch", "Epoch of the slot table in use"),
            replication_pending: gauge(
                &r,
                "registry_data_replication_pending",
                "DataInfoIds waiting to be shipped to replicas",
            ),
            replication_lag: latency(
                &r,
                "registry_data_replication_lag_seconds",
                "Change at the primary to acknowledgement by a replica",
            ),
            replication_failures: counter(
                &r,
                "registry_data_replication_failures_total",
                "Replication requests that failed",
            ),
            slot_syncs: counter_vec(
                &r,
                "registry_data_slot_syncs_total",
                "Slot copies by outcome",
                "outcome",
                &["copied", "partial"],
            ),
            slots: gauge_vec(&r, "registry_data_slots", "Slots by phase", "phase"),
            publishers: gauge(
                &r,
                "registry_data_publishers",
                "Publishers held, as primary or replica",
            ),
            data_info_ids: gauge(&r, "registry_data_data_info_ids", "DataInfoIds held"),
            registry: r,
        }
    }
}

impl Default for DataMetrics {
    fn default() -> Self {
        Self::new()
    }
}
