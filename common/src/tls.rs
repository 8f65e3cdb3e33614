//! TLS configurations built from PEM files: what a server presents and what a client trusts.
//!
//! Every link of the registry can run over TLS (rustls): clients
//! reach sessions over `wss://`, servers reach each other over `https://` and `wss://`.
//! A server given a certificate and key ([`ServerTls`]) serves TLS only; a client
//! ([`ClientTls`]) trusts the CA file it is given, or the system's roots without one. TLS
//! keeps links private and proves a server's identity; who may call what is decided by the
//! signatures of [`crate::auth`], over TLS or not (see `docs/security.md`).
//!
//! The cryptography is rustls's default provider (`aws-lc-rs`, with post-quantum hybrid key
//! exchange).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("the certificate or key is not usable: {0}")]
    Invalid(String),
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("give both --tls-cert and --tls-key, or neither")]
    Incomplete,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// What a TLS server presents: its certificate chain and private key.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// Loads a PEM certificate chain (leaf first) and its PEM private key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = read_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read {
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_der(chain, key)
    }

    /// Builds from certificates and a key already decoded.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

/// What a TLS client trusts.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

/// Two handles are equal when they share one configuration.
impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for ClientTls {}

impl ClientTls {
    /// Trusts the CA certificates of `ca` (PEM), or the system's roots when `None`.
    pub fn new(ca: Option<&Path>) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                for cert in read_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::Invalid(e.to_string()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(TlsError::Invalid(
                        "no system CA certificate found; give a CA file".into(),
                    ));
                }
            }
        }
        Self::with_roots(roots)
    }

    /// Trusts exactly the CA certificates given (DER).
    pub fn from_der(cas: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in cas {
            roots
                .add(cert)
                .map_err(|e| TlsError::Invalid(e.to_string()))?;
        }
        Self::with_roots(roots)
    }

    fn with_roots(roots: rustls::RootCertStore) -> Result<Self, TlsError> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    /// A plain copy of the configuration (for libraries that take it by value).
    pub fn config_owned(&self) -> rustls::ClientConfig {
        (*self.config).clone()
    }
}

/// The name to verify a server's certificate against, from its `host:port` address.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_from_addresses() {
        assert!(matches!(
            server_name("127.0.0.1:9600").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:9600").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("registry-session-0.registry:9600").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("bad name:1").is_err());
    }

    #[test]
    fn a_missing_file_is_a_typed_error() {
        let e = ClientTls::new(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
    }
}
