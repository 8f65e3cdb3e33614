//! `registry-bench`: runs the standard workload (W1, or W1-small for CI) against a cluster of
//! separate processes it starts from the release binaries, prints a Markdown table, writes a
//! JSON report with `--out`, and exits non-zero if a publisher was lost or a subscriber stayed
//! stale.
//!
//! `cargo build --release --bins && target/release/registry-bench --workload w1 --out w1.json`

/// jemalloc: far fewer cycles in malloc/free than the system allocator on this workload of
/// many small short-lived buffers (JSON frames), with less fragmentation.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Return freed memory to the system within a second instead of ten, from a background
/// thread, so resident memory follows the load down.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";

use clap::Parser;
use integration::bench::params::Args;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    registry_rpc::runtime::block_on(Some(args.driver_threads), run(args))?
}

async fn run(args: Args) -> anyhow::Result<()> {
    let out = args.out.clone();
    let report = integration::bench::run::run(args).await?;
    println!("{}", report.markdown());
    if let Some(path) = out {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
        eprintln!("report written to {}", path.display());
    }
    if !report.correct() {
        eprintln!("FAILED: publishers lost or subscribers stale");
        std::process::exit(1);
    }
    Ok(())
}
