//! Starting, running and stopping a meta node.
//!
//! Startup binds the listener (so the advertised address has the real port), opens the Raft
//! node on the data directory, serves, and then bootstraps: the node with the lowest id of
//! `--peers` initialises the cluster if, and only if, its directory is pristine. A restarted
//! node finds its vote and log on disk and rejoins without initialising again. A node bound
//! to one specific address also makes its Raft connections from that address.
//!
//! With a cluster secret, every route but health, readiness, metrics and the console's files
//! needs a signature (see [`crate::api::access`]); the node's guard follows the replicated
//! ACL, and the first leader holding `--admin-key-file` installs that key as principal
//! `admin`, once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use registry_common::acl::AccessKey;
use registry_common::auth::Credential;
use registry_rpc::auth::Guard;
use registry_rpc::backoff::Backoff;
use registry_rpc::server::{bind, serve_routers, Routers, ServerTask, StartError};
use registry_rpc::{CancellationToken, HttpClient};

use crate::config::MetaConfig;
use crate::leases::Leases;
use crate::metrics::MetaMetrics;
use crate::raft::MetaRaft;

/// State shared by the handlers and tasks of one meta node.
pub struct MetaState {
    pub config: MetaConfig,
    pub raft: MetaRaft,
    pub leases: Arc<Leases>,
    /// The node's Prometheus metrics.
    pub metrics: MetaMetrics,
    /// Checks every request's credential; follows the replicated ACL.
    pub guard: Arc<Guard>,
    /// Fires when the node stops.
    pub shutdown: CancellationToken,
    /// Calls to the data and session servers (admin probes), signed and over TLS like the
    /// rest of the cluster's traffic.
    pub http: HttpClient,
}

/// A running meta node.
pub struct MetaServer {
    state: Arc<MetaState>,
    server: ServerTask,
}

impl MetaServer {
    pub async fn start(
        config: MetaConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, StartError> {
        let listener = bind(&config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen.clone(),
                source,
            })?;
        Self::start_on(listener, config, shutdown).await
    }

    /// Starts on an already bound listener (`config.listen` is ignored). Lets a caller learn
    /// every node's port before any node starts, as a cluster on port 0 needs.
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        config: MetaConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, StartError> {
        // Our own stop must not stop other servers sharing the caller's token.
        let shutdown = shutdown.child_token();
        let local = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let advertise = config
            .advertise
            .clone()
            .unwrap_or_else(|| local.to_string());
        let mut peers = config.parse_peers().map_err(StartError::Other)?;
        if peers.is_empty() {
            peers.insert(config.node_id, advertise.clone());
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StartError::Other(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let guard = config
            .security
            .guard("meta", &local.to_string())
            .map_err(StartError::Other)?;
        let admin_key = match &config.admin_key_file {
            Some(path) => {
                Some(Credential::from_file(path).map_err(|e| StartError::Other(e.to_string()))?)
            }
            None => None,
        };
        let transport = config.security.transport().map_err(StartError::Other)?;
        let mut settings = config.raft_settings();
        settings.signer = guard.signer();
        settings.tls = transport.client.clone();
        // Listening on one specific address: talk to peers from it too.
        settings.local_ip = Some(local.ip()).filter(|ip| !ip.is_unspecified());
        let raft = MetaRaft::open(
            &config.data_dir,
            config.node_id,
            advertise.clone(),
            settings,
        )
        .await
        .map_err(|e| StartError::Other(format!("cannot open the raft store: {e}")))?;
        let metrics = MetaMetrics::new();
        registry_rpc::metrics::register(&metrics.registry, &guard.refused_metric());
        let leases = Arc::new(Leases::new(
            raft.clone(),
            config.lease(),
            config.grace(),
            metrics.lease_expiries.clone(),
            metrics.disconnect_probes.clone(),
        ));
        tokio::spawn(leases.clone().run(shutdown.clone()));
        let state = Arc::new(MetaState {
            config,
            raft: raft.clone(),
            leases,
            metrics,
            guard: guard.clone(),
            shutdown: shutdown.clone(),
            http: HttpClient::new(crate::admin::PROBE_TIMEOUT)
                .with_signer(guard.signer())
                .with_tls(transport.client.clone()),
        });
        tokio::spawn(follow_acl(state.clone()));
        if let Some(key) = admin_key {
            tokio::spawn(bootstrap_admin(state.clone(), key));
        }
        let routers = Routers {
            main: crate::api::router(state.clone()).merge(raft.router()),
            admin: crate::admin::router(state.clone()).merge(crate::console::router()),
        };
        let max_body = state.config.max_body_bytes.max(64 * 1024 * 1024);
        let protect = |router| {
            registry_rpc::auth::protect(router, guard.clone(), crate::api::access, max_body)
        };
        let options = state
            .config
            .security
            .serve_options(&transport, Duration::from_secs(1));
        registry_rpc::metrics::register(&state.metrics.registry, &options.refused);
        let server = serve_routers(listener, routers, protect, shutdown.clone(), &options).await?;
        let first = peers.keys().next().copied();
        if !state.config.join && first == Some(state.config.node_id) {
            let pristine = raft
                .is_pristine()
                .await
                .map_err(|e| StartError::Other(format!("cannot read the raft store: {e}")))?;
            if pristine {
                tracing::info!(voters = ?peers, "initialising a new meta cluster");
                raft.initialize(peers)
                    .await
                    .map_err(|e| StartError::Other(format!("cannot initialise: {e}")))?;
            }
        }
        // Stop the raft node when the server stops.
        tokio::spawn(async move {
            shutdown.cancelled().await;
            if let Err(e) = raft.shutdown().await {
                tracing::debug!("raft shutdown: {e}");
            }
        });
        tracing::info!(node = state.config.node_id, addr = %server.local_addr, "meta node started");
        Ok(Self { state, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr
    }

    pub fn state(&self) -> &Arc<MetaState> {
        &self.state
    }

    pub fn raft(&self) -> &MetaRaft {
        &self.state.raft
    }

    /// Stops serving and shuts the Raft node down.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        let _ = self.server.join.await;
        let _ = self.state.raft.shutdown().await;
    }
}

/// Keeps the node's guard on the applied ACL.
async fn follow_acl(state: Arc<MetaState>) {
    let mut rx = state.raft.watch_acl();
    loop {
        let acl = state.raft.with_state(|s| s.acl.clone());
        state.guard.set_acl(&acl);
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = state.shutdown.cancelled() => return,
        }
    }
}

/// Installs the first admin key once this node leads, unless the cluster already has one.
async fn bootstrap_admin(state: Arc<MetaState>, key: Credential) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        if state.raft.with_state(|s| s.acl.bootstrapped) {
            return;
        }
        if state.raft.serving_term().is_some() {
            let cmd = crate::state::MetaCommand::AclBootstrap {
                name: "admin".into(),
                key: AccessKey {
                    id: key.key_id.clone(),
                    secret: String::from_utf8_lossy(key.secret.expose()).into_owned(),
                    created_ms: registry_common::time::now_ms(),
                },
            };
            match state.raft.write(cmd).await {
                Ok(r) if r.changed => {
                    tracing::info!(key = %key.key_id, "installed the first admin key");
                    return;
                }
                Ok(r) => {
                    tracing::info!("admin key not installed: {}", r.refused.unwrap_or_default());
                    return;
                }
                Err(e) => tracing::debug!("cannot install the admin key yet: {e}"),
            }
        }
        tokio::select! {
            _ = backoff.wait() => {}
            _ = state.shutdown.cancelled() => return,
        }
    }
}
