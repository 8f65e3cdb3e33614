//! What every binary does first: logging and the shutdown signal.

use tokio_util::sync::CancellationToken;

/// Logs to stderr; `RUST_LOG` overrides the default level (`info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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
