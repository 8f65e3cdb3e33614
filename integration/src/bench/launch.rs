//! The cluster under test as separate OS processes: 3 meta nodes, 3 data servers and 2
//! session servers on loopback, from the release binaries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use registry_common::auth::Credential;
use registry_common::member::{ClusterView, Role};
use registry_common::tls::ClientTls;
use registry_rpc::HttpClient;

use super::secure::BenchSecurity;
use crate::rss::{rss_kib, Pids};

/// One server process.
pub struct Proc {
    pub role: &'static str,
    pub name: String,
    pub addr: String,
    pub child: Option<Child>,
    /// Where the memory sampler looks the process up.
    pids: Pids,
    /// Its standard error, quoted when it stops before the cluster is up.
    log: PathBuf,
}

impl Proc {
    fn new(role: &'static str, name: String, addr: String, child: Child, log: PathBuf) -> Self {
        Self {
            role,
            name,
            addr,
            child: Some(child),
            pids: Pids::new(),
            log,
        }
    }

    /// If the process has stopped: how, and the last lines of its log.
    fn stopped(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
        Some(format!("{} stopped ({status}):\n  {tail}", self.name))
    }

    /// Enters the process in `pids` (and leaves it there, without a pid, once killed).
    fn watched(mut self, pids: &Pids) -> Self {
        pids.set(&self.name, self.pid());
        self.pids = pids.clone();
        self
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.pids.set(&self.name, None);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct ProcCluster {
    /// Which process each server runs as, for the memory sampler.
    pub pids: Pids,
    pub metas: Vec<Proc>,
    pub datas: Vec<Proc>,
    pub sessions: Vec<Proc>,
    /// Holds the meta nodes' data directories.
    _dir: tempfile::TempDir,
    /// The driver's calls to the servers (signed with the admin key and over TLS when the
    /// cluster is secure).
    http: HttpClient,
    /// Scrapes `/metrics` (public, but over TLS when the cluster is).
    scrape: reqwest::Client,
    /// `--secure`: the credentials and certificates, and the clients' access key.
    security: Option<(BenchSecurity, Credential)>,
}

/// A loopback port free now, for a server about to be started on it. Picked below the
/// kernel's range of ephemeral ports where there is room for it: a port the kernel hands out
/// (as `bind(0)` does) can be taken, between this check and the server's own bind, by any
/// outgoing connection, and the servers already running make many.
fn free_port() -> anyhow::Result<u16> {
    let lowest_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(0);
    if lowest_ephemeral > 20_000 {
        for _ in 0..100 {
            let port = rand::random_range(10_000..lowest_ephemeral);
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                return Ok(l.local_addr()?.port());
            }
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts one server process; `threads` is its runtime's worker count (0: one per core).
fn spawn(bin: &Path, args: &[String], threads: usize, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    Command::new(bin)
        .args(args)
        .env("REGISTRY_WORKER_THREADS", threads.to_string())
        .env(
            "RUST_LOG",
            std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

/// Starts data or session server number `n` (`role` is `data` or `session`) on a free
/// loopback port, joining the meta nodes `meta_list`.
fn spawn_member(
    bins: &Path,
    role: &'static str,
    n: usize,
    meta_list: &str,
    threads: usize,
    logs: &Path,
    extra: &[String],
) -> anyhow::Result<Proc> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut args = vec![
        "--listen".into(),
        addr.clone(),
        "--meta".into(),
        meta_list.to_owned(),
    ];
    args.extend_from_slice(extra);
    let name = format!("{role}-{n}");
    let log = logs.join(format!("{name}.log"));
    let child = spawn(&bins.join(format!("{role}-server")), &args, threads, &log)?;
    Ok(Proc::new(role, name, addr, child, log))
}

/// The directory holding the server binaries: `--bin-dir`, or this binary's directory.
pub fn bin_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = given {
        return Ok(d);
    }
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("this binary has no directory")?
        .to_path_buf())
}

impl ProcCluster {
    /// Resident memory of the data servers still running, summed, in KiB.
    pub fn data_rss_kib(&self) -> u64 {
        Self::rss_sum(&self.datas)
    }

    /// Resident memory of the session servers still running, summed, in KiB.
    pub fn session_rss_kib(&self) -> u64 {
        Self::rss_sum(&self.sessions)
    }

    fn rss_sum(procs: &[Proc]) -> u64 {
        procs
            .iter()
            .filter_map(|d| d.pid().and_then(rss_kib))
            .map(|(current, _)| current)
            .sum()
    }

    /// The access key and TLS roots SDK clients of this cluster need (`--secure`).
    pub fn client_credentials(&self) -> (Option<Credential>, Option<ClientTls>) {
        match &self.security {
            Some((security, key)) => (Some(key.clone()), Some(security.tls.clone())),
            None => (None, None),
        }
    }

    /// Starts 3 meta, 3 data and 2 session servers; `threads` is each one's runtime worker
    /// count (0: one per core). `secure`: auth and TLS on every link.
    pub async fn start(
        bins: &Path,
        copies: usize,
        threads: usize,
        secure: bool,
    ) -> anyhow::Result<Self> {
        for b in ["meta-server", "data-server", "session-server"] {
            if !bins.join(b).exists() {
                bail!(
                    "{} not found; build the servers first: cargo build --release --bins",
                    bins.join(b).display()
                );
            }
        }
        let dir = tempfile::tempdir()?;
        let security = if secure {
            Some(BenchSecurity::generate()?)
        } else {
            None
        };
        let extra = security
            .as_ref()
            .map(BenchSecurity::server_args)
            .unwrap_or_default();
        // Server logs (level from BENCH_SERVER_LOG) go to BENCH_LOG_DIR when set, so they
        // outlive the run; otherwise next to the meta nodes' data, removed at the end.
        let logs = match std::env::var_os("BENCH_LOG_DIR") {
            Some(d) => {
                let d = PathBuf::from(d);
                std::fs::create_dir_all(&d)?;
                d
            }
            None => dir.path().to_path_buf(),
        };
        let meta_ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_, _>>()?;
        let meta_addrs: Vec<String> = meta_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let peers = meta_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let pids = Pids::new();
        let mut metas = Vec::new();
        for (i, addr) in meta_addrs.iter().enumerate() {
            let mut args = vec![
                "--listen".into(),
                addr.clone(),
                "--node-id".into(),
                (i + 1).to_string(),
                "--peers".into(),
                peers.clone(),
                "--data-dir".into(),
                dir.path()
                    .join(format!("meta-{}", i + 1))
                    .display()
                    .to_string(),
            ];
            args.extend_from_slice(&extra);
            if let Some(s) = &security {
                args.extend(s.meta_args());
            }
            let log = logs.join(format!("meta-{}.log", i + 1));
            let child = spawn(&bins.join("meta-server"), &args, threads, &log)?;
            metas.push(
                Proc::new("meta", format!("meta-{}", i + 1), addr.clone(), child, log)
                    .watched(&pids),
            );
        }
        let meta_list = meta_addrs.join(",");
        let http = match &security {
            Some(s) => s.admin_http(Duration::from_secs(2)),
            None => HttpClient::new(Duration::from_secs(2)),
        };
        // Set the replica count before data servers join, so the first table is final.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let settings = serde_json::json!({"copies": copies, "slotCount": 256, "pushEnabled": true, "clientBlacklist": []});
            let mut done = false;
            for a in &meta_addrs {
                if http
                    .post::<_, serde_json::Value>(a, "/admin/v1/settings", &settings)
                    .await
                    .is_ok()
                {
                    done = true;
                    break;
                }
            }
            if done {
                break;
            }
            if Instant::now() > deadline {
                bail!("the meta cluster did not elect a leader within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut datas = Vec::new();
        for i in 0..3 {
            datas.push(
                spawn_member(bins, "data", i + 1, &meta_list, threads, &logs, &extra)?
                    .watched(&pids),
            );
        }
        let mut sessions = Vec::new();
        for i in 0..2 {
            sessions.push(
                spawn_member(bins, "session", i + 1, &meta_list, threads, &logs, &extra)?
                    .watched(&pids),
            );
        }
        let scrape = reqwest::Client::builder().timeout(Duration::from_secs(5));
        let scrape = match &security {
            Some(s) => scrape.tls_backend_preconfigured(s.tls.config_owned()),
            None => scrape,
        }
        .build()?;
        let mut cluster = Self {
            pids,
            metas,
            datas,
            sessions,
            _dir: dir,
            http,
            scrape,
            security: None,
        };
        cluster.wait_members(3, 2, Duration::from_secs(30)).await?;
        cluster.wait_settled(Duration::from_secs(30)).await?;
        if let Some(s) = security {
            let key = cluster.client_key().await?;
            cluster.security = Some((s, key));
        }
        Ok(cluster)
    }

    /// A principal granted every service and its access key, for the SDK clients.
    async fn client_key(&self) -> anyhow::Result<Credential> {
        let put = serde_json::json!({"name": "bench", "publish": ["*"], "subscribe": ["*"]});
        self.meta_write("/admin/v1/acl/put", &put).await?;
        let created = self
            .meta_write(
                "/admin/v1/acl/key-create",
                &serde_json::json!({"principal": "bench"}),
            )
            .await?;
        let key = Credential::new(
            created["keyId"].as_str().context("no keyId")?,
            created["secret"].as_str().context("no secret")?,
        )?;
        // The sessions follow the ACL by long poll: wait until both know the key.
        let revision = created["revision"].as_u64().context("no revision")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        for s in &self.sessions {
            loop {
                let status: serde_json::Value = self
                    .http
                    .get(&s.addr, "/admin/v1/status", Duration::from_secs(2))
                    .await?;
                if status["aclRevision"].as_u64().unwrap_or(0) >= revision {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{} did not apply ACL revision {revision}", s.name);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(key)
    }

    /// An admin write to whichever meta node leads.
    async fn meta_write(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for m in &self.metas {
                if let Ok(v) = self.http.post(&m.addr, path, body).await {
                    return Ok(v);
                }
            }
            if Instant::now() > deadline {
                bail!("no meta node accepted {path}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn meta_addrs(&self) -> Vec<String> {
        self.metas.iter().map(|m| m.addr.clone()).collect()
    }

    pub fn session_addrs(&self) -> Vec<String> {
        self.sessions.iter().map(|s| s.addr.clone()).collect()
    }

    /// The cluster view from any meta node.
    pub async fn view(&self) -> anyhow::Result<ClusterView> {
        let mut last = None;
        for a in self.meta_addrs() {
            match self
                .http
                .get::<ClusterView>(&a, "/meta/v1/view", Duration::from_secs(2))
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        bail!("no meta node answered: {last:?}")
    }

    /// Waits until the view has this many data and session members.
    pub async fn wait_members(
        &mut self,
        datas: usize,
        sessions: usize,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(v) = self.view().await {
                if v.members_of(Role::Data).count() == datas
                    && v.members_of(Role::Session).count() == sessions
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let stopped: Vec<String> = self
                    .metas
                    .iter_mut()
                    .chain(&mut self.datas)
                    .chain(&mut self.sessions)
                    .filter_map(Proc::stopped)
                    .collect();
                bail!(
                    "cluster did not reach {datas} data and {sessions} session members; {}",
                    if stopped.is_empty() {
                        "every server still runs".to_owned()
                    } else {
                        stopped.join("; ")
                    }
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until no data server is copying a slot in.
    pub async fn wait_settled(&self, within: Duration) -> anyhow::Result<()> {
        let http = &self.http;
        let deadline = Instant::now() + within;
        loop {
            let mut syncing = 0;
            for d in self.datas.iter().filter(|d| d.child.is_some()) {
                let status: serde_json::Value = http
                    .get(&d.addr, "/admin/v1/status", Duration::from_secs(2))
                    .await?;
                syncing += status["syncingSlots"].as_u64().unwrap_or(1);
            }
            if syncing == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{syncing} slots still syncing after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Counters of interest from every running data and session server's `/metrics`
    /// (name with labels -> value), for the report's diagnostics.
    pub async fn counters(&self) -> Vec<(String, Vec<(String, f64)>)> {
        const KEEP: &[&str] = &[
            "registry_session_repaired_total",
            "registry_session_repair_pass_seconds_sum",
            "registry_session_repair_pass_seconds_count",
            "registry_session_pull_pass_seconds_sum",
            "registry_session_pull_pass_seconds_count",
            "registry_session_pushes_total",
            "registry_session_pushes_merged_total",
            "registry_session_push_frames_total",
            "registry_session_closed_total",
            "registry_session_unknown_acks_total",
            "registry_session_resends_held_total",
            "registry_session_empty_protection_total",
            "registry_session_forwarded_total",
            "registry_data_notify_failures_total",
            "registry_data_replication_failures_total",
            "registry_data_slot_syncs_total",
        ];
        let mut out = Vec::new();
        for p in self
            .datas
            .iter()
            .chain(&self.sessions)
            .filter(|p| p.child.is_some())
        {
            let Some(text) = self.metrics_of(p).await else {
                continue;
            };
            let values = text
                .lines()
                .filter(|l| KEEP.iter().any(|k| l.starts_with(k)))
                .filter_map(|l| {
                    let (name, value) = l.rsplit_once(' ')?;
                    Some((name.to_string(), value.parse().ok()?))
                })
                .collect();
            out.push((p.name.clone(), values));
        }
        out
    }

    /// The `/metrics` text of one server, if it answers.
    pub async fn metrics_of(&self, p: &Proc) -> Option<String> {
        let scheme = if self.security.is_some() {
            "https"
        } else {
            "http"
        };
        let resp = self
            .scrape
            .get(format!("{scheme}://{}/metrics", p.addr))
            .send()
            .await
            .ok()?;
        resp.text().await.ok()
    }

    /// Every running server process.
    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.metas.iter().chain(&self.datas).chain(&self.sessions)
    }
}

/// Cumulative buckets of one Prometheus histogram: `(upper bound, count)` pairs in ascending
/// order of bound, `+Inf` (as `f64::INFINITY`) last.
pub type Buckets = Vec<(f64, u64)>;

/// The buckets of histogram `name` in one `/metrics` text (lines `name_bucket{le="..."} n`);
/// lines that do not parse are skipped.
pub fn parse_buckets(text: &str, name: &str) -> Buckets {
    let prefix = format!("{name}_bucket{{");
    let mut out: Buckets = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            let le = labels.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, value.parse::<f64>().ok()? as u64))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Bucket-wise sum of histograms with the same bounds (a missing side counts as empty).
pub fn add_buckets(a: &Buckets, b: &Buckets) -> Buckets {
    if a.is_empty() {
        return b.clone();
    }
    a.iter()
        .map(|(le, n)| {
            let other = b.iter().find(|(l, _)| l == le).map_or(0, |(_, m)| *m);
            (*le, n + other)
        })
        .collect()
}

/// Bucket-wise `after - before`: the observations made between two scrapes.
pub fn sub_buckets(after: &Buckets, before: &Buckets) -> Buckets {
    after
        .iter()
        .map(|(le, n)| {
            let old = before.iter().find(|(l, _)| l == le).map_or(0, |(_, m)| *m);
            (*le, n.saturating_sub(old))
        })
        .collect()
}

/// Estimate of quantile `q` from cumulative buckets, as Prometheus' `histogram_quantile`
/// does it: linear interpolation inside the bucket holding the rank (the last finite bound
/// if it falls in `+Inf`). Returns the estimate and the bounds of that bucket, or `None`
/// without observations.
pub fn quantile(buckets: &Buckets, q: f64) -> Option<(f64, f64, f64)> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(le, n) in buckets {
        if n as f64 >= rank {
            if le.is_infinite() {
                return Some((lower.0, lower.0, le));
            }
            let inside = (n - lower.1) as f64;
            let frac = if inside > 0.0 {
                (rank - lower.1 as f64) / inside
            } else {
                1.0
            };
            return Some((lower.0 + (le - lower.0) * frac, lower.0, le));
        }
        lower = (le, n);
    }
    None
}

impl ProcCluster {
    /// Histogram `name` summed over every running data server's `/metrics`.
    pub async fn data_histogram(&self, name: &str) -> Buckets {
        let mut sum = Buckets::new();
        for p in self.datas.iter().filter(|p| p.child.is_some()) {
            let Some(text) = self.metrics_of(p).await else {
                continue;
            };
            sum = add_buckets(&sum, &parse_buckets(&text, name));
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_parse_subtract_and_give_quantiles() {
        let text = "# TYPE h histogram\nh_bucket{le=\"0.001\"} 90\nh_bucket{le=\"0.01\"} 99\nh_bucket{le=\"+Inf\"} 100\nh_sum 0.2\nh_count 100\n";
        let b = parse_buckets(text, "h");
        assert_eq!(b, vec![(0.001, 90), (0.01, 99), (f64::INFINITY, 100)]);
        let (p50, lo, hi) = quantile(&b, 0.5).unwrap();
        assert!((p50 - 0.5 * 0.001 * 100.0 / 90.0).abs() < 1e-9 && lo == 0.0 && hi == 0.001);
        let (p99, lo, hi) = quantile(&b, 0.99).unwrap();
        assert!((p99 - 0.01).abs() < 1e-9 && lo == 0.001 && hi == 0.01);
        assert_eq!(quantile(&b, 0.999).map(|q| q.0), Some(0.01));
        let d = sub_buckets(&b, &vec![(0.001, 80), (0.01, 80), (f64::INFINITY, 80)]);
        assert_eq!(d, vec![(0.001, 10), (0.01, 19), (f64::INFINITY, 20)]);
        assert_eq!(add_buckets(&Vec::new(), &d), d);
        assert!(quantile(&Vec::new(), 0.5).is_none());
        assert!(parse_buckets("h_bucket{le=\"x\"} 1\ngarbage", "h").is_empty());
    }
}
