//! HTTP endpoints of a meta node.
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | `/meta/v1/register` | `RegisterRequest` -> `RegisterResponse` (leader) |
//! | POST | `/meta/v1/renew` | `MemberRequest` -> `RenewResponse` (leader) |
//! | POST | `/meta/v1/deregister` | `MemberRequest` -> `RenewResponse` (leader) |
//! | GET | `/meta/v1/view?afterEpoch=N&timeoutMs=T` | blocking watch of the cluster view (any node) |
//! | GET | `/meta/v1/heartbeat?id=M` | WebSocket heartbeat of member M (leader) |
//! | GET | `/meta/v1/acl?afterRevision=N&timeoutMs=T` | blocking watch of the ACL, secrets sealed with the cluster secret (members only) |
//! | GET | `/health`, `/ready`, `/metrics` | liveness, readiness, Prometheus |
//!
//! The admin API (`/admin/v1/...`) is in [`crate::admin`], the operator console
//! (`/console/`) in [`crate::console`]. With auth on ([`access`]): health, readiness, metrics
//! and the console's files are public; `/admin/v1/...` and `/meta/v1/view` need the
//! cluster secret or an admin principal's key; everything else (membership, leases, the ACL
//! watch, the Raft RPCs) needs the cluster secret.
//!
//! "Leader" means the serving leader ([`crate::raft::MetaRaft::serving_term`]): elsewhere,
//! including on a leader cut off from its quorum, these answer `not_leader`, with the leader's
//! address as `redirect` when this node knows it.
//!
//! Every refusal is a typed [`ApiError`]: a body or query that does not parse is `malformed`
//! (400), one over the body limit `payload_too_large` (413), a bad value `invalid_argument`
//! (400), an unknown member or meta node `not_found` (404), a method the path does not take
//! `unknown_message` (400). `expectEpoch` makes an admin write conditional: applied only if the
//! cluster is still at that epoch (checked in the state machine, in log order), otherwise
//! `stale_epoch` (409) carrying the current epoch. A refused request changes nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use registry_common::acl::Acl;
use registry_common::error::{ApiError, ErrorCode};
use registry_common::member::{Member, MemberId};
use registry_common::proto::meta::{
    LeaseConfig, MemberRequest, RegisterRequest, RegisterResponse, RenewResponse, WatchQuery,
};
use registry_common::time::now_ms;
use registry_rpc::auth::Access;
use registry_rpc::server::{not_found, ApiQuery};
use registry_rpc::{ApiJson, ErrorReply};
use serde::Deserialize;

use crate::error::MetaError;
use crate::server::MetaState as Ctx;
use crate::state::MetaCommand;

/// Longest the answer to one heartbeat may take to be written.
const PONG_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest a watch may block.
const MAX_WATCH: Duration = Duration::from_secs(60);

/// Longest member id, address or zone, in bytes.
const MAX_FIELD: usize = 256;

pub fn router(ctx: Arc<Ctx>) -> Router {
    let max_body = ctx.config.max_body_bytes;
    Router::new()
        .route("/meta/v1/register", post(register))
        .route("/meta/v1/renew", post(renew))
        .route("/meta/v1/deregister", post(deregister))
        .route("/meta/v1/view", get(view))
        .route("/meta/v1/heartbeat", get(heartbeat))
        .route("/meta/v1/acl", get(acl_watch))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(ctx)
}

/// Who may call `path` when auth is on.
pub fn access(path: &str) -> Access {
    match path {
        "/health" | "/ready" | "/metrics" => Access::Public,
        // The console's static files: the page holds no data, its calls go to /admin/v1.
        "/console" => Access::Public,
        p if p.starts_with("/console/") => Access::Public,
        "/meta/v1/view" => Access::Admin,
        p if p.starts_with("/admin/") => Access::Admin,
        _ => Access::Member,
    }
}

/// `?expectEpoch=N` on admin writes.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EpochGuard {
    /// Apply only while the cluster is at this epoch.
    pub(crate) expect_epoch: Option<u64>,
}

fn lease_config(ctx: &Ctx) -> LeaseConfig {
    LeaseConfig {
        renew_interval_ms: ctx.config.renew_interval_ms,
        lease_ms: ctx.config.lease_ms,
    }
}

/// `NotLeader` (with the leader's address when known) unless this node is the serving leader.
pub(crate) fn require_leader(ctx: &Ctx) -> Result<(), MetaError> {
    Ok(ctx.raft.ensure_serving_leader()?)
}

/// Checks one identifying field: present, bounded, printable, no whitespace.
pub(crate) fn check_field(what: &str, value: &str, required: bool) -> Result<(), MetaError> {
    if required && value.is_empty() {
        return Err(MetaError::Invalid(format!("{what} is required")));
    }
    if value.len() > MAX_FIELD {
        return Err(MetaError::Invalid(format!(
            "{what} is longer than {MAX_FIELD} bytes"
        )));
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(MetaError::Invalid(format!(
            "{what} contains whitespace or control characters"
        )));
    }
    Ok(())
}

fn check_member(m: &Member) -> Result<(), MetaError> {
    check_field("member id", m.id.as_str(), true)?;
    check_field("member addr", &m.addr, true)?;
    check_field("member zone", &m.zone, false)
}

pub(crate) fn is_member(ctx: &Ctx, id: &MemberId) -> bool {
    ctx.raft.with_state(|s| s.view.members.contains_key(id))
}

async fn register(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<ApiJson<RegisterResponse>, ErrorReply> {
    check_member(&req.member)?;
    ctx.raft
        .write(MetaCommand::Register {
            member: req.member.clone(),
            now_ms: now_ms(),
        })
        .await
        .map_err(MetaError::from)?;
    ctx.leases.renew(&req.member.id)?;
    Ok(ApiJson(RegisterResponse {
        view: ctx.raft.with_state(|s| s.view.clone()),
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
        epoch: ctx.raft.epoch(),
    }))
}

async fn deregister(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<MemberRequest>,
) -> Result<ApiJson<RenewResponse>, ErrorReply> {
    require_leader(&ctx)?;
    if !is_member(&ctx, &req.id) {
        return Err(MetaError::UnknownMember(req.id).into());
    }
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
    ApiQuery(q): ApiQuery<WatchQuery>,
) -> Result<Response, ErrorReply> {
    let wait = Duration::from_millis(q.timeout_ms).min(MAX_WATCH);
    let mut rx = ctx.raft.watch_epoch();
    let _ = tokio::time::timeout(wait, rx.wait_for(|e| *e > q.after_epoch)).await;
    Ok(ApiJson(ctx.raft.with_state(|s| s.view.clone())).into_response())
}

#[derive(Deserialize)]
struct HeartbeatQuery {
    /// The member whose heartbeat this connection carries.
    id: MemberId,
}

/// A member's long-lived heartbeat connection. Every message renews its lease; the member
/// closing the connection starts the grace period after which it is removed. Closed by the
/// server when this node stops being the serving leader, so the member reconnects to the new
/// one; such a close is not held against the member.
async fn heartbeat(
    State(ctx): State<Arc<Ctx>>,
    ApiQuery(q): ApiQuery<HeartbeatQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ErrorReply> {
    let upgrade = upgrade.map_err(|rejection| {
        ErrorReply(ApiError::new(
            ErrorCode::Malformed,
            format!("expected a WebSocket upgrade: {}", rejection.body_text()),
        ))
    })?;
    require_leader(&ctx)?;
    if !is_member(&ctx, &q.id) {
        return Err(MetaError::UnknownMember(q.id).into());
    }
    let check_every = Duration::from_millis(ctx.config.raft_heartbeat_ms.max(10));
    // A member pings every renew interval. One silent for this long is frozen (SIGSTOP, a
    // stalled host) or cut off with its connection still open: treat it as a lost
    // connection, so it is removed after the short grace instead of a whole lease later.
    let silence = Duration::from_millis(ctx.config.renew_interval_ms.max(1)) * 3;
    Ok(upgrade
        .max_message_size(4096)
        .on_upgrade(move |mut socket| async move {
            let id = q.id;
            ctx.leases.connected(&id);
            let mut leader = ctx.raft.watch_leader();
            let me = ctx.raft.node_id();
            let mut check = tokio::time::interval(check_every);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Whether the member's side ended the connection (a crash hint) rather than us.
            let mut by_member = false;
            let mut heard = std::time::Instant::now();
            loop {
                tokio::select! {
                    msg = socket.recv() => match msg {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            by_member = true;
                            break;
                        }
                        Some(Ok(_)) => {
                            heard = std::time::Instant::now();
                            let _ = ctx.leases.renew(&id);
                            // The answer lets the member notice a leader that went silent.
                            let pong = socket.send(Message::Text("pong".into()));
                            if !matches!(tokio::time::timeout(PONG_TIMEOUT, pong).await, Ok(Ok(()))) {
                                by_member = true;
                                break;
                            }
                        }
                    },
                    changed = leader.changed() => {
                        if changed.is_err() || *leader.borrow() != Some(me) { break; }
                    }
                    _ = check.tick() => {
                        if ctx.raft.serving_term().is_none() { break; }
                        if heard.elapsed() > silence {
                            tracing::info!(member = %id, silent_ms = heard.elapsed().as_millis() as u64, "heartbeat silent: treating the member as disconnected");
                            by_member = true;
                            break;
                        }
                    }
                    _ = ctx.shutdown.cancelled() => break,
                }
            }
            if by_member {
                ctx.leases.disconnected(&id);
            } else {
                ctx.leases.released(&id);
                let _ = socket.send(Message::Close(None)).await;
            }
        }))
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> String {
    ctx.metrics.render(&ctx.raft)
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AclWatchQuery {
    #[serde(default)]
    after_revision: u64,
    #[serde(default)]
    timeout_ms: u64,
}

/// The ACL with secrets sealed by the cluster secret, once its revision is above
/// `afterRevision` (or after the wait).
async fn acl_watch(
    State(ctx): State<Arc<Ctx>>,
    ApiQuery(q): ApiQuery<AclWatchQuery>,
) -> ApiJson<Acl> {
    let wait = Duration::from_millis(q.timeout_ms).min(MAX_WATCH);
    let mut rx = ctx.raft.watch_acl();
    let _ = tokio::time::timeout(wait, rx.wait_for(|r| *r > q.after_revision)).await;
    let acl = ctx.raft.with_state(|s| s.acl.clone());
    ApiJson(ctx.guard.seal_acl(&acl))
}
