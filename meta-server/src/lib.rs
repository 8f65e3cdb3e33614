//! MetaServer: the strongly consistent core of the registry.
//!
//! - [`state`]: the replicated state machine (members, epoch, slot table, settings).
//! - [`raft`]: openraft wiring: types, the redb-backed log and state-machine store, the HTTP
//!   network between meta nodes. Nothing outside this module names openraft.
//! - [`leases`]: member leases and heartbeat connections, held by the leader in memory.
//! - [`api`]: the HTTP endpoints for members and watchers.
//! - [`admin`]: the admin API: the whole cluster for operators.
//! - [`metrics`]: the node's Prometheus metrics (`/metrics`).
//! - [`console`]: the operator console, a page over the admin API at `/console/`.
//! - [`config`]: flags and defaults; [`error`]: the domain's errors.
//! - [`server`]: startup, bootstrap and shutdown; [`handover`]: a leader's graceful stop.

pub mod admin;
pub mod api;
pub mod config;
pub mod console;
pub mod error;
pub mod handover;
pub mod leases;
pub mod metrics;
pub mod raft;
pub mod server;
pub mod state;

pub use config::MetaConfig;
pub use server::MetaServer;
