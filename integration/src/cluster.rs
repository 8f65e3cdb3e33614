//! A whole cluster in the test process: meta, data and session nodes on 127.0.0.1.

use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use client_sdk::{Client, ClientConfig};
use data_server::{DataConfig, DataServer};
use meta_server::{MetaConfig, MetaServer};
use registry_common::acl::Permissions;
use registry_common::auth::{Credential, Secret};
use registry_common::member::{ClusterView, Role};
use registry_common::tls::ClientTls;
use registry_rpc::server::StartError;
use session_server::{SessionConfig, SessionServer};
use tempfile::TempDir;

use crate::node::Node;
use crate::wait::until;

/// Shape and settings of a test cluster. Timings are shortened so failures are detected
/// quickly.
#[derive(Clone)]
pub struct ClusterConfig {
    pub metas: usize,
    pub datas: usize,
    pub sessions: usize,
    pub meta: MetaConfig,
    pub data: DataConfig,
    pub session: SessionConfig,
    /// Auth on: the cluster secret and the first admin key, in files of their own directory.
    pub auth: Option<ClusterAuth>,
    /// TLS on every link: a throwaway CA and one certificate for 127.0.0.1.
    pub tls: Option<ClusterTls>,
}

/// The certificates of a cluster started with TLS on.
#[derive(Clone)]
pub struct ClusterTls {
    /// Holds the files below; removed when the last clone is dropped.
    pub dir: Arc<TempDir>,
    /// The CA certificate (PEM) every server and client trusts.
    pub ca_file: std::path::PathBuf,
    /// The servers' certificate and key (PEM), for `127.0.0.1` and `localhost`.
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
    /// What clients of the test trust.
    pub client: ClientTls,
}

impl ClusterTls {
    /// A fresh CA and a server certificate signed by it.
    pub fn generate() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("cannot create a temp dir")?;
        let ca = registry_cli::certs::new_ca("test cluster CA", 2)?;
        let names = ["127.0.0.1".to_string(), "localhost".to_string()];
        let server = registry_cli::certs::issue(&ca, &names, 2)?;
        let ca_file = dir.path().join("ca.pem");
        let cert_file = dir.path().join("server.pem");
        let key_file = dir.path().join("server-key.pem");
        std::fs::write(&ca_file, &ca.cert_pem)?;
        std::fs::write(&cert_file, &server.cert_pem)?;
        std::fs::write(&key_file, &server.key_pem)?;
        let client = ClientTls::new(Some(&ca_file))?;
        Ok(Self {
            dir: Arc::new(dir),
            ca_file,
            cert_file,
            key_file,
            client,
        })
    }

    fn apply(&self, security: &mut registry_rpc::auth::SecurityArgs) {
        security.tls_cert = Some(self.cert_file.clone());
        security.tls_key = Some(self.key_file.clone());
        security.tls_ca = Some(self.ca_file.clone());
    }
}

/// The credentials of a cluster started with auth on.
#[derive(Clone)]
pub struct ClusterAuth {
    /// Holds the files below; removed when the last clone is dropped.
    pub dir: Arc<TempDir>,
    /// The cluster secret every server reads.
    pub secret_file: std::path::PathBuf,
    /// The bootstrap admin key the meta nodes install into an empty ACL.
    pub admin_key_file: std::path::PathBuf,
    /// That admin key, for admin calls from the test.
    pub admin: Credential,
}

impl ClusterAuth {
    /// A fresh random cluster secret and admin key.
    pub fn generate() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("cannot create a temp dir")?;
        let secret_file = dir.path().join("cluster.secret");
        std::fs::write(&secret_file, format!("{}\n", Secret::generate()))?;
        let admin_text = format!("admin.bootstrap:{}", Secret::generate());
        let admin_key_file = dir.path().join("admin.key");
        std::fs::write(&admin_key_file, format!("{admin_text}\n"))?;
        Ok(Self {
            dir: Arc::new(dir),
            secret_file,
            admin_key_file,
            admin: Credential::parse(&admin_text)?,
        })
    }
}

impl ClusterConfig {
    pub fn new(metas: usize, datas: usize, sessions: usize) -> Self {
        Self {
            metas,
            datas,
            sessions,
            meta: MetaConfig {
                listen: "127.0.0.1:0".into(),
                renew_interval_ms: 200,
                lease_ms: 3_000,
                disconnect_grace_ms: 300,
                raft_heartbeat_ms: 50,
                raft_election_ms: 250,
                ..MetaConfig::default()
            },
            data: DataConfig {
                listen: "127.0.0.1:0".into(),
                session_cleanup_grace_ms: 1_000,
                ..DataConfig::default()
            },
            session: SessionConfig {
                listen: "127.0.0.1:0".into(),
                ack_timeout_ms: 1_000,
                ..SessionConfig::default()
            },
            auth: None,
            tls: None,
        }
    }

    /// Turns TLS on for every link: servers serve `https`/`wss` with a throwaway CA's
    /// certificate and trust that CA; the test's clients trust it too.
    pub fn with_tls(mut self) -> anyhow::Result<Self> {
        let tls = ClusterTls::generate()?;
        tls.apply(&mut self.meta.security);
        tls.apply(&mut self.data.security);
        tls.apply(&mut self.session.security);
        self.tls = Some(tls);
        Ok(self)
    }

    /// Turns auth on: every server gets the cluster secret, the meta nodes the admin key.
    pub fn with_auth(mut self) -> anyhow::Result<Self> {
        let auth = ClusterAuth::generate()?;
        let secret = Some(auth.secret_file.clone());
        self.meta.security.cluster_secret_file = secret.clone();
        self.meta.admin_key_file = Some(auth.admin_key_file.clone());
        self.data.security.cluster_secret_file = secret.clone();
        self.session.security.cluster_secret_file = secret;
        self.auth = Some(auth);
        Ok(self)
    }
}

/// Every view a subscriber was shown, in order (see [`Cluster::record_views`]).
pub type Views = Arc<parking_lot::Mutex<Vec<Vec<String>>>>;

pub struct Cluster {
    pub config: ClusterConfig,
    pub metas: Vec<Node<MetaServer>>,
    pub datas: Vec<Node<DataServer>>,
    pub sessions: Vec<Node<SessionServer>>,
    /// Meta data directories live here; removed when the cluster is dropped.
    pub dir: Arc<TempDir>,
    meta_addrs: Vec<String>,
}

impl Cluster {
    pub async fn start(config: ClusterConfig) -> anyhow::Result<Self> {
        crate::init_test_logging();
        let dir = Arc::new(tempfile::tempdir().context("cannot create a temp dir")?);
        let mut listeners = Vec::new();
        for _ in 0..config.metas {
            let l = StdListener::bind("127.0.0.1:0")?;
            l.set_nonblocking(true)?;
            listeners.push(l);
        }
        let meta_addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<Result<_, _>>()?;
        let peers: Vec<String> = meta_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let mut cluster = Self {
            config: config.clone(),
            metas: Vec::new(),
            datas: Vec::new(),
            sessions: Vec::new(),
            dir,
            meta_addrs,
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            let mut cfg = config.meta.clone();
            cfg.node_id = i as u64 + 1;
            cfg.peers = peers.clone();
            cfg.data_dir = cluster.dir.path().join(format!("meta-{}", i + 1));
            let node = Node::start(format!("meta-{}", i + 1), move |token| async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .map_err(|e| StartError::Other(e.to_string()))?;
                MetaServer::start_on(listener, cfg, token).await
            })
            .await?;
            cluster.metas.push(node);
        }
        cluster.wait_for_leader().await;
        if config.auth.is_some() {
            until("admin key installed", Duration::from_secs(15), || async {
                cluster
                    .metas
                    .iter()
                    .all(|m| m.server().state().guard.acl_revision() >= 1)
            })
            .await;
        }
        for _ in 0..config.datas {
            cluster.add_data().await?;
        }
        for _ in 0..config.sessions {
            cluster.add_session().await?;
        }
        cluster.wait_converged().await;
        Ok(cluster)
    }

    pub fn meta_addrs(&self) -> Vec<String> {
        self.meta_addrs.clone()
    }

    pub fn session_addrs(&self) -> Vec<String> {
        self.sessions
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.addr.to_string())
            .collect()
    }

    /// Waits until some meta node knows a leader.
    pub async fn wait_for_leader(&self) {
        until("a meta leader", Duration::from_secs(15), || async {
            self.metas
                .iter()
                .filter(|m| m.is_running())
                .any(|m| m.server().raft().status().leader_id.is_some())
        })
        .await;
    }

    /// The applied cluster view of the first running meta node with the highest epoch.
    pub fn view(&self) -> ClusterView {
        self.metas
            .iter()
            .filter(|m| m.is_running())
            .map(|m| m.server().raft().state().view)
            .max_by_key(|v| v.epoch)
            .unwrap_or_default()
    }

    /// Starts one more data server.
    pub async fn add_data(&mut self) -> anyhow::Result<()> {
        self.add_data_with(|_| {}).await
    }

    /// Starts one more data server with its configuration adjusted by `adjust`.
    pub async fn add_data_with(
        &mut self,
        adjust: impl FnOnce(&mut DataConfig),
    ) -> anyhow::Result<()> {
        let mut cfg = self.config.data.clone();
        cfg.meta = self.meta_addrs.clone();
        adjust(&mut cfg);
        let name = format!("data-{}", self.datas.len() + 1);
        let node = Node::start(name, move |token| DataServer::start(cfg, token)).await?;
        self.datas.push(node);
        Ok(())
    }

    /// Kills data server `i` (no goodbye) and waits until the meta has removed it from the
    /// view.
    pub async fn kill_data(&mut self, i: usize) {
        let victim = self.datas[i].server().id().clone();
        self.datas[i].kill();
        until(
            "the meta removes the killed data server",
            Duration::from_secs(10),
            || async { !self.view().members.contains_key(&victim) },
        )
        .await;
    }

    /// Waits until no running data server is still copying in a slot.
    pub async fn wait_slots_settled(&self) {
        until(
            "every gained slot copied in",
            Duration::from_secs(30),
            || async {
                self.datas
                    .iter()
                    .filter(|n| n.is_running())
                    .all(|d| d.server().state().slots.counts().0 == 0)
            },
        )
        .await;
    }

    /// Waits until every replica holds the same version of every dataInfoId as its primary.
    pub async fn wait_replicated(&self, ids: &[registry_common::DataInfoId]) {
        until(
            "replicas caught up with their primaries",
            Duration::from_secs(30),
            || async {
                let view = self.view();
                ids.iter().all(|id| {
                    let Some(a) = view.slots.assignment_of(id) else {
                        return true;
                    };
                    let store_of = |m: &registry_common::MemberId| {
                        self.datas
                            .iter()
                            .filter(|n| n.is_running())
                            .find(|n| n.server().id() == m)
                            .map(|n| n.server().state().store.version(id))
                    };
                    let primary = a.primary.as_ref().and_then(store_of);
                    a.replicas.iter().all(|r| store_of(r) == primary)
                })
            },
        )
        .await;
    }

    /// Sends an admin request to the meta leader (following redirects, retrying through an
    /// election) and returns its answer.
    pub async fn meta_admin(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let http = self.admin_http();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut last = None;
        while std::time::Instant::now() < deadline {
            let mut targets = self.meta_addrs.clone();
            while let Some(addr) = (!targets.is_empty()).then(|| targets.remove(0)) {
                match http.post::<_, serde_json::Value>(&addr, path, body).await {
                    Ok(v) => return Ok(v),
                    Err(registry_rpc::RpcError::Api(e)) if e.code.is_retryable() => {
                        if let Some(r) = e.redirect.clone() {
                            targets.insert(0, r);
                        }
                        last = Some(e.to_string());
                    }
                    Err(e) => last = Some(e.to_string()),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("no meta node accepted {path}: {last:?}")
    }

    /// An HTTP client that signs with the admin key when auth is on (and speaks TLS when
    /// the cluster does).
    pub fn admin_http(&self) -> registry_rpc::HttpClient {
        registry_rpc::HttpClient::new(Duration::from_secs(10))
            .with_signer(self.config.auth.as_ref().map(|a| a.admin.clone()))
            .with_tls(self.config.tls.as_ref().map(|t| t.client.clone()))
    }

    /// The SDK configuration of a test client of `sessions` (in order, over TLS when the
    /// cluster has it).
    pub fn client_config(&self, sessions: Vec<String>) -> ClientConfig {
        let mut config = ClientConfig::new(sessions);
        config.ordered = true;
        config.connect_timeout = Duration::from_secs(5);
        config.tls = self.config.tls.as_ref().map(|t| t.client.clone());
        config
    }

    /// Creates (or updates) principal `name` and one access key for it, and waits until every
    /// running session server knows the key.
    pub async fn principal(
        &self,
        name: &str,
        permissions: Permissions,
    ) -> anyhow::Result<Credential> {
        let mut put = serde_json::to_value(&permissions)?;
        put["name"] = serde_json::json!(name);
        self.meta_admin("/admin/v1/acl/put", &put).await?;
        self.new_key(name).await
    }

    /// Adds an access key to principal `name`; returns it once every session knows it.
    pub async fn new_key(&self, name: &str) -> anyhow::Result<Credential> {
        let created = self
            .meta_admin(
                "/admin/v1/acl/key-create",
                &serde_json::json!({ "principal": name }),
            )
            .await?;
        let key = Credential::new(
            created["keyId"].as_str().context("keyId")?,
            created["secret"].as_str().context("secret")?,
        )?;
        self.wait_acl(created["revision"].as_u64().context("revision")?)
            .await;
        Ok(key)
    }

    /// Revokes an access key and waits until every session has applied it.
    pub async fn revoke_key(&self, key_id: &str) -> anyhow::Result<()> {
        let done = self
            .meta_admin(
                "/admin/v1/acl/key-revoke",
                &serde_json::json!({ "keyId": key_id }),
            )
            .await?;
        self.wait_acl(done["revision"].as_u64().context("revision")?)
            .await;
        Ok(())
    }

    /// Waits until every running session server has applied ACL revision `revision`.
    pub async fn wait_acl(&self, revision: u64) {
        until(
            "sessions on the new ACL",
            Duration::from_secs(10),
            || async {
                self.sessions
                    .iter()
                    .filter(|n| n.is_running())
                    .all(|s| s.server().state().guard.acl_revision() >= revision)
            },
        )
        .await;
    }

    /// An SDK client on session `i` that signs its hello with `key`.
    pub async fn client_with(&self, i: usize, key: &Credential) -> anyhow::Result<Client> {
        let mut config = self.client_config(vec![self.sessions[i].addr.to_string()]);
        config.credential = Some(key.clone());
        Ok(Client::connect(config).await?)
    }

    /// Starts one more session server.
    pub async fn add_session(&mut self) -> anyhow::Result<()> {
        let mut cfg = self.config.session.clone();
        cfg.meta = self.meta_addrs.clone();
        let name = format!("session-{}", self.sessions.len() + 1);
        let node = Node::start(name, move |token| SessionServer::start(cfg, token)).await?;
        self.sessions.push(node);
        Ok(())
    }

    /// Whether session `i` holds a publisher registered as `regist_id`.
    pub fn session_holds(&self, i: usize, regist_id: &str) -> bool {
        self.sessions[i]
            .server()
            .state()
            .registry
            .publishers()
            .iter()
            .any(|p| p.key.regist_id == regist_id)
    }

    /// How many publishers data server `i` holds, from its status.
    pub async fn data_publishers(&self, i: usize) -> anyhow::Result<u64> {
        let status: serde_json::Value = self
            .admin_http()
            .get(
                &self.datas[i].addr.to_string(),
                "/admin/v1/status",
                Duration::from_secs(2),
            )
            .await?;
        status["publishers"]
            .as_u64()
            .context("the status carries no publisher count")
    }

    /// Subscribes `client` to `data_id` and records every view it is shown, each update's
    /// data sorted. Keep the returned subscriber alive for as long as views are wanted.
    pub async fn record_views(
        client: &Client,
        data_id: &str,
    ) -> anyhow::Result<(client_sdk::Subscriber, Views)> {
        let seen = Views::default();
        let rec = seen.clone();
        let cb: client_sdk::Callback = Arc::new(move |u| {
            let mut data = u.data.clone();
            data.sort();
            rec.lock().push(data);
        });
        let sub = client
            .subscribe_with(data_id, Default::default(), Some(cb))
            .await?;
        Ok((sub, seen))
    }

    /// Starts a session server (not in `sessions`) that reaches the meta cluster only at
    /// `meta` (a [`crate::proxy::Proxy`] in front of it, so a test can cut it off), and waits
    /// until it is a member.
    pub async fn session_via(&self, meta: &str) -> anyhow::Result<Node<SessionServer>> {
        let mut cfg = self.config.session.clone();
        cfg.meta = vec![meta.to_owned()];
        let before = self.view().members_of(Role::Session).count();
        let node = Node::start("session-via-proxy", move |token| {
            SessionServer::start(cfg, token)
        })
        .await?;
        until(
            "the session behind the proxy joined",
            Duration::from_secs(15),
            || async { self.view().members_of(Role::Session).count() > before },
        )
        .await;
        Ok(node)
    }

    /// Waits until every running data and session server is a member and every running
    /// data and session server has seen the latest epoch.
    pub async fn wait_converged(&self) {
        until(
            "cluster view converged",
            Duration::from_secs(15),
            || async {
                let view = self.view();
                let datas = self.datas.iter().filter(|n| n.is_running());
                let sessions = self.sessions.iter().filter(|n| n.is_running());
                let members_ok = view.members_of(Role::Data).count()
                    == self.datas.iter().filter(|n| n.is_running()).count()
                    && view.members_of(Role::Session).count()
                        == self.sessions.iter().filter(|n| n.is_running()).count();
                let data_ok = datas
                    .clone()
                    .all(|d| d.server().state().membership.view().epoch >= view.epoch);
                let session_ok = sessions
                    .clone()
                    .all(|s| s.server().state().membership.view().epoch >= view.epoch);
                members_ok && data_ok && session_ok
            },
        )
        .await;
    }

    /// An SDK client connected to session `i` only.
    pub async fn client(&self, i: usize) -> anyhow::Result<Client> {
        let config = self.client_config(vec![self.sessions[i].addr.to_string()]);
        Ok(Client::connect(config).await?)
    }

    /// An SDK client that knows every session (starting at session `i`).
    pub async fn client_all(&self, i: usize) -> anyhow::Result<Client> {
        let mut addrs = self.session_addrs();
        let n = addrs.len().max(1);
        addrs.rotate_left(i % n);
        Ok(Client::connect(self.client_config(addrs)).await?)
    }
}
