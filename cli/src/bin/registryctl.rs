//! `registryctl`: publish, subscribe and operate the registry from a terminal.

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
