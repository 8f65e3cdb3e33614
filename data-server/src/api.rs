//! HTTP endpoints of a data server.
//!
//! | method | path | body -> answer |
//! |---|---|---|
//! | POST | `/data/v1/write` | `WriteRequest` -> `WriteResponse` (primary only, per op) |
//! | POST | `/data/v1/fetch` | `FetchRequest` -> `FetchResponse` (any holder) |
//! | POST | `/data/v1/versions` | `FetchRequest` -> `VersionsResponse` (any holder) |
//! | POST | `/data/v1/session-publishers` | `SessionPublishersRequest` -> `SessionPublishersResponse` |
//! | GET | `/data/v1/status` | counts per slot, epoch |
//! | GET | `/health`, `/ready`, `/metrics` | liveness, readiness, Prometheus |

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::Router;
use registry_common::proto::data::{
    FetchRequest, FetchResponse, IdError, IdVersion, OpResult, SessionPublishersRequest,
    SessionPublishersResponse, VersionsResponse, WriteOp, WriteRequest, WriteResponse,
};
use registry_common::slot::SlotId;
use registry_rpc::server::not_found;
use registry_rpc::{ApiJson, ErrorReply};
use serde::Serialize;

use crate::error::DataError;
use crate::routing::{check, Access};
use crate::server::DataState;

pub fn router(state: Arc<DataState>) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/data/v1/write", post(write))
        .route("/data/v1/fetch", post(fetch))
        .route("/data/v1/versions", post(versions))
        .route("/data/v1/session-publishers", post(session_publishers))
        .route("/data/v1/status", get(status))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(|| async { "ready" }))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

fn check_batch(len: usize, max: usize) -> Result<(), ErrorReply> {
    if len > max {
        return Err(DataError::BatchTooLarge { len, max }.into());
    }
    Ok(())
}

async fn write(
    State(s): State<Arc<DataState>>,
    ApiJson(req): ApiJson<WriteRequest>,
) -> Result<ApiJson<WriteResponse>, ErrorReply> {
    check_batch(req.ops.len(), s.config.max_batch)?;
    let view = s.membership.view();
    let mut changed = Vec::new();
    let mut results = Vec::with_capacity(req.ops.len());
    for op in req.ops {
        if let Err(e) = check(&view, &s.id, op.data_info_id(), req.epoch, Access::Primary) {
            if matches!(e, DataError::StaleEpoch { .. }) {
                s.refresh_view();
            }
            s.metrics.writes.with_label_values(&["refused"]).inc();
            results.push(OpResult::err(e.into()));
            continue;
        }
        let (id, applied) = match op {
            WriteOp::Publish { publisher } => {
                if let Err(e) = publisher.validate() {
                    s.metrics.writes.with_label_values(&["refused"]).inc();
                    results.push(OpResult::err(DataError::Invalid(e.to_string()).into()));
                    continue;
                }
                let id = publisher.data_info_id.clone();
                (id, s.store.publish(publisher))
            }
            WriteOp::Unpublish {
                data_info_id,
                key,
                session,
                conn_id,
            } => {
                let applied = s.store.unpublish(&data_info_id, &key, &session, conn_id);
                (data_info_id, applied)
            }
        };
        let outcome = if applied.changed {
            "changed"
        } else {
            "unchanged"
        };
        s.metrics.writes.with_label_values(&[outcome]).inc();
        if applied.changed {
            changed.push((id, applied.version));
        }
        results.push(OpResult::ok(applied.version));
    }
    s.on_changed(&changed);
    Ok(ApiJson(WriteResponse {
        epoch: view.epoch,
        results,
    }))
}

async fn fetch(
    State(s): State<Arc<DataState>>,
    ApiJson(req): ApiJson<FetchRequest>,
) -> Result<ApiJson<FetchResponse>, ErrorReply> {
    check_batch(req.ids.len(), s.config.max_batch)?;
    let view = s.membership.view();
    let mut datums = Vec::with_capacity(req.ids.len());
    let mut errors = Vec::new();
    for id in req.ids {
        match check(&view, &s.id, &id, req.epoch, Access::Holder) {
            Ok(_) => datums.push(s.store.datum(&id)),
            Err(e) => errors.push(IdError {
                data_info_id: id,
                error: e.into(),
            }),
        }
    }
    Ok(ApiJson(FetchResponse {
        epoch: view.epoch,
        datums,
        errors,
    }))
}

async fn versions(
    State(s): State<Arc<DataState>>,
    ApiJson(req): ApiJson<FetchRequest>,
) -> Result<ApiJson<VersionsResponse>, ErrorReply> {
    check_batch(req.ids.len(), s.config.max_batch)?;
    let view = s.membership.view();
    let mut versions = Vec::with_capacity(req.ids.len());
    let mut errors = Vec::new();
    for id in req.ids {
        match check(&view, &s.id, &id, req.epoch, Access::Holder) {
            Ok(_) => versions.push(IdVersion {
                version: s.store.version(&id),
                data_info_id: id,
            }),
            Err(e) => errors.push(IdError {
                data_info_id: id,
                error: e.into(),
            }),
        }
    }
    Ok(ApiJson(VersionsResponse {
        epoch: view.epoch,
        versions,
        errors,
    }))
}

async fn session_publishers(
    State(s): State<Arc<DataState>>,
    ApiJson(req): ApiJson<SessionPublishersRequest>,
) -> Result<ApiJson<SessionPublishersResponse>, ErrorReply> {
    let view = s.membership.view();
    if req.epoch > view.epoch {
        s.refresh_view();
        return Err(DataError::StaleEpoch {
            caller: req.epoch,
            ours: view.epoch,
        }
        .into());
    }
    let slots: Vec<SlotId> = (0..view.slots.slot_count())
        .filter(|slot| {
            view.slots
                .get(*slot)
                .is_some_and(|a| a.primary.as_ref() == Some(&s.id))
        })
        .collect();
    let publishers = s
        .store
        .session_digests(&req.session, |slot| slots.binary_search(&slot).is_ok());
    Ok(ApiJson(SessionPublishersResponse {
        epoch: view.epoch,
        slots,
        publishers,
    }))
}

/// Answer of `/data/v1/status`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    id: String,
    epoch: u64,
    /// Slots this server is primary of.
    primary_slots: usize,
    /// Slots this server holds as replica.
    replica_slots: usize,
    data_info_ids: usize,
    /// Publishers held (every slot this server holds).
    publishers: usize,
}

async fn status(State(s): State<Arc<DataState>>) -> ApiJson<Status> {
    let view = s.membership.view();
    let counts = s.store.slot_counts();
    let primary_slots = view
        .slots
        .slots
        .iter()
        .filter(|a| a.primary.as_ref() == Some(&s.id))
        .count();
    let replica_slots = view
        .slots
        .slots
        .iter()
        .filter(|a| a.replicas.contains(&s.id))
        .count();
    ApiJson(Status {
        id: s.id.to_string(),
        epoch: view.epoch,
        primary_slots,
        replica_slots,
        data_info_ids: counts.iter().map(|c| c.0).sum(),
        publishers: counts.iter().map(|c| c.1).sum(),
    })
}

async fn metrics(State(s): State<Arc<DataState>>) -> String {
    registry_rpc::metrics::render(&s.metrics.registry)
}
