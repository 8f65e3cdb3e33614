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
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl MetaError {
    pub fn code(&self) -> ErrorCode {
        match self {
            MetaError::Raft(e) => e.code(),
            MetaError::UnknownMember(_) => ErrorCode::NotFound,
            MetaError::Invalid(_) => ErrorCode::InvalidArgument,
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
            _ => api,
        }
    }
}
