//! `deploy-check`: keeps a W1-small-like load on a running cluster (publishers republishing,
//! subscribers recording every push) while an operator script breaks and restarts servers,
//! and checks the subscribers between the steps.
//!
//! It registers `--services` x `--publishers` publishers and as many x `--subscribers`
//! subscribers over `--clients` SDK clients (each knows every session and fails over), prints
//! `READY` once every subscriber holds every publisher, then republishes `--rate` times a
//! second. Commands, one per line on stdin:
//!
//! - `check NAME`: pause the churn, wait (up to `--check-timeout-secs`) until every subscriber
//!   holds every publisher at its latest data, print
//!   `RESULT NAME ok=<bool> missing=M stale=S gaps=G seconds=T`, resume. `missing`: publishers
//!   absent from some subscriber's last push; `stale`: subscribers whose last push is not the
//!   latest data; `gaps`: pushes since the previous check that lacked a publisher the
//!   subscriber had already seen (a live publisher disappeared; nothing ever unpublishes here).
//! - `mark TEXT`: log TEXT with the driver's clock (to line gaps up with the script's steps).
//! - `quit`: close the clients and exit.
//!
//! `deploy/test.sh` drives it; see `docs/operations.md`.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use client_sdk::{Callback, Client, ClientConfig, DatumUpdate, Publisher, RegistrationOptions};
use futures::stream::{self, StreamExt};
use integration::bench::payload::{decode, encode};
use parking_lot::Mutex;
use rand::RngExt;
use registry_common::auth::Credential;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
#[command(
    name = "deploy-check",
    about = "Load and subscriber checks against a running cluster"
)]
struct Args {
    /// Session addresses (`host:port`, comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    sessions: Vec<String>,
    /// Access key file (`KEY_ID:SECRET`) of a principal that may publish and subscribe
    /// `deploy.*`; needed when the cluster has auth on.
    #[arg(long)]
    key_file: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 100)]
    services: usize,
    #[arg(long, default_value_t = 5)]
    publishers: usize,
    #[arg(long, default_value_t = 5)]
    subscribers: usize,
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Republications per second while not checking.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Bytes of payload per publisher.
    #[arg(long, default_value_t = 128)]
    payload: usize,
    /// How long a check waits for the subscribers to catch up.
    #[arg(long, default_value_t = 60)]
    check_timeout_secs: u64,
}

/// What one subscriber has seen.
struct Sub {
    /// Sequence number per publisher of its service in its last push (`None`: absent).
    last: Vec<Option<u64>>,
    /// It has held every publisher at least once.
    complete: bool,
}

struct Tracker {
    p: usize,
    subs: Vec<Mutex<Sub>>,
    /// Pushes that lacked a publisher the subscriber had seen, since the last check.
    gaps: AtomicU64,
    /// The first few gaps, for the log.
    gap_log: Mutex<Vec<String>>,
    last_push: Mutex<Instant>,
    /// When the driver started (gap times are logged from it).
    started: Instant,
}

impl Tracker {
    fn on_push(&self, j: usize, d: usize, u: &DatumUpdate) {
        *self.last_push.lock() = Instant::now();
        let mut s = self.subs[j].lock();
        let mut now = vec![None; self.p];
        for item in &u.data {
            let Some((k, seq, _)) = decode(item) else {
                continue;
            };
            if let Some(p) = k.checked_sub(d * self.p).filter(|p| *p < self.p) {
                now[p] = Some(seq);
            }
        }
        if s.complete && now.iter().any(Option::is_none) {
            self.gaps.fetch_add(1, Ordering::Relaxed);
            let mut log = self.gap_log.lock();
            if log.len() < 20 {
                let gone: Vec<usize> = (0..self.p).filter(|p| now[*p].is_none()).collect();
                log.push(format!(
                    "at {:.3} s: subscriber {j} of deploy.svc.{d}: publishers {gone:?} missing from version {}",
                    self.started.elapsed().as_secs_f64(),
                    u.version
                ));
            }
        }
        s.complete |= now.iter().all(Option::is_some);
        s.last = now;
    }

    fn converged(&self) -> usize {
        self.subs.iter().filter(|s| s.lock().complete).count()
    }
}

struct Pub {
    handle: Publisher,
    /// Highest sequence number sent.
    expected: AtomicU64,
    busy: AtomicBool,
}

/// (publishers missing somewhere, stale subscribers).
fn audit(tracker: &Tracker, pubs: &[Arc<Pub>], s: usize) -> (u64, u64) {
    let mut missing = std::collections::BTreeSet::new();
    let mut stale = 0;
    for (j, sub) in tracker.subs.iter().enumerate() {
        let d = j / s;
        let sub = sub.lock();
        let mut ok = true;
        for (p, last) in sub.last.iter().enumerate() {
            let k = d * tracker.p + p;
            match last {
                None => {
                    missing.insert(k);
                    ok = false;
                }
                Some(seq) if *seq != pubs[k].expected.load(Ordering::Acquire) => ok = false,
                Some(_) => {}
            }
        }
        if !ok {
            stale += 1;
        }
    }
    (missing.len() as u64, stale)
}

/// Republishes publisher `k` with its next sequence number, retrying a failed request (the
/// SDK re-sends across reconnects; a request can still time out while a session restarts).
fn fire(p: Arc<Pub>, k: usize, payload: usize) {
    let seq = p.expected.load(Ordering::Acquire) + 1;
    p.expected.store(seq, Ordering::Release);
    tokio::spawn(async move {
        for attempt in 1..=5 {
            match p.handle.republish(vec![encode(k, seq, payload)]).await {
                Ok(_) => break,
                Err(e) => eprintln!("republish of p{k} failed (attempt {attempt}): {e}"),
            }
        }
        p.busy.store(false, Ordering::Release);
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let (d, p, s, c) = (
        args.services,
        args.publishers.max(1),
        args.subscribers.max(1),
        args.clients.max(1),
    );
    let credential = match &args.key_file {
        Some(path) => Some(Credential::from_file(path).context("reading the key file")?),
        None => None,
    };
    let mut clients = Vec::with_capacity(c);
    for i in 0..c {
        let mut addrs = args.sessions.clone();
        let n = addrs.len();
        addrs.rotate_left(i % n);
        let mut cfg = ClientConfig::new(addrs);
        cfg.ordered = true;
        cfg.credential = credential.clone();
        cfg.request_timeout = Duration::from_secs(30);
        cfg.connect_timeout = Duration::from_secs(30);
        clients.push(Client::connect(cfg).await.context("client connect")?);
    }
    eprintln!("{c} clients connected");
    let tracker = Arc::new(Tracker {
        p,
        subs: (0..d * s)
            .map(|_| {
                Mutex::new(Sub {
                    last: vec![None; p],
                    complete: false,
                })
            })
            .collect(),
        gaps: AtomicU64::new(0),
        gap_log: Mutex::new(Vec::new()),
        last_push: Mutex::new(Instant::now()),
        started,
    });
    let subs: Vec<client_sdk::Subscriber> = stream::iter(0..d * s)
        .map(|j| {
            let client = clients[j % c].clone();
            let tracker = tracker.clone();
            async move {
                let svc = j / s;
                let cb: Callback = Arc::new(move |u: &DatumUpdate| tracker.on_push(j, svc, u));
                client
                    .subscribe_with(
                        &format!("deploy.svc.{svc}"),
                        RegistrationOptions::default(),
                        Some(cb),
                    )
                    .await
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .context("subscribe")?;
    let pubs: Vec<Arc<Pub>> = stream::iter(0..d * p)
        .map(|k| {
            let client = clients[(k + c / 2) % c].clone();
            let payload = args.payload;
            async move {
                let handle = client
                    .publish(
                        &format!("deploy.svc.{}", k / p),
                        vec![encode(k, 0, payload)],
                    )
                    .await?;
                Ok::<_, client_sdk::SdkError>(Arc::new(Pub {
                    handle,
                    expected: AtomicU64::new(0),
                    busy: AtomicBool::new(false),
                }))
            }
        })
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .context("publish")?;
    let deadline = Instant::now() + Duration::from_secs(args.check_timeout_secs);
    while tracker.converged() < d * s {
        if Instant::now() > deadline {
            anyhow::bail!(
                "only {} of {} subscribers hold every publisher",
                tracker.converged(),
                d * s
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("READY publishers={} subscribers={}", d * p, d * s);

    let churning = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicU64::new(0));
    {
        let (pubs, churning, sent) = (pubs.clone(), churning.clone(), sent.clone());
        let (rate, payload) = (args.rate.max(1), args.payload);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                if !churning.load(Ordering::Acquire) {
                    continue;
                }
                let k = rand::rng().random_range(0..pubs.len());
                if !pubs[k].busy.swap(true, Ordering::AcqRel) {
                    fire(pubs[k].clone(), k, payload);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("mark") => {
                let what: Vec<&str> = words.collect();
                eprintln!(
                    "at {:.3} s: {}",
                    started.elapsed().as_secs_f64(),
                    what.join(" ")
                );
            }
            Some("check") => {
                let name = words.next().unwrap_or("check").to_string();
                let began = Instant::now();
                churning.store(false, Ordering::Release);
                let deadline = began + Duration::from_secs(args.check_timeout_secs);
                let (missing, stale) = loop {
                    let idle = tracker.last_push.lock().elapsed() > Duration::from_millis(500);
                    let in_flight = pubs.iter().any(|p| p.busy.load(Ordering::Acquire));
                    let (missing, stale) = audit(&tracker, &pubs, s);
                    if (idle && !in_flight && missing == 0 && stale == 0)
                        || Instant::now() > deadline
                    {
                        break (missing, stale);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                let gaps = tracker.gaps.swap(0, Ordering::Relaxed);
                for g in tracker.gap_log.lock().drain(..) {
                    eprintln!("[{name}] gap: {g}");
                }
                println!(
                    "RESULT {name} ok={} missing={missing} stale={stale} gaps={gaps} seconds={:.1} republished={}",
                    missing == 0 && stale == 0,
                    began.elapsed().as_secs_f64(),
                    sent.swap(0, Ordering::Relaxed),
                );
                churning.store(true, Ordering::Release);
            }
            Some("quit") => break,
            Some(other) => eprintln!("unknown command `{other}` (check NAME | mark TEXT | quit)"),
            None => {}
        }
    }
    churning.store(false, Ordering::Release);
    drop(subs);
    for c in clients {
        c.close().await;
    }
    Ok(())
}
