//! Prometheus metrics of a meta node, at `/metrics`: its Raft state, the cluster it holds and
//! the leases it expires. Gauges are read from the node at each scrape ([`MetaMetrics::render`]);
//! counters are counted where things happen.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Registry};
use registry_common::member::Role;
use registry_rpc::metrics::{counter_vec, gauge, gauge_vec, register_process};

use crate::raft::{MetaRaft, RaftRole};

#[derive(Clone)]
pub struct MetaMetrics {
    pub registry: Registry,
    /// The Raft term this node is in.
    pub term: IntGauge,
    /// The leader this node recognises (0: none known).
    pub leader: IntGauge,
    /// 1 while this node is the leader.
    pub is_leader: IntGauge,
    /// Index of the last entry in this node's log.
    pub last_log_index: IntGauge,
    /// Index of the last entry this node knows is committed.
    pub commit_index: IntGauge,
    /// Index of the last entry applied to the state machine.
    pub apply_index: IntGauge,
    /// Index the current snapshot covers.
    pub snapshot_index: IntGauge,
    /// Voters and learners of the Raft group, by `kind`.
    pub raft_nodes: IntGaugeVec,
    /// Epoch of the applied cluster view.
    pub epoch: IntGauge,
    /// Members of the cluster view by role (data, session).
    pub members: IntGaugeVec,
    /// Data servers being drained.
    pub draining: IntGauge,
    /// Members removed by this node as leader, by reason (`lease`: not renewed in time,
    /// `heartbeat`: connection closed beyond the grace, `refused`: connection closed and
    /// nothing listening at the member's address).
    pub lease_expiries: IntCounterVec,
    /// Knocks on the address of a member whose heartbeat closed, by result (`refused`,
    /// `accepted`, `unanswered`).
    pub disconnect_probes: IntCounterVec,
}

impl MetaMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        register_process(&r);
        Self {
            term: gauge(&r, "registry_meta_raft_term", "Raft term of this node"),
            leader: gauge(
                &r,
                "registry_meta_raft_leader",
                "Node id of the leader this node recognises (0: none)",
            ),
            is_leader: gauge(
                &r,
                "registry_meta_raft_is_leader",
                "1 while this node leads",
            ),
            last_log_index: gauge(
                &r,
                "registry_meta_raft_last_log_index",
                "Index of the last entry in this node's log",
            ),
            commit_index: gauge(
                &r,
                "registry_meta_raft_commit_index",
                "Index of the last entry known committed",
            ),
            apply_index: gauge(
                &r,
                "registry_meta_raft_apply_index",
                "Index of the last entry applied to the state machine",
            ),
            snapshot_index: gauge(
                &r,
                "registry_meta_raft_snapshot_index",
                "Index the current snapshot covers",
            ),
            raft_nodes: gauge_vec(
                &r,
                "registry_meta_raft_nodes",
                "Nodes of the Raft group by kind (voter, learner)",
                "kind",
            ),
            epoch: gauge(
                &r,
                "registry_meta_epoch",
                "Epoch of the applied cluster view",
            ),
            members: gauge_vec(
                &r,
                "registry_meta_members",
                "Members of the cluster view by role",
                "role",
            ),
            draining: gauge(&r, "registry_meta_draining", "Data servers being drained"),
            lease_expiries: counter_vec(
                &r,
                "registry_meta_lease_expiries_total",
                "Members removed by this node as leader, by reason",
                "reason",
                &["lease", "heartbeat", "refused"],
            ),
            disconnect_probes: counter_vec(
                &r,
                "registry_meta_disconnect_probes_total",
                "Knocks on the address of a member whose heartbeat connection closed, by result",
                "result",
                &["refused", "accepted", "unanswered"],
            ),
            registry: r,
        }
    }

    /// Reads the node's Raft and applied state into the gauges and renders everything.
    pub fn render(&self, raft: &MetaRaft) -> String {
        let status = raft.status();
        let index = |i: Option<u64>| i64::try_from(i.unwrap_or(0)).unwrap_or(i64::MAX);
        self.term
            .set(i64::try_from(status.term).unwrap_or(i64::MAX));
        self.leader.set(index(status.leader_id));
        self.is_leader
            .set(i64::from(status.role == RaftRole::Leader));
        self.last_log_index.set(index(status.last_log_index));
        self.commit_index.set(index(status.committed_index));
        self.apply_index.set(index(status.last_applied_index));
        self.snapshot_index.set(index(status.snapshot_index));
        self.raft_nodes
            .with_label_values(&["voter"])
            .set(status.voters.len() as i64);
        self.raft_nodes
            .with_label_values(&["learner"])
            .set(status.learners.len() as i64);
        let (epoch, datas, sessions, draining) = raft.with_state(|s| {
            (
                s.view.epoch,
                s.view.members_of(Role::Data).count(),
                s.view.members_of(Role::Session).count(),
                s.draining.len(),
            )
        });
        self.epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
        self.members
            .with_label_values(&[Role::Data.as_str()])
            .set(datas as i64);
        self.members
            .with_label_values(&[Role::Session.as_str()])
            .set(sessions as i64);
        self.draining.set(draining as i64);
        registry_rpc::metrics::render(&self.registry)
    }
}

impl Default for MetaMetrics {
    fn default() -> Self {
        Self::new()
    }
}
