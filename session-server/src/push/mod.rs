//! The push pipeline: change -> datum -> every local subscriber.
//!
//! - `fetch`: a change notification newer than the cached datum either carries the datum
//!   (small datums ride along) or starts one fetch from the slot's primary, batched per data
//!   server;
//! - this module: the datum cache, accepting a datum (`accept`) and offering it to every
//!   subscription of its dataInfoId, subscribing, acks;
//! - `flow`: the subscription table, which holds each dataInfoId's cached datum beside its
//!   subscriptions, and per-subscription flow control (at most one unacknowledged push,
//!   newer datums merged behind it);
//! - `sweeper`: unacknowledged pushes resent with backoff (those the client missed, or one
//!   at a time to a quiet client), past the merge window replaced, never acknowledged closed;
//! - `acks`: each connection's pushes awaiting an ack, and how far its client has read;
//! - `protection`: datums that lost publishers to a server-side event held back;
//! - `frame`: the `push` frame, serialised once per datum.

mod acks;
mod fetch;
mod flow;
mod frame;
mod protection;
mod sweeper;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use registry_common::id::{DataInfoId, IdInterner};
use registry_common::model::PushDatum;
use registry_common::proto::data::Change;
use registry_rpc::membership::Membership;
use registry_rpc::{CancellationToken, HttpClient};

use crate::metrics::SessionMetrics;
use crate::outbox::{Frame, OutboxError};
use crate::registry::{Conn, ConnId};
pub use acks::PushAcks;
use fetch::FetchLane;
use flow::{IdEntry, Sub, SubKey, SubTable};
pub use frame::{Prepared, QueuedPush};
use sweeper::Deadlines;

/// What one subscription holds, as the admin API shows it.
pub struct SubscriptionState {
    pub conn: Arc<Conn>,
    pub regist_id: String,
    pub acked: Option<u64>,
    pub inflight: Option<u64>,
    pub pending: Option<u64>,
}

/// A push to put in a connection's outbox.
pub(crate) struct Outgoing {
    conn: Arc<Conn>,
    push: QueuedPush,
}

pub struct PushConfig {
    pub ack_timeout: Duration,
    pub ack_retries: u32,
    pub max_batch: usize,
    /// Most datums kept (one per subscribed dataInfoId).
    pub cache_entries: u64,
    /// Longest a pending datum waits for the in-flight push's ack.
    pub max_merge_window: Duration,
    /// How long a datum emptied server-side is held back.
    pub empty_protection: Duration,
}

pub struct Pusher {
    config: PushConfig,
    /// The cluster's push switch as last seen in the view: while off, datums wait as each
    /// subscription's `pending` one and nothing is sent, resent or timed out.
    enabled: AtomicBool,
    /// dataInfoId -> subscriptions on this session, and the id's newest datum: the datum
    /// cache.
    subs: SubTable,
    /// Datums kept in `subs`, at most `config.cache_entries`.
    cached: AtomicU64,
    /// When each unacknowledged push is to be looked at again.
    deadlines: Deadlines,
    /// Shared copies of dataInfoIds: a datum from the data tier is keyed by the copy its
    /// subscriptions hold.
    ids: Arc<IdInterner>,
    /// dataInfoId -> highest version announced while its fetch is in flight.
    fetching: Mutex<HashMap<DataInfoId, u64>>,
    /// Fetch lanes by data server address.
    lanes: Mutex<HashMap<String, Arc<FetchLane>>>,
    /// Ids with no holder to fetch from; retried on view change.
    parked: Mutex<HashSet<DataInfoId>>,
    /// Datums emptied server-side that are being held back, and since when.
    held_empty: Mutex<HashMap<DataInfoId, Instant>>,
    http: HttpClient,
    membership: Arc<Membership>,
    metrics: SessionMetrics,
    shutdown: CancellationToken,
}

impl Pusher {
    pub fn new(
        config: PushConfig,
        ids: Arc<IdInterner>,
        http: HttpClient,
        membership: Arc<Membership>,
        metrics: SessionMetrics,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let pusher = Arc::new(Self {
            config,
            enabled: AtomicBool::new(true),
            ids,
            subs: SubTable::new(),
            cached: AtomicU64::new(0),
            deadlines: Deadlines::default(),
            fetching: Mutex::new(HashMap::new()),
            lanes: Mutex::new(HashMap::new()),
            parked: Mutex::new(HashSet::new()),
            held_empty: Mutex::new(HashMap::new()),
            http,
            membership,
            metrics,
            shutdown,
        });
        tokio::spawn(sweeper::ack_sweeper(pusher.clone()));
        pusher
    }

    /// Adds a subscription and pushes it the current datum (from cache, or once fetched).
    pub fn subscribe(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        regist_id: &str,
        id: DataInfoId,
        known_version: u64,
    ) {
        crate::floor::observe(known_version);
        let key: SubKey = (conn.id, Arc::from(regist_id));
        let sub = Sub::new(conn.clone(), known_version);
        let mut out = Vec::new();
        let cached;
        {
            let mut subs = self.subs.shard(&id);
            let entry = subs.entry(id.clone()).or_default();
            if entry.subs.insert(key.clone(), sub).is_none() {
                self.metrics.subscribers.inc();
            }
            // The subscription and the id's datum are under one lock: a datum accepted after
            // this is delivered to it by `accept`, one accepted before is offered here.
            cached = entry.cached.clone();
            if let (Some(p), Some(sub)) = (&cached, entry.subs.get_mut(&key)) {
                if let Some(o) = self.offer(sub, &key.1, p, self.is_enabled()) {
                    out.push(o);
                }
            }
        }
        self.send_all(out);
        if cached.is_none() {
            self.request_fetch(id, 0);
        }
    }

    /// Whether pushes are on.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Follows the cluster's push switch. Turned on again, every subscription gets the
    /// newest datum that waited while it was off.
    pub fn set_enabled(&self, on: bool) {
        if self.enabled.swap(on, Ordering::AcqRel) == on {
            return;
        }
        tracing::warn!(on, "push switch turned {}", if on { "on" } else { "off" });
        if !on {
            return;
        }
        for shard in self.subs.shards() {
            let mut out = Vec::new();
            for entry in shard.lock().values_mut() {
                for ((_, regist_id), sub) in entry.subs.iter_mut() {
                    if sub.inflight.is_none() {
                        if let Some(next) = sub.pending.take() {
                            out.push(self.send_push(sub, regist_id, next, 1));
                        }
                    }
                }
            }
            self.send_all(out);
        }
    }

    /// Removes one subscription.
    pub fn unsubscribe(&self, conn: ConnId, regist_id: &str, id: &DataInfoId) {
        let mut subs = self.subs.shard(id);
        if let Some(entry) = subs.get_mut(id) {
            let key: SubKey = (conn, Arc::from(regist_id));
            if entry.subs.remove(&key).is_some() {
                self.metrics.subscribers.dec();
            }
            if entry.subs.is_empty() {
                // The last subscription gone, its datum goes with it.
                if subs.remove(id).is_some_and(|e| e.cached.is_some()) {
                    self.cached.fetch_sub(1, Ordering::Relaxed);
                    self.metrics.cached_datums.dec();
                }
            }
        }
    }

    /// Removes every subscription of a closed connection.
    pub fn drop_conn(&self, conn: &Conn) {
        let regs: Vec<(String, DataInfoId)> = conn.subscribers.lock().drain().collect();
        for (regist_id, id) in regs {
            self.unsubscribe(conn.id, &regist_id, &id);
        }
    }

    /// Every dataInfoId with local subscribers.
    pub fn subscribed_ids(&self) -> Vec<DataInfoId> {
        self.subs
            .shards()
            .flat_map(|s| s.lock().keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// The subscriptions of `id` on this session, with the versions each holds, for the
    /// admin API.
    pub fn subscriptions_of(&self, id: &DataInfoId) -> Vec<SubscriptionState> {
        let subs = self.subs.shard(id);
        let Some(entry) = subs.get(id) else {
            return Vec::new();
        };
        entry
            .subs
            .iter()
            .map(|((_, regist_id), sub)| SubscriptionState {
                conn: sub.conn.clone(),
                regist_id: regist_id.to_string(),
                acked: sub.acked,
                inflight: sub.inflight.as_ref().map(|f| f.prepared.version()),
                pending: sub.pending.as_ref().map(|p| p.version()),
            })
            .collect()
    }

    /// Version of the cached datum of `id`, if any.
    pub fn cached_version(&self, id: &DataInfoId) -> Option<u64> {
        let subs = self.subs.shard(id);
        subs.get(id)?.cached.as_ref().map(|p| p.version())
    }

    /// The cached datum of `id`, if any.
    fn cached(&self, id: &DataInfoId) -> Option<Arc<Prepared>> {
        self.subs.shard(id).get(id)?.cached.clone()
    }

    /// Whether `version` is newer than the datum cached for `id`; `None` when `id` has no
    /// subscriptions here.
    fn is_newer(&self, id: &DataInfoId, version: u64) -> Option<bool> {
        let subs = self.subs.shard(id);
        let entry = subs.get(id)?;
        Some(entry.cached.as_ref().is_none_or(|p| p.version() < version))
    }

    /// Makes `prepared` the datum kept for `entry`'s id, unless the session already keeps as
    /// many datums as it may and this id had none: then it is delivered but not kept, and a
    /// later subscription of the id fetches it.
    fn keep(&self, entry: &mut IdEntry, prepared: Arc<Prepared>) {
        if entry.cached.is_none() {
            let max = self.config.cache_entries;
            let room = self
                .cached
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok();
            if !room {
                return;
            }
            self.metrics.cached_datums.inc();
        }
        entry.cached = Some(prepared);
    }

    /// A change notification from a data server.
    pub fn on_change(self: &Arc<Self>, change: Change) {
        self.metrics.changes_received.inc();
        let id = change.data_info_id;
        // No subscriptions here, or the datum cached is as new.
        if self.is_newer(&id, change.version) != Some(true) {
            return;
        }
        match change.datum {
            Some(datum) if datum.version >= change.version => self.accept(datum),
            _ => self.request_fetch(id, change.version),
        }
    }

    /// A datum learnt from a data server (notification, fetch or reconciliation).
    pub fn accept(self: &Arc<Self>, mut datum: PushDatum) {
        datum.data_info_id = self.ids.intern(datum.data_info_id);
        let id = datum.data_info_id.clone();
        let version = datum.version;
        crate::floor::observe(version);
        if self.is_newer(&id, version) == Some(true) && !self.hold_empty(&datum) {
            // Serialised outside the lock; compared again under it, so that of two datums of
            // one id accepted at once the older is neither kept nor offered after the newer.
            let prepared = Arc::new(Prepared::new(datum));
            self.deliver(&prepared);
        }
        // A fetch in flight for this id is satisfied up to `version`.
        let again = {
            let mut fetching = self.fetching.lock();
            match fetching.get(&id) {
                Some(want) if *want > version => true,
                Some(_) => {
                    fetching.remove(&id);
                    false
                }
                None => false,
            }
        };
        if again {
            self.enqueue_fetch(id);
        }
    }

    /// Keeps a datum as its dataInfoId's newest and offers it to every subscription of the
    /// id, unless a datum as new is kept already.
    fn deliver(&self, prepared: &Arc<Prepared>) {
        let mut out = Vec::new();
        let enabled = self.is_enabled();
        {
            let id = &prepared.datum.data_info_id;
            let mut subs = self.subs.shard(id);
            if let Some(entry) = subs.get_mut(id).filter(|e| {
                e.cached
                    .as_ref()
                    .is_none_or(|c| c.version() < prepared.version())
            }) {
                self.keep(entry, prepared.clone());
                for ((_, regist_id), sub) in entry.subs.iter_mut() {
                    if let Some(o) = self.offer(sub, regist_id, prepared, enabled) {
                        out.push(o);
                    }
                }
            }
        }
        self.send_all(out);
    }

    fn send_all(&self, out: Vec<Outgoing>) {
        for o in out {
            match o.conn.outbox.send(Frame::Push(o.push)) {
                Ok(()) => {}
                Err(OutboxError::Full) => {
                    self.metrics
                        .closed
                        .with_label_values(&["outbox_full"])
                        .inc();
                    o.conn
                        .outbox
                        .close_signal()
                        .close(1008, "outgoing queue full: client does not keep up");
                }
                Err(OutboxError::Closed) => {}
            }
        }
    }

    /// A client's acknowledgement of one push (`push_ack`, or one id of `push_acks`).
    pub fn on_ack(&self, conn: &Conn, push_id: u64) {
        let Some((id, regist_id)) = conn.acks.lock().take(push_id, Instant::now()) else {
            self.metrics.unknown_acks.inc();
            tracing::debug!(conn = conn.id, push_id, "ack for an unknown push");
            return;
        };
        self.metrics.push_acks.inc();
        let mut out = Vec::new();
        {
            let mut subs = self.subs.shard(&id);
            let key: SubKey = (conn.id, regist_id.clone());
            let Some(sub) = subs.get_mut(&id).and_then(|m| m.subs.get_mut(&key)) else {
                return;
            };
            let Some(inflight) = sub.inflight.take_if(|f| f.push_id == push_id) else {
                return;
            };
            self.metrics
                .push_ack
                .observe(inflight.sent_at.elapsed().as_secs_f64());
            sub.acked = sub.acked.max(Some(inflight.prepared.version()));
            if !self.is_enabled() {
                // The pending datum waits for the switch.
            } else if let Some(next) = sub.pending.take() {
                if Some(next.version()) > sub.acked {
                    out.push(self.send_push(sub, &regist_id, next, 1));
                }
            }
        }
        self.send_all(out);
    }
}
