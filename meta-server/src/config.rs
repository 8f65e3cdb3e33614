//! MetaServer configuration: flags with environment-variable equivalents; the defaults start
//! a single-voter meta node on port 9610 with its data under `./registry-data/meta`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::raft::{NodeId, RaftSettings};

/// Default port of a meta node (client API and Raft traffic).
pub const DEFAULT_PORT: u16 = 9610;

#[derive(Debug, Clone, Args)]
pub struct MetaConfig {
    /// Address to listen on (`host:port`; port 0 picks a free port).
    #[arg(
        long = "listen",
        env = "REGISTRY_META_LISTEN",
        default_value = "127.0.0.1:9610"
    )]
    pub listen: String,
    /// Address other nodes and servers reach this node at (defaults to the bound address).
    #[arg(long = "advertise", env = "REGISTRY_META_ADVERTISE")]
    pub advertise: Option<String>,
    /// Raft id of this node (unique in the meta cluster).
    #[arg(long = "node-id", env = "REGISTRY_META_NODE_ID", default_value_t = 1)]
    pub node_id: NodeId,
    /// Directory of the Raft log, vote and snapshots.
    #[arg(
        long = "data-dir",
        env = "REGISTRY_META_DATA_DIR",
        default_value = "registry-data/meta"
    )]
    pub data_dir: PathBuf,
    /// Initial voters as `id=host:port`, comma-separated. The node with the lowest id
    /// initialises the cluster when its data directory is pristine; the others wait to be
    /// contacted. Empty: this node alone. A node started with `--join` never initialises.
    #[arg(long = "peers", env = "REGISTRY_META_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Never initialise; wait to be added to an existing cluster (`registryctl meta add-node`).
    #[arg(long = "join", env = "REGISTRY_META_JOIN")]
    pub join: bool,
    /// Members renew their lease this often, in ms.
    #[arg(long, env = "REGISTRY_META_RENEW_MS", default_value_t = 2_000)]
    pub renew_interval_ms: u64,
    /// A member that has not renewed for this long is removed, in ms.
    #[arg(long, env = "REGISTRY_META_LEASE_MS", default_value_t = 10_000)]
    pub lease_ms: u64,
    /// A member whose heartbeat connection closed and that does not come back within this
    /// time is removed, in ms.
    #[arg(long, env = "REGISTRY_META_GRACE_MS", default_value_t = 1_000)]
    pub disconnect_grace_ms: u64,
    /// Raft heartbeat interval, in ms.
    #[arg(long, env = "REGISTRY_META_RAFT_HEARTBEAT_MS", default_value_t = 100)]
    pub raft_heartbeat_ms: u64,
    /// Raft election timeout (lower bound; the upper bound is twice this), in ms.
    #[arg(long, env = "REGISTRY_META_RAFT_ELECTION_MS", default_value_t = 500)]
    pub raft_election_ms: u64,
    /// Build a snapshot every this many log entries.
    #[arg(long, env = "REGISTRY_META_SNAPSHOT_EVERY", default_value_t = 1_000)]
    pub snapshot_every_logs: u64,
    /// Largest request body, in bytes.
    #[arg(long, env = "REGISTRY_META_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// File with the first admin access key, `KEY_ID:SECRET`. Installed once, as principal
    /// `admin`, by the first leader that has it; later changes go through `registryctl acl`.
    #[arg(long = "admin-key-file", env = "REGISTRY_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<PathBuf>,
    /// On SIGTERM, a leader hands leadership over and waits this long for another node to
    /// take it before it stops anyway, in ms.
    #[arg(
        long,
        env = "REGISTRY_META_HANDOVER_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub handover_timeout_ms: u64,
    #[command(flatten)]
    pub security: registry_rpc::auth::SecurityArgs,
}

impl Default for MetaConfig {
    fn default() -> Self {
        Self {
            listen: format!("127.0.0.1:{DEFAULT_PORT}"),
            advertise: None,
            node_id: 1,
            data_dir: PathBuf::from("registry-data/meta"),
            peers: Vec::new(),
            join: false,
            renew_interval_ms: 2_000,
            lease_ms: 10_000,
            disconnect_grace_ms: 1_000,
            raft_heartbeat_ms: 100,
            raft_election_ms: 500,
            snapshot_every_logs: 1_000,
            max_body_bytes: 1024 * 1024,
            admin_key_file: None,
            handover_timeout_ms: 5_000,
            security: registry_rpc::auth::SecurityArgs::default(),
        }
    }
}

impl MetaConfig {
    pub fn raft_settings(&self) -> RaftSettings {
        let election = self.raft_election_ms.max(self.raft_heartbeat_ms * 3);
        RaftSettings {
            heartbeat_ms: self.raft_heartbeat_ms,
            election_timeout_min_ms: election,
            election_timeout_max_ms: election * 2,
            snapshot_every_logs: self.snapshot_every_logs,
            ..RaftSettings::default()
        }
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.max(1))
    }

    pub fn handover_timeout(&self) -> Duration {
        Duration::from_millis(self.handover_timeout_ms)
    }

    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.disconnect_grace_ms)
    }

    /// Parses `--peers` (`id=host:port`).
    pub fn parse_peers(&self) -> Result<BTreeMap<NodeId, String>, String> {
        let mut out = BTreeMap::new();
        for p in &self.peers {
            let (id, addr) = p
                .split_once('=')
                .ok_or_else(|| format!("peer `{p}` is not of the form id=host:port"))?;
            let id: NodeId = id
                .trim()
                .parse()
                .map_err(|_| format!("peer id `{id}` is not a number"))?;
            out.insert(id, addr.trim().to_owned());
        }
        Ok(out)
    }
}
