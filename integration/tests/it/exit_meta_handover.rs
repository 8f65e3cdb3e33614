//! SIGTERM on the meta leader's process hands leadership to another voter before it stops:
//! the log says so, the others agree on the new leader, and the cluster takes writes (a data
//! server joins). Started again on the same address and directory, the node rejoins as a
//! follower from its own disk, without initialising a cluster again, and catches up.

use std::time::Duration;

use data_server::{DataConfig, DataServer};
use integration::node::Node;
use integration::wait::{eventually, until};
use registry_common::member::Role;
use registry_common::proto::meta::MetaStatus;
use registry_rpc::HttpClient;

use crate::process::{answers, free_port, ServerProcess};

const WAIT: Duration = Duration::from_secs(30);

struct Metas {
    addrs: Vec<String>,
    dir: tempfile::TempDir,
    http: HttpClient,
}

impl Metas {
    fn args(&self, i: usize) -> Vec<String> {
        let peers: Vec<String> = self
            .addrs
            .iter()
            .enumerate()
            .map(|(n, a)| format!("{}={a}", n + 1))
            .collect();
        vec![
            "--listen".into(),
            self.addrs[i].clone(),
            "--node-id".into(),
            (i + 1).to_string(),
            "--peers".into(),
            peers.join(","),
            "--data-dir".into(),
            self.dir
                .path()
                .join(format!("meta-{}", i + 1))
                .display()
                .to_string(),
            "--raft-heartbeat-ms".into(),
            "50".into(),
            "--raft-election-ms".into(),
            "250".into(),
        ]
    }

    fn spawn(&self, i: usize, log: &str) -> ServerProcess {
        ServerProcess::spawn("meta-server", &self.args(i), &self.dir.path().join(log))
    }

    async fn status(&self, i: usize) -> Option<MetaStatus> {
        self.http
            .get(&self.addrs[i], "/admin/v1/meta", Duration::from_secs(1))
            .await
            .ok()
    }

    /// The leader every node in `nodes` agrees on.
    async fn agreed_leader(&self, nodes: &[usize]) -> u64 {
        eventually("the nodes to agree on a leader", WAIT, || async {
            let mut leader = None;
            for &i in nodes {
                let l = self.status(i).await?.leader?;
                if leader.is_some_and(|x| x != l) {
                    return None;
                }
                leader = Some(l);
            }
            leader
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_meta_leader_hands_leadership_over_and_it_rejoins() {
    let metas = Metas {
        addrs: (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect(),
        dir: tempfile::tempdir().expect("temp dir"),
        http: HttpClient::new(Duration::from_secs(2)),
    };
    let mut procs: Vec<ServerProcess> = (0..3)
        .map(|i| metas.spawn(i, &format!("meta-{}.log", i + 1)))
        .collect();
    let old = metas.agreed_leader(&[0, 1, 2]).await;
    let old_i = old as usize - 1;
    let term_before = metas.status(old_i).await.expect("leader answers").term;

    procs[old_i].terminate();
    procs[old_i].exits_cleanly(WAIT).await;
    let log = procs[old_i].log_text();
    assert!(
        log.contains("handed leadership over before stopping"),
        "the leader handed over before it stopped; log:\n{log}"
    );
    let rest: Vec<usize> = (0..3).filter(|i| *i != old_i).collect();
    let new = metas.agreed_leader(&rest).await;
    assert_ne!(new, old, "another node leads");
    let status = metas
        .status(new as usize - 1)
        .await
        .expect("new leader answers");
    assert!(status.term > term_before, "a new term");

    // The cluster takes writes: a data server registers through the remaining nodes.
    let meta_list: Vec<String> = rest.iter().map(|i| metas.addrs[*i].clone()).collect();
    let data = Node::start("data", move |token| {
        DataServer::start(
            DataConfig {
                listen: "127.0.0.1:0".into(),
                meta: meta_list,
                ..DataConfig::default()
            },
            token,
        )
    })
    .await
    .expect("a data server joins after the hand-over");
    let data_id = data.server().id().clone();

    // --- the old leader comes back on the same address and directory.
    procs[old_i] = metas.spawn(old_i, &format!("meta-{old}-again.log"));
    until("the restarted node to answer", WAIT, || {
        answers(&metas.addrs[old_i], "/ready")
    })
    .await;
    until(
        "the restarted node to follow the leader and hold the new member",
        WAIT,
        || async {
            let Some(s) = metas.status(old_i).await else {
                return false;
            };
            let view: Option<registry_common::member::ClusterView> = metas
                .http
                .get(&metas.addrs[old_i], "/meta/v1/view", Duration::from_secs(1))
                .await
                .ok();
            s.leader.is_some_and(|l| l != old)
                && s.voters.len() == 3
                && view.is_some_and(|v| v.members_of(Role::Data).any(|m| m.id == data_id))
        },
    )
    .await;
    let again = procs[old_i].log_text();
    assert!(
        !again.contains("initialising a new meta cluster"),
        "a restarted node never initialises again; log:\n{again}"
    );
    for p in &procs {
        p.terminate();
    }
    for p in &mut procs {
        p.exits_cleanly(WAIT).await;
    }
    drop(data);
}
