//! `registry-chaos`: a multi-process cluster under a seeded schedule of faults, driven by
//! real SDK clients, judged by an independent checker.
//!
//! - [`procs`]: the servers as OS processes, each on its own loopback address; kill -9,
//!   restart on the same address, SIGSTOP/SIGCONT, a wall clock behind (libfaketime).
//! - [`netfilter`]: partitions between servers (packet filter rules by source and
//!   destination address).
//! - [`load`]: publishers and subscribers through the SDK.
//! - [`checker`]: acknowledged operations against pushes: lost, stale, ghosts, gaps,
//!   regressions.
//! - [`schedule`]: the rounds of faults, a function of the seed.
//! - [`run`]: rounds, convergence after each, the report.

pub mod checker;
pub mod load;
pub mod netfilter;
pub mod procs;
pub mod run;
pub mod schedule;
