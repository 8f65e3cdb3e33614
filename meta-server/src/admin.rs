//! The admin API of a meta node: the whole cluster for operators (`/admin/v1/...`; every call
//! with an example in `docs/admin-api.md`).
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/admin/v1/status` | [`ClusterStatus`]: leader, meta nodes, members and their health, slot balance, totals, problems |
//! | GET | `/admin/v1/members` | members with lease ages, readiness and their own status |
//! | GET | `/admin/v1/slots` | the slot table (`SlotTable`) |
//! | GET | `/admin/v1/services/{dataId}?group=G&instanceId=I` | [`ServiceReport`]: one service across the cluster |
//! | POST | `/admin/v1/push` | `{"enabled": bool}`: the push switch |
//! | POST | `/admin/v1/clients/off`, `/admin/v1/clients/on` | `{"address"}`: take a client off, or back |
//! | POST | `/admin/v1/drain[?expectEpoch=N]` | `DrainRequest`: mark data servers draining |
//! | POST | `/admin/v1/settings[?expectEpoch=N]` | `ClusterSettings` |
//! | GET | `/admin/v1/meta` | Raft and lease status of this node |
//! | POST | `/admin/v1/meta/add-node`, `/admin/v1/meta/remove-node` | Raft membership (`NodeRequest`) |
//! | GET | `/admin/v1/acl` | the ACL without secrets |
//! | POST | `/admin/v1/acl/put`, `/delete`, `/key-create`, `/key-revoke` | principals and keys |
//!
//! Reads are answered by any node from its applied state, asking the data and session
//! servers for their part (each within [`PROBE_TIMEOUT`]; one that does not answer is shown
//! unreachable); writes go through the leader (`not_leader` with a redirect elsewhere).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::{get, post};
use axum::Router;
use futures::future::join_all;
use registry_common::acl::{AccessKey, Acl, Permissions};
use registry_common::id::DataInfoId;
use registry_common::member::{ClusterSettings, ClusterView, Member, MemberId, Role};
use registry_common::proto::admin::{
    ClientAddress, ClusterStatus, DataServiceView, DataStatus, HolderReport, HolderRole,
    MemberStatus, MetaNodeStatus, PublisherReport, PushSwitch, ServiceReport, SessionServiceView,
    SessionStatus, SlotSummary, SlotsOf, Totals,
};
use registry_common::proto::meta::{MetaStatus, NodeRequest, RenewResponse};
use registry_common::slot::{slot_of, SlotTable};
use registry_common::time::now_ms;
use registry_rpc::server::ApiQuery;
use registry_rpc::{ApiJson, ErrorReply};
use serde::{Deserialize, Serialize};

use crate::api::{check_field, is_member, require_leader, EpochGuard};
use crate::error::MetaError;
use crate::raft::Conditional;
use crate::server::MetaState as Ctx;
use crate::state::MetaCommand;

/// How long one server may take to answer a status or service probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router(ctx: Arc<Ctx>) -> Router {
    let max_body = ctx.config.max_body_bytes;
    Router::new()
        .route("/admin/v1/status", get(cluster_status))
        .route("/admin/v1/members", get(members))
        .route("/admin/v1/slots", get(slots))
        .route("/admin/v1/services/{data_id}", get(service))
        .route("/admin/v1/push", post(push_switch))
        .route("/admin/v1/clients/off", post(client_off))
        .route("/admin/v1/clients/on", post(client_on))
        .route("/admin/v1/drain", post(drain))
        .route("/admin/v1/settings", post(settings))
        .route("/admin/v1/meta", get(node_status))
        .route("/admin/v1/meta/add-node", post(add_node))
        .route("/admin/v1/meta/remove-node", post(remove_node))
        .route("/admin/v1/acl", get(acl_show))
        .route("/admin/v1/acl/put", post(acl_put))
        .route("/admin/v1/acl/delete", post(acl_delete))
        .route("/admin/v1/acl/key-create", post(acl_key_create))
        .route("/admin/v1/acl/key-revoke", post(acl_key_revoke))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(ctx)
}

/// The members of the view with what each says about itself.
async fn probe_members(ctx: &Ctx, view: &ClusterView) -> Vec<MemberStatus> {
    let leases = ctx.leases.ages();
    let leases = &leases;
    let probes = view.members.values().map(|m| async move {
        let lease_age_ms = leases.iter().find(|l| l.id == m.id).map(|l| l.age_ms);
        let mut status = MemberStatus {
            id: m.id.clone(),
            role: m.role,
            addr: m.addr.clone(),
            zone: m.zone.clone(),
            lease_age_ms,
            draining: view.draining.contains(&m.id),
            reachable: false,
            ready: false,
            data: None,
            session: None,
        };
        match m.role {
            Role::Data => {
                if let Ok(s) = ctx
                    .http
                    .get::<DataStatus>(&m.addr, "/admin/v1/status", PROBE_TIMEOUT)
                    .await
                {
                    status.reachable = true;
                    status.ready = s.ready;
                    status.data = Some(s);
                }
            }
            Role::Session => {
                if let Ok(s) = ctx
                    .http
                    .get::<SessionStatus>(&m.addr, "/admin/v1/status", PROBE_TIMEOUT)
                    .await
                {
                    status.reachable = true;
                    status.ready = s.ready;
                    status.session = Some(s);
                }
            }
        }
        status
    });
    join_all(probes).await
}

/// Whether a peer meta node answers its readiness probe.
async fn meta_reachable(ctx: &Ctx, addr: &str) -> bool {
    ctx.http
        .probe(addr, "/health", PROBE_TIMEOUT)
        .await
        .is_ok_and(|status| status == 200)
}

fn slot_summary(view: &ClusterView) -> SlotSummary {
    let copies = view.settings.copies;
    let mut summary = SlotSummary {
        slot_count: view.slots.slot_count(),
        ..SlotSummary::default()
    };
    for m in view.members_of(Role::Data) {
        summary.per_server.push(SlotsOf {
            id: m.id.clone(),
            addr: m.addr.clone(),
            primaries: 0,
            replicas: 0,
        });
    }
    let data_servers = summary.per_server.len();
    for a in &view.slots.slots {
        if a.primary.is_none() {
            summary.without_primary += 1;
        }
        let held = a.holders().count();
        summary.missing_copies += copies.min(data_servers).saturating_sub(held);
        for s in summary.per_server.iter_mut() {
            if a.primary.as_ref() == Some(&s.id) {
                s.primaries += 1;
            } else if a.replicas.contains(&s.id) {
                s.replicas += 1;
            }
        }
    }
    summary
}

/// `GET /admin/v1/status`.
async fn cluster_status(State(ctx): State<Arc<Ctx>>) -> ApiJson<ClusterStatus> {
    let view = ctx.raft.with_state(|s| s.view.clone());
    let raft = ctx.raft.status();
    let (members, meta_reach) = tokio::join!(
        probe_members(&ctx, &view),
        join_all(raft.voters.iter().chain(&raft.learners).map(|(id, addr)| {
            let ctx = ctx.clone();
            async move {
                let reachable = *id == raft.id || meta_reachable(&ctx, addr).await;
                (*id, reachable)
            }
        }))
    );
    let meta_nodes: Vec<MetaNodeStatus> = raft
        .voters
        .iter()
        .map(|(id, addr)| (id, addr, true))
        .chain(raft.learners.iter().map(|(id, addr)| (id, addr, false)))
        .map(|(id, addr, voter)| MetaNodeStatus {
            node_id: *id,
            addr: addr.clone(),
            voter,
            leader: raft.leader_id == Some(*id),
            reachable: meta_reach.iter().any(|(n, r)| n == id && *r),
        })
        .collect();
    let slots = slot_summary(&view);
    let mut totals = Totals::default();
    for s in members.iter().filter_map(|m| m.session.as_ref()) {
        totals.connections += s.connections;
        totals.publishers += s.publishers;
        totals.subscribers += s.subscribers;
        totals.pushes_per_sec += s.pushes_per_sec;
    }
    let problems = problems(&view, &meta_nodes, raft.leader_id, &members, &slots, &ctx);
    ApiJson(ClusterStatus {
        node_id: raft.id,
        leader: raft.leader_id,
        term: raft.term,
        epoch: view.epoch,
        meta_nodes,
        members,
        slots,
        totals,
        push_enabled: view.settings.push_enabled,
        clients_off: view.settings.client_blacklist.clone(),
        problems,
    })
}

/// What needs an operator's attention, one line each.
fn problems(
    view: &ClusterView,
    meta_nodes: &[MetaNodeStatus],
    leader: Option<u64>,
    members: &[MemberStatus],
    slots: &SlotSummary,
    ctx: &Ctx,
) -> Vec<String> {
    let mut out = Vec::new();
    if leader.is_none() {
        out.push("no meta leader".to_string());
    }
    for n in meta_nodes.iter().filter(|n| !n.reachable) {
        out.push(format!(
            "meta node {} ({}) does not answer",
            n.node_id, n.addr
        ));
    }
    if view.members_of(Role::Data).next().is_none() {
        out.push("no data server".to_string());
    }
    if view.members_of(Role::Session).next().is_none() {
        out.push("no session server".to_string());
    }
    let lease_warn = ctx.config.lease_ms / 2;
    for m in members {
        let what = format!("{} {} ({})", m.role.as_str(), m.addr, m.id);
        if !m.reachable {
            out.push(format!("{what} does not answer"));
        } else if !m.ready && !m.draining {
            let why = m
                .data
                .as_ref()
                .and_then(|d| d.not_ready.clone())
                .or_else(|| m.session.as_ref().and_then(|s| s.not_ready.clone()))
                .unwrap_or_default();
            out.push(format!("{what} is not ready: {why}"));
        }
        if m.lease_age_ms.is_some_and(|a| a > lease_warn) {
            out.push(format!(
                "{what} has not renewed its lease for {} ms",
                m.lease_age_ms.unwrap_or_default()
            ));
        }
        if m.draining {
            out.push(format!("{what} is draining"));
        }
    }
    if slots.without_primary > 0 {
        out.push(format!("{} slots have no primary", slots.without_primary));
    }
    if slots.missing_copies > 0 {
        out.push(format!(
            "{} slot copies missing against copies = {}",
            slots.missing_copies, view.settings.copies
        ));
    }
    if !view.settings.push_enabled {
        out.push("pushes are switched off".to_string());
    }
    if !view.settings.client_blacklist.is_empty() {
        out.push(format!(
            "clients taken off: {}",
            view.settings.client_blacklist.join(", ")
        ));
    }
    out
}

/// `GET /admin/v1/members`.
async fn members(State(ctx): State<Arc<Ctx>>) -> ApiJson<Vec<MemberStatus>> {
    let view = ctx.raft.with_state(|s| s.view.clone());
    ApiJson(probe_members(&ctx, &view).await)
}

/// `GET /admin/v1/slots`.
async fn slots(State(ctx): State<Arc<Ctx>>) -> ApiJson<SlotTable> {
    ApiJson(ctx.raft.with_state(|s| s.view.slots.clone()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceParts {
    group: Option<String>,
    instance_id: Option<String>,
}

/// `GET /admin/v1/services/{dataId}`: what the data tier holds on each holder, the
/// publishers with their owning session and client, and every session's subscribers.
async fn service(
    State(ctx): State<Arc<Ctx>>,
    Path(data_id): Path<String>,
    ApiQuery(parts): ApiQuery<ServiceParts>,
) -> Result<ApiJson<ServiceReport>, ErrorReply> {
    let id = DataInfoId::new(
        &data_id,
        parts.instance_id.as_deref(),
        parts.group.as_deref(),
    )?;
    let view = ctx.raft.with_state(|s| s.view.clone());
    let slot = slot_of(&id, view.slots.slot_count());
    let query = format!(
        "/admin/v1/service?dataInfoId={}",
        percent_encode(id.as_str())
    );
    let mut report = ServiceReport {
        data_info_id: id.as_str().to_string(),
        slot,
        ..ServiceReport::default()
    };
    let placed: Vec<(MemberId, HolderRole)> = match view.slots.get(slot) {
        Some(a) => a
            .primary
            .iter()
            .map(|p| (p.clone(), HolderRole::Primary))
            .chain(a.replicas.iter().map(|r| (r.clone(), HolderRole::Replica)))
            .collect(),
        None => Vec::new(),
    };
    let holder_answers = join_all(placed.iter().map(|(m, _)| {
        let addr = view.addr_of(m).unwrap_or_default().to_string();
        let (ctx, query) = (ctx.clone(), query.clone());
        async move {
            ctx.http
                .get::<DataServiceView>(&addr, &query, PROBE_TIMEOUT)
                .await
                .ok()
        }
    }))
    .await;
    let mut primary_publishers = None;
    for ((m, placed_as), answer) in placed.iter().zip(holder_answers) {
        let addr = view.addr_of(m).unwrap_or_default().to_string();
        if answer.is_none() {
            report.unreachable.push(addr.clone());
        }
        if *placed_as == HolderRole::Primary {
            primary_publishers = answer.as_ref().map(|a| a.publishers.clone());
        }
        report.holders.push(HolderReport {
            id: m.clone(),
            addr,
            placed_as: *placed_as,
            role: answer.as_ref().map(|a| a.role),
            version: answer.as_ref().map(|a| a.version),
            publishers: answer.as_ref().map(|a| a.publishers.len()),
        });
    }
    let sessions: Vec<&Member> = view.members_of(Role::Session).collect();
    let session_answers = join_all(sessions.iter().map(|m| {
        let (ctx, query, addr) = (ctx.clone(), query.clone(), m.addr.clone());
        async move {
            ctx.http
                .get::<SessionServiceView>(&addr, &query, PROBE_TIMEOUT)
                .await
                .ok()
        }
    }))
    .await;
    let mut client_addrs: Vec<PublisherReport> = Vec::new();
    for (m, answer) in sessions.iter().zip(session_answers) {
        match answer {
            Some(a) => {
                client_addrs.extend(a.publishers);
                report.subscribers.extend(a.subscribers);
            }
            None => report.unreachable.push(m.addr.clone()),
        }
    }
    let known = report
        .holders
        .iter()
        .any(|h| h.version.is_some_and(|v| v > 0))
        || !report.subscribers.is_empty()
        || !client_addrs.is_empty();
    if !known && report.unreachable.is_empty() {
        return Err(MetaError::NotFound(format!(
            "no server knows {}: never published nor subscribed",
            id.as_str()
        ))
        .into());
    }
    // The data tier's primary is the truth of what subscribers get; the sessions add where
    // each publisher's client is connected.
    report.publishers = primary_publishers
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let client_addr = client_addrs
                .iter()
                .find(|c| c.client_id == p.key.client_id && c.regist_id == p.key.regist_id)
                .and_then(|c| c.client_addr.clone());
            PublisherReport {
                client_id: p.key.client_id,
                regist_id: p.key.regist_id,
                data: p.data,
                version: p.version,
                session: p.session,
                client_addr,
                app: p.app,
                zone: p.zone,
            }
        })
        .collect();
    Ok(ApiJson(report))
}

/// Percent-encodes a query value (dataInfoIds hold `#`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `POST /admin/v1/push`.
async fn push_switch(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<PushSwitch>,
) -> Result<ApiJson<RenewResponse>, ErrorReply> {
    let cmd = MetaCommand::SetPushEnabled {
        enabled: req.enabled,
    };
    Ok(ApiJson(
        admin_write(&ctx, cmd, EpochGuard::default()).await?,
    ))
}

fn check_address(address: &str) -> Result<(), MetaError> {
    check_field("address", address, true)
}

/// `POST /admin/v1/clients/off`.
async fn client_off(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<ClientAddress>,
) -> Result<ApiJson<RenewResponse>, ErrorReply> {
    check_address(&req.address)?;
    let cmd = MetaCommand::SetClientOff {
        address: req.address,
        off: true,
    };
    Ok(ApiJson(
        admin_write(&ctx, cmd, EpochGuard::default()).await?,
    ))
}

/// `POST /admin/v1/clients/on`.
async fn client_on(
    State(ctx): State<Arc<Ctx>>,
    ApiJson(req): ApiJson<ClientAddress>,
) -> Result<ApiJson<RenewResponse>, ErrorReply> {
    check_address(&req.address)?;
    let known = ctx
        .raft
        .with_state(|s| s.view.settings.client_blacklist.contains(&req.address));
    if !known {
        return Err(MetaError::NotFound(format!("client {} is not off", req.address)).into());
    }
    let cmd = MetaCommand::SetClientOff {
        address: req.address,
        off: false,
    };
    Ok(ApiJson(
        admin_write(&ctx, cmd, EpochGuard::default()).await?,
    ))
}

async fn node_status(State(ctx): State<Arc<Ctx>>) -> ApiJson<MetaStatus> {
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
        ctx.raft
            .wait_caught_up(req.node_id, ctx.raft.op_timeout())
            .await
            .map_err(MetaError::from)?;
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

/// `POST /admin/v1/drain`.
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

async fn acl_show(State(ctx): State<Arc<Ctx>>) -> ApiJson<Acl> {
    ApiJson(ctx.raft.with_state(|s| s.acl.redacted()))
}

/// `POST /admin/v1/acl/put`.
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
