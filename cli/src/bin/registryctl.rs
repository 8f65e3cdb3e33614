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

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use client_sdk::{Client, ClientConfig, ConnectionState, RegistrationOptions};
use registry_common::acl::{Acl, Permissions};
use registry_common::auth::Credential;
use registry_common::member::ClusterView;
use registry_common::proto::meta::{MetaStatus, NodeRequest};
use registry_common::tls::ClientTls;
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
    /// Access key file (`KEY_ID:SECRET`) to sign with: the SDK's hello for `pub` and `sub`,
    /// and every admin call (the key's principal needs the admin permission for those).
    #[arg(long = "key-file", env = "REGISTRY_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    /// Reach the servers over TLS (`https`, `wss`), trusting the system's CA roots.
    #[arg(long, env = "REGISTRY_TLS", global = true)]
    tls: bool,
    /// Reach the servers over TLS, trusting the CA certificates of this PEM file.
    #[arg(long = "tls-ca", env = "REGISTRY_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
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
    /// Principals, their permissions and access keys (admin permission needed).
    Acl {
        #[command(subcommand)]
        command: AclCommand,
    },
    /// A private certificate authority and server certificates for TLS.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Create a CA: writes `ca.pem` (give it to every server and client as `--tls-ca`) and
    /// `ca-key.pem` (keep it offline; mode 0600).
    Ca {
        /// Directory to write into.
        #[arg(long = "out-dir")]
        out_dir: PathBuf,
        /// Common name of the CA.
        #[arg(long, default_value = "registry cluster CA")]
        name: String,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Sign a certificate for a server: writes `<prefix>.pem` and `<prefix>-key.pem` (0600)
    /// for its `--tls-cert` and `--tls-key`.
    Cert {
        /// Directory holding `ca.pem` and `ca-key.pem`.
        #[arg(long = "ca-dir")]
        ca_dir: PathBuf,
        /// DNS name or IP address the server is reached at; repeatable, at least one.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Directory to write into.
        #[arg(long = "out-dir")]
        out_dir: PathBuf,
        /// File name prefix.
        #[arg(long, default_value = "server")]
        prefix: String,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

#[derive(Subcommand)]
enum AclCommand {
    /// Every principal with its permissions and key ids (never secrets).
    List {
        #[command(flatten)]
        meta: MetaTarget,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a principal or replace its permissions.
    Put {
        name: String,
        /// Pattern of dataIds it may publish (`*` and `?` globs, e.g. `com.acme.*`); repeatable.
        #[arg(long = "publish")]
        publish: Vec<String>,
        /// Pattern of dataIds it may subscribe to; repeatable.
        #[arg(long = "subscribe")]
        subscribe: Vec<String>,
        /// Grant the admin API.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        meta: MetaTarget,
    },
    /// Remove a principal; its keys stop working and their connections are closed.
    Delete {
        name: String,
        #[command(flatten)]
        meta: MetaTarget,
    },
    /// Access keys of a principal.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key (at most two per principal) and print `KEY_ID:SECRET`, shown this once.
    Create {
        principal: String,
        /// Write `KEY_ID:SECRET` to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        meta: MetaTarget,
    },
    /// Revoke a key: its connections are closed and it is refused from then on.
    Revoke {
        key_id: String,
        #[command(flatten)]
        meta: MetaTarget,
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

/// How every call of this run reaches the servers, set once in `main`.
struct Globals {
    /// The access key to sign with (`--key-file`).
    key: Option<Credential>,
    /// TLS roots (`--tls`, `--tls-ca`); `None`: plain connections.
    tls: Option<ClientTls>,
}

static GLOBALS: std::sync::OnceLock<Globals> = std::sync::OnceLock::new();

fn key() -> Option<Credential> {
    GLOBALS.get().and_then(|g| g.key.clone())
}

fn tls() -> Option<ClientTls> {
    GLOBALS.get().and_then(|g| g.tls.clone())
}

fn http() -> HttpClient {
    HttpClient::new(Duration::from_secs(30))
        .with_signer(key())
        .with_tls(tls())
}

fn client_config(target: &Target) -> ClientConfig {
    let mut config = ClientConfig::new([target.session.clone()]);
    config.credential = key();
    config.tls = tls();
    config
}

/// Resolves once the sessions keep refusing the client's credential (e.g. its key was
/// revoked).
async fn refused(client: &Client) -> String {
    let mut state = client.connection_state();
    let error = match state
        .wait_for(|s| matches!(s, ConnectionState::Refused { .. }))
        .await
    {
        Ok(s) => match &*s {
            ConnectionState::Refused { error } => Some(error.to_string()),
            _ => None,
        },
        Err(_) => None,
    };
    match error {
        Some(e) => e,
        // The client closed: nothing will be refused any more.
        None => std::future::pending().await,
    }
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
    let key = match &cli.key_file {
        Some(path) => Some(
            Credential::from_file(path)
                .with_context(|| format!("reading the key file {}", path.display()))?,
        ),
        None => None,
    };
    let tls = if cli.tls || cli.tls_ca.is_some() {
        Some(ClientTls::new(cli.tls_ca.as_deref()).context("loading the TLS roots")?)
    } else {
        None
    };
    let _ = GLOBALS.set(Globals { key, tls });
    match cli.command {
        Command::Pub {
            data_id,
            data,
            target,
        } => {
            let shutdown = shutdown_on_signal();
            let client = Client::connect(client_config(&target)).await?;
            let publisher = client
                .publish_with(&data_id, data, options(&target))
                .await?;
            eprintln!(
                "published {data_id} (registId {}); Ctrl-C to unregister",
                publisher.regist_id()
            );
            tokio::select! {
                _ = shutdown.cancelled() => {}
                error = refused(&client) => anyhow::bail!("credential refused: {error}"),
            }
            publisher.unregister().await?;
            eprintln!("unregistered");
            client.close().await;
        }
        Command::Sub { data_id, target } => {
            let shutdown = shutdown_on_signal();
            let client = Client::connect(client_config(&target)).await?;
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
                    error = refused(&client) => anyhow::bail!("credential refused: {error}"),
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
                    .get(&meta.meta, "/admin/v1/meta", Duration::from_secs(5))
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
                    meta_post(&meta.meta, "/admin/v1/meta/add-node", &req).await?;
                print_json(&out)?;
            }
            MetaCommand::RemoveNode { node_id, meta } => {
                let req = NodeRequest {
                    node_id,
                    addr: String::new(),
                    voter: false,
                };
                let out: serde_json::Value =
                    meta_post(&meta.meta, "/admin/v1/meta/remove-node", &req).await?;
                print_json(&out)?;
            }
        },
        Command::Acl { command } => acl(command).await?,
        Command::Tls { command } => tls_files(command)?,
        Command::GenSecret { key_id, out } => {
            let secret = registry_common::auth::Secret::generate();
            let line = match key_id {
                Some(id) => Credential::new(id.clone(), &secret)
                    .map(|_| format!("{id}:{secret}"))
                    .context("invalid key id")?,
                None => secret,
            };
            match out {
                Some(path) => write_private(&path, &format!("{line}\n"))?,
                None => println!("{line}"),
            }
        }
    }
    Ok(())
}

async fn acl(command: AclCommand) -> anyhow::Result<()> {
    match command {
        AclCommand::List { meta, json } => {
            let acl: Acl = http()
                .get(&meta.meta, "/admin/v1/acl", Duration::from_secs(5))
                .await?;
            if json {
                return print_json(&acl);
            }
            println!("revision {}", acl.revision);
            println!(
                "{:<20} {:<6} {:<30} {:<30} keys",
                "principal", "admin", "publish", "subscribe"
            );
            for (name, p) in &acl.principals {
                let keys: Vec<&str> = p.keys.iter().map(|k| k.id.as_str()).collect();
                println!(
                    "{:<20} {:<6} {:<30} {:<30} {}",
                    name,
                    if p.permissions.admin { "yes" } else { "no" },
                    p.permissions.publish.join(","),
                    p.permissions.subscribe.join(","),
                    keys.join(",")
                );
            }
        }
        AclCommand::Put {
            name,
            publish,
            subscribe,
            admin,
            meta,
        } => {
            let mut body = serde_json::to_value(Permissions {
                publish,
                subscribe,
                admin,
            })?;
            body["name"] = json!(name);
            let out: serde_json::Value = meta_post(&meta.meta, "/admin/v1/acl/put", &body).await?;
            print_json(&out)?;
        }
        AclCommand::Delete { name, meta } => {
            let out: serde_json::Value =
                meta_post(&meta.meta, "/admin/v1/acl/delete", &json!({"name": name})).await?;
            print_json(&out)?;
        }
        AclCommand::Key { command } => match command {
            KeyCommand::Create {
                principal,
                out,
                meta,
            } => {
                let created: serde_json::Value = meta_post(
                    &meta.meta,
                    "/admin/v1/acl/key-create",
                    &json!({"principal": principal}),
                )
                .await?;
                let key_id = created["keyId"]
                    .as_str()
                    .context("no keyId in the answer")?;
                let secret = created["secret"]
                    .as_str()
                    .context("no secret in the answer")?;
                let line = format!("{key_id}:{secret}");
                match out {
                    Some(path) => {
                        write_private(&path, &format!("{line}\n"))?;
                        eprintln!("key {key_id} of {principal} written to {}", path.display());
                    }
                    None => println!("{line}"),
                }
            }
            KeyCommand::Revoke { key_id, meta } => {
                let out: serde_json::Value = meta_post(
                    &meta.meta,
                    "/admin/v1/acl/key-revoke",
                    &json!({"keyId": key_id}),
                )
                .await?;
                print_json(&out)?;
            }
        },
    }
    Ok(())
}

fn tls_files(command: TlsCommand) -> anyhow::Result<()> {
    match command {
        TlsCommand::Ca {
            out_dir,
            name,
            days,
        } => {
            let ca = registry_cli::certs::new_ca(&name, days)?;
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            std::fs::write(out_dir.join("ca.pem"), &ca.cert_pem)?;
            write_private(&out_dir.join("ca-key.pem"), &ca.key_pem)?;
            eprintln!("CA written to {} (ca.pem, ca-key.pem)", out_dir.display());
        }
        TlsCommand::Cert {
            ca_dir,
            names,
            out_dir,
            prefix,
            days,
        } => {
            let read = |name: &str| {
                let path = ca_dir.join(name);
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))
            };
            let ca = registry_cli::certs::CertPair {
                cert_pem: read("ca.pem")?,
                key_pem: read("ca-key.pem")?,
            };
            let cert = registry_cli::certs::issue(&ca, &names, days)?;
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            std::fs::write(out_dir.join(format!("{prefix}.pem")), &cert.cert_pem)?;
            write_private(&out_dir.join(format!("{prefix}-key.pem")), &cert.key_pem)?;
            eprintln!(
                "certificate for {} written to {} ({prefix}.pem, {prefix}-key.pem)",
                names.join(", "),
                out_dir.display()
            );
        }
    }
    Ok(())
}

/// Writes a secret file readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
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
            .get::<serde_json::Value>(&m.addr, "/admin/v1/status", Duration::from_secs(5))
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
        "/admin/v1/drain",
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
