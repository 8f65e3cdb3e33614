//! `decoder-fuzz`: structure-aware random inputs for every decoder of the registry (client
//! frames, every inter-server request and response body, Raft log entries, votes and
//! snapshots); a million per decoder by default. Exits non-zero if any decoder panicked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::Parser;
use integration::fuzz::Tally;

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
    /// Worker threads, each taking the next decoder not yet run (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// JSON report.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    inputs_per_decoder: u64,
    seed: u64,
    threads: usize,
    seconds: f64,
    decoders: &'a [Tally],
}

fn print(t: &Tally) {
    println!(
        "{:<36} {:>9} inputs {:>9} accepted {:>9} refused {:>3} panics {:>8.1} s {:>8.0}/s {:>7.0} B avg",
        t.name,
        t.inputs,
        t.accepted,
        t.refused,
        t.panics,
        t.seconds,
        t.inputs_per_second(),
        t.input_bytes as f64 / t.inputs.max(1) as f64
    );
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
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let started = Instant::now();
    // Each thread takes the next decoder when done with one, so a slow decoder holds up no
    // other.
    let next = AtomicUsize::new(0);
    let (chosen, next, args) = (&chosen, &next, &args);
    let mut tallies: Vec<Tally> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.min(chosen.len()))
            .map(|_| {
                s.spawn(move || {
                    let mut mine = Vec::new();
                    while let Some(d) = chosen.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let t = integration::fuzz::run(d, args.seed, args.inputs);
                        print(&t);
                        mine.push(t);
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .flatten()
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    tallies.sort_by_key(|t| {
        chosen
            .iter()
            .position(|d| d.name == t.name)
            .unwrap_or(usize::MAX)
    });
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    let (inputs, panics) = (sum(|t| t.inputs), sum(|t| t.panics));
    println!(
        "{} decoders, {inputs} inputs ({} accepted, {} refused, {panics} panics) in {seconds:.1} s on {threads} threads: {:.0} inputs/s",
        tallies.len(),
        sum(|t| t.accepted),
        sum(|t| t.refused),
        inputs as f64 / seconds.max(1e-9)
    );
    if tallies.len() < chosen.len() {
        anyhow::bail!("{} decoders did not finish", chosen.len() - tallies.len());
    }
    if let Some(out) = &args.out {
        let report = Report {
            inputs_per_decoder: args.inputs,
            seed: args.seed,
            threads,
            seconds,
            decoders: &tallies,
        };
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)?;
    }
    if panics > 0 {
        for t in tallies.iter().filter(|t| t.panics > 0) {
            eprintln!("{} panicked on: {:?}", t.name, t.first_panic);
        }
        anyhow::bail!("{panics} inputs panicked a decoder");
    }
    Ok(())
}
