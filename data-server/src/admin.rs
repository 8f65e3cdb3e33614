//! The data server's part of the admin API (`/admin/v1/...`, `docs/admin-api.md`) and its
//! readiness.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/admin/v1/status` | [`DataStatus`]: slots by role and phase, counts, readiness |
//! | GET | `/admin/v1/service?dataInfoId=...` | [`DataServiceView`]: its role for the service's slot, version, publishers |
//!
//! Ready means it can do its job: a member of the view with a slot table, no gained slot
//! still being copied in, and not being drained.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use registry_common::error::{ApiError, ErrorCode};
use registry_common::id::DataInfoId;
use registry_common::proto::admin::{DataServiceView, DataStatus, HolderRole, ServiceQuery};
use registry_common::slot::SlotId;
use registry_rpc::server::ApiQuery;
use registry_rpc::{ApiJson, ErrorReply};

use crate::server::DataState;

pub fn router(state: Arc<DataState>) -> Router {
    Router::new()
        .route("/admin/v1/status", get(status))
        .route("/admin/v1/service", get(service))
        .with_state(state)
}

/// The server's status and readiness.
pub fn status_of(s: &DataState) -> DataStatus {
    let view = s.membership.view();
    let counts = s.store.slot_counts();
    let is_primary = |slot: usize| {
        view.slots
            .get(slot as SlotId)
            .is_some_and(|a| a.primary.as_ref() == Some(&s.id))
    };
    let primary_slots = (0..counts.len()).filter(|i| is_primary(*i)).count();
    let replica_slots = view
        .slots
        .slots
        .iter()
        .filter(|a| a.replicas.contains(&s.id))
        .count();
    let (syncing, _, retained) = s.slots.counts();
    let draining = view.draining.contains(&s.id);
    let not_ready = if !view.members.contains_key(&s.id) {
        Some("not a member of the cluster view".to_string())
    } else if s.fenced() {
        Some("fenced: its lease may have expired, waiting to rejoin".to_string())
    } else if view.epoch == 0 {
        Some("no slot table yet".to_string())
    } else if syncing > 0 {
        Some(format!("{syncing} slots still being copied in"))
    } else if draining {
        Some("draining".to_string())
    } else {
        None
    };
    DataStatus {
        id: s.id.to_string(),
        epoch: view.epoch,
        ready: not_ready.is_none(),
        not_ready,
        primary_slots,
        replica_slots,
        syncing_slots: syncing,
        retained_slots: retained,
        data_info_ids: counts.iter().map(|c| c.0).sum(),
        publishers: counts.iter().map(|c| c.1).sum(),
        primary_publishers: counts
            .iter()
            .enumerate()
            .filter(|(i, _)| is_primary(*i))
            .map(|(_, c)| c.1)
            .sum(),
        draining,
    }
}

async fn status(State(s): State<Arc<DataState>>) -> ApiJson<DataStatus> {
    ApiJson(status_of(&s))
}

/// `GET /ready`: 200 when ready, otherwise `unavailable` (503) with the reason.
pub async fn ready(State(s): State<Arc<DataState>>) -> Response {
    match status_of(&s).not_ready {
        None => "ready".into_response(),
        Some(why) => ErrorReply(ApiError::new(ErrorCode::Unavailable, why)).into_response(),
    }
}

async fn service(
    State(s): State<Arc<DataState>>,
    ApiQuery(q): ApiQuery<ServiceQuery>,
) -> Result<ApiJson<DataServiceView>, ErrorReply> {
    let id = DataInfoId::parse(&q.data_info_id)?;
    let view = s.membership.view();
    let role = match view.slots.assignment_of(&id) {
        Some(a) if a.primary.as_ref() == Some(&s.id) => HolderRole::Primary,
        Some(a) if a.replicas.contains(&s.id) => HolderRole::Replica,
        _ => HolderRole::None,
    };
    let datum = s.store.datum(&id);
    Ok(ApiJson(DataServiceView {
        role,
        version: datum.version,
        publishers: datum.publishers,
    }))
}
