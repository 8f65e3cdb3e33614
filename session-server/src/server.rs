//! Starting, running and stopping a session server.
//!
//! Startup binds the listener (so the advertised address has the real port), joins the
//! cluster, then serves clients and data servers. A background task follows the cluster view
//! and re-routes queued writes and fetches when data servers come and go, and has the slots
//! whose primary changed repaired from this session's publishers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use registry_common::member::{Member, MemberId, Role};
use registry_rpc::membership::Membership;
use registry_rpc::meta_client::MetaClient;
use registry_rpc::server::{bind, serve, ServerTask, StartError};
use registry_rpc::{CancellationToken, HttpClient};

use crate::config::SessionConfig;
use crate::forward::Forwarder;
use crate::metrics::SessionMetrics;
use crate::push::{PushConfig, Pusher};
use crate::reconcile::Reconciler;
use crate::registry::Registry;

/// State shared by the handlers and tasks of one session server.
pub struct SessionState {
    pub id: MemberId,
    pub config: SessionConfig,
    pub registry: Registry,
    pub forwarder: Forwarder,
    pub pusher: Arc<Pusher>,
    pub membership: Arc<Membership>,
    pub metrics: SessionMetrics,
    /// Slots waiting for repair.
    pub reconciler: Reconciler,
    /// Client for calls to data servers.
    pub http: HttpClient,
    /// Fires when the server stops; connection loops end on it.
    pub shutdown: CancellationToken,
}

/// A running session server.
pub struct SessionServer {
    state: Arc<SessionState>,
    server: ServerTask,
}

impl SessionServer {
    /// Binds, joins the cluster and starts serving. Stops when `shutdown` fires.
    pub async fn start(
        config: SessionConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, StartError> {
        // Our own stop must not stop other servers sharing the caller's token.
        let shutdown = shutdown.child_token();
        let listener = bind(&config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen.clone(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let advertise = config
            .advertise
            .clone()
            .unwrap_or_else(|| local.to_string());
        let http = HttpClient::new(config.rpc_timeout());
        let meta = Arc::new(MetaClient::new(http.clone(), config.meta.clone()));
        let id = MemberId::generate(Role::Session, &advertise);
        let member = Member {
            id: id.clone(),
            role: Role::Session,
            addr: advertise,
            zone: config.zone.clone(),
            registered_at_ms: 0,
        };
        let membership = Arc::new(Membership::join(meta, member, &shutdown).await?);
        let metrics = SessionMetrics::new();
        let forwarder = Forwarder::new(
            http.clone(),
            membership.clone(),
            metrics.clone(),
            config.max_batch,
            shutdown.clone(),
        );
        let pusher = Pusher::new(
            PushConfig {
                ack_timeout: config.ack_timeout(),
                ack_retries: config.ack_retries,
                max_batch: config.max_batch,
                cache_entries: config.cache_entries,
            },
            http.clone(),
            membership.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        let state = Arc::new(SessionState {
            registry: Registry::new(id.clone(), metrics.clone(), config.outbox_frames),
            id,
            config,
            forwarder,
            pusher,
            membership,
            metrics,
            reconciler: Reconciler::default(),
            http,
            shutdown: shutdown.clone(),
        });
        tokio::spawn(follow_view(state.clone()));
        tokio::spawn(crate::reconcile::run(
            state.clone(),
            Duration::from_millis(state.config.reconcile_interval_ms.max(10)),
        ));
        let server = serve(
            listener,
            crate::api::router(state.clone()),
            shutdown,
            Duration::from_secs(2),
        )
        .map_err(|e| StartError::Other(e.to_string()))?;
        tracing::info!(id = %state.id, addr = %server.local_addr, "session server started");
        Ok(Self { state, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr
    }

    pub fn id(&self) -> &MemberId {
        &self.state.id
    }

    pub fn state(&self) -> &Arc<SessionState> {
        &self.state
    }

    /// Leaves the cluster and stops serving.
    pub async fn shutdown(self) {
        self.state.membership.leave().await;
        self.state.shutdown.cancel();
        let _ = self.server.join.await;
    }
}

async fn follow_view(state: Arc<SessionState>) {
    let mut rx = state.membership.subscribe();
    let mut prev: Option<Arc<registry_common::member::ClusterView>> = None;
    loop {
        let view = rx.borrow_and_update().clone();
        state.forwarder.on_view(&view);
        state.pusher.on_view(&view);
        if let Some(prev) = &prev {
            // A slot with a new primary: make sure it holds everything this session owns.
            state.reconciler.mark(Reconciler::moved_slots(prev, &view));
        }
        prev = Some(view);
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = state.shutdown.cancelled() => return,
        }
    }
}
