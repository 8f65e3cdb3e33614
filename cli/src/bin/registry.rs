//! `registry`: runs the registry. `registry standalone` starts every role in one process.

/// jemalloc: far fewer cycles in malloc/free than the system allocator on this workload of
/// many small short-lived buffers (JSON frames), with less fragmentation.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Return freed memory to the system within a second instead of ten, from a background
/// thread, so resident memory follows the load down.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";

use clap::{Parser, Subcommand};
use registry_cli::health::HealthArgs;
use registry_cli::standalone::{Standalone, StandaloneConfig};
use registry_rpc::runtime::{block_on, check_advertise, init_tracing, shutdown_on_signal, LogArgs};
use registry_rpc::CancellationToken;

#[derive(Parser)]
#[command(name = "registry", version, about = "A three-tier service registry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Runtime worker threads (default: one per core). Servers sharing a small machine with
    /// other servers run best with fewer each.
    #[arg(long, global = true, env = "REGISTRY_WORKER_THREADS")]
    worker_threads: Option<usize>,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Meta, data and session server in one process, on the default ports.
    Standalone(StandaloneConfig),
    /// One meta node.
    Meta(meta_server::MetaConfig),
    /// One data server.
    Data(data_server::DataConfig),
    /// One session server.
    Session(session_server::SessionConfig),
    /// Ask a server's `/health` (or `--path /ready`); exit 0 if it answers 2xx in time, 1
    /// otherwise. For container health checks.
    Health(HealthArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log.log_format);
    if let Command::Health(args) = &cli.command {
        let result = block_on(Some(1), registry_cli::health::check(args))?;
        match result {
            Ok(status) => println!("{status}"),
            Err(e) => {
                eprintln!("unhealthy: {e}");
                std::process::exit(1);
            }
        }
        return Ok(());
    }
    block_on(cli.worker_threads, run(cli.command))?
}

async fn run(command: Command) -> anyhow::Result<()> {
    // The signal starts each role's graceful stop (a data server drains, a session sends its
    // clients away, a meta leader hands over); the servers run on their own token meanwhile.
    let signal = shutdown_on_signal();
    let shutdown = CancellationToken::new();
    match command {
        Command::Health(_) => unreachable!("answered in main"),
        Command::Standalone(config) => {
            let dir = config.data_dir.clone();
            let scheme = if config.security.tls_cert.is_some() {
                "wss"
            } else {
                "ws"
            };
            let registry = Standalone::start(config, shutdown.clone()).await?;
            tracing::info!(
                session = %registry.session_addr(),
                data_dir = %dir.display(),
                "standalone registry ready; clients connect to {scheme}://{}/ws",
                registry.session_addr()
            );
            signal.cancelled().await;
            registry.shutdown().await;
        }
        Command::Meta(config) => {
            check_advertise(&config.listen, config.advertise.as_deref())
                .map_err(anyhow::Error::msg)?;
            let handover = config.handover_timeout();
            let s = meta_server::MetaServer::start(config, shutdown).await?;
            signal.cancelled().await;
            s.hand_over_and_shutdown(handover).await;
        }
        Command::Data(config) => {
            check_advertise(&config.listen, config.advertise.as_deref())
                .map_err(anyhow::Error::msg)?;
            let drain = config.drain_timeout();
            let s = data_server::DataServer::start(config, shutdown).await?;
            signal.cancelled().await;
            s.drain_and_shutdown(drain).await;
        }
        Command::Session(config) => {
            check_advertise(&config.listen, config.advertise.as_deref())
                .map_err(anyhow::Error::msg)?;
            let s = session_server::SessionServer::start(config, shutdown).await?;
            signal.cancelled().await;
            s.shutdown().await;
        }
    }
    Ok(())
}
