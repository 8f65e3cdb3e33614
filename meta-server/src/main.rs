//! `meta-server`: runs one meta server until Ctrl-C or SIGTERM; a leader hands its
//! leadership over before it stops.

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
use meta_server::{MetaConfig, MetaServer};
use registry_rpc::runtime::{block_on, check_advertise, init_tracing, shutdown_on_signal, LogArgs};
use registry_rpc::CancellationToken;

#[derive(Parser)]
#[command(name = "meta-server", version, about = "Registry meta server")]
struct Cli {
    #[command(flatten)]
    config: MetaConfig,
    /// Runtime worker threads (default: one per core). Servers sharing a small machine with
    /// other servers run best with fewer each.
    #[arg(long, env = "REGISTRY_WORKER_THREADS")]
    worker_threads: Option<usize>,
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log.log_format);
    block_on(cli.worker_threads, run(cli.config))?
}

async fn run(config: MetaConfig) -> anyhow::Result<()> {
    check_advertise(&config.listen, config.advertise.as_deref()).map_err(anyhow::Error::msg)?;
    let signal = shutdown_on_signal();
    let handover = config.handover_timeout();
    // The server's own token: a leader hands over while still serving.
    let server = MetaServer::start(config, CancellationToken::new()).await?;
    signal.cancelled().await;
    server.hand_over_and_shutdown(handover).await;
    Ok(())
}
