//! Plumbing shared by the meta, data and session servers.
//!
//! - [`client`]: the HTTP/JSON client (keep-alive, timeouts, typed errors) for server-to-server calls.
//! - [`server`]: axum helpers: a JSON extractor with typed rejections, the error reply that maps
//!   an [`registry_common::ApiError`] to its HTTP status, binding and serving with graceful shutdown.
//! - [`auth`]: the security flags, the credential [`auth::Guard`] and the middleware that
//!   puts a router behind it.
//! - [`backoff`]: exponential backoff with jitter for every retry loop.
//! - [`lane`]: the batching lane: work queued for one peer, sent in batches capped by items
//!   and bytes, retried with backoff.
//! - [`meta_client`]: talking to the MetaServer: register, renew, watch the cluster view,
//!   following the leader; [`membership`] starts a data or session server (listen and join)
//!   and keeps it joined and its view current.
//! - [`metrics`]: the Prometheus registry and `/metrics` rendering.
//! - [`net`]: the source address of outgoing cluster connections (`REGISTRY_CONNECT_FROM`).
//! - [`request_id`]: the id of each request, in its log span and passed on to the next tier.
//! - [`runtime`]: logging setup and the shutdown signal of every binary.
//! - [`tls`]: the listener that serves TLS (certificates are loaded by `registry_common::tls`).

pub mod auth;
pub mod backoff;
pub mod client;
pub mod lane;
mod liveness;
pub mod membership;
pub mod meta_client;
pub mod metrics;
pub mod net;
pub mod request_id;
pub mod runtime;
pub mod server;
pub mod tls;

pub use client::{HttpClient, RpcError};
pub use server::{ApiJson, ErrorReply};
pub use tokio_util::sync::CancellationToken;
