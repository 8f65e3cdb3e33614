//! HTTP endpoints of a data server.
//!
//! | method | path | body -> answer |
//! |---|---|---|
//! | POST | `/data/v1/write` | `WriteRequest` -> `WriteResponse` (primary only, per op) |
//! | POST | `/data/v1/fetch` | `FetchRequest` -> `FetchResponse` (any holder) |
//! | POST | `/data/v1/versions` | `FetchRequest` -> `VersionsResponse` (any holder) |
//! | POST | `/data/v1/session-summary` | `SessionPublishersRequest` -> `SessionSummaryResponse` |
//! | POST | `/data/v1/session-publishers` | `SessionPublishersRequest` -> `SessionPublishersResponse` |
//! | POST | `/data/v1/replicate` | `ReplicateRequest` -> `ReplicateResponse` (replica, from the primary) |
//! | POST | `/data/v1/sync` | `SyncRequest` -> `SyncResponse` (previous or current holder) |
//! | GET | `/health`, `/ready`, `/metrics` | liveness, readiness ([`crate::admin`]), Prometheus |
//!
//! The admin routes (`/admin/v1/...`) are in [`crate::admin`]. With auth on ([`access`])
//! health, readiness and metrics are public, `/admin/v1/...` needs the cluster secret or an
//! admin key, and every other route the cluster secret.
//!
//! Every check of who may serve a slot runs under that slot's lock (see `store`), against the
//! view and slot phase of that instant.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::Router;
use registry_common::id::DataInfoId;
use registry_common::proto::data::{
    FetchRequest, FetchResponse, IdError, IdVersion, OpResult, ReplicateAck, ReplicateRequest,
    ReplicateResponse, SessionPublishersRequest, SessionPublishersResponse, SessionSummaryResponse,
    SlotSummary, SyncRequest, SyncResponse, VersionsResponse, WriteOp, WriteRequest, WriteResponse,
};
use registry_common::slot::SlotId;
use registry_rpc::auth::Access as Caller;
use registry_rpc::server::not_found;
use registry_rpc::{ApiJson, ErrorReply};

use crate::error::DataError;
use crate::routing::Access;
use crate::server::DataState;
use crate::slots::Phase;

pub fn router(state: Arc<DataState>) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/data/v1/write", post(write))
        .route("/data/v1/fetch", post(fetch))
        .route("/data/v1/versions", post(versions))
        .route("/data/v1/session-summary", post(session_summary))
        .route("/data/v1/session-publishers", post(session_publishers))
        .route("/data/v1/replicate", post(replicate))
        .route("/data/v1/sync", post(sync))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(crate::admin::ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Who may call `path` when auth is on.
pub fn access(path: &str) -> Caller {
    match path {
        "/health" | "/ready" | "/metrics" => Caller::Public,
        p if p.starts_with("/admin/") => Caller::Admin,
        _ => Caller::Member,
    }
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
    let _timer = s.metrics.write_latency.start_timer();
    s.store.observe_floor(req.version_floor);
    let mut changed = Vec::new();
    let mut results = Vec::with_capacity(req.ops.len());
    for op in req.ops {
        let id = op.data_info_id().clone();
        let guard = || s.admit(&id, req.epoch, Access::Primary).map(|_| ());
        let applied = match op {
            WriteOp::Publish { publisher } => match publisher.validate() {
                Err(e) => Err(DataError::Invalid(e.to_string())),
                Ok(()) => s.store.publish(Arc::unwrap_or_clone(publisher), guard),
            },
            WriteOp::Unpublish {
                data_info_id,
                key,
                session,
                conn_id,
            } => s
                .store
                .unpublish(&data_info_id, &key, &session, conn_id, guard),
        };
        match applied {
            Ok(a) => {
                let outcome = if a.changed { "changed" } else { "unchanged" };
                s.metrics.writes.with_label_values(&[outcome]).inc();
                if a.changed {
                    changed.push((id, a.version));
                }
                results.push(OpResult::ok(a.version));
            }
            Err(e) => {
                if matches!(e, DataError::StaleEpoch { .. }) {
                    s.refresh_view();
                }
                s.metrics.writes.with_label_values(&["refused"]).inc();
                results.push(OpResult::err(e.into()));
            }
        }
    }
    s.on_changed(&changed);
    Ok(ApiJson(WriteResponse {
        epoch: s.membership.view().epoch,
        results,
    }))
}

/// Splits `ids` into those this server may read and per-id refusals.
fn readable(s: &DataState, ids: Vec<DataInfoId>, epoch: u64) -> (Vec<DataInfoId>, Vec<IdError>) {
    let mut ok = Vec::with_capacity(ids.len());
    let mut errors = Vec::new();
    for id in ids {
        match s.admit(&id, epoch, Access::Holder) {
            Ok(_) => ok.push(id),
            Err(e) => errors.push(IdError {
                data_info_id: id,
                error: e.into(),
            }),
        }
    }
    (ok, errors)
}

async fn fetch(
    State(s): State<Arc<DataState>>,
    ApiJson(req): ApiJson<FetchRequest>,
) -> Result<ApiJson<FetchResponse>, ErrorReply> {
    check_batch(req.ids.len(), s.config.max_batch)?;
    let (ids, errors) = readable(&s, req.ids, req.epoch);
    let (datums, compact) = if req.compact {
        let compact = ids
            .iter()
            .filter_map(|id| s.store.push_datum(id, usize::MAX))
            .collect();
        (Vec::new(), compact)
    } else {
        (ids.iter().map(|id| s.store.datum(id)).collect(), Vec::new())
    };
    Ok(ApiJson(FetchResponse {
        epoch: s.membership.view().epoch,
        datums,
        compact,
        errors,
    }))
}

async fn versions(
    State(s): State<Arc<DataState>>,
    ApiJson(req): ApiJson<FetchRequest>,
) -> Result<ApiJson<VersionsResponse>, ErrorReply> {
    check_batch(req.ids.len(), s.config.max_batch)?;
    let (ids, errors) = readable(&s, req.ids, req.epoch);
    let versions = ids
        .into_iter()
        .map(|id| IdVersion {
            version: s.store.version(&id),
            data_info_id: id,
        })
        .collect();
    Ok(ApiJson(VersionsResponse {
        epoch: s.membership.view().epoch,
        versions,
        errors,
    }))
}

/// The slots of `req` this server is primary of, with every publisher copied in, at `view`.
fn covered_slots(
    s: &Arc<DataState>,
    req: &SessionPublishersRequest,
) -> Result<(u64, Vec<SlotId>), ErrorReply> {
    let view = s.membership.view();
    if req.epoch > view.epoch {
        s.refresh_view();
        return Err(DataError::StaleEpoch {
            caller: req.epoch,
            ours: view.epoch,
        }
        .into());
    }
    let count = view.slots.slot_count();
    if let Some(bad) = req.slots.iter().find(|slot| **slot >= count) {
        return Err(DataError::Invalid(format!("slot {bad} does not exist")).into());
    }
    let wanted = |slot: SlotId| req.slots.is_empty() || req.slots.contains(&slot);
    let slots: Vec<SlotId> = (0..count)
        .filter(|slot| {
            wanted(*slot)
                && s.slots.phase(*slot) == Phase::Ready
                && view
                    .slots
                    .get(*slot)
                    .is_some_and(|a| a.primary.as_ref() == Some(&s.id))
        })
        .collect();
    Ok((view.epoch, slots))
}

async fn session_publishers(
    State(s): State<Arc<DataState>>,
    ApiJson(req): ApiJson<SessionPublishersRequest>,
) -> Result<ApiJson<SessionPublishersResponse>, ErrorReply> {
    let (epoch, slots) = covered_slots(&s, &req)?;
    let publishers = s
        .store
        .session_digests(&req.session, |slot| slots.binary_search(&slot).is_ok());
    Ok(ApiJson(SessionPublishersResponse {
        epoch,
        slots,
        publishers,
    }))
}

async fn session_summary(
    State(s): State<Arc<DataState>>,
    ApiJson(req): ApiJson<SessionPublishersRequest>,
) -> Result<ApiJson<SessionSummaryResponse>, ErrorReply> {
    let (epoch, slots) = covered_slots(&s, &req)?;
    let slots = s
        .store
        .session_summaries(&req.session, |slot| slots.binary_search(&slot).is_ok())
        .into_iter()
        .map(|(slot, tally)| SlotSummary { slot, tally })
        .collect();
    Ok(ApiJson(SessionSummaryResponse { epoch, slots }))
}

async fn replicate(
    State(s): State<Arc<DataState>>,
    ApiJson(req): ApiJson<ReplicateRequest>,
) -> Result<ApiJson<ReplicateResponse>, ErrorReply> {
    check_batch(req.items.len(), s.config.max_batch)?;
    let epoch = s.membership.view().epoch;
    if req.epoch > epoch {
        s.refresh_view();
        return Err(DataError::StaleEpoch {
            caller: req.epoch,
            ours: epoch,
        }
        .into());
    }
    let mut acks = Vec::with_capacity(req.items.len());
    let mut errors = Vec::new();
    for item in req.items {
        let id = item.data_info_id.clone();
        let guard = || s.admit_replication(&id, &req.from);
        let result = match item.full {
            Some(full) if full.data_info_id == id => {
                s.store.install(full, guard).map(|v| (v, false))
            }
            Some(_) => Err(DataError::Invalid(
                "full datum of another dataInfoId".into(),
            )),
            None => s
                .store
                .replay(&id, item.ops, guard)
                .map(|r| (r.version, r.need_full)),
        };
        match result {
            Ok((version, need_full)) => acks.push(ReplicateAck {
                data_info_id: id,
                version,
                need_full,
            }),
            Err(e) => errors.push(IdError {
                data_info_id: id,
                error: e.into(),
            }),
        }
    }
    Ok(ApiJson(ReplicateResponse {
        epoch: s.membership.view().epoch,
        acks,
        errors,
    }))
}

async fn sync(
    State(s): State<Arc<DataState>>,
    ApiJson(req): ApiJson<SyncRequest>,
) -> Result<ApiJson<SyncResponse>, ErrorReply> {
    if req.slot >= s.store.slot_count() {
        return Err(DataError::Invalid(format!("slot {} does not exist", req.slot)).into());
    }
    // Catch up with the requester's epoch first: from then on this server refuses writes
    // for the slot if it lost it, so the copy below misses nothing it accepted.
    if req.epoch > s.membership.view().epoch {
        s.membership.refresh().await;
        if !s
            .membership
            .wait_for_epoch(req.epoch, Duration::from_secs(2))
            .await
        {
            return Err(DataError::StaleEpoch {
                caller: req.epoch,
                ours: s.membership.view().epoch,
            }
            .into());
        }
    }
    let epoch = s.membership.view().epoch;
    let mut complete = true;
    let datums = s
        .store
        .slot_datums(req.slot, || match s.slots.phase(req.slot) {
            Phase::Ready | Phase::Retained(_) => Ok(()),
            // Copying the slot in itself: send what is here, marked incomplete, rather than make
            // the requester wait (servers that start together would wait on each other).
            Phase::Syncing => {
                complete = false;
                Ok(())
            }
            Phase::Idle => Err(DataError::NotOwner {
                slot: req.slot,
                epoch,
                owner_addr: None,
            }),
        })?;
    tracing::debug!(slot = req.slot, to = %req.requester, datums = datums.len(), "slot copied out");
    Ok(ApiJson(SyncResponse {
        epoch,
        slot: req.slot,
        datums,
        complete,
    }))
}

/// Answer of `/admin/v1/status`.
async fn metrics(State(s): State<Arc<DataState>>) -> String {
    let (syncing, ready, retained) = s.slots.counts();
    s.metrics
        .slots
        .with_label_values(&["syncing"])
        .set(syncing as i64);
    s.metrics
        .slots
        .with_label_values(&["ready"])
        .set(ready as i64);
    s.metrics
        .slots
        .with_label_values(&["retained"])
        .set(retained as i64);
    let status = crate::admin::status_of(&s);
    s.metrics.publishers.set(status.publishers as i64);
    s.metrics.data_info_ids.set(status.data_info_ids as i64);
    s.metrics.notify_pending.set(s.notifier.pending() as i64);
    registry_rpc::metrics::render(&s.metrics.registry)
}
