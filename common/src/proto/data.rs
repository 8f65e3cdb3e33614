//! Messages to and from DataServers (HTTP/JSON, batched).
//!
//! Sessions write to a slot's primary (`/data/v1/write`), read datums and versions from any
//! holder (`/data/v1/fetch`, `/data/v1/versions`) and compare what a data server holds for
//! them (`/data/v1/session-summary`, then `/data/v1/session-publishers` for the slots that
//! differ). Data servers tell sessions about changes
//! (`/session/v1/changes`) and ship operations to replicas (`/data/v1/replicate`,
//! `/data/v1/sync`). Every request names the epoch of the slot table the caller routed by.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::id::DataInfoId;
use crate::member::MemberId;
use crate::model::{Datum, Publisher, PublisherKey, PushDatum, Tally};
use crate::slot::SlotId;

/// One write, addressed to the primary of the dataInfoId's slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum WriteOp {
    /// Adds or replaces a publisher (if it supersedes the one held). Shared with the
    /// session's own table while the write waits in its queue, not copied.
    Publish { publisher: Arc<Publisher> },
    /// Removes a publisher if it still belongs to that session connection.
    Unpublish {
        data_info_id: DataInfoId,
        key: PublisherKey,
        session: MemberId,
        conn_id: u64,
    },
}

impl WriteOp {
    pub fn data_info_id(&self) -> &DataInfoId {
        match self {
            WriteOp::Publish { publisher } => &publisher.data_info_id,
            WriteOp::Unpublish { data_info_id, .. } => data_info_id,
        }
    }
}

/// `POST /data/v1/write`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteRequest {
    pub epoch: u64,
    pub ops: Vec<WriteOp>,
    /// The highest datum version the caller has seen (0: none). The data server issues every
    /// later version above it, so a server whose clock is behind, or that restarted and lost
    /// what it issued, never goes below what sessions and clients hold.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version_floor: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Outcome of one op: the datum version after it, or why it was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl OpResult {
    pub fn ok(version: u64) -> Self {
        Self {
            version: Some(version),
            error: None,
        }
    }

    pub fn err(error: ApiError) -> Self {
        Self {
            version: None,
            error: Some(error),
        }
    }
}

/// Answer to [`WriteRequest`]: one result per op, in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteResponse {
    pub epoch: u64,
    pub results: Vec<OpResult>,
}

/// `POST /data/v1/fetch`: full datums. `POST /data/v1/versions`: versions only.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchRequest {
    pub epoch: u64,
    pub ids: Vec<DataInfoId>,
    /// Answer with [`PushDatum`]s in `compact` instead of full datums.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compact: bool,
}

/// A per-dataInfoId refusal inside a batched answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdError {
    pub data_info_id: DataInfoId,
    pub error: ApiError,
}

/// Answer to a fetch: a datum for every id this server holds (an empty one at version 0 for
/// ids never published), and an error for every id it does not hold.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchResponse {
    pub epoch: u64,
    #[serde(default)]
    pub datums: Vec<Datum>,
    /// The answer to a compact fetch.
    #[serde(default)]
    pub compact: Vec<PushDatum>,
    #[serde(default)]
    pub errors: Vec<IdError>,
}

/// One dataInfoId and its datum version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdVersion {
    pub data_info_id: DataInfoId,
    pub version: u64,
}

/// Answer to a versions query.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionsResponse {
    pub epoch: u64,
    pub versions: Vec<IdVersion>,
    #[serde(default)]
    pub errors: Vec<IdError>,
}

/// One change of one dataInfoId, as the primary tells sessions about it. A small datum rides
/// along so the session need not fetch it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub data_info_id: DataInfoId,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datum: Option<PushDatum>,
}

/// `POST /session/v1/changes`: a batch of change notifications from one data server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeBatch {
    pub from: MemberId,
    pub epoch: u64,
    pub changes: Vec<Change>,
}

/// `POST /data/v1/session-publishers`: what this data server holds, as primary, for one
/// session (reconciliation).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionPublishersRequest {
    pub epoch: u64,
    pub session: MemberId,
    /// Only these slots (empty: every slot this server is primary of).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<SlotId>,
}

/// One publisher as a digest for reconciliation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublisherDigest {
    pub data_info_id: DataInfoId,
    pub key: PublisherKey,
    pub conn_id: u64,
    pub version: u64,
    pub registered_at_ms: u64,
}

/// Answer to [`SessionPublishersRequest`]: the slots covered (asked for, primary here and
/// complete: a slot still being copied in is left out) and the digests in them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionPublishersResponse {
    pub epoch: u64,
    pub slots: Vec<SlotId>,
    pub publishers: Vec<PublisherDigest>,
}

/// `POST /data/v1/session-summary` (same request as [`SessionPublishersRequest`]): one
/// [`Tally`] per slot of what this data server holds, as primary, for the session. The
/// session asks for the publishers of a slot (`/data/v1/session-publishers`) only when the
/// tallies differ, so a pass over slots that agree costs a few bytes per slot.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummaryResponse {
    pub epoch: u64,
    /// The slots covered (asked for, primary here and completely copied in), each with its
    /// tally (empty when the session owns nothing there).
    pub slots: Vec<SlotSummary>,
}

/// One slot's [`Tally`] in a [`SessionSummaryResponse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotSummary {
    pub slot: SlotId,
    #[serde(flatten)]
    pub tally: Tally,
}

/// One change as replicas receive it: the op and the datum versions around it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpRecord {
    /// Datum version this op produced.
    pub version: u64,
    /// Datum version just before it; a replica whose version differs has a gap.
    pub prev_version: u64,
    pub op: ReplicatedOp,
}

/// What a replicated op does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum ReplicatedOp {
    Put { publisher: Arc<Publisher> },
    Remove { key: PublisherKey },
}

/// Ops (or, when the primary's log does not reach back far enough, the full datum) of one
/// dataInfoId for one replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicateItem {
    pub data_info_id: DataInfoId,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<OpRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<Datum>,
}

impl ReplicateItem {
    /// About how many bytes this item takes on the wire (payloads plus a fixed cost per
    /// publisher or op), for keeping batches under a byte budget.
    pub fn approx_bytes(&self) -> usize {
        const PER_ENTRY: usize = 256;
        let ops: usize = self
            .ops
            .iter()
            .map(|o| match &o.op {
                ReplicatedOp::Put { publisher } => publisher.payload_len() + PER_ENTRY,
                ReplicatedOp::Remove { .. } => PER_ENTRY,
            })
            .sum();
        let full: usize = self.full.as_ref().map_or(0, |d| {
            d.publishers
                .iter()
                .map(|p| p.payload_len() + PER_ENTRY)
                .sum()
        });
        PER_ENTRY + ops + full
    }
}

/// `POST /data/v1/replicate`: from a slot's primary to one of its replicas.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicateRequest {
    pub epoch: u64,
    pub from: MemberId,
    pub items: Vec<ReplicateItem>,
}

/// A replica's state of one dataInfoId after applying an item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicateAck {
    pub data_info_id: DataInfoId,
    /// The replica's datum version now.
    pub version: u64,
    /// The ops did not connect to what the replica holds: send the full datum.
    #[serde(default)]
    pub need_full: bool,
}

/// Answer to [`ReplicateRequest`]: one ack per item (refused items get an error instead).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicateResponse {
    pub epoch: u64,
    pub acks: Vec<ReplicateAck>,
    #[serde(default)]
    pub errors: Vec<IdError>,
}

/// `POST /data/v1/sync`: a server that gained a slot at `epoch` asks a previous or current
/// holder for everything it has of the slot. The source first catches up to `epoch`, so it
/// takes no more writes for the slot if it lost it, and the copy misses nothing it accepted.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRequest {
    pub epoch: u64,
    pub slot: SlotId,
    pub requester: MemberId,
}

/// Answer to [`SyncRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncResponse {
    pub epoch: u64,
    pub slot: SlotId,
    pub datums: Vec<Datum>,
    /// The source held the slot completely. `false`: it is itself still copying the slot in
    /// and sent what it has so far.
    #[serde(default = "complete_by_default")]
    pub complete: bool,
}

fn complete_by_default() -> bool {
    true
}
