//! `session-server`: runs one session server until Ctrl-C or SIGTERM.

use clap::Parser;
use registry_rpc::runtime::{init_tracing, shutdown_on_signal};
use session_server::{SessionConfig, SessionServer};

#[derive(Parser)]
#[command(name = "session-server", version, about = "Registry session server")]
struct Cli {
    #[command(flatten)]
    config: SessionConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    let shutdown = shutdown_on_signal();
    let server = SessionServer::start(cli.config, shutdown.clone()).await?;
    shutdown.cancelled().await;
    server.shutdown().await;
    Ok(())
}
