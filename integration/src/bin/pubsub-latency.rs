//! `pubsub-latency`: publish-to-push latency of sequential republishes against a running
//! registry. One client subscribes, another republishes `--count` times, each time waiting
//! for the push that carries the new data before the next republish.
//!
//! `cargo run --release -p integration --bin pubsub-latency -- --session 127.0.0.1:9600`

/// jemalloc: far fewer cycles in malloc/free than the system allocator on this workload of
/// many small short-lived buffers (JSON frames), with less fragmentation.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Return freed memory to the system within a second instead of ten, from a background
/// thread, so resident memory follows the load down.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";

use std::time::{Duration, Instant};

use clap::Parser;
use client_sdk::{Client, ClientConfig};
use hdrhistogram::Histogram;

#[derive(Parser)]
struct Args {
    /// Session server address.
    #[arg(long, default_value = "127.0.0.1:9600")]
    session: String,
    /// Republishes to time.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Untimed republishes first.
    #[arg(long, default_value_t = 50)]
    warmup: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data_id = format!("bench.latency.{}", std::process::id());
    let sub_client = Client::connect(ClientConfig::new([args.session.clone()])).await?;
    let pub_client = Client::connect(ClientConfig::new([args.session.clone()])).await?;
    let mut sub = sub_client.subscribe(&data_id).await?;
    let publisher = pub_client.publish(&data_id, vec!["n:0".into()]).await?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for n in 1..=(args.warmup + args.count) {
        let want = format!("n:{n}");
        let start = Instant::now();
        publisher.republish(vec![want.clone()]).await?;
        loop {
            let u = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("subscription closed"))?;
            if u.data == [want.as_str()] {
                break;
            }
        }
        if n > args.warmup {
            hist.record(start.elapsed().as_micros() as u64)?;
        }
    }
    println!(
        "{} sequential republishes: p50 {} us, p99 {} us, p999 {} us, max {} us, mean {:.0} us",
        hist.len(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
        hist.mean()
    );
    Ok(())
}
