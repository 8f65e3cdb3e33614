//! What every binary does first: logging and the shutdown signal.

use tokio_util::sync::CancellationToken;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, spans), for log shippers.
    Json,
}

/// The logging options every binary takes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LogArgs {
    /// Log format: `text` (coloured on a terminal only) or `json` (one object per line).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "REGISTRY_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// Logs to stderr in `format`; `RUST_LOG` overrides the default level (`info`). Colour codes
/// are written only when stderr is a terminal, so a log file or a container log stays plain.
pub fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// A token that fires on Ctrl-C or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown requested");
        fire.cancel();
    });
    token
}

/// Runs `main` on a multi-threaded runtime with `worker_threads` workers (one per core when
/// `None`). Servers that share a small machine with other servers run best with fewer
/// workers each than the machine has cores: fewer threads contend for the same cores.
pub fn block_on<F: std::future::Future>(
    worker_threads: Option<usize>,
    main: F,
) -> std::io::Result<F::Output> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = worker_threads.filter(|n| *n > 0) {
        builder.worker_threads(n);
    }
    Ok(builder.build()?.block_on(main))
}

/// Refuses a server that would advertise an address nobody can connect to: one listening on
/// every interface (`0.0.0.0`, `[::]`) without `--advertise` would register (or put in the
/// Raft membership) that wildcard, which peers and clients cannot reach, as happens inside
/// containers. Also refuses a wildcard `--advertise`. A DNS name is a fine advertise address.
pub fn check_advertise(listen: &str, advertise: Option<&str>) -> Result<(), String> {
    let wildcard = |addr: &str| {
        addr.parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_unspecified())
    };
    match advertise {
        Some(a) if wildcard(a) => Err(format!(
            "--advertise {a} is not an address others can reach; give this server's host name \
             or IP and port"
        )),
        None if wildcard(listen) => Err(format!(
            "--listen {listen} listens on every interface, so the address to advertise is \
             unknown: give --advertise HOST:PORT, the address other servers and clients reach \
             this one at (a DNS name such as a compose service or a pod's stable name works)"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_advertise;

    #[test]
    fn a_wildcard_listener_needs_a_reachable_advertise_address() {
        assert!(check_advertise("127.0.0.1:9620", None).is_ok());
        assert!(check_advertise("10.1.2.3:9620", None).is_ok());
        assert!(check_advertise("0.0.0.0:9620", None).is_err());
        assert!(check_advertise("[::]:9620", None).is_err());
        assert!(check_advertise("0.0.0.0:9620", Some("data-1:9620")).is_ok());
        assert!(check_advertise("0.0.0.0:9620", Some("10.1.2.3:9620")).is_ok());
        assert!(check_advertise("0.0.0.0:9620", Some("0.0.0.0:9620")).is_err());
    }
}
