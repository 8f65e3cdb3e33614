//! Errors the SDK returns.

use registry_common::error::ApiError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SdkError {
    /// No session server could be reached within the connect timeout.
    #[error("cannot connect to any session server: {0}")]
    Connect(String),
    /// The session refused the request.
    #[error("session refused the request: {0}")]
    Server(ApiError),
    /// No answer within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The client was closed.
    #[error("client is closed")]
    Closed,
    /// A local check failed before anything was sent.
    #[error("invalid argument: {0}")]
    Invalid(String),
}
