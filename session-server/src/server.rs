//! Starting, running and stopping a session server.
//!
//! Startup binds the listener (so the advertised address has the real port), joins the
//! cluster, then serves clients and data servers. A background task follows the cluster view
//! and re-routes queued writes and fetches when data servers come and go, and has the slots
//! whose primary changed repaired from this session's publishers.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_common::id::IdInterner;
use registry_common::member::{MemberId, Role};
use registry_common::proto::client::ServerFrame;
use registry_rpc::auth::Guard;
use registry_rpc::membership::{listen_and_join, JoinSettings, Joined, Membership};
use registry_rpc::server::{serve_routers, Routers, ServerTask, StartError};
use registry_rpc::{CancellationToken, HttpClient};

use crate::config::SessionConfig;
use crate::forward::Forwarder;
use crate::limits::{ConnLimits, ConnectionSlots};
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
    /// One shared copy of each dataInfoId held by publishers, subscriptions and the cache.
    pub ids: Arc<IdInterner>,
    pub membership: Arc<Membership>,
    pub metrics: SessionMetrics,
    /// Slots waiting for repair.
    pub reconciler: Reconciler,
    /// Client for calls to data servers.
    pub http: HttpClient,
    /// Fires when the server stops; connection loops end on it.
    pub shutdown: CancellationToken,
    /// Set by a graceful shutdown: clients are being moved away, new ones refused, and a
    /// closing connection leaves its publishers for the data tier's session cleanup (by then
    /// their clients have re-registered elsewhere, so they do not flap).
    pub draining: AtomicBool,
    /// Set while the session is cut off from the meta cluster (see `detach`): clients are
    /// moved away and refused, as while draining.
    pub detached: AtomicBool,
    /// Fault injection for tests and drills.
    pub faults: Faults,
    /// Checks cluster signatures and client `hello`s; follows the ACL.
    pub guard: Arc<Guard>,
    /// The connection cap.
    pub conn_slots: Arc<ConnectionSlots>,
    /// Lets through a few log lines a second about refused clients and frames.
    pub refusal_log: governor::DefaultDirectRateLimiter,
    /// Readiness and the push rate.
    pub health: crate::admin::Health,
}

/// Log lines a second about refused clients, with a burst of twice that.
const REFUSAL_LOG_RATE: governor::Quota = governor::Quota::per_second(NonZeroU32::new(10).unwrap())
    .allow_burst(NonZeroU32::new(20).unwrap());

/// Switches for fault-injection tests and chaos drills; all off in normal operation.
#[derive(Debug, Default)]
pub struct Faults {
    /// Ignore change notifications from data servers, as if they were lost on the way.
    pub drop_changes: AtomicBool,
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
        let Joined {
            listener,
            guard,
            transport,
            http,
            membership,
            id,
        } = listen_and_join(
            JoinSettings {
                role: Role::Session,
                listen: &config.listen,
                advertise: config.advertise.as_deref(),
                zone: &config.zone,
                meta: &config.meta,
                security: &config.security,
                rpc_timeout: config.rpc_timeout(),
            },
            &shutdown,
        )
        .await?;
        let metrics = SessionMetrics::new();
        registry_rpc::metrics::register(&metrics.registry, &guard.refused_metric());
        let options = config
            .security
            .serve_options(&transport, Duration::from_secs(2));
        registry_rpc::metrics::register(&metrics.registry, &options.refused);
        let forwarder = Forwarder::new(
            http.clone(),
            membership.clone(),
            metrics.clone(),
            config.max_batch,
            config.forward_backlog,
            shutdown.clone(),
        );
        let ids = Arc::new(IdInterner::default());
        let pusher = Pusher::new(
            PushConfig {
                ack_timeout: config.ack_timeout(),
                ack_retries: config.ack_retries,
                max_batch: config.max_batch,
                cache_entries: config.cache_entries,
                max_merge_window: Duration::from_millis(config.max_merge_window_ms.max(1)),
                empty_protection: Duration::from_millis(config.empty_protection_ms),
            },
            ids.clone(),
            http.clone(),
            membership.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        let state = Arc::new(SessionState {
            ids,
            registry: Registry::new(
                id.clone(),
                metrics.clone(),
                config.outbox_frames,
                ConnLimits::from_config(&config),
            ),
            conn_slots: ConnectionSlots::new(config.max_connections),
            refusal_log: governor::RateLimiter::direct(REFUSAL_LOG_RATE),
            id,
            config,
            forwarder,
            pusher,
            membership,
            metrics,
            reconciler: Reconciler::default(),
            http,
            shutdown: shutdown.clone(),
            draining: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            faults: Faults::default(),
            guard: guard.clone(),
            health: crate::admin::Health::default(),
        });
        // Weak: the state owns the forwarder that holds this hook.
        let weak = Arc::downgrade(&state);
        state
            .forwarder
            .on_refused(Arc::new(move |publisher, error| {
                if let Some(state) = weak.upgrade() {
                    crate::conn::report_refused(&state, publisher, error);
                }
            }));
        // Before any client registers: from here on every registration keeps its slot's
        // tally, and no repair pass has to sort every publisher at once.
        state
            .registry
            .sort_into_slots(state.membership.view().slots.slot_count());
        tokio::spawn(crate::conn::close_revoked(state.clone()));
        tokio::spawn(follow_view(state.clone()));
        tokio::spawn(crate::admin::probe_data_tier(state.clone()));
        tokio::spawn(crate::detach::run(state.clone()));
        tokio::spawn(crate::reconcile::run(
            state.clone(),
            Duration::from_millis(state.config.reconcile_interval_ms.max(10)),
        ));
        let routers = Routers {
            main: crate::api::router(state.clone()),
            admin: crate::admin::router(state.clone()),
        };
        let protect = |router| {
            registry_rpc::auth::protect(
                router,
                guard.clone(),
                crate::api::access,
                crate::api::MAX_BODY_BYTES,
            )
        };
        let server = serve_routers(listener, routers, protect, shutdown, &options).await?;
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

    /// Graceful stop: tells every client to move to another session (`go_away`), waits
    /// (bounded) for them to go, then leaves the cluster and stops serving.
    pub async fn shutdown(self) {
        let st = &self.state;
        st.draining.store(true, Ordering::Release);
        let view = st.membership.view();
        let others: Vec<String> = view
            .members_of(Role::Session)
            .filter(|m| m.id != st.id)
            .map(|m| m.addr.clone())
            .collect();
        if !others.is_empty() {
            let frame = ServerFrame::GoAway {
                reason: "session server is shutting down".into(),
                sessions: others,
            };
            if let Ok(text) = serde_json::to_string(&frame) {
                for conn in st.registry.conns() {
                    conn.sent_away.store(true, Ordering::Release);
                    let _ = conn.outbox.send(text.clone());
                }
            }
            let deadline = Instant::now() + Duration::from_millis(st.config.shutdown_wait_ms);
            while !st.registry.conns().is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tracing::info!(
                left = st.registry.conns().len(),
                "clients moved to other sessions"
            );
        }
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
        let landed = state.forwarder.on_view(&view);
        // Before the moved slots are marked: their repair then finds these on their way.
        crate::reconcile::resend(&state, landed);
        state.pusher.on_view(&view);
        crate::admin::apply_levers(&state, &view);
        if let Some(prev) = &prev {
            if !prev.members.contains_key(&state.id) && view.members.contains_key(&state.id) {
                // Back after the meta removed us: the data tier dropped what we own and we
                // missed its changes. Repair everything and pull versions now.
                tracing::warn!(epoch = view.epoch, "member again: repairing every slot");
                state.reconciler.mark(0..view.slots.slot_count());
                state.reconciler.pull_soon();
            } else {
                // A slot with a new primary: make sure it holds everything this session owns.
                state.reconciler.mark(Reconciler::moved_slots(prev, &view));
            }
        }
        prev = Some(view);
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = state.shutdown.cancelled() => return,
        }
    }
}
