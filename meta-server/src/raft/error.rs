//! [`RaftError`]: the one error type [`crate::raft::MetaRaft`] returns, and the translation of
//! openraft's many error types into it.
//!
//! Callers outside this module never see an openraft type: they match on `NotLeader` (retry at
//! the leader), `Timeout` (outcome unknown), and so on, and map to a wire code with
//! [`RaftError::code`].

use registry_common::error::ErrorCode;

use crate::raft::types::{NodeId, TypeConfig};

/// What went wrong with a Raft operation.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// This node is not the leader. `leader_id`/`leader_addr` say where the leader is, when
    /// this node knows (the address is the leader's `host:port` from the membership config).
    #[error("not the leader; leader: {leader_id:?} at {leader_addr:?}")]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    /// Leadership changed while the command was in flight: it may or may not have been
    /// committed. Safe to retry at the new leader because every `MetaCommand` is idempotent.
    #[error("leadership changed while proposing; outcome unknown; leader: {leader_id:?} at {leader_addr:?}")]
    Discarded {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    /// The leader could not confirm its leadership with a quorum (read barrier).
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// A membership change or initialisation was refused (one in progress, unknown learner,
    /// this node not among the voters, ...).
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The disk (redb) failed or holds data we cannot decode.
    #[error("storage: {0}")]
    Storage(String),
    /// The Raft node stopped (shut down, or halted on a storage error or a bug).
    #[error("raft stopped: {0}")]
    Fatal(String),
    /// The operation did not finish in time; a write may still commit later.
    #[error("raft operation timed out")]
    Timeout,
    /// Anything else (bad configuration, HTTP client setup, ...).
    #[error("{0}")]
    Other(String),
}

impl RaftError {
    /// The wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            RaftError::NotLeader { .. } | RaftError::Discarded { .. } => ErrorCode::NotLeader,
            RaftError::NoQuorum(_) | RaftError::Fatal(_) => ErrorCode::Unavailable,
            RaftError::Membership(_) => ErrorCode::FailedPrecondition,
            RaftError::Timeout => ErrorCode::Timeout,
            RaftError::Storage(_) | RaftError::Other(_) => ErrorCode::Internal,
        }
    }

    /// The leader's address, when this error points at one.
    pub fn leader_addr(&self) -> Option<&str> {
        match self {
            RaftError::NotLeader { leader_addr, .. } | RaftError::Discarded { leader_addr, .. } => {
                leader_addr.as_deref()
            }
            _ => None,
        }
    }

    pub(crate) fn not_leader(f: openraft::errors::ForwardToLeader<TypeConfig>) -> Self {
        RaftError::NotLeader {
            leader_id: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.addr),
        }
    }

    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        RaftError::Storage(e.to_string())
    }
}

impl From<openraft::errors::Fatal<TypeConfig>> for RaftError {
    fn from(f: openraft::errors::Fatal<TypeConfig>) -> Self {
        match f {
            openraft::errors::Fatal::StorageError(e) => RaftError::Storage(e.to_string()),
            other => RaftError::Fatal(other.to_string()),
        }
    }
}

impl From<openraft::errors::RaftError<TypeConfig>> for RaftError {
    fn from(e: openraft::errors::RaftError<TypeConfig>) -> Self {
        match e {
            openraft::errors::RaftError::APIError(never) => match never {},
            openraft::errors::RaftError::Fatal(f) => f.into(),
        }
    }
}

impl From<openraft::errors::RaftError<TypeConfig, openraft::errors::ClientWriteError<TypeConfig>>>
    for RaftError
{
    fn from(
        e: openraft::errors::RaftError<TypeConfig, openraft::errors::ClientWriteError<TypeConfig>>,
    ) -> Self {
        use openraft::errors::ClientWriteError as W;
        match e {
            openraft::errors::RaftError::Fatal(f) => f.into(),
            openraft::errors::RaftError::APIError(api) => match api {
                W::ForwardToLeader(f) => RaftError::not_leader(f),
                W::LogEntryDiscarded(f) => RaftError::Discarded {
                    leader_id: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.addr),
                },
                W::ChangeMembershipError(m) => RaftError::Membership(m.to_string()),
                W::PreconditionFailed(p) => RaftError::Other(p.to_string()),
            },
        }
    }
}

impl
    From<
        openraft::errors::RaftError<
            TypeConfig,
            openraft::errors::LinearizableReadError<TypeConfig>,
        >,
    > for RaftError
{
    fn from(
        e: openraft::errors::RaftError<
            TypeConfig,
            openraft::errors::LinearizableReadError<TypeConfig>,
        >,
    ) -> Self {
        use openraft::errors::LinearizableReadError as L;
        match e {
            openraft::errors::RaftError::Fatal(f) => f.into(),
            openraft::errors::RaftError::APIError(L::ForwardToLeader(f)) => {
                RaftError::not_leader(f)
            }
            openraft::errors::RaftError::APIError(L::QuorumNotEnough(q)) => {
                RaftError::NoQuorum(q.to_string())
            }
        }
    }
}

impl From<openraft::errors::RaftError<TypeConfig, openraft::errors::InitializeError<TypeConfig>>>
    for RaftError
{
    fn from(
        e: openraft::errors::RaftError<TypeConfig, openraft::errors::InitializeError<TypeConfig>>,
    ) -> Self {
        use openraft::errors::InitializeError as I;
        match e {
            openraft::errors::RaftError::Fatal(f) => f.into(),
            openraft::errors::RaftError::APIError(I::NotAllowed(n)) => {
                RaftError::Membership(n.to_string())
            }
            openraft::errors::RaftError::APIError(I::NotInMembers(n)) => {
                RaftError::Membership(n.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let e = RaftError::NotLeader {
            leader_id: Some(2),
            leader_addr: Some("127.0.0.1:1".into()),
        };
        assert_eq!(e.code(), ErrorCode::NotLeader);
        assert_eq!(e.leader_addr(), Some("127.0.0.1:1"));
        assert_eq!(RaftError::Timeout.code(), ErrorCode::Timeout);
        assert_eq!(RaftError::Storage("x".into()).code(), ErrorCode::Internal);
        assert_eq!(RaftError::Fatal("x".into()).code(), ErrorCode::Unavailable);
    }
}
