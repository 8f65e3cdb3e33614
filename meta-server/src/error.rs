//! Errors of the meta API and their wire codes.

use registry_common::error::{ApiError, ErrorCode};
use registry_common::member::MemberId;

use crate::raft::RaftError;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error(transparent)]
    Raft(#[from] RaftError),
    #[error("unknown member {0}")]
    UnknownMember(MemberId),
    /// A meta node id that is neither a voter nor a learner.
    #[error("unknown meta node {0}")]
    UnknownNode(u64),
    /// A conditional write decided on an epoch the cluster has left.
    #[error("the epoch is {current}, not the expected {expected}")]
    StaleEpoch { expected: u64, current: u64 },
    #[error("invalid request: {0}")]
    Invalid(String),
    /// An ACL principal or key that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A well-formed request the cluster's current state does not allow.
    #[error("refused: {0}")]
    Precondition(String),
}

impl MetaError {
    pub fn code(&self) -> ErrorCode {
        match self {
            MetaError::Raft(e) => e.code(),
            MetaError::UnknownMember(_) | MetaError::UnknownNode(_) | MetaError::NotFound(_) => {
                ErrorCode::NotFound
            }
            MetaError::StaleEpoch { .. } => ErrorCode::StaleEpoch,
            MetaError::Invalid(_) => ErrorCode::InvalidArgument,
            MetaError::Precondition(_) => ErrorCode::FailedPrecondition,
        }
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> ApiError {
        let api = ApiError::new(e.code(), e.to_string());
        match &e {
            MetaError::Raft(r) => match r.leader_addr() {
                Some(addr) => api.with_redirect(addr),
                None => api,
            },
            MetaError::StaleEpoch { current, .. } => api.with_epoch(*current),
            _ => api,
        }
    }
}
