//! A three-node meta Raft cluster in one process, over real HTTP on 127.0.0.1: initialise,
//! elect, write, every node applies the same state; a restarted node recovers its state from
//! its directory; a node stopped while 1,000 entries were committed and the leader snapshotted
//! and purged its log catches up by snapshot install; a leader restart elects a new leader.
//! Every wait polls a condition up to a deadline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meta_server::raft::{MetaRaft, NodeId, RaftError, RaftRole, RaftSettings, TypeConfig};
use meta_server::state::{MetaCommand, MetaState};
use registry_common::error::{ApiError, ErrorCode};
use registry_common::member::{Member, MemberId, Role};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long any one condition may take to become true.
const DEADLINE: Duration = Duration::from_secs(10);

/// Entries committed while a follower is down (one snapshot interval).
const LAGGING_ENTRIES: usize = 1_000;

fn settings() -> RaftSettings {
    RaftSettings {
        heartbeat_ms: 50,
        election_timeout_min_ms: 200,
        election_timeout_max_ms: 400,
        snapshot_every_logs: 1000,
        rpc_timeout_ms: 500,
        ..RaftSettings::default()
    }
}

/// One meta node: its Raft and the HTTP server carrying its RPCs.
struct Node {
    id: NodeId,
    addr: SocketAddr,
    dir: PathBuf,
    raft: MetaRaft,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Node {
    /// Starts a node on `dir`, listening on `addr` (port 0: any free port).
    async fn start(id: NodeId, dir: &Path, addr: SocketAddr) -> Node {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let raft = MetaRaft::open(dir, id, addr.to_string(), settings())
            .await
            .expect("open raft");
        let (stop, stopped) = oneshot::channel::<()>();
        let app = raft.router();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Node {
            id,
            addr,
            dir: dir.to_owned(),
            raft,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Stops the Raft and the server (closing every connection to it).
    async fn stop(&mut self) {
        self.raft.shutdown().await.expect("shutdown");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(DEADLINE, server).await;
        }
    }

    /// Stops and starts again on the same directory and address.
    async fn restart(&mut self) {
        self.stop().await;
        self.restart_from_disk().await;
    }
}

fn register(id: &str) -> MetaCommand {
    MetaCommand::Register {
        member: Member {
            id: MemberId(id.into()),
            role: Role::Data,
            addr: format!("{id}.example:9600"),
            zone: String::new(),
            registered_at_ms: 0,
        },
        now_ms: 1_000,
    }
}

/// A session-server registration: cheap to apply (no slot placement), so a thousand of them
/// test the log and snapshots rather than the placement.
fn register_session(id: &str) -> MetaCommand {
    MetaCommand::Register {
        member: Member {
            id: MemberId(id.into()),
            role: Role::Session,
            addr: format!("{id}.example:9600"),
            zone: String::new(),
            registered_at_ms: 0,
        },
        now_ms: 1_000,
    }
}

/// Writes every command through whichever of `running` is the leader, in concurrent batches,
/// retrying what was refused or may not have committed (a loaded machine can delay the
/// leader's quorum acknowledgements past its lease, or move the leadership; every command is
/// idempotent). Returns the index of the leader that took the last batch.
async fn write_all(nodes: &[Node], running: &[usize], cmds: Vec<MetaCommand>) -> usize {
    let deadline = Instant::now() + 3 * DEADLINE;
    let mut leader = running[0];
    for chunk in cmds.chunks(100) {
        let mut pending: Vec<MetaCommand> = chunk.to_vec();
        while !pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "timed out writing {} entries",
                cmds.len()
            );
            if let Some(l) = running
                .iter()
                .copied()
                .find(|i| nodes[*i].raft.status().role == RaftRole::Leader)
            {
                leader = l;
            }
            let raft = &nodes[leader].raft;
            let results =
                futures::future::join_all(pending.iter().map(|c| raft.write(c.clone()))).await;
            pending = pending
                .into_iter()
                .zip(results)
                .filter_map(|(cmd, res)| match res {
                    Ok(_) => None,
                    Err(
                        RaftError::NotLeader { .. }
                        | RaftError::Discarded { .. }
                        | RaftError::Timeout,
                    ) => Some(cmd),
                    Err(e) => panic!("write failed: {e}"),
                })
                .collect();
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    leader
}

/// Polls `cond` every 20 ms until it holds; panics after `DEADLINE`.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if cond() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every running node recognises the same leader, and returns its index.
async fn agreed_leader(nodes: &[Node]) -> usize {
    let mut leader = None;
    wait_until("all nodes to agree on a leader", || {
        let ids: Vec<Option<NodeId>> = nodes.iter().map(|n| n.raft.status().leader_id).collect();
        match ids[0] {
            Some(l) if ids.iter().all(|x| *x == Some(l)) => {
                leader = nodes.iter().position(|n| n.id == l);
                leader.is_some_and(|i| nodes[i].raft.status().role == RaftRole::Leader)
            }
            _ => false,
        }
    })
    .await;
    leader.expect("leader index")
}

/// Waits until every node's applied state equals `want`.
async fn all_apply(nodes: &[Node], want: &MetaState) {
    wait_until("all nodes to apply the same state", || {
        nodes.iter().all(|n| n.raft.state() == *want)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_recover() {
    let tmp = TempDir::new().expect("tempdir");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let dir = tmp.path().join(format!("node-{id}"));
        nodes.push(Node::start(id, &dir, any).await);
    }
    for n in &nodes {
        assert!(n.raft.is_pristine().await.expect("pristine"));
    }

    // --- initialise on one node; a repeat (on any node) is a no-op.
    let voters: BTreeMap<NodeId, String> =
        nodes.iter().map(|n| (n.id, n.addr.to_string())).collect();
    nodes[0]
        .raft
        .initialize(voters.clone())
        .await
        .expect("initialize");
    nodes[0]
        .raft
        .initialize(voters.clone())
        .await
        .expect("initialize again");
    let l = agreed_leader(&nodes).await;
    let f = (l + 1) % 3;
    assert_eq!(*nodes[l].raft.watch_leader().borrow(), Some(nodes[l].id));
    assert_eq!(*nodes[f].raft.watch_leader().borrow(), Some(nodes[l].id));
    for n in &nodes {
        assert!(!n.raft.is_pristine().await.expect("pristine"));
        let st = n.raft.status();
        assert_eq!(st.voters, voters);
        assert_eq!(
            st.leader_addr.as_deref(),
            Some(nodes[l].addr.to_string().as_str())
        );
    }
    nodes[f]
        .raft
        .initialize(voters.clone())
        .await
        .expect("initialize on a follower");

    // --- writes go through the leader; a follower says where the leader is.
    match nodes[f].raft.write(register("d0")).await {
        Err(RaftError::NotLeader {
            leader_id,
            leader_addr,
        }) => {
            assert_eq!(leader_id, Some(nodes[l].id));
            assert_eq!(leader_addr, Some(nodes[l].addr.to_string()));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert!(matches!(
        nodes[f].raft.ensure_linearizable().await,
        Err(RaftError::NotLeader { .. })
    ));
    let mut epoch_rx = nodes[f].raft.watch_epoch();
    for (i, id) in ["d1", "d2", "d3"].iter().enumerate() {
        let resp = nodes[l].raft.write(register(id)).await.expect("write");
        assert!(resp.changed);
        assert_eq!(resp.epoch, i as u64 + 1);
    }
    // An idempotent retry changes nothing.
    let resp = nodes[l].raft.write(register("d1")).await.expect("write");
    assert!(!resp.changed);
    assert_eq!(resp.epoch, 3);
    nodes[l]
        .raft
        .ensure_linearizable()
        .await
        .expect("read barrier");
    let want = nodes[l].raft.state();
    assert_eq!(want.view.epoch, 3);
    assert_eq!(want.view.members.len(), 3);
    all_apply(&nodes, &want).await;
    tokio::time::timeout(DEADLINE, epoch_rx.wait_for(|e| *e == 3))
        .await
        .expect("epoch watch in time")
        .expect("epoch watch open");

    // --- a follower restarts: its state is back from disk before it hears the leader.
    let r = (l + 2) % 3;
    nodes[r].stop().await;
    nodes[l]
        .raft
        .write(register("d4"))
        .await
        .expect("write with one node down");
    nodes[r].restart_from_disk().await;
    assert!(
        nodes[r].raft.state().view.epoch >= 3,
        "state recovered at open"
    );
    assert_eq!(
        *nodes[r].raft.watch_epoch().borrow(),
        nodes[r].raft.state().view.epoch
    );
    let want = nodes[l].raft.state();
    assert_eq!(want.view.epoch, 4);
    all_apply(&nodes, &want).await;

    // --- a follower is down while 1,000 entries are committed and the leader snapshots (by
    // its policy, every 1,000 entries) and purges its log past everything the follower has:
    // the follower can only catch up by installing the leader's snapshot.
    let lagging_last = nodes[r].raft.status().last_log_index;
    nodes[r].stop().await;
    let cmds: Vec<MetaCommand> = (0..LAGGING_ENTRIES)
        .map(|i| register_session(&format!("s{i}")))
        .collect();
    // (On a loaded machine the leadership may move between the two running nodes.)
    let l = write_all(&nodes, &[l, f], cmds).await;
    let f = 3 - l - r;
    let epoch_after_lag = 4 + LAGGING_ENTRIES as u64;
    // No trigger: the snapshot policy builds the snapshot, then the log is purged up to it.
    wait_until("the leader to snapshot and purge by its policy", || {
        let st = nodes[l].raft.status();
        st.snapshot_index >= Some(LAGGING_ENTRIES as u64) && st.purged_index == st.snapshot_index
    })
    .await;
    let purged = nodes[l].raft.status().purged_index;
    assert!(
        purged > lagging_last,
        "the leader no longer holds the entries the follower needs"
    );
    nodes[r].restart_from_disk().await;
    let want = nodes[l].raft.state();
    assert_eq!(want.view.epoch, epoch_after_lag);
    all_apply(&nodes, &want).await;
    wait_until(
        "the follower to report the leader's snapshot as installed",
        || nodes[r].raft.status().snapshot_index >= purged,
    )
    .await;
    // An explicit snapshot covers everything applied.
    nodes[l].raft.trigger_snapshot().await.expect("snapshot");
    let st = nodes[l].raft.status();
    assert_eq!(st.snapshot_index, st.last_applied_index);

    // --- the snapshot also restores a node: restart the caught-up follower once more.
    nodes[r].restart().await;
    assert_eq!(
        nodes[r].raft.state(),
        want,
        "recovered from snapshot at open"
    );

    // --- the leader restarts: the others elect a new one, the old one rejoins and catches up.
    let old = nodes[l].id;
    let mut leader_rx = nodes[f].raft.watch_leader();
    nodes[l].stop().await;
    tokio::time::timeout(
        DEADLINE,
        leader_rx.wait_for(|x| x.is_some() && *x != Some(old)),
    )
    .await
    .expect("new leader in time")
    .expect("leader watch open");
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let deadline = Instant::now() + DEADLINE;
    let new_leader: Option<NodeId> = loop {
        let mut found = None;
        for i in &others {
            let raft = &nodes[*i].raft;
            if raft.status().role == RaftRole::Leader && raft.write(register("d6")).await.is_ok() {
                found = Some(raft.node_id());
                break;
            }
        }
        if found.is_some() {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for a new leader to accept writes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(new_leader, Some(old));
    nodes[l].restart_from_disk().await;
    // (The rejoining node may force one more election; any agreed leader will do.)
    let l2 = agreed_leader(&nodes).await;
    let want = nodes[l2].raft.state();
    assert_eq!(want.view.epoch, epoch_after_lag + 1);
    all_apply(&nodes, &want).await;

    for n in &mut nodes {
        n.stop().await;
    }
}

impl Node {
    /// Starts a stopped node again on its directory and address.
    async fn restart_from_disk(&mut self) {
        let dir = self.dir.clone();
        *self = Node::start(self.id, &dir, self.addr).await;
    }
}

/// The RPC endpoints answer bad input with a typed 400 and a stopped node with a typed 503
/// (which peers treat as "unreachable"); a fresh node answers a vote request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_endpoints_answer_typed_errors() {
    let tmp = TempDir::new().expect("tempdir");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut node = Node::start(1, &tmp.path().join("n1"), any).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{}", node.addr, path);

    let resp = http
        .post(url(meta_server::raft::PATH_APPEND))
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);
    let err: ApiError = resp.json().await.expect("api error body");
    assert_eq!(err.code, ErrorCode::Malformed);

    let resp = http
        .post(url(meta_server::raft::PATH_SNAPSHOT))
        .json(&serde_json::json!({"vote": 1}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);

    let vote =
        openraft::raft::VoteRequest::<TypeConfig>::new(openraft::impls::Vote::new(1, 2), None);
    let resp = http
        .post(url(meta_server::raft::PATH_VOTE))
        .json(&vote)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let answer: openraft::raft::VoteResponse<TypeConfig> = resp.json().await.expect("vote answer");
    assert!(answer.is_granted_to(&openraft::impls::Vote::new(1, 2)));

    node.raft.shutdown().await.expect("shutdown");
    let resp = http
        .post(url(meta_server::raft::PATH_VOTE))
        .json(&vote)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 503);
    let err: ApiError = resp.json().await.expect("api error body");
    assert_eq!(err.code, ErrorCode::Unavailable);
    node.stop().await;
}
