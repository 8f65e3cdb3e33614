//! Fetch lanes: datums fetched from their slot's primary, batched per data server.
//!
//! A change notification newer than the cached datum that does not carry the datum starts one
//! fetch. A fetch already in flight for that dataInfoId absorbs further notifications and is
//! repeated once it returns if something newer was announced meanwhile, so there is one fetch
//! per dataInfoId however many notifications arrive. Each data server has one
//! [`registry_rpc::lane`] that sends everything queued in one request as soon as the previous
//! one returns; failures are re-routed by the newest view and retried with backoff; ids with
//! no primary are parked until a view has one.

use std::collections::HashMap;
use std::sync::Arc;

use registry_common::id::DataInfoId;
use registry_common::member::{ClusterView, Role};
use registry_common::proto::data::{FetchRequest, FetchResponse};
use registry_rpc::lane::{post_batch, Batcher, Lane, Round};
use registry_rpc::RpcError;

use super::Pusher;

/// The fetches queued for one data server.
pub(super) type FetchLane = Lane<DataInfoId, ()>;

impl Pusher {
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

    /// DataInfoIds with a fetch wanted and not yet answered.
    pub fn fetches_pending(&self) -> usize {
        self.fetching.lock().len()
    }

    pub(super) fn enqueue_fetch(self: &Arc<Self>, id: DataInfoId) {
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
            self.lane(&addr)
                .push(ids.into_iter().map(|id| (id, ())), |_, _| {});
        }
    }

    fn lane(self: &Arc<Self>, addr: &str) -> Arc<FetchLane> {
        let mut lanes = self.lanes.lock();
        if let Some(l) = lanes.get(addr) {
            return l.clone();
        }
        let lane = FetchLane::new(addr, self.shutdown.child_token());
        lanes.insert(addr.to_owned(), lane.clone());
        lane.spawn(Fetches(self.clone()));
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
            lane.stop();
            ids.extend(lane.drain().into_iter().map(|(id, ())| id));
        }
        ids.extend(self.parked.lock().drain());
        self.route_fetches(view, ids);
    }
}

/// A fetch lane's sending: one `/data/v1/fetch` of up to `--max-batch` ids, whose datums
/// go to [`Pusher::accept`]; what failed is re-routed by the newest view.
struct Fetches(Arc<Pusher>);

impl Batcher<DataInfoId, ()> for Fetches {
    fn max_items(&self) -> usize {
        self.0.config.max_batch
    }

    async fn send(
        &mut self,
        lane: &Arc<FetchLane>,
        batch: Vec<(DataInfoId, ())>,
    ) -> Round<DataInfoId, ()> {
        let pusher = &self.0;
        // An id whose wanted version arrived meanwhile (a notification carrying its datum
        // satisfied the fetch) is not fetched again.
        let ids: Vec<DataInfoId> = {
            let fetching = pusher.fetching.lock();
            batch
                .into_iter()
                .map(|(id, ())| id)
                .filter(|id| fetching.contains_key(id))
                .collect()
        };
        if ids.is_empty() {
            return Round::Done;
        }
        let view = pusher.membership.view();
        let req = FetchRequest {
            epoch: view.epoch,
            ids: ids.clone(),
            compact: true,
        };
        pusher.metrics.fetches.inc_by(ids.len() as u64);
        let (rid, answer): (_, Result<FetchResponse, RpcError>) = post_batch(
            &pusher.http,
            lane.addr(),
            "/data/v1/fetch",
            &req,
            &pusher.metrics.fetch_latency,
        )
        .await;
        let answered = answer.is_ok();
        let retry: Vec<DataInfoId> = match answer {
            Ok(resp) => {
                for datum in resp.compact {
                    pusher.accept(datum);
                }
                resp.errors.into_iter().map(|e| e.data_info_id).collect()
            }
            Err(e) => {
                tracing::debug!(request = %rid, from = %lane.addr(), "fetch failed: {e}");
                ids
            }
        };
        if retry.is_empty() {
            return Round::Done;
        }
        pusher.membership.refresh().await;
        Round::Retry {
            answered,
            items: retry.into_iter().map(|id| (id, ())).collect(),
        }
    }

    fn requeue(&mut self, _lane: &Arc<FetchLane>, items: Vec<(DataInfoId, ())>) {
        let view = self.0.membership.view();
        self.0
            .route_fetches(&view, items.into_iter().map(|(id, ())| id).collect());
    }
}
