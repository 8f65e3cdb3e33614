//! Keeping the data tier and the session's caches true to the session's authoritative copy.
//!
//! Two jobs, run by one worker task (the periodic full pass as a task of its own, so that
//! the repair of moved slots never waits behind it):
//! - **Repair** of slots: for the slots asked for, ask each primary for a tally (count and
//!   fingerprint sum) of what it holds for this session per slot (`/data/v1/session-summary`)
//!   and compare with the session's own; where they differ, ask for those publishers
//!   (`/data/v1/session-publishers`) and compare one by one: a missing or different one is
//!   published again, one the primary holds for this session that the session no longer has
//!   is removed. Runs at once for the slots whose
//!   primary changed in a new view (failover, migration), and for every slot each interval.
//! - **Version pull**, each interval: batched version queries to each data server for every
//!   dataInfoId with local subscribers, paced over half the interval; anything newer
//!   than the cache is fetched and pushed, so a lost change notification costs about one
//!   interval.
//!
//! Both walk everything the session holds, so both let the runtime go often and compare
//! big slots one at a time: the pushes behind a pass wait for a small step of it, never for
//! all of it.
//!
//! - **Resend** of the writes that landed at a data server that left the view within the
//!   forwarder's window (see [`crate::forward`]): written again at once from the session's
//!   authoritative copy, before the repair of the moved slots would find them.
//!
//! A slot a primary does not answer for (still copying in, or unreachable) stays pending and
//! is retried with backoff.
//!
//! **Handover**: the publishers of clients this session sent away (`go_away` on a graceful
//! stop, or when cut off from the meta cluster) are left in the data tier for the clients'
//! re-registration through another session to take over. To the repair they look like
//! strays (the data tier holds them for this session, the session no longer does); removing
//! them at once would show every subscriber a partial view until each client is back. So
//! they are left alone for the handover grace, after which a repair removes those nobody
//! took over (the data tier removes a publisher only for the session and connection that
//! own it, so a taken-over one is not touched).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use registry_common::error::ErrorCode;
use registry_common::id::DataInfoId;
use registry_common::member::{ClusterView, MemberId};
use registry_common::model::PublisherKey;
use registry_common::proto::data::{
    FetchRequest, PublisherDigest, SessionPublishersRequest, SessionPublishersResponse,
    SessionSummaryResponse, VersionsResponse, WriteOp,
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
    /// Publishers handed over to other sessions (see the module comment), with the moment
    /// the repair may remove them. Bounded by the publishers the session held.
    handed_over: Mutex<HashMap<PublisherKey, Instant>>,
    /// Repair passes finished, for status and tests.
    passes: std::sync::atomic::AtomicU64,
    /// Slots compared publisher by publisher because their tallies differed, for tests.
    compared: std::sync::atomic::AtomicU64,
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

    /// Leaves the publishers of `ops` (the unpublish ops of a connection sent away) in the
    /// data tier until `until`, when a repair of every slot removes those nobody took over.
    pub fn hand_over(&self, ops: &[WriteOp], until: Instant) {
        let mut handed = self.handed_over.lock();
        let before = handed.len();
        for op in ops {
            if let WriteOp::Unpublish { key, .. } = op {
                handed.insert(key.clone(), until);
            }
        }
        if handed.len() != before {
            self.wake.notify_one();
        }
    }

    /// Whether the repair must leave `key` alone: it is being handed over.
    pub(crate) fn handing_over(&self, key: &PublisherKey, now: Instant) -> bool {
        self.handed_over
            .lock()
            .get(key)
            .is_some_and(|until| now < *until)
    }

    /// Forgets handovers whose grace has passed; returns the earliest one still running.
    fn expire_handovers(&self, now: Instant) -> (bool, Option<Instant>) {
        let mut handed = self.handed_over.lock();
        let before = handed.len();
        handed.retain(|_, until| now < *until);
        (handed.len() != before, handed.values().min().copied())
    }

    /// Repair passes finished so far.
    pub fn repair_passes(&self) -> u64 {
        self.passes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Slots waiting for a repair (marked, or missed by the last one and retried).
    pub fn pending_slots(&self) -> usize {
        self.dirty.lock().len()
    }

    /// Slots compared publisher by publisher so far (their tallies differed).
    pub fn slots_compared(&self) -> u64 {
        self.compared.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Publishers being handed over to other sessions.
    pub fn handovers(&self) -> usize {
        self.handed_over.lock().len()
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
///
/// First each primary sends one tally per slot (`/data/v1/session-summary`); only the slots
/// whose tally differs from the session's are compared publisher by publisher
/// (`/data/v1/session-publishers`). A pass over a cluster in agreement so costs a few bytes
/// per slot, whatever the number of publishers.
pub async fn repair(
    state: &SessionState,
    view: &ClusterView,
    only: Option<&BTreeSet<SlotId>>,
) -> Repaired {
    let slot_count = view.slots.slot_count();
    let mut by_primary: HashMap<String, Vec<SlotId>> = HashMap::new();
    for slot in 0..slot_count {
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
    let by_primary: Vec<(String, Vec<SlotId>)> = by_primary.into_iter().collect();
    let asks = by_primary.iter().map(|(addr, slots)| {
        // Empty means "all"; ask explicitly when a subset is wanted.
        let slots = if only.is_some() {
            slots.clone()
        } else {
            Vec::new()
        };
        ask_slots::<SessionSummaryResponse>(state, view, addr, SUMMARY, slots)
    });
    let answers = futures::future::join_all(asks).await;
    // Read our own tallies only after the primaries answered: anything registered before
    // they answered is counted, so nothing the session holds is mistaken for a stray.
    let mine = state.registry.tallies(slot_count);
    let mut out = Repaired::default();
    let mut differ: Vec<(String, Vec<SlotId>)> = Vec::new();
    for ((addr, slots), answer) in by_primary.into_iter().zip(answers) {
        match answer {
            Ok(resp) => {
                let mut unequal = Vec::new();
                for s in resp.slots {
                    if only.is_some_and(|o| !o.contains(&s.slot)) || s.slot >= slot_count {
                        continue;
                    }
                    if mine.get(s.slot as usize) == Some(&s.tally) {
                        out.covered.insert(s.slot);
                    } else {
                        unequal.push(s.slot);
                    }
                }
                if !unequal.is_empty() {
                    differ.push((addr, unequal));
                }
            }
            // A data server of an earlier release: compare its slots publisher by publisher.
            Err(e) if e.code() == ErrorCode::NotFound => differ.push((addr, slots)),
            Err(e) => tracing::debug!(data = %addr, "repair summary failed: {e}"),
        }
    }
    let ops = if differ.is_empty() {
        Vec::new()
    } else {
        compare(state, view, differ, &mut out).await
    };
    // Publishers with a write already on its way are left to it (it carries a later state).
    (out.republished, out.removed) = state.forwarder.submit_repair(ops);
    state
        .reconciler
        .passes
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
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

/// Writes again, from the session's authoritative copy, the publishers of writes that landed
/// at a data server that has since left (`Forwarder::on_view`): a primary that died may not
/// have shipped them to the replica that took its place. A publisher the session holds under
/// that dataInfoId is published again as it is now; one it no longer holds there is removed
/// for the connection it was written for, unless it is being handed over. A publisher with a
/// write already on its way is left to that write. Returns how many ops were queued.
pub fn resend(state: &SessionState, landed: Vec<crate::forward::Landed>) -> usize {
    if landed.is_empty() {
        return 0;
    }
    let now = Instant::now();
    // The newest write per publisher and dataInfoId (the list is oldest first).
    let mut newest: HashMap<(DataInfoId, PublisherKey), u64> = HashMap::new();
    for l in landed {
        newest.insert((l.data_info_id, l.key), l.conn_id);
    }
    let ops: Vec<WriteOp> = newest
        .into_iter()
        .filter_map(
            |((data_info_id, key), conn_id)| match state.registry.publisher(&key) {
                Some(p) if p.data_info_id == data_info_id => {
                    Some(WriteOp::Publish { publisher: p })
                }
                _ if state.reconciler.handing_over(&key, now) => None,
                _ => Some(WriteOp::Unpublish {
                    data_info_id,
                    key,
                    session: state.id.clone(),
                    conn_id,
                }),
            },
        )
        .collect();
    let (published, removed) = state.forwarder.submit_repair(ops);
    let queued = published + removed;
    if queued > 0 {
        tracing::info!(
            published,
            removed,
            "writing again what landed at a data server that left"
        );
        state
            .metrics
            .repaired
            .with_label_values(&["resent"])
            .inc_by(queued as u64);
    }
    queued
}

/// Slots summarised again in one request before they are compared. A differing slot costs
/// all of its publishers on both sides (about 2,000 of this session's at a million
/// publishers), and under churn many slots differ for a moment (a write on its way when the
/// tallies were read). So a pass looks again at a few slots at a time and compares those
/// still differing one slot per request, each data server in its own sequence, rather than
/// in one answer of tens of megabytes that would hold both servers' runtimes, and every push
/// behind them, for a quarter of a second.
const CONFIRM_SLOTS: usize = 8;

/// Ids a pass looks at before it lets the runtime go: a pass over every subscribed id (a
/// hundred thousand at a million publishers) must not hold up the pushes behind it.
const YIELD_EVERY: usize = 256;

/// Ids in one request of the paced version pull: small enough that looking at one answer
/// holds the runtime for well under a millisecond.
const PULL_BATCH: usize = 128;

/// The periodic version pull is paced over the interval divided by this (half of it), so
/// each id is still pulled once per interval. At a million publishers, a pull over a third
/// of the interval in batches of 256 left churn p99 at 4.4 ms, over half in batches of 128
/// at 3.5 ms (against 2.5 ms between pulls).
const PULL_SPREAD: u32 = 2;

/// The route of the per-slot tallies of what a primary holds for one session.
const SUMMARY: &str = "/data/v1/session-summary";

/// The route of the publishers themselves.
const PUBLISHERS: &str = "/data/v1/session-publishers";

/// Asks the primary at `addr` about this session's publishers in `slots` (empty: every slot
/// it is primary of), at `path`: [`SUMMARY`] or [`PUBLISHERS`].
async fn ask_slots<R: serde::de::DeserializeOwned>(
    state: &SessionState,
    view: &ClusterView,
    addr: &str,
    path: &str,
    slots: Vec<SlotId>,
) -> Result<R, RpcError> {
    let req = SessionPublishersRequest {
        epoch: view.epoch,
        session: state.id.clone(),
        slots,
    };
    state.http.post(addr, path, &req).await
}

/// Compares the slots of `asks` (primary address, slots): a few at a time are summarised
/// again, and those still differing are compared publisher by publisher, one at a time.
/// Adds the slots settled to `out.covered` and returns the writes that make the primaries
/// equal to this session.
async fn compare(
    state: &SessionState,
    view: &ClusterView,
    asks: Vec<(String, Vec<SlotId>)>,
    out: &mut Repaired,
) -> Vec<WriteOp> {
    let per_server = asks.into_iter().map(|(addr, slots)| async move {
        let mut ops = Vec::new();
        let mut covered = BTreeSet::new();
        for few in slots.chunks(CONFIRM_SLOTS) {
            for slot in confirm(state, view, &addr, few, &mut covered).await {
                compare_at(state, view, &addr, vec![slot], &mut covered, &mut ops).await;
                tokio::task::yield_now().await;
            }
        }
        (ops, covered)
    });
    let mut ops = Vec::new();
    for (o, covered) in futures::future::join_all(per_server).await {
        ops.extend(o);
        out.covered.extend(covered);
    }
    ops
}

/// Asks `addr` again for the tallies of `slots`: those now equal go to `covered` (a write was
/// on its way when they were first read), the others are returned. A data server without
/// summaries (an earlier release) has all of them returned; one that does not answer, none.
async fn confirm(
    state: &SessionState,
    view: &ClusterView,
    addr: &str,
    slots: &[SlotId],
    covered: &mut BTreeSet<SlotId>,
) -> Vec<SlotId> {
    let answer =
        ask_slots::<SessionSummaryResponse>(state, view, addr, SUMMARY, slots.to_vec()).await;
    let resp = match answer {
        Ok(resp) => resp,
        Err(e) if e.code() == ErrorCode::NotFound => return slots.to_vec(),
        Err(e) => {
            tracing::debug!(data = %addr, "repair summary failed: {e}");
            return Vec::new();
        }
    };
    let slot_count = view.slots.slot_count();
    let mine = state.registry.tallies(slot_count);
    let mut differ = Vec::new();
    for s in resp.slots {
        if !slots.contains(&s.slot) {
            continue;
        }
        if mine.get(s.slot as usize) == Some(&s.tally) {
            covered.insert(s.slot);
        } else {
            differ.push(s.slot);
        }
    }
    differ
}

/// Compares `slots` at `addr` publisher by publisher; adds the slots compared to `covered`
/// and the writes that make the primary equal to this session to `ops`.
async fn compare_at(
    state: &SessionState,
    view: &ClusterView,
    addr: &str,
    slots: Vec<SlotId>,
    covered: &mut BTreeSet<SlotId>,
    ops: &mut Vec<WriteOp>,
) {
    let slot_count = view.slots.slot_count();
    let asked: BTreeSet<SlotId> = slots.iter().copied().collect();
    state
        .reconciler
        .compared
        .fetch_add(asked.len() as u64, std::sync::atomic::Ordering::AcqRel);
    let answer = ask_slots::<SessionPublishersResponse>(state, view, addr, PUBLISHERS, slots).await;
    let resp = match answer {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(data = %addr, "repair query failed: {e}");
            return;
        }
    };
    let here: BTreeSet<SlotId> = resp
        .slots
        .iter()
        .copied()
        .filter(|s| asked.contains(s))
        .collect();
    // As in `repair`: our own publishers are read after the primary answered.
    let mine = state
        .registry
        .publishers_in(slot_count, |s| here.contains(&s));
    let now = Instant::now();
    let held: HashMap<&PublisherKey, &PublisherDigest> =
        resp.publishers.iter().map(|d| (&d.key, d)).collect();
    for p in &mine {
        let same = held.get(&p.key).is_some_and(|d| {
            d.data_info_id == p.data_info_id
                && d.conn_id == p.conn_id
                && d.version == p.version
                && d.registered_at_ms == p.registered_at_ms
        });
        if !same {
            ops.push(WriteOp::Publish {
                publisher: p.clone(),
            });
        }
    }
    // A publisher the session holds under another dataInfoId (it moved) is a stray at the
    // old one.
    let owned: HashMap<&PublisherKey, (u64, &DataInfoId)> = mine
        .iter()
        .map(|p| (&p.key, (p.conn_id, &p.data_info_id)))
        .collect();
    for d in &resp.publishers {
        if !here.contains(&slot_of(&d.data_info_id, slot_count)) {
            continue;
        }
        if owned.get(&d.key) != Some(&(d.conn_id, &d.data_info_id))
            && !state.reconciler.handing_over(&d.key, now)
        {
            ops.push(WriteOp::Unpublish {
                data_info_id: d.data_info_id.clone(),
                key: d.key.clone(),
                session: state.id.clone(),
                conn_id: d.conn_id,
            });
        }
    }
    covered.extend(here);
}

/// Asks every data server for the versions of the subscribed dataInfoIds it is primary of
/// (those in `only` when given) and fetches whatever is newer than the cache. Returns how
/// many were newer. With `spread`, each data server's batches are paced evenly over that
/// time.
pub async fn pull_versions(
    state: &Arc<SessionState>,
    view: &ClusterView,
    only: Option<&BTreeSet<SlotId>>,
    spread: Option<Duration>,
) -> usize {
    let started = Instant::now();
    let mut by_primary: HashMap<&MemberId, Vec<DataInfoId>> = HashMap::new();
    let slot_count = view.slots.slot_count();
    let ids = state.pusher.subscribed_ids();
    let total = ids.len();
    for (n, id) in ids.into_iter().enumerate() {
        if n > 0 && n % YIELD_EVERY == 0 {
            tokio::task::yield_now().await;
        }
        let slot = slot_of(&id, slot_count);
        if only.is_some_and(|slots| !slots.contains(&slot)) {
            continue;
        }
        if let Some(primary) = view.slots.get(slot).and_then(|a| a.primary.as_ref()) {
            by_primary.entry(primary).or_default().push(id);
        }
    }
    let grouped = started.elapsed();
    // Paced batches are small, so that looking at one answer is a short step; batches sent
    // at once are as large as the data servers take, so there are few of them.
    let max = match spread {
        Some(_) => state.config.max_batch.clamp(1, PULL_BATCH),
        None => state.config.max_batch.max(1),
    };
    // A pull of every subscribed id sends one batch at a time to each data server (the
    // servers in parallel), so it is spread over its round trips instead of landing on the
    // data tier, and coming back to this session, all at once; the periodic one is paced
    // over a part of the interval too (at a million publishers it costs this session about
    // half a core for a second when sent back to back, which the pushes of that second
    // would wait behind). The pull of the slots that just moved makes good the changes a
    // failover lost: all of it at once.
    let in_flight = if only.is_some() { usize::MAX } else { 1 };
    let per_server: Vec<(MemberId, String, Vec<Vec<DataInfoId>>)> = by_primary
        .into_iter()
        .filter_map(|(primary, ids)| {
            let addr = view.addr_of(primary)?.to_owned();
            let batches = ids.chunks(max).map(<[DataInfoId]>::to_vec).collect();
            Some((primary.clone(), addr, batches))
        })
        .collect();
    let pulls = per_server.into_iter().map(|(primary, addr, batches)| {
        let addr = Arc::new(addr);
        let gap = spread.map(|s| s / batches.len().max(1) as u32);
        futures::stream::iter(batches.into_iter().enumerate())
            .map(move |(i, ids)| {
                let primary = primary.clone();
                let addr = addr.clone();
                async move {
                    if let Some(gap) = gap.filter(|_| i > 0) {
                        tokio::time::sleep(gap).await;
                        // A paced pull lasts for half the interval: a data server that
                        // left meanwhile gets no more of it (its batches would only time
                        // out). The failover's pull of the moved slots asks their new
                        // primaries.
                        if !state.membership.view().members.contains_key(&primary) {
                            tracing::debug!(data = %addr, "version pull: server left, batch skipped");
                            return 0;
                        }
                    }
                    let req = FetchRequest {
                        epoch: view.epoch,
                        ids,
                        compact: false,
                    };
                    let started = std::time::Instant::now();
                    let answer: Result<VersionsResponse, RpcError> =
                        state.http.post(&addr, "/data/v1/versions", &req).await;
                    state
                        .metrics
                        .reconcile_latency
                        .observe(started.elapsed().as_secs_f64());
                    let resp = match answer {
                        Ok(resp) => resp,
                        Err(e) => {
                            tracing::debug!(data = %addr, "version pull failed: {e}");
                            return 0;
                        }
                    };
                    // Each answer is looked at as it comes, and the runtime let go between
                    // answers: the pushes waiting behind a pull of every subscribed id
                    // wait for one batch, not for all of them.
                    let mut newer = 0;
                    for (n, v) in resp.versions.into_iter().enumerate() {
                        if n > 0 && n % YIELD_EVERY == 0 {
                            tokio::task::yield_now().await;
                        }
                        if state
                            .pusher
                            .cached_version(&v.data_info_id)
                            .is_none_or(|c| v.version > c)
                        {
                            newer += 1;
                            state.pusher.request_fetch(v.data_info_id, v.version);
                        }
                    }
                    newer
                }
            })
            .buffer_unordered(in_flight)
            .collect::<Vec<usize>>()
    });
    let newer: usize = futures::future::join_all(pulls)
        .await
        .into_iter()
        .flatten()
        .sum();
    tracing::debug!(
        ids = total,
        grouped_ms = grouped.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        newer,
        "version pull done"
    );
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

/// The worker: repairs dirty slots as soon as they are marked, and starts a full repair and
/// version pull every `interval`.
///
/// The full pass runs as a task of its own, one at a time: at a million publishers it takes
/// tens of seconds (its version pull alone is paced over half the interval), and a
/// failover's repair of the moved slots waiting behind it took 18 s instead of a fraction
/// of one. The two may look at a slot at the same moment; that costs at most a republish
/// twice (the same version, which the data tier takes as it is), since the forwarder drops
/// a repair op for a publisher with a write on its way.
pub async fn run(state: Arc<SessionState>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut full_pass: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        // Handovers whose grace ran out: repair every slot, which removes what nobody took
        // over.
        let (expired, next_expiry) = state.reconciler.expire_handovers(Instant::now());
        if expired {
            let slots = state.membership.view().slots.slot_count();
            state.reconciler.dirty.lock().extend(0..slots);
        }
        let expiry = async {
            match next_expiry {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let full = if expired {
            false
        } else {
            tokio::select! {
                _ = ticker.tick() => true,
                _ = state.reconciler.wake.notified() => false,
                _ = expiry => continue,
                _ = state.shutdown.cancelled() => return,
            }
        };
        let view = state.membership.view();
        if full {
            if full_pass.as_ref().is_some_and(|pass| !pass.is_finished()) {
                tracing::info!("the previous full repair and version pull still runs; skipping this interval's");
                continue;
            }
            let state = state.clone();
            full_pass = Some(tokio::spawn(async move {
                tokio::select! {
                    _ = full_pass_of(&state, &view, interval) => {}
                    _ = state.shutdown.cancelled() => {}
                }
            }));
            continue;
        }
        let dirty: BTreeSet<SlotId> = std::mem::take(&mut *state.reconciler.dirty.lock());
        if dirty.is_empty() {
            if state
                .reconciler
                .pull
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                pull_versions(&state, &view, None, None).await;
            }
            continue;
        }
        let r = repair(&state, &view, Some(&dirty)).await;
        // A primary that died may have taken change notifications with it for changes its
        // replica, now primary, holds: the repair finds nothing to write, and nothing would
        // announce those versions again before the periodic pull. So the slots whose
        // primary changed have their versions pulled too.
        let all = state
            .reconciler
            .pull
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        if all {
            pull_versions(&state, &view, None, None).await;
        } else if !r.covered.is_empty() {
            pull_versions(&state, &view, Some(&r.covered), None).await;
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

/// One full pass: a repair of every slot, then a version pull of every subscribed id paced
/// over part of the interval; slots the repair could not cover are marked for the worker.
async fn full_pass_of(state: &Arc<SessionState>, view: &ClusterView, interval: Duration) {
    let started = Instant::now();
    let r = repair(state, view, None).await;
    let repaired = Instant::now();
    state
        .metrics
        .repair_pass
        .observe(repaired.duration_since(started).as_secs_f64());
    pull_versions(state, view, None, Some(interval / PULL_SPREAD)).await;
    state
        .metrics
        .pull_pass
        .observe(repaired.elapsed().as_secs_f64());
    let all: BTreeSet<SlotId> = (0..view.slots.slot_count()).collect();
    let missed: Vec<SlotId> = all.difference(&r.covered).copied().collect();
    if !missed.is_empty() && view.slots.slots.iter().any(|a| a.primary.is_some()) {
        state.reconciler.mark(missed);
    }
}
