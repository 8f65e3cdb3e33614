//! `registry-chaos`: starts a cluster of separate processes (3 meta, 4 data with 2 copies, 3
//! sessions by default) from the release binaries next to it, drives publishers and
//! subscribers through the SDK, injects faults from a seeded schedule (kill -9 and restart,
//! SIGSTOP/SIGCONT, partitions, a wall clock behind), and checks after every fault that every
//! subscriber sees every live publisher and no dead one. Exits non-zero on any loss, ghost,
//! regression, gap or missed convergence.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use integration::chaos::load::LoadShape;
use integration::chaos::procs::Shape;
use integration::chaos::run::{markdown, run, write_history, ChaosArgs};
use integration::chaos::schedule::FaultKind;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(about = "Fault runner with an independent checker")]
struct Args {
    /// Seed of the fault schedule (and of the load's choices).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Rounds of faults.
    #[arg(long, default_value_t = 20)]
    faults: usize,
    /// Stop starting new rounds after this many seconds.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// JSON report.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Every acknowledged operation, push and fault, one JSON object per line (default: next
    /// to --out, with `.history.jsonl`).
    #[arg(long)]
    history: Option<PathBuf>,
    /// Fault kinds to draw from (kill, freeze, cut-from-meta, isolate, clock-behind); all by
    /// default.
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
    #[arg(long, default_value_t = 4)]
    datas: usize,
    #[arg(long, default_value_t = 3)]
    sessions: usize,
    #[arg(long, default_value_t = 6)]
    services: usize,
    #[arg(long, default_value_t = 10)]
    pub_clients: usize,
    #[arg(long, default_value_t = 3)]
    pubs_per_client: usize,
    #[arg(long, default_value_t = 4)]
    sub_clients: usize,
    /// Client operations per second.
    #[arg(long, default_value_t = 8.0)]
    rate: f64,
    /// Seconds the views may take to converge after a fault is healed.
    #[arg(long, default_value_t = 40)]
    settle: u64,
    /// Where the server binaries are (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the servers' logs here (level from CHAOS_SERVER_LOG, default warn).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Read every server's resident memory every this many seconds, for the whole run (the
    /// report's `rss`; a restarted server is followed under its new pid).
    #[arg(long, default_value_t = 10)]
    rss_every: u64,
    /// Seconds of warm-up the memory summary leaves out (at most half the run).
    #[arg(long, default_value_t = 300)]
    rss_warmup: u64,
    /// Run only round N (counted from 0) of the seed's schedule, `--faults` times over: a
    /// failure's replay under fresh load.
    #[arg(long)]
    replay_round: Option<usize>,
}

fn kind(s: &str) -> anyhow::Result<FaultKind> {
    Ok(match s {
        "kill" => FaultKind::Kill,
        "freeze" => FaultKind::Freeze,
        "cut-from-meta" => FaultKind::CutFromMeta,
        "isolate" => FaultKind::Isolate,
        "clock-behind" => FaultKind::ClockBehind,
        other => anyhow::bail!("unknown fault kind {other:?}"),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    registry_rpc::runtime::block_on(Some(0), main_async(args))?
}

async fn main_async(args: Args) -> anyhow::Result<()> {
    let kinds = args
        .kinds
        .iter()
        .map(|s| kind(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let chaos = ChaosArgs {
        seed: args.seed,
        faults: args.faults,
        duration: Duration::from_secs(args.duration),
        kinds,
        shape: Shape {
            metas: 3,
            datas: args.datas.max(2),
            sessions: args.sessions.max(2),
            copies: 2,
        },
        load: LoadShape {
            services: args.services.max(1),
            pub_clients: args.pub_clients.max(1),
            pubs_per_client: args.pubs_per_client.max(1),
            sub_clients: args.sub_clients.max(2),
            rate: args.rate,
        },
        bins: integration::bench::launch::bin_dir(args.bin_dir.clone())?,
        logs: args.log_dir.clone(),
        settle: Duration::from_secs(args.settle),
        rss_every: Duration::from_secs(args.rss_every),
        rss_warmup: Duration::from_secs(args.rss_warmup),
        replay_round: args.replay_round,
    };
    // On SIGINT or SIGTERM the run is dropped: servers killed, partition rules removed.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (report, history) = tokio::select! {
        r = run(chaos) => r?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
    };
    println!("{}", markdown(&report));
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)?;
        eprintln!("report written to {}", out.display());
    }
    let history_path = args
        .history
        .clone()
        .or_else(|| args.out.as_ref().map(|o| o.with_extension("history.jsonl")));
    if let Some(h) = history_path {
        write_history(&history, &h)?;
        eprintln!("history written to {}", h.display());
    }
    if !report.counts.clean() {
        eprintln!("FAILED: {:?}", report.counts);
        std::process::exit(1);
    }
    Ok(())
}
