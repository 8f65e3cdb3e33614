//! Starting, running and stopping a data server.
//!
//! Startup binds the listener first (so the advertised address has the real port), joins the
//! cluster through the MetaServer, then serves. A background task follows the cluster view:
//! it moves slots between phases and copies in the slots this server gained, points the
//! notifier at the current session servers and the replicator at the current replicas, and
//! removes the publishers of session servers that left the membership once a grace period
//! has passed (at once on the view change, and by a periodic sweep for slots that moved in
//! meanwhile).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_common::id::DataInfoId;
use registry_common::member::{ClusterView, MemberId, Role};
use registry_common::proto::data::{SyncRequest, SyncResponse};
use registry_common::slot::SlotId;
use registry_rpc::backoff::Backoff;
use registry_rpc::membership::{listen_and_join, JoinSettings, Joined, Membership};
use registry_rpc::server::{serve_routers, Routers, ServerTask, StartError};
use registry_rpc::{CancellationToken, HttpClient, RpcError};
use tokio::sync::Semaphore;

use crate::config::DataConfig;
use crate::error::DataError;
use crate::metrics::DataMetrics;
use crate::notify::Notifier;
use crate::replication::Replicator;
use crate::routing::{check, Access};
use crate::slots::{Phase, Slots, SyncJob};
use crate::store::Store;

/// State shared by the handlers and background tasks of one data server.
pub struct DataState {
    /// This server's member id.
    pub id: MemberId,
    pub config: DataConfig,
    pub store: Arc<Store>,
    pub slots: Slots,
    pub membership: Arc<Membership>,
    pub notifier: Notifier,
    pub replicator: Replicator,
    pub metrics: DataMetrics,
    http: HttpClient,
    /// Set while a view refresh requested by a handler is under way (one at a time).
    refreshing: AtomicBool,
    /// Rejoins (`Membership::rejoin_count`) whose slots have been forgotten and copied anew.
    rejoins_handled: std::sync::atomic::AtomicU64,
    /// Fault injection for tests.
    pub faults: Faults,
}

/// Switches for fault-injection tests; all off in normal operation.
#[derive(Debug, Default)]
pub struct Faults {
    /// Ship no change to the replicas, as if every change came just before this primary
    /// died: what it takes in meanwhile is held here alone.
    pub hold_replication: AtomicBool,
}

impl DataState {
    /// Whether this server may serve `id` with `access` for a caller on `caller_epoch`, by
    /// the view and slot phase of this instant.
    pub fn admit(
        &self,
        id: &DataInfoId,
        caller_epoch: u64,
        access: Access,
    ) -> Result<SlotId, DataError> {
        let view = self.membership.view();
        let slot = check(&view, &self.id, id, caller_epoch, access)?;
        if self.fenced() {
            // Retryable: the caller re-routes by its newer view, or comes back once we are
            // renewed and have copied our slots in again.
            return Err(DataError::Migrating {
                slot,
                epoch: view.epoch,
            });
        }
        match self.slots.phase(slot) {
            Phase::Ready => Ok(slot),
            // Held by the view but not copied in yet (or the phase is about to follow).
            _ => Err(DataError::Migrating {
                slot,
                epoch: view.epoch,
            }),
        }
    }

    /// Whether this server must not serve: the meta has not taken its renewal for a whole
    /// lease (so it has removed it, or will as soon as it has a leader, and the slots moved
    /// on), or it joined again and has not forgotten its stale slots yet. A server frozen
    /// (SIGSTOP) past its lease would otherwise, on waking, apply the requests waiting in its
    /// sockets to slots it no longer holds and notify sessions of the stale datums at fresh
    /// versions (found by `registry-chaos`: a 13 s freeze, then a live publisher missing from
    /// every view for 0.9 s).
    pub fn fenced(&self) -> bool {
        self.membership.since_renewed() > self.membership.lease()
            || self.membership.rejoin_count() != self.rejoins_handled.load(Ordering::Acquire)
    }

    /// Whether `from` may ship replication ops of `id` to this server: it must be the slot's
    /// primary and this server one of its replicas.
    pub fn admit_replication(&self, id: &DataInfoId, from: &MemberId) -> Result<(), DataError> {
        let view = self.membership.view();
        let slot = registry_common::slot::slot_of(id, view.slots.slot_count());
        let ok = view
            .slots
            .get(slot)
            .is_some_and(|a| a.primary.as_ref() == Some(from) && a.replicas.contains(&self.id));
        if ok {
            Ok(())
        } else {
            Err(DataError::NotOwner {
                slot,
                epoch: view.epoch,
                owner_addr: None,
            })
        }
    }

    /// Reacts to applied changes: tells the sessions and ships them to replicas.
    pub fn on_changed(&self, changed: &[(DataInfoId, u64)]) {
        if changed.is_empty() {
            return;
        }
        self.notifier.notify(changed);
        if !self.faults.hold_replication.load(Ordering::Relaxed) {
            self.replicator.on_changed(&self.membership.view(), changed);
        }
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
        let Joined {
            listener,
            guard,
            transport,
            http,
            membership,
            id,
        } = listen_and_join(
            JoinSettings {
                role: Role::Data,
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
        let view = membership.view();
        let slot_count = view.settings.slot_count;
        let store = Arc::new(Store::new(slot_count, config.log_limits()));
        let metrics = DataMetrics::new();
        registry_rpc::metrics::register(&metrics.registry, &guard.refused_metric());
        let options = config
            .security
            .serve_options(&transport, Duration::from_secs(2));
        registry_rpc::metrics::register(&metrics.registry, &options.refused);
        let notifier = Notifier::new(
            id.clone(),
            store.clone(),
            http.clone(),
            membership.subscribe(),
            metrics.clone(),
            config.inline_max_publishers,
            shutdown.clone(),
        );
        let replicator = Replicator::new(
            id.clone(),
            store.clone(),
            http.clone(),
            membership.subscribe(),
            metrics.clone(),
            // Replicas run with the same request limit as this server (one cluster, one
            // configuration): a batch of half of it leaves room for one large item more.
            config.max_body_bytes / 2,
            shutdown.clone(),
        );
        let state = Arc::new(DataState {
            slots: Slots::new(
                id.clone(),
                slot_count,
                Duration::from_millis(config.slot_retain_ms),
            ),
            id,
            config,
            store,
            membership,
            notifier,
            replicator,
            metrics,
            http,
            refreshing: AtomicBool::new(false),
            rejoins_handled: std::sync::atomic::AtomicU64::new(0),
            faults: Faults::default(),
        });
        tokio::spawn(follow_view(state.clone(), shutdown.clone()));
        tokio::spawn(housekeeping(state.clone(), shutdown.clone()));
        let routers = Routers {
            main: crate::api::router(state.clone()),
            admin: crate::admin::router(state.clone()),
        };
        let max_body = state.config.max_body_bytes;
        let protect = |router| {
            registry_rpc::auth::protect(router, guard.clone(), crate::api::access, max_body)
        };
        let server = serve_routers(listener, routers, protect, shutdown.clone(), &options).await?;
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

/// Follows the cluster view: slot phases and copies, replication and notification targets,
/// cleanup of departed sessions.
async fn follow_view(state: Arc<DataState>, shutdown: CancellationToken) {
    let mut rx = state.membership.subscribe();
    let mut rejoins = state.membership.rejoins();
    let mut prev: Option<Arc<ClusterView>> = None;
    let sync_permits = Arc::new(Semaphore::new(state.config.sync_concurrency.max(1)));
    let grace = Duration::from_millis(state.config.session_cleanup_grace_ms);
    loop {
        let view = rx.borrow_and_update().clone();
        state.metrics.epoch.set(view.epoch as i64);
        let jobs = state.slots.on_view(prev.as_deref(), &view);
        if !jobs.is_empty() {
            tracing::info!(
                epoch = view.epoch,
                slots = jobs.len(),
                "copying in gained slots"
            );
        }
        for job in jobs {
            tokio::spawn(sync_slot(
                state.clone(),
                job,
                sync_permits.clone(),
                shutdown.clone(),
            ));
        }
        state.replicator.on_view(&view);
        let sessions: Vec<(MemberId, String)> = view
            .members_of(Role::Session)
            .map(|m| (m.id.clone(), m.addr.clone()))
            .collect();
        state.notifier.set_targets(&sessions);
        if let Some(prev) = &prev {
            for gone in prev
                .members_of(Role::Session)
                .filter(|m| !view.members.contains_key(&m.id))
            {
                tokio::spawn(clean_session_later(
                    state.clone(),
                    gone.id.clone(),
                    grace,
                    shutdown.clone(),
                ));
            }
        }
        prev = Some(view);
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            r = rejoins.changed() => {
                if r.is_err() {
                    return;
                }
                // The meta removed us (a partition or a freeze past the lease) and we joined
                // again under the same id, so the same slots: what we hold missed every
                // write since, and serving it would bring back removed publishers and hide
                // new ones. Start over as a new member: forget every slot, drop its data,
                // copy in from the current holders.
                tracing::warn!("joined the cluster again: copying every held slot in afresh");
                let count = *rejoins.borrow_and_update();
                state.slots.forget_all();
                crate::store::free_elsewhere(
                    (0..state.store.slot_count())
                        .map(|slot| state.store.drop_slot(slot))
                        .collect(),
                );
                state.rejoins_handled.store(count, Ordering::Release);
                prev = None;
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Copies a gained slot from its sources, then marks it ready.
async fn sync_slot(
    state: Arc<DataState>,
    job: SyncJob,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let Ok(_permit) = permits.acquire_owned().await else {
        return;
    };
    tokio::select! {
        _ = state.config.sync_gate.passed() => {}
        _ = shutdown.cancelled() => return,
    }
    let started = Instant::now();
    let deadline = started + Duration::from_millis(state.config.sync_timeout_ms);
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
    let req = SyncRequest {
        epoch: job.epoch,
        slot: job.slot,
        requester: state.id.clone(),
    };
    let mut copied = 0usize;
    let outcome = loop {
        let mut complete = false;
        let mut catching_up = false;
        for addr in &job.sources {
            let answer: Result<SyncResponse, RpcError> =
                state.http.post(addr, "/data/v1/sync", &req).await;
            match answer {
                Ok(resp) => {
                    complete |= resp.complete;
                    for datum in resp.datums {
                        copied += datum.publishers.len();
                        let _ = state.store.install(datum, || Ok::<(), DataError>(()));
                    }
                }
                Err(e) => {
                    // A source still catching up with our epoch will answer shortly.
                    catching_up |= e.code() == registry_common::ErrorCode::StaleEpoch;
                    tracing::debug!(slot = job.slot, from = %addr, "slot copy failed: {e}");
                }
            }
        }
        if complete {
            break "copied";
        }
        if !catching_up || Instant::now() > deadline {
            // Nobody alive holds the slot completely: serve the union of what the sources
            // had; the sessions' repair restores the rest.
            break "partial";
        }
        tokio::select! {
            _ = backoff.wait() => {}
            _ = shutdown.cancelled() => return,
        }
    };
    state.slots.finish_sync(job.slot);
    state.metrics.slot_syncs.with_label_values(&[outcome]).inc();
    tracing::debug!(
        slot = job.slot,
        outcome,
        publishers = copied,
        took_ms = started.elapsed().as_millis() as u64,
        "slot copied in"
    );
}

/// After `grace`, if `session` is still not a member, removes the publishers it owned in the
/// slots this server is primary of.
async fn clean_session_later(
    state: Arc<DataState>,
    session: MemberId,
    grace: Duration,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = tokio::time::sleep(grace) => {}
        _ = shutdown.cancelled() => return,
    }
    clean_sessions(&state, &[session]);
}

/// Removes the publishers of `sessions` (if still not members) from the slots this server is
/// primary of, and notifies.
fn clean_sessions(state: &DataState, sessions: &[MemberId]) {
    if state.fenced() {
        return;
    }
    let mut changed = Vec::new();
    for session in sessions {
        if state.membership.view().members.contains_key(session) {
            continue;
        }
        let removed = state.store.remove_session(session, |slot| {
            let view = state.membership.view();
            view.slots
                .get(slot)
                .is_some_and(|a| a.primary.as_ref() == Some(&state.id))
                && state.slots.phase(slot) == Phase::Ready
        });
        if !removed.is_empty() {
            tracing::info!(%session, datums = removed.len(), "removed publishers of a departed session");
        }
        changed.extend(removed);
    }
    state.on_changed(&changed);
}

/// Periodic work: drop slots whose retention ran out, free the operation logs of datums that
/// stopped changing, and sweep out publishers of sessions that have not been members for
/// longer than the grace (covers slots that moved here after the session left).
async fn housekeeping(state: Arc<DataState>, shutdown: CancellationToken) {
    let grace = Duration::from_millis(state.config.session_cleanup_grace_ms);
    let every = grace.clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Sessions referenced by publishers but not members, and since when.
    let mut absent: HashMap<MemberId, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = Instant::now();
        let mut dropped = Vec::new();
        for slot in state.slots.expire(now) {
            dropped.push(state.store.drop_slot(slot));
            tracing::debug!(slot, "dropped a slot that moved away");
        }
        crate::store::free_elsewhere(dropped);
        let mut trimmed = 0;
        let mut logs = Vec::new();
        for slot in 0..state.store.slot_count() {
            let freed = state.store.trim_logs(slot, now);
            trimmed += freed.datums();
            logs.push(freed);
            tokio::task::yield_now().await;
        }
        crate::store::free_elsewhere(logs);
        if trimmed > 0 {
            tracing::debug!(
                trimmed,
                "freed the operation logs of datums that stopped changing"
            );
        }
        let view = state.membership.view();
        let referenced = state.store.sessions_in(|slot| {
            view.slots
                .get(slot)
                .is_some_and(|a| a.primary.as_ref() == Some(&state.id))
        });
        absent.retain(|s, _| referenced.contains(s) && !view.members.contains_key(s));
        for s in referenced {
            if !view.members.contains_key(&s) {
                absent.entry(s).or_insert(now);
            }
        }
        let expired: Vec<MemberId> = absent
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= grace)
            .map(|(s, _)| s.clone())
            .collect();
        if !expired.is_empty() {
            clean_sessions(&state, &expired);
            for s in &expired {
                absent.remove(s);
            }
        }
    }
}
