//! `decoder-fuzz`: structure-aware random inputs for every decoder of the registry (client
//! frames, every inter-server request and response body, Raft log entries, votes and
//! snapshots); a million per decoder by default. Exits non-zero if any decoder panicked.

use clap::Parser;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(about = "Random inputs for every decoder; zero panics expected")]
struct Args {
    /// Inputs per decoder.
    #[arg(long, default_value_t = 1_000_000)]
    inputs: u64,
    /// First seed (inputs use seeds seed..seed+inputs, so a run replays).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Only decoders whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// JSON report.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // A panic is counted, not printed a million times.
    std::panic::set_hook(Box::new(|_| {}));
    let decoders = integration::fuzz::decoders();
    let chosen: Vec<_> = decoders
        .iter()
        .filter(|d| args.only.as_deref().is_none_or(|o| d.name.contains(o)))
        .collect();
    let mut tallies = Vec::new();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One decoder per thread at a time.
    for group in chosen.chunks(threads) {
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|d| s.spawn(|| integration::fuzz::run(d, args.seed, args.inputs)))
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for t in results {
            println!(
                "{:<36} {:>9} inputs {:>9} accepted {:>9} refused {:>3} panics",
                t.name, t.inputs, t.accepted, t.refused, t.panics
            );
            tallies.push(t);
        }
    }
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_vec_pretty(&tallies)?)?;
    }
    let panics: u64 = tallies.iter().map(|t| t.panics).sum();
    if panics > 0 {
        for t in tallies.iter().filter(|t| t.panics > 0) {
            eprintln!("{} panicked on: {:?}", t.name, t.first_panic);
        }
        anyhow::bail!("{panics} inputs panicked a decoder");
    }
    Ok(())
}
