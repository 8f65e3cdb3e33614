//! The push pipeline: change -> datum -> every local subscriber.
//!
//! A change notification `(dataInfoId, version)` that is newer than the cached datum either
//! carries the datum (small datums ride along) or starts one fetch from the slot's primary.
//! A fetch already in flight for that dataInfoId absorbs further notifications and is
//! repeated once it returns if something newer was announced meanwhile, so there is one
//! fetch per dataInfoId however many notifications arrive. Fetches are batched per data
//! server (one lane each, like writes).
//!
//! Each subscription has at most one unacknowledged push. A newer datum arriving while a push
//! is in flight waits as the subscription's `pending` datum and supersedes any older pending
//! one: merging is adaptive, with no fixed delay when idle and at most one client round trip
//! of delay when busy. A subscription never receives a version at or below one it already
//! has. A pending datum waits at most the maximum merge window: past it, it is pushed even
//! without the ack. A push not acknowledged within the ack timeout is sent again (its newest
//! datum) with backoff; after the configured retries the connection is closed as
//! unresponsive.
//!
//! Removal protection: a datum that lost publishers through a server-side event (their
//! session server left; see `Datum::server_removal`), whether all of them or some, is held
//! back for a protection window while it has fewer publishers than the one subscribers hold;
//! if the publishers come back meanwhile (their clients re-registered elsewhere) subscribers
//! never see the partial view.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;
use parking_lot::Mutex;
use registry_common::id::DataInfoId;
use registry_common::member::{ClusterView, Role};
use registry_common::model::PushDatum;
use registry_common::proto::data::{Change, FetchRequest, FetchResponse};
use registry_rpc::backoff::LaneBackoff;
use registry_rpc::membership::Membership;
use registry_rpc::{CancellationToken, HttpClient, RpcError};
use tokio::sync::Notify;

use crate::metrics::SessionMetrics;
use crate::outbox::OutboxError;
use crate::registry::{Conn, ConnId};

/// A datum with its push payload serialised once for every subscriber.
#[derive(Debug)]
pub struct Prepared {
    /// Version, publisher count and flags of the datum (its data lives in `data_json`).
    pub datum: PushDatum,
    /// JSON of the dataInfoId string.
    id_json: String,
    /// JSON array of every publisher's data strings.
    data_json: String,
}

impl Prepared {
    pub fn new(mut datum: PushDatum) -> Self {
        let id_json = serde_json::to_string(datum.data_info_id.as_str()).unwrap_or_default();
        let data_json = serde_json::to_string(&datum.data).unwrap_or_else(|_| "[]".into());
        // Only the serialised form is pushed; the strings themselves need not stay cached.
        datum.data = Vec::new();
        Self {
            datum,
            id_json,
            data_json,
        }
    }

    pub fn version(&self) -> u64 {
        self.datum.version
    }

    fn frame(&self, push_id: u64, regist_id: &str) -> String {
        // Appended piece by piece: the data is most of the frame and is copied once.
        let regist = serde_json::to_string(regist_id).unwrap_or_default();
        let push_id = push_id.to_string();
        let version = self.datum.version.to_string();
        let parts: [&str; 10] = [
            r#"{"type":"push","pushId":"#,
            &push_id,
            r#","registId":"#,
            &regist,
            r#","dataInfoId":"#,
            &self.id_json,
            r#","version":"#,
            &version,
            r#","data":"#,
            &self.data_json,
        ];
        let mut frame = String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 1);
        parts.iter().for_each(|p| frame.push_str(p));
        frame.push('}');
        frame
    }
}

/// A push sent and not yet acknowledged.
struct Inflight {
    push_id: u64,
    prepared: Arc<Prepared>,
    sent_at: Instant,
    /// Times this push has been sent.
    attempts: u32,
}

/// One subscription's push state.
struct Sub {
    conn: Arc<Conn>,
    /// Highest version the client is known to hold (acknowledged, or told at subscribe).
    acked: Option<u64>,
    inflight: Option<Inflight>,
    /// Newest datum waiting for the in-flight push to be acknowledged.
    pending: Option<Arc<Prepared>>,
}

impl Sub {
    /// Highest version sent, queued or held.
    fn high(&self) -> Option<u64> {
        let a = self.acked;
        let i = self.inflight.as_ref().map(|f| f.prepared.version());
        let p = self.pending.as_ref().map(|p| p.version());
        a.max(i).max(p)
    }
}

type SubKey = (ConnId, Arc<str>);

/// What one subscription holds, as the admin API shows it.
pub struct SubscriptionState {
    pub conn: Arc<Conn>,
    pub regist_id: String,
    pub acked: Option<u64>,
    pub inflight: Option<u64>,
    pub pending: Option<u64>,
}

/// A frame to put in a connection's outbox.
struct Outgoing {
    conn: Arc<Conn>,
    frame: String,
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
    subs: Mutex<HashMap<DataInfoId, HashMap<SubKey, Sub>>>,
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

struct FetchLane {
    addr: String,
    pending: Mutex<HashSet<DataInfoId>>,
    wake: Notify,
    stop: CancellationToken,
}

impl Pusher {
    pub fn new(
        config: PushConfig,
        http: HttpClient,
        membership: Arc<Membership>,
        metrics: SessionMetrics,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let cache = Cache::builder().max_capacity(config.cache_entries).build();
        let pusher = Arc::new(Self {
            config,
            enabled: AtomicBool::new(true),
            subs: Mutex::new(HashMap::new()),
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
        tokio::spawn(ack_sweeper(pusher.clone()));
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
        let sub = Sub {
            conn: conn.clone(),
            acked: (known_version > 0).then_some(known_version),
            inflight: None,
            pending: None,
        };
        let mut out = Vec::new();
        let cached;
        {
            let mut subs = self.subs.lock();
            let entry = subs.entry(id.clone()).or_default();
            if entry.insert(key.clone(), sub).is_none() {
                self.metrics.subscribers.inc();
            }
            // Read the cache only once the subscription is in place: a datum cached after
            // this read is delivered to it by `accept`, one cached before is offered here.
            cached = self.cache.get(&id);
            if let (Some(p), Some(sub)) = (&cached, entry.get_mut(&key)) {
                if let Some(o) = offer(sub, &key.1, p, self.is_enabled(), &self.metrics) {
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
        let mut out = Vec::new();
        {
            let mut subs = self.subs.lock();
            for map in subs.values_mut() {
                for ((_, regist_id), sub) in map.iter_mut() {
                    if sub.inflight.is_none() {
                        if let Some(next) = sub.pending.take() {
                            out.push(send_push(sub, regist_id, next, 1, &self.metrics));
                        }
                    }
                }
            }
        }
        self.send_all(out);
    }

    /// Removes one subscription.
    pub fn unsubscribe(&self, conn: ConnId, regist_id: &str, id: &DataInfoId) {
        let mut subs = self.subs.lock();
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
        self.subs.lock().contains_key(id)
    }

    /// Every dataInfoId with local subscribers.
    pub fn subscribed_ids(&self) -> Vec<DataInfoId> {
        self.subs.lock().keys().cloned().collect()
    }

    /// The subscriptions of `id` on this session, with the versions each holds, for the
    /// admin API.
    pub fn subscriptions_of(&self, id: &DataInfoId) -> Vec<SubscriptionState> {
        let subs = self.subs.lock();
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

    /// DataInfoIds whose datum is being held back by removal protection now.
    pub fn held_back(&self) -> usize {
        self.held_empty.lock().len()
    }

    /// Whether to hold back `datum`: a server-side event removed publishers from it and it
    /// has fewer than the datum subscribers hold, and the protection window has not run out
    /// yet. A partial loss is held back as an empty datum is: the clients of a departed
    /// session come back one by one.
    fn hold_empty(self: &Arc<Self>, datum: &PushDatum) -> bool {
        let id = &datum.data_info_id;
        let emptied = datum.server_removal
            && self
                .cache
                .get(id)
                .is_some_and(|p| p.datum.publishers > datum.publishers);
        let mut held = self.held_empty.lock();
        if !emptied {
            held.remove(id);
            return false;
        }
        let window = self.config.empty_protection;
        match held.get(id) {
            None => {
                held.insert(id.clone(), Instant::now());
                self.metrics
                    .empty_protection
                    .with_label_values(&["held"])
                    .inc();
                tracing::info!(%id, publishers = datum.publishers, "holding back a datum that lost publishers to a server-side event");
                // Look again once the window has passed.
                let pusher = self.clone();
                let id = id.clone();
                let version = datum.version;
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(window) => pusher.request_fetch(id, version),
                        _ = pusher.shutdown.cancelled() => {}
                    }
                });
                true
            }
            Some(since) if since.elapsed() < window => true,
            Some(_) => {
                held.remove(id);
                self.metrics
                    .empty_protection
                    .with_label_values(&["released"])
                    .inc();
                false
            }
        }
    }

    /// A datum learnt from a data server (notification, fetch or reconciliation).
    pub fn accept(self: &Arc<Self>, datum: PushDatum) {
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
            let mut subs = self.subs.lock();
            if let Some(map) = subs.get_mut(&prepared.datum.data_info_id) {
                for ((_, regist_id), sub) in map.iter_mut() {
                    if let Some(o) = offer(sub, regist_id, prepared, enabled, &self.metrics) {
                        out.push(o);
                    }
                }
            }
        }
        self.send_all(out);
    }

    fn send_all(&self, out: Vec<Outgoing>) {
        for o in out {
            match o.conn.outbox.send(o.frame) {
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

    /// A `push_ack` from a client.
    pub fn on_ack(&self, conn: &Conn, push_id: u64) {
        let Some((id, regist_id)) = conn.acks.lock().remove(&push_id) else {
            self.metrics.unknown_acks.inc();
            tracing::debug!(conn = conn.id, push_id, "ack for an unknown push");
            return;
        };
        self.metrics.push_acks.inc();
        let mut out = Vec::new();
        {
            let mut subs = self.subs.lock();
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
                    out.push(send_push(sub, &regist_id, next, 1, &self.metrics));
                }
            }
        }
        self.send_all(out);
    }

    /// Records that `id` changed to at least `version` and makes sure a fetch will get it.
    pub fn request_fetch(self: &Arc<Self>, id: DataInfoId, version: u64) {
        {
            let mut fetching = self.fetching.lock();
            if let Some(want) = fetching.get_mut(&id) {
                *want = (*want).max(version);
                return;
            }
            fetching.insert(id.clone(), version);
        }
        self.enqueue_fetch(id);
    }

    fn enqueue_fetch(self: &Arc<Self>, id: DataInfoId) {
        let view = self.membership.view();
        self.route_fetches(&view, vec![id]);
    }

    fn route_fetches(self: &Arc<Self>, view: &ClusterView, ids: Vec<DataInfoId>) {
        let mut by_lane: HashMap<String, Vec<DataInfoId>> = HashMap::new();
        for id in ids {
            match view.slots.primary_of(&id).and_then(|p| view.addr_of(p)) {
                Some(addr) => by_lane.entry(addr.to_owned()).or_default().push(id),
                None => {
                    self.parked.lock().insert(id);
                }
            }
        }
        for (addr, ids) in by_lane {
            let lane = self.lane(&addr);
            lane.pending.lock().extend(ids);
            lane.wake.notify_one();
        }
    }

    fn lane(self: &Arc<Self>, addr: &str) -> Arc<FetchLane> {
        let mut lanes = self.lanes.lock();
        if let Some(l) = lanes.get(addr) {
            return l.clone();
        }
        let lane = Arc::new(FetchLane {
            addr: addr.to_owned(),
            pending: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            stop: self.shutdown.child_token(),
        });
        lanes.insert(addr.to_owned(), lane.clone());
        tokio::spawn(run_fetch_lane(self.clone(), lane.clone()));
        lane
    }

    /// Re-routes fetches of lanes whose data server left, and parked ones.
    pub fn on_view(self: &Arc<Self>, view: &ClusterView) {
        let data: Vec<&str> = view
            .members_of(Role::Data)
            .map(|m| m.addr.as_str())
            .collect();
        let gone: Vec<Arc<FetchLane>> = {
            let mut lanes = self.lanes.lock();
            let gone: Vec<String> = lanes
                .keys()
                .filter(|a| !data.contains(&a.as_str()))
                .cloned()
                .collect();
            gone.iter().filter_map(|a| lanes.remove(a)).collect()
        };
        let mut ids: Vec<DataInfoId> = Vec::new();
        for lane in gone {
            lane.stop.cancel();
            ids.extend(lane.pending.lock().drain());
        }
        ids.extend(self.parked.lock().drain());
        self.route_fetches(view, ids);
    }
}

/// Decides what to do with a datum for one subscription: push now, keep as pending (a push
/// is in flight, or pushes are off), or skip.
fn offer(
    sub: &mut Sub,
    regist_id: &Arc<str>,
    prepared: &Arc<Prepared>,
    enabled: bool,
    metrics: &SessionMetrics,
) -> Option<Outgoing> {
    if sub.high().is_some_and(|h| h >= prepared.version()) {
        return None;
    }
    if sub.inflight.is_some() || !enabled {
        if sub.pending.replace(prepared.clone()).is_some() {
            metrics.pushes_merged.inc();
        }
        return None;
    }
    Some(send_push(sub, regist_id, prepared.clone(), 1, metrics))
}

/// Makes `prepared` the subscription's in-flight push and builds its frame.
fn send_push(
    sub: &mut Sub,
    regist_id: &Arc<str>,
    prepared: Arc<Prepared>,
    attempts: u32,
    metrics: &SessionMetrics,
) -> Outgoing {
    let push_id = sub.conn.next_push_id();
    let version = prepared.version();
    let frame = prepared.frame(push_id, regist_id);
    sub.conn.acks.lock().insert(
        push_id,
        (prepared.datum.data_info_id.clone(), regist_id.clone()),
    );
    if let Some(old) = sub.inflight.take() {
        sub.conn.acks.lock().remove(&old.push_id);
    }
    sub.inflight = Some(Inflight {
        push_id,
        prepared,
        sent_at: Instant::now(),
        attempts,
    });
    let kind = if attempts > 1 { "retry" } else { "first" };
    metrics.pushes.with_label_values(&[kind]).inc();
    if attempts == 1 {
        let accepted_ms = registry_common::version::version_ms(version);
        let delay_ms = registry_common::time::now_ms().saturating_sub(accepted_ms);
        metrics.push_delay.observe(delay_ms as f64 / 1000.0);
    }
    Outgoing {
        conn: sub.conn.clone(),
        frame,
    }
}

/// Resends pushes whose ack is overdue (newest datum, backing off), and closes connections
/// that never acknowledge.
async fn ack_sweeper(pusher: Arc<Pusher>) {
    let tick = (pusher.config.ack_timeout / 4)
        .clamp(Duration::from_millis(10), Duration::from_millis(500));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = pusher.shutdown.cancelled() => return,
        }
        if !pusher.is_enabled() {
            // Nothing is sent while pushes are off, so nothing is overdue either.
            continue;
        }
        let now = Instant::now();
        let mut out = Vec::new();
        let mut unresponsive: Vec<Arc<Conn>> = Vec::new();
        {
            let mut subs = pusher.subs.lock();
            for map in subs.values_mut() {
                for ((_, regist_id), sub) in map.iter_mut() {
                    let Some(f) = &sub.inflight else { continue };
                    // A newer datum has waited long enough for this ack: push it anyway.
                    if sub.pending.is_some()
                        && now.duration_since(f.sent_at) >= pusher.config.max_merge_window
                    {
                        if let Some(next) = sub.pending.take() {
                            out.push(send_push(sub, regist_id, next, 1, &pusher.metrics));
                        }
                        continue;
                    }
                    // Backoff: the n-th attempt waits ack_timeout * 2^(n-1).
                    let wait = pusher.config.ack_timeout * (1u32 << (f.attempts - 1).min(6));
                    if now.duration_since(f.sent_at) < wait {
                        continue;
                    }
                    if f.attempts > pusher.config.ack_retries {
                        unresponsive.push(sub.conn.clone());
                        continue;
                    }
                    let attempts = f.attempts + 1;
                    let newest = match sub.pending.take() {
                        Some(p) => p,
                        None => f.prepared.clone(),
                    };
                    out.push(send_push(sub, regist_id, newest, attempts, &pusher.metrics));
                }
            }
        }
        pusher.send_all(out);
        for conn in unresponsive {
            if !conn.outbox.close_signal().is_closed() {
                pusher
                    .metrics
                    .closed
                    .with_label_values(&["ack_timeout"])
                    .inc();
            }
            conn.outbox
                .close_signal()
                .close(1008, "pushes not acknowledged");
        }
    }
}

async fn run_fetch_lane(pusher: Arc<Pusher>, lane: Arc<FetchLane>) {
    let mut backoff = LaneBackoff::default();
    loop {
        tokio::select! {
            _ = lane.wake.notified() => {}
            _ = lane.stop.cancelled() => return,
        }
        loop {
            let ids: Vec<DataInfoId> = {
                let mut pending = lane.pending.lock();
                let take: Vec<DataInfoId> = pending
                    .iter()
                    .take(pusher.config.max_batch)
                    .cloned()
                    .collect();
                for id in &take {
                    pending.remove(id);
                }
                take
            };
            if ids.is_empty() {
                break;
            }
            let view = pusher.membership.view();
            let req = FetchRequest {
                epoch: view.epoch,
                ids: ids.clone(),
                compact: true,
            };
            pusher.metrics.fetches.inc_by(ids.len() as u64);
            let started = Instant::now();
            let rid = registry_rpc::request_id::fresh();
            let answer: Result<FetchResponse, RpcError> = registry_rpc::request_id::scope(
                rid.clone(),
                pusher.http.post(&lane.addr, "/data/v1/fetch", &req),
            )
            .await;
            pusher
                .metrics
                .fetch_latency
                .observe(started.elapsed().as_secs_f64());
            let answered = answer.is_ok();
            let retry: Vec<DataInfoId> = match answer {
                Ok(resp) => {
                    for datum in resp.compact {
                        pusher.accept(datum);
                    }
                    resp.errors.into_iter().map(|e| e.data_info_id).collect()
                }
                Err(e) => {
                    tracing::debug!(request = %rid, from = %lane.addr, "fetch failed: {e}");
                    ids
                }
            };
            if retry.is_empty() {
                backoff.reset();
                continue;
            }
            let retry_backoff = backoff.after(answered);
            pusher.membership.refresh().await;
            tokio::select! {
                _ = retry_backoff.wait() => {}
                _ = lane.stop.cancelled() => {}
            }
            let view = pusher.membership.view();
            pusher.route_fetches(&view, retry);
            if lane.stop.is_cancelled() {
                return;
            }
        }
    }
}
