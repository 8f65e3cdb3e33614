//! `registry-bench`: runs the standard workload (W1, or W1-small for CI) against a cluster of
//! separate processes it starts from the release binaries, prints a Markdown table, writes a
//! JSON report with `--out`, and exits non-zero if a publisher was lost or a subscriber stayed
//! stale.
//!
//! `cargo build --release --bins && target/release/registry-bench --workload w1 --out w1.json`

use clap::Parser;
use integration::bench::params::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
