//! The cluster under fault: meta, data and session servers as OS processes, each on its own
//! loopback address (`127.0.0.x`) and connecting from it (`REGISTRY_CONNECT_FROM`), so packet
//! filter rules on source and destination cut the links between chosen servers alone.
//! Servers keep their address and port across restarts.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use registry_common::member::{ClusterView, Role};
use registry_rpc::HttpClient;

use crate::rss::Pids;

/// Where libfaketime lives on Debian (package `faketime`).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Meta,
    Data,
    Session,
}

/// One server process and how to start it again.
pub struct Server {
    pub tier: Tier,
    pub name: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    args: Vec<String>,
    bin: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Frozen by SIGSTOP.
    pub stopped: bool,
    /// The clock offset it runs with (libfaketime), if any.
    pub clock_offset_s: Option<i64>,
    /// Where the memory sampler finds its current process.
    pids: Pids,
}

impl Server {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process (again), with a clock offset when `offset_s` is set.
    pub fn start(&mut self, offset_s: Option<i64>) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .env("REGISTRY_WORKER_THREADS", "1")
            .env(registry_rpc::net::CONNECT_FROM_ENV, self.ip.to_string())
            .env(
                "RUST_LOG",
                std::env::var("CHAOS_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(off) = offset_s {
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME", format!("{off:+}s"))
                // Timers and timeouts run on the monotonic clock: leave it alone, as a
                // stepped wall clock does.
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_NO_CACHE", "1");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.pids.set(&self.name, Some(child.id()));
        self.child = Some(child);
        self.stopped = false;
        self.clock_offset_s = offset_s;
        Ok(())
    }

    /// SIGKILL (a frozen process dies too).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.pids.set(&self.name, None);
        }
        self.stopped = false;
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else {
            bail!("{} is not running", self.name)
        };
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill {sig} {pid} failed");
        }
        Ok(())
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn freeze(&mut self) -> anyhow::Result<()> {
        self.signal("-STOP")?;
        self.stopped = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn thaw(&mut self) -> anyhow::Result<()> {
        if self.stopped {
            self.signal("-CONT")?;
            self.stopped = false;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.thaw();
        self.kill();
    }
}

/// A free port on `ip`.
fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// The whole cluster.
pub struct ChaosCluster {
    pub servers: Vec<Server>,
    /// Which process each server runs as now (restarts included), for the memory sampler.
    pub pids: Pids,
    pub logs: PathBuf,
    _dir: tempfile::TempDir,
}

/// How many of each tier.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub metas: usize,
    pub datas: usize,
    pub sessions: usize,
    pub copies: usize,
}

impl ChaosCluster {
    /// Starts the cluster from the binaries in `bins`; server `i` (counting meta, data, then
    /// session) lives on `127.0.0.(20 + i)`.
    pub async fn start(bins: &Path, shape: Shape, logs: Option<PathBuf>) -> anyhow::Result<Self> {
        for b in ["meta-server", "data-server", "session-server"] {
            if !bins.join(b).exists() {
                bail!(
                    "{} not found; build the servers first: cargo build --release --bins",
                    bins.join(b).display()
                );
            }
        }
        let dir = tempfile::tempdir()?;
        let logs = match logs {
            Some(d) => {
                std::fs::create_dir_all(&d)?;
                d
            }
            None => dir.path().to_path_buf(),
        };
        let mut next_ip = 20u8;
        let mut ip = || {
            let a = Ipv4Addr::new(127, 0, 0, next_ip);
            next_ip += 1;
            a
        };
        let metas: Vec<(Ipv4Addr, u16)> = (0..shape.metas)
            .map(|_| {
                let a = ip();
                free_port(a).map(|p| (a, p))
            })
            .collect::<Result<_, _>>()?;
        let peers = metas
            .iter()
            .enumerate()
            .map(|(i, (a, p))| format!("{}={a}:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let meta_list = metas
            .iter()
            .map(|(a, p)| format!("{a}:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let pids = Pids::new();
        let mut servers = Vec::new();
        for (i, (a, p)) in metas.iter().enumerate() {
            let name = format!("meta-{}", i + 1);
            servers.push(Server {
                tier: Tier::Meta,
                args: vec![
                    "--listen".into(),
                    format!("{a}:{p}"),
                    "--node-id".into(),
                    (i + 1).to_string(),
                    "--peers".into(),
                    peers.clone(),
                    "--data-dir".into(),
                    dir.path().join(&name).display().to_string(),
                ],
                bin: bins.join("meta-server"),
                log: logs.join(format!("{name}.log")),
                name,
                ip: *a,
                port: *p,
                child: None,
                stopped: false,
                clock_offset_s: None,
                pids: pids.clone(),
            });
        }
        for (tier, n, bin) in [
            (Tier::Data, shape.datas, "data-server"),
            (Tier::Session, shape.sessions, "session-server"),
        ] {
            for i in 0..n {
                let a = ip();
                let p = free_port(a)?;
                let name = format!("{}-{}", bin.trim_end_matches("-server"), i + 1);
                servers.push(Server {
                    tier,
                    args: vec![
                        "--listen".into(),
                        format!("{a}:{p}"),
                        "--meta".into(),
                        meta_list.clone(),
                    ],
                    bin: bins.join(bin),
                    log: logs.join(format!("{name}.log")),
                    name,
                    ip: a,
                    port: p,
                    child: None,
                    stopped: false,
                    clock_offset_s: None,
                    pids: pids.clone(),
                });
            }
        }
        let mut cluster = Self {
            servers,
            pids,
            logs,
            _dir: dir,
        };
        for s in cluster.servers.iter_mut().filter(|s| s.tier == Tier::Meta) {
            s.start(None)?;
        }
        cluster.set_copies(shape.copies).await?;
        for s in cluster.servers.iter_mut().filter(|s| s.tier != Tier::Meta) {
            s.start(None)?;
        }
        cluster
            .wait_complete(Duration::from_secs(60))
            .await
            .context("the cluster did not form")?;
        Ok(cluster)
    }

    async fn set_copies(&self, copies: usize) -> anyhow::Result<()> {
        let http = HttpClient::new(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(30);
        let settings = serde_json::json!({"copies": copies, "slotCount": 256, "pushEnabled": true, "clientBlacklist": []});
        loop {
            for a in self.addrs(Tier::Meta) {
                if http
                    .post::<_, serde_json::Value>(&a, "/admin/v1/settings", &settings)
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the meta cluster did not elect a leader within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn addrs(&self, tier: Tier) -> Vec<String> {
        self.servers
            .iter()
            .filter(|s| s.tier == tier)
            .map(Server::addr)
            .collect()
    }

    pub fn indices(&self, tier: Tier) -> Vec<usize> {
        (0..self.servers.len())
            .filter(|&i| self.servers[i].tier == tier)
            .collect()
    }

    /// The cluster view from any running, unfrozen meta node.
    pub async fn view(&self) -> anyhow::Result<ClusterView> {
        let http = HttpClient::new(Duration::from_secs(1));
        let mut last = None;
        for s in self
            .servers
            .iter()
            .filter(|s| s.tier == Tier::Meta && s.running() && !s.stopped)
        {
            match http
                .get::<ClusterView>(&s.addr(), "/meta/v1/view", Duration::from_secs(1))
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        bail!("no meta node answered: {last:?}")
    }

    /// The index of the meta leader, by asking the meta nodes.
    pub async fn meta_leader(&self) -> Option<usize> {
        let http = HttpClient::new(Duration::from_secs(1));
        for i in self.indices(Tier::Meta) {
            let s = &self.servers[i];
            if !s.running() || s.stopped {
                continue;
            }
            let Ok(status) = http
                .get::<serde_json::Value>(&s.addr(), "/admin/v1/meta", Duration::from_secs(1))
                .await
            else {
                continue;
            };
            let Some(addr) = status["leaderAddr"].as_str() else {
                continue;
            };
            return self
                .indices(Tier::Meta)
                .into_iter()
                .find(|&j| self.servers[j].addr() == addr);
        }
        None
    }

    /// Waits until a meta leader answers, every data and session server is a member under
    /// its own address, and no data server is copying a slot in.
    pub async fn wait_complete(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let http = HttpClient::new(Duration::from_secs(1));
        loop {
            let mut ok = false;
            if let Ok(v) = self.view().await {
                let members_ok = [(Tier::Data, Role::Data), (Tier::Session, Role::Session)]
                    .iter()
                    .all(|(tier, role)| {
                        let want = self.addrs(*tier);
                        let have: Vec<&str> =
                            v.members_of(*role).map(|m| m.addr.as_str()).collect();
                        want.len() == have.len() && want.iter().all(|a| have.contains(&a.as_str()))
                    });
                if members_ok {
                    let mut syncing = 0;
                    for a in self.addrs(Tier::Data) {
                        match http
                            .get::<serde_json::Value>(
                                &a,
                                "/admin/v1/status",
                                Duration::from_secs(1),
                            )
                            .await
                        {
                            Ok(s) => syncing += s["syncingSlots"].as_u64().unwrap_or(1),
                            Err(_) => syncing += 1,
                        }
                    }
                    ok = syncing == 0;
                }
            }
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("cluster not complete after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
