//! The operator's commands: status, members, one service, the push switch, clients off and
//! on, the data tier's slots and drain, the meta cluster's membership.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use registry_common::member::{ClusterView, Role};
use registry_common::proto::admin::{ClusterStatus, MemberStatus, ServiceReport};
use registry_common::proto::meta::{MetaStatus, NodeRequest};
use serde_json::{json, Value};

use super::show::{self, opt, yes};
use super::target::Ctx;

/// Exit code of `status` when something needs attention.
pub const EXIT_PROBLEMS: u8 = 3;

#[derive(Subcommand)]
pub enum OnOff {
    /// Switch off.
    Off,
    /// Switch on.
    On,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Take a client address off: its connections are closed, its publishers withdrawn, its
    /// reconnects refused.
    Off { address: String },
    /// Let a client address back.
    On { address: String },
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// The slot table by server: slots held and publisher counts.
    Slots,
    /// Move every slot off a data server (member id or address) so it can leave.
    Drain {
        server: String,
        /// Return once the drain is recorded instead of waiting for the hand-off.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long = "timeout-secs", default_value_t = 300)]
        timeout_secs: u64,
    },
}

#[derive(Subcommand)]
pub enum MetaCommand {
    /// Leader, term, voters, learners, applied index and lease ages of a meta node.
    Status,
    /// Add a meta node as learner (and promote it with --voter).
    AddNode {
        #[arg(long = "node-id")]
        node_id: u64,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        voter: bool,
    },
    /// Remove a meta node from the voters.
    RemoveNode {
        #[arg(long = "node-id")]
        node_id: u64,
    },
}

fn member_rows(members: &[MemberStatus]) -> comfy_table::Table {
    let mut t = show::table([
        "role",
        "address",
        "ready",
        "lease age",
        "detail",
        "member id",
    ]);
    for m in members {
        let detail = match (&m.data, &m.session) {
            (Some(d), _) => format!(
                "{} primary / {} replica slots, {} publishers{}",
                d.primary_slots,
                d.replica_slots,
                d.publishers,
                d.not_ready
                    .as_ref()
                    .map(|w| format!("; {w}"))
                    .unwrap_or_default()
            ),
            (_, Some(s)) => format!(
                "{} connections, {} publishers, {} subscriptions, {:.0} pushes/s{}",
                s.connections,
                s.publishers,
                s.subscribers,
                s.pushes_per_sec,
                s.not_ready
                    .as_ref()
                    .map(|w| format!("; {w}"))
                    .unwrap_or_default()
            ),
            _ => "does not answer".to_string(),
        };
        let ready = if m.draining {
            "draining".to_string()
        } else {
            yes(m.ready).to_string()
        };
        t.add_row([
            m.role.as_str().to_string(),
            m.addr.clone(),
            ready,
            opt(m.lease_age_ms.map(|a| format!("{a} ms"))),
            detail,
            m.id.to_string(),
        ]);
    }
    t
}

/// `registryctl status`: the cluster on one screen; exits 3 when something is wrong.
pub async fn status(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let s: ClusterStatus = ctx.admin().get("/admin/v1/status").await?;
    let code = if s.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PROBLEMS)
    };
    if ctx.globals.json {
        show::json(&s)?;
        return Ok(code);
    }
    let leader = s
        .meta_nodes
        .iter()
        .find(|n| n.leader)
        .map(|n| format!("node {} at {}", n.node_id, n.addr))
        .unwrap_or_else(|| "none".into());
    println!(
        "leader {leader}, term {}, epoch {}; pushes {}; {} connections, {} publishers, {} subscriptions, {:.0} pushes/s",
        s.term,
        s.epoch,
        if s.push_enabled { "on" } else { "OFF" },
        s.totals.connections,
        s.totals.publishers,
        s.totals.subscribers,
        s.totals.pushes_per_sec
    );
    let mut metas = show::table(["meta node", "address", "voter", "leader", "answers"]);
    for n in &s.meta_nodes {
        metas.add_row([
            n.node_id.to_string(),
            n.addr.clone(),
            yes(n.voter).to_string(),
            yes(n.leader).to_string(),
            yes(n.reachable).to_string(),
        ]);
    }
    println!("{metas}");
    println!("{}", member_rows(&s.members));
    let mut slots = show::table(["data server", "primary slots", "replica slots"]);
    for p in &s.slots.per_server {
        slots.add_row([
            p.addr.clone(),
            p.primaries.to_string(),
            p.replicas.to_string(),
        ]);
    }
    println!("{slots}");
    if s.problems.is_empty() {
        println!("no problems");
    } else {
        println!("problems:");
        for p in &s.problems {
            println!("  - {p}");
        }
    }
    Ok(code)
}

/// `registryctl members`.
pub async fn members(ctx: &Ctx) -> anyhow::Result<()> {
    let members: Vec<MemberStatus> = ctx.admin().get("/admin/v1/members").await?;
    if ctx.globals.json {
        return show::json(&members);
    }
    println!("{}", member_rows(&members));
    Ok(())
}

/// `registryctl service <dataId>`.
pub async fn service(
    ctx: &Ctx,
    data_id: &str,
    group: Option<&str>,
    instance_id: Option<&str>,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(g) = group {
        query.push(format!("group={}", encode(g)));
    }
    if let Some(i) = instance_id {
        query.push(format!("instanceId={}", encode(i)));
    }
    let path = format!(
        "/admin/v1/services/{}{}{}",
        encode(data_id),
        if query.is_empty() { "" } else { "?" },
        query.join("&")
    );
    let r: ServiceReport = ctx.admin().get(&path).await?;
    if ctx.globals.json {
        return show::json(&r);
    }
    println!("{} (slot {})", r.data_info_id, r.slot);
    let mut holders = show::table(["data server", "placed as", "says", "version", "publishers"]);
    for h in &r.holders {
        holders.add_row([
            h.addr.clone(),
            format!("{:?}", h.placed_as).to_lowercase(),
            opt(h.role.map(|r| format!("{r:?}").to_lowercase())),
            opt(h.version),
            opt(h.publishers),
        ]);
    }
    println!("{holders}");
    let mut pubs = show::table([
        "data",
        "client",
        "session",
        "client id",
        "regist id",
        "version",
    ]);
    for p in &r.publishers {
        pubs.add_row([
            p.data.join(" "),
            opt(p.client_addr.clone()),
            p.session.to_string(),
            p.client_id.clone(),
            p.regist_id.clone(),
            p.version.to_string(),
        ]);
    }
    println!("{} publishers\n{pubs}", r.publishers.len());
    let mut subs = show::table(["client", "session", "acked version", "in flight", "pending"]);
    for s in &r.subscribers {
        subs.add_row([
            s.client_addr.clone(),
            s.session.to_string(),
            opt(s.acked_version),
            opt(s.inflight_version),
            opt(s.pending_version),
        ]);
    }
    println!("{} subscribers\n{subs}", r.subscribers.len());
    if !r.unreachable.is_empty() {
        println!("did not answer: {}", r.unreachable.join(", "));
    }
    Ok(())
}

/// Percent-encodes one path segment or query value.
fn encode(s: &str) -> String {
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

fn done(ctx: &Ctx, what: String, answer: &Value) -> anyhow::Result<()> {
    if ctx.globals.json {
        return show::json(answer);
    }
    println!("{what}");
    Ok(())
}

/// `registryctl push off|on`.
pub async fn push(ctx: &Ctx, switch: OnOff) -> anyhow::Result<()> {
    let enabled = matches!(switch, OnOff::On);
    let answer: Value = ctx
        .admin()
        .post("/admin/v1/push", &json!({ "enabled": enabled }))
        .await?;
    done(
        ctx,
        format!(
            "pushes switched {} (epoch {})",
            if enabled { "on" } else { "off" },
            answer["epoch"]
        ),
        &answer,
    )
}

/// `registryctl client off|on <address>`.
pub async fn client(ctx: &Ctx, command: ClientCommand) -> anyhow::Result<()> {
    let (path, address, what) = match command {
        ClientCommand::Off { address } => ("/admin/v1/clients/off", address, "taken off"),
        ClientCommand::On { address } => ("/admin/v1/clients/on", address, "back on"),
    };
    let answer: Value = ctx
        .admin()
        .post(path, &json!({ "address": address }))
        .await?;
    done(ctx, format!("client {address} {what}"), &answer)
}

async fn view(ctx: &Ctx) -> anyhow::Result<ClusterView> {
    ctx.admin().get("/meta/v1/view").await
}

/// `registryctl data slots|drain`.
pub async fn data(ctx: &Ctx, command: DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::Slots => {
            let members: Vec<MemberStatus> = ctx.admin().get("/admin/v1/members").await?;
            let datas: Vec<&MemberStatus> =
                members.iter().filter(|m| m.role == Role::Data).collect();
            if ctx.globals.json {
                return show::json(&datas);
            }
            let mut t = show::table([
                "data server",
                "primary",
                "replica",
                "syncing",
                "publishers",
                "as primary",
                "member id",
            ]);
            for m in datas {
                let d = m.data.clone().unwrap_or_default();
                let known = m.data.is_some();
                let n = |v: usize| if known { v.to_string() } else { "?".into() };
                t.add_row([
                    m.addr.clone(),
                    n(d.primary_slots),
                    n(d.replica_slots),
                    n(d.syncing_slots),
                    n(d.publishers),
                    n(d.primary_publishers),
                    m.id.to_string(),
                ]);
            }
            println!("{t}");
            Ok(())
        }
        DataCommand::Drain {
            server,
            no_wait,
            timeout_secs,
        } => drain(ctx, &server, no_wait, timeout_secs).await,
    }
}

async fn drain(ctx: &Ctx, server: &str, no_wait: bool, wait_secs: u64) -> anyhow::Result<()> {
    let v = view(ctx).await?;
    let member = v
        .members_of(Role::Data)
        .find(|m| m.id.as_str() == server || m.addr == server)
        .ok_or_else(|| anyhow::anyhow!("no data server `{server}` in the cluster view"))?
        .id
        .clone();
    let _: Value = ctx
        .admin()
        .post(
            "/admin/v1/drain",
            &json!({"ids": [member.clone()], "draining": true}),
        )
        .await?;
    eprintln!("draining {member}");
    if no_wait {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    loop {
        let v = view(ctx).await?;
        let held = v.slots.slots.iter().filter(|a| a.holds(&member)).count();
        let members: Vec<MemberStatus> = ctx.admin().get("/admin/v1/members").await?;
        let syncing: usize = members
            .iter()
            .filter_map(|m| m.data.as_ref())
            .map(|d| d.syncing_slots)
            .sum();
        if held == 0 && syncing == 0 {
            eprintln!("{member} holds no slot and every slot is handed off; it can be stopped");
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("still {held} slots held and {syncing} syncing after {wait_secs} s");
        }
        eprintln!("waiting: {held} slots still held, {syncing} slots syncing");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `registryctl meta status|add-node|remove-node`.
pub async fn meta(ctx: &Ctx, command: MetaCommand) -> anyhow::Result<()> {
    match command {
        MetaCommand::Status => {
            let s: MetaStatus = ctx.admin().get("/admin/v1/meta").await?;
            if ctx.globals.json {
                return show::json(&s);
            }
            println!(
                "node {} at {}; leader {} ({}); term {}; epoch {}; last log {}; applied {}",
                s.node_id,
                s.addr,
                opt(s.leader),
                opt(s.leader_addr.clone()),
                s.term,
                s.epoch,
                opt(s.last_log_index),
                opt(s.last_applied)
            );
            println!("voters {:?}, learners {:?}", s.voters, s.learners);
            if !s.leases.is_empty() {
                let mut t = show::table(["member", "lease age"]);
                for l in &s.leases {
                    t.add_row([l.id.to_string(), format!("{} ms", l.age_ms)]);
                }
                println!("{t}");
            }
            Ok(())
        }
        MetaCommand::AddNode {
            node_id,
            addr,
            voter,
        } => {
            let req = NodeRequest {
                node_id,
                addr,
                voter,
            };
            let out: Value = ctx.admin().post("/admin/v1/meta/add-node", &req).await?;
            done(
                ctx,
                format!("voters {}, learners {}", out["voters"], out["learners"]),
                &out,
            )
        }
        MetaCommand::RemoveNode { node_id } => {
            let req = NodeRequest {
                node_id,
                addr: String::new(),
                voter: false,
            };
            let out: Value = ctx.admin().post("/admin/v1/meta/remove-node", &req).await?;
            done(
                ctx,
                format!("voters {}, learners {}", out["voters"], out["learners"]),
                &out,
            )
        }
    }
}
