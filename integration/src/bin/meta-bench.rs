//! `meta-bench`: measures a three-voter meta cluster on this machine, in one process (each
//! node on its own single-worker Tokio runtime, real HTTP on 127.0.0.1, real disk).
//!
//! - Leader failover: crash the leader (every task and socket dropped at once) and time until
//!   the first write is committed through the surviving nodes, as a client following the
//!   leader sees it; a fresh cluster per trial; the median is reported.
//! - Membership-change commit latency: registrations and deregistrations of data servers, one
//!   after the other, each timed from request to the leader's answer (committed by a quorum
//!   and applied, epoch bumped, slot table recomputed).
//! - Renewals one meta node sustains: registered members renewed as fast as concurrent
//!   clients can, at the leader directly, for a fixed time.
//!
//! Raft timings default to the production defaults (`MetaConfig::default()`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use integration::cluster::{Cluster, ClusterConfig};
use meta_server::MetaConfig;
use registry_common::member::{Member, MemberId, Role};
use registry_common::proto::meta::{MemberRequest, RenewResponse};
use registry_rpc::meta_client::MetaClient;
use registry_rpc::HttpClient;

#[derive(Parser)]
#[command(name = "meta-bench", about = "Measure a three-voter meta cluster")]
struct Args {
    /// Failover trials (a fresh cluster each).
    #[arg(long, default_value_t = 5)]
    failover_trials: usize,
    /// Membership changes to time.
    #[arg(long, default_value_t = 1_000)]
    changes: usize,
    /// Data servers registered before the membership changes (the slot table spans them).
    #[arg(long, default_value_t = 8)]
    base_servers: usize,
    /// Members renewing in the renewal run.
    #[arg(long, default_value_t = 1_000)]
    members: usize,
    /// Concurrent renewal clients.
    #[arg(long, default_value_t = 64)]
    renewers: usize,
    /// Length of the renewal run, in seconds.
    #[arg(long, default_value_t = 5)]
    renew_secs: u64,
    /// Raft heartbeat interval, in ms (default: the production default).
    #[arg(long)]
    raft_heartbeat_ms: Option<u64>,
    /// Raft election timeout lower bound, in ms (default: the production default).
    #[arg(long)]
    raft_election_ms: Option<u64>,
}

impl Args {
    fn meta_config(&self) -> MetaConfig {
        let defaults = MetaConfig::default();
        let mut meta = ClusterConfig::new(3, 0, 0).meta;
        meta.raft_heartbeat_ms = self.raft_heartbeat_ms.unwrap_or(defaults.raft_heartbeat_ms);
        meta.raft_election_ms = self.raft_election_ms.unwrap_or(defaults.raft_election_ms);
        // The benchmark's members do not renew (except in the renewal run): no expiry.
        meta.lease_ms = 3_600_000;
        meta.renew_interval_ms = defaults.renew_interval_ms;
        meta
    }
}

fn data_member(name: &str) -> Member {
    Member {
        id: MemberId(format!("data-{name}").into()),
        role: Role::Data,
        addr: format!("{name}.bench.invalid:9620"),
        zone: String::new(),
        registered_at_ms: 0,
    }
}

fn session_member(n: usize) -> Member {
    Member {
        id: MemberId(format!("session-bench-{n}").into()),
        role: Role::Session,
        addr: format!("s{n}.bench.invalid:9600"),
        zone: String::new(),
        registered_at_ms: 0,
    }
}

async fn start(args: &Args) -> anyhow::Result<(Cluster, MetaClient)> {
    let mut config = ClusterConfig::new(3, 0, 0);
    config.meta = args.meta_config();
    let cluster = Cluster::start(config).await?;
    let meta = MetaClient::new(
        HttpClient::new(Duration::from_secs(5)),
        cluster.meta_addrs(),
    );
    // Warm up: the client knows the leader, every node has applied something. (A leader
    // refuses writes until a quorum has acknowledged it.)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match meta.register(&session_member(usize::MAX)).await {
            Ok(_) => return Ok((cluster, meta)),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("no registration 10 s after start")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

fn serving_leader(cluster: &Cluster) -> Option<usize> {
    cluster
        .metas
        .iter()
        .position(|m| m.is_running() && m.server().raft().serving_term().is_some())
}

/// Kill the leader, time until the first committed write.
async fn failover(args: &Args, trial: usize) -> anyhow::Result<Duration> {
    let (mut cluster, meta) = start(args).await?;
    // Let every node follow the leader.
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader = loop {
        if let Some(l) = serving_leader(&cluster) {
            break l;
        }
        if Instant::now() > deadline {
            bail!("no leader");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    cluster.metas[leader].kill();
    let mut n = 0usize;
    loop {
        let member = session_member(trial * 1_000_000 + n);
        n += 1;
        if meta.register(&member).await.is_ok() {
            return Ok(killed.elapsed());
        }
        if killed.elapsed() > Duration::from_secs(30) {
            bail!("no write committed 30 s after the leader was killed");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Registrations and deregistrations of data servers, one at a time.
async fn membership_changes(args: &Args) -> anyhow::Result<Vec<Duration>> {
    let (_cluster, meta) = start(args).await?;
    for i in 0..args.base_servers {
        meta.register(&data_member(&format!("base-{i}"))).await?;
    }
    let mut out = Vec::with_capacity(args.changes);
    let mut current: Option<Member> = None;
    for i in 0..args.changes {
        let started = Instant::now();
        match current.take() {
            None => {
                let m = data_member(&format!("churn-{i}"));
                meta.register(&m).await?;
                current = Some(m);
            }
            Some(m) => {
                meta.deregister(&m.id).await?;
            }
        }
        out.push(started.elapsed());
    }
    Ok(out)
}

/// Renewals at the leader by concurrent clients for a fixed time; returns (ok, failed, time).
async fn renewals(args: &Args) -> anyhow::Result<(u64, u64, Duration)> {
    let (cluster, meta) = start(args).await?;
    let all: Vec<usize> = (0..args.members).collect();
    for chunk in all.chunks(50) {
        let regs = chunk.iter().map(|n| {
            let member = session_member(*n);
            let meta = &meta;
            async move { meta.register(&member).await }
        });
        for r in futures::future::join_all(regs).await {
            r?;
        }
    }
    let leader = serving_leader(&cluster).context("no leader")?;
    let addr = cluster.metas[leader].addr.to_string();
    let http = HttpClient::new(Duration::from_secs(5));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let ids: Arc<Vec<MemberId>> =
        Arc::new((0..args.members).map(|n| session_member(n).id).collect());
    let run = Duration::from_secs(args.renew_secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.renewers {
        let (http, addr, ok, failed, ids) = (
            http.clone(),
            addr.clone(),
            ok.clone(),
            failed.clone(),
            ids.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut k = w;
            while started.elapsed() < run {
                let req = MemberRequest {
                    id: ids[k % ids.len()].clone(),
                };
                match http
                    .post::<_, RenewResponse>(&addr, "/meta/v1/renew", &req)
                    .await
                {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                k += args_stride(ids.len());
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let took = started.elapsed();
    // Nobody expired: every member is still there.
    let members = cluster.view().members.len();
    if members < args.members {
        bail!("members were lost during the renewal run: {members}");
    }
    Ok((
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        took,
    ))
}

/// Step between the members one client renews (co-prime with most counts, spreads clients).
fn args_stride(n: usize) -> usize {
    if n.is_multiple_of(7) {
        1
    } else {
        7
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    integration::init_test_logging();
    let args = Args::parse();
    let cfg = args.meta_config().raft_settings();
    println!(
        "meta-bench: 3 voters in one process (one single-worker runtime each), HTTP on 127.0.0.1, \
         redb on {}; raft heartbeat {} ms, election timeout {}..{} ms; {} CPUs",
        std::env::temp_dir().display(),
        cfg.heartbeat_ms,
        cfg.election_timeout_min_ms,
        cfg.election_timeout_max_ms,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    );

    if args.failover_trials > 0 {
        let mut times = Vec::new();
        for trial in 0..args.failover_trials {
            let t = failover(&args, trial).await?;
            println!("  failover trial {}: {}", trial + 1, ms(t));
            times.push(t);
        }
        times.sort();
        println!(
            "leader failover (kill -> first committed write), {} trials: median {}, min {}, max {}",
            times.len(),
            ms(percentile(&times, 50.0)),
            ms(times[0]),
            ms(times[times.len() - 1]),
        );
    }

    if args.changes > 0 {
        let mut lat = membership_changes(&args).await?;
        lat.sort();
        let total: Duration = lat.iter().sum();
        println!(
            "membership-change commit latency, {} changes (register/deregister a data server, \
             {} others in the table): p50 {}, p99 {}, max {}, mean {}",
            lat.len(),
            args.base_servers,
            ms(percentile(&lat, 50.0)),
            ms(percentile(&lat, 99.0)),
            ms(lat[lat.len() - 1]),
            ms(total / lat.len() as u32),
        );
    }

    if args.renew_secs > 0 {
        let (ok, failed, took) = renewals(&args).await?;
        println!(
            "renewals sustained by the leader: {:.0}/s ({ok} in {:.1} s, {failed} failed; {} members, \
             {} concurrent clients in the same process)",
            ok as f64 / took.as_secs_f64(),
            took.as_secs_f64(),
            args.members,
            args.renewers,
        );
    }
    Ok(())
}
