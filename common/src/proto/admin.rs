//! The admin API's answers (`/admin/v1/...` on every server; `docs/admin-api.md`).
//!
//! A meta node answers for the whole cluster: it reads its replicated state and asks the data
//! and session servers for their own status ([`DataStatus`], [`SessionStatus`]) and for what
//! they hold of one service ([`DataServiceView`], [`SessionServiceView`]).

use serde::{Deserialize, Serialize};

use crate::member::{MemberId, Role};
use crate::model::Publisher;

/// `GET /admin/v1/status` on a data server.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataStatus {
    pub id: String,
    pub epoch: u64,
    /// Can do its job: a member with a slot table, no slot still copying in, not draining.
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready: Option<String>,
    pub primary_slots: usize,
    pub replica_slots: usize,
    /// Slots gained and still being copied in.
    pub syncing_slots: usize,
    /// Slots lost and kept a while for stragglers.
    pub retained_slots: usize,
    /// DataInfoIds held, as primary or replica.
    pub data_info_ids: usize,
    /// Publishers held, as primary or replica.
    pub publishers: usize,
    /// Publishers held as primary.
    pub primary_publishers: usize,
    pub draining: bool,
}

/// `GET /admin/v1/status` on a session server.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    pub id: String,
    pub epoch: u64,
    /// Can do its job: has a cluster view and reaches the data tier.
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready: Option<String>,
    pub connections: i64,
    pub publishers: i64,
    pub subscribers: i64,
    /// Write ops waiting to be forwarded to the data tier.
    pub forward_pending: usize,
    /// Frames queued towards clients.
    pub outbox_frames: i64,
    /// Pushes sent per second, over the last few seconds.
    pub pushes_per_sec: f64,
    /// Whether this session is pushing (the cluster's push switch as this session sees it).
    pub push_enabled: bool,
    /// The ACL revision applied (auth on).
    pub acl_revision: u64,
    /// Median time from a change accepted at the data tier to its push, over the last ten
    /// seconds (none without pushes), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_latency_p50_ms: Option<f64>,
    /// The same at the 99th percentile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_latency_p99_ms: Option<f64>,
}

/// `GET /admin/v1/status` on a meta node: the whole cluster on one page.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub epoch: u64,
    pub meta_nodes: Vec<MetaNodeStatus>,
    pub members: Vec<MemberStatus>,
    pub slots: SlotSummary,
    pub totals: Totals,
    pub push_enabled: bool,
    /// Client addresses taken off by an operator.
    pub clients_off: Vec<String>,
    /// Everything that needs an operator's attention; empty when healthy.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaNodeStatus {
    pub node_id: u64,
    pub addr: String,
    pub voter: bool,
    pub leader: bool,
    /// Answered a readiness probe just now.
    pub reachable: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub id: MemberId,
    pub role: Role,
    pub addr: String,
    pub zone: String,
    /// Ms since its last lease renewal (known to the leader only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_age_ms: Option<u64>,
    pub draining: bool,
    /// Answered its status probe just now.
    pub reachable: bool,
    /// Its own readiness.
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotSummary {
    pub slot_count: u32,
    pub without_primary: usize,
    /// Copies missing against the configured count, over all slots.
    pub missing_copies: usize,
    pub per_server: Vec<SlotsOf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotsOf {
    pub id: MemberId,
    pub addr: String,
    pub primaries: usize,
    pub replicas: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub connections: i64,
    pub publishers: i64,
    pub subscribers: i64,
    pub pushes_per_sec: f64,
}

/// Where a data server stands for one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolderRole {
    Primary,
    Replica,
    /// It holds the service's slot in neither role (by its own view).
    None,
}

/// `GET /admin/v1/service?dataInfoId=...` on a data server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataServiceView {
    pub role: HolderRole,
    pub version: u64,
    pub publishers: Vec<Publisher>,
}

/// `GET /admin/v1/service?dataInfoId=...` on a session server.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionServiceView {
    /// Version of the datum in the session's cache (the newest it has pushed or will push).
    pub cached_version: Option<u64>,
    /// Publishers of this service whose clients are connected here.
    pub publishers: Vec<PublisherReport>,
    pub subscribers: Vec<SubscriberReport>,
}

/// One publisher of a service and where it comes from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublisherReport {
    pub client_id: String,
    pub regist_id: String,
    pub data: Vec<String>,
    pub version: u64,
    /// Owning session server.
    pub session: MemberId,
    /// The client's address, when its connection is open on that session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    pub app: String,
    pub zone: String,
}

/// One subscription of a service and what its client last acknowledged.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriberReport {
    pub session: MemberId,
    pub client_addr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    pub regist_id: String,
    /// Newest version the client acknowledged.
    pub acked_version: Option<u64>,
    /// Version of the push awaiting its ack.
    pub inflight_version: Option<u64>,
    /// Newer version waiting for that ack (or for pushes to be switched on).
    pub pending_version: Option<u64>,
}

/// `GET /admin/v1/services/{dataId}` on a meta node: one service across the cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReport {
    pub data_info_id: String,
    pub slot: u32,
    /// The data servers the table places the slot on, and what each holds.
    pub holders: Vec<HolderReport>,
    /// Its publishers, as the data tier's primary holds them, with owning session and client.
    pub publishers: Vec<PublisherReport>,
    /// Its subscribers on every session.
    pub subscribers: Vec<SubscriberReport>,
    /// Servers that did not answer (their part is missing above).
    pub unreachable: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HolderReport {
    pub id: MemberId,
    pub addr: String,
    /// What the table says.
    pub placed_as: HolderRole,
    /// What the server says, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<HolderRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publishers: Option<usize>,
}

/// `POST /admin/v1/push`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushSwitch {
    pub enabled: bool,
}

/// `POST /admin/v1/clients/off` and `/admin/v1/clients/on`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientAddress {
    /// The client's IP address as the sessions see it.
    pub address: String,
}

/// Query of the per-server `GET /admin/v1/service`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceQuery {
    pub data_info_id: String,
}
