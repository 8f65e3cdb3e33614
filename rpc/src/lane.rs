//! The batching lane: the one loop behind every "send whatever is queued for one peer as one
//! batch, and the next as soon as that one returns" of the registry (session writes to the
//! data tier, session fetches of datums, data-server change notifications and replication).
//!
//! A [`Lane`] holds the work queued for one peer in a map, so newer work for a key merges
//! with what is already queued and a lane holds at most one entry per key however fast
//! things change. [`Lane::run`] waits to be woken, then takes a batch (capped in items and
//! bytes by its [`Batcher`]), sends it, and goes again at once while anything is queued: an
//! idle lane sends at once, a busy one batches by itself. What a round hands back goes to
//! [`Batcher::requeue`] after a [`LaneBackoff`] wait (long when the peer did not answer,
//! short when it answered "not yet"), or at once when the lane is stopped, so the batcher
//! can put it back or route it elsewhere. A dead peer stalls only its own lane.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use prometheus::Histogram;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::LaneBackoff;
use crate::client::{HttpClient, RpcError};

/// Posts one batch under a fresh request id (the peer's log lines for it carry the same id),
/// observing its round trip in `latency`. Returns the id for the caller's own log lines.
pub async fn post_batch<Req, Resp>(
    http: &HttpClient,
    addr: &str,
    path: &str,
    body: &Req,
    latency: &Histogram,
) -> (Arc<str>, Result<Resp, RpcError>)
where
    Req: Serialize + ?Sized,
    Resp: DeserializeOwned,
{
    let started = std::time::Instant::now();
    let rid = crate::request_id::fresh();
    let answer = crate::request_id::scope(rid.clone(), http.post(addr, path, body)).await;
    latency.observe(started.elapsed().as_secs_f64());
    (rid, answer)
}

/// Capacity a queue keeps however empty it gets: what a lane holds in ordinary traffic.
const KEPT_CAPACITY: usize = 1024;

/// Gives back the memory of a burst once it has drained: a map keeps its largest capacity
/// (a million publishers registering at once leave their lane's map at a million buckets),
/// and a lane that once held a burst would hold its memory, and scan its buckets on every
/// batch, for the rest of the process. Shrinks only when less than an eighth is in use, so
/// a steady load never rehashes back and forth.
fn shrink_after_burst<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > KEPT_CAPACITY && map.len() < map.capacity() / 8 {
        map.shrink_to((map.len() * 2).max(KEPT_CAPACITY));
    }
}

/// Work queued for one peer, with its wake-up and stop.
pub struct Lane<K, V> {
    /// The peer's address.
    addr: String,
    /// What waits for the next batch, one entry per key.
    pending: Mutex<HashMap<K, V>>,
    /// Woken when work is queued.
    wake: Notify,
    /// Ends the loop (the peer left, or the server stops).
    stop: CancellationToken,
}

/// How a round ended.
pub enum Round<K, V> {
    /// Everything was sent, settled or put back for the next batch: go on at once.
    Done,
    /// These items must go again after a backoff; `answered` says whether the peer answered
    /// at all.
    Retry { answered: bool, items: Vec<(K, V)> },
}

/// What a lane sends and how.
pub trait Batcher<K, V>: Send + 'static {
    /// Most items in one batch.
    fn max_items(&self) -> usize;

    /// Most bytes in one batch, counted by [`Batcher::bytes`]; a batch takes one item
    /// however large.
    fn max_bytes(&self) -> usize {
        usize::MAX
    }

    /// What one item weighs in a batch.
    fn bytes(&self, _key: &K, _value: &V) -> usize {
        0
    }

    /// Sends one batch.
    fn send(
        &mut self,
        lane: &Arc<Lane<K, V>>,
        batch: Vec<(K, V)>,
    ) -> impl Future<Output = Round<K, V>> + Send;

    /// Takes back what a round returned, after the backoff (or when the lane stopped).
    fn requeue(&mut self, lane: &Arc<Lane<K, V>>, items: Vec<(K, V)>);
}

impl<K, V> Lane<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Send + 'static,
{
    pub fn new(addr: impl Into<String>, stop: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            addr: addr.into(),
            pending: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            stop,
        })
    }

    /// Starts the lane's loop on the current runtime.
    pub fn spawn<B: Batcher<K, V>>(self: &Arc<Self>, batcher: B) {
        tokio::spawn(self.clone().run(batcher));
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Queues items, merging each with the one queued under its key, and wakes the loop.
    pub fn push(&self, items: impl IntoIterator<Item = (K, V)>, merge: impl Fn(&mut V, V)) {
        {
            let mut pending = self.pending.lock();
            for (k, v) in items {
                match pending.get_mut(&k) {
                    Some(cur) => merge(cur, v),
                    None => {
                        pending.insert(k, v);
                    }
                }
            }
        }
        self.wake.notify_one();
    }

    /// Wakes the loop (after items were put in through [`Lane::queue`]).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The queue itself, for a caller that must look at it or fill it without waking the
    /// loop for every item.
    pub fn queue(&self) -> MutexGuard<'_, HashMap<K, V>> {
        self.pending.lock()
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.pending.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes everything queued (the peer left: the caller routes it elsewhere).
    pub fn drain(&self) -> Vec<(K, V)> {
        self.pending.lock().drain().collect()
    }

    /// Ends the loop; a round in flight finishes and hands its retries to `requeue` at once.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Takes the next batch: at most `max_items`, and at most `max_bytes` by `bytes` beyond
    /// the first item.
    fn take(
        &self,
        max_items: usize,
        max_bytes: usize,
        bytes: impl Fn(&K, &V) -> usize,
    ) -> Vec<(K, V)> {
        let mut pending = self.pending.lock();
        let mut keys: Vec<K> = Vec::new();
        let mut total = 0usize;
        for (k, v) in pending.iter() {
            if keys.len() >= max_items.max(1) {
                break;
            }
            let b = bytes(k, v);
            if !keys.is_empty() && total.saturating_add(b) > max_bytes {
                break;
            }
            total = total.saturating_add(b);
            keys.push(k.clone());
        }
        let batch = keys
            .into_iter()
            .filter_map(|k| pending.remove_entry(&k))
            .collect();
        shrink_after_burst(&mut pending);
        batch
    }

    /// The loop: until stopped, sends everything queued in batches.
    pub async fn run<B: Batcher<K, V>>(self: Arc<Self>, mut batcher: B) {
        let mut backoff = LaneBackoff::default();
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.stop.cancelled() => return,
            }
            loop {
                let batch = self.take(batcher.max_items(), batcher.max_bytes(), |k, v| {
                    batcher.bytes(k, v)
                });
                if batch.is_empty() {
                    break;
                }
                match batcher.send(&self, batch).await {
                    Round::Done => backoff.reset(),
                    Round::Retry { answered, items } => {
                        let wait = backoff.after(answered);
                        tokio::select! {
                            _ = wait.wait() => {}
                            _ = self.stop.cancelled() => {}
                        }
                        batcher.requeue(&self, items);
                        if self.stop.is_cancelled() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    type Batches = Arc<Mutex<Vec<Vec<(u32, u64)>>>>;

    /// Records the batches it is given; fails the first `fail` rounds.
    struct Recorder {
        batches: Batches,
        fail: Arc<AtomicUsize>,
    }

    impl Batcher<u32, u64> for Recorder {
        fn max_items(&self) -> usize {
            3
        }

        fn max_bytes(&self) -> usize {
            100
        }

        fn bytes(&self, _key: &u32, value: &u64) -> usize {
            *value as usize
        }

        async fn send(
            &mut self,
            _lane: &Arc<Lane<u32, u64>>,
            mut batch: Vec<(u32, u64)>,
        ) -> Round<u32, u64> {
            if self
                .fail
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
            {
                return Round::Retry {
                    answered: false,
                    items: batch,
                };
            }
            batch.sort();
            self.batches.lock().push(batch);
            Round::Done
        }

        fn requeue(&mut self, lane: &Arc<Lane<u32, u64>>, items: Vec<(u32, u64)>) {
            lane.push(items, |cur, v| *cur = (*cur).max(v));
        }
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn batches_are_capped_by_items_and_bytes_and_merge_by_key() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let lane: Arc<Lane<u32, u64>> = Lane::new("peer", CancellationToken::new());
        // Queued before the loop runs, so the batches are cut from all of it.
        lane.push([(1, 10), (2, 10), (3, 10), (4, 10)], |_, _| {});
        lane.push([(1, 20)], |cur, v| *cur = (*cur).max(v));
        lane.push([(5, 90), (6, 95)], |_, _| {});
        lane.spawn(Recorder {
            batches: batches.clone(),
            fail: Arc::new(AtomicUsize::new(0)),
        });
        until("every item sent", || {
            batches.lock().iter().map(Vec::len).sum::<usize>() == 6
        })
        .await;
        let batches = batches.lock().clone();
        for b in &batches {
            assert!(b.len() <= 3, "{b:?}");
            let bytes: u64 = b.iter().map(|(_, v)| v).sum();
            assert!(b.len() == 1 || bytes <= 100, "{b:?}");
        }
        let mut all: Vec<(u32, u64)> = batches.into_iter().flatten().collect();
        all.sort();
        assert_eq!(
            all,
            vec![(1, 20), (2, 10), (3, 10), (4, 10), (5, 90), (6, 95)]
        );
    }

    #[tokio::test]
    async fn a_failed_round_is_requeued_merged_with_newer_work_and_sent() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let lane: Arc<Lane<u32, u64>> = Lane::new("peer", CancellationToken::new());
        // Rounds fail until the newer work is queued, so no round can succeed before it
        // (waiting for a set number of failures raced the backoff on a loaded machine).
        const FAILING: usize = 1_000_000;
        let fail = Arc::new(AtomicUsize::new(FAILING));
        lane.spawn(Recorder {
            batches: batches.clone(),
            fail: fail.clone(),
        });
        lane.push([(7, 1)], |_, _| {});
        until("two failed rounds", || {
            fail.load(Ordering::Acquire) <= FAILING - 2
        })
        .await;
        lane.push([(7, 2)], |cur, v| *cur = (*cur).max(v));
        fail.store(0, Ordering::Release);
        until("sent", || !batches.lock().is_empty()).await;
        assert_eq!(batches.lock().concat(), vec![(7, 2)]);
        assert!(lane.is_empty());
    }

    #[tokio::test]
    async fn a_stopped_lane_hands_its_retry_back_at_once() {
        struct Stuck(Arc<Mutex<Vec<u32>>>);
        impl Batcher<u32, ()> for Stuck {
            fn max_items(&self) -> usize {
                10
            }
            async fn send(
                &mut self,
                lane: &Arc<Lane<u32, ()>>,
                batch: Vec<(u32, ())>,
            ) -> Round<u32, ()> {
                lane.stop();
                Round::Retry {
                    answered: false,
                    items: batch,
                }
            }
            fn requeue(&mut self, _lane: &Arc<Lane<u32, ()>>, items: Vec<(u32, ())>) {
                self.0.lock().extend(items.into_iter().map(|(k, _)| k));
            }
        }
        let handed = Arc::new(Mutex::new(Vec::new()));
        let lane: Arc<Lane<u32, ()>> = Lane::new("peer", CancellationToken::new());
        lane.push([(1, ())], |_, _| {});
        let started = std::time::Instant::now();
        tokio::time::timeout(
            Duration::from_secs(10),
            lane.clone().run(Stuck(handed.clone())),
        )
        .await
        .expect("the loop ends when stopped");
        assert_eq!(*handed.lock(), vec![1]);
        // Well under the unreachable backoff's ceiling of 2 s.
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back_and_a_steady_load_keeps_its_table() {
        let mut map: HashMap<u32, u64> = (0..100_000).map(|k| (k, 0)).collect();
        let burst = map.capacity();
        map.retain(|k, _| *k < 50_000);
        let half = map.capacity();
        shrink_after_burst(&mut map);
        assert_eq!(map.capacity(), half, "half full: kept");
        map.retain(|k, _| *k < 100);
        shrink_after_burst(&mut map);
        assert!(map.capacity() < burst / 50, "drained: {}", map.capacity());
        assert!(map.capacity() >= KEPT_CAPACITY);
        assert_eq!(map.len(), 100);
        let kept = map.capacity();
        map.clear();
        shrink_after_burst(&mut map);
        assert_eq!(map.capacity(), kept, "at the floor: not shrunk again");
    }
}
