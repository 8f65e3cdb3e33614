//! `session-failover-probe`: how long a session server's clients take to come back after it
//! dies.
//!
//! Starts the process cluster of `registry-bench` (3 meta, 3 data, 2 session servers from the
//! release binaries), connects `--clients` SDK clients that list both sessions in order (so
//! all of them land on session 1), each registering `--publishers-per-client` publishers,
//! then sends SIGKILL to session 1 and measures, from the signal:
//!
//! - **clients**: until every client's connection state is `Connected` to session 2 (it has
//!   reconnected and re-sent every registration);
//! - **publishers**: until session 2's `GET /admin/v1/status` reports every publisher;
//! - **failover** (the figure): the later of the two;
//! - **watcher**: a subscriber on session 2 to every service is checked for `--watch-secs`
//!   after the kill (long enough for the data servers' cleanup of the dead session): the
//!   fewest publishers it held, and when it last held fewer than all (fewer than all means
//!   subscribers elsewhere saw publishers vanish).
//!
//! Each run starts a fresh cluster; the median over `--runs` is printed with every run.
//!
//! `cargo build --release --bins && target/release/session-failover-probe --runs 5 --clients 100`

/// jemalloc: far fewer cycles in malloc/free than the system allocator on this workload of
/// many small short-lived buffers (JSON frames), with less fragmentation.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use client_sdk::{Callback, Client, ClientConfig, ConnectionState, DatumUpdate};
use futures::stream::{self, StreamExt};
use integration::bench::launch::{bin_dir, ProcCluster};
use parking_lot::Mutex;
use registry_rpc::HttpClient;

#[derive(Parser)]
#[command(
    name = "session-failover-probe",
    about = "Times the recovery of a session server's clients after kill -9"
)]
struct Args {
    /// Runs, each on a fresh cluster.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// SDK clients on the session that is killed.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Publishers each client registers.
    #[arg(long, default_value_t = 1)]
    publishers_per_client: usize,
    /// Services the publishers are spread over.
    #[arg(long, default_value_t = 10)]
    services: usize,
    /// Clients' first reconnection delay, ms (the SDK's default is 50).
    #[arg(long, default_value_t = 50)]
    reconnect_min_ms: u64,
    /// Clients' largest reconnection delay, ms (the SDK's default is 2,000).
    #[arg(long, default_value_t = 2_000)]
    reconnect_max_ms: u64,
    /// Directory of the server binaries (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<std::path::PathBuf>,
    /// Copies of every datum.
    #[arg(long, default_value_t = 2)]
    copies: usize,
    /// Runtime worker threads of each started server (0: one per core).
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Seconds after the kill the watcher is checked for.
    #[arg(long, default_value_t = 8)]
    watch_secs: u64,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
}

/// What one run measured, in milliseconds from the SIGKILL.
#[derive(Debug, Clone, serde::Serialize)]
struct RunResult {
    clients_ms: f64,
    publishers_ms: f64,
    failover_ms: f64,
    /// Last instant the watcher held fewer than every publisher (`None`: never).
    watcher_short_until_ms: Option<f64>,
    watcher_min_seen: usize,
    expected_publishers: usize,
}

fn service(i: usize) -> String {
    format!("probe.session.svc.{i}")
}

async fn session_publishers(http: &HttpClient, addr: &str) -> anyhow::Result<i64> {
    let status: serde_json::Value = http
        .get(addr, "/admin/v1/status", Duration::from_secs(2))
        .await?;
    status["publishers"]
        .as_i64()
        .context("status has no publishers count")
}

async fn one_run(args: &Args, bins: &std::path::Path) -> anyhow::Result<RunResult> {
    let mut cluster = ProcCluster::start(bins, args.copies, args.server_threads, false).await?;
    let sessions = cluster.session_addrs();
    let (first, second) = (sessions[0].clone(), sessions[1].clone());
    let http = HttpClient::new(Duration::from_secs(2));

    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let mut cfg = ClientConfig::new([first.clone(), second.clone()]);
        cfg.ordered = true;
        cfg.reconnect_min = Duration::from_millis(args.reconnect_min_ms);
        cfg.reconnect_max = Duration::from_millis(args.reconnect_max_ms);
        clients.push(Client::connect(cfg).await.context("client connect")?);
    }
    let expected = args.clients * args.publishers_per_client;
    let services = args.services.max(1);
    let jobs = (0..args.clients).flat_map(|c| (0..args.publishers_per_client).map(move |p| (c, p)));
    let published: Vec<_> = stream::iter(jobs)
        .map(|(c, p)| {
            let client = &clients[c];
            let k = c * args.publishers_per_client + p;
            async move {
                client
                    .publish(&service(k % services), vec![format!("pub-{k}")])
                    .await
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let _publishers = published.into_iter().collect::<Result<Vec<_>, _>>()?;

    // A watcher on session 2: latest data per service.
    let mut wcfg = ClientConfig::new([second.clone()]);
    wcfg.ordered = true;
    let watcher = Client::connect(wcfg).await.context("watcher connect")?;
    let seen: Arc<Mutex<Vec<HashSet<String>>>> =
        Arc::new(Mutex::new(vec![HashSet::new(); services]));
    let mut subs = Vec::new();
    for i in 0..services {
        let seen = seen.clone();
        let cb: Callback = Arc::new(move |u: &DatumUpdate| {
            seen.lock()[i] = u.data.iter().cloned().collect();
        });
        subs.push(
            watcher
                .subscribe_with(&service(i), Default::default(), Some(cb))
                .await?,
        );
    }
    let total_seen = || seen.lock().iter().map(HashSet::len).sum::<usize>();
    let ready_by = Instant::now() + Duration::from_secs(30);
    while total_seen() < expected || session_publishers(&http, &first).await? < expected as i64 {
        if Instant::now() > ready_by {
            bail!(
                "not ready: watcher sees {} of {expected} publishers",
                total_seen()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if session_publishers(&http, &second).await? != 0 {
        bail!("session 2 holds publishers before the kill");
    }
    // Let the registration traffic settle before the kill.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let killed_at = Instant::now();
    cluster.sessions[0].kill();
    let deadline = killed_at + Duration::from_secs(args.timeout_secs);
    let target = ConnectionState::Connected {
        session: second.clone(),
    };
    let mut clients_done: Option<Duration> = None;
    let mut pubs_done: Option<Duration> = None;
    let mut watcher_short: Option<Duration> = None;
    let watch_for = Duration::from_secs(args.watch_secs);
    let mut watcher_min = usize::MAX;
    let mut last_status = Instant::now() - Duration::from_secs(1);
    loop {
        let now = Instant::now();
        let n = total_seen();
        watcher_min = watcher_min.min(n);
        if n < expected {
            watcher_short = Some(killed_at.elapsed());
        }
        if clients_done.is_none()
            && clients
                .iter()
                .all(|c| *c.connection_state().borrow() == target)
        {
            clients_done = Some(killed_at.elapsed());
        }
        if pubs_done.is_none() && now.duration_since(last_status) >= Duration::from_millis(5) {
            last_status = now;
            if let Ok(held) = session_publishers(&http, &second).await {
                if held >= expected as i64 {
                    pubs_done = Some(killed_at.elapsed());
                }
            }
        }
        if clients_done.is_some() && pubs_done.is_some() && killed_at.elapsed() > watch_for {
            break;
        }
        if now > deadline {
            if clients_done.is_none() || pubs_done.is_none() {
                let moved = clients
                    .iter()
                    .filter(|c| *c.connection_state().borrow() == target)
                    .count();
                bail!(
                    "not recovered within {} s: {moved}/{} clients on session 2, publishers done: {:?}",
                    args.timeout_secs,
                    clients.len(),
                    pubs_done
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let clients_ms = ms(clients_done.unwrap_or_default());
    let publishers_ms = ms(pubs_done.unwrap_or_default());
    drop(subs);
    watcher.close().await;
    for c in clients {
        c.close().await;
    }
    Ok(RunResult {
        clients_ms,
        publishers_ms,
        failover_ms: clients_ms.max(publishers_ms),
        watcher_short_until_ms: watcher_short.map(ms),
        watcher_min_seen: watcher_min,
        expected_publishers: expected,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = bin_dir(args.bin_dir.clone())?;
    let mut results = Vec::new();
    for run in 1..=args.runs {
        let r = one_run(&args, &bins)
            .await
            .with_context(|| format!("run {run}"))?;
        eprintln!("run {run}: {r:?}");
        results.push(r);
    }
    println!(
        "### session-failover-probe ({} clients x {} publishers on session 1, kill -9)\n",
        args.clients, args.publishers_per_client
    );
    println!("| run | clients on session 2 | publishers on session 2 | failover | watcher short until | watcher min seen |");
    println!("|---|---|---|---|---|---|");
    for (i, r) in results.iter().enumerate() {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {}/{} |",
            i + 1,
            r.clients_ms,
            r.publishers_ms,
            r.failover_ms,
            r.watcher_short_until_ms
                .map_or("never short".into(), |v| format!("{v:.1} ms")),
            r.watcher_min_seen,
            r.expected_publishers
        );
    }
    println!(
        "| median | {:.1} ms | {:.1} ms | {:.1} ms | | |",
        median(results.iter().map(|r| r.clients_ms).collect()),
        median(results.iter().map(|r| r.publishers_ms).collect()),
        median(results.iter().map(|r| r.failover_ms).collect()),
    );
    Ok(())
}
