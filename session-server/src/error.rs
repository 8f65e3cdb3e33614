//! Errors a session answers clients with, and their wire codes.

use registry_common::error::{ApiError, ErrorCode};
use registry_common::id::IdError;
use registry_common::model::PublisherError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("send `hello` first")]
    NoHello,
    #[error("`hello` was already received on this connection")]
    DuplicateHello,
    #[error("protocol version {0} is not supported (this server speaks {1} to {2})")]
    Protocol(u32, u32, u32),
    #[error(transparent)]
    InvalidId(#[from] IdError),
    #[error(transparent)]
    InvalidPublisher(#[from] PublisherError),
    #[error("no {what} `{regist_id}` on this connection")]
    Unknown {
        what: &'static str,
        regist_id: String,
    },
    #[error("client is not allowed: {0}")]
    Forbidden(String),
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The connection (or session) holds as much as its cap allows.
    #[error("limit reached: {0}")]
    LimitExceeded(String),
    /// The connection registers faster than its rate limit.
    #[error("too many registrations per second on this connection; slow down")]
    RateLimited,
    #[error("this session server is shutting down; connect to another")]
    ShuttingDown,
    /// A registration that does not move the publisher's version forward: lower than the
    /// one held, or the same with other data.
    #[error("publisher `{regist_id}` is at version {held}; {why}")]
    StaleVersion {
        regist_id: String,
        held: u64,
        why: &'static str,
    },
}

impl SessionError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SessionError::NoHello
            | SessionError::DuplicateHello
            | SessionError::StaleVersion { .. } => ErrorCode::FailedPrecondition,
            SessionError::Protocol(..) => ErrorCode::UnsupportedProtocol,
            SessionError::InvalidId(_) | SessionError::InvalidPublisher(_) => {
                ErrorCode::InvalidArgument
            }
            SessionError::Unknown { .. } => ErrorCode::NotFound,
            SessionError::Forbidden(_) => ErrorCode::Forbidden,
            SessionError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            SessionError::LimitExceeded(_) => ErrorCode::LimitExceeded,
            SessionError::RateLimited => ErrorCode::RateLimited,
            SessionError::ShuttingDown => ErrorCode::Unavailable,
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> ApiError {
        ApiError::new(e.code(), e.to_string())
    }
}
