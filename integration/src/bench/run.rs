//! The phases of the workload.
//!
//! 1. **Register**: every publisher and subscriber registers as fast as the clients allow;
//!    registrations/s counts acknowledged ones; full convergence is the time from the first
//!    registration until every subscriber has had a push with all P publishers.
//! 2. **Churn**: Q republications per second for T seconds, each to a publisher chosen
//!    uniformly at random (one with no republication in flight), each payload carrying its
//!    send time; latency is measured at every subscriber that receives a change.
//! 3. **Failover**: churn goes on for a further period; 2 s in, one data server gets SIGKILL
//!    and, at the same instant, one publisher in every slot is republished (a probe: those
//!    in the dead server's slots can only arrive once the slots have moved). Convergence is
//!    the time from the kill until every subscriber holds, for every publisher, data at least
//!    as new as what was sent up to and including the probes.
//! 4. **Footprint**: peak resident memory of every server process, and the data servers'
//!    growth over the register phase per publisher: at the end of the phase, and once their
//!    memory has settled (before churn starts).
//!
//! Throughout, every server's resident memory is read every `--rss-every` seconds (see
//! [`crate::rss`]), for soak runs: a long churn with `--no-failover`.
//!
//! After churn and after failover the tool waits for quiescence and counts subscribers whose
//! last push is not the latest data (stale) and publishers missing from a final view (lost).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use client_sdk::{Callback, Client, ClientConfig, DatumUpdate, Publisher, RegistrationOptions};
use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::RngExt;
use registry_common::slot::{slot_of, DEFAULT_SLOT_COUNT};
use registry_common::time::now_us;
use registry_common::DataInfoId;

use super::launch::{bin_dir, sub_buckets, ProcCluster};
use super::params::{Args, Params};
use super::payload::{decode, encode};
use super::report::{
    Churn, Failover, Footprint, Latency, Passes, ProcMemory, Register, ReplicationLag, Report,
};
use crate::rss::{rss_kib, PssPeak, Sampler};

/// The data servers' histogram of primary-to-replica lag.
const REPLICATION_LAG: &str = "registry_data_replication_lag_seconds";

/// Which histogram latencies go to.
const PHASE_NONE: u8 = 0;
const PHASE_CHURN: u8 = 1;
const PHASE_FAILOVER: u8 = 2;

/// What one subscriber has seen.
struct SubState {
    /// Sequence number per publisher of its service in its last push (`u64::MAX`: absent).
    last: Vec<u64>,
    /// Highest sequence number seen per publisher (for counting each change once).
    seen: Vec<u64>,
    /// When its push first held every publisher.
    converged_at: Option<Instant>,
}

/// Everything the subscriber callbacks record.
struct Tracker {
    p: usize,
    subs: Vec<Mutex<SubState>>,
    phase: AtomicU8,
    churn: Mutex<Histogram<u64>>,
    /// Churn latencies by the second (since `churn_start_us`) the change was sent in, to
    /// line a tail up with what the servers were doing then.
    churn_by_second: Mutex<Vec<Histogram<u64>>>,
    /// When the churn phase started (us since the epoch).
    churn_start_us: AtomicU64,
    failover: Mutex<Histogram<u64>>,
    pushes: AtomicU64,
    converged: AtomicU64,
    /// Last time any push arrived (us since the epoch), for quiescence.
    last_push_us: AtomicU64,
}

impl Tracker {
    fn new(subscribers: usize, p: usize) -> anyhow::Result<Self> {
        Ok(Self {
            p,
            subs: (0..subscribers)
                .map(|_| {
                    Mutex::new(SubState {
                        last: vec![u64::MAX; p],
                        seen: vec![0; p],
                        converged_at: None,
                    })
                })
                .collect(),
            phase: AtomicU8::new(PHASE_NONE),
            churn: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
            churn_by_second: Mutex::new(Vec::new()),
            churn_start_us: AtomicU64::new(0),
            failover: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
            pushes: AtomicU64::new(0),
            converged: AtomicU64::new(0),
            last_push_us: AtomicU64::new(0),
        })
    }

    /// Subscriber `j` of service `d` received `u`.
    fn on_push(&self, j: usize, d: usize, u: &DatumUpdate) {
        let now = now_us();
        self.pushes.fetch_add(1, Ordering::Relaxed);
        self.last_push_us.store(now, Ordering::Relaxed);
        let phase = self.phase.load(Ordering::Relaxed);
        let mut latencies = Vec::new();
        {
            let mut s = self.subs[j].lock();
            s.last.iter_mut().for_each(|v| *v = u64::MAX);
            for item in &u.data {
                let Some((k, seq, sent)) = decode(item) else {
                    continue;
                };
                let Some(p) = k.checked_sub(d * self.p).filter(|p| *p < self.p) else {
                    continue;
                };
                s.last[p] = seq;
                if seq > s.seen[p] {
                    s.seen[p] = seq;
                    latencies.push((sent, now.saturating_sub(sent).max(1)));
                }
            }
            if s.converged_at.is_none() && s.last.iter().all(|v| *v != u64::MAX) {
                s.converged_at = Some(Instant::now());
                self.converged.fetch_add(1, Ordering::Relaxed);
            }
        }
        let hist = match phase {
            PHASE_CHURN => &self.churn,
            PHASE_FAILOVER => &self.failover,
            _ => return,
        };
        {
            let mut h = hist.lock();
            for &(_, l) in &latencies {
                let _ = h.record(l);
            }
        }
        if phase == PHASE_CHURN {
            let start = self.churn_start_us.load(Ordering::Relaxed);
            let mut by_second = self.churn_by_second.lock();
            for (sent, l) in latencies {
                let second = (sent.saturating_sub(start) / 1_000_000) as usize;
                while by_second.len() <= second {
                    match Histogram::new_with_bounds(1, 600_000_000, 2) {
                        Ok(h) => by_second.push(h),
                        Err(_) => return,
                    }
                }
                let _ = by_second[second].record(l);
            }
        }
    }
}

/// One publisher as the driver knows it.
struct Pub {
    handle: Publisher,
    /// Highest sequence number sent (also what the final view must show).
    expected: AtomicU64,
    /// A republication is in flight (never two at once, so they cannot overtake).
    busy: AtomicBool,
}

/// Every subscriber's state against the latest data sent: (stale subscribers, lost
/// publishers).
fn audit(tracker: &Tracker, pubs: &[Arc<Pub>], s: usize) -> (u64, u64) {
    let mut stale = 0;
    let mut lost = std::collections::BTreeSet::new();
    for (j, sub) in tracker.subs.iter().enumerate() {
        let d = j / s;
        let sub = sub.lock();
        let mut ok = true;
        for p in 0..tracker.p {
            let k = d * tracker.p + p;
            let want = pubs[k].expected.load(Ordering::Acquire);
            if sub.last[p] == u64::MAX {
                lost.insert(k);
                ok = false;
            } else if sub.last[p] != want {
                ok = false;
            }
        }
        if !ok {
            stale += 1;
        }
    }
    (stale, lost.len() as u64)
}

/// Waits until no push arrived for a while and every subscriber is up to date, or the
/// deadline passes.
async fn quiesce(tracker: &Tracker, pubs: &[Arc<Pub>], s: usize) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let idle = now_us().saturating_sub(tracker.last_push_us.load(Ordering::Relaxed));
        let in_flight = pubs.iter().any(|p| p.busy.load(Ordering::Acquire));
        if idle > 1_000_000 && !in_flight {
            let (stale, lost) = audit(tracker, pubs, s);
            if stale == 0 || Instant::now() > deadline {
                return (stale, lost);
            }
        }
        if Instant::now() > deadline {
            return audit(tracker, pubs, s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The data servers' total resident memory once it has settled: read from 2 s on (twice the
/// time after which the allocator returns unused pages), until unchanged within 1 % over
/// four readings 250 ms apart, or 6 s.
async fn settled_rss_kib(cluster: &ProcCluster) -> u64 {
    let read = || cluster.data_rss_kib();
    let deadline = Instant::now() + Duration::from_secs(6);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut last = read();
    let mut steady = 0;
    while steady < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = read();
        if now.abs_diff(last) * 100 <= last {
            steady += 1;
        } else {
            steady = 0;
        }
        last = now;
    }
    last
}

/// Republishes `rate` times a second for `secs`, calling `at(elapsed)` hooks on the way.
async fn churn(pubs: &[Arc<Pub>], rate: u64, dur: Duration, payload: usize) -> u64 {
    let total = (rate as f64 * dur.as_secs_f64()) as u64;
    let start = tokio::time::Instant::now();
    let mut sent = 0;
    for i in 0..total {
        let at = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(at).await;
        let pick = {
            let mut rng = rand::rng();
            (0..16)
                .map(|_| rng.random_range(0..pubs.len()))
                .find(|k| !pubs[*k].busy.swap(true, Ordering::AcqRel))
        };
        let Some(k) = pick else { continue };
        fire(&pubs[k], k, payload);
        sent += 1;
    }
    sent
}

/// Republishes publisher `k` (already marked busy) with its next sequence number.
fn fire(p: &Arc<Pub>, k: usize, payload: usize) {
    let p = p.clone();
    let seq = p.expected.load(Ordering::Acquire) + 1;
    let data = encode(k, seq, payload);
    p.expected.store(seq, Ordering::Release);
    tokio::spawn(async move {
        if let Err(e) = p.handle.republish(vec![data]).await {
            eprintln!("republish failed: {e}");
        }
        p.busy.store(false, Ordering::Release);
    });
}

/// One publisher in every slot (the first publisher of the first service hashing there),
/// so a probe reaches every data server's slots.
fn probes(services: usize, publishers: usize) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    (0..services)
        .filter(|d| {
            DataInfoId::new(&format!("bench.svc.{d}"), None, None)
                .is_ok_and(|id| seen.insert(slot_of(&id, DEFAULT_SLOT_COUNT)))
        })
        .map(|d| d * publishers)
        .collect()
}

fn progress(label: &str, msg: String) {
    eprintln!("[{label}] {msg}");
}

pub async fn run(args: Args) -> anyhow::Result<Report> {
    let params = Params::from_args(&args);
    let (d, p, s, c) = (
        params.services,
        params.publishers,
        params.subscribers,
        params.clients,
    );
    progress("setup", format!("{params:?}"));
    let cluster = if args.sessions.is_empty() {
        let bins = bin_dir(args.bin_dir.clone())?;
        progress(
            "setup",
            format!(
                "starting 3 meta, 3 data, 2 session processes from {}",
                bins.display()
            ),
        );
        Some(ProcCluster::start(&bins, args.copies, args.server_threads, args.secure).await?)
    } else {
        None
    };
    let sessions = match &cluster {
        Some(c) => c.session_addrs(),
        None => args.sessions.clone(),
    };
    let mut sampler = cluster
        .as_ref()
        .map(|c| Sampler::start(c.pids.clone(), Duration::from_secs(args.rss_every)));
    let rss_warmup = Duration::from_secs(args.rss_warmup);
    // Every 50 ms through registration, where memory peaks; then once at the start of churn,
    // once after it and once after the failover, none while latency is measured: a reading
    // walks every server's page tables, and at a million publishers reading once a second
    // put churn p99 at 3.9-4.7 ms against 3.4-3.5 ms without (BENCHMARKS.md). The RSS peaks
    // are the kernel's own and miss nothing.
    let pss = cluster
        .as_ref()
        .map(|c| PssPeak::start(c.pids.clone(), Duration::from_millis(50)));
    let data_rss_before: u64 = cluster.as_ref().map_or(0, ProcCluster::data_rss_kib);
    let session_rss_before: u64 = cluster.as_ref().map_or(0, ProcCluster::session_rss_kib);

    // Clients, round-robin over the sessions; each knows all of them for failover.
    let (credential, tls) = cluster
        .as_ref()
        .map(ProcCluster::client_credentials)
        .unwrap_or_default();
    let mut clients = Vec::with_capacity(c);
    for i in 0..c {
        let mut addrs = sessions.clone();
        let n = addrs.len().max(1);
        addrs.rotate_left(i % n);
        let mut cfg = ClientConfig::new(addrs);
        cfg.ordered = true;
        cfg.request_timeout = Duration::from_secs(60);
        cfg.credential = credential.clone();
        cfg.tls = tls.clone();
        clients.push(Client::connect(cfg).await.context("client connect")?);
    }
    progress("setup", format!("{c} clients connected"));

    // Phase 1: register.
    let tracker = Arc::new(Tracker::new(d * s, p)?);
    let total = (d * p + d * s) as u64;
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let ticker = {
        let (tracker, acked) = (tracker.clone(), acked.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                progress(
                    "register",
                    format!(
                        "{}/{} acknowledged, {}/{} subscribers converged",
                        acked.load(Ordering::Relaxed),
                        total,
                        tracker.converged.load(Ordering::Relaxed),
                        d * s
                    ),
                );
            }
        })
    };
    let per_client = |ci: usize| {
        let client = clients[ci].clone();
        let tracker = tracker.clone();
        let acked = acked.clone();
        let payload = params.payload;
        async move {
            let mut pubs: Vec<(usize, Arc<Pub>)> = Vec::new();
            let subs = (0..d * s)
                .filter(|j| (j + c / 2) % c == ci)
                .collect::<Vec<_>>();
            let mine = (0..d * p).filter(|k| k % c == ci).collect::<Vec<_>>();
            let sub_results: Vec<anyhow::Result<client_sdk::Subscriber>> = stream::iter(subs)
                .map(|j| {
                    let client = &client;
                    let tracker = tracker.clone();
                    let acked = acked.clone();
                    async move {
                        let svc = j / s;
                        let cb: Callback =
                            Arc::new(move |u: &DatumUpdate| tracker.on_push(j, svc, u));
                        let sub = client
                            .subscribe_with(
                                &format!("bench.svc.{svc}"),
                                RegistrationOptions::default(),
                                Some(cb),
                            )
                            .await?;
                        acked.fetch_add(1, Ordering::Relaxed);
                        Ok(sub)
                    }
                })
                .buffer_unordered(64)
                .collect()
                .await;
            let pub_results: Vec<anyhow::Result<(usize, Arc<Pub>)>> = stream::iter(mine)
                .map(|k| {
                    let client = &client;
                    let acked = acked.clone();
                    async move {
                        let handle = client
                            .publish(&format!("bench.svc.{}", k / p), vec![encode(k, 0, payload)])
                            .await?;
                        acked.fetch_add(1, Ordering::Relaxed);
                        Ok((
                            k,
                            Arc::new(Pub {
                                handle,
                                expected: AtomicU64::new(0),
                                busy: AtomicBool::new(false),
                            }),
                        ))
                    }
                })
                .buffer_unordered(64)
                .collect()
                .await;
            for r in pub_results {
                pubs.push(r?);
            }
            let subs = sub_results
                .into_iter()
                .collect::<anyhow::Result<Vec<_>>>()?;
            anyhow::Ok((pubs, subs))
        }
    };
    let results = futures::future::join_all((0..c).map(per_client)).await;
    let registered = started.elapsed();
    let mut all_pubs: Vec<Option<Arc<Pub>>> = (0..d * p).map(|_| None).collect();
    let mut _subs = Vec::new();
    for r in results {
        let (pubs, subs) = r?;
        for (k, pb) in pubs {
            all_pubs[k] = Some(pb);
        }
        _subs.extend(subs);
    }
    let pubs: Vec<Arc<Pub>> = all_pubs
        .into_iter()
        .map(|p| p.context("a publisher did not register"))
        .collect::<anyhow::Result<_>>()?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut diagnosed = false;
    while tracker.converged.load(Ordering::Relaxed) < (d * s) as u64 {
        if Instant::now() > deadline {
            anyhow::bail!("subscribers did not converge within 300 s");
        }
        if !diagnosed && started.elapsed() > Duration::from_secs(10) {
            diagnosed = true;
            for (j, sub) in tracker.subs.iter().enumerate() {
                let sub = sub.lock();
                if sub.converged_at.is_none() {
                    progress(
                        "register",
                        format!(
                            "not converged: subscriber {j} of bench.svc.{} holds {:?}",
                            j / s,
                            sub.last
                        ),
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let converged_at: Vec<Duration> = tracker
        .subs
        .iter()
        .filter_map(|s| s.lock().converged_at)
        .map(|t| t.duration_since(started))
        .collect();
    let convergence = converged_at.iter().max().copied().unwrap_or_default();
    let mut converged_by_second = vec![0u64; convergence.as_secs() as usize + 1];
    for t in &converged_at {
        converged_by_second[t.as_secs() as usize] += 1;
    }
    ticker.abort();
    let register = Register {
        registrations: total,
        seconds: registered.as_secs_f64(),
        per_second: total as f64 / registered.as_secs_f64(),
        full_convergence_ms: convergence.as_millis() as u64,
        converged_by_second,
    };
    progress(
        "register",
        format!(
            "{} registrations in {:.1} s ({:.0}/s), full convergence {} ms",
            register.registrations,
            register.seconds,
            register.per_second,
            register.full_convergence_ms
        ),
    );
    progress(
        "register",
        format!(
            "subscribers converged by second since the first registration: {}",
            register
                .converged_by_second
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    let data_rss_after: u64 = cluster.as_ref().map_or(0, ProcCluster::data_rss_kib);
    let session_rss_after: u64 = cluster.as_ref().map_or(0, ProcCluster::session_rss_kib);
    let data_rss_settled = match &cluster {
        Some(cl) => settled_rss_kib(cl).await,
        None => 0,
    };

    if let Some(pss) = &pss {
        pss.pause();
    }

    // Phase 2: churn.
    progress(
        "churn",
        format!(
            "{} republications/s for {} s",
            params.rate, params.churn_secs
        ),
    );
    let lag_before = match &cluster {
        Some(cl) => Some(cl.data_histogram(REPLICATION_LAG).await),
        None => None,
    };
    tracker.churn_start_us.store(now_us(), Ordering::Relaxed);
    tracker.phase.store(PHASE_CHURN, Ordering::Relaxed);
    let pushes_before = tracker.pushes.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let sent = churn(&pubs, params.rate, params.churn(), params.payload).await;
    let churn_secs = t0.elapsed().as_secs_f64();
    let pushes = tracker.pushes.load(Ordering::Relaxed) - pushes_before;
    let (stale, _) = quiesce(&tracker, &pubs, s).await;
    tracker.phase.store(PHASE_NONE, Ordering::Relaxed);
    let replication_lag = match (&cluster, &lag_before) {
        (Some(cl), Some(before)) => ReplicationLag::of(&sub_buckets(
            &cl.data_histogram(REPLICATION_LAG).await,
            before,
        )),
        _ => None,
    };
    let mut passes = None;
    if let Some(cl) = &cluster {
        let counters = cl.counters().await;
        for (name, c) in &counters {
            progress("churn", format!("{name}: {c:?}"));
        }
        passes = Passes::of(&counters);
    }
    let churn_report = Churn {
        republishes: sent,
        seconds: churn_secs,
        latency: Latency::of(&tracker.churn.lock()),
        by_second: tracker
            .churn_by_second
            .lock()
            .iter()
            .map(Latency::of)
            .collect(),
        pushes_per_second: pushes as f64 / churn_secs,
        stale_subscribers: stale,
        replication_lag,
    };
    progress(
        "churn",
        format!(
            "p50 {} us, p99 {} us, p999 {} us; {:.0} pushes/s, {} stale",
            churn_report.latency.p50_us,
            churn_report.latency.p99_us,
            churn_report.latency.p999_us,
            churn_report.pushes_per_second,
            churn_report.stale_subscribers
        ),
    );
    let series = |f: fn(&Latency) -> u64| {
        churn_report
            .by_second
            .iter()
            .map(|l| format!("{:.1}", f(l) as f64 / 1000.0))
            .collect::<Vec<_>>()
            .join(" ")
    };
    progress(
        "churn",
        format!("p99 by second sent, ms: {}", series(|l| l.p99_us)),
    );
    progress(
        "churn",
        format!("max by second sent, ms: {}", series(|l| l.max_us)),
    );

    // Footprint before anything is killed.
    let mut footprint = cluster.as_ref().map(|cl| {
        let pss = pss.as_ref().map(PssPeak::peaks).unwrap_or_default();
        let processes: Vec<ProcMemory> = cl
            .procs()
            .filter_map(|pr| {
                let (_, peak) = pr.pid().and_then(rss_kib)?;
                Some(ProcMemory {
                    name: pr.name.clone(),
                    role: pr.role.into(),
                    peak_rss_kib: peak,
                    peak_pss_kib: pss.of(&pr.name).unwrap_or(0),
                })
            })
            .collect();
        let total_peak_rss_mib =
            processes.iter().map(|p| p.peak_rss_kib).sum::<u64>() as f64 / 1024.0;
        let growth = data_rss_after.saturating_sub(data_rss_before) as f64 * 1024.0;
        let per_publisher = growth / (d * p) as f64;
        let copies = args.copies.max(1) as f64;
        let settled = data_rss_settled.saturating_sub(data_rss_before) as f64 * 1024.0;
        Footprint {
            processes,
            total_peak_rss_mib,
            total_peak_pss_mib: pss.total_kib as f64 / 1024.0,
            data_bytes_per_publisher: per_publisher,
            data_bytes_per_copy_beyond_payload: per_publisher / copies - params.payload as f64,
            data_bytes_per_copy_settled: settled / (d * p) as f64 / copies - params.payload as f64,
            session_bytes_per_registration: session_rss_after.saturating_sub(session_rss_before)
                as f64
                * 1024.0
                / (d * (p + s)) as f64,
        }
    });

    // Phase 3: failover.
    let mut failover = None;
    // Without failover the run ends here; read memory while every server still runs.
    let mut rss = None;
    if args.no_failover {
        rss = sampler.take().map(|s| s.finish(rss_warmup));
    }
    if let (Some(mut cl), false) = (cluster, args.no_failover) {
        progress(
            "failover",
            format!(
                "churn for {} s; SIGKILL of a data server 2 s in",
                params.failover_secs
            ),
        );
        tracker.phase.store(PHASE_FAILOVER, Ordering::Relaxed);
        let pubs_for_churn = pubs.clone();
        let (rate, payload, secs) = (params.rate, params.payload, params.failover_secs);
        let churning = tokio::spawn(async move {
            churn(&pubs_for_churn, rate, Duration::from_secs(secs), payload).await
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let victim = cl.datas[0].name.clone();
        let killed_at = Instant::now();
        cl.datas[0].kill();
        // Probe every slot right after the kill: the probes to the dead server's slots can
        // only arrive once its slots have moved, so they time the recovery.
        for k in probes(d, p) {
            if !pubs[k].busy.swap(true, Ordering::AcqRel) {
                fire(&pubs[k], k, params.payload);
            }
        }
        let snapshot: Vec<u64> = pubs
            .iter()
            .map(|p| p.expected.load(Ordering::Acquire))
            .collect();
        // Converged: every subscriber holds, per publisher, at least the data sent up to and
        // including the probes.
        let deadline = killed_at + Duration::from_secs(120);
        let converged = loop {
            let done = tracker.subs.iter().enumerate().all(|(j, sub)| {
                let svc = j / s;
                let sub = sub.lock();
                (0..p).all(|q| sub.last[q] != u64::MAX && sub.last[q] >= snapshot[svc * p + q])
            });
            if done {
                break killed_at.elapsed();
            }
            if Instant::now() > deadline {
                break Duration::from_secs(120);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        progress(
            "failover",
            format!("converged {} ms after the kill", converged.as_millis()),
        );
        churning.await.context("failover churn")?;
        let (stale, lost) = quiesce(&tracker, &pubs, s).await;
        tracker.phase.store(PHASE_NONE, Ordering::Relaxed);
        failover = Some(Failover {
            killed: victim,
            convergence_ms: converged.as_millis() as u64,
            publishers_lost: lost,
            stale_subscribers: stale,
            latency: Latency::of(&tracker.failover.lock()),
        });
        // Peaks of the survivors may have grown during failover.
        if let Some(f) = footprint.as_mut() {
            for proc in cl.procs() {
                if let Some((_, peak)) = proc.pid().and_then(rss_kib) {
                    if let Some(m) = f.processes.iter_mut().find(|m| m.name == proc.name) {
                        m.peak_rss_kib = m.peak_rss_kib.max(peak);
                    }
                }
            }
            f.total_peak_rss_mib =
                f.processes.iter().map(|p| p.peak_rss_kib).sum::<u64>() as f64 / 1024.0;
            if let Some(pss) = pss.as_ref().map(PssPeak::peaks) {
                for m in &mut f.processes {
                    m.peak_pss_kib = pss.of(&m.name).unwrap_or(m.peak_pss_kib);
                }
                f.total_peak_pss_mib = pss.total_kib as f64 / 1024.0;
            }
        }
        rss = sampler.take().map(|s| s.finish(rss_warmup));
    } else if args.sessions.is_empty() {
        progress("failover", "skipped (--no-failover)".into());
    } else {
        progress(
            "failover",
            "skipped: the cluster was not started by this tool".into(),
        );
    }

    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    Ok(Report {
        params,
        commit,
        register,
        churn: churn_report,
        failover,
        footprint,
        passes,
        rss,
    })
}
