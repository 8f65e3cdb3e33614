//! Workloads for cluster tests: many publishers over many dataInfoIds, and subscribers that
//! record every update they receive.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use client_sdk::{Client, DatumUpdate, Publisher, RegistrationOptions, Subscriber};
use futures::stream::{self, StreamExt};
use parking_lot::Mutex;

use crate::cluster::Cluster;

/// The dataId of service number `i`.
pub fn data_id(i: usize) -> String {
    format!("svc.{i:05}")
}

/// The data of publisher `p` of service `i`.
pub fn payload(i: usize, p: usize) -> String {
    format!("10.{}.{}.{}:{}", i / 256 % 256, i % 256, p % 256, 8000 + p)
}

/// SDK clients spread over the sessions; each knows every session, so it fails over.
pub struct Fleet {
    pub clients: Vec<Client>,
}

impl Fleet {
    pub async fn connect(cluster: &Cluster, n: usize) -> anyhow::Result<Self> {
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            clients.push(cluster.client_all(i).await?);
        }
        Ok(Self { clients })
    }

    /// Publishes `per_id` publishers on each of `ids` services, concurrently.
    pub async fn publish_grid(&self, ids: usize, per_id: usize) -> anyhow::Result<Vec<Publisher>> {
        let n = self.clients.len();
        let jobs = (0..ids).flat_map(|i| (0..per_id).map(move |p| (i, p)));
        let results: Vec<Result<Publisher, client_sdk::SdkError>> = stream::iter(jobs)
            .map(|(i, p)| {
                let client = &self.clients[(i * per_id + p) % n];
                async move { client.publish(&data_id(i), vec![payload(i, p)]).await }
            })
            .buffer_unordered(256)
            .collect()
            .await;
        Ok(results.into_iter().collect::<Result<Vec<_>, _>>()?)
    }

    /// Subscribes to each of `ids` services (round-robin over the clients) and records every
    /// update.
    pub async fn watch(&self, ids: usize) -> anyhow::Result<Watch> {
        let record = Arc::new(Mutex::new(Record::default()));
        let n = self.clients.len();
        let subs: Vec<Result<Subscriber, client_sdk::SdkError>> = stream::iter(0..ids)
            .map(|i| {
                let client = &self.clients[i % n];
                let record = record.clone();
                async move {
                    let cb: client_sdk::Callback = Arc::new(move |u: &DatumUpdate| {
                        record.lock().push(i, u.clone());
                    });
                    client
                        .subscribe_with(&data_id(i), RegistrationOptions::default(), Some(cb))
                        .await
                }
            })
            .buffer_unordered(256)
            .collect()
            .await;
        Ok(Watch {
            record,
            _subs: subs.into_iter().collect::<Result<Vec<_>, _>>()?,
        })
    }
}

/// What the subscribers saw.
#[derive(Default)]
pub struct Record {
    /// Every update per service, in arrival order.
    pub history: HashMap<usize, Vec<DatumUpdate>>,
}

impl Record {
    fn push(&mut self, i: usize, u: DatumUpdate) {
        self.history.entry(i).or_default().push(u);
    }
}

/// Subscriptions to many services and what they received.
pub struct Watch {
    pub record: Arc<Mutex<Record>>,
    _subs: Vec<Subscriber>,
}

impl Watch {
    /// The latest data per service.
    pub fn latest(&self, i: usize) -> Option<BTreeSet<String>> {
        self.record
            .lock()
            .history
            .get(&i)
            .and_then(|h| h.last())
            .map(|u| u.data.iter().cloned().collect())
    }

    /// Services (of `0..ids`) whose latest push holds exactly the publishers `expected` says.
    pub fn complete(&self, ids: usize, expected: impl Fn(usize) -> BTreeSet<String>) -> usize {
        (0..ids)
            .filter(|i| self.latest(*i).is_some_and(|l| l == expected(*i)))
            .count()
    }

    /// Services whose subscribers saw a publisher disappear after it had appeared, with the
    /// data that vanished (meaningful while nothing unpublishes).
    pub fn disappearances(&self) -> Vec<(usize, String)> {
        let record = self.record.lock();
        let mut out = Vec::new();
        for (i, history) in &record.history {
            let mut seen: BTreeSet<&String> = BTreeSet::new();
            for u in history {
                let now: BTreeSet<&String> = u.data.iter().collect();
                for gone in seen.difference(&now) {
                    out.push((*i, (*gone).clone()));
                }
                seen.extend(now);
            }
        }
        out
    }
}

/// The publishers of service `i` in a grid of `per_id` per service.
pub fn grid_data(i: usize, per_id: usize) -> BTreeSet<String> {
    (0..per_id).map(|p| payload(i, p)).collect()
}
