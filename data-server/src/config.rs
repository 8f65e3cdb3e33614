//! DataServer configuration: flags with environment-variable equivalents; the defaults start
//! a working local server next to a MetaServer on its default port.

use std::time::Duration;

use clap::Args;

use crate::slots::SyncGate;

use crate::store::LogLimits;

/// Default HTTP port of a data server.
pub const DEFAULT_PORT: u16 = 9620;

#[derive(Debug, Clone, Args)]
pub struct DataConfig {
    /// Address to listen on (`host:port`; port 0 picks a free port).
    #[arg(
        long = "listen",
        env = "REGISTRY_DATA_LISTEN",
        default_value = "127.0.0.1:9620"
    )]
    pub listen: String,
    /// Address other servers reach this one at (defaults to the bound listen address).
    #[arg(long = "advertise", env = "REGISTRY_DATA_ADVERTISE")]
    pub advertise: Option<String>,
    /// MetaServer addresses, comma-separated.
    #[arg(
        long = "meta",
        env = "REGISTRY_META",
        value_delimiter = ',',
        default_value = "127.0.0.1:9610"
    )]
    pub meta: Vec<String>,
    /// Zone this server runs in.
    #[arg(long, env = "REGISTRY_ZONE", default_value = "default")]
    pub zone: String,
    /// Most operations kept in each dataInfoId's operation log.
    #[arg(long, env = "REGISTRY_DATA_OPLOG_MAX_OPS", default_value_t = 8)]
    pub oplog_max_ops: usize,
    /// Oldest operation kept in an operation log, in milliseconds.
    #[arg(long, env = "REGISTRY_DATA_OPLOG_MAX_AGE_MS", default_value_t = 10_000)]
    pub oplog_max_age_ms: u64,
    /// How long after a session server leaves the membership its publishers are removed.
    #[arg(long, env = "REGISTRY_DATA_SESSION_GRACE_MS", default_value_t = 3_000)]
    pub session_cleanup_grace_ms: u64,
    /// Change notifications carry the datum when it has at most this many publishers.
    #[arg(
        long,
        env = "REGISTRY_DATA_INLINE_MAX_PUBLISHERS",
        default_value_t = 64
    )]
    pub inline_max_publishers: usize,
    /// Most items in one batched request.
    #[arg(long, env = "REGISTRY_DATA_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,
    /// Largest request body, in bytes.
    #[arg(long, env = "REGISTRY_DATA_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Timeout of calls to other servers, in milliseconds.
    #[arg(long, env = "REGISTRY_DATA_RPC_TIMEOUT_MS", default_value_t = 3_000)]
    pub rpc_timeout_ms: u64,
    /// How long a slot that moved away is kept as a sync source, in milliseconds.
    #[arg(long, env = "REGISTRY_DATA_SLOT_RETAIN_MS", default_value_t = 60_000)]
    pub slot_retain_ms: u64,
    /// How long a gained slot waits for a source that is still catching up with the new
    /// epoch before it serves what it has, in milliseconds.
    #[arg(long, env = "REGISTRY_DATA_SYNC_TIMEOUT_MS", default_value_t = 5_000)]
    pub sync_timeout_ms: u64,
    /// Slot copies in flight at once.
    #[arg(long, env = "REGISTRY_DATA_SYNC_CONCURRENCY", default_value_t = 8)]
    pub sync_concurrency: usize,
    /// On SIGTERM, how long to wait for this server's slots to move to the others before
    /// leaving anyway, in milliseconds (0: leave at once).
    #[arg(long, env = "REGISTRY_DATA_DRAIN_TIMEOUT_MS", default_value_t = 30_000)]
    pub drain_timeout_ms: u64,
    #[command(flatten)]
    pub security: registry_rpc::auth::SecurityArgs,
    /// Tests and drills: while closed, gained slots wait before being copied in.
    #[arg(skip)]
    pub sync_gate: SyncGate,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            listen: format!("127.0.0.1:{DEFAULT_PORT}"),
            advertise: None,
            meta: vec!["127.0.0.1:9610".into()],
            zone: "default".into(),
            oplog_max_ops: 8,
            oplog_max_age_ms: 10_000,
            session_cleanup_grace_ms: 3_000,
            inline_max_publishers: 64,
            max_batch: 10_000,
            max_body_bytes: 32 * 1024 * 1024,
            rpc_timeout_ms: 3_000,
            slot_retain_ms: 60_000,
            sync_timeout_ms: 5_000,
            sync_concurrency: 8,
            drain_timeout_ms: 30_000,
            security: registry_rpc::auth::SecurityArgs::default(),
            sync_gate: SyncGate::default(),
        }
    }
}

impl DataConfig {
    pub fn log_limits(&self) -> LogLimits {
        LogLimits {
            max_ops: self.oplog_max_ops.max(1),
            max_age: Duration::from_millis(self.oplog_max_age_ms),
        }
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc_timeout_ms.max(1))
    }
}
