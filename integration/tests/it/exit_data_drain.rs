//! SIGTERM on a data-server process drains it before it exits: the meta marks it draining,
//! its slots move to the other data servers while it still serves their copies, and only then
//! does it leave. Subscribers never see a publisher disappear. Started again on the same
//! address, it rejoins as a new member and takes slots again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::{eventually, until};
use integration::workload::{grid_data, Fleet};
use registry_common::member::{ClusterView, MemberId, Role};

use crate::process::{answers, free_port, ServerProcess};

const WAIT: Duration = Duration::from_secs(30);
const IDS: usize = 64;
const PER_ID: usize = 3;

fn data_args(cluster: &Cluster, addr: &str) -> Vec<String> {
    vec![
        "--listen".into(),
        addr.into(),
        "--meta".into(),
        cluster.meta_addrs().join(","),
        "--drain-timeout-ms".into(),
        "20000".into(),
    ]
}

/// The member id of the data server at `addr` once it holds slots and has copied them in.
async fn joined(cluster: &Cluster, addr: &str) -> MemberId {
    let id = eventually(
        "the data-server process to join and hold slots",
        WAIT,
        || async {
            let view = cluster.view();
            let m = view.members_of(Role::Data).find(|m| m.addr == addr)?;
            view.slots
                .slots
                .iter()
                .any(|s| s.holds(&m.id))
                .then(|| m.id.clone())
        },
    )
    .await;
    until("the process to be ready (slots copied in)", WAIT, || {
        answers(addr, "/ready")
    })
    .await;
    cluster.wait_slots_settled().await;
    id
}

fn holds_any(view: &ClusterView, id: &MemberId) -> bool {
    view.slots.slots.iter().any(|s| s.holds(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_data_server_before_it_leaves_and_it_rejoins() {
    let cluster = Cluster::start(ClusterConfig::new(3, 2, 1))
        .await
        .expect("cluster starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut process = ServerProcess::spawn(
        "data-server",
        &data_args(&cluster, &addr),
        &dir.path().join("data-1.log"),
    );
    let first = joined(&cluster, &addr).await;

    let fleet = Fleet::connect(&cluster, 4).await.expect("clients connect");
    let _pubs = fleet.publish_grid(IDS, PER_ID).await.expect("publish");
    let watch = fleet.watch(IDS).await.expect("subscribe");
    until("every subscriber holds every publisher", WAIT, || async {
        watch.complete(IDS, |i| grid_data(i, PER_ID)) == IDS
    })
    .await;
    assert!(
        holds_any(&cluster.view(), &first),
        "the process holds slots before SIGTERM"
    );

    // Watch every epoch the meta applies: the drain shows as an epoch where the process is
    // still a member, marked draining, and holds no slot.
    let raft = cluster.metas[0].server().raft().clone();
    let drained_while_member = Arc::new(AtomicBool::new(false));
    let observer = {
        let flag = drained_while_member.clone();
        let id = first.clone();
        tokio::spawn(async move {
            let mut rx = raft.watch_epoch();
            loop {
                let state = raft.state();
                if state.view.members.contains_key(&id)
                    && state.draining.contains(&id)
                    && !holds_any(&state.view, &id)
                {
                    flag.store(true, Ordering::Release);
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    };

    process.terminate();
    process.exits_cleanly(WAIT).await;
    until(
        "the drained server to leave the membership",
        WAIT,
        || async { !cluster.view().members.contains_key(&first) },
    )
    .await;
    observer.abort();
    assert!(
        drained_while_member.load(Ordering::Acquire),
        "the slots moved off the server while it was still a member; log:\n{}",
        process.log_text()
    );
    assert!(
        process
            .log_text()
            .contains("drained: every slot is held and copied elsewhere"),
        "the server saw its hand-off finish; log:\n{}",
        process.log_text()
    );
    until(
        "every subscriber still holds every publisher",
        WAIT,
        || async { watch.complete(IDS, |i| grid_data(i, PER_ID)) == IDS },
    )
    .await;
    assert_eq!(
        watch.disappearances(),
        vec![],
        "no subscriber saw a publisher disappear during the drain"
    );

    // --- back on the same address: a new member that takes slots again.
    let mut process = ServerProcess::spawn(
        "data-server",
        &data_args(&cluster, &addr),
        &dir.path().join("data-1-again.log"),
    );
    let second = joined(&cluster, &addr).await;
    assert_ne!(second, first, "the restarted process is a new member");
    assert!(!cluster.view().members.contains_key(&first));
    until("every subscriber holds every publisher", WAIT, || async {
        watch.complete(IDS, |i| grid_data(i, PER_ID)) == IDS
    })
    .await;
    assert_eq!(
        watch.disappearances(),
        vec![],
        "nothing disappeared on rejoin"
    );
    process.terminate();
    process.exits_cleanly(WAIT).await;
}
