//! Member leases, held by the leader in memory.
//!
//! Renewals are not Raft writes: the leader records when each member last renewed and, when a
//! lease runs out, proposes the member's removal through Raft. A member's heartbeat connection
//! closing is a strong hint of a crash: if the member neither reconnects nor renews within the
//! grace period, it is removed at once instead of a lease later. And when the connection
//! closes, the leader knocks on the member's address: a refused TCP connection means no
//! process listens there any more (it crashed or was killed), and the member is removed
//! without waiting out the grace. Any other answer (accepted, timed out) proves nothing (a
//! frozen process's kernel still accepts; a link may be down), and the grace runs as before.
//!
//! Leases only run while this node is the *serving* leader ([`MetaRaft::serving_term`]: the
//! leader of its term with a valid leader lease). Whenever it starts serving (it became leader,
//! or it got its quorum back after losing it) every lease restarts from that moment, because
//! while it was not serving the members renewed elsewhere or were refused here: a leader
//! change, or a leader cut off from its quorum, never expires a member that kept renewing.
//! Connection hints carry the term they were seen in; only those of the term being served
//! count (older ones describe connections to an earlier leadership). Heartbeat connections
//! this node closes itself (it stopped being the serving leader, or it is stopping) are not
//! crash hints.
//!
//! A member that died while the leadership changed never closes a heartbeat connection to
//! the new leader (it never opens one), so no hint names it, and it used to stay in the view
//! for a whole lease. So a leader that starts serving knocks on the address of every member
//! with no heartbeat connection to it yet: a refused knock removes the member at once, as
//! above; any other answer leaves it to its lease (a live member is still finding the new
//! leader, and no grace runs for a connection it never had).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use registry_common::backoff::Backoff;
use registry_common::member::MemberId;
use registry_common::proto::meta::LeaseStatus;
use registry_rpc::CancellationToken;

use crate::error::MetaError;
use crate::raft::MetaRaft;
use crate::state::MetaCommand;

struct Table {
    /// Last renewal by the member itself (renew call, heartbeat message, heartbeat connect,
    /// registration). A lease runs from this or from `serving_since`, whichever is later.
    renewed: HashMap<MemberId, Instant>,
    /// Members whose last heartbeat connection was closed by the member's side.
    disconnected: HashMap<MemberId, Disconnect>,
    /// Open heartbeat connections per member.
    connections: HashMap<MemberId, u32>,
    /// When this node last began serving as leader: every lease runs from here at the
    /// earliest.
    serving_since: Instant,
}

impl Table {
    /// When `id`'s current lease started.
    fn lease_start(&self, id: &MemberId) -> Instant {
        match self.renewed.get(id) {
            Some(at) => (*at).max(self.serving_since),
            None => self.serving_since,
        }
    }
}

/// A member's heartbeat connection closed by its side.
#[derive(Debug, Clone, Copy)]
struct Disconnect {
    /// When: the grace runs from here.
    at: Instant,
    /// The term it was seen in (hints of other terms are forgotten).
    term: u64,
    /// Whether the member's address refused a connection since: nothing listens there.
    refused: bool,
    /// Whether a heartbeat connection closed (the grace runs), or this node began serving
    /// and the member had none to it yet (only a refused knock counts).
    closed: bool,
}

/// Longest a knock on a disconnected member's address waits for an answer.
const KNOCK_TIMEOUT: Duration = Duration::from_millis(500);

/// What a knock on a disconnected member's address found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Knock {
    /// The connection was refused: nothing listens there.
    Refused,
    /// Something accepted it: the member's process, or whatever took its address.
    Accepted,
    /// No answer in time (a link down, a frozen host): proves nothing.
    Unanswered,
}

impl Knock {
    /// Its label on `registry_meta_disconnect_probes_total`.
    fn label(self) -> &'static str {
        match self {
            Knock::Refused => "refused",
            Knock::Accepted => "accepted",
            Knock::Unanswered => "unanswered",
        }
    }
}

/// First pause before knocking again on an address that accepted.
const KNOCK_AGAIN: Duration = Duration::from_millis(50);

/// Why a member is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// Not renewed for a whole lease.
    Lease,
    /// Its heartbeat connection closed and it neither reconnected nor renewed within the grace.
    Heartbeat,
    /// No heartbeat connection, and its address refused a connection.
    Refused,
}

impl Removal {
    /// Its label on `registry_meta_lease_expiries_total`.
    fn label(self) -> &'static str {
        match self {
            Removal::Lease => "lease",
            Removal::Heartbeat => "heartbeat",
            Removal::Refused => "refused",
        }
    }

    /// The reason recorded with the removal.
    fn reason(self) -> &'static str {
        match self {
            Removal::Lease => "lease expired",
            Removal::Heartbeat => "heartbeat connection lost",
            Removal::Refused => "no heartbeat connection and nothing listens at its address",
        }
    }
}

pub struct Leases {
    /// This node's Raft: the member set, leadership, and where removals are proposed.
    raft: MetaRaft,
    /// A member not renewed for this long is removed.
    lease: Duration,
    /// A member whose heartbeat connection closed and that has neither reconnected nor renewed
    /// for this long is removed.
    grace: Duration,
    /// Renewals, connection hints and the serving start.
    table: Mutex<Table>,
    /// Members removed, by reason (`lease`, `heartbeat`, `refused`).
    expiries: prometheus::IntCounterVec,
    /// Knocks on disconnected members' addresses, by result (`refused`, `accepted`,
    /// `unanswered`).
    probes: prometheus::IntCounterVec,
    /// Wakes the expiry loop when a knock was refused, so the removal does not wait a tick.
    wake: tokio::sync::Notify,
}

impl Leases {
    pub fn new(
        raft: MetaRaft,
        lease: Duration,
        grace: Duration,
        expiries: prometheus::IntCounterVec,
        probes: prometheus::IntCounterVec,
    ) -> Self {
        Self {
            raft,
            lease,
            grace,
            expiries,
            probes,
            wake: tokio::sync::Notify::new(),
            table: Mutex::new(Table {
                renewed: HashMap::new(),
                disconnected: HashMap::new(),
                connections: HashMap::new(),
                serving_since: Instant::now(),
            }),
        }
    }

    fn is_leader(&self) -> bool {
        *self.raft.watch_leader().borrow() == Some(self.raft.node_id())
    }

    fn is_member(&self, id: &MemberId) -> bool {
        self.raft.with_state(|s| s.view.members.contains_key(id))
    }

    /// Renews `id`'s lease (on the leader).
    pub fn renew(&self, id: &MemberId) -> Result<(), MetaError> {
        if !self.is_member(id) {
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

    /// A heartbeat connection of `id` was closed by the member's side (or broke): if it was
    /// the last one, the grace period starts and the member's address is knocked on.
    pub fn disconnected(self: &Arc<Self>, id: &MemberId) {
        let term = self.raft.current_term();
        let at = Instant::now();
        {
            let mut t = self.table.lock();
            if !Self::close(&mut t, id) {
                return;
            }
            let hint = Disconnect {
                at,
                term,
                refused: false,
                closed: true,
            };
            t.disconnected.insert(id.clone(), hint);
        }
        let addr = self
            .raft
            .with_state(|s| s.view.members.get(id).map(|m| m.addr.clone()));
        if let Some(addr) = addr {
            let this = self.clone();
            let id = id.clone();
            tokio::spawn(async move { this.knock(id, addr, at).await });
        }
    }

    /// Knocks on the address of `id`, disconnected at `since`, until a knock is refused (the
    /// member is marked for removal), goes unanswered, the member comes back, or the grace
    /// runs out. An accepted knock is tried again: a dying process may close its heartbeat a
    /// moment before its listener (and one that died as the leadership changed may still be
    /// going down when the new leader first knocks).
    async fn knock(&self, id: MemberId, addr: String, since: Instant) {
        let mut backoff = Backoff::new(KNOCK_AGAIN, KNOCK_AGAIN * 4);
        loop {
            let knock = match registry_rpc::net::connect(&addr, KNOCK_TIMEOUT).await {
                Ok(_) => Knock::Accepted,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Knock::Refused,
                Err(_) => Knock::Unanswered,
            };
            self.probes.with_label_values(&[knock.label()]).inc();
            tracing::debug!(member = %id, %addr, result = knock.label(), "knocked on a disconnected member's address");
            {
                let mut t = self.table.lock();
                let Some(d) = t.disconnected.get_mut(&id).filter(|d| d.at == since) else {
                    // It reconnected or renewed, or it is gone already.
                    return;
                };
                match knock {
                    Knock::Refused => d.refused = true,
                    Knock::Accepted if since.elapsed() < self.grace => {}
                    Knock::Accepted | Knock::Unanswered => return,
                }
            }
            if knock == Knock::Refused {
                tracing::info!(member = %id, %addr, "a disconnected member's address refuses connections");
                self.wake.notify_one();
                return;
            }
            backoff.wait().await;
        }
    }

    /// A heartbeat connection of `id` was closed by this node (it stopped serving as leader,
    /// or it is stopping). Says nothing about the member's health.
    pub fn released(&self, id: &MemberId) {
        let mut t = self.table.lock();
        Self::close(&mut t, id);
    }

    /// Counts one connection of `id` closed; true if it was the last.
    fn close(t: &mut Table, id: &MemberId) -> bool {
        let open = t.connections.entry(id.clone()).or_default();
        *open = open.saturating_sub(1);
        if *open == 0 {
            t.connections.remove(id);
            true
        } else {
            false
        }
    }

    /// Whether `id` has a heartbeat connection open to this node.
    pub fn is_connected(&self, id: &MemberId) -> bool {
        self.table.lock().connections.contains_key(id)
    }

    /// Lease ages (time since each lease started), for status. Empty on a node that is not
    /// the leader.
    pub fn ages(&self) -> Vec<LeaseStatus> {
        if !self.is_leader() {
            return Vec::new();
        }
        let members: Vec<MemberId> = self
            .raft
            .with_state(|s| s.view.members.keys().cloned().collect());
        let now = Instant::now();
        let t = self.table.lock();
        members
            .into_iter()
            .map(|id| {
                let age = now.duration_since(t.lease_start(&id));
                LeaseStatus {
                    id,
                    age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                }
            })
            .collect()
    }

    /// Members whose lease ran out, whose connection closed beyond the grace, or whose
    /// address refused a knock.
    fn expired(&self, now: Instant) -> Vec<(MemberId, Removal)> {
        // Sorted (the member map is a BTreeMap), so `binary_search` below is valid.
        let members: Vec<MemberId> = self
            .raft
            .with_state(|s| s.view.members.keys().cloned().collect());
        let mut t = self.table.lock();
        t.renewed.retain(|id, _| members.binary_search(id).is_ok());
        t.disconnected
            .retain(|id, _| members.binary_search(id).is_ok());
        let mut out = Vec::new();
        for id in members {
            let start = t.lease_start(&id);
            if now.duration_since(start) > self.lease {
                out.push((id, Removal::Lease));
                continue;
            }
            // (A renewal or a reconnection after the close removed the hint.)
            if let Some(d) = t.disconnected.get(&id) {
                if d.refused {
                    out.push((id, Removal::Refused));
                } else if d.closed && now.duration_since(d.at) > self.grace {
                    out.push((id, Removal::Heartbeat));
                }
            }
        }
        out
    }

    /// Starts every lease afresh: this node has just begun serving as leader in `term`.
    /// Connection hints of other terms are forgotten; those of this term (seen between the
    /// election and this call, or before a loss of quorum within it) still count. Every
    /// member with no heartbeat connection to this node and no hint is knocked on.
    fn start_serving(self: &Arc<Self>, term: u64) {
        let members: Vec<(MemberId, String)> = self.raft.with_state(|s| {
            s.view
                .members
                .iter()
                .map(|(id, m)| (id.clone(), m.addr.clone()))
                .collect()
        });
        let now = Instant::now();
        let mut knock = Vec::new();
        {
            let mut t = self.table.lock();
            t.serving_since = now;
            t.disconnected.retain(|_, d| d.term == term);
            for (id, addr) in members {
                if t.connections.contains_key(&id) || t.disconnected.contains_key(&id) {
                    continue;
                }
                let hint = Disconnect {
                    at: now,
                    term,
                    refused: false,
                    closed: false,
                };
                t.disconnected.insert(id.clone(), hint);
                knock.push((id, addr));
            }
        }
        for (id, addr) in knock {
            let this = self.clone();
            tokio::spawn(async move { this.knock(id, addr, now).await });
        }
    }

    /// Runs the expiry loop until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tick = (self.lease.min(self.grace.max(Duration::from_millis(40))) / 4)
            .clamp(Duration::from_millis(10), Duration::from_millis(250));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leader_rx = self.raft.watch_leader();
        // Whether this loop saw this node serving at its last pass, and in which term.
        let mut serving = false;
        let mut term_seen: Option<u64> = None;
        // Removals proposed in the term being served whose write returned an error: it may
        // still apply (a timeout under load), or have been lost with a leadership change.
        let mut unconfirmed: HashMap<MemberId, Removal> = HashMap::new();
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = self.wake.notified() => {}
                _ = leader_rx.changed() => {}
                _ = shutdown.cancelled() => return,
            }
            let Some(term) = self.raft.serving_term() else {
                serving = false;
                continue;
            };
            if !serving || term_seen != Some(term) {
                unconfirmed.clear();
                self.start_serving(term);
                serving = true;
                term_seen = Some(term);
                tracing::info!(
                    node = self.raft.node_id(),
                    term,
                    "serving as meta leader; leases restarted"
                );
                continue;
            }
            // An earlier write that returned an error may have applied since.
            unconfirmed.retain(|id, why| {
                let pending = self.is_member(id);
                if !pending {
                    self.count_removed(*why);
                }
                pending
            });
            let expired = self.expired(Instant::now());
            if expired.is_empty() {
                continue;
            }
            for (id, why) in &expired {
                tracing::warn!(member = %id, "removing member: {}", why.reason());
                // This proposal decides it now.
                unconfirmed.remove(id);
            }
            let reason = expired
                .first()
                .map_or("expired", |(_, why)| why.reason())
                .to_owned();
            let ids = expired.iter().map(|(id, _)| id.clone()).collect();
            match self.raft.write(MetaCommand::Remove { ids, reason }).await {
                // Applied here. A write that changed nothing found them gone already
                // (an earlier leader's proposal applied first): that one removed them.
                Ok(resp) => {
                    for (id, why) in expired {
                        if resp.changed && !self.is_member(&id) {
                            self.count_removed(why);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot remove expired members: {e}");
                    unconfirmed.extend(expired);
                }
            }
        }
    }

    /// Counts one member removed for `why`, once its removal has applied here: a proposal
    /// lost with a leadership change and made again by the next leader, or made again after
    /// a write that timed out, counts once. (One case is not counted at all: a proposal
    /// that applies after its leader lost the leadership without an answer.)
    fn count_removed(&self, why: Removal) {
        self.expiries.with_label_values(&[why.label()]).inc();
    }
}
