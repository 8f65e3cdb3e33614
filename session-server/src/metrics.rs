//! Prometheus metrics of a session server.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};
use registry_rpc::metrics::{counter, counter_vec, gauge, latency, register_process};

#[derive(Clone)]
pub struct SessionMetrics {
    pub registry: Registry,
    /// Open client connections.
    pub connections: IntGauge,
    /// Connections refused because the server holds its maximum.
    pub connections_refused: IntCounter,
    /// Publishers held (authoritative copy).
    pub publishers: IntGauge,
    /// Subscriptions held.
    pub subscribers: IntGauge,
    /// Datums cached: one per dataInfoId with subscriptions here, up to `--cache-entries`.
    pub cached_datums: IntGauge,
    /// Frames queued towards clients, all connections together.
    pub outbox_frames: IntGauge,
    /// Pushes sent, by kind (first, retry).
    pub pushes: IntCounterVec,
    /// Pushes acknowledged by clients.
    pub push_acks: IntCounter,
    /// WebSocket frames that carried pushes: on protocol 2 one frame carries every push
    /// queued for its connection at once, so pushes / frames is the batching achieved.
    pub push_frames: IntCounter,
    /// Acks for pushes this server does not know (late or bogus).
    pub unknown_acks: IntCounter,
    /// Overdue pushes not sent again because their client was still reading earlier ones.
    pub resends_held: IntCounter,
    /// Datums superseded before they were sent (merged into a later push).
    pub pushes_merged: IntCounter,
    /// Connections closed by the server, by reason.
    pub closed: IntCounterVec,
    /// Change notifications received from data servers.
    pub changes_received: IntCounter,
    /// Datum fetches from data servers (one per dataInfoId).
    pub fetches: IntCounter,
    /// Write ops forwarded to data servers, by outcome (ok, retry, dropped).
    pub forwarded: IntCounterVec,
    /// Write ops waiting to be forwarded.
    pub forward_pending: IntGauge,
    /// How long a connection's reads paused because the forward backlog was full.
    pub intake_pause: Histogram,
    /// Client frames refused, by error code.
    pub bad_frames: IntCounterVec,
    /// Reconciliation repairs, by kind (republished, removed, pulled).
    pub repaired: IntCounterVec,
    /// Datums emptied by a server-side event, by what happened (held, released).
    pub empty_protection: IntCounterVec,
    /// From the change being accepted at the data tier (the time in its version) to its push
    /// being written to a subscriber's connection. Across machines this includes their
    /// clock difference.
    pub push_delay: Histogram,
    /// From a push being sent to its acknowledgement by the client.
    pub push_ack: Histogram,
    /// Round trip of one batch of write ops forwarded to a data server.
    pub forward_latency: Histogram,
    /// Round trip of one batch of datum fetches from a data server.
    pub fetch_latency: Histogram,
    /// Round trip of one version pull (reconciliation) from a data server.
    pub reconcile_latency: Histogram,
    /// One periodic repair of every slot (tallies, then the slots that differ).
    pub repair_pass: Histogram,
    /// One periodic version pull of every subscribed dataInfoId, pacing included (it is
    /// spread over half the interval on purpose).
    pub pull_pass: Histogram,
}

impl SessionMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        Self {
            connections: gauge(
                &r,
                "registry_session_connections",
                "Open client connections",
            ),
            connections_refused: counter(
                &r,
                "registry_session_connections_refused_total",
                "Connections refused at the connection cap",
            ),
            publishers: gauge(&r, "registry_session_publishers", "Publishers held"),
            subscribers: gauge(&r, "registry_session_subscribers", "Subscriptions held"),
            cached_datums: gauge(
                &r,
                "registry_session_cached_datums",
                "Datums cached, one per subscribed dataInfoId",
            ),
            outbox_frames: gauge(
                &r,
                "registry_session_outbox_frames",
                "Frames queued towards clients",
            ),
            pushes: counter_vec(
                &r,
                "registry_session_pushes_total",
                "Pushes sent",
                "kind",
                &["first", "retry"],
            ),
            push_acks: counter(
                &r,
                "registry_session_push_acks_total",
                "Pushes acknowledged",
            ),
            push_frames: counter(
                &r,
                "registry_session_push_frames_total",
                "WebSocket frames that carried pushes (one or several each)",
            ),
            unknown_acks: counter(
                &r,
                "registry_session_unknown_acks_total",
                "Acks for unknown pushes",
            ),
            resends_held: counter(
                &r,
                "registry_session_resends_held_total",
                "Overdue pushes not sent again: their client was still reading earlier pushes",
            ),
            pushes_merged: counter(
                &r,
                "registry_session_pushes_merged_total",
                "Datums superseded before being sent",
            ),
            closed: counter_vec(
                &r,
                "registry_session_closed_total",
                "Connections closed by the server",
                "reason",
                &[
                    "idle",
                    "frame_too_large",
                    "unauthenticated",
                    "key_revoked",
                    "client_off",
                    "detached",
                    "outbox_full",
                    "ack_timeout",
                ],
            ),
            changes_received: counter(
                &r,
                "registry_session_changes_received_total",
                "Change notifications received",
            ),
            fetches: counter(&r, "registry_session_fetches_total", "Datum fetches"),
            forwarded: counter_vec(
                &r,
                "registry_session_forwarded_total",
                "Write ops forwarded to data servers",
                "outcome",
                &["ok", "retry", "dropped"],
            ),
            forward_pending: gauge(
                &r,
                "registry_session_forward_pending",
                "Write ops waiting to be forwarded",
            ),
            intake_pause: latency(
                &r,
                "registry_session_intake_pause_seconds",
                "A connection's reads paused while the writes to the data tier were backlogged",
            ),
            bad_frames: counter_vec(
                &r,
                "registry_session_bad_frames_total",
                "Client frames refused",
                "code",
                &["malformed"],
            ),
            repaired: counter_vec(
                &r,
                "registry_session_repaired_total",
                "Reconciliation repairs",
                "kind",
                &["republished", "removed", "pulled", "resent"],
            ),
            empty_protection: counter_vec(
                &r,
                "registry_session_empty_protection_total",
                "Datums emptied server-side: held back, released after the window",
                "event",
                &["held", "released"],
            ),
            push_delay: latency(
                &r,
                "registry_session_push_delay_seconds",
                "Change accepted at the data tier to its push sent to a subscriber",
            ),
            push_ack: latency(
                &r,
                "registry_session_push_ack_seconds",
                "Push sent to its acknowledgement by the client",
            ),
            forward_latency: latency(
                &r,
                "registry_session_forward_seconds",
                "Round trip of a batch of write ops forwarded to a data server",
            ),
            fetch_latency: latency(
                &r,
                "registry_session_fetch_seconds",
                "Round trip of a batch of datum fetches from a data server",
            ),
            reconcile_latency: latency(
                &r,
                "registry_session_version_pull_seconds",
                "Round trip of a version pull from a data server (reconciliation)",
            ),
            repair_pass: latency(
                &r,
                "registry_session_repair_pass_seconds",
                "One periodic repair of every slot",
            ),
            pull_pass: latency(
                &r,
                "registry_session_pull_pass_seconds",
                "One periodic version pull of every subscribed dataInfoId, paced over half the interval",
            ),
            registry: {
                register_process(&r);
                r
            },
        }
    }
}

impl Default for SessionMetrics {
    fn default() -> Self {
        Self::new()
    }
}
