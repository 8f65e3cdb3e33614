//! Forwarding publisher writes to the data tier until they land.
//!
//! The session acknowledges a registration once it holds it; from then on the write is this
//! module's to deliver. Ops are routed to the primary of their slot by the current view and
//! queued in that data server's [`registry_rpc::lane`]; each lane sends everything it has in one batch and
//! whatever arrives meanwhile goes in the next, so an idle session forwards at once and a busy
//! one batches by itself. Only the newest op per publisher and dataInfoId is kept (a lane's
//! queue is a map keyed by both), so queues are bounded by the number of publishers. A refused
//! or failed op is re-routed by the newest view and retried with backoff, unless a newer op for
//! the same publisher and dataInfoId superseded it. A publisher that moves to another dataInfoId
//! has two ops in flight, the unpublish of the old one and the publish of the new one: keyed by
//! publisher alone, the publish would supersede the unpublish and leave the old registration at
//! the data tier. A dead data server stalls only its own lane.
//!
//! The backlog is bounded: past `forward_backlog` ops not yet landed, connections stop
//! reading client frames ([`Forwarder::room`]) until half of them have landed. Without that
//! a burst of registrations is acknowledged far faster than the data tier takes it in (the
//! client frames crowd the lanes off the session's runtime), and subscribers learn of
//! acknowledged registrations seconds late. A pause lasts at most [`MAX_INTAKE_PAUSE`], so a
//! data tier that takes nothing in slows clients down without silencing them.
//!
//! **Writes a departed primary may have taken with it**: a primary acknowledges a write
//! before its replicas have it (replication is asynchronous), so a primary that dies takes
//! the writes it had not shipped yet. The forwarder remembers what landed at each data server
//! in the last [`RESEND_WINDOW`] before its latest write; when the server leaves the view,
//! [`Forwarder::on_view`] hands those back, for the session to write again at the new
//! primaries from its authoritative copy.
//! Without that, the repair of the moved slots found them by comparing each slot publisher
//! by publisher: seconds at a million publishers, while the data servers copy slots in.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use registry_common::error::{ApiError, ErrorCode};
use registry_common::id::DataInfoId;
use registry_common::member::{ClusterView, Role};
use registry_common::model::{Publisher, PublisherKey};
use registry_common::proto::data::{WriteOp, WriteRequest, WriteResponse};
use registry_rpc::lane::{post_batch, Batcher, Lane, Round};
use registry_rpc::membership::Membership;
use registry_rpc::{CancellationToken, HttpClient, RpcError};
use tokio::sync::Notify;

use crate::metrics::SessionMetrics;

/// An op and its place in the order of ops for its publisher.
#[derive(Clone, Debug)]
struct Queued {
    seq: u64,
    op: WriteOp,
}

/// What ops supersede each other by: the publisher, and the dataInfoId it is written under.
type OpKey = (DataInfoId, PublisherKey);

fn key_of(op: &WriteOp) -> OpKey {
    let key = match op {
        WriteOp::Publish { publisher } => publisher.key.clone(),
        WriteOp::Unpublish { key, .. } => key.clone(),
    };
    (op.data_info_id().clone(), key)
}

/// The writes queued for one data server, the newest op per key.
type WriteLane = Lane<OpKey, Queued>;

/// How far back, from the latest write that landed at a data server, the writes before it
/// are remembered: a primary that dies may not have shipped these to its replicas yet.
/// Replication lag p99 is under 10 ms at W1 and reaches a few hundred ms at a million
/// publishers while slots are copied in. Measured from the latest write, not from the
/// moment the server leaves the view: detecting a death takes from milliseconds (its
/// address refuses) to a lease.
pub const RESEND_WINDOW: Duration = Duration::from_secs(2);

/// Most landed writes remembered per data server; the oldest are forgotten first. At 2,000
/// changes/s over two sessions and three data servers, one data server takes about 700 of a
/// session's writes in the window; a burst of registrations takes many more, capped here.
const RESEND_MAX: usize = 16_384;

/// A write that landed at a data server which has since left the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    pub data_info_id: DataInfoId,
    pub key: PublisherKey,
    /// The connection the write was for: a publisher the session no longer holds is removed
    /// for it, as the data tier removes a publisher only for the connection that owns it.
    pub conn_id: u64,
}

/// The writes that landed at one data server within [`RESEND_WINDOW`] of the latest, in
/// batches as they landed, oldest first.
#[derive(Default)]
struct LandedRing {
    batches: VecDeque<(Instant, Vec<Landed>)>,
    /// Writes in `batches`.
    len: usize,
}

impl LandedRing {
    /// Adds a batch that landed `now`, and forgets batches older than the window before it
    /// and the oldest past [`RESEND_MAX`].
    fn add(&mut self, now: Instant, batch: Vec<Landed>) {
        self.len += batch.len();
        self.batches.push_back((now, batch));
        while let Some((at, batch)) = self.batches.front() {
            if self.len <= RESEND_MAX && now.duration_since(*at) <= RESEND_WINDOW {
                break;
            }
            self.len -= batch.len();
            self.batches.pop_front();
        }
    }
}

/// Called with a registration the data tier refused for good and why.
pub type RefusedHook = Arc<dyn Fn(&Publisher, ApiError) + Send + Sync>;

struct Shared {
    /// What to do with a registration the data tier refused for good (set once at start).
    on_refused: std::sync::OnceLock<RefusedHook>,
    http: HttpClient,
    membership: Arc<Membership>,
    metrics: SessionMetrics,
    max_batch: usize,
    /// Ops not yet landed past which client reads pause (0: never).
    backlog: usize,
    /// Ops not yet landed (the length of `latest`, readable without its lock).
    pending: AtomicUsize,
    /// Woken when the backlog falls to half of `backlog`.
    room: Notify,
    shutdown: CancellationToken,
    seq: AtomicU64,
    /// Newest seq per publisher and dataInfoId with an op not yet landed; an older op that
    /// fails is dropped.
    latest: Mutex<HashMap<OpKey, u64>>,
    lanes: Mutex<HashMap<String, Arc<WriteLane>>>,
    /// Ops with no primary to go to (no data server yet); re-routed on every view change.
    parked: Mutex<HashMap<OpKey, Queued>>,
    /// What landed at each data server lately, by its address: handed back if it leaves.
    landed: Mutex<HashMap<String, LandedRing>>,
}

#[derive(Clone)]
pub struct Forwarder {
    shared: Arc<Shared>,
}

impl Forwarder {
    pub fn new(
        http: HttpClient,
        membership: Arc<Membership>,
        metrics: SessionMetrics,
        max_batch: usize,
        backlog: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                on_refused: std::sync::OnceLock::new(),
                http,
                membership,
                metrics,
                max_batch: max_batch.max(1),
                backlog,
                pending: AtomicUsize::new(0),
                room: Notify::new(),
                shutdown,
                seq: AtomicU64::new(0),
                latest: Mutex::new(HashMap::new()),
                lanes: Mutex::new(HashMap::new()),
                parked: Mutex::new(HashMap::new()),
                landed: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sets what happens to a registration the data tier refuses for good (an invalid one,
    /// or one larger than the data server takes in a request).
    pub fn on_refused(&self, hook: RefusedHook) {
        let _ = self.shared.on_refused.set(hook);
    }

    /// Queues ops for delivery.
    pub fn submit(&self, ops: Vec<WriteOp>) {
        self.enqueue(ops, false);
    }

    /// Queues repair ops, built from a snapshot of the session's publishers: an op whose
    /// publisher already has an op queued or in flight under the same dataInfoId is dropped,
    /// since that op came from a later change and must not be superseded by the snapshot's
    /// older state.
    /// Returns how many publishes and unpublishes were queued.
    pub fn submit_repair(&self, ops: Vec<WriteOp>) -> (usize, usize) {
        self.enqueue(ops, true)
    }

    fn enqueue(&self, ops: Vec<WriteOp>, only_idle: bool) -> (usize, usize) {
        if ops.is_empty() {
            return (0, 0);
        }
        let view = self.shared.membership.view();
        let mut queued = Vec::with_capacity(ops.len());
        {
            let mut latest = self.shared.latest.lock();
            for op in ops {
                let key = key_of(&op);
                if only_idle && latest.contains_key(&key) {
                    continue;
                }
                let seq = self.shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
                latest.insert(key, seq);
                queued.push(Queued { seq, op });
            }
            set_pending(&self.shared, latest.len());
        }
        let publishes = queued
            .iter()
            .filter(|q| matches!(q.op, WriteOp::Publish { .. }))
            .count();
        let counts = (publishes, queued.len() - publishes);
        route(&self.shared, &view, queued);
        counts
    }

    /// Re-routes ops of lanes whose data server left, and parked ops, by `view`. Returns the
    /// writes that landed at the departed data servers in the [`RESEND_WINDOW`] before their
    /// last: those not yet at a replica are gone with a server that died, and are the
    /// caller's to write again.
    pub fn on_view(&self, view: &ClusterView) -> Vec<Landed> {
        let data: Vec<&str> = view
            .members_of(Role::Data)
            .map(|m| m.addr.as_str())
            .collect();
        let mut lost = Vec::new();
        let gone: Vec<Arc<WriteLane>> = {
            let mut lanes = self.shared.lanes.lock();
            let gone: Vec<String> = lanes
                .keys()
                .filter(|a| !data.contains(&a.as_str()))
                .cloned()
                .collect();
            // Under the lanes' lock, as `remember` records only for a lane that exists.
            let mut landed = self.shared.landed.lock();
            for addr in &gone {
                if let Some(ring) = landed.remove(addr) {
                    lost.extend(ring.batches.into_iter().flat_map(|(_, b)| b));
                }
            }
            gone.iter().filter_map(|a| lanes.remove(a)).collect()
        };
        let mut moved: Vec<Queued> = Vec::new();
        for lane in gone {
            lane.stop();
            moved.extend(lane.drain().into_iter().map(|(_, q)| q));
        }
        moved.extend(self.shared.parked.lock().drain().map(|(_, q)| q));
        route(&self.shared, view, moved);
        lost
    }

    /// Ops not yet landed (for tests and status).
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// Whether the backlog is full: a connection should wait for [`Forwarder::room`]
    /// before it reads the next client frame.
    pub fn backlogged(&self) -> bool {
        let backlog = self.shared.backlog;
        backlog > 0 && self.pending() >= backlog
    }

    /// Waits until the backlog has fallen to half its bound, or `most` has passed.
    pub async fn room(&self, most: Duration) {
        let deadline = tokio::time::Instant::now() + most;
        loop {
            // Created before the check: a wake-up between the check and the wait is kept.
            let woken = self.shared.room.notified();
            if self.pending() <= self.shared.backlog / 2 {
                return;
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

/// Longest a connection's reads pause for the forward backlog at a time.
pub const MAX_INTAKE_PAUSE: Duration = Duration::from_secs(1);

/// Records the number of ops not yet landed (called with `latest` locked, so it always
/// matches its length), and wakes paused connections when it falls to half the bound.
fn set_pending(shared: &Shared, n: usize) {
    let before = shared.pending.swap(n, Ordering::Relaxed);
    shared.metrics.forward_pending.set(n as i64);
    let half = shared.backlog / 2;
    if before > half && n <= half {
        shared.room.notify_waiters();
    }
}

/// Puts ops in the lane of their primary under `view`, or parks them.
fn route(shared: &Arc<Shared>, view: &ClusterView, ops: Vec<Queued>) {
    let mut by_lane: HashMap<String, Vec<Queued>> = HashMap::new();
    for q in ops {
        let addr = view
            .slots
            .primary_of(q.op.data_info_id())
            .and_then(|p| view.addr_of(p));
        match addr {
            Some(a) => by_lane.entry(a.to_owned()).or_default().push(q),
            None => {
                shared.parked.lock().insert(key_of(&q.op), q);
            }
        }
    }
    for (addr, ops) in by_lane {
        lane(shared, &addr).push(ops.into_iter().map(|q| (key_of(&q.op), q)), newer);
    }
}

/// Keeps the later of two ops queued for the same publisher and dataInfoId.
fn newer(cur: &mut Queued, q: Queued) {
    if q.seq >= cur.seq {
        *cur = q;
    }
}

fn lane(shared: &Arc<Shared>, addr: &str) -> Arc<WriteLane> {
    let mut lanes = shared.lanes.lock();
    if let Some(l) = lanes.get(addr) {
        return l.clone();
    }
    let lane = WriteLane::new(addr, shared.shutdown.child_token());
    lanes.insert(addr.to_owned(), lane.clone());
    lane.spawn(Writes {
        shared: shared.clone(),
        max_ops: shared.max_batch,
    });
    lane
}

/// Marks an op landed (or given up) unless a newer op for its publisher is queued.
/// An op the data tier refused for good: counted, settled, and a registration handed to the
/// refusal hook (withdrawn and reported to its client).
fn refused(shared: &Shared, q: &Queued, error: ApiError) {
    shared
        .metrics
        .forwarded
        .with_label_values(&["dropped"])
        .inc();
    settle(shared, q);
    if let (WriteOp::Publish { publisher }, Some(hook)) = (&q.op, shared.on_refused.get()) {
        hook(publisher, error);
    }
}

fn settle(shared: &Shared, q: &Queued) {
    let mut latest = shared.latest.lock();
    let key = key_of(&q.op);
    if latest.get(&key) == Some(&q.seq) {
        latest.remove(&key);
    }
    set_pending(shared, latest.len());
}

/// What is remembered of a write that landed: its key and connection, moved out of the op.
fn landed_of(op: WriteOp) -> Landed {
    match op {
        WriteOp::Publish { publisher } => Landed {
            data_info_id: publisher.data_info_id.clone(),
            key: publisher.key.clone(),
            conn_id: publisher.conn_id,
        },
        WriteOp::Unpublish {
            data_info_id,
            key,
            conn_id,
            ..
        } => Landed {
            data_info_id,
            key,
            conn_id,
        },
    }
}

/// Remembers writes that landed at `addr` (see [`RESEND_WINDOW`]).
fn remember(shared: &Shared, addr: &str, batch: Vec<Landed>) {
    if batch.is_empty() {
        return;
    }
    let now = Instant::now();
    // A lane removed meanwhile (its server left) has had its writes handed back already;
    // what lands after that is not remembered, or it would be kept until the address left
    // again.
    let lanes = shared.lanes.lock();
    if !lanes.contains_key(addr) {
        return;
    }
    let mut landed = shared.landed.lock();
    match landed.get_mut(addr) {
        Some(ring) => ring.add(now, batch),
        None => {
            let mut ring = LandedRing::default();
            ring.add(now, batch);
            landed.insert(addr.to_owned(), ring);
        }
    }
}

/// Whether `q` is still the newest op of its publisher.
fn is_latest(shared: &Shared, q: &Queued) -> bool {
    shared.latest.lock().get(&key_of(&q.op)) == Some(&q.seq)
}

/// Most bytes of publisher data one write batch carries: well under a data server's default
/// request limit (32 MiB), as a publisher may carry 512 KiB and a batch 2,000 ops.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// What an op weighs in a batch: its data plus room for ids and framing.
fn op_bytes(op: &WriteOp) -> usize {
    512 + match op {
        WriteOp::Publish { publisher } => publisher.payload_len() + 64 * publisher.data.len(),
        WriteOp::Unpublish { .. } => 0,
    }
}

/// Whether a data server refused a whole request as too large.
fn too_large(e: &RpcError) -> bool {
    e.code() == ErrorCode::PayloadTooLarge
        || matches!(e, RpcError::BadAnswer(m) if m.starts_with("HTTP 413"))
}

/// A write lane's sending: one `/data/v1/write` of up to `max_ops` ops and
/// [`MAX_BATCH_BYTES`]; failed ops are re-routed by the newest view unless superseded.
struct Writes {
    shared: Arc<Shared>,
    /// Ops per batch: halved when the data server refuses a batch as too large (its limit
    /// may be below ours), back to the maximum once a batch lands.
    max_ops: usize,
}

impl Batcher<OpKey, Queued> for Writes {
    fn max_items(&self) -> usize {
        self.max_ops
    }

    fn max_bytes(&self) -> usize {
        MAX_BATCH_BYTES
    }

    fn bytes(&self, _key: &OpKey, q: &Queued) -> usize {
        op_bytes(&q.op)
    }

    async fn send(
        &mut self,
        lane: &Arc<WriteLane>,
        batch: Vec<(OpKey, Queued)>,
    ) -> Round<OpKey, Queued> {
        let shared = &self.shared;
        let batch: Vec<Queued> = batch.into_iter().map(|(_, q)| q).collect();
        let view = shared.membership.view();
        let req = WriteRequest {
            epoch: view.epoch,
            ops: batch.iter().map(|q| q.op.clone()).collect(),
            version_floor: crate::floor::get(),
        };
        let (rid, answer): (_, Result<WriteResponse, RpcError>) = post_batch(
            &shared.http,
            lane.addr(),
            "/data/v1/write",
            &req,
            &shared.metrics.forward_latency,
        )
        .await;
        let mut retry: Vec<Queued> = Vec::new();
        let mut refresh = false;
        let answered = answer.is_ok();
        match answer {
            Ok(resp) if resp.results.len() == batch.len() => {
                let mut landed = Vec::with_capacity(batch.len());
                for (q, result) in batch.into_iter().zip(resp.results) {
                    match result.error {
                        None => {
                            shared.metrics.forwarded.with_label_values(&["ok"]).inc();
                            settle(shared, &q);
                            landed.push(landed_of(q.op));
                        }
                        Some(e) if e.code.is_retryable() => {
                            refresh |=
                                matches!(e.code, ErrorCode::NotOwner | ErrorCode::StaleEpoch)
                                    && e.epoch.is_some_and(|ep| ep > view.epoch);
                            retry.push(q);
                        }
                        Some(e) => {
                            tracing::warn!(request = %rid, id = %q.op.data_info_id(), "data server refused a write: {e}");
                            refused(shared, &q, e);
                        }
                    }
                }
                remember(shared, lane.addr(), landed);
            }
            Ok(_) => {
                tracing::warn!(to = %lane.addr(), "data server answered a write batch with the wrong number of results");
                retry = batch;
            }
            Err(e) if too_large(&e) && batch.len() == 1 => {
                // One op alone is over the data server's limit: it never will fit.
                let error = e.into_api();
                tracing::warn!(request = %rid, to = %lane.addr(), "a single write is over the data server's request limit: {error}");
                for q in batch {
                    refused(shared, &q, error.clone());
                }
                return Round::Done;
            }
            Err(e) if too_large(&e) && batch.len() > 1 => {
                // Send it again at once in smaller batches.
                self.max_ops = (batch.len() / 2).max(1);
                tracing::info!(to = %lane.addr(), ops = batch.len(), "write batch too large for the data server: halving it");
                let again = batch.into_iter().filter(|q| is_latest(shared, q));
                lane.push(again.map(|q| (key_of(&q.op), q)), |_, _| {});
                return Round::Done;
            }
            Err(e) => {
                tracing::debug!(to = %lane.addr(), "write batch failed: {e}");
                if let RpcError::Api(api) = &e {
                    refresh |= api.code == ErrorCode::StaleEpoch;
                }
                retry = batch;
            }
        }
        if answered {
            self.max_ops = shared.max_batch.max(1);
        }
        if retry.is_empty() {
            return Round::Done;
        }
        shared
            .metrics
            .forwarded
            .with_label_values(&["retry"])
            .inc_by(retry.len() as u64);
        if refresh {
            shared.membership.refresh().await;
        }
        Round::Retry {
            answered,
            items: retry.into_iter().map(|q| (key_of(&q.op), q)).collect(),
        }
    }

    fn requeue(&mut self, _lane: &Arc<WriteLane>, items: Vec<(OpKey, Queued)>) {
        let retry: Vec<Queued> = items
            .into_iter()
            .map(|(_, q)| q)
            .filter(|q| is_latest(&self.shared, q))
            .collect();
        route(&self.shared, &self.shared.membership.view(), retry);
    }
}
