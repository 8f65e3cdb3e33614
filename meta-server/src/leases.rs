//! Member leases, held by the leader in memory.
//!
//! Renewals are not Raft writes: the leader records when each member last renewed and, when a
//! lease runs out, proposes the member's removal through Raft. A node that becomes leader
//! gives every member a fresh lease, so a leader change never expires a member that kept
//! renewing. A member's heartbeat connection closing is a strong hint of a crash: if the
//! member neither reconnects nor renews within the grace period, it is removed at once
//! instead of a lease later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use registry_common::member::MemberId;
use registry_common::proto::meta::LeaseStatus;
use registry_rpc::CancellationToken;

use crate::error::MetaError;
use crate::raft::MetaRaft;
use crate::state::MetaCommand;

#[derive(Default)]
struct Table {
    /// Last renewal (or registration, or leadership takeover) per member.
    renewed: HashMap<MemberId, Instant>,
    /// Members whose heartbeat connection closed, and when.
    disconnected: HashMap<MemberId, Instant>,
    /// Open heartbeat connections per member.
    connections: HashMap<MemberId, u32>,
}

pub struct Leases {
    raft: MetaRaft,
    lease: Duration,
    grace: Duration,
    table: Mutex<Table>,
}

impl Leases {
    pub fn new(raft: MetaRaft, lease: Duration, grace: Duration) -> Self {
        Self {
            raft,
            lease,
            grace,
            table: Mutex::new(Table::default()),
        }
    }

    fn is_leader(&self) -> bool {
        *self.raft.watch_leader().borrow() == Some(self.raft.node_id())
    }

    /// Renews `id`'s lease (on the leader).
    pub fn renew(&self, id: &MemberId) -> Result<(), MetaError> {
        if !self.raft.state().view.members.contains_key(id) {
            return Err(MetaError::UnknownMember(id.clone()));
        }
        let mut t = self.table.lock();
        t.renewed.insert(id.clone(), Instant::now());
        t.disconnected.remove(id);
        Ok(())
    }

    /// A heartbeat connection of `id` opened.
    pub fn connected(&self, id: &MemberId) {
        let mut t = self.table.lock();
        *t.connections.entry(id.clone()).or_default() += 1;
        t.disconnected.remove(id);
        t.renewed.insert(id.clone(), Instant::now());
    }

    /// A heartbeat connection of `id` closed.
    pub fn disconnected(&self, id: &MemberId) {
        let mut t = self.table.lock();
        let open = t.connections.entry(id.clone()).or_default();
        *open = open.saturating_sub(1);
        if *open == 0 {
            t.connections.remove(id);
            t.disconnected.insert(id.clone(), Instant::now());
        }
    }

    /// Lease ages, for status.
    pub fn ages(&self) -> Vec<LeaseStatus> {
        if !self.is_leader() {
            return Vec::new();
        }
        let now = Instant::now();
        let t = self.table.lock();
        let mut out: Vec<LeaseStatus> = t
            .renewed
            .iter()
            .map(|(id, at)| LeaseStatus {
                id: id.clone(),
                age_ms: now.duration_since(*at).as_millis() as u64,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Members whose lease ran out or whose connection closed beyond the grace.
    fn expired(&self, now: Instant) -> Vec<(MemberId, &'static str)> {
        let members = self.raft.state().view.members;
        let mut t = self.table.lock();
        t.renewed.retain(|id, _| members.contains_key(id));
        t.disconnected.retain(|id, _| members.contains_key(id));
        let mut out = Vec::new();
        for id in members.keys() {
            let renewed = *t.renewed.entry(id.clone()).or_insert(now);
            if now.duration_since(renewed) > self.lease {
                out.push((id.clone(), "lease expired"));
            } else if let Some(at) = t.disconnected.get(id) {
                if *at >= renewed && now.duration_since(*at) > self.grace {
                    out.push((id.clone(), "heartbeat connection lost"));
                }
            }
        }
        out
    }

    /// Runs the expiry loop until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tick = (self.lease.min(self.grace.max(Duration::from_millis(40))) / 4)
            .clamp(Duration::from_millis(10), Duration::from_millis(250));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leader_rx = self.raft.watch_leader();
        let mut was_leader = false;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = leader_rx.changed() => {}
                _ = shutdown.cancelled() => return,
            }
            let leader = self.is_leader();
            if leader && !was_leader {
                // Fresh leases for everyone on taking over.
                let now = Instant::now();
                let mut t = self.table.lock();
                t.renewed.clear();
                t.disconnected.clear();
                for id in self.raft.state().view.members.keys() {
                    t.renewed.insert(id.clone(), now);
                }
                tracing::info!(
                    node = self.raft.node_id(),
                    "became meta leader; leases refreshed"
                );
            }
            was_leader = leader;
            if !leader {
                continue;
            }
            let expired = self.expired(Instant::now());
            if expired.is_empty() {
                continue;
            }
            for (id, why) in &expired {
                tracing::warn!(member = %id, "removing member: {why}");
            }
            let reason = expired
                .iter()
                .map(|(_, w)| *w)
                .next()
                .unwrap_or("expired")
                .to_owned();
            let ids = expired.into_iter().map(|(id, _)| id).collect();
            if let Err(e) = self.raft.write(MetaCommand::Remove { ids, reason }).await {
                tracing::warn!("cannot remove expired members: {e}");
            }
        }
    }
}
