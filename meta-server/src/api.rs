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
//! | POST | `/meta/v1/admin/drain[?expectEpoch=N]` | `DrainRequest`: mark data servers draining |
//! | POST | `/meta/v1/admin/settings[?expectEpoch=N]` | `ClusterSettings` |
//! | GET | `/meta/v1/acl?afterRevision=N&timeoutMs=T` | blocking watch of the ACL, secrets included (members only) |
//! | GET | `/meta/v1/admin/acl` | the ACL without secrets |
//! | POST | `/meta/v1/admin/acl/put` | `AclPutRequest`: create a principal or set its permissions |
//! | POST | `/meta/v1/admin/acl/delete` | `{"name"}`: remove a principal and its keys |
//! | POST | `/meta/v1/admin/acl/key-create` | `{"principal"}` -> `{"keyId","secret"}` (shown once) |
//! | POST | `/meta/v1/admin/acl/key-revoke` | `{"keyId"}` |
//! | GET | `/health`, `/ready` | liveness, readiness |
//!
//! With auth on ([`access`]): health and readiness are public; `/meta/v1/admin/*`,
//! `/meta/v1/status` and `/meta/v1/view` need the cluster secret or an admin principal's key;
//! everything else (membership, leases, the ACL watch, the Raft RPCs) needs the cluster
//! secret.
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

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use registry_common::acl::{AccessKey, Acl, Permissions};
use registry_common::error::{ApiError, ErrorCode};
use registry_common::member::{ClusterSettings, Member, MemberId, Role};
use registry_common::proto::meta::{
    LeaseConfig, MemberRequest, MetaStatus, NodeRequest, RegisterRequest, RegisterResponse,
    RenewResponse, WatchQuery,
};
use registry_common::time::now_ms;
use registry_rpc::auth::Access;
use registry_rpc::server::not_found;
use registry_rpc::{ApiJson, ErrorReply};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::raft::Conditional;
use crate::server::MetaState as Ctx;
use crate::state::MetaCommand;

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
        .route("/meta/v1/status", get(status))
        .route("/meta/v1/admin/add-node", post(add_node))
        .route("/meta/v1/admin/remove-node", post(remove_node))
        .route("/meta/v1/admin/drain", post(drain))
        .route("/meta/v1/admin/settings", post(settings))
        .route("/meta/v1/acl", get(acl_watch))
        .route("/meta/v1/admin/acl", get(acl_show))
        .route("/meta/v1/admin/acl/put", post(acl_put))
        .route("/meta/v1/admin/acl/delete", post(acl_delete))
        .route("/meta/v1/admin/acl/key-create", post(acl_key_create))
        .route("/meta/v1/admin/acl/key-revoke", post(acl_key_revoke))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(ctx)
}

/// Who may call `path` when auth is on.
pub fn access(path: &str) -> Access {
    match path {
        "/health" | "/ready" | "/metrics" => Access::Public,
        "/meta/v1/status" | "/meta/v1/view" => Access::Admin,
        p if p.starts_with("/meta/v1/admin/") => Access::Admin,
        _ => Access::Member,
    }
}

async fn method_not_allowed() -> ErrorReply {
    ErrorReply(ApiError::new(
        ErrorCode::UnknownMessage,
        "this endpoint does not take this method",
    ))
}

/// A query string decoded into `T`, or a typed `malformed` refusal (axum's own `Query`
/// answers plain text).
struct ApiQuery<T>(T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ErrorReply;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(ApiQuery(q)),
            Err(rejection) => Err(ErrorReply(ApiError::new(
                ErrorCode::Malformed,
                rejection.body_text(),
            ))),
        }
    }
}

/// `?expectEpoch=N` on admin writes.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EpochGuard {
    /// Apply only while the cluster is at this epoch.
    expect_epoch: Option<u64>,
}

fn lease_config(ctx: &Ctx) -> LeaseConfig {
    LeaseConfig {
        renew_interval_ms: ctx.config.renew_interval_ms,
        lease_ms: ctx.config.lease_ms,
    }
}

/// `NotLeader` (with the leader's address when known) unless this node is the serving leader.
fn require_leader(ctx: &Ctx) -> Result<(), MetaError> {
    Ok(ctx.raft.ensure_serving_leader()?)
}

/// Checks one identifying field: present, bounded, printable, no whitespace.
fn check_field(what: &str, value: &str, required: bool) -> Result<(), MetaError> {
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

fn is_member(ctx: &Ctx, id: &MemberId) -> bool {
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
        epoch: ctx.raft.epoch(),
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

/// Answer of the Raft membership endpoints: the membership after the change.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Done {
    /// Voter ids.
    voters: Vec<u64>,
    /// Learner ids.
    learners: Vec<u64>,
}

fn done(ctx: &Ctx) -> ApiJson<Done> {
    let s = ctx.raft.status();
    ApiJson(Done {
        voters: s.voters.keys().copied().collect(),
        learners: s.learners.keys().copied().collect(),
    })
}

/// Adds a meta node as a learner (waiting until it has caught up) and, with `voter`, promotes
/// it. Repeating a request that already took effect is a no-op; naming an existing node with
/// another address is refused.
async fn add_node(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<NodeRequest>,
) -> Result<ApiJson<Done>, ErrorReply> {
    check_field("addr", &req.addr, true)?;
    require_leader(&ctx)?;
    let status = ctx.raft.status();
    let known = status
        .voters
        .get(&req.node_id)
        .or_else(|| status.learners.get(&req.node_id));
    match known {
        Some(addr) if *addr != req.addr => {
            return Err(MetaError::Invalid(format!(
                "meta node {} is already in the cluster at {addr}",
                req.node_id
            ))
            .into());
        }
        Some(_) => {}
        None => ctx
            .raft
            .add_learner(req.node_id, req.addr)
            .await
            .map_err(MetaError::from)?,
    }
    if req.voter && !status.voters.contains_key(&req.node_id) {
        let mut voters: BTreeSet<u64> = ctx.raft.status().voters.keys().copied().collect();
        voters.insert(req.node_id);
        ctx.raft
            .change_voters(voters)
            .await
            .map_err(MetaError::from)?;
    }
    Ok(done(&ctx))
}

/// Removes a voter (it leaves the cluster; a removed leader hands over leadership) or a
/// learner.
async fn remove_node(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<NodeRequest>,
) -> Result<ApiJson<Done>, ErrorReply> {
    require_leader(&ctx)?;
    let status = ctx.raft.status();
    if status.voters.contains_key(&req.node_id) {
        let mut voters: BTreeSet<u64> = status.voters.keys().copied().collect();
        voters.remove(&req.node_id);
        if voters.is_empty() {
            return Err(MetaError::Invalid("cannot remove the last voter".into()).into());
        }
        ctx.raft
            .change_voters(voters)
            .await
            .map_err(MetaError::from)?;
    } else if status.learners.contains_key(&req.node_id) {
        ctx.raft
            .remove_learner(req.node_id)
            .await
            .map_err(MetaError::from)?;
    } else {
        return Err(MetaError::UnknownNode(req.node_id).into());
    }
    Ok(done(&ctx))
}

/// Proposes an admin command, conditional on `guard`.
async fn admin_write(
    ctx: &Ctx,
    cmd: MetaCommand,
    guard: EpochGuard,
) -> Result<RenewResponse, MetaError> {
    let Some(expected) = guard.expect_epoch else {
        let r = ctx.raft.write(cmd).await?;
        return Ok(RenewResponse { epoch: r.epoch });
    };
    require_leader(ctx)?;
    // The epoch only grows: past it already, the state machine would refuse too. (Below it,
    // this node may not have applied everything yet; the state machine decides.)
    let current = ctx.raft.epoch();
    if current > expected {
        return Err(MetaError::StaleEpoch { expected, current });
    }
    match ctx.raft.write_if_epoch(cmd, expected).await? {
        Conditional::Applied(r) => Ok(RenewResponse { epoch: r.epoch }),
        Conditional::Stale { current } => Err(MetaError::StaleEpoch { expected, current }),
    }
}

/// `POST /meta/v1/admin/drain`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainRequest {
    /// Data servers to mark (every one must be a member).
    pub ids: Vec<MemberId>,
    /// `false` takes the mark off again.
    #[serde(default = "yes")]
    pub draining: bool,
}

fn yes() -> bool {
    true
}

async fn drain(
    State(ctx): State<Arc<Ctx>>,
    ApiQuery(guard): ApiQuery<EpochGuard>,
    ApiJson(req): ApiJson<DrainRequest>,
) -> Result<ApiJson<RenewResponse>, ErrorReply> {
    if req.ids.is_empty() {
        return Err(MetaError::Invalid("ids must not be empty".into()).into());
    }
    require_leader(&ctx)?;
    if let Some(unknown) = req.ids.iter().find(|id| !is_member(&ctx, id)) {
        return Err(MetaError::UnknownMember(unknown.clone()).into());
    }
    if let Some(expected) = guard.expect_epoch {
        let current = ctx.raft.epoch();
        if expected != current {
            return Err(MetaError::StaleEpoch { expected, current }.into());
        }
    }
    if req.draining {
        // Draining every data server would leave the slots without a holder: their
        // publishers would be dropped, not moved.
        let left = ctx.raft.with_state(|s| {
            s.view
                .members_of(Role::Data)
                .filter(|m| !s.draining.contains(&m.id) && !req.ids.contains(&m.id))
                .count()
        });
        if left == 0 {
            return Err(MetaError::Precondition(
                "draining these would leave no data server to hold the slots".into(),
            )
            .into());
        }
    }
    let cmd = MetaCommand::SetDraining {
        ids: req.ids,
        draining: req.draining,
    };
    Ok(ApiJson(admin_write(&ctx, cmd, guard).await?))
}

async fn settings(
    State(ctx): State<Arc<Ctx>>,
    ApiQuery(guard): ApiQuery<EpochGuard>,
    ApiJson(settings): ApiJson<ClusterSettings>,
) -> Result<ApiJson<RenewResponse>, ErrorReply> {
    if settings.copies == 0 || settings.copies > 5 {
        return Err(MetaError::Invalid("copies must be 1..=5".into()).into());
    }
    let cmd = MetaCommand::UpdateSettings { settings };
    Ok(ApiJson(admin_write(&ctx, cmd, guard).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AclWatchQuery {
    #[serde(default)]
    after_revision: u64,
    #[serde(default)]
    timeout_ms: u64,
}

/// The ACL with secrets, once its revision is above `afterRevision` (or after the wait).
async fn acl_watch(
    State(ctx): State<Arc<Ctx>>,
    ApiQuery(q): ApiQuery<AclWatchQuery>,
) -> ApiJson<Acl> {
    let wait = Duration::from_millis(q.timeout_ms).min(MAX_WATCH);
    let mut rx = ctx.raft.watch_acl();
    let _ = tokio::time::timeout(wait, rx.wait_for(|r| *r > q.after_revision)).await;
    ApiJson(ctx.raft.with_state(|s| s.acl.clone()))
}

async fn acl_show(State(ctx): State<Arc<Ctx>>) -> ApiJson<Acl> {
    ApiJson(ctx.raft.with_state(|s| s.acl.redacted()))
}

/// `POST /meta/v1/admin/acl/put`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AclPutRequest {
    name: String,
    #[serde(flatten)]
    permissions: Permissions,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NameRequest {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyCreateRequest {
    principal: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyRevokeRequest {
    key_id: String,
}

/// The answer of ACL changes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AclDone {
    /// ACL revision after the change.
    revision: u64,
    /// A new key's id (key-create only).
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    /// A new key's secret, shown this once (key-create only).
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// Proposes an ACL command; a command the state machine refused is `failed_precondition`
/// (or `not_found` for an unknown principal or key).
async fn acl_write(ctx: &Ctx, cmd: MetaCommand) -> Result<u64, MetaError> {
    require_leader(ctx)?;
    let r = ctx.raft.write(cmd).await?;
    if let Some(why) = r.refused {
        return Err(if why.starts_with("no ") {
            MetaError::NotFound(why)
        } else {
            MetaError::Precondition(why)
        });
    }
    Ok(ctx.raft.with_state(|s| s.acl.revision))
}

async fn acl_put(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<AclPutRequest>,
) -> Result<ApiJson<AclDone>, ErrorReply> {
    registry_common::acl::validate_name(&req.name)
        .map_err(|e| MetaError::Invalid(e.to_string()))?;
    req.permissions
        .validate()
        .map_err(|e| MetaError::Invalid(e.to_string()))?;
    let revision = acl_write(
        &ctx,
        MetaCommand::AclPut {
            name: req.name,
            permissions: req.permissions,
        },
    )
    .await?;
    Ok(ApiJson(AclDone {
        revision,
        key_id: None,
        secret: None,
    }))
}

async fn acl_delete(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<NameRequest>,
) -> Result<ApiJson<AclDone>, ErrorReply> {
    let revision = acl_write(&ctx, MetaCommand::AclDelete { name: req.name }).await?;
    Ok(ApiJson(AclDone {
        revision,
        key_id: None,
        secret: None,
    }))
}

async fn acl_key_create(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<KeyCreateRequest>,
) -> Result<ApiJson<AclDone>, ErrorReply> {
    let key_id = format!("{}.{}", req.principal, registry_common::auth::random_hex(6));
    let secret = registry_common::auth::Secret::generate();
    let revision = acl_write(
        &ctx,
        MetaCommand::AclAddKey {
            principal: req.principal,
            key: AccessKey {
                id: key_id.clone(),
                secret: secret.clone(),
                created_ms: now_ms(),
            },
        },
    )
    .await?;
    Ok(ApiJson(AclDone {
        revision,
        key_id: Some(key_id),
        secret: Some(secret),
    }))
}

async fn acl_key_revoke(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<KeyRevokeRequest>,
) -> Result<ApiJson<AclDone>, ErrorReply> {
    let revision = acl_write(&ctx, MetaCommand::AclRevokeKey { key_id: req.key_id }).await?;
    Ok(ApiJson(AclDone {
        revision,
        key_id: None,
        secret: None,
    }))
}
