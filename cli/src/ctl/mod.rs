//! `registryctl`: publish, subscribe and operate the registry from a terminal.
//!
//! - [`target`]: the options every command takes (address lists, key, TLS, `--json`) and the
//!   admin client that fails over across the meta nodes.
//! - [`show`]: tables and JSON.
//! - [`cluster`]: status, members, one service, the push switch, clients off and on, data
//!   slots and drain, meta membership.
//! - [`access`]: principals and keys, secrets, certificates.
//! - [`pubsub`]: `pub` and `sub`.
//!
//! Exit codes: 0 done; 1 failed (one line on stderr saying why); 2 bad usage; 3 `status`
//! found something that needs attention.

pub mod access;
pub mod cluster;
pub mod pubsub;
pub mod show;
pub mod target;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use client_sdk::RegistrationOptions;

use access::{AclCommand, TlsCommand};
use cluster::{ClientCommand, DataCommand, MetaCommand, OnOff};
use target::{Ctx, Globals};

#[derive(Parser)]
#[command(
    name = "registryctl",
    about = "Publish, subscribe and operate the registry",
    after_help = "Exit codes: 0 done, 1 failed, 2 bad usage, 3 `status` found problems."
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(flatten)]
    pub log: registry_rpc::runtime::LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Optional parts of a dataInfoId.
#[derive(Args, Clone)]
pub struct IdParts {
    /// Group of the dataInfoId.
    #[arg(long)]
    group: Option<String>,
    /// Instance id of the dataInfoId.
    #[arg(long = "instance-id")]
    instance_id: Option<String>,
}

impl IdParts {
    fn options(&self) -> RegistrationOptions {
        RegistrationOptions {
            instance_id: self.instance_id.clone(),
            group: self.group.clone(),
        }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// The cluster on one screen: leader, members and their health, slot balance, totals,
    /// anything wrong (exit code 3 then).
    Status,
    /// Members with their health and lease ages.
    Members,
    /// One service across the cluster: holders, publishers, subscribers.
    Service {
        data_id: String,
        #[command(flatten)]
        id: IdParts,
    },
    /// The emergency push switch: `off` stops every push, `on` sends everyone the newest.
    Push {
        #[command(subcommand)]
        switch: OnOff,
    },
    /// Take a client address off, or let it back.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Publish data under a dataId and stay connected until Ctrl-C (which unregisters).
    Pub {
        data_id: String,
        #[arg(required = true)]
        data: Vec<String>,
        #[command(flatten)]
        id: IdParts,
    },
    /// Subscribe to a dataId and print one JSON object per push.
    Sub {
        data_id: String,
        #[command(flatten)]
        id: IdParts,
    },
    /// Operate the data tier.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Operate the meta cluster.
    Meta {
        #[command(subcommand)]
        command: MetaCommand,
    },
    /// Principals, their permissions and access keys (admin permission needed).
    Acl {
        #[command(subcommand)]
        command: AclCommand,
    },
    /// Print a fresh random secret: a cluster secret, or with `--key-id` an access key
    /// `KEY_ID:SECRET` (for the meta nodes' `--admin-key-file`).
    GenSecret {
        /// Print `KEY_ID:SECRET` with this key id.
        #[arg(long = "key-id")]
        key_id: Option<String>,
        /// Write it to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A private certificate authority and server certificates for TLS.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
}

/// Runs one command; the exit code on success.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::new(cli.globals)?;
    match cli.command {
        Command::Status => return cluster::status(&ctx).await,
        Command::Members => cluster::members(&ctx).await?,
        Command::Service { data_id, id } => {
            cluster::service(
                &ctx,
                &data_id,
                id.group.as_deref(),
                id.instance_id.as_deref(),
            )
            .await?
        }
        Command::Push { switch } => cluster::push(&ctx, switch).await?,
        Command::Client { command } => cluster::client(&ctx, command).await?,
        Command::Pub { data_id, data, id } => {
            pubsub::publish(&ctx, &data_id, data, id.options()).await?
        }
        Command::Sub { data_id, id } => pubsub::subscribe(&ctx, &data_id, id.options()).await?,
        Command::Data { command } => cluster::data(&ctx, command).await?,
        Command::Meta { command } => cluster::meta(&ctx, command).await?,
        Command::Acl { command } => access::acl(&ctx, command).await?,
        Command::GenSecret { key_id, out } => access::gen_secret(key_id, out)?,
        Command::Tls { command } => access::tls(command)?,
    }
    Ok(ExitCode::SUCCESS)
}
