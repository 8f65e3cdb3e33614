//! openraft wiring of the MetaServer: the only module that names openraft.
//!
//! [`MetaRaft`] is the handle the rest of the crate uses: it opens a node's redb database,
//! starts the openraft node, proposes [`MetaCommand`]s, exposes the applied [`MetaState`] and
//! watches of its epoch and of the leader, and serves the inter-node RPCs as an axum router.
//!
//! Submodules:
//! - `types`: the openraft type configuration (`u64` ids, `BasicNode { addr }`, the
//!   [`MetaRequest`] payload, [`MetaResponse`] result);
//! - `store`: the redb file and its tables; `log_store`: the Raft log and vote;
//!   `state_machine`: the state machine and its snapshots;
//! - `network`: the RPC client (reqwest); `api`: the RPC server (axum);
//! - `error`: the [`RaftError`] type.
//!
//! # Durability and recovery
//!
//! Everything lives in `<dir>/raft.redb`. The vote, every log entry, the committed log id, the
//! purge point and the current snapshot are each committed with immediate durability before
//! openraft is told they are saved (for `append`: before the `IOFlushed` callback fires).
//! The state machine itself is kept in memory only (it is small and changes rarely); what makes
//! it recoverable is the durable snapshot plus the durable log and `committed` id: when a node
//! starts, openraft installs the persisted snapshot into the empty state machine and re-applies
//! the log from the snapshot up to the saved `committed` id, all inside [`MetaRaft::open`]. So
//! a restarted node serves the state it had applied before it stopped as soon as `open`
//! returns, and catches up from the leader after that. Logs are purged right after each
//! snapshot (no tail is kept; a follower that fell behind the snapshot gets the snapshot, which
//! is one small JSON message).
//!
//! # Leadership
//!
//! [`MetaRaft::watch_leader`] carries the id of the leader this node currently recognises
//! (`None` while an election is under way or after shutdown); it equals
//! `Some(self.node_id())` exactly while this node is the leader of its term. Followers learn
//! the leader from its messages and its address from the membership config, so
//! `RaftError::NotLeader` and [`RaftStatus`] carry the leader's `host:port` when known.
//!
//! openraft does not demote a leader cut off from its quorum: it stays `Leader` of its term
//! and only refuses new proposals once its leader lease (acknowledgements from a quorum within
//! `election_timeout_max`) has run out. Work that is not a Raft write, such as accepting lease
//! renewals, must not be done by such a leader either: [`MetaRaft::serving_term`] is `Some`
//! only while this node is leader *and* its lease is valid.

mod api;
pub mod decoders;
mod error;
mod log_store;
mod network;
mod state_machine;
mod store;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{
    BasicNode, ChangeMembers, Instant as _, RaftMetrics, ReadPolicy, ServerState, SnapshotPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::RaftError;
pub use log_store::LogStore;
pub use network::{
    SnapshotRequest, PATH_APPEND, PATH_PRE_VOTE, PATH_SNAPSHOT, PATH_TRANSFER_LEADER, PATH_VOTE,
};
pub use state_machine::StateMachineStore;
pub use store::{open_db, Db, DB_FILE};
pub use types::{MetaRequest, NodeId, TypeConfig};

use crate::state::{MetaCommand, MetaResponse, MetaState};
use state_machine::SmShared;

/// Raft timing and compaction settings of a meta node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftSettings {
    /// How often the leader sends heartbeats.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in `[min, max)` starts an election.
    /// Must be above `heartbeat_ms`.
    pub election_timeout_min_ms: u64,
    /// Upper end of the election timeout range; also the leader lease.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log up to it) every this many applied entries; 0 means
    /// only when asked ([`MetaRaft::trigger_snapshot`]).
    pub snapshot_every_logs: u64,
    /// The least time an inter-node RPC may take before it counts as timed out. Client-facing
    /// operations (write, read barrier, membership changes) wait up to
    /// `max(5 * rpc_timeout_ms, 3 * election_timeout_max_ms)`.
    pub rpc_timeout_ms: u64,
    /// Local address the RPC client connects from (`None`: the system picks). A node listening
    /// on one specific address talks to its peers from that address too, so peers (and
    /// firewalls, and the fault-injecting proxies of the tests) can tell nodes apart by source.
    #[serde(default)]
    pub local_ip: Option<IpAddr>,
    /// Signs every Raft RPC (the cluster secret); `None` with auth off.
    #[serde(skip)]
    pub signer: Option<registry_common::auth::Credential>,
    /// Reach peers over `https` trusting these roots; `None`: plain `http`.
    #[serde(skip)]
    pub tls: Option<registry_common::tls::ClientTls>,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_every_logs: 1000,
            rpc_timeout_ms: 1000,
            local_ip: None,
            signer: None,
            tls: None,
        }
    }
}

impl RaftSettings {
    fn to_config(&self) -> Result<openraft::Config, RaftError> {
        let snapshot_policy = match self.snapshot_every_logs {
            0 => SnapshotPolicy::Never,
            n => SnapshotPolicy::LogsSinceLast(n),
        };
        let config = openraft::Config {
            cluster_name: "registry-meta".to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.rpc_timeout_ms,
            snapshot_policy,
            max_in_snapshot_log_to_keep: 0,
            // Membership changes are rare: queues sized for a busy key-value store would
            // only cost memory here.
            api_channel_size: Some(1024),
            api_batch_capacity: 64,
            notification_channel_size: Some(1024),
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| RaftError::Other(format!("invalid raft settings: {e}")))
    }

    /// How long a client-facing operation may wait.
    fn op_timeout(&self) -> Duration {
        Duration::from_millis(
            self.rpc_timeout_ms
                .saturating_mul(5)
                .max(self.election_timeout_max_ms.saturating_mul(3)),
        )
    }
}

/// The role of a node in its Raft group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaftRole {
    /// Not a voter (or not yet initialised).
    Learner,
    /// A voter following a leader (or waiting for one).
    Follower,
    /// A voter asking for votes.
    Candidate,
    /// The leader of the current term.
    Leader,
    /// Shut down or stopped by an error.
    Shutdown,
}

/// A point-in-time view of a node's Raft state, for the admin API and tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RaftStatus {
    /// This node.
    pub id: NodeId,
    /// This node's address (`host:port`).
    pub addr: String,
    /// What this node is in its group.
    pub role: RaftRole,
    /// The leader this node recognises.
    pub leader_id: Option<NodeId>,
    /// The leader's address, from the membership config.
    pub leader_addr: Option<String>,
    /// The current term.
    pub term: u64,
    /// Voters of the effective membership, id -> address.
    pub voters: BTreeMap<NodeId, String>,
    /// Learners (non-voting members), id -> address.
    pub learners: BTreeMap<NodeId, String>,
    /// Index of the last entry in this node's log.
    pub last_log_index: Option<u64>,
    /// Index of the last entry this node knows is committed.
    pub committed_index: Option<u64>,
    /// Index of the last entry applied to the state machine.
    pub last_applied_index: Option<u64>,
    /// Index the current snapshot covers up to.
    pub snapshot_index: Option<u64>,
    /// Index up to which the log has been purged.
    pub purged_index: Option<u64>,
    /// Why the node stopped, when it did.
    pub error: Option<String>,
}

/// The outcome of [`MetaRaft::write_if_epoch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conditional {
    /// The epoch matched and the command was applied.
    Applied(MetaResponse),
    /// The epoch had moved on to `current`; nothing changed.
    Stale { current: u64 },
}

/// The handle of this meta node's Raft. Cheap to clone.
#[derive(Clone)]
pub struct MetaRaft {
    inner: Arc<Inner>,
}

struct Inner {
    /// This node's id.
    id: NodeId,
    /// This node's `host:port` (reported in status).
    addr: String,
    /// The openraft node.
    raft: types::Raft,
    /// The applied state and epoch watch, shared with the state machine.
    sm: Arc<SmShared>,
    /// The leader watch, fed by `leader_task` and cleared by `shutdown`.
    leader_tx: Arc<watch::Sender<Option<NodeId>>>,
    /// The task that turns openraft metrics into the leader watch.
    leader_task: parking_lot::Mutex<Option<JoinHandle<()>>>,
    /// How long client-facing operations may wait.
    op_timeout: Duration,
    /// How long a quorum acknowledgement keeps this node's leadership valid (openraft's leader
    /// lease, `election_timeout_max`).
    leader_lease: Duration,
    /// Turns `true` once the database file is closed. Only the stores own the database, so
    /// `shutdown` can wait for this (and a node can be reopened on the same directory in the
    /// same process).
    db_closed: watch::Receiver<bool>,
}

impl MetaRaft {
    /// Opens (creating if needed) the redb database under `dir` and starts the Raft node. A
    /// node restarted on the same dir recovers vote, log and state machine before this returns.
    pub async fn open(
        dir: &Path,
        node_id: NodeId,
        addr: String,
        settings: RaftSettings,
    ) -> Result<MetaRaft, RaftError> {
        let config = settings.to_config()?;
        let db = {
            let dir = dir.to_owned();
            tokio::task::spawn_blocking(move || open_db(&dir))
                .await
                .map_err(|e| RaftError::Other(format!("open task failed: {e}")))?
                .map_err(RaftError::storage)?
        };
        let db_closed = db.watch_closed();
        let log_store = LogStore::new(db.clone());
        let sm = StateMachineStore::new(db);
        let shared = sm.shared();
        let network = network::NetworkFactory::new(
            node_id,
            Duration::from_millis(settings.rpc_timeout_ms),
            settings.local_ip,
            settings.signer.clone(),
            settings.tls.as_ref(),
        )
        .map_err(|e| RaftError::Other(format!("http client: {e}")))?;
        let raft = openraft::Raft::new(node_id, Arc::new(config), network, log_store, sm).await?;

        let metrics = raft.metrics();
        let (leader_tx, _) = watch::channel(leader_of(&metrics.borrow_watched()));
        let leader_tx = Arc::new(leader_tx);
        let leader_task = tokio::spawn(follow_leader(metrics, leader_tx.clone()));

        Ok(MetaRaft {
            inner: Arc::new(Inner {
                id: node_id,
                addr,
                raft,
                sm: shared,
                leader_tx,
                leader_task: parking_lot::Mutex::new(Some(leader_task)),
                op_timeout: settings.op_timeout(),
                leader_lease: Duration::from_millis(settings.election_timeout_max_ms),
                db_closed,
            }),
        })
    }

    /// True when this node has never been initialised and has never received a vote or a log
    /// entry (so `initialize` would create a new cluster).
    pub async fn is_pristine(&self) -> Result<bool, RaftError> {
        Ok(!self.inner.raft.is_initialized().await?)
    }

    /// Initialises the cluster with these voters (id -> `host:port`); this node must be one.
    /// `Ok(())` if the node is already initialised (or has heard from a cluster), so it is safe
    /// to repeat; call it on one node, or on all with the same voters.
    pub async fn initialize(&self, voters: BTreeMap<NodeId, String>) -> Result<(), RaftError> {
        let nodes: BTreeMap<NodeId, BasicNode> = voters
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        match self.inner.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(openraft::errors::RaftError::APIError(
                openraft::errors::InitializeError::NotAllowed(_),
            )) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Proposes a command and waits until it is applied here. On a follower:
    /// `Err(RaftError::NotLeader { .. })` with the leader when known. `Timeout` and
    /// `Discarded` mean the outcome is unknown.
    pub async fn write(&self, cmd: MetaCommand) -> Result<MetaResponse, RaftError> {
        self.propose(MetaRequest::new(cmd)).await
    }

    /// Proposes `cmd` to be applied only if the epoch is still `epoch` when it reaches the
    /// state machine (compare-and-set). Errors as [`Self::write`].
    pub async fn write_if_epoch(
        &self,
        cmd: MetaCommand,
        epoch: u64,
    ) -> Result<Conditional, RaftError> {
        let resp = self.propose(MetaRequest::if_epoch(cmd, epoch)).await?;
        // Applied: the epoch is `epoch` (no change) or the next one (changed). Refused: the
        // state machine answered with an epoch it did not expect and changed nothing.
        if !resp.changed && resp.epoch != epoch {
            Ok(Conditional::Stale {
                current: resp.epoch,
            })
        } else {
            Ok(Conditional::Applied(resp))
        }
    }

    async fn propose(&self, req: MetaRequest) -> Result<MetaResponse, RaftError> {
        let fut = self.inner.raft.client_write(req);
        match tokio::time::timeout(self.inner.op_timeout, fut).await {
            Err(_) => Err(RaftError::Timeout),
            Ok(Ok(resp)) => Ok(resp.data),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Linearizable read barrier: on the leader, confirms leadership with a quorum and waits
    /// until everything committed before the call is applied locally; then [`Self::state`]
    /// is up to date. `NotLeader` on other nodes.
    pub async fn ensure_linearizable(&self) -> Result<(), RaftError> {
        let fut = self.inner.raft.ensure_linearizable(ReadPolicy::ReadIndex);
        match tokio::time::timeout(self.inner.op_timeout, fut).await {
            Err(_) => Err(RaftError::Timeout),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// A clone of the applied state.
    pub fn state(&self) -> MetaState {
        self.inner.sm.data.read().state.clone()
    }

    /// Reads the applied state in place (no clone); `f` runs under a read lock, so it must be
    /// short and must not block.
    pub fn with_state<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        f(&self.inner.sm.data.read().state)
    }

    /// The epoch of the applied state.
    pub fn epoch(&self) -> u64 {
        self.inner.sm.data.read().state.view.epoch
    }

    /// The epoch of the applied state, updated after every apply that changes it, after every
    /// snapshot install, and already recovered when `open` returns.
    pub fn watch_epoch(&self) -> watch::Receiver<u64> {
        self.inner.sm.epoch_tx.subscribe()
    }

    /// The ACL revision of the applied state, updated like [`Self::watch_epoch`].
    pub fn watch_acl(&self) -> watch::Receiver<u64> {
        self.inner.sm.acl_tx.subscribe()
    }

    /// The current Raft status of this node.
    pub fn status(&self) -> RaftStatus {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let addr_of = |id: &NodeId| {
            membership
                .get_node(id)
                .map(|n| n.addr.clone())
                .unwrap_or_default()
        };
        let voters: BTreeMap<NodeId, String> = membership
            .voter_ids()
            .map(|id| {
                let addr = addr_of(&id);
                (id, addr)
            })
            .collect();
        let learners: BTreeMap<NodeId, String> = membership
            .learner_ids()
            .map(|id| {
                let addr = addr_of(&id);
                (id, addr)
            })
            .collect();
        let leader_id = leader_of(&m);
        RaftStatus {
            id: self.inner.id,
            addr: self.inner.addr.clone(),
            role: match m.state {
                ServerState::Learner => RaftRole::Learner,
                ServerState::Follower => RaftRole::Follower,
                ServerState::Candidate => RaftRole::Candidate,
                ServerState::Leader => RaftRole::Leader,
                ServerState::Shutdown => RaftRole::Shutdown,
            },
            leader_id,
            leader_addr: leader_id
                .and_then(|id| membership.get_node(&id))
                .map(|n| n.addr.clone()),
            term: m.current_term,
            voters,
            learners,
            last_log_index: m.last_log_index,
            committed_index: m.local_committed.as_ref().map(|l| l.index()),
            last_applied_index: m.last_applied.as_ref().map(|l| l.index()),
            snapshot_index: m.snapshot.as_ref().map(|l| l.index()),
            purged_index: m.purged.as_ref().map(|l| l.index()),
            error: m.running_state.as_ref().err().map(|e| e.to_string()),
        }
    }

    /// The leader this node recognises; changes on every leadership change. Equals
    /// `Some(self.node_id())` while this node is the leader.
    pub fn watch_leader(&self) -> watch::Receiver<Option<NodeId>> {
        self.inner.leader_tx.subscribe()
    }

    /// The term this node leads while it is the leader and a quorum has acknowledged it within
    /// the leader lease; `None` otherwise (a follower, a candidate, or a leader cut off from its
    /// quorum, which openraft keeps as leader but which cannot commit). Cheap: one read of the
    /// metrics, no I/O.
    pub fn serving_term(&self) -> Option<u64> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        if m.state != ServerState::Leader
            || m.current_leader != Some(self.inner.id)
            || m.running_state.is_err()
        {
            return None;
        }
        let membership = m.membership_config.membership();
        let mut voters = membership.voter_ids();
        let alone = voters.next() == Some(self.inner.id) && voters.next().is_none();
        let acked = m
            .last_quorum_acked
            .as_ref()
            .is_some_and(|at| at.elapsed() < self.inner.leader_lease);
        (alone || acked).then_some(m.current_term)
    }

    /// The current term as this node knows it.
    pub fn current_term(&self) -> u64 {
        self.inner.raft.metrics().borrow_watched().current_term
    }

    /// `Ok` while this node is the serving leader (see [`Self::serving_term`]); otherwise
    /// `NotLeader` with the leader it recognises, or with no leader when it is itself the
    /// leader but has lost its quorum (so a client does not come straight back here).
    pub fn ensure_serving_leader(&self) -> Result<(), RaftError> {
        if self.serving_term().is_some() {
            return Ok(());
        }
        let status = self.status();
        if status.leader_id == Some(self.inner.id) {
            return Err(RaftError::NotLeader {
                leader_id: None,
                leader_addr: None,
            });
        }
        Err(RaftError::NotLeader {
            leader_id: status.leader_id,
            leader_addr: status.leader_addr,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.id
    }

    /// This node's address (`host:port`).
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Adds a learner (leader only) and waits until it has caught up with the log.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<(), RaftError> {
        // Not blocking on the learner's catch-up: `wait_caught_up` does that, with an answer
        // that says what happened, before a learner may become a voter.
        let fut = self.inner.raft.add_learner(id, BasicNode { addr }, false);
        match tokio::time::timeout(self.inner.op_timeout, fut).await {
            Err(_) => Err(RaftError::Timeout),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Waits until node `id` has replicated this leader's log up to what was committed when
    /// the call began, for at most `timeout`. A node that is unreachable (a mistyped
    /// address, a node not started) never does: promoting it to voter would make a quorum
    /// that cannot be reached, and the cluster could commit nothing, not even the change
    /// that removes it. So `Membership` (nothing changed) when it does not catch up.
    pub async fn wait_caught_up(&self, id: NodeId, timeout: Duration) -> Result<(), RaftError> {
        let mut rx = self.inner.raft.metrics();
        let target = rx
            .borrow_watched()
            .local_committed
            .as_ref()
            .map(|l| l.index());
        let caught_up = async {
            loop {
                {
                    let m = rx.borrow_watched();
                    if m.current_leader != Some(self.inner.id) {
                        return Err(RaftError::NotLeader {
                            leader_id: leader_of(&m),
                            leader_addr: None,
                        });
                    }
                    let matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .map(|l| l.index());
                    if matched.is_some() && matched >= target {
                        return Ok(());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(RaftError::Fatal("raft stopped".into()));
                }
            }
        };
        match tokio::time::timeout(timeout, caught_up).await {
            Ok(result) => result,
            Err(_) => Err(RaftError::Membership(format!(
                "meta node {id} has not caught up with the log within {timeout:?} (is its \
                 address right and is it running?); not promoted to voter"
            ))),
        }
    }

    /// How long a Raft operation of this node may take.
    pub fn op_timeout(&self) -> Duration {
        self.inner.op_timeout
    }

    /// Replaces the voter set (leader only). New voters must have been added as learners;
    /// removed voters leave the cluster. Returns once the new config is committed.
    pub async fn change_voters(&self, voters: BTreeSet<NodeId>) -> Result<(), RaftError> {
        self.change_membership(ChangeMembers::ReplaceAllVoters(voters))
            .await
    }

    /// Removes a learner (a node that is not a voter) from the cluster (leader only).
    pub async fn remove_learner(&self, id: NodeId) -> Result<(), RaftError> {
        self.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
            .await
    }

    async fn change_membership(
        &self,
        change: ChangeMembers<NodeId, BasicNode>,
    ) -> Result<(), RaftError> {
        let fut = self.inner.raft.change_membership(change, false);
        match tokio::time::timeout(self.inner.op_timeout, fut).await {
            Err(_) => Err(RaftError::Timeout),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Builds a snapshot of everything applied so far (and purges the log up to it); returns
    /// once the snapshot is on disk.
    pub async fn trigger_snapshot(&self) -> Result<(), RaftError> {
        let target = self
            .inner
            .raft
            .metrics()
            .borrow_watched()
            .last_applied
            .as_ref()
            .map(|l| l.index());
        self.inner.raft.trigger().snapshot().await?;
        if target.is_none() {
            return Ok(());
        }
        self.wait_metrics(|m| m.snapshot.as_ref().map(|l| l.index()) >= target)
            .await
    }

    /// Hands leadership to the voter with the most complete log when this node leads, and
    /// waits (up to `timeout`) until another node leads. Returns the new leader; `None` when
    /// this node did not lead, has no other voter, or no one took over in time (an election
    /// then follows once it stops, as after a crash).
    pub async fn transfer_leadership(
        &self,
        timeout: Duration,
    ) -> Result<Option<NodeId>, RaftError> {
        let to = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow_watched();
            if m.state != ServerState::Leader || m.current_leader != Some(self.inner.id) {
                return Ok(None);
            }
            let voters: Vec<NodeId> = m
                .membership_config
                .membership()
                .voter_ids()
                .filter(|id| *id != self.inner.id)
                .collect();
            let matched = |id: &NodeId| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|l| l.index())
            };
            // The most caught-up voter wins its election at once.
            voters.into_iter().max_by_key(|id| matched(id))
        };
        let Some(to) = to else { return Ok(None) };
        self.inner.raft.trigger().transfer_leader(to).await?;
        let mut rx = self.inner.raft.metrics();
        let me = self.inner.id;
        let moved = async {
            loop {
                let leader = leader_of(&rx.borrow_watched());
                if leader.is_some_and(|l| l != me) {
                    return leader;
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        Ok(tokio::time::timeout(timeout, moved).await.ok().flatten())
    }

    /// Stops the node and waits until its database file is closed.
    pub async fn shutdown(&self) -> Result<(), RaftError> {
        let res = self.inner.raft.shutdown().await;
        if let Some(task) = self.inner.leader_task.lock().take() {
            // It ends by itself once the metrics channel closes; do not leave it to chance.
            task.abort();
        }
        self.inner
            .leader_tx
            .send_if_modified(|current| current.take().is_some());
        let mut closed = self.inner.db_closed.clone();
        // An error means the signal's sender is gone, which happens only after it sent `true`.
        let wait = closed.wait_for(|closed| *closed);
        if tokio::time::timeout(self.inner.op_timeout, wait)
            .await
            .is_err()
        {
            tracing::warn!("raft storage still open after shutdown");
        }
        res.map_err(|e| RaftError::Fatal(format!("raft core task failed: {e}")))
    }

    /// The axum router with the inter-node RPC endpoints (`POST /raft/append`, `/raft/vote`,
    /// `/raft/pre-vote`, `/raft/snapshot`, `/raft/transfer-leader`; JSON bodies).
    pub fn router(&self) -> axum::Router {
        api::router(self.inner.raft.clone())
    }

    /// Waits until `cond` holds for the metrics, up to the operation timeout.
    async fn wait_metrics(
        &self,
        cond: impl Fn(&RaftMetrics<TypeConfig>) -> bool,
    ) -> Result<(), RaftError> {
        let mut rx = self.inner.raft.metrics();
        let wait = async {
            loop {
                let done = cond(&rx.borrow_watched());
                if done {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(RaftError::Fatal("raft stopped".into()));
                }
            }
        };
        match tokio::time::timeout(self.inner.op_timeout, wait).await {
            Ok(res) => res,
            Err(_) => Err(RaftError::Timeout),
        }
    }
}

/// The leader a node recognises, from its metrics (`None` once it is shut down).
fn leader_of(m: &RaftMetrics<TypeConfig>) -> Option<NodeId> {
    if m.state == ServerState::Shutdown || m.running_state.is_err() {
        None
    } else {
        m.current_leader
    }
}

/// Feeds the leader watch from openraft's metrics until the node stops.
async fn follow_leader(
    mut metrics: openraft::type_config::alias::WatchReceiverOf<TypeConfig, RaftMetrics<TypeConfig>>,
    tx: Arc<watch::Sender<Option<NodeId>>>,
) {
    loop {
        let leader = leader_of(&metrics.borrow_watched());
        tx.send_if_modified(|current| {
            if *current == leader {
                false
            } else {
                *current = leader;
                true
            }
        });
        if metrics.changed().await.is_err() {
            tx.send_if_modified(|current| current.take().is_some());
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compile-time check: every async operation can run inside a spawned task or an axum
    /// handler.
    #[allow(dead_code)]
    fn operations_are_send(raft: MetaRaft, cmd: MetaCommand) {
        fn send<T: Send>(_: T) {}
        send(MetaRaft::open(
            Path::new("x"),
            1,
            String::new(),
            RaftSettings::default(),
        ));
        send(raft.is_pristine());
        send(raft.initialize(BTreeMap::new()));
        send(raft.write(cmd.clone()));
        send(raft.write_if_epoch(cmd, 1));
        send(raft.remove_learner(2));
        send(raft.ensure_linearizable());
        send(raft.add_learner(2, String::new()));
        send(raft.change_voters(BTreeSet::new()));
        send(raft.trigger_snapshot());
        send(raft.shutdown());
    }

    #[test]
    fn default_settings_are_valid() {
        let config = RaftSettings::default().to_config().expect("valid");
        assert_eq!(config.heartbeat_interval, 100);
        assert_eq!(RaftSettings::default().op_timeout(), Duration::from_secs(5));
        let bad = RaftSettings {
            election_timeout_min_ms: 50,
            ..RaftSettings::default()
        };
        assert!(matches!(bad.to_config(), Err(RaftError::Other(_))));
    }
}
