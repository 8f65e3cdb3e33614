//! `registry-bench`: the standard workload W1 (see `BENCHMARKS.md`) against a cluster of
//! separate processes.
//!
//! - [`params`]: the workload's parameters, W1 and W1-small presets, flags.
//! - [`launch`]: starting the cluster (3 meta, 3 data, 2 session) as OS processes from the
//!   release binaries, killing one, reading resident memory.
//! - [`payload`]: publisher payloads that carry their publisher, sequence number and send time.
//! - [`run`]: the phases: register, churn, failover, footprint.
//! - [`secure`]: `--secure`: auth and TLS on every link of the started cluster.
//! - [`report`]: the JSON report and the Markdown table.

pub mod launch;
pub mod params;
pub mod payload;
pub mod report;
pub mod run;
pub mod secure;
