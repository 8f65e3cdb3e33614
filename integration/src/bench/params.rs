//! Parameters of the standard workload (BENCHMARK.md): every one can be set by a flag; a
//! preset gives the rest.

use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// 2,000 services x 10 publishers x 10 subscribers, 200 clients, 2,000 changes/s for 30 s.
    W1,
    /// The CI smoke: 100 x 5 x 5, 10 clients, 100 changes/s for 5 s.
    W1Small,
    /// SOFARegistry's scale: 100,000 services x 10 publishers x 2 subscribers (a million
    /// publishers, 200,000 subscriptions), 1,000 clients, 2,000 changes/s for 30 s.
    Scale,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "registry-bench",
    about = "Runs the standard registry workload and reports"
)]
pub struct Args {
    /// Preset for every parameter not given explicitly.
    #[arg(long, value_enum, default_value = "w1")]
    pub workload: Workload,
    /// Distinct dataInfoIds (services).
    #[arg(long)]
    pub services: Option<usize>,
    /// Publishers per service.
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Subscribers per service.
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// SDK client connections.
    #[arg(long)]
    pub clients: Option<usize>,
    /// Bytes of payload per publisher.
    #[arg(long)]
    pub payload: Option<usize>,
    /// Republications per second during churn.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Churn duration, seconds.
    #[arg(long)]
    pub churn_secs: Option<u64>,
    /// Churn duration of the failover phase, seconds (the kill happens 2 s in).
    #[arg(long, default_value_t = 10)]
    pub failover_secs: u64,
    /// Skip the failover phase.
    #[arg(long)]
    pub no_failover: bool,
    /// Write the JSON report here.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Directory of the server binaries (default: next to this binary).
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
    /// Use a running cluster instead: its session addresses (comma-separated). The failover
    /// and footprint phases need processes this tool started, and are skipped.
    #[arg(long, value_delimiter = ',')]
    pub sessions: Vec<String>,
    /// Copies of every datum in the started cluster.
    #[arg(long, default_value_t = 2)]
    pub copies: usize,
    /// Runtime worker threads of each started server (0: one per core). The 8 servers share
    /// this machine, so one each by default rather than one per core each.
    #[arg(long, default_value_t = 1)]
    pub server_threads: usize,
    /// Auth and TLS on every link of the started cluster: a cluster secret, an access key
    /// for every client, a throwaway CA's certificates (to measure what security costs).
    #[arg(long)]
    pub secure: bool,
    /// Runtime worker threads of this driver (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub driver_threads: usize,
    /// Read every started server's resident memory every this many seconds, for the whole
    /// run (the report's `rss`).
    #[arg(long, default_value_t = 10)]
    pub rss_every: u64,
    /// Seconds of warm-up the memory summary leaves out (at most half the run).
    #[arg(long, default_value_t = 300)]
    pub rss_warmup: u64,
}

/// Resolved parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Params {
    pub workload: String,
    pub services: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub clients: usize,
    pub payload: usize,
    pub rate: u64,
    pub churn_secs: u64,
    pub failover_secs: u64,
    /// Runtime worker threads of each started server (0: one per core).
    pub server_threads: usize,
    /// Runtime worker threads of the driver (0: one per core).
    pub driver_threads: usize,
    /// Auth and TLS on every link.
    pub secure: bool,
}

impl Params {
    pub fn from_args(a: &Args) -> Self {
        let (d, p, s, c, b, q, t) = match a.workload {
            Workload::W1 => (2_000, 10, 10, 200, 128, 2_000, 30),
            Workload::W1Small => (100, 5, 5, 10, 128, 100, 5),
            Workload::Scale => (100_000, 10, 2, 1_000, 128, 2_000, 30),
        };
        Self {
            workload: match a.workload {
                Workload::W1 => "w1".into(),
                Workload::W1Small => "w1-small".into(),
                Workload::Scale => "scale".into(),
            },
            services: a.services.unwrap_or(d),
            publishers: a.publishers.unwrap_or(p),
            subscribers: a.subscribers.unwrap_or(s),
            clients: a.clients.unwrap_or(c).max(1),
            payload: a.payload.unwrap_or(b).max(48),
            rate: a.rate.unwrap_or(q).max(1),
            churn_secs: a.churn_secs.unwrap_or(t),
            failover_secs: a.failover_secs.max(3),
            server_threads: a.server_threads,
            driver_threads: a.driver_threads,
            secure: a.secure,
        }
    }

    pub fn churn(&self) -> Duration {
        Duration::from_secs(self.churn_secs)
    }
}
