//! Starting, running and stopping a data server.
//!
//! Startup binds the listener first (so the advertised address has the real port), joins the
//! cluster through the MetaServer, then serves. A background task follows the cluster view:
//! it points the notifier at the current session servers and removes the publishers of a
//! session server that left the membership once a grace period has passed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use registry_common::id::DataInfoId;
use registry_common::member::{ClusterView, Member, MemberId, Role};
use registry_rpc::membership::Membership;
use registry_rpc::meta_client::MetaClient;
use registry_rpc::server::{bind, serve, ServerTask, StartError};
use registry_rpc::{CancellationToken, HttpClient};
use tokio::sync::watch;

use crate::config::DataConfig;
use crate::metrics::DataMetrics;
use crate::notify::Notifier;
use crate::store::Store;

/// State shared by the handlers and background tasks of one data server.
pub struct DataState {
    /// This server's member id.
    pub id: MemberId,
    pub config: DataConfig,
    pub store: Arc<Store>,
    pub membership: Arc<Membership>,
    pub notifier: Notifier,
    pub metrics: DataMetrics,
    /// Set while a view refresh requested by a handler is under way (one at a time).
    refreshing: AtomicBool,
}

impl DataState {
    /// Reacts to applied changes: tells the sessions.
    pub fn on_changed(&self, changed: &[(DataInfoId, u64)]) {
        self.notifier.notify(changed);
    }

    /// Asks the meta for a newer view, unless a refresh is already running.
    pub fn refresh_view(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let s = self.clone();
        tokio::spawn(async move {
            s.membership.refresh().await;
            s.refreshing.store(false, Ordering::Release);
        });
    }
}

/// A running data server.
pub struct DataServer {
    state: Arc<DataState>,
    server: ServerTask,
    shutdown: CancellationToken,
}

impl DataServer {
    /// Binds, joins the cluster and starts serving. Stops when `shutdown` fires.
    pub async fn start(
        config: DataConfig,
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
        let id = MemberId::generate(Role::Data, &advertise);
        let member = Member {
            id: id.clone(),
            role: Role::Data,
            addr: advertise,
            zone: config.zone.clone(),
            registered_at_ms: 0,
        };
        let membership = Arc::new(Membership::join(meta, member, &shutdown).await?);
        let view = membership.view();
        let store = Arc::new(Store::new(view.settings.slot_count, config.log_limits()));
        let metrics = DataMetrics::new();
        let notifier = Notifier::new(
            id.clone(),
            store.clone(),
            http.clone(),
            membership.subscribe(),
            metrics.clone(),
            config.inline_max_publishers,
            shutdown.clone(),
        );
        let state = Arc::new(DataState {
            id,
            config,
            store,
            membership,
            notifier,
            metrics,
            refreshing: AtomicBool::new(false),
        });
        tokio::spawn(follow_view(state.clone(), shutdown.clone()));
        let server = serve(
            listener,
            crate::api::router(state.clone()),
            shutdown.clone(),
            Duration::from_secs(2),
        )
        .map_err(|e| StartError::Other(e.to_string()))?;
        tracing::info!(id = %state.id, addr = %server.local_addr, "data server started");
        Ok(Self {
            state,
            server,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr
    }

    pub fn id(&self) -> &MemberId {
        &self.state.id
    }

    pub fn state(&self) -> &Arc<DataState> {
        &self.state
    }

    /// Leaves the cluster and stops serving.
    pub async fn shutdown(self) {
        self.state.membership.leave().await;
        self.shutdown.cancel();
        let _ = self.server.join.await;
    }
}

/// Follows the cluster view: notification targets, and cleanup of departed sessions.
async fn follow_view(state: Arc<DataState>, shutdown: CancellationToken) {
    let mut rx = state.membership.subscribe();
    let mut sessions: BTreeMap<MemberId, String> = BTreeMap::new();
    let grace = Duration::from_millis(state.config.session_cleanup_grace_ms);
    loop {
        let view = rx.borrow_and_update().clone();
        state.metrics.epoch.set(view.epoch as i64);
        let now: BTreeMap<MemberId, String> = view
            .members_of(Role::Session)
            .map(|m| (m.id.clone(), m.addr.clone()))
            .collect();
        let targets: Vec<(MemberId, String)> =
            now.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        state.notifier.set_targets(&targets);
        for gone in sessions.keys().filter(|id| !now.contains_key(*id)) {
            tokio::spawn(clean_session(
                state.clone(),
                gone.clone(),
                grace,
                shutdown.clone(),
            ));
        }
        sessions = now;
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

/// After `grace`, if `session` is still not a member, removes the publishers it owned in the
/// slots this server is primary of.
async fn clean_session(
    state: Arc<DataState>,
    session: MemberId,
    grace: Duration,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = tokio::time::sleep(grace) => {}
        _ = shutdown.cancelled() => return,
    }
    let view: Arc<ClusterView> = state.membership.view();
    if view.members.contains_key(&session) {
        return;
    }
    let me = state.id.clone();
    let changed = state.store.remove_session(&session, |slot| {
        view.slots
            .get(slot)
            .is_some_and(|a| a.primary.as_ref() == Some(&me))
    });
    if !changed.is_empty() {
        tracing::info!(%session, datums = changed.len(), "removed publishers of a departed session");
    }
    state.on_changed(&changed);
}

/// Keeps the type of the view channel in one place for callers that want to follow it.
pub type ViewReceiver = watch::Receiver<Arc<ClusterView>>;
