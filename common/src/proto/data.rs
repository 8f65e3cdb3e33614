//! Messages to and from DataServers (HTTP/JSON, batched).
//!
//! Sessions write to a slot's primary (`/data/v1/write`), read datums and versions from any
//! holder (`/data/v1/fetch`, `/data/v1/versions`) and compare what a data server holds for
//! them (`/data/v1/session-publishers`). Data servers tell sessions about changes
//! (`/session/v1/changes`) and ship operations to replicas (`/data/v1/replicate`,
//! `/data/v1/sync`). Every request names the epoch of the slot table the caller routed by.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::id::DataInfoId;
use crate::member::MemberId;
use crate::model::{Datum, Publisher, PublisherKey};
use crate::slot::SlotId;

/// One write, addressed to the primary of the dataInfoId's slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum WriteOp {
    /// Adds or replaces a publisher (if it supersedes the one held).
    Publish { publisher: Publisher },
    /// Removes a publisher if it still belongs to that session connection.
    Unpublish {
        data_info_id: DataInfoId,
        #[serde(flatten)]
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
    pub datums: Vec<Datum>,
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
    pub datum: Option<Datum>,
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
}

/// One publisher as a digest for reconciliation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublisherDigest {
    pub data_info_id: DataInfoId,
    #[serde(flatten)]
    pub key: PublisherKey,
    pub conn_id: u64,
    pub version: u64,
    pub registered_at_ms: u64,
}

/// Answer to [`SessionPublishersRequest`]: digests grouped by the slots this server is
/// primary of at `epoch`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionPublishersResponse {
    pub epoch: u64,
    pub slots: Vec<SlotId>,
    pub publishers: Vec<PublisherDigest>,
}
