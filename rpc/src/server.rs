//! axum helpers every server uses.
//!
//! [`ApiJson`] is the JSON extractor/responder: a body that is not JSON, has the wrong shape
//! or is over the body limit becomes a typed [`ApiError`] (`malformed`, `payload_too_large`)
//! instead of axum's plain-text rejection. [`ErrorReply`] turns any `ApiError` into a response
//! whose status comes from [`registry_common::ErrorCode::http_status`], the one place codes map
//! to statuses. [`serve`] runs a router (over TLS or not, behind the request limits of
//! [`harden`]) until a cancellation token fires.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use registry_common::error::{ApiError, ErrorCode};
use registry_common::tls::ServerTls;
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

/// A query string decoded into `T`, or a typed `malformed` refusal (axum's own `Query`
/// answers plain text).
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ErrorReply;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(ApiQuery(q)),
            Err(rejection) => Err(ErrorReply(ApiError::new(
                ErrorCode::Malformed,
                rejection.body_text(),
            ))),
        }
    }
}

/// The answer to a method a path does not take.
pub async fn method_not_allowed() -> ErrorReply {
    ErrorReply(ApiError::new(
        ErrorCode::UnknownMessage,
        "this endpoint does not take this method",
    ))
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
    /// Address of the separate admin listener (`--admin-listen`), if any.
    pub admin_addr: Option<SocketAddr>,
    /// The serving task (both listeners); ends after shutdown.
    pub join: JoinHandle<io::Result<()>>,
}

/// Bounds on the HTTP requests one server serves (every server takes these flags).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimits {
    /// Most HTTP requests served at once; past it requests are refused at once with
    /// `overloaded` (503) rather than queued. WebSocket connections count only while they
    /// are being upgraded.
    #[arg(
        long = "http-max-in-flight",
        env = "REGISTRY_HTTP_MAX_IN_FLIGHT",
        default_value_t = 4096
    )]
    pub max_in_flight: usize,
    /// Longest one HTTP request may take, in ms, long polls included (they wait at most
    /// 60 s); past it the caller gets `timeout`.
    #[arg(
        long = "http-timeout-ms",
        env = "REGISTRY_HTTP_TIMEOUT_MS",
        default_value_t = 90_000
    )]
    pub timeout_ms: u64,
    /// Longest a connection may take to send the headers of its next request, in ms,
    /// counted from when the server is ready for it: a client that sends its headers too
    /// slowly, or leaves a keep-alive connection idle that long, is disconnected. Longer than
    /// the 60 s the servers' own clients keep an idle connection, so they never reuse one the
    /// server is closing.
    #[arg(
        long = "http-header-timeout-ms",
        env = "REGISTRY_HTTP_HEADER_TIMEOUT_MS",
        default_value_t = 75_000
    )]
    pub header_timeout_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_in_flight: 4096,
            timeout_ms: 90_000,
            header_timeout_ms: 75_000,
        }
    }
}

/// How a server serves its router.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Serve TLS only, with this certificate.
    pub tls: Option<ServerTls>,
    /// Serve the admin routes on this address instead of the main listener.
    pub admin_listen: Option<String>,
    pub limits: HttpLimits,
    /// After shutdown, how long open requests may take to finish.
    pub drain: Duration,
    /// Requests refused by the limits, by reason (`overloaded`, `timeout`).
    pub refused: prometheus::IntCounterVec,
}

impl ServeOptions {
    pub fn new(tls: Option<ServerTls>, limits: HttpLimits, drain: Duration) -> Self {
        let refused = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "registry_http_refused_total",
                "HTTP requests refused by the server's limits, by reason.",
            ),
            &["reason"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        for reason in ["overloaded", "timeout"] {
            refused.with_label_values(&[reason]);
        }
        Self {
            tls,
            admin_listen: None,
            limits,
            drain,
            refused,
        }
    }

    /// Plain HTTP with the default limits (tests and tools).
    pub fn plain(drain: Duration) -> Self {
        Self::new(None, HttpLimits::default(), drain)
    }
}

/// Puts `router` behind the request limits: a request past `max_in_flight` is shed with
/// `overloaded`, one running past `timeout_ms` is cut off with `timeout`; both are typed,
/// logged and counted.
pub fn harden(router: Router, limits: &HttpLimits, refused: prometheus::IntCounterVec) -> Router {
    let timeout = Duration::from_millis(limits.timeout_ms.max(1));
    let handle = move |e: tower::BoxError| {
        let refused = refused.clone();
        async move {
            let error = if e.is::<tower::load_shed::error::Overloaded>() {
                refused.with_label_values(&["overloaded"]).inc();
                ApiError::new(
                    ErrorCode::Overloaded,
                    "too many requests in flight; retry later",
                )
            } else if e.is::<tower::timeout::error::Elapsed>() {
                refused.with_label_values(&["timeout"]).inc();
                ApiError::new(
                    ErrorCode::Timeout,
                    format!("request took longer than {timeout:?}"),
                )
            } else {
                ApiError::new(ErrorCode::Internal, e.to_string())
            };
            ErrorReply(error)
        }
    };
    router.layer(
        tower::ServiceBuilder::new()
            .layer(axum::middleware::from_fn(crate::request_id::layer))
            .layer(axum::error_handling::HandleErrorLayer::new(handle))
            .load_shed()
            .concurrency_limit(limits.max_in_flight.max(1))
            .timeout(timeout),
    )
}

/// A server's routes: what members and clients call, and the admin API.
pub struct Routers {
    pub main: Router,
    pub admin: Router,
}

/// Serves `routers` until `shutdown` fires: the admin routes next to the others on
/// `listener`, or on their own listener when `options.admin_listen` is set (so they can be
/// firewalled apart). `protect` puts each router behind the server's credential checks.
pub async fn serve_routers(
    listener: TcpListener,
    routers: Routers,
    protect: impl Fn(Router) -> Router,
    shutdown: CancellationToken,
    options: &ServeOptions,
) -> Result<ServerTask, StartError> {
    let typed = |r: Router| r.method_not_allowed_fallback(method_not_allowed);
    let Some(admin_listen) = &options.admin_listen else {
        return serve(
            listener,
            protect(typed(routers.main.merge(routers.admin))),
            shutdown,
            options,
        )
        .map_err(|e| StartError::Other(e.to_string()));
    };
    let admin_listener = bind(admin_listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: admin_listen.clone(),
            source,
        })?;
    let main = serve(
        listener,
        protect(typed(routers.main)),
        shutdown.clone(),
        options,
    )
    .map_err(|e| StartError::Other(e.to_string()))?;
    let admin = serve(
        admin_listener,
        protect(typed(routers.admin.fallback(not_found))),
        shutdown,
        options,
    )
    .map_err(|e| StartError::Other(e.to_string()))?;
    let join = tokio::spawn(async move {
        let (a, b) = tokio::join!(main.join, admin.join);
        a.map_err(io::Error::other)??;
        b.map_err(io::Error::other)?
    });
    Ok(ServerTask {
        local_addr: main.local_addr,
        admin_addr: Some(admin.local_addr),
        join,
    })
}

/// Serves `router` on `listener` (over TLS when `options.tls` is set, behind
/// [`harden`]'s limits) until `shutdown` fires, then stops accepting and lets open requests
/// finish for at most `options.drain`; connections still open after that are dropped.
pub fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    options: &ServeOptions,
) -> io::Result<ServerTask> {
    let local_addr = listener.local_addr()?;
    let router = harden(router, &options.limits, options.refused.clone());
    let drain = options.drain;
    let header_timeout = Duration::from_millis(options.limits.header_timeout_ms);
    let join = match &options.tls {
        None => {
            // Small frames (acks, pushes, notifications) must not wait for Nagle's algorithm.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!("cannot set TCP_NODELAY: {e}");
                }
            });
            tokio::spawn(run(listener, router, shutdown, drain, header_timeout))
        }
        Some(tls) => {
            // TLS connections get TCP_NODELAY in the accept loop.
            let listener = axum::serve::ListenerExt::tap_io(
                crate::tls::TlsListener::new(listener, tls)?,
                |_| {},
            );
            tokio::spawn(run(listener, router, shutdown, drain, header_timeout))
        }
    };
    Ok(ServerTask {
        local_addr,
        admin_addr: None,
        join,
    })
}

/// Most bytes hyper reads from one HTTP connection at a time. Its default (about 400 KiB)
/// is reached by every connection that carries a burst of large bodies (the register phase's
/// write and replication batches), and each keeps its buffer at that size; here bodies are
/// read in 32 KiB steps. Headers must fit in it too.
const HTTP_READ_BUFFER_BYTES: usize = 32 * 1024;

async fn run<L>(
    mut listener: L,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
    header_timeout: Duration,
) -> io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    // Turns every route into its final service once, as `axum::serve` does: a router used
    // as it is builds each route's layers again for every request, which gives every
    // request its own concurrency limit.
    let router: Router = router.with_state(());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(HTTP_READ_BUFFER_BYTES);
    // Without a timer hyper waits for headers for ever: one idle or trickling connection per
    // file descriptor would be enough to exhaust the server.
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    // Every connection task holds a receiver; the sender learns when the last one is gone.
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    loop {
        let (io, remote) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(remote));
            tower::ServiceExt::oneshot(router.clone(), req.map(axum::body::Body::new))
        });
        let conn = http
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .with_upgrades();
        let shutdown = shutdown.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = shutdown.cancelled() => {
                    // Finish the request in progress, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            match ended {
                Err(e) if e.is_timeout() => tracing::debug!(
                    %remote,
                    "connection closed: no request headers within {header_timeout:?}"
                ),
                Err(e) => tracing::trace!(%remote, "connection ended: {e}"),
                Ok(()) => {}
            }
            drop(open);
        });
    }
    // Stop accepting; let open requests finish for at most `drain`.
    drop(open_rx);
    let _ = tokio::time::timeout(drain, open_tx.closed()).await;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    /// A server whose `/slow` takes `hold`, behind the given limits.
    async fn slow_server(limits: HttpLimits, hold: Duration) -> (ServerTask, CancellationToken) {
        let router = Router::new().route(
            "/slow",
            get(move || async move {
                tokio::time::sleep(hold).await;
                "done"
            }),
        );
        let shutdown = CancellationToken::new();
        let options = ServeOptions::new(None, limits, Duration::from_millis(100));
        let listener = bind("127.0.0.1:0").await.unwrap();
        let task = serve(listener, router, shutdown.clone(), &options).unwrap();
        (task, shutdown)
    }

    #[tokio::test]
    async fn requests_past_the_limits_get_typed_errors() {
        let limits = HttpLimits {
            max_in_flight: 1,
            timeout_ms: 2_000,
            ..HttpLimits::default()
        };
        let (task, shutdown) = slow_server(limits, Duration::from_secs(30)).await;
        let http = crate::HttpClient::new(Duration::from_secs(30));
        let addr = task.local_addr.to_string();
        // Two at once: one takes the only place and is cut off by the timeout, the other is
        // shed at once.
        let call = || http.get::<String>(&addr, "/slow", Duration::from_secs(30));
        let (a, b) = tokio::join!(call(), call());
        let mut codes = [a.unwrap_err().code(), b.unwrap_err().code()];
        codes.sort_by_key(|c| c.as_str());
        assert_eq!(codes, [ErrorCode::Overloaded, ErrorCode::Timeout]);
        shutdown.cancel();
    }

    /// Reads from `tcp` until the server closes it, or fails at `deadline`.
    async fn read_until_closed(tcp: &mut tokio::net::TcpStream, deadline: Duration) -> String {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        tokio::time::timeout(deadline, tcp.read_to_end(&mut got))
            .await
            .expect("the server must close the connection")
            .expect("read");
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn connections_that_do_not_send_their_headers_in_time_are_closed() {
        use tokio::io::AsyncWriteExt;
        use tokio::net::TcpStream;
        let limits = HttpLimits {
            header_timeout_ms: 200,
            ..HttpLimits::default()
        };
        // The handler takes three times the header timeout: a request whose headers have
        // arrived is not cut off by it.
        let (task, shutdown) = slow_server(limits, Duration::from_millis(600)).await;
        let addr = task.local_addr;
        let mut served = TcpStream::connect(addr).await.unwrap();
        served
            .write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        // A client that never sends anything, and one that stops half-way through its headers.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut trickling = TcpStream::connect(addr).await.unwrap();
        trickling
            .write_all(b"GET /slow HTTP/1.1\r\nhost:")
            .await
            .unwrap();
        let deadline = Duration::from_secs(10);
        let answer = read_until_closed(&mut served, deadline).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
            "{answer}"
        );
        read_until_closed(&mut silent, deadline).await;
        let refused = read_until_closed(&mut trickling, deadline).await;
        assert!(!refused.contains("done"), "{refused}");
        shutdown.cancel();
    }
}
