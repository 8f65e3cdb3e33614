//! HTTP endpoints of a meta node.
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | `/meta/v1/register` | `RegisterRequest` -> `RegisterResponse` (leader) |
//! | POST | `/meta/v1/renew` | `MemberRequest` -> `RenewResponse` (leader) |
//! | POST | `/meta/v1/deregister` | `MemberRequest` -> `RenewResponse` (leader) |
//! | GET | `/meta/v1/view?afterEpoch=N&timeoutMs=T` | blocking watch of the cluster view (any node) |
//! | GET | `/meta/v1/heartbeat?id=M` | WebSocket heartbeat of member M (leader) |
//! | GET | `/meta/v1/status` | Raft and lease status of this node |
//! | POST | `/meta/v1/admin/add-node`, `/remove-node` | Raft membership (`NodeRequest`) |
//! | POST | `/meta/v1/admin/drain` | `DrainRequest`: mark data servers draining |
//! | POST | `/meta/v1/admin/settings` | `ClusterSettings` |
//! | GET | `/health`, `/ready`, `/metrics` | liveness, readiness, Prometheus |
//!
//! Writes on a follower answer `not_leader` with the leader's address as `redirect`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use registry_common::error::{ApiError, ErrorCode};
use registry_common::member::{ClusterSettings, MemberId};
use registry_common::proto::meta::{
    LeaseConfig, MemberRequest, MetaStatus, NodeRequest, RegisterRequest, RegisterResponse,
    RenewResponse, WatchQuery,
};
use registry_common::time::now_ms;
use registry_rpc::server::not_found;
use registry_rpc::{ApiJson, ErrorReply};
use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::raft::RaftError;
use crate::server::MetaState as Ctx;
use crate::state::MetaCommand;

/// Longest a watch may block.
const MAX_WATCH: Duration = Duration::from_secs(60);

pub fn router(ctx: Arc<Ctx>) -> Router {
    let max_body = ctx.config.max_body_bytes;
    Router::new()
        .route("/meta/v1/register", post(register))
        .route("/meta/v1/renew", post(renew))
        .route("/meta/v1/deregister", post(deregister))
        .route("/meta/v1/view", get(view))
        .route("/meta/v1/heartbeat", get(heartbeat))
        .route("/meta/v1/status", get(status))
        .route("/meta/v1/admin/add-node", post(add_node))
        .route("/meta/v1/admin/remove-node", post(remove_node))
        .route("/meta/v1/admin/drain", post(drain))
        .route("/meta/v1/admin/settings", post(settings))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(ctx)
}

fn lease_config(ctx: &Ctx) -> LeaseConfig {
    LeaseConfig {
        renew_interval_ms: ctx.config.renew_interval_ms,
        lease_ms: ctx.config.lease_ms,
    }
}

/// `NotLeader` with the leader's address, for requests only the leader serves.
fn require_leader(ctx: &Ctx) -> Result<(), MetaError> {
    let status = ctx.raft.status();
    if status.leader_id == Some(ctx.raft.node_id()) {
        return Ok(());
    }
    Err(MetaError::Raft(RaftError::NotLeader {
        leader_id: status.leader_id,
        leader_addr: status.leader_addr,
    }))
}

async fn register(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<ApiJson<RegisterResponse>, ErrorReply> {
    let m = &req.member;
    if m.id.as_str().is_empty()
        || m.id.as_str().len() > 256
        || m.addr.is_empty()
        || m.addr.len() > 256
    {
        return Err(MetaError::Invalid("member id and addr must be 1..=256 bytes".into()).into());
    }
    ctx.raft
        .write(MetaCommand::Register {
            member: req.member.clone(),
            now_ms: now_ms(),
        })
        .await
        .map_err(MetaError::from)?;
    ctx.leases.renew(&req.member.id)?;
    Ok(ApiJson(RegisterResponse {
        view: ctx.raft.state().view,
        lease: lease_config(&ctx),
    }))
}

async fn renew(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<MemberRequest>,
) -> Result<ApiJson<RenewResponse>, ErrorReply> {
    require_leader(&ctx)?;
    ctx.leases.renew(&req.id)?;
    Ok(ApiJson(RenewResponse {
        epoch: ctx.raft.state().view.epoch,
    }))
}

async fn deregister(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<MemberRequest>,
) -> Result<ApiJson<RenewResponse>, ErrorReply> {
    let r = ctx
        .raft
        .write(MetaCommand::Remove {
            ids: vec![req.id],
            reason: "left".into(),
        })
        .await
        .map_err(MetaError::from)?;
    Ok(ApiJson(RenewResponse { epoch: r.epoch }))
}

async fn view(
    State(ctx): State<Arc<Ctx>>,
    Query(q): Query<WatchQuery>,
) -> Result<Response, ErrorReply> {
    let wait = Duration::from_millis(q.timeout_ms).min(MAX_WATCH);
    let mut rx = ctx.raft.watch_epoch();
    let _ = tokio::time::timeout(wait, rx.wait_for(|e| *e > q.after_epoch)).await;
    Ok(ApiJson(ctx.raft.state().view).into_response())
}

#[derive(Deserialize)]
struct HeartbeatQuery {
    id: MemberId,
}

/// A member's long-lived heartbeat connection. Every message renews its lease; the
/// connection closing starts the grace period after which the member is removed. Closed by
/// the server when this node stops being leader, so the member reconnects to the new one.
async fn heartbeat(
    State(ctx): State<Arc<Ctx>>,
    Query(q): Query<HeartbeatQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ErrorReply> {
    require_leader(&ctx)?;
    if !ctx.raft.state().view.members.contains_key(&q.id) {
        return Err(MetaError::UnknownMember(q.id).into());
    }
    Ok(upgrade
        .max_message_size(4096)
        .on_upgrade(move |mut socket| async move {
            let id = q.id;
            ctx.leases.connected(&id);
            let mut leader = ctx.raft.watch_leader();
            let me = ctx.raft.node_id();
            loop {
                tokio::select! {
                    msg = socket.recv() => match msg {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => { let _ = ctx.leases.renew(&id); }
                    },
                    changed = leader.changed() => {
                        if changed.is_err() || *leader.borrow() != Some(me) { break; }
                    }
                    _ = ctx.shutdown.cancelled() => break,
                }
            }
            ctx.leases.disconnected(&id);
        }))
}

async fn status(State(ctx): State<Arc<Ctx>>) -> ApiJson<MetaStatus> {
    let s = ctx.raft.status();
    ApiJson(MetaStatus {
        node_id: s.id,
        addr: s.addr,
        leader: s.leader_id,
        leader_addr: s.leader_addr,
        term: s.term,
        voters: s.voters.keys().copied().collect(),
        learners: s.learners.keys().copied().collect(),
        last_log_index: s.last_log_index,
        last_applied: s.last_applied_index,
        epoch: ctx.raft.state().view.epoch,
        leases: ctx.leases.ages(),
    })
}

async fn ready(State(ctx): State<Arc<Ctx>>) -> Response {
    if ctx.raft.status().leader_id.is_some() {
        "ready".into_response()
    } else {
        ErrorReply(ApiError::new(
            ErrorCode::Unavailable,
            "no meta leader known",
        ))
        .into_response()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Done {
    voters: Vec<u64>,
    learners: Vec<u64>,
}

fn done(ctx: &Ctx) -> ApiJson<Done> {
    let s = ctx.raft.status();
    ApiJson(Done {
        voters: s.voters.keys().copied().collect(),
        learners: s.learners.keys().copied().collect(),
    })
}

async fn add_node(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<NodeRequest>,
) -> Result<ApiJson<Done>, ErrorReply> {
    if req.addr.is_empty() {
        return Err(MetaError::Invalid("addr is required".into()).into());
    }
    require_leader(&ctx)?;
    ctx.raft
        .add_learner(req.node_id, req.addr)
        .await
        .map_err(MetaError::from)?;
    if req.voter {
        let mut voters: BTreeSet<u64> = ctx.raft.status().voters.keys().copied().collect();
        voters.insert(req.node_id);
        ctx.raft
            .change_voters(voters)
            .await
            .map_err(MetaError::from)?;
    }
    Ok(done(&ctx))
}

async fn remove_node(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<NodeRequest>,
) -> Result<ApiJson<Done>, ErrorReply> {
    require_leader(&ctx)?;
    let status = ctx.raft.status();
    if !status.voters.contains_key(&req.node_id) && !status.learners.contains_key(&req.node_id) {
        return Err(
            MetaError::Invalid(format!("node {} is not in the cluster", req.node_id)).into(),
        );
    }
    let mut voters: BTreeSet<u64> = status.voters.keys().copied().collect();
    voters.remove(&req.node_id);
    if voters.is_empty() {
        return Err(MetaError::Invalid("cannot remove the last voter".into()).into());
    }
    ctx.raft
        .change_voters(voters)
        .await
        .map_err(MetaError::from)?;
    Ok(done(&ctx))
}

/// `POST /meta/v1/admin/drain`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainRequest {
    pub ids: Vec<MemberId>,
    #[serde(default = "yes")]
    pub draining: bool,
}

fn yes() -> bool {
    true
}

async fn drain(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<DrainRequest>,
) -> Result<ApiJson<RenewResponse>, ErrorReply> {
    let state = ctx.raft.state();
    if let Some(unknown) = req
        .ids
        .iter()
        .find(|id| !state.view.members.contains_key(*id))
    {
        return Err(MetaError::UnknownMember(unknown.clone()).into());
    }
    let r = ctx
        .raft
        .write(MetaCommand::SetDraining {
            ids: req.ids,
            draining: req.draining,
        })
        .await
        .map_err(MetaError::from)?;
    Ok(ApiJson(RenewResponse { epoch: r.epoch }))
}

async fn settings(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(settings): ApiJson<ClusterSettings>,
) -> Result<ApiJson<RenewResponse>, ErrorReply> {
    if settings.copies == 0 || settings.copies > 5 {
        return Err(MetaError::Invalid("copies must be 1..=5".into()).into());
    }
    let r = ctx
        .raft
        .write(MetaCommand::UpdateSettings { settings })
        .await
        .map_err(MetaError::from)?;
    Ok(ApiJson(RenewResponse { epoch: r.epoch }))
}
