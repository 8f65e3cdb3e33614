//! axum helpers every server uses.
//!
//! [`ApiJson`] is the JSON extractor/responder: a body that is not JSON, has the wrong shape
//! or is over the body limit becomes a typed [`ApiError`] (`malformed`, `payload_too_large`)
//! instead of axum's plain-text rejection. [`ErrorReply`] turns any `ApiError` into a response
//! whose status comes from [`registry_common::ErrorCode::http_status`], the one place codes map
//! to statuses. [`serve`] runs a router until a cancellation token fires.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use registry_common::error::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An error answer. Build it from anything that converts into an [`ApiError`].
#[derive(Debug)]
pub struct ErrorReply(pub ApiError);

impl<E: Into<ApiError>> From<E> for ErrorReply {
    fn from(e: E) -> Self {
        ErrorReply(e.into())
    }
}

impl IntoResponse for ErrorReply {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Routing answers (go elsewhere, retry shortly) are routine, not failures.
        let routine = matches!(
            self.0.code,
            ErrorCode::NotOwner
                | ErrorCode::Migrating
                | ErrorCode::StaleEpoch
                | ErrorCode::NotLeader
        );
        if status.is_server_error() && !routine {
            tracing::warn!(code = ?self.0.code, "request failed: {}", self.0.message);
        } else {
            tracing::debug!(code = ?self.0.code, "request refused: {}", self.0.message);
        }
        json_response(status, &self.0)
    }
}

/// JSON body in, JSON body out.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ErrorReply;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ErrorCode::PayloadTooLarge
            } else {
                ErrorCode::Malformed
            };
            ErrorReply(ApiError::new(code, rejection.body_text()))
        })?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            ErrorReply(ApiError::new(
                ErrorCode::Malformed,
                format!("bad request body: {e}"),
            ))
        })
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self.0)
    }
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode response: {e}"),
        )
            .into_response(),
    }
}

/// The answer to any path no route matches.
pub async fn not_found() -> ErrorReply {
    ErrorReply(ApiError::new(ErrorCode::NotFound, "no such endpoint"))
}

/// Binds a TCP listener (`host:port`, port 0 for any free port).
pub async fn bind(addr: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// A running HTTP server.
pub struct ServerTask {
    /// Address it listens on (with the real port when bound to port 0).
    pub local_addr: SocketAddr,
    /// The serving task; ends after shutdown.
    pub join: JoinHandle<io::Result<()>>,
}

/// Serves `router` on `listener` until `shutdown` fires, then stops accepting and lets open
/// requests finish for at most `drain`; connections still open after that are dropped.
pub fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
) -> io::Result<ServerTask> {
    let local_addr = listener.local_addr()?;
    // Small frames (acks, pushes, notifications) must not wait for Nagle's algorithm.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    let join = tokio::spawn(async move {
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        let graceful = std::future::IntoFuture::into_future(
            axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned()),
        );
        tokio::pin!(graceful);
        tokio::select! {
            res = &mut graceful => res,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => Ok(()),
        }
    });
    Ok(ServerTask { local_addr, join })
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("cannot join the cluster: {0}")]
    Join(#[from] crate::client::RpcError),
    #[error("{0}")]
    Other(String),
}
