//! Errors of the data tier and their wire codes.

use registry_common::error::{ApiError, ErrorCode};
use registry_common::slot::SlotId;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DataError {
    /// Another server is the primary (or holder) of the slot at our epoch.
    #[error("slot {slot} is not owned by this server at epoch {epoch}")]
    NotOwner {
        slot: SlotId,
        epoch: u64,
        owner_addr: Option<String>,
    },
    /// The caller routed by a newer table than ours; we are refreshing.
    #[error("caller epoch {caller} is newer than this server's epoch {ours}")]
    StaleEpoch { caller: u64, ours: u64 },
    /// The slot is being synced to this server and does not take writes yet.
    #[error("slot {slot} is migrating to this server")]
    Migrating { slot: SlotId, epoch: u64 },
    /// A batch over the configured limit.
    #[error("batch of {len} items exceeds the limit of {max}")]
    BatchTooLarge { len: usize, max: usize },
    /// A publisher that fails validation.
    #[error("invalid publisher: {0}")]
    Invalid(String),
}

impl DataError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DataError::NotOwner { .. } => ErrorCode::NotOwner,
            DataError::StaleEpoch { .. } => ErrorCode::StaleEpoch,
            DataError::Migrating { .. } => ErrorCode::Migrating,
            DataError::BatchTooLarge { .. } => ErrorCode::PayloadTooLarge,
            DataError::Invalid(_) => ErrorCode::InvalidArgument,
        }
    }
}

impl From<DataError> for ApiError {
    fn from(e: DataError) -> ApiError {
        let api = ApiError::new(e.code(), e.to_string());
        match e {
            DataError::NotOwner {
                epoch, owner_addr, ..
            } => {
                let api = api.with_epoch(epoch);
                match owner_addr {
                    Some(a) => api.with_redirect(a),
                    None => api,
                }
            }
            DataError::StaleEpoch { ours, .. } => api.with_epoch(ours),
            DataError::Migrating { epoch, .. } => api.with_epoch(epoch),
            _ => api,
        }
    }
}
