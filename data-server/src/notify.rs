//! Change notifications from this data server to every session server.
//!
//! One [`registry_rpc::lane`] per session server. A change marks `(dataInfoId, version)`
//! pending for every session and wakes the lanes; a lane takes everything pending and sends
//! it in one batch (chunked), so an idle registry notifies at once and a busy one batches by itself:
//! whatever arrives while a batch is in flight goes in the next. Pending changes are a map
//! keyed by dataInfoId, so memory is bounded by the number of dataInfoIds however fast they
//! churn. A failed batch is merged back and retried with backoff until the session leaves the
//! membership. Small datums ride along so the session can push without fetching.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use registry_common::id::DataInfoId;
use registry_common::member::{ClusterView, MemberId};
use registry_common::proto::data::{Change, ChangeBatch};
use registry_rpc::lane::{post_batch, Batcher, Lane, Round};
use registry_rpc::{CancellationToken, HttpClient};
use tokio::sync::watch;

use crate::metrics::DataMetrics;
use crate::store::Store;

/// Most changes in one notification request.
const MAX_CHANGES_PER_BATCH: usize = 2_000;

/// Bytes of inline datums one notification batch carries at most (a session takes 64 MiB
/// per request by default; a change without its datum is about 200 bytes).
pub const MAX_INLINE_BYTES: usize = 4 * 1024 * 1024;

/// Path of the session endpoint that takes notifications.
pub const CHANGES_PATH: &str = "/session/v1/changes";

/// Everything a sender task needs, shared.
struct Shared {
    from: MemberId,
    store: Arc<Store>,
    http: HttpClient,
    view: watch::Receiver<Arc<ClusterView>>,
    metrics: DataMetrics,
    /// Datums with at most this many publishers ride along with their notification.
    inline_max_publishers: usize,
}

/// One session server being notified: dataInfoId -> highest changed version not yet sent.
type Target = Lane<DataInfoId, u64>;

fn highest(cur: &mut u64, v: u64) {
    *cur = (*cur).max(v);
}

#[derive(Clone)]
pub struct Notifier {
    shared: Arc<Shared>,
    targets: Arc<Mutex<HashMap<MemberId, Arc<Target>>>>,
    shutdown: CancellationToken,
}

impl Notifier {
    pub fn new(
        from: MemberId,
        store: Arc<Store>,
        http: HttpClient,
        view: watch::Receiver<Arc<ClusterView>>,
        metrics: DataMetrics,
        inline_max_publishers: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                from,
                store,
                http,
                view,
                metrics,
                inline_max_publishers,
            }),
            targets: Arc::new(Mutex::new(HashMap::new())),
            shutdown,
        }
    }

    /// Queues these changes for every session server.
    pub fn notify(&self, changes: &[(DataInfoId, u64)]) {
        if changes.is_empty() {
            return;
        }
        let targets: Vec<Arc<Target>> = self.targets.lock().values().cloned().collect();
        for target in targets {
            target.push(changes.iter().cloned(), highest);
        }
    }

    /// Changes waiting to be sent, all sessions together.
    pub fn pending(&self) -> usize {
        let targets: Vec<Arc<Target>> = self.targets.lock().values().cloned().collect();
        targets.iter().map(|t| t.len()).sum()
    }

    /// Makes the set of notified sessions match `sessions` (id, addr).
    pub fn set_targets(&self, sessions: &[(MemberId, String)]) {
        let mut targets = self.targets.lock();
        targets.retain(|id, t| {
            let keep = sessions.iter().any(|(s, a)| s == id && a == t.addr());
            if !keep {
                t.stop();
            }
            keep
        });
        for (id, addr) in sessions {
            if targets.contains_key(id) {
                continue;
            }
            let target = Target::new(addr.clone(), self.shutdown.child_token());
            targets.insert(id.clone(), target.clone());
            target.spawn(Notifications(self.shared.clone()));
        }
    }
}

/// A notification lane's sending: one `/session/v1/changes` of up to
/// [`MAX_CHANGES_PER_BATCH`] changes with at most [`MAX_INLINE_BYTES`] of datums riding
/// along; a failed batch is merged back into the lane.
struct Notifications(Arc<Shared>);

impl Batcher<DataInfoId, u64> for Notifications {
    fn max_items(&self) -> usize {
        MAX_CHANGES_PER_BATCH
    }

    async fn send(
        &mut self,
        target: &Arc<Target>,
        taken: Vec<(DataInfoId, u64)>,
    ) -> Round<DataInfoId, u64> {
        let shared = &self.0;
        // Small datums ride along until the batch's inline budget is spent; the rest are
        // announced by version only and fetched by the session.
        let mut inline_left = MAX_INLINE_BYTES;
        let changes: Vec<Change> = taken
            .iter()
            .map(|(id, version)| {
                let datum = shared
                    .store
                    .push_datum(id, shared.inline_max_publishers)
                    .filter(|d| {
                        let b = d.approx_bytes();
                        let fits = b <= inline_left;
                        if fits {
                            inline_left -= b;
                        }
                        fits
                    });
                Change {
                    data_info_id: id.clone(),
                    version: datum.as_ref().map_or(*version, |d| d.version.max(*version)),
                    datum,
                }
            })
            .collect();
        let batch = ChangeBatch {
            from: shared.from.clone(),
            epoch: shared.view.borrow().epoch,
            changes,
        };
        let (rid, sent): (_, Result<serde_json::Value, _>) = post_batch(
            &shared.http,
            target.addr(),
            CHANGES_PATH,
            &batch,
            &shared.metrics.notify_latency,
        )
        .await;
        match sent {
            Ok(_) => {
                shared.metrics.notifications.inc_by(taken.len() as u64);
                Round::Done
            }
            Err(e) => {
                shared.metrics.notify_failures.inc();
                tracing::debug!(request = %rid, to = %target.addr(), "change notification failed: {e}");
                Round::Retry {
                    answered: false,
                    items: taken,
                }
            }
        }
    }

    fn requeue(&mut self, target: &Arc<Target>, items: Vec<(DataInfoId, u64)>) {
        target.push(items, highest);
    }
}
