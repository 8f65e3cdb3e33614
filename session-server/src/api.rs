//! HTTP routes of a session server.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/ws` | client WebSocket (JSON frames, see `docs/protocol.md`) |
//! | POST | `/session/v1/changes` | `ChangeBatch` from a data server -> `{}` |
//! | GET | `/session/v1/status` | connections, publishers, subscriptions, pending writes |
//! | GET | `/health`, `/ready`, `/metrics` | liveness, readiness, Prometheus |
//!
//! With auth on ([`access`]) the client WebSocket is public at the HTTP level (its `hello`
//! carries the client's signature), `/session/v1/status` needs the cluster secret or an admin
//! key, and `/session/v1/changes` the cluster secret.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use registry_common::proto::data::ChangeBatch;
use registry_rpc::auth::Access;
use registry_rpc::server::not_found;
use registry_rpc::{ApiJson, ErrorReply};
use serde::Serialize;

use crate::server::SessionState;

/// Bytes read from a client WebSocket at a time. The codec zeroes this much before every
/// read and clients mostly send small frames (acks), so it is small; a larger frame arrives
/// whole over several reads.
const WS_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Bytes of frames buffered before the codec writes them out.
const WS_WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// Largest HTTP body (a change batch with inline datums).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Who may call `path` when auth is on.
pub fn access(path: &str) -> Access {
    match path {
        "/ws" | "/health" | "/ready" | "/metrics" => Access::Public,
        "/session/v1/status" => Access::Admin,
        _ => Access::Member,
    }
}

pub fn router(state: Arc<SessionState>) -> Router {
    Router::new()
        .route("/ws", get(ws))
        .route("/session/v1/changes", post(changes))
        .route("/session/v1/status", get(status))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Ready while this server is a member of the view it follows and not moving its clients
/// away (a graceful stop is under way).
async fn ready(State(s): State<Arc<SessionState>>) -> Result<&'static str, ErrorReply> {
    let member = s.membership.view().members.contains_key(&s.id);
    let draining = s.draining.load(std::sync::atomic::Ordering::Acquire);
    if member && !draining {
        return Ok("ready");
    }
    Err(ErrorReply(registry_common::error::ApiError::new(
        registry_common::error::ErrorCode::Unavailable,
        format!("member of the view: {member}; stopping: {draining}"),
    )))
}

async fn ws(
    State(s): State<Arc<SessionState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let max = s.config.max_frame_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        // Per-connection buffers: thousands of connections must not cost 256 KiB each.
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| crate::conn::serve(socket, remote, s))
}

#[derive(Serialize)]
struct Empty {}

async fn changes(
    State(s): State<Arc<SessionState>>,
    ApiJson(batch): ApiJson<ChangeBatch>,
) -> Result<ApiJson<Empty>, ErrorReply> {
    if s.faults
        .drop_changes
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return Ok(ApiJson(Empty {}));
    }
    for change in batch.changes {
        s.pusher.on_change(change);
    }
    Ok(ApiJson(Empty {}))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    id: String,
    epoch: u64,
    connections: i64,
    publishers: i64,
    subscribers: i64,
    forward_pending: usize,
    outbox_frames: i64,
}

async fn status(State(s): State<Arc<SessionState>>) -> ApiJson<Status> {
    ApiJson(Status {
        id: s.id.to_string(),
        epoch: s.membership.view().epoch,
        connections: s.metrics.connections.get(),
        publishers: s.metrics.publishers.get(),
        subscribers: s.metrics.subscribers.get(),
        forward_pending: s.forwarder.pending(),
        outbox_frames: s.metrics.outbox_frames.get(),
    })
}

async fn metrics(State(s): State<Arc<SessionState>>) -> String {
    registry_rpc::metrics::render(&s.metrics.registry)
}
