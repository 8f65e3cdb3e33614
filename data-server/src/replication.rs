//! Shipping a primary's changes to its replicas, asynchronously and in batches.
//!
//! One [`registry_rpc::lane`] per replica server. A change marks the dataInfoId pending in the lanes of its
//! slot's replicas; a lane sends everything pending in one request and the next as soon as it
//! returns. For each dataInfoId the lane remembers the version the replica acknowledged and
//! ships the ops after it from the datum's op log, or the full datum when the log no longer
//! reaches back (or the replica reported a gap). Pending work is a set of dataInfoIds, so a
//! lane's memory is bounded by the number of dataInfoIds however fast they churn.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use registry_common::id::DataInfoId;
use registry_common::member::{ClusterView, MemberId};
use registry_common::proto::data::{ReplicateItem, ReplicateRequest, ReplicateResponse};
use registry_common::time::now_ms;
use registry_common::version::version_ms;
use registry_rpc::lane::{Batcher, Lane, Round};
use registry_rpc::{CancellationToken, HttpClient, RpcError};
use tokio::sync::watch;

use crate::metrics::DataMetrics;
use crate::store::Store;

/// Most dataInfoIds in one replication request.
const MAX_ITEMS: usize = 1_000;

struct Shared {
    me: MemberId,
    store: Arc<Store>,
    http: HttpClient,
    view: watch::Receiver<Arc<ClusterView>>,
    metrics: DataMetrics,
    /// Bytes of payload one batch carries at most (one item more at worst).
    max_batch_bytes: usize,
}

/// The dataInfoIds changed since they were last shipped to one replica.
type ReplicaLane = Lane<DataInfoId, ()>;

/// What one replica holds, as far as its lane knows.
#[derive(Default)]
struct Replica {
    /// Version each dataInfoId was acknowledged at by this replica.
    acked: Mutex<HashMap<DataInfoId, u64>>,
    /// DataInfoIds to send as full datums next time.
    full: Mutex<HashSet<DataInfoId>>,
}

#[derive(Clone)]
pub struct Replicator {
    shared: Arc<Shared>,
    lanes: Arc<Mutex<HashMap<MemberId, Arc<ReplicaLane>>>>,
    shutdown: CancellationToken,
}

impl Replicator {
    pub fn new(
        me: MemberId,
        store: Arc<Store>,
        http: HttpClient,
        view: watch::Receiver<Arc<ClusterView>>,
        metrics: DataMetrics,
        max_batch_bytes: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                me,
                store,
                http,
                view,
                metrics,
                max_batch_bytes: max_batch_bytes.max(1),
            }),
            lanes: Arc::new(Mutex::new(HashMap::new())),
            shutdown,
        }
    }

    /// Queues changed dataInfoIds for the replicas of their slots under `view`.
    pub fn on_changed(&self, view: &ClusterView, changed: &[(DataInfoId, u64)]) {
        let mut woken: Vec<Arc<ReplicaLane>> = Vec::new();
        for (id, _) in changed {
            let Some(assignment) = view.slots.assignment_of(id) else {
                continue;
            };
            if assignment.primary.as_ref() != Some(&self.shared.me) {
                continue;
            }
            for replica in &assignment.replicas {
                let Some(addr) = view.addr_of(replica) else {
                    continue;
                };
                let lane = self.lane(replica, addr);
                lane.queue().insert(id.clone(), ());
                if !woken.iter().any(|l| Arc::ptr_eq(l, &lane)) {
                    woken.push(lane);
                }
            }
        }
        let pending: usize = self.lanes.lock().values().map(|l| l.len()).sum();
        self.shared.metrics.replication_pending.set(pending as i64);
        for lane in woken {
            lane.wake();
        }
    }

    /// Stops lanes to servers that left the membership.
    pub fn on_view(&self, view: &ClusterView) {
        self.lanes.lock().retain(|id, lane| {
            let keep = view.addr_of(id) == Some(lane.addr());
            if !keep {
                lane.stop();
            }
            keep
        });
    }

    fn lane(&self, member: &MemberId, addr: &str) -> Arc<ReplicaLane> {
        let mut lanes = self.lanes.lock();
        if let Some(l) = lanes.get(member) {
            if l.addr() == addr {
                return l.clone();
            }
            l.stop();
        }
        let lane = ReplicaLane::new(addr, self.shutdown.child_token());
        lanes.insert(member.clone(), lane.clone());
        lane.spawn(Replication {
            shared: self.shared.clone(),
            replica: Replica::default(),
        });
        lane
    }
}

/// Builds the item for one dataInfoId, or `None` if the replica is up to date.
fn item_for(shared: &Shared, replica: &Replica, id: &DataInfoId) -> Option<ReplicateItem> {
    let force_full = replica.full.lock().remove(id);
    let acked = replica.acked.lock().get(id).copied();
    let ops = if force_full {
        None
    } else {
        shared.store.ops_since(id, acked.unwrap_or(0))
    };
    match ops {
        Some(ops) if ops.is_empty() => None,
        Some(ops) => Some(ReplicateItem {
            data_info_id: id.clone(),
            ops,
            full: None,
        }),
        None => Some(ReplicateItem {
            data_info_id: id.clone(),
            ops: Vec::new(),
            full: Some(shared.store.datum(id)),
        }),
    }
}

/// A replication lane's sending: up to [`MAX_ITEMS`] dataInfoIds, their ops (or full datums)
/// until `max_batch_bytes`, in one `/data/v1/replicate`; the rest wait for the next batch.
struct Replication {
    shared: Arc<Shared>,
    replica: Replica,
}

impl Batcher<DataInfoId, ()> for Replication {
    fn max_items(&self) -> usize {
        MAX_ITEMS
    }

    async fn send(
        &mut self,
        lane: &Arc<ReplicaLane>,
        batch: Vec<(DataInfoId, ())>,
    ) -> Round<DataInfoId, ()> {
        let shared = &self.shared;
        // Items until the byte budget is spent; the rest wait for the next batch.
        let mut items: Vec<ReplicateItem> = Vec::new();
        let mut bytes = 0;
        let mut ids = batch.into_iter().map(|(id, ())| id);
        for id in ids.by_ref() {
            if let Some(item) = item_for(shared, &self.replica, &id) {
                bytes += item.approx_bytes();
                items.push(item);
            }
            if bytes >= shared.max_batch_bytes {
                break;
            }
        }
        let rest: Vec<(DataInfoId, ())> = ids.map(|id| (id, ())).collect();
        if !rest.is_empty() {
            lane.push(rest, |_, _| {});
        }
        if items.is_empty() {
            return Round::Done;
        }
        let ids: Vec<DataInfoId> = items.iter().map(|i| i.data_info_id.clone()).collect();
        let req = ReplicateRequest {
            epoch: shared.view.borrow().epoch,
            from: shared.me.clone(),
            items,
        };
        let answer: Result<ReplicateResponse, RpcError> = shared
            .http
            .post(lane.addr(), "/data/v1/replicate", &req)
            .await;
        match answer {
            Ok(resp) => {
                let now = now_ms();
                let mut acked = self.replica.acked.lock();
                let mut again = Vec::new();
                for ack in resp.acks {
                    let before = acked.insert(ack.data_info_id.clone(), ack.version);
                    if before.is_none_or(|b| ack.version > b) && ack.version > 0 {
                        let lag = now.saturating_sub(version_ms(ack.version));
                        shared.metrics.replication_lag.observe(lag as f64 / 1_000.0);
                    }
                    if ack.need_full {
                        self.replica.full.lock().insert(ack.data_info_id.clone());
                        again.push((ack.data_info_id, ()));
                    }
                }
                drop(acked);
                if !again.is_empty() {
                    lane.push(again, |_, _| {});
                }
                for e in resp.errors {
                    tracing::debug!(to = %lane.addr(), id = %e.data_info_id, "replica refused: {}", e.error);
                }
                Round::Done
            }
            Err(e) => {
                tracing::debug!(to = %lane.addr(), "replication failed: {e}");
                shared.metrics.replication_failures.inc();
                Round::Retry {
                    answered: false,
                    items: ids.into_iter().map(|id| (id, ())).collect(),
                }
            }
        }
    }

    fn requeue(&mut self, lane: &Arc<ReplicaLane>, items: Vec<(DataInfoId, ())>) {
        lane.push(items, |_, _| {});
    }
}
