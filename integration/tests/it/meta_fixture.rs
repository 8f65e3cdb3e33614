//! The fixture of the meta tests: a meta cluster of real nodes on real disk, where every node
//! has its own loopback address (it listens there and makes its Raft connections from there)
//! and sits behind a fault-injecting [`Proxy`] whose address is the node's advertised address.
//! Peers, data servers and clients all reach a node through its proxy, so a test can cut the
//! links between two nodes (the proxies tell nodes apart by source address), silence the data
//! tier (it connects from 127.0.0.1), or break connections; a node can be killed and restarted
//! from its directory on a new port behind the same proxy. The test itself reads nodes directly
//! (in process, or over HTTP to the node's own address), never through a proxy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use data_server::{DataConfig, DataServer};
use integration::cluster::ClusterConfig;
use integration::node::Node;
use integration::proxy::{Fault, Proxy};
use integration::wait::{eventually, until};
use meta_server::state::MetaState;
use meta_server::{MetaConfig, MetaServer};
use registry_common::error::ErrorCode;
use registry_common::member::{Member, MemberId, Role};
use registry_rpc::server::StartError;
use registry_rpc::{HttpClient, RpcError};
use tempfile::TempDir;

/// How long a cluster-level condition may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// The source address of everything that is not a meta node (data servers, clients).
pub const CLIENTS: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One meta node slot: identity, proxy and directory survive restarts.
pub struct MetaNode {
    /// Raft id.
    pub id: u64,
    /// This node's own loopback address.
    pub ip: IpAddr,
    /// The proxy in front of the node; its address is the node's advertised address.
    pub proxy: Proxy,
    /// The node's data directory.
    pub dir: PathBuf,
    /// The running server, if any.
    pub node: Option<Node<MetaServer>>,
}

impl MetaNode {
    /// The advertised address (the proxy's).
    pub fn advertised(&self) -> String {
        self.proxy.addr().to_string()
    }

    pub fn is_running(&self) -> bool {
        self.node.as_ref().is_some_and(|n| n.is_running())
    }

    /// The running server. Panics if the node is down.
    pub fn server(&self) -> &MetaServer {
        self.node.as_ref().expect("meta node is running").server()
    }

    /// The node's own address (bypassing the proxy), for the test's HTTP calls.
    pub fn direct(&self) -> String {
        self.node
            .as_ref()
            .expect("meta node is running")
            .addr
            .to_string()
    }
}

pub struct MetaCluster {
    /// Settings of every meta node (id, peers, directory and addresses are filled in).
    pub config: MetaConfig,
    /// Settings of every data server (`meta` is filled in).
    pub data_config: DataConfig,
    /// Meta nodes; node id = index + 1.
    pub nodes: Vec<MetaNode>,
    /// In-process data servers.
    pub datas: Vec<Node<DataServer>>,
    /// HTTP client of the test's own calls.
    pub http: HttpClient,
    /// First three octets of the nodes' loopback addresses.
    net: [u8; 3],
    /// Holds every node directory.
    dir: TempDir,
}

/// Distinct loopback networks for clusters in this process (and, by the process id, mostly
/// distinct between processes).
fn next_net() -> [u8; 3] {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let seed = std::process::id().wrapping_mul(31).wrapping_add(n);
    // 127.0.x.x and 127.1.x.x are left alone (127.0.0.1 is where clients come from).
    [2 + (seed % 250) as u8, (n % 256) as u8, 0]
}

impl MetaCluster {
    /// Starts `voters` meta nodes with `config` (timings, leases); node 1 initialises.
    pub async fn start(voters: usize, config: MetaConfig) -> Self {
        integration::init_test_logging();
        let net = next_net();
        let mut cluster = Self {
            config,
            data_config: ClusterConfig::new(0, 0, 0).data,
            nodes: Vec::new(),
            datas: Vec::new(),
            http: HttpClient::new(Duration::from_secs(5)),
            net,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        for _ in 0..voters {
            cluster.new_slot();
        }
        let peers: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.advertised()))
            .collect();
        cluster.config.peers = peers;
        for i in 0..voters {
            cluster.start_node(i, false).await;
        }
        cluster.wait_leader().await;
        cluster
    }

    /// Fast Raft and lease timings (those of the shared cluster harness).
    pub fn fast_config() -> MetaConfig {
        ClusterConfig::new(0, 0, 0).meta
    }

    fn new_slot(&mut self) -> usize {
        let i = self.nodes.len();
        let id = i as u64 + 1;
        let ip = IpAddr::V4(Ipv4Addr::new(127, self.net[0], self.net[1], id as u8));
        let proxy = Proxy::start(None).expect("proxy starts");
        self.nodes.push(MetaNode {
            id,
            ip,
            proxy,
            dir: self.dir.path().join(format!("meta-{id}")),
            node: None,
        });
        i
    }

    /// Adds a node slot that starts with `--join` (to be added with `add-node`); returns its
    /// index.
    pub async fn start_joining_node(&mut self) -> usize {
        let i = self.new_slot();
        self.start_node(i, true).await;
        i
    }

    /// Starts (or restarts, from its directory) node `i` on a fresh port of its own address
    /// and points its proxy there. Retries while a killed predecessor still holds the
    /// database file.
    pub async fn start_node(&mut self, i: usize, join: bool) {
        let slot = &self.nodes[i];
        let mut cfg = self.config.clone();
        cfg.node_id = slot.id;
        cfg.advertise = Some(slot.advertised());
        cfg.data_dir = slot.dir.clone();
        cfg.join = join;
        cfg.listen = format!("{}:0", slot.ip);
        let ip = slot.ip;
        let node = eventually(&format!("meta node {} to start", slot.id), WAIT, || {
            let cfg = cfg.clone();
            async move {
                let listener = std::net::TcpListener::bind(SocketAddr::new(ip, 0)).ok()?;
                listener.set_nonblocking(true).ok()?;
                let started =
                    Node::start(format!("meta-{}", cfg.node_id), move |token| async move {
                        let listener = tokio::net::TcpListener::from_std(listener)
                            .map_err(|e| StartError::Other(e.to_string()))?;
                        MetaServer::start_on(listener, cfg, token).await
                    })
                    .await;
                match started {
                    Ok(node) => Some(node),
                    Err(e) => {
                        tracing::debug!("meta node did not start yet: {e:#}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        None
                    }
                }
            }
        })
        .await;
        self.nodes[i].proxy.set_target(Some(node.addr));
        self.nodes[i].node = Some(node);
    }

    /// Crashes node `i`: every task and socket dropped at once; its proxy resets new
    /// connections.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].proxy.set_target(None);
        self.nodes[i].proxy.reset(None);
        if let Some(mut node) = self.nodes[i].node.take() {
            node.kill();
        }
    }

    /// The advertised addresses of every node: the `--meta` list of data servers.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.advertised()).collect()
    }

    /// Indexes of running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_running())
            .collect()
    }

    /// The running node that is serving as leader (with the highest term, if a stale one
    /// still thinks it leads).
    pub fn serving_leader(&self) -> Option<usize> {
        self.running()
            .into_iter()
            .filter_map(|i| {
                let term = self.nodes[i].server().raft().serving_term()?;
                Some((term, i))
            })
            .max()
            .map(|(_, i)| i)
    }

    /// Waits until one running node serves as leader and every running voter follows it;
    /// returns its index.
    pub async fn wait_leader(&self) -> usize {
        eventually(
            "one serving meta leader that every voter follows",
            WAIT,
            || async {
                let l = self.serving_leader()?;
                let id = self.nodes[l].id;
                let agreed = self.running().into_iter().all(|i| {
                    let st = self.nodes[i].server().raft().status();
                    !st.voters.contains_key(&self.nodes[i].id) || st.leader_id == Some(id)
                });
                agreed.then_some(l)
            },
        )
        .await
    }

    /// The applied state of node `i`.
    pub fn state(&self, i: usize) -> MetaState {
        self.nodes[i].server().raft().state()
    }

    /// Waits until every running node has applied the same entries and holds the same state;
    /// returns that state.
    pub async fn wait_same_state(&self) -> MetaState {
        eventually("every meta node to apply the same state", WAIT, || async {
            let running = self.running();
            let first = running.first()?;
            let applied = self.nodes[*first]
                .server()
                .raft()
                .status()
                .last_applied_index;
            let state = self.state(*first);
            let same = running.iter().all(|i| {
                self.nodes[*i].server().raft().status().last_applied_index == applied
                    && self.state(*i) == state
            });
            same.then_some(state)
        })
        .await
    }

    /// Cuts every link between nodes of different groups (both directions); connections stay
    /// open and go silent.
    pub fn partition(&self, groups: &[&[usize]]) {
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        for (i, node) in self.nodes.iter().enumerate() {
            for (j, other) in self.nodes.iter().enumerate() {
                if i != j && group_of(i) != group_of(j) {
                    node.proxy.set_fault(other.ip, Fault::Blackhole);
                }
            }
        }
    }

    /// Lifts every fault on every proxy.
    pub fn heal(&self) {
        for n in &self.nodes {
            n.proxy.heal();
        }
    }

    /// Starts an in-process data server that reaches the meta cluster through the proxies;
    /// waits until it is a member. Returns its member.
    pub async fn add_data(&mut self) -> Member {
        self.add_data_advertising(None).await
    }

    /// Starts a data server that tells the cluster it is reached at `advertise` (its bound
    /// address when `None`).
    pub async fn add_data_advertising(&mut self, advertise: Option<String>) -> Member {
        let mut cfg = self.data_config.clone();
        cfg.meta = self.addrs();
        cfg.advertise = advertise;
        let name = format!("data-{}", self.datas.len() + 1);
        let node = Node::start(name, move |token| DataServer::start(cfg, token))
            .await
            .expect("data server starts");
        let member = node.server().state().membership.member().clone();
        self.datas.push(node);
        let id = member.id.clone();
        until("the data server to be a member", WAIT, || async {
            self.serving_leader()
                .is_some_and(|l| self.state(l).view.members.contains_key(&id))
        })
        .await;
        member
    }

    /// Waits until member `id`'s heartbeat connection is open on the serving leader.
    pub async fn wait_heartbeat(&self, id: &MemberId) -> usize {
        eventually(
            "the member's heartbeat connection on the leader",
            WAIT,
            || async {
                let l = self.serving_leader()?;
                self.nodes[l]
                    .server()
                    .state()
                    .leases
                    .is_connected(id)
                    .then_some(l)
            },
        )
        .await
    }

    /// Members of `role` in node `i`'s state.
    pub fn members_of(&self, i: usize, role: Role) -> Vec<Member> {
        self.state(i).view.members_of(role).cloned().collect()
    }
}

/// Retries `call` while it fails the way a busy or changing leadership makes calls fail
/// (`not_leader`, `unavailable`, `timeout`, unreachable), as every client of the meta cluster
/// does; any other error, or running out of time, fails the test.
pub async fn retry_transient<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RpcError>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match call().await {
            Ok(v) => return v,
            Err(e) if is_transient(&e) && tokio::time::Instant::now() < deadline => {
                tracing::debug!("{what}: retrying after {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

fn is_transient(e: &RpcError) -> bool {
    match e {
        RpcError::Api(api) => matches!(
            api.code,
            ErrorCode::NotLeader | ErrorCode::Unavailable | ErrorCode::Timeout
        ),
        RpcError::Timeout(_) | RpcError::Unreachable(_) => true,
        RpcError::BadAnswer(_) => false,
    }
}

/// A session-server member that no process backs (it never renews), for writes.
pub fn fake_session(id: &str) -> Member {
    Member {
        id: MemberId(id.into()),
        role: Role::Session,
        addr: format!("{id}.invalid:9600"),
        zone: String::new(),
        registered_at_ms: 0,
    }
}

/// Path of a binary of another crate of this workspace (`target/<profile>/<name>`, next to
/// the directory of the test executable `target/<profile>/deps/<test>`).
///
/// `cargo test` builds the binaries of the package under test only, so a binary of another
/// package is built here, once per test process, with the cargo that runs the tests.
pub fn workspace_binary(package: &str, name: &str) -> PathBuf {
    /// Binaries this process has built already.
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .to_path_buf();
    let path = dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.iter().any(|b| b == name) {
        return path;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut build = std::process::Command::new(cargo);
    build
        .args(["build", "--quiet", "--package", package, "--bin", name])
        .arg("--manifest-path")
        .arg(&manifest);
    match dir.file_name().and_then(|p| p.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
    }
    // The target directory is the one the tests were built in, wherever it is.
    if let Some(target) = dir.parent() {
        build.env("CARGO_TARGET_DIR", target);
    }
    let status = build.status();
    assert!(
        matches!(status, Ok(s) if s.success()) && path.is_file(),
        "building {} failed ({status:?}): try `cargo build --package {package} --bin {name}`",
        path.display()
    );
    built.push(name.to_string());
    path
}
