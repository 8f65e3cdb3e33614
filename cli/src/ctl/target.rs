//! Where `registryctl` sends its calls and how: the address lists, the access key, TLS, and
//! the admin client that fails over across the meta nodes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use registry_common::auth::Credential;
use registry_common::error::ErrorCode;
use registry_common::tls::ClientTls;
use registry_rpc::{HttpClient, RpcError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Options every command takes, before or after its name.
#[derive(Args, Clone, Debug)]
pub struct Globals {
    /// Meta node addresses: comma-separated or repeated; tried in order until one answers.
    #[arg(
        long,
        env = "REGISTRY_META",
        value_delimiter = ',',
        default_value = "127.0.0.1:9610",
        global = true
    )]
    pub meta: Vec<String>,
    /// Session server addresses for `pub` and `sub`: comma-separated or repeated; the client
    /// moves to another when it loses one.
    #[arg(
        long,
        env = "REGISTRY_SESSION",
        value_delimiter = ',',
        default_value = "127.0.0.1:9600",
        global = true
    )]
    pub session: Vec<String>,
    /// Access key file (`KEY_ID:SECRET`) to sign with: the SDK's hello for `pub` and `sub`,
    /// and every admin call (the key's principal needs the admin permission for those).
    #[arg(long = "key-file", env = "REGISTRY_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,
    /// Reach the servers over TLS (`https`, `wss`), trusting the system's CA roots.
    #[arg(long, env = "REGISTRY_TLS", global = true)]
    pub tls: bool,
    /// Reach the servers over TLS, trusting the CA certificates of this PEM file.
    #[arg(long = "tls-ca", env = "REGISTRY_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Longest one call to a server may take, in seconds.
    #[arg(long = "call-timeout-secs", default_value_t = 10, global = true)]
    pub call_timeout_secs: u64,
}

/// What the globals resolve to.
pub struct Ctx {
    pub globals: Globals,
    pub key: Option<Credential>,
    pub tls: Option<ClientTls>,
}

impl Ctx {
    pub fn new(globals: Globals) -> anyhow::Result<Self> {
        let key = match &globals.key_file {
            Some(path) => Some(
                Credential::from_file(path)
                    .with_context(|| format!("reading the key file {}", path.display()))?,
            ),
            None => None,
        };
        let tls = if globals.tls || globals.tls_ca.is_some() {
            Some(ClientTls::new(globals.tls_ca.as_deref()).context("loading the TLS roots")?)
        } else {
            None
        };
        Ok(Self { globals, key, tls })
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.globals.call_timeout_secs.max(1))
    }

    pub fn http(&self) -> HttpClient {
        HttpClient::new(self.timeout())
            .with_signer(self.key.clone())
            .with_tls(self.tls.clone())
    }

    /// The admin client of the meta nodes.
    pub fn admin(&self) -> Admin {
        Admin {
            http: self.http(),
            metas: self
                .globals
                .meta
                .iter()
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect(),
            timeout: self.timeout(),
        }
    }
}

/// Admin calls to the meta cluster: reads from the first node that answers, writes to the
/// leader (following `not_leader` redirects).
pub struct Admin {
    pub http: HttpClient,
    metas: Vec<String>,
    timeout: Duration,
}

/// Whether another node may answer where this one could not.
fn try_next(e: &RpcError) -> bool {
    matches!(
        e.code(),
        ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::NotLeader
    )
}

impl Admin {
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let mut last = None;
        for addr in &self.metas {
            match self.http.get(addr, path, self.timeout).await {
                Ok(v) => return Ok(v),
                Err(e) if try_next(&e) => last = Some(format!("{addr}: {e}")),
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!(
            "no meta node answered ({})",
            last.unwrap_or_else(|| "no address given".into())
        )
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let mut last = None;
        let mut targets: Vec<String> = self.metas.clone();
        let mut tried = Vec::new();
        while !targets.is_empty() {
            let addr = targets.remove(0);
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr.clone());
            match self.http.post(&addr, path, body).await {
                Ok(v) => return Ok(v),
                Err(RpcError::Api(e)) if e.code == ErrorCode::NotLeader => {
                    if let Some(leader) = e.redirect.clone() {
                        targets.insert(0, leader);
                    }
                    last = Some(format!("{addr}: {e}"));
                }
                Err(e) if try_next(&e) => last = Some(format!("{addr}: {e}")),
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!(
            "no meta node took the change ({})",
            last.unwrap_or_else(|| "no address given".into())
        )
    }
}
