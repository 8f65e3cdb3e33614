//! `registry standalone`: a meta node, a data server and a session server in one process, on
//! documented default ports, with the meta state under one data directory.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use data_server::{DataConfig, DataServer};
use meta_server::{MetaConfig, MetaServer};
use registry_rpc::server::StartError;
use registry_rpc::CancellationToken;
use session_server::{SessionConfig, SessionServer};

#[derive(Debug, Clone, Args)]
pub struct StandaloneConfig {
    /// Directory for persistent state (the meta node's Raft log and snapshots).
    #[arg(
        long = "data-dir",
        env = "REGISTRY_DATA_DIR",
        default_value = "registry-data"
    )]
    pub data_dir: PathBuf,
    /// Host to listen on.
    #[arg(long, env = "REGISTRY_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the meta node.
    #[arg(long, env = "REGISTRY_META_PORT", default_value_t = meta_server::config::DEFAULT_PORT)]
    pub meta_port: u16,
    /// Port of the data server.
    #[arg(long, env = "REGISTRY_DATA_PORT", default_value_t = data_server::config::DEFAULT_PORT)]
    pub data_port: u16,
    /// Port of the session server (clients connect here).
    #[arg(long, env = "REGISTRY_SESSION_PORT", default_value_t = session_server::config::DEFAULT_PORT)]
    pub session_port: u16,
    /// File holding the first admin key (`KEY_ID:SECRET`), installed when the ACL is empty.
    #[arg(long = "admin-key-file", env = "REGISTRY_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<PathBuf>,
    /// Cluster secret and the explicit opt-out, shared by the three servers.
    #[command(flatten)]
    pub security: registry_rpc::auth::SecurityArgs,
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("registry-data"),
            host: "127.0.0.1".into(),
            meta_port: meta_server::config::DEFAULT_PORT,
            data_port: data_server::config::DEFAULT_PORT,
            session_port: session_server::config::DEFAULT_PORT,
            admin_key_file: None,
            security: registry_rpc::auth::SecurityArgs::default(),
        }
    }
}

/// The three servers of a standalone registry.
pub struct Standalone {
    pub meta: MetaServer,
    pub data: DataServer,
    pub session: SessionServer,
}

impl Standalone {
    pub async fn start(
        config: StandaloneConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, StartError> {
        let meta = MetaServer::start(
            MetaConfig {
                listen: format!("{}:{}", config.host, config.meta_port),
                data_dir: config.data_dir.join("meta"),
                admin_key_file: config.admin_key_file.clone(),
                security: config.security.clone(),
                ..MetaConfig::default()
            },
            shutdown.clone(),
        )
        .await?;
        let meta_addr = meta.addr().to_string();
        let data = DataServer::start(
            DataConfig {
                listen: format!("{}:{}", config.host, config.data_port),
                meta: vec![meta_addr.clone()],
                security: config.security.clone(),
                ..DataConfig::default()
            },
            shutdown.clone(),
        )
        .await?;
        let session = SessionServer::start(
            SessionConfig {
                listen: format!("{}:{}", config.host, config.session_port),
                meta: vec![meta_addr],
                security: config.security.clone(),
                ..SessionConfig::default()
            },
            shutdown,
        )
        .await?;
        Ok(Self {
            meta,
            data,
            session,
        })
    }

    /// Where clients connect.
    pub fn session_addr(&self) -> SocketAddr {
        self.session.addr()
    }

    /// Stops the session, then the data server, then the meta node.
    pub async fn shutdown(self) {
        self.session.shutdown().await;
        self.data.shutdown().await;
        self.meta.shutdown().await;
    }
}
