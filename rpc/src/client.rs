//! HTTP/JSON client for server-to-server calls.
//!
//! One [`HttpClient`] per process keeps connections alive per peer. Every call has a timeout;
//! a non-2xx answer is decoded into the peer's [`ApiError`] when it sent one. A client made
//! [`HttpClient::with_signer`] signs every request (see `registry_common::auth`); one made
//! [`HttpClient::with_tls`] calls over `https`.

use std::time::Duration;

use registry_common::auth::Credential;
use registry_common::error::{ApiError, ErrorCode};
use registry_common::tls::ClientTls;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The peer answered with a typed error.
    #[error("{0}")]
    Api(ApiError),
    /// No answer within the call's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The peer could not be reached (refused, reset, DNS).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The peer answered something we could not decode.
    #[error("bad answer: {0}")]
    BadAnswer(String),
}

impl RpcError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RpcError::Api(e) => e.code,
            RpcError::Timeout(_) => ErrorCode::Timeout,
            RpcError::Unreachable(_) => ErrorCode::Unavailable,
            RpcError::BadAnswer(_) => ErrorCode::Internal,
        }
    }

    /// The typed error the peer sent, if any.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            RpcError::Api(e) => Some(e),
            _ => None,
        }
    }

    pub fn into_api(self) -> ApiError {
        match self {
            RpcError::Api(e) => e,
            other => ApiError::new(other.code(), other.to_string()),
        }
    }
}

/// Shared keep-alive client.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
    /// Timeout of calls that do not name their own.
    default_timeout: Duration,
    /// Signs every request when set (the cluster secret, or an operator's access key).
    signer: Option<Credential>,
    /// Set: every call goes over `https` trusting these roots; unset: plain `http`.
    tls: Option<ClientTls>,
}

impl HttpClient {
    pub fn new(default_timeout: Duration) -> Self {
        Self {
            inner: build(None),
            default_timeout,
            signer: None,
            tls: None,
        }
    }

    /// This client, calling over `https` with `tls` (none: plain `http`).
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Self {
        self.inner = build(tls.as_ref());
        self.tls = tls;
        self
    }

    /// This client with a connection pool of its own: for calls made from another runtime,
    /// whose connections must not be driven by this client's runtime.
    pub fn with_own_pool(&self) -> Self {
        Self {
            inner: build(self.tls.as_ref()),
            ..self.clone()
        }
    }

    pub fn tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `ws` or `wss`, for WebSocket peers reached the same way.
    pub fn ws_scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "wss"
        } else {
            "ws"
        }
    }

    /// This client, signing every request with `signer` (none: unsigned).
    pub fn with_signer(mut self, signer: Option<Credential>) -> Self {
        self.signer = signer;
        self
    }

    pub fn signer(&self) -> Option<&Credential> {
        self.signer.as_ref()
    }

    fn sign(
        &self,
        mut request: reqwest::RequestBuilder,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> reqwest::RequestBuilder {
        let id = crate::request_id::current().unwrap_or_else(crate::request_id::fresh);
        request = request.header(crate::request_id::HEADER, &*id);
        if let Some(signer) = &self.signer {
            for (name, value) in signer.sign_request(method, path_and_query, body).pairs() {
                request = request.header(name, value);
            }
        }
        request
    }

    pub fn default_timeout(&self) -> Duration {
        self.default_timeout
    }

    /// `POST {scheme}://{addr}{path}` with a JSON body, within the default timeout.
    pub async fn post<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
    ) -> Result<Resp, RpcError> {
        self.post_within(addr, path, body, self.default_timeout)
            .await
    }

    /// `POST {scheme}://{addr}{path}` with a JSON body, within `timeout`.
    pub async fn post_within<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let body = serde_json::to_vec(body).map_err(|e| RpcError::BadAnswer(e.to_string()))?;
        let request = self
            .inner
            .post(format!("{}://{addr}{path}", self.scheme()))
            .header("content-type", "application/json")
            .timeout(timeout);
        let request = self.sign(request, "POST", path, &body).body(body);
        Self::finish(request, timeout).await
    }

    /// `GET {scheme}://{addr}{path_and_query}` within `timeout`.
    pub async fn get<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let request = self
            .inner
            .get(format!("{}://{addr}{path_and_query}", self.scheme()))
            .timeout(timeout);
        let request = self.sign(request, "GET", path_and_query, b"");
        Self::finish(request, timeout).await
    }

    /// `GET {scheme}://{addr}{path}` within `timeout`: the HTTP status, whatever the body
    /// (health and readiness probes).
    pub async fn probe(&self, addr: &str, path: &str, timeout: Duration) -> Result<u16, RpcError> {
        let request = self
            .inner
            .get(format!("{}://{addr}{path}", self.scheme()))
            .timeout(timeout);
        let request = self.sign(request, "GET", path, b"");
        let response = request.send().await.map_err(|e| classify(e, timeout))?;
        Ok(response.status().as_u16())
    }

    async fn finish<Resp: DeserializeOwned>(
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let response = request.send().await.map_err(|e| classify(e, timeout))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| classify(e, timeout))?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| RpcError::BadAnswer(e.to_string()))
        } else {
            match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(api) => Err(RpcError::Api(api)),
                Err(_) => Err(RpcError::BadAnswer(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ))),
            }
        }
    }
}

fn build(tls: Option<&ClientTls>) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .no_proxy()
        .local_address(crate::net::connect_from());
    let builder = match tls {
        Some(tls) => builder.tls_backend_preconfigured(tls.config_owned()),
        // Plaintext links: no trust roots at all, so that building the client never reads
        // the system's certificate store (a minimal container image has none, and the
        // platform verifier would refuse to start without one).
        None => builder.tls_certs_only(Vec::new()),
    };
    builder.build().unwrap_or_else(|e| {
        tracing::error!("cannot build the HTTP client, using the defaults: {e}");
        reqwest::Client::new()
    })
}

fn classify(e: reqwest::Error, timeout: Duration) -> RpcError {
    if e.is_timeout() {
        RpcError::Timeout(timeout)
    } else if e.is_connect() || e.is_request() {
        RpcError::Unreachable(e.to_string())
    } else {
        RpcError::BadAnswer(e.to_string())
    }
}
