//! Error codes every API answers with, and the one place they map to HTTP statuses.
//!
//! Each library has its own `thiserror` enum (`DataError`, `MetaError`, `SessionError`, ...)
//! that names the domain's failures; each maps to an [`ErrorCode`], and an [`ApiError`]
//! (code + message + the routing hints a caller needs) is what crosses the wire, in an HTTP
//! body or a WebSocket `error` frame.

use serde::{Deserialize, Serialize};

use crate::id::IdError;

/// Stable, machine-readable error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not valid JSON, or not the shape the message requires.
    Malformed,
    /// A well-formed message of a type this server does not know.
    UnknownMessage,
    /// A field failed validation (ids, sizes, counts).
    InvalidArgument,
    /// The body or frame is larger than the configured maximum.
    PayloadTooLarge,
    /// The client speaks a protocol version this server does not.
    UnsupportedProtocol,
    /// The request needs a prior step (e.g. `hello` before registering).
    FailedPrecondition,
    /// No credential, or one that does not verify (unknown key, bad signature, expired
    /// timestamp, replayed nonce).
    Unauthenticated,
    /// The caller is not allowed to do this (blacklisted, not authorised).
    Forbidden,
    /// The referenced thing does not exist (member, subscription, push).
    NotFound,
    /// This server does not own the slot for the caller's epoch; retry at `owner`.
    NotOwner,
    /// The slot is moving to this server and is not ready; retry shortly.
    Migrating,
    /// The caller acts on an epoch older than this server's; refresh and retry.
    StaleEpoch,
    /// This meta node is not the leader; retry at `leader`.
    NotLeader,
    /// Too much in flight; back off and retry.
    Overloaded,
    /// The caller sends faster than its rate limit; back off and retry.
    RateLimited,
    /// The caller holds as much as its cap allows (publishers, subscriptions, connections);
    /// retrying will not help until it releases some.
    LimitExceeded,
    /// A dependency did not answer in time.
    Timeout,
    /// A dependency is not reachable or not ready.
    Unavailable,
    /// A bug or an unexpected failure of our own.
    Internal,
}

impl ErrorCode {
    /// The code as it is spelled on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownMessage => "unknown_message",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedProtocol => "unsupported_protocol",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotOwner => "not_owner",
            ErrorCode::Migrating => "migrating",
            ErrorCode::StaleEpoch => "stale_epoch",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status of every error carrying this code. The only such map in the project.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Malformed
            | ErrorCode::UnknownMessage
            | ErrorCode::InvalidArgument
            | ErrorCode::UnsupportedProtocol => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::StaleEpoch | ErrorCode::FailedPrecondition => 409,
            ErrorCode::NotOwner | ErrorCode::NotLeader => 421,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Overloaded | ErrorCode::RateLimited | ErrorCode::LimitExceeded => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Migrating | ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
        }
    }

    /// Whether a caller should retry the same request (after a refresh or a backoff).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::NotOwner
                | ErrorCode::Migrating
                | ErrorCode::StaleEpoch
                | ErrorCode::NotLeader
                | ErrorCode::Overloaded
                | ErrorCode::RateLimited
                | ErrorCode::Timeout
                | ErrorCode::Unavailable
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as it crosses the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The epoch the answering server acts on (routing errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Where to go instead: the slot's owner, or the meta leader's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            epoch: None,
            redirect: None,
        }
    }

    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = Some(epoch);
        self
    }

    pub fn with_redirect(mut self, to: impl Into<String>) -> Self {
        self.redirect = Some(to.into());
        self
    }

    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }
}

impl From<IdError> for ApiError {
    fn from(e: IdError) -> Self {
        ApiError::new(ErrorCode::InvalidArgument, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let e = ApiError::new(ErrorCode::NotOwner, "slot 3 is owned by d2")
            .with_epoch(7)
            .with_redirect("127.0.0.1:9622");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["code"], "not_owner");
        assert_eq!(json["epoch"], 7);
        assert_eq!(e.http_status(), 421);
        let back: ApiError = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn display_spells_the_wire_code() {
        for code in [
            ErrorCode::UnknownMessage,
            ErrorCode::Unauthenticated,
            ErrorCode::LimitExceeded,
            ErrorCode::StaleEpoch,
        ] {
            let wire = serde_json::to_value(code).unwrap();
            assert_eq!(wire, code.as_str());
            assert_eq!(code.to_string(), code.as_str());
        }
    }
}
