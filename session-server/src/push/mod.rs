//! The push pipeline: change -> datum -> every local subscriber.
//!
//! - `fetch`: a change notification newer than the cached datum either carries the datum
//!   (small datums ride along) or starts one fetch from the slot's primary, batched per data
//!   server;
//! - this module: the datum cache, accepting a datum (`accept`) and offering it to every
//!   subscription of its dataInfoId, subscribing, acks;
//! - `flow`: the subscription table and per-subscription flow control (at most one
//!   unacknowledged push, newer datums merged behind it);
//! - `sweeper`: unacknowledged pushes resent with backoff, past the merge window replaced,
//!   never acknowledged closed;
//! - `protection`: datums that lost publishers to a server-side event held back;
//! - `frame`: the `push` frame, serialised once per datum.

mod fetch;
mod flow;
mod frame;
mod protection;
mod sweeper;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;
use parking_lot::Mutex;
use registry_common::id::{DataInfoId, IdInterner};
use registry_common::model::PushDatum;
use registry_common::proto::data::Change;
use registry_rpc::membership::Membership;
use registry_rpc::{CancellationToken, HttpClient};

use crate::metrics::SessionMetrics;
use crate::outbox::{Frame, OutboxError};
use crate::registry::{Conn, ConnId};
use fetch::FetchLane;
use flow::{Sub, SubKey, SubTable};
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
    /// dataInfoId -> subscriptions on this session.
    subs: SubTable,
    /// When each unacknowledged push is to be looked at again.
    deadlines: Deadlines,
    /// Shared copies of dataInfoIds: a datum from the data tier is keyed by the copy its
    /// subscriptions hold.
    ids: Arc<IdInterner>,
    /// Latest datum of every dataInfoId with local subscribers.
    cache: Cache<DataInfoId, Arc<Prepared>>,
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
        let cache = Cache::builder().max_capacity(config.cache_entries).build();
        let pusher = Arc::new(Self {
            config,
            enabled: AtomicBool::new(true),
            ids,
            subs: SubTable::new(),
            deadlines: Deadlines::default(),
            cache,
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
            if entry.insert(key.clone(), sub).is_none() {
                self.metrics.subscribers.inc();
            }
            // Read the cache only once the subscription is in place: a datum cached after
            // this read is delivered to it by `accept`, one cached before is offered here.
            cached = self.cache.get(&id);
            if let (Some(p), Some(sub)) = (&cached, entry.get_mut(&key)) {
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
            for map in shard.lock().values_mut() {
                for ((_, regist_id), sub) in map.iter_mut() {
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
        if let Some(map) = subs.get_mut(id) {
            let key: SubKey = (conn, Arc::from(regist_id));
            if map.remove(&key).is_some() {
                self.metrics.subscribers.dec();
            }
            if map.is_empty() {
                subs.remove(id);
                self.cache.invalidate(id);
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

    fn has_subscribers(&self, id: &DataInfoId) -> bool {
        self.subs.shard(id).contains_key(id)
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
        let Some(map) = subs.get(id) else {
            return Vec::new();
        };
        map.iter()
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
        self.cache.get(id).map(|p| p.version())
    }

    /// A change notification from a data server.
    pub fn on_change(self: &Arc<Self>, change: Change) {
        self.metrics.changes_received.inc();
        let id = change.data_info_id;
        if !self.has_subscribers(&id) {
            self.cache.invalidate(&id);
            return;
        }
        if self
            .cache
            .get(&id)
            .is_some_and(|p| p.version() >= change.version)
        {
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
        let newer = self.cache.get(&id).is_none_or(|p| p.version() < version);
        if newer && self.has_subscribers(&id) && !self.hold_empty(&datum) {
            let prepared = Arc::new(Prepared::new(datum));
            // Compare and insert atomically: two datums of one id accepted at once must not
            // leave the older one cached.
            let stored = self
                .cache
                .entry(id.clone())
                .and_compute_with(|cur| match cur {
                    Some(e) if e.value().version() >= version => Op::Nop,
                    _ => Op::Put(prepared.clone()),
                });
            if !matches!(stored, CompResult::Unchanged(_) | CompResult::StillNone(_)) {
                self.deliver(&prepared);
            }
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

    /// Offers a datum to every subscription of its dataInfoId.
    fn deliver(&self, prepared: &Arc<Prepared>) {
        let mut out = Vec::new();
        let enabled = self.is_enabled();
        {
            let id = &prepared.datum.data_info_id;
            let mut subs = self.subs.shard(id);
            if let Some(map) = subs.get_mut(id) {
                for ((_, regist_id), sub) in map.iter_mut() {
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
        let Some((id, regist_id)) = conn.acks.lock().remove(&push_id) else {
            self.metrics.unknown_acks.inc();
            tracing::debug!(conn = conn.id, push_id, "ack for an unknown push");
            return;
        };
        self.metrics.push_acks.inc();
        let mut out = Vec::new();
        {
            let mut subs = self.subs.shard(&id);
            let key: SubKey = (conn.id, regist_id.clone());
            let Some(sub) = subs.get_mut(&id).and_then(|m| m.get_mut(&key)) else {
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
