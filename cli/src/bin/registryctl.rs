//! `registryctl`: publish, subscribe and operate the registry from a terminal.

/// jemalloc: far fewer cycles in malloc/free than the system allocator on this workload of
/// many small short-lived buffers (JSON frames), with less fragmentation.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Return freed memory to the system within a second instead of ten, from a background
/// thread, so resident memory follows the load down.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use client_sdk::{Client, ClientConfig, RegistrationOptions};
use registry_common::member::ClusterView;
use registry_common::proto::meta::{MetaStatus, NodeRequest};
use registry_rpc::runtime::shutdown_on_signal;
use registry_rpc::HttpClient;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "registryctl",
    version,
    about = "Publish, subscribe and operate the registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Target {
    /// Session server address.
    #[arg(long, env = "REGISTRY_SESSION", default_value = "127.0.0.1:9600")]
    session: String,
    /// Group of the dataInfoId.
    #[arg(long)]
    group: Option<String>,
    /// Instance id of the dataInfoId.
    #[arg(long = "instance-id")]
    instance_id: Option<String>,
}

#[derive(Args, Clone)]
struct MetaTarget {
    /// Meta node address (any node).
    #[arg(long, env = "REGISTRY_META", default_value = "127.0.0.1:9610")]
    meta: String,
}

#[derive(Subcommand)]
enum Command {
    /// Publish data under a dataId and stay connected until Ctrl-C (which unregisters).
    Pub {
        data_id: String,
        #[arg(required = true)]
        data: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Subscribe to a dataId and print one JSON object per push.
    Sub {
        data_id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Show the cluster view (epoch, members, slot table).
    Members {
        #[command(flatten)]
        meta: MetaTarget,
    },
    /// Operate the meta cluster.
    Meta {
        #[command(subcommand)]
        command: MetaCommand,
    },
    /// Operate the data tier.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// The slot table by server: slots held and publisher counts.
    Slots {
        #[command(flatten)]
        meta: MetaTarget,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move every slot off a data server (member id or address) so it can leave.
    Drain {
        server: String,
        #[command(flatten)]
        meta: MetaTarget,
        /// Return once the drain is recorded instead of waiting for the hand-off.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
}

#[derive(Subcommand)]
enum MetaCommand {
    /// Leader, term, voters, learners, applied index and lease ages of a meta node.
    Status {
        #[command(flatten)]
        meta: MetaTarget,
    },
    /// Add a meta node as learner (and promote it with --voter).
    AddNode {
        #[arg(long = "node-id")]
        node_id: u64,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        voter: bool,
        #[command(flatten)]
        meta: MetaTarget,
    },
    /// Remove a meta node from the voters.
    RemoveNode {
        #[arg(long = "node-id")]
        node_id: u64,
        #[command(flatten)]
        meta: MetaTarget,
    },
}

fn options(t: &Target) -> RegistrationOptions {
    RegistrationOptions {
        instance_id: t.instance_id.clone(),
        group: t.group.clone(),
    }
}

fn http() -> HttpClient {
    HttpClient::new(Duration::from_secs(30))
}

/// Sends an admin write to the meta leader, following one redirect.
async fn meta_post<T: serde::de::DeserializeOwned>(
    addr: &str,
    path: &str,
    body: &impl serde::Serialize,
) -> anyhow::Result<T> {
    match http().post::<_, T>(addr, path, body).await {
        Err(registry_rpc::RpcError::Api(e)) if e.redirect.is_some() => {
            let leader = e.redirect.unwrap_or_default();
            Ok(http().post(&leader, path, body).await?)
        }
        other => Ok(other?),
    }
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    registry_rpc::runtime::init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Pub {
            data_id,
            data,
            target,
        } => {
            let shutdown = shutdown_on_signal();
            let client = Client::connect(ClientConfig::new([target.session.clone()])).await?;
            let publisher = client
                .publish_with(&data_id, data, options(&target))
                .await?;
            eprintln!(
                "published {data_id} (registId {}); Ctrl-C to unregister",
                publisher.regist_id()
            );
            shutdown.cancelled().await;
            publisher.unregister().await?;
            eprintln!("unregistered");
            client.close().await;
        }
        Command::Sub { data_id, target } => {
            let shutdown = shutdown_on_signal();
            let client = Client::connect(ClientConfig::new([target.session.clone()])).await?;
            let mut sub = client
                .subscribe_with(&data_id, options(&target), None)
                .await?;
            loop {
                tokio::select! {
                    update = sub.next() => {
                        let Some(u) = update else { break };
                        println!("{}", json!({"dataInfoId": u.data_info_id, "version": u.version, "data": u.data}));
                    }
                    _ = shutdown.cancelled() => break,
                }
            }
            client.close().await;
        }
        Command::Members { meta } => {
            let view: ClusterView = http()
                .get(&meta.meta, "/meta/v1/view", Duration::from_secs(5))
                .await?;
            print_json(&view)?;
        }
        Command::Data { command } => match command {
            DataCommand::Slots { meta, json } => data_slots(&meta.meta, json).await?,
            DataCommand::Drain {
                server,
                meta,
                no_wait,
                timeout_secs,
            } => data_drain(&meta.meta, &server, no_wait, timeout_secs).await?,
        },
        Command::Meta { command } => match command {
            MetaCommand::Status { meta } => {
                let status: MetaStatus = http()
                    .get(&meta.meta, "/meta/v1/status", Duration::from_secs(5))
                    .await?;
                print_json(&status)?;
            }
            MetaCommand::AddNode {
                node_id,
                addr,
                voter,
                meta,
            } => {
                let req = NodeRequest {
                    node_id,
                    addr,
                    voter,
                };
                let out: serde_json::Value =
                    meta_post(&meta.meta, "/meta/v1/admin/add-node", &req).await?;
                print_json(&out)?;
            }
            MetaCommand::RemoveNode { node_id, meta } => {
                let req = NodeRequest {
                    node_id,
                    addr: String::new(),
                    voter: false,
                };
                let out: serde_json::Value =
                    meta_post(&meta.meta, "/meta/v1/admin/remove-node", &req).await?;
                print_json(&out)?;
            }
        },
    }
    Ok(())
}

async fn view_of(meta: &str) -> anyhow::Result<ClusterView> {
    Ok(http()
        .get(meta, "/meta/v1/view", Duration::from_secs(5))
        .await?)
}

/// Status of every data server in the view (`None` where it did not answer).
async fn data_statuses(view: &ClusterView) -> Vec<(String, String, Option<serde_json::Value>)> {
    let client = http();
    let mut out = Vec::new();
    for m in view.members_of(registry_common::member::Role::Data) {
        let status = client
            .get::<serde_json::Value>(&m.addr, "/data/v1/status", Duration::from_secs(5))
            .await
            .ok();
        out.push((m.id.to_string(), m.addr.clone(), status));
    }
    out
}

async fn data_slots(meta: &str, as_json: bool) -> anyhow::Result<()> {
    let view = view_of(meta).await?;
    let statuses = data_statuses(&view).await;
    if as_json {
        let rows: Vec<serde_json::Value> = statuses
            .iter()
            .map(|(id, addr, s)| json!({"id": id, "addr": addr, "status": s}))
            .collect();
        return print_json(&json!({"epoch": view.epoch, "servers": rows}));
    }
    println!("epoch {}", view.epoch);
    println!(
        "{:<44} {:<22} {:>7} {:>7} {:>7} {:>12} {:>12}",
        "server", "addr", "primary", "replica", "syncing", "publishers", "as primary"
    );
    for (id, addr, s) in &statuses {
        let field = |k: &str| {
            s.as_ref()
                .and_then(|s| s.get(k))
                .and_then(serde_json::Value::as_u64)
                .map_or_else(|| "?".to_string(), |v| v.to_string())
        };
        println!(
            "{:<44} {:<22} {:>7} {:>7} {:>7} {:>12} {:>12}",
            id,
            addr,
            field("primarySlots"),
            field("replicaSlots"),
            field("syncingSlots"),
            field("publishers"),
            field("primaryPublishers")
        );
    }
    let unassigned = view
        .slots
        .slots
        .iter()
        .filter(|a| a.primary.is_none())
        .count();
    if unassigned > 0 {
        println!("{unassigned} slots have no primary");
    }
    Ok(())
}

async fn data_drain(
    meta: &str,
    server: &str,
    no_wait: bool,
    timeout_secs: u64,
) -> anyhow::Result<()> {
    let view = view_of(meta).await?;
    let member = view
        .members_of(registry_common::member::Role::Data)
        .find(|m| m.id.as_str() == server || m.addr == server)
        .ok_or_else(|| anyhow::anyhow!("no data server `{server}` in the cluster view"))?
        .id
        .clone();
    let _: serde_json::Value = meta_post(
        meta,
        "/meta/v1/admin/drain",
        &json!({"ids": [member.clone()], "draining": true}),
    )
    .await?;
    eprintln!("draining {member}");
    if no_wait {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        let view = view_of(meta).await?;
        let held = view.slots.slots.iter().filter(|a| a.holds(&member)).count();
        let syncing: u64 = data_statuses(&view)
            .await
            .iter()
            .filter_map(|(_, _, s)| s.as_ref()?.get("syncingSlots")?.as_u64())
            .sum();
        if held == 0 && syncing == 0 {
            eprintln!("{member} holds no slot and every slot is handed off; it can be stopped");
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("still {held} slots held and {syncing} syncing after {timeout_secs} s");
        }
        eprintln!("waiting: {held} slots still held, {syncing} slots syncing");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
