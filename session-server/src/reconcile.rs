//! Keeping the data tier and the session's caches true to the session's authoritative copy.
//!
//! Two jobs share one worker task:
//! - **Repair** of slots: for the slots asked for, ask each primary which publishers it holds
//!   for this session (`/data/v1/session-publishers`) and compare with the publishers this
//!   session holds: a missing or different one is published again, one the primary holds for
//!   this session that the session no longer has is removed. Runs at once for the slots whose
//!   primary changed in a new view (failover, migration), and for every slot each interval.
//! - **Version pull**, each interval: one batched version query per data server for every
//!   dataInfoId with local subscribers; anything newer than the cache is fetched and pushed,
//!   so a lost change notification costs at most one interval.
//!
//! A slot a primary does not answer for (still copying in, or unreachable) stays pending and
//! is retried with backoff.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use registry_common::id::DataInfoId;
use registry_common::member::ClusterView;
use registry_common::model::PublisherKey;
use registry_common::proto::data::{
    FetchRequest, PublisherDigest, SessionPublishersRequest, SessionPublishersResponse,
    VersionsResponse, WriteOp,
};
use registry_common::slot::{slot_of, SlotId};
use registry_rpc::backoff::Backoff;
use registry_rpc::RpcError;
use tokio::sync::Notify;

use crate::server::SessionState;

/// Outcome of one repair pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// Slots compared.
    pub covered: BTreeSet<SlotId>,
    /// Publishers sent again.
    pub republished: usize,
    /// Strays removed.
    pub removed: usize,
}

/// Slots waiting for repair, and the worker's wake-up.
#[derive(Default)]
pub struct Reconciler {
    dirty: Mutex<BTreeSet<SlotId>>,
    /// A version pull is wanted before the next interval.
    pull: std::sync::atomic::AtomicBool,
    wake: Notify,
}

impl Reconciler {
    /// Asks for these slots to be repaired soon.
    pub fn mark(&self, slots: impl IntoIterator<Item = SlotId>) {
        let mut dirty = self.dirty.lock();
        let before = dirty.len();
        dirty.extend(slots);
        if dirty.len() != before {
            self.wake.notify_one();
        }
    }

    /// Asks for a version pull soon (after missing the data tier's notifications).
    pub fn pull_soon(&self) {
        self.pull.store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
    }

    /// Slots whose primary differs between two views.
    pub fn moved_slots(prev: &ClusterView, view: &ClusterView) -> Vec<SlotId> {
        (0..view.slots.slot_count())
            .filter(|s| {
                let before = prev.slots.get(*s).and_then(|a| a.primary.as_ref());
                let now = view.slots.get(*s).and_then(|a| a.primary.as_ref());
                before != now
            })
            .collect()
    }
}

/// Compares, for the `only` slots (all if `None`), what each primary holds for this session
/// with the session's own publishers, and queues the writes that make them equal.
pub async fn repair(
    state: &SessionState,
    view: &ClusterView,
    only: Option<&BTreeSet<SlotId>>,
) -> Repaired {
    let mut by_primary: HashMap<String, Vec<SlotId>> = HashMap::new();
    for slot in 0..view.slots.slot_count() {
        if only.is_some_and(|o| !o.contains(&slot)) {
            continue;
        }
        if let Some(addr) = view
            .slots
            .get(slot)
            .and_then(|a| a.primary.as_ref())
            .and_then(|p| view.addr_of(p))
        {
            by_primary.entry(addr.to_owned()).or_default().push(slot);
        }
    }
    let asks = by_primary.into_iter().map(|(addr, slots)| {
        let req = SessionPublishersRequest {
            epoch: view.epoch,
            session: state.id.clone(),
            // Empty means "all"; ask explicitly when a subset is wanted.
            slots: if only.is_some() { slots } else { Vec::new() },
        };
        async move {
            let r: Result<SessionPublishersResponse, RpcError> = state
                .http
                .post(&addr, "/data/v1/session-publishers", &req)
                .await;
            (addr, r)
        }
    });
    let answers = futures::future::join_all(asks).await;
    // Read our own publishers only after the primaries answered: anything registered before
    // they answered is in this list, so nothing the session holds is mistaken for a stray.
    let mine = state.registry.publishers();
    let slot_count = view.slots.slot_count();
    let mut out = Repaired::default();
    let mut ops: Vec<WriteOp> = Vec::new();
    for (addr, answer) in answers {
        let resp = match answer {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(data = %addr, "repair query failed: {e}");
                continue;
            }
        };
        let covered: BTreeSet<SlotId> = resp
            .slots
            .iter()
            .copied()
            .filter(|s| only.is_none_or(|o| o.contains(s)))
            .collect();
        let held: HashMap<&PublisherKey, &PublisherDigest> =
            resp.publishers.iter().map(|d| (&d.key, d)).collect();
        for p in mine
            .iter()
            .filter(|p| covered.contains(&slot_of(&p.data_info_id, slot_count)))
        {
            let same = held.get(&p.key).is_some_and(|d| {
                d.data_info_id == p.data_info_id
                    && d.conn_id == p.conn_id
                    && d.version == p.version
                    && d.registered_at_ms == p.registered_at_ms
            });
            if !same {
                out.republished += 1;
                ops.push(WriteOp::Publish {
                    publisher: (**p).clone(),
                });
            }
        }
        let owned: HashMap<&PublisherKey, u64> = mine.iter().map(|p| (&p.key, p.conn_id)).collect();
        for d in &resp.publishers {
            if !covered.contains(&slot_of(&d.data_info_id, slot_count)) {
                continue;
            }
            if owned.get(&d.key) != Some(&d.conn_id) {
                out.removed += 1;
                ops.push(WriteOp::Unpublish {
                    data_info_id: d.data_info_id.clone(),
                    key: d.key.clone(),
                    session: state.id.clone(),
                    conn_id: d.conn_id,
                });
            }
        }
        out.covered.extend(covered);
    }
    // Publishers with a write already on its way are left to it (it carries a later state).
    (out.republished, out.removed) = state.forwarder.submit_repair(ops);
    if out.republished + out.removed > 0 {
        tracing::info!(
            republished = out.republished,
            removed = out.removed,
            slots = out.covered.len(),
            "repaired the data tier from this session's publishers"
        );
        state
            .metrics
            .repaired
            .with_label_values(&["republished"])
            .inc_by(out.republished as u64);
        state
            .metrics
            .repaired
            .with_label_values(&["removed"])
            .inc_by(out.removed as u64);
    }
    out
}

/// Asks every data server for the versions of the subscribed dataInfoIds it is primary of and
/// fetches whatever is newer than the cache. Returns how many were newer.
pub async fn pull_versions(state: &Arc<SessionState>, view: &ClusterView) -> usize {
    let mut by_primary: HashMap<String, Vec<DataInfoId>> = HashMap::new();
    for id in state.pusher.subscribed_ids() {
        if let Some(addr) = view.slots.primary_of(&id).and_then(|p| view.addr_of(p)) {
            by_primary.entry(addr.to_owned()).or_default().push(id);
        }
    }
    let max = state.config.max_batch.max(1);
    let asks = by_primary.into_iter().flat_map(|(addr, ids)| {
        ids.chunks(max)
            .map(|chunk| {
                let req = FetchRequest {
                    epoch: view.epoch,
                    ids: chunk.to_vec(),
                    compact: false,
                };
                let addr = addr.clone();
                async move {
                    let started = std::time::Instant::now();
                    let r: Result<VersionsResponse, RpcError> =
                        state.http.post(&addr, "/data/v1/versions", &req).await;
                    state
                        .metrics
                        .reconcile_latency
                        .observe(started.elapsed().as_secs_f64());
                    r
                }
            })
            .collect::<Vec<_>>()
    });
    let mut newer = 0;
    for answer in futures::future::join_all(asks).await {
        let Ok(resp) = answer else { continue };
        for v in resp.versions {
            if state
                .pusher
                .cached_version(&v.data_info_id)
                .is_none_or(|c| v.version > c)
            {
                newer += 1;
                state.pusher.request_fetch(v.data_info_id, v.version);
            }
        }
    }
    if newer > 0 {
        tracing::info!(newer, "version pull found changes the notifications missed");
        state
            .metrics
            .repaired
            .with_label_values(&["pulled"])
            .inc_by(newer as u64);
    }
    newer
}

/// The worker: repairs dirty slots as soon as they are marked, and runs a full repair and a
/// version pull every `interval`.
pub async fn run(state: Arc<SessionState>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let full = tokio::select! {
            _ = ticker.tick() => true,
            _ = state.reconciler.wake.notified() => false,
            _ = state.shutdown.cancelled() => return,
        };
        let view = state.membership.view();
        if full {
            state.reconciler.dirty.lock().clear();
            let r = repair(&state, &view, None).await;
            pull_versions(&state, &view).await;
            let all: BTreeSet<SlotId> = (0..view.slots.slot_count()).collect();
            let missed: Vec<SlotId> = all.difference(&r.covered).copied().collect();
            if !missed.is_empty() && view.slots.slots.iter().any(|a| a.primary.is_some()) {
                state.reconciler.mark(missed);
            }
            continue;
        }
        let dirty: BTreeSet<SlotId> = std::mem::take(&mut *state.reconciler.dirty.lock());
        if dirty.is_empty() {
            if state
                .reconciler
                .pull
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                pull_versions(&state, &view).await;
            }
            continue;
        }
        let r = repair(&state, &view, Some(&dirty)).await;
        if state
            .reconciler
            .pull
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            pull_versions(&state, &view).await;
        }
        let missed: Vec<SlotId> = dirty.difference(&r.covered).copied().collect();
        if missed.is_empty() {
            backoff.reset();
        } else {
            tokio::select! {
                _ = backoff.wait() => {}
                _ = state.shutdown.cancelled() => return,
            }
            state.reconciler.mark(missed);
        }
    }
}
