//! HTTP routes of a session server.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/ws` | client WebSocket (JSON frames, see `docs/protocol.md`) |
//! | POST | `/session/v1/changes` | `ChangeBatch` from a data server -> `{}` |
//! | GET | `/health`, `/ready`, `/metrics` | liveness, readiness ([`crate::admin`]), Prometheus |
//!
//! The admin routes (`/admin/v1/...`) are in [`crate::admin`]. With auth on ([`access`]) the
//! client WebSocket is public at the HTTP level (its `hello` carries the client's signature),
//! `/admin/v1/...` needs the cluster secret or an admin key, and `/session/v1/changes` the
//! cluster secret.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
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

/// Bytes of frames buffered before the codec writes them out. The buffer keeps, for the
/// connection's life, the most it ever held (up to this plus one frame), so frames the
/// session builds itself (`pushes`) stay within it too. At 16 KiB a W1 session held about
/// 50 KiB per connection here; joined frames average two pushes (4 KiB) even at 4x W1's
/// churn, so 8 KiB rarely splits one.
pub(crate) const WS_WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// Largest HTTP body (a change batch with inline datums).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Who may call `path` when auth is on.
pub fn access(path: &str) -> Access {
    match path {
        "/ws" | "/health" | "/ready" | "/metrics" => Access::Public,
        p if p.starts_with("/admin/") => Access::Admin,
        _ => Access::Member,
    }
}

pub fn router(state: Arc<SessionState>) -> Router {
    Router::new()
        .route("/ws", get(ws))
        .route("/session/v1/changes", post(changes))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(crate::admin::ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn ws(
    State(s): State<Arc<SessionState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let slot = match s.conn_slots.acquire() {
        Ok(slot) => slot,
        Err(e) => {
            s.metrics.connections_refused.inc();
            if s.refusal_log.check().is_ok() {
                tracing::info!(%remote, "refused a connection: {e}");
            }
            return ErrorReply::from(e).into_response();
        }
    };
    let max = s.config.max_frame_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        // Per-connection buffers: thousands of connections must not cost 256 KiB each.
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| crate::conn::serve(socket, remote, s, slot))
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

async fn metrics(State(s): State<Arc<SessionState>>) -> String {
    registry_rpc::metrics::render(&s.metrics.registry)
}
