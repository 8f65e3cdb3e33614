//! Load through real SDK clients: publishers that publish, republish, unregister and crash,
//! subscribers that join and leave. Every acknowledged operation and every push goes to the
//! [`Checker`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client_sdk::{Client, ClientConfig, Publisher, RegistrationOptions, Subscriber};
use parking_lot::Mutex;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::checker::{data_string, Checker};

/// Size and pace of the load.
#[derive(Clone, Debug)]
pub struct LoadShape {
    pub services: usize,
    pub pub_clients: usize,
    pub pubs_per_client: usize,
    pub sub_clients: usize,
    /// Client operations per second.
    pub rate: f64,
}

pub fn service_name(i: usize) -> String {
    format!("chaos.svc.{i}")
}

struct PubEntry {
    token: String,
    seq: u64,
    /// Taken while an operation on it is in flight.
    handle: Option<Publisher>,
}

struct PubClient {
    client: Client,
    pubs: Vec<PubEntry>,
}

struct SubClient {
    client: Client,
    subs: Vec<(u64, Option<Subscriber>)>,
}

#[derive(Default)]
struct Population {
    pub_clients: BTreeMap<usize, PubClient>,
    sub_clients: BTreeMap<usize, SubClient>,
}

pub struct Load {
    shape: LoadShape,
    sessions: Vec<String>,
    pub checker: Arc<Mutex<Checker>>,
    pop: Mutex<Population>,
    next_client: AtomicUsize,
    next_pub: AtomicUsize,
    next_sub: AtomicUsize,
    in_flight: AtomicUsize,
    paused: AtomicBool,
    rng: Mutex<Xoshiro256PlusPlus>,
    /// Operations that failed (timeouts, refusals), for the report.
    pub failed_ops: AtomicUsize,
    pub ops: AtomicUsize,
}

fn config(sessions: &[String]) -> ClientConfig {
    let mut c = ClientConfig::new(sessions.iter().cloned());
    c.request_timeout = Duration::from_secs(10);
    c.connect_timeout = Duration::from_secs(10);
    c
}

impl Load {
    pub fn new(shape: LoadShape, sessions: Vec<String>, seed: u64) -> Arc<Self> {
        Arc::new(Self {
            shape,
            sessions,
            checker: Arc::new(Mutex::new(Checker::new())),
            pop: Mutex::new(Population::default()),
            next_client: AtomicUsize::new(0),
            next_pub: AtomicUsize::new(0),
            next_sub: AtomicUsize::new(1),
            in_flight: AtomicUsize::new(0),
            paused: AtomicBool::new(true),
            rng: Mutex::new(Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed_10ad)),
            failed_ops: AtomicUsize::new(0),
            ops: AtomicUsize::new(0),
        })
    }

    fn pick(&self, n: usize) -> usize {
        self.rng.lock().random_range(0..n.max(1))
    }

    /// Starts the initial clients and waits for their registrations.
    pub async fn populate(self: &Arc<Self>) -> anyhow::Result<()> {
        for _ in 0..self.shape.sub_clients {
            self.add_sub_client().await?;
        }
        let mut tasks = Vec::new();
        for _ in 0..self.shape.pub_clients {
            let me = self.clone();
            tasks.push(tokio::spawn(async move { me.add_pub_client().await }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    }

    async fn add_sub_client(self: &Arc<Self>) -> anyhow::Result<()> {
        let client = Client::connect(config(&self.sessions)).await?;
        let mut subs = Vec::new();
        for service in 0..self.shape.services {
            let sub = self.next_sub.fetch_add(1, Ordering::Relaxed) as u64;
            self.checker.lock().subscribed(sub, service);
            let checker = self.checker.clone();
            let cb: client_sdk::Callback = Arc::new(move |u: &client_sdk::DatumUpdate| {
                checker.lock().push(sub, u.version, &u.data);
            });
            match client
                .subscribe_with(
                    &service_name(service),
                    RegistrationOptions::default(),
                    Some(cb),
                )
                .await
            {
                Ok(s) => subs.push((sub, Some(s))),
                Err(e) => {
                    self.checker.lock().unsubscribed(sub);
                    self.failed_ops.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("subscribe failed: {e}");
                }
            }
        }
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        self.pop
            .lock()
            .sub_clients
            .insert(id, SubClient { client, subs });
        Ok(())
    }

    async fn add_pub_client(self: &Arc<Self>) -> anyhow::Result<()> {
        let client = Client::connect(config(&self.sessions)).await?;
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        self.pop.lock().pub_clients.insert(
            id,
            PubClient {
                client: client.clone(),
                pubs: Vec::new(),
            },
        );
        for _ in 0..self.shape.pubs_per_client {
            self.publish_new(id, &client).await;
        }
        Ok(())
    }

    async fn publish_new(self: &Arc<Self>, client_id: usize, client: &Client) {
        let n = self.next_pub.fetch_add(1, Ordering::Relaxed);
        let token = format!("c{client_id}p{n}");
        let service = self.pick(self.shape.services);
        self.checker.lock().registering(&token, service);
        let r = client
            .publish(&service_name(service), vec![data_string(&token, 1)])
            .await;
        self.ops.fetch_add(1, Ordering::Relaxed);
        let ok = r.is_ok();
        self.checker.lock().registered(&token, ok);
        match r {
            Ok(handle) => {
                let mut pop = self.pop.lock();
                match pop.pub_clients.get_mut(&client_id) {
                    Some(pc) => pc.pubs.push(PubEntry {
                        token,
                        seq: 1,
                        handle: Some(handle),
                    }),
                    // The client crashed meanwhile.
                    None => {
                        drop(pop);
                        self.checker.lock().withdrawn(&token);
                    }
                }
            }
            Err(e) => {
                self.failed_ops.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%token, "publish failed: {e}");
            }
        }
    }

    pub fn pause(&self) {
        self.paused.store(true, Ordering::Release);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::Release);
    }

    /// Waits until no operation is in flight (at most `within`).
    pub async fn quiesce(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.in_flight.load(Ordering::Acquire) > 0 {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Drives operations at the configured rate until `stop`.
    pub async fn drive(self: Arc<Self>, stop: registry_rpc::CancellationToken) {
        let every = Duration::from_secs_f64(1.0 / self.shape.rate.max(0.1));
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.cancelled() => return,
            }
            if self.paused.load(Ordering::Acquire) || self.in_flight.load(Ordering::Acquire) > 32 {
                continue;
            }
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            let me = self.clone();
            tokio::spawn(async move {
                me.one_op().await;
                me.in_flight.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    async fn one_op(self: &Arc<Self>) {
        let roll = self.pick(100);
        match roll {
            0..=54 => self.republish().await,
            55..=66 => self.unregister_one().await,
            67..=78 => {
                let target = {
                    let pop = self.pop.lock();
                    let ids: Vec<usize> = pop.pub_clients.keys().copied().collect();
                    (!ids.is_empty()).then(|| {
                        let id = ids[self.pick(ids.len())];
                        (id, pop.pub_clients[&id].client.clone())
                    })
                };
                if let Some((id, client)) = target {
                    self.publish_new(id, &client).await;
                }
            }
            79..=84 => {
                self.crash_pub_client();
                if let Err(e) = self.add_pub_client().await {
                    tracing::warn!("new publisher client failed: {e}");
                    self.failed_ops.fetch_add(1, Ordering::Relaxed);
                }
            }
            85..=92 => self.unsubscribe_one().await,
            _ => {
                self.crash_sub_client();
                if let Err(e) = self.add_sub_client().await {
                    tracing::warn!("new subscriber client failed: {e}");
                    self.failed_ops.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Takes a random idle publisher's handle out: (client id, index, token, next seq, handle).
    fn take_pub(&self) -> Option<(usize, String, u64, Publisher)> {
        let mut pop = self.pop.lock();
        let mut idle: Vec<(usize, usize)> = Vec::new();
        for (cid, pc) in &pop.pub_clients {
            for (i, p) in pc.pubs.iter().enumerate() {
                if p.handle.is_some() {
                    idle.push((*cid, i));
                }
            }
        }
        if idle.is_empty() {
            return None;
        }
        let (cid, i) = idle[self.pick(idle.len())];
        let p = &mut pop.pub_clients.get_mut(&cid)?.pubs[i];
        p.seq += 1;
        Some((cid, p.token.clone(), p.seq, p.handle.take()?))
    }

    fn put_back(&self, cid: usize, token: &str, handle: Publisher) {
        let mut pop = self.pop.lock();
        if let Some(p) = pop
            .pub_clients
            .get_mut(&cid)
            .and_then(|pc| pc.pubs.iter_mut().find(|p| p.token == token))
        {
            p.handle = Some(handle);
        }
    }

    async fn republish(&self) {
        let Some((cid, token, seq, handle)) = self.take_pub() else {
            return;
        };
        self.checker.lock().republishing(&token, seq);
        let r = handle.republish(vec![data_string(&token, seq)]).await;
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.checker.lock().republished(&token, seq, r.is_ok());
        if let Err(e) = r {
            self.failed_ops.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%token, "republish failed: {e}");
        }
        self.put_back(cid, &token, handle);
    }

    async fn unregister_one(&self) {
        let Some((cid, token, _, handle)) = self.take_pub() else {
            return;
        };
        {
            let mut pop = self.pop.lock();
            if let Some(pc) = pop.pub_clients.get_mut(&cid) {
                pc.pubs.retain(|p| p.token != token);
            }
        }
        self.checker.lock().withdrawn(&token);
        let r = handle.unregister().await;
        self.ops.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = r {
            self.failed_ops.fetch_add(1, Ordering::Relaxed);
            self.checker.lock().withdraw_failed(&token);
            tracing::warn!(%token, "unregister failed: {e}");
        }
    }

    /// Drops a random publisher client without unregistering anything.
    fn crash_pub_client(&self) {
        let victim = {
            let mut pop = self.pop.lock();
            let ids: Vec<usize> = pop.pub_clients.keys().copied().collect();
            if ids.is_empty() {
                return;
            }
            pop.pub_clients.remove(&ids[self.pick(ids.len())])
        };
        if let Some(pc) = victim {
            let mut checker = self.checker.lock();
            for p in &pc.pubs {
                checker.withdrawn(&p.token);
            }
            drop(checker);
            drop(pc);
        }
    }

    async fn unsubscribe_one(&self) {
        let taken = {
            let mut pop = self.pop.lock();
            let mut all = Vec::new();
            for (cid, sc) in &pop.sub_clients {
                for (i, (_, s)) in sc.subs.iter().enumerate() {
                    if s.is_some() {
                        all.push((*cid, i));
                    }
                }
            }
            if all.is_empty() {
                return;
            }
            let (cid, i) = all[self.pick(all.len())];
            let sc = pop.sub_clients.get_mut(&cid);
            sc.and_then(|sc| {
                let (id, s) = sc.subs.remove(i);
                s.map(|s| (id, s))
            })
        };
        if let Some((id, s)) = taken {
            self.checker.lock().unsubscribed(id);
            if s.unsubscribe().await.is_err() {
                self.failed_ops.fetch_add(1, Ordering::Relaxed);
            }
            self.ops.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn crash_sub_client(&self) {
        let victim = {
            let mut pop = self.pop.lock();
            let ids: Vec<usize> = pop.sub_clients.keys().copied().collect();
            if ids.len() <= 1 {
                return;
            }
            pop.sub_clients.remove(&ids[self.pick(ids.len())])
        };
        if let Some(sc) = victim {
            let mut checker = self.checker.lock();
            for (id, _) in &sc.subs {
                checker.unsubscribed(*id);
            }
            drop(checker);
            drop(sc);
        }
    }

    /// Closes every client.
    pub async fn close(&self) {
        let pop = std::mem::take(&mut *self.pop.lock());
        for (_, pc) in pop.pub_clients {
            pc.client.close().await;
        }
        for (_, sc) in pop.sub_clients {
            sc.client.close().await;
        }
    }
}
