//! Who may serve what: the slot table of the epoch this server acts on.
//!
//! Writes are accepted only by the slot's primary; reads by any holder. Anything else is
//! refused with a typed error that tells the caller our epoch and the owner's address, so it
//! can refresh its table and retry there. A caller on a newer epoch than ours gets
//! `StaleEpoch` (retryable) and makes us refresh.

use registry_common::id::DataInfoId;
use registry_common::member::{ClusterView, MemberId};
use registry_common::slot::{slot_of, SlotId};

use crate::error::DataError;

/// What a request needs from the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Writes: primary only.
    Primary,
    /// Reads: primary or replica.
    Holder,
}

/// Checks that `me` may serve `id` with `access` under `view`, for a caller on `caller_epoch`.
pub fn check(
    view: &ClusterView,
    me: &MemberId,
    id: &DataInfoId,
    caller_epoch: u64,
    access: Access,
) -> Result<SlotId, DataError> {
    let slot = slot_of(id, view.slots.slot_count());
    if caller_epoch > view.epoch {
        // The caller knows a newer table, which may no longer make us the slot's holder:
        // serving it from ours could accept a write for a slot we lost, or answer with data
        // that moved on.
        return Err(DataError::StaleEpoch {
            caller: caller_epoch,
            ours: view.epoch,
        });
    }
    let Some(assignment) = view.slots.get(slot) else {
        return Err(DataError::NotOwner {
            slot,
            epoch: view.epoch,
            owner_addr: None,
        });
    };
    let ok = match access {
        Access::Primary => assignment.primary.as_ref() == Some(me),
        Access::Holder => assignment.holds(me),
    };
    if ok {
        return Ok(slot);
    }
    Err(DataError::NotOwner {
        slot,
        epoch: view.epoch,
        owner_addr: assignment
            .primary
            .as_ref()
            .and_then(|p| view.addr_of(p))
            .map(str::to_owned),
    })
}
