//! Fast failure detection through the heartbeat connection, with the production lease
//! timings (renew every 2 s, lease 10 s, grace 1 s): a data server *process* killed with
//! SIGKILL is removed, and the slot table moves on, within 2 s; a server whose connection
//! breaks and comes back within the grace is kept.

use std::process::Stdio;
use std::time::{Duration, Instant};

use meta_server::MetaConfig;
use registry_common::member::{MemberId, Role};

use crate::meta_fixture::{workspace_binary, MetaCluster, CLIENTS, WAIT};
use integration::wait::{eventually, until};

/// Fast Raft, production leases.
fn config() -> MetaConfig {
    let defaults = MetaConfig::default();
    let mut config = MetaCluster::fast_config();
    config.renew_interval_ms = defaults.renew_interval_ms;
    config.lease_ms = defaults.lease_ms;
    config.disconnect_grace_ms = defaults.disconnect_grace_ms;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_data_server_process_is_removed_within_two_seconds() {
    let mut cluster = MetaCluster::start(3, config()).await;
    let survivor = cluster.add_data().await;
    let leader = cluster.wait_leader().await;
    let known: Vec<MemberId> = cluster
        .members_of(leader, Role::Data)
        .into_iter()
        .map(|m| m.id)
        .collect();

    let mut child = tokio::process::Command::new(workspace_binary("data-server", "data-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--meta",
            &cluster.addrs().join(","),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the data-server binary starts");
    let process = eventually("the data-server process to join", WAIT, || async {
        let l = cluster.serving_leader()?;
        cluster
            .members_of(l, Role::Data)
            .into_iter()
            .find(|m| !known.contains(&m.id))
    })
    .await;
    let leader = cluster.wait_heartbeat(&process.id).await;
    let before = cluster.state(leader);
    assert!(
        before.view.slots.slots.iter().any(|s| s.holds(&process.id)),
        "the process holds slots"
    );

    // --- kill -9.
    child.kill().await.expect("SIGKILL");
    let killed = Instant::now();
    until(
        "the killed server to leave the membership and the slot table",
        WAIT,
        || async {
            let Some(l) = cluster.serving_leader() else {
                return false;
            };
            let view = cluster.state(l).view;
            !view.members.contains_key(&process.id)
                && view.slots.slots.iter().all(|s| !s.holds(&process.id))
        },
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "removed {took:?} after kill -9"
    );
    let after = cluster.state(cluster.wait_leader().await);
    assert!(after.view.epoch > before.view.epoch, "the epoch moved on");
    assert!(after
        .view
        .slots
        .slots
        .iter()
        .all(|s| s.primary.as_ref() == Some(&survivor.id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_that_comes_back_within_the_grace_is_kept() {
    let config = config();
    let grace = Duration::from_millis(config.disconnect_grace_ms);
    let mut cluster = MetaCluster::start(3, config).await;
    let flapper = cluster.add_data().await;
    let victim = cluster.add_data().await;
    let leader = cluster.wait_heartbeat(&flapper.id).await;
    assert_eq!(cluster.wait_heartbeat(&victim.id).await, leader);
    let before = cluster.state(leader);

    // --- at one moment: the victim crashes, and every data-tier connection to the leader
    // breaks. The flapper reconnects; the victim cannot.
    cluster.datas[1].kill();
    cluster.nodes[leader].proxy.reset(Some(CLIENTS));
    let broken = Instant::now();
    until("the flapper's heartbeat to be back", WAIT, || async {
        cluster.nodes[leader]
            .server()
            .state()
            .leases
            .is_connected(&flapper.id)
    })
    .await;
    let back = broken.elapsed();
    assert!(back < grace, "the flapper took {back:?} to come back");

    // The victim's removal shows the grace has passed and the leader looked at both.
    until("the victim to be removed", WAIT, || async {
        !cluster.state(leader).view.members.contains_key(&victim.id)
    })
    .await;
    assert!(broken.elapsed() >= grace);
    let after = cluster.state(leader);
    assert_eq!(
        after
            .view
            .members
            .get(&flapper.id)
            .map(|m| m.registered_at_ms),
        Some(before.view.members[&flapper.id].registered_at_ms),
        "the flapper was never removed"
    );
    assert_eq!(
        after.view.epoch,
        before.view.epoch + 1,
        "one change: the victim's removal"
    );
}
