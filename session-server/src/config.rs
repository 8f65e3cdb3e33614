//! SessionServer configuration: flags with environment-variable equivalents; the defaults
//! start a working local server next to a MetaServer on its default port.

use std::time::Duration;

use clap::Args;

/// Default port of a session server (client WebSocket at `/ws`, HTTP API).
pub const DEFAULT_PORT: u16 = 9600;

#[derive(Debug, Clone, Args)]
pub struct SessionConfig {
    /// Address to listen on (`host:port`; port 0 picks a free port).
    #[arg(
        long = "listen",
        env = "REGISTRY_SESSION_LISTEN",
        default_value = "127.0.0.1:9600"
    )]
    pub listen: String,
    /// Address other servers and clients reach this one at (defaults to the bound address).
    #[arg(long = "advertise", env = "REGISTRY_SESSION_ADVERTISE")]
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
    /// Largest client frame accepted, in bytes; a bigger one closes the connection.
    #[arg(long, env = "REGISTRY_SESSION_MAX_FRAME_BYTES", default_value_t = 1024 * 1024)]
    pub max_frame_bytes: usize,
    /// Frames queued towards one client before it is closed as too slow.
    #[arg(long, env = "REGISTRY_SESSION_OUTBOX_FRAMES", default_value_t = 8192)]
    pub outbox_frames: usize,
    /// A push not acknowledged within this time is sent again (with backoff), in ms.
    #[arg(long, env = "REGISTRY_SESSION_ACK_TIMEOUT_MS", default_value_t = 3_000)]
    pub ack_timeout_ms: u64,
    /// Unacknowledged pushes resent this many times before the connection is closed.
    #[arg(long, env = "REGISTRY_SESSION_ACK_RETRIES", default_value_t = 5)]
    pub ack_retries: u32,
    /// A client that sends nothing (not even a ping) for this long is disconnected, in ms.
    #[arg(
        long,
        env = "REGISTRY_SESSION_CLIENT_IDLE_MS",
        default_value_t = 60_000
    )]
    pub client_idle_ms: u64,
    /// Most datums kept in the cache, one per dataInfoId with subscriptions on this session;
    /// past it, a datum of an id not cached yet is pushed but not kept.
    #[arg(
        long,
        env = "REGISTRY_SESSION_CACHE_ENTRIES",
        default_value_t = 200_000
    )]
    pub cache_entries: u64,
    /// Timeout of calls to other servers, in milliseconds.
    #[arg(long, env = "REGISTRY_SESSION_RPC_TIMEOUT_MS", default_value_t = 3_000)]
    pub rpc_timeout_ms: u64,
    /// Longest a newer datum waits for the in-flight push's ack before it is pushed anyway, ms.
    #[arg(long, env = "REGISTRY_SESSION_MAX_MERGE_MS", default_value_t = 1_000)]
    pub max_merge_window_ms: u64,
    /// A datum emptied by a server-side event (not by clients) is held back this long
    /// before it is pushed empty, in ms.
    #[arg(
        long,
        env = "REGISTRY_SESSION_EMPTY_PROTECTION_MS",
        default_value_t = 3_000
    )]
    pub empty_protection_ms: u64,
    /// On shutdown, how long to wait for clients to move to other sessions, in ms.
    #[arg(
        long,
        env = "REGISTRY_SESSION_SHUTDOWN_WAIT_MS",
        default_value_t = 10_000
    )]
    pub shutdown_wait_ms: u64,
    /// Publishers of clients this session sent away (`go_away` on shutdown or when cut off
    /// from the meta cluster) stay in the data tier this long for their re-registration
    /// through another session to take them over; then this session removes the ones nobody
    /// took over. In ms.
    #[arg(
        long,
        env = "REGISTRY_SESSION_HANDOVER_GRACE_MS",
        default_value_t = 10_000
    )]
    pub handover_grace_ms: u64,
    /// Interval of the full reconciliation (repair and version pull), in ms.
    #[arg(long, env = "REGISTRY_SESSION_RECONCILE_MS", default_value_t = 30_000)]
    pub reconcile_interval_ms: u64,
    /// Most ops or ids in one request to a data server.
    #[arg(long, env = "REGISTRY_SESSION_MAX_BATCH", default_value_t = 2_000)]
    pub max_batch: usize,
    /// Write ops waiting for the data tier past which the session stops reading client
    /// frames until half of them have landed (each pause lasts at most a second): what
    /// clients see acknowledged stays close to what subscribers see. 0: never pause.
    #[arg(
        long,
        env = "REGISTRY_SESSION_FORWARD_BACKLOG",
        default_value_t = 20_000
    )]
    pub forward_backlog: usize,
    /// Most client connections held at once; past it upgrades get `limit_exceeded`.
    #[arg(
        long,
        env = "REGISTRY_SESSION_MAX_CONNECTIONS",
        default_value_t = 100_000
    )]
    pub max_connections: usize,
    /// Most publishers one connection may hold.
    #[arg(
        long,
        env = "REGISTRY_SESSION_MAX_PUBLISHERS_PER_CONN",
        default_value_t = 10_000
    )]
    pub max_publishers_per_conn: usize,
    /// Most subscriptions one connection may hold.
    #[arg(
        long,
        env = "REGISTRY_SESSION_MAX_SUBSCRIPTIONS_PER_CONN",
        default_value_t = 10_000
    )]
    pub max_subscriptions_per_conn: usize,
    /// Registrations (publishers and subscriptions) one connection may make per second,
    /// sustained; 0 turns the limit off.
    #[arg(
        long,
        env = "REGISTRY_SESSION_REGISTRATIONS_PER_SEC",
        default_value_t = 2_000
    )]
    pub registrations_per_sec: u32,
    /// Registrations one connection may make at once above the sustained rate (enough to
    /// re-register a full connection after a reconnect).
    #[arg(
        long,
        env = "REGISTRY_SESSION_REGISTRATION_BURST",
        default_value_t = 20_000
    )]
    pub registration_burst: u32,
    #[command(flatten)]
    pub security: registry_rpc::auth::SecurityArgs,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            listen: format!("127.0.0.1:{DEFAULT_PORT}"),
            advertise: None,
            meta: vec!["127.0.0.1:9610".into()],
            zone: "default".into(),
            max_frame_bytes: 1024 * 1024,
            outbox_frames: 8192,
            ack_timeout_ms: 3_000,
            ack_retries: 5,
            client_idle_ms: 60_000,
            cache_entries: 200_000,
            rpc_timeout_ms: 3_000,
            max_batch: 2_000,
            forward_backlog: 20_000,
            reconcile_interval_ms: 30_000,
            max_merge_window_ms: 1_000,
            empty_protection_ms: 3_000,
            shutdown_wait_ms: 10_000,
            handover_grace_ms: 10_000,
            max_connections: 100_000,
            max_publishers_per_conn: 10_000,
            max_subscriptions_per_conn: 10_000,
            registrations_per_sec: 2_000,
            registration_burst: 20_000,
            security: registry_rpc::auth::SecurityArgs::default(),
        }
    }
}

impl SessionConfig {
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc_timeout_ms.max(1))
    }

    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms.max(10))
    }
}
