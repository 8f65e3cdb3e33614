//! Test harness of the registry: real servers on 127.0.0.1 (port 0) in the test process.
//!
//! - [`node`]: one server in its own Tokio runtime, so a test can stop it gracefully or kill
//!   it (every task and socket dropped at once, as when a process dies).
//! - [`cluster`]: meta, data and session nodes started together, with addresses and clients.
//! - [`raw`]: a bare WebSocket client speaking the JSON protocol by hand, for bad input and
//!   for observing every push the server sends.
//! - [`fuzz`]: structure-aware random inputs for every decoder (`decoder-fuzz`).
//! - [`wait`]: waiting on a condition with a deadline (never a fixed sleep).
//! - [`proxy`]: a fault-injecting TCP proxy (cut, silence or break links by source address).
//! - [`bench`]: `registry-bench`, the standard workload against a multi-process cluster.
//! - [`chaos`]: `registry-chaos`, seeded faults against a multi-process cluster under load,
//!   with an independent checker.
//! - [`workload`]: many publishers and recording subscribers for cluster tests.
//! - [`rss`]: resident memory of server processes, read over a whole run (soak runs of
//!   `registry-bench` and `registry-chaos`).

pub mod bench;
pub mod chaos;
pub mod cluster;
pub mod fuzz;
pub mod node;
pub mod proxy;
pub mod raw;
pub mod rss;
pub mod wait;
pub mod workload;

/// Logs to stderr when `RUST_LOG` is set (quiet otherwise).
pub fn init_test_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
