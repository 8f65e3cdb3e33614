//! Who may call what on a server: the cluster secret, the access keys of the ACL, and the one
//! middleware that checks them.
//!
//! A [`Guard`] is built once per server from its [`SecurityArgs`]. With no cluster secret
//! auth is off (allowed only on loopback, or with `--insecure`) and the guard lets everything
//! through. With one, every route falls in one [`Access`] class, decided by the server's own
//! classifier:
//! - [`Access::Public`]: liveness, readiness, metrics, and the client WebSocket (whose `hello`
//!   is authenticated by the session itself, [`Guard::verify_hello`]);
//! - [`Access::Member`]: server-to-server calls; signed with the cluster secret;
//! - [`Access::Admin`]: the admin API and status pages; signed with the cluster secret or
//!   with the access key of a principal holding the admin permission.
//!
//! Refusals are typed (`unauthenticated` 401, `forbidden` 403), logged and counted in
//! `registry_auth_refused_total{reason}`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use clap::Args;
use parking_lot::RwLock;
use registry_common::acl::{Acl, Grants, KeyIndex};
use registry_common::auth::{
    check_skew, hello_message, request_message, verify, AuthError, ClusterSecret, Credential,
    HelloAuth, SignedHeaders, CLUSTER_KEY_ID, MAX_SKEW_MS,
};
use registry_common::error::ApiError;
use registry_common::time::now_ms;

use crate::server::{ErrorReply, HttpLimits, ServeOptions};
use registry_common::tls::{ClientTls, ServerTls, TlsError};

/// Nonces remembered for replay detection. Past this many within the skew window the oldest
/// are forgotten (memory stays bounded; see `docs/security.md`).
const MAX_NONCES: u64 = 256 * 1024;

/// The security flags every server takes.
#[derive(Debug, Clone, Default, Args)]
pub struct SecurityArgs {
    /// File holding the cluster secret (one line; two while rotating, new first). Every
    /// server of a cluster needs the same file; with it, every inter-server call is signed
    /// and every client must present an access key.
    #[arg(long = "cluster-secret-file", env = "REGISTRY_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Run without authentication on a non-loopback address. Anyone who reaches the port
    /// can then register, subscribe and change the cluster.
    #[arg(long = "insecure", env = "REGISTRY_INSECURE")]
    pub insecure: bool,
    /// PEM certificate chain to serve TLS with (needs `--tls-key`). With it this server
    /// serves `https`/`wss` only and reaches the other servers over TLS too: every server of
    /// a cluster must have one.
    #[arg(long = "tls-cert", env = "REGISTRY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long = "tls-key", env = "REGISTRY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates the other servers' certificates are checked against (the
    /// system's roots without it).
    #[arg(long = "tls-ca", env = "REGISTRY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Serve the admin API (`/admin/v1/...`) on this address instead of the main one, so it
    /// can be firewalled apart from member and client traffic.
    #[arg(long = "admin-listen", env = "REGISTRY_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    #[command(flatten)]
    pub http: HttpLimits,
}

/// How a server talks TLS, from its [`SecurityArgs`].
#[derive(Clone, Debug, Default)]
pub struct Transport {
    /// What it serves with (`None`: plain HTTP).
    pub server: Option<ServerTls>,
    /// What it calls the other servers with (`None`: plain HTTP).
    pub client: Option<ClientTls>,
}

impl SecurityArgs {
    /// Loads the secret and applies the secure-default rule: no secret is fine on loopback
    /// (logged), refused elsewhere unless `--insecure`.
    pub fn guard(&self, role: &str, listen: &str) -> Result<Arc<Guard>, String> {
        let secret = match &self.cluster_secret_file {
            Some(path) => Some(ClusterSecret::from_file(path).map_err(|e| e.to_string())?),
            None => None,
        };
        let exposed = !is_loopback(listen)
            || self
                .admin_listen
                .as_deref()
                .is_some_and(|a| !is_loopback(a));
        if secret.is_none() {
            if exposed && !self.insecure {
                return Err(format!(
                    "refusing to start the {role} server on {listen} without authentication: \
                     give it --cluster-secret-file (see docs/security.md), or pass --insecure \
                     to run open to anyone who can reach the port"
                ));
            }
            if self.insecure && exposed {
                tracing::warn!(%listen, "auth is off (--insecure): anyone who reaches this port can register, subscribe and change the cluster");
            } else {
                tracing::info!(%listen, "auth is off: listening on loopback only");
            }
        }
        Ok(Guard::new(secret))
    }
}

impl SecurityArgs {
    /// Loads the TLS certificate, key and CA, if given.
    pub fn transport(&self) -> Result<Transport, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            if self.tls_cert.is_some() || self.tls_key.is_some() {
                return Err(TlsError::Incomplete.to_string());
            }
            return Ok(Transport::default());
        };
        let server = ServerTls::from_files(cert, key).map_err(|e| e.to_string())?;
        let client = ClientTls::new(self.tls_ca.as_deref()).map_err(|e| e.to_string())?;
        Ok(Transport {
            server: Some(server),
            client: Some(client),
        })
    }

    /// How to serve: TLS, the request limits, and `drain` after shutdown.
    pub fn serve_options(&self, transport: &Transport, drain: std::time::Duration) -> ServeOptions {
        let mut options = ServeOptions::new(transport.server.clone(), self.http.clone(), drain);
        options.admin_listen = self.admin_listen.clone();
        options
    }
}

/// Whether `listen` (`host:port`) binds loopback only.
pub fn is_loopback(listen: &str) -> bool {
    let host = listen
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(listen)
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Who a verified request came from.
#[derive(Clone, Debug)]
pub enum Caller {
    /// A cluster server (signed with the cluster secret).
    Member,
    /// A principal of the ACL.
    Principal(Arc<Grants>),
}

/// Which callers a route admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    Member,
    Admin,
}

/// The credential checker of one server.
pub struct Guard {
    /// `None`: auth is off.
    cluster: Option<ClusterSecret>,
    /// The ACL's keys, replaced whenever a newer revision arrives.
    keys: RwLock<Arc<KeyIndex>>,
    /// Recently used nonces per key, for replay detection.
    nonces: moka::sync::Cache<(String, String), ()>,
    refused: prometheus::IntCounterVec,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("enabled", &self.enabled())
            .finish_non_exhaustive()
    }
}

impl Guard {
    pub fn new(cluster: Option<ClusterSecret>) -> Arc<Self> {
        let refused = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "registry_auth_refused_total",
                "Requests and hellos refused for want of a valid credential, by reason.",
            ),
            &["reason"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        Arc::new(Self {
            cluster,
            keys: RwLock::new(Arc::new(KeyIndex::default())),
            nonces: moka::sync::Cache::builder()
                .max_capacity(MAX_NONCES)
                .time_to_live(Duration::from_millis(2 * MAX_SKEW_MS))
                .build(),
            refused,
        })
    }

    /// A guard with auth off.
    pub fn open() -> Arc<Self> {
        Self::new(None)
    }

    /// Whether credentials are required.
    pub fn enabled(&self) -> bool {
        self.cluster.is_some()
    }

    /// What this server signs its own calls with.
    pub fn signer(&self) -> Option<Credential> {
        self.cluster.as_ref().map(|c| c.signing.clone())
    }

    /// The refusal counter, for the server's metrics registry.
    pub fn refused_metric(&self) -> prometheus::IntCounterVec {
        self.refused.clone()
    }

    /// The ACL as the meta cluster hands it to the other servers: every key's secret sealed
    /// with the cluster secret, so it crosses the network readable by members only, TLS or
    /// not. Unchanged with auth off (there is no ACL to protect then).
    pub fn seal_acl(&self, acl: &Acl) -> Acl {
        let mut out = acl.clone();
        if let Some(cluster) = &self.cluster {
            for p in out.principals.values_mut() {
                for k in &mut p.keys {
                    k.secret = cluster.seal(&k.secret);
                }
            }
        }
        out
    }

    /// Opens the secrets of an ACL sealed by [`Guard::seal_acl`]; a key that does not open
    /// (another cluster's secret, tampering) is dropped and logged.
    pub fn open_acl(&self, mut acl: Acl) -> Acl {
        let Some(cluster) = &self.cluster else {
            return acl;
        };
        for (name, p) in acl.principals.iter_mut() {
            p.keys.retain_mut(|k| match cluster.open(&k.secret) {
                Ok(secret) => {
                    k.secret = secret;
                    true
                }
                Err(e) => {
                    tracing::warn!(principal = %name, key = %k.id, "dropping an access key whose secret does not open: {e}");
                    false
                }
            });
        }
        acl
    }

    /// Installs a newer ACL; returns the key ids that were valid before and are not now.
    pub fn set_acl(&self, acl: &Acl) -> Vec<String> {
        let next = Arc::new(KeyIndex::build(acl));
        let mut keys = self.keys.write();
        if next.revision < keys.revision {
            return Vec::new();
        }
        let gone = keys.revoked_in(&next);
        *keys = next;
        gone
    }

    pub fn acl_revision(&self) -> u64 {
        self.keys.read().revision
    }

    /// Whether `key_id` is still a valid access key.
    pub fn key_is_valid(&self, key_id: &str) -> bool {
        self.keys.read().contains(key_id)
    }

    /// What the principal of `key_id` may do now (`None`: the key is no longer valid).
    /// Checked on every registration, so a narrowed grant applies to open connections too.
    pub fn grants_of(&self, key_id: &str) -> Option<Arc<Grants>> {
        self.keys.read().get(key_id).map(|(_, g)| g.clone())
    }

    fn refuse(&self, e: AuthError) -> AuthError {
        let reason = match &e {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::UnknownKey(_) => "unknown_key",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired { .. } => "expired",
            AuthError::Replayed => "replayed",
            AuthError::NotMember => "not_member",
            AuthError::NotAdmin => "not_admin",
            AuthError::BadSecret(_) => "bad_secret",
        };
        self.refused.with_label_values(&[reason]).inc();
        e
    }

    fn check_nonce(&self, key_id: &str, nonce: &str) -> Result<(), AuthError> {
        let entry = self
            .nonces
            .entry((key_id.to_owned(), nonce.to_owned()))
            .or_insert(());
        if entry.is_fresh() {
            Ok(())
        } else {
            Err(AuthError::Replayed)
        }
    }

    /// Verifies one signed HTTP request.
    pub fn verify_request(
        &self,
        headers: Option<&SignedHeaders>,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<Caller, AuthError> {
        self.verify_request_inner(headers, method, path_and_query, body)
            .map_err(|e| self.refuse(e))
    }

    fn verify_request_inner(
        &self,
        headers: Option<&SignedHeaders>,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<Caller, AuthError> {
        let Some(cluster) = &self.cluster else {
            return Ok(Caller::Member);
        };
        let h = headers.ok_or(AuthError::Missing)?;
        check_skew(h.timestamp_ms, now_ms())?;
        let message = request_message(
            &h.key_id,
            method,
            path_and_query,
            h.timestamp_ms,
            &h.nonce,
            body,
        );
        let caller = if h.key_id == CLUSTER_KEY_ID {
            if !cluster
                .accepted
                .iter()
                .any(|s| verify(s, &message, &h.signature))
            {
                return Err(AuthError::BadSignature);
            }
            Caller::Member
        } else {
            let keys = self.keys.read().clone();
            let (secret, grants) = keys
                .get(&h.key_id)
                .ok_or_else(|| AuthError::UnknownKey(h.key_id.clone()))?;
            if !verify(secret, &message, &h.signature) {
                return Err(AuthError::BadSignature);
            }
            Caller::Principal(grants.clone())
        };
        self.check_nonce(&h.key_id, &h.nonce)?;
        Ok(caller)
    }

    /// Verifies a client's `hello`. `Ok(None)` when auth is off.
    pub fn verify_hello(
        &self,
        client_id: &str,
        auth: Option<&HelloAuth>,
    ) -> Result<Option<Arc<Grants>>, AuthError> {
        if !self.enabled() {
            return Ok(None);
        }
        let result = (|| {
            let a = auth.ok_or(AuthError::Missing)?;
            check_skew(a.timestamp_ms, now_ms())?;
            let keys = self.keys.read().clone();
            let (secret, grants) = keys
                .get(&a.key_id)
                .ok_or_else(|| AuthError::UnknownKey(a.key_id.chars().take(64).collect()))?;
            let message = hello_message(&a.key_id, client_id, a.timestamp_ms, &a.nonce);
            if !verify(secret, &message, &a.signature) {
                return Err(AuthError::BadSignature);
            }
            self.check_nonce(&a.key_id, &a.nonce)?;
            Ok(Some(grants.clone()))
        })();
        result.map_err(|e| self.refuse(e))
    }
}

/// Puts `router` behind `guard`: every request is classified by `classify(path)` and checked.
/// With auth off the router is returned as it is. `max_body` bounds the body read to verify
/// its hash (the router's own body limit).
pub fn protect(
    router: Router,
    guard: Arc<Guard>,
    classify: fn(&str) -> Access,
    max_body: usize,
) -> Router {
    if !guard.enabled() {
        return router;
    }
    let state = Arc::new(Protect {
        guard,
        classify,
        max_body,
    });
    router.layer(axum::middleware::from_fn_with_state(state, check))
}

struct Protect {
    guard: Arc<Guard>,
    classify: fn(&str) -> Access,
    max_body: usize,
}

async fn check(State(p): State<Arc<Protect>>, req: Request, next: Next) -> Response {
    let access = (p.classify)(req.uri().path());
    if access == Access::Public {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, p.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return ErrorReply(ApiError::new(
                registry_common::ErrorCode::PayloadTooLarge,
                format!("request body over {} bytes", p.max_body),
            ))
            .into_response()
        }
    };
    let headers =
        SignedHeaders::from_headers(|name| parts.headers.get(name).and_then(|v| v.to_str().ok()));
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let verdict = headers.and_then(|h| {
        p.guard
            .verify_request(h.as_ref(), parts.method.as_str(), path_and_query, &bytes)
    });
    let allowed = match (verdict, access) {
        (Err(e), _) => Err(e),
        (Ok(Caller::Member), _) => Ok(()),
        (Ok(Caller::Principal(g)), Access::Admin) if g.admin => Ok(()),
        (Ok(Caller::Principal(_)), Access::Admin) => Err(p.guard.refuse(AuthError::NotAdmin)),
        (Ok(Caller::Principal(_)), _) => Err(p.guard.refuse(AuthError::NotMember)),
    };
    match allowed {
        Ok(()) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => {
            tracing::info!(path = %parts.uri.path(), method = %parts.method, "refused: {e}");
            ErrorReply(ApiError::from(e)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("127.0.0.1:0"));
        assert!(is_loopback("localhost:9600"));
        assert!(is_loopback("[::1]:9600"));
        assert!(!is_loopback("0.0.0.0:9600"));
        assert!(!is_loopback("10.1.2.3:9600"));
        assert!(!is_loopback("registry-meta-0:9610"));
    }

    #[test]
    fn requests_verify_once() {
        let secret = ClusterSecret::parse("0123456789abcdef0123456789abcdef").unwrap();
        let guard = Guard::new(Some(secret.clone()));
        let h = secret.signing.sign_request("POST", "/x", b"body");
        assert!(guard
            .verify_request(Some(&h), "POST", "/x", b"body")
            .is_ok());
        assert_eq!(
            guard.verify_request(Some(&h), "POST", "/x", b"body").err(),
            Some(AuthError::Replayed)
        );
        let h = secret.signing.sign_request("POST", "/x", b"body");
        assert_eq!(
            guard.verify_request(Some(&h), "POST", "/x", b"other").err(),
            Some(AuthError::BadSignature)
        );
        assert_eq!(
            guard.verify_request(None, "POST", "/x", b"").err(),
            Some(AuthError::Missing)
        );
        let wrong = ClusterSecret::parse("fedcba9876543210fedcba9876543210").unwrap();
        let h = wrong.signing.sign_request("POST", "/x", b"");
        assert_eq!(
            guard.verify_request(Some(&h), "POST", "/x", b"").err(),
            Some(AuthError::BadSignature)
        );
    }
}
