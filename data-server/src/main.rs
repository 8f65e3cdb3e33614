//! `data-server`: runs one data server until Ctrl-C or SIGTERM.

use clap::Parser;
use data_server::{DataConfig, DataServer};
use registry_rpc::runtime::{init_tracing, shutdown_on_signal};

#[derive(Parser)]
#[command(name = "data-server", version, about = "Registry data server")]
struct Cli {
    #[command(flatten)]
    config: DataConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    let shutdown = shutdown_on_signal();
    let server = DataServer::start(cli.config, shutdown.clone()).await?;
    shutdown.cancelled().await;
    server.shutdown().await;
    Ok(())
}
