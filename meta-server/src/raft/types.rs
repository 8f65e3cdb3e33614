//! The openraft type configuration of the MetaServer and short names for the openraft types
//! the rest of [`crate::raft`] uses.
//!
//! This file owns the choice of every pluggable openraft type: node ids are `u64`, nodes are
//! [`openraft::BasicNode`] (`addr` = the `host:port` of the meta node's HTTP server), log
//! entries carry a [`MetaRequest`] (a command and an optional epoch guard) and applying one
//! yields a [`MetaResponse`], on the tokio runtime openraft ships with.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::state::{MetaCommand, MetaResponse};

/// The id of a meta node in the Raft group.
pub type NodeId = u64;

/// The log payload: one [`MetaCommand`], optionally guarded by the epoch it was decided on.
///
/// On disk and on the wire it is the command's own JSON (`{"cmd": "register", ...}`) with an
/// optional `expectEpoch` field next to the tag, so entries written before the guard existed
/// decode unchanged. A guarded request whose `expect_epoch` is not the epoch of the state it is
/// applied to changes nothing (see [`crate::raft::StateMachineStore`]): the check runs inside
/// the state machine, in log order, so no other write can slip between check and change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaRequest {
    /// The change itself.
    #[serde(flatten)]
    pub cmd: MetaCommand,
    /// Apply only if the state's epoch is exactly this (compare-and-set for operators who
    /// decided on a view of that epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_epoch: Option<u64>,
}

impl MetaRequest {
    /// An unconditional request.
    pub fn new(cmd: MetaCommand) -> Self {
        Self {
            cmd,
            expect_epoch: None,
        }
    }

    /// A request applied only while the epoch is `epoch`.
    pub fn if_epoch(cmd: MetaCommand, epoch: u64) -> Self {
        Self {
            cmd,
            expect_epoch: Some(epoch),
        }
    }
}

impl fmt::Display for MetaRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cmd {
            MetaCommand::Register { member, now_ms } => {
                write!(
                    f,
                    "register({} {} at {}, t={})",
                    member.id.as_str(),
                    member.role.as_str(),
                    member.addr,
                    now_ms
                )?;
            }
            MetaCommand::Remove { ids, reason } => {
                let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
                write!(f, "remove({ids:?}, {reason})")?;
            }
            MetaCommand::SetDraining { ids, draining } => {
                let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
                write!(f, "set_draining({ids:?}, {draining})")?;
            }
            MetaCommand::UpdateSettings { .. } => write!(f, "update_settings")?,
            MetaCommand::SetPushEnabled { enabled } => write!(f, "set_push_enabled({enabled})")?,
            MetaCommand::SetClientOff { address, off } => {
                write!(f, "set_client_off({address}, {off})")?
            }
            MetaCommand::AclPut { name, .. } => write!(f, "acl_put({name})")?,
            MetaCommand::AclDelete { name } => write!(f, "acl_delete({name})")?,
            MetaCommand::AclAddKey { principal, key } => {
                write!(f, "acl_add_key({principal}, {})", key.id)?
            }
            MetaCommand::AclRevokeKey { key_id } => write!(f, "acl_revoke_key({key_id})")?,
            MetaCommand::AclBootstrap { name, key } => {
                write!(f, "acl_bootstrap({name}, {})", key.id)?
            }
        }
        match self.expect_epoch {
            Some(epoch) => write!(f, " if epoch={epoch}"),
            None => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use registry_common::member::MemberId;

    #[test]
    fn unguarded_requests_keep_the_command_wire_form() {
        let cmd = MetaCommand::Remove {
            ids: vec![MemberId("d1".into())],
            reason: "left".into(),
        };
        let plain = serde_json::to_value(&cmd).expect("encode");
        let req = MetaRequest::new(cmd.clone());
        assert_eq!(serde_json::to_value(&req).expect("encode"), plain);
        // An entry written before the guard existed decodes as unguarded.
        let back: MetaRequest = serde_json::from_value(plain).expect("decode");
        assert_eq!(back, req);

        let guarded = MetaRequest::if_epoch(cmd, 7);
        let json = serde_json::to_value(&guarded).expect("encode");
        assert_eq!(json["expectEpoch"], 7);
        assert_eq!(json["cmd"], "remove");
        let back: MetaRequest = serde_json::from_value(json).expect("decode");
        assert_eq!(back, guarded);
        assert!(guarded.to_string().ends_with("if epoch=7"));
    }
}
