//! `meta-server`: runs one meta server until Ctrl-C or SIGTERM.

use clap::Parser;
use meta_server::{MetaConfig, MetaServer};
use registry_rpc::runtime::{init_tracing, shutdown_on_signal};

#[derive(Parser)]
#[command(name = "meta-server", version, about = "Registry meta server")]
struct Cli {
    #[command(flatten)]
    config: MetaConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    let shutdown = shutdown_on_signal();
    let server = MetaServer::start(cli.config, shutdown.clone()).await?;
    shutdown.cancelled().await;
    server.shutdown().await;
    Ok(())
}
