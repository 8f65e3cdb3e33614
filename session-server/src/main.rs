//! `session-server`: runs one session server until Ctrl-C or SIGTERM, then sends its
//! clients to the other sessions (`go_away`) and leaves.

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
use registry_rpc::runtime::{block_on, check_advertise, init_tracing, shutdown_on_signal, LogArgs};
use registry_rpc::CancellationToken;
use session_server::{SessionConfig, SessionServer};

#[derive(Parser)]
#[command(name = "session-server", version, about = "Registry session server")]
struct Cli {
    #[command(flatten)]
    config: SessionConfig,
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

async fn run(config: SessionConfig) -> anyhow::Result<()> {
    check_advertise(&config.listen, config.advertise.as_deref()).map_err(anyhow::Error::msg)?;
    let signal = shutdown_on_signal();
    // The server's own token: it must still serve while it moves its clients away.
    let server = SessionServer::start(config, CancellationToken::new()).await?;
    signal.cancelled().await;
    server.shutdown().await;
    Ok(())
}
