//! Messages between data/session servers and the MetaServer (HTTP/JSON).
//!
//! A server registers (`/meta/v1/register`), renews its lease (`/meta/v1/renew`), watches the
//! cluster view (`/meta/v1/view?afterEpoch=N&timeoutMs=T`, a blocking query) and leaves
//! (`/meta/v1/deregister`). Any meta node answers; followers forward writes to the leader.

use serde::{Deserialize, Serialize};

use crate::member::{ClusterView, Member, MemberId};

/// Lease timing the MetaServer expects members to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseConfig {
    pub renew_interval_ms: u64,
    pub lease_ms: u64,
}

/// `POST /meta/v1/register`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    pub member: Member,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    pub view: ClusterView,
    pub lease: LeaseConfig,
}

/// `POST /meta/v1/renew` and `POST /meta/v1/deregister`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRequest {
    pub id: MemberId,
}

/// Answer to a renewal: the epoch the leader is at, so a member notices if it fell behind.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewResponse {
    pub epoch: u64,
}

/// Query of `GET /meta/v1/view`: answer once the epoch is above `after_epoch`, or after
/// `timeout_ms` with the current view.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchQuery {
    #[serde(default)]
    pub after_epoch: u64,
    #[serde(default)]
    pub timeout_ms: u64,
}

/// `GET /admin/v1/meta`: the node's view of the Raft cluster and of the leases.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaStatus {
    pub node_id: u64,
    pub addr: String,
    pub leader: Option<u64>,
    pub leader_addr: Option<String>,
    pub term: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub epoch: u64,
    /// Lease ages, in ms since the last renewal (only the leader tracks them).
    pub leases: Vec<LeaseStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseStatus {
    pub id: MemberId,
    pub age_ms: u64,
}

/// `POST /admin/v1/meta/add-node` and `/remove-node`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRequest {
    pub node_id: u64,
    #[serde(default)]
    pub addr: String,
    /// For add-node: also promote it to voter once it has caught up.
    #[serde(default)]
    pub voter: bool,
}
