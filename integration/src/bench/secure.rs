//! `registry-bench --secure`: the cluster under test with auth and TLS on every link, so the
//! cost of security can be measured against the same workload without it.
//!
//! [`BenchSecurity::generate`] writes a fresh cluster secret, a first admin key and a
//! throwaway CA with one certificate for 127.0.0.1 into a temporary directory; the servers get
//! them as flags, the driver's admin calls sign with the admin key, and every SDK client signs
//! its `hello` with the key of a principal granted every service.

use std::time::Duration;

use anyhow::Context;
use registry_common::auth::{Credential, Secret};
use registry_common::tls::ClientTls;
use registry_rpc::HttpClient;

/// The credentials and certificates of a secure bench cluster.
pub struct BenchSecurity {
    /// Holds every file below; removed with this value.
    dir: tempfile::TempDir,
    /// The bootstrap admin key, for the driver's admin calls.
    pub admin: Credential,
    /// What the driver and its clients trust.
    pub tls: ClientTls,
}

impl BenchSecurity {
    pub fn generate() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("cannot create a temp dir")?;
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text);
        write("cluster.secret", &format!("{}\n", Secret::generate()))?;
        let admin_text = format!("admin.bench:{}", Secret::generate());
        write("admin.key", &format!("{admin_text}\n"))?;
        let ca = registry_cli::certs::new_ca("bench CA", 2)?;
        let server = registry_cli::certs::issue(&ca, &["127.0.0.1".to_string()], 2)?;
        write("ca.pem", &ca.cert_pem)?;
        write("server.pem", &server.cert_pem)?;
        write("server-key.pem", &server.key_pem)?;
        let tls = ClientTls::new(Some(&dir.path().join("ca.pem")))?;
        Ok(Self {
            dir,
            admin: Credential::parse(&admin_text)?,
            tls,
        })
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The flags every server gets.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--cluster-secret-file".into(),
            self.file("cluster.secret"),
            "--tls-cert".into(),
            self.file("server.pem"),
            "--tls-key".into(),
            self.file("server-key.pem"),
            "--tls-ca".into(),
            self.file("ca.pem"),
        ]
    }

    /// The flags the meta nodes get on top of [`Self::server_args`].
    pub fn meta_args(&self) -> Vec<String> {
        vec!["--admin-key-file".into(), self.file("admin.key")]
    }

    /// The driver's admin client.
    pub fn admin_http(&self, timeout: Duration) -> HttpClient {
        HttpClient::new(timeout)
            .with_signer(Some(self.admin.clone()))
            .with_tls(Some(self.tls.clone()))
    }
}
