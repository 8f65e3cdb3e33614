//! DataServer: the sharded tier that holds what publishers published.
//!
//! - [`config`]: command-line/env configuration with working defaults.
//! - [`error`]: the domain's errors and their wire codes.
//! - [`store`]: datums in memory, sharded by slot, each with its bounded operation log.
//! - [`routing`]: who owns a slot at the current epoch; refusals as `NotOwner`/`StaleEpoch`.
//! - [`slots`]: this server's phase in each slot (syncing, ready, retained) as views change.
//! - [`replication`]: shipping the primary's ops to replicas, in batches, with full-copy fallback.
//! - [`notify`]: batched change notifications to every session server.
//! - [`api`]: the HTTP endpoints (write, fetch, versions, session digests, replicate, sync).
//! - [`admin`]: the admin endpoints (status, one service) and readiness.
//! - [`drain`]: the graceful stop on SIGTERM: hand every slot to the others, then leave.
//! - [`server`]: startup, the view follower (slot copies, targets, session cleanup),
//!   housekeeping and shutdown.

pub mod admin;
pub mod api;
pub mod config;
pub mod drain;
pub mod error;
pub mod metrics;
pub mod notify;
pub mod replication;
pub mod routing;
pub mod server;
pub mod slots;
pub mod store;

pub use config::DataConfig;
pub use server::DataServer;
