//! The openraft type configuration of the MetaServer and short names for the openraft types
//! the rest of [`crate::raft`] uses.
//!
//! This file owns the choice of every pluggable openraft type: node ids are `u64`, nodes are
//! [`openraft::BasicNode`] (`addr` = the `host:port` of the meta node's HTTP server), log
//! entries carry a [`MetaRequest`] and applying one yields a [`MetaResponse`], on the tokio
//! runtime openraft ships with.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::state::{MetaCommand, MetaResponse};

/// The id of a meta node in the Raft group.
pub type NodeId = u64;

/// The log payload: one [`MetaCommand`].
///
/// A newtype because openraft wants its application data to implement `Display` (for its
/// logs), which `MetaCommand` does not. `serde(transparent)` keeps the wire and disk form the
/// same as the command's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MetaRequest(pub MetaCommand);

impl fmt::Display for MetaRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            MetaCommand::Register { member, now_ms } => {
                write!(
                    f,
                    "register({} {} at {}, t={})",
                    member.id.as_str(),
                    member.role.as_str(),
                    member.addr,
                    now_ms
                )
            }
            MetaCommand::Remove { ids, reason } => {
                let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
                write!(f, "remove({ids:?}, {reason})")
            }
            MetaCommand::SetDraining { ids, draining } => {
                let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
                write!(f, "set_draining({ids:?}, {draining})")
            }
            MetaCommand::UpdateSettings { .. } => write!(f, "update_settings"),
        }
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration of the MetaServer.
    pub TypeConfig:
        D = MetaRequest,
        R = MetaResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

/// A log position: (leader's term and id, index).
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A vote (term, candidate, committed?).
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A membership config with the log id that introduced it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// What a snapshot covers: last log id and membership.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot: its meta and the whole [`crate::state::MetaState`].
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, crate::state::MetaState>;
/// The openraft node handle, with our state machine type.
pub type Raft = openraft::Raft<TypeConfig, crate::raft::state_machine::StateMachineStore>;
