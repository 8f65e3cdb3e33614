//! Silent failures: a data server whose traffic to the meta cluster is blackholed (its
//! connections stay open, nothing gets through: no renewal, no heartbeat message, no close)
//! is removed once its heartbeat has been silent for three renew intervals and the disconnect
//! grace has passed (the lease is the backstop), and the epoch moves on. When its traffic
//! flows again it finds itself unknown and registers again.

use std::time::{Duration, Instant};

use registry_common::member::Role;

use crate::meta_fixture::{MetaCluster, CLIENTS, WAIT};
use integration::proxy::Fault;
use integration::wait::until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_data_server_is_removed_before_its_lease_runs_out() {
    let mut config = MetaCluster::fast_config();
    config.renew_interval_ms = 100;
    config.lease_ms = 1_500;
    config.disconnect_grace_ms = 300;
    let lease = Duration::from_millis(config.lease_ms);
    let renew = Duration::from_millis(config.renew_interval_ms);
    let mut cluster = MetaCluster::start(3, config).await;
    let keep = cluster.add_data().await;
    let silent = cluster.add_data().await;
    let leader = cluster.wait_heartbeat(&silent.id).await;
    let before = cluster.state(leader);

    // --- silence the data tier towards every meta node: connections stay open, no bytes.
    for n in &cluster.nodes {
        n.proxy.set_fault(CLIENTS, Fault::Blackhole);
    }
    let silenced = Instant::now();
    // The other data server keeps its membership by renewing directly at the leader (the test
    // renews for it, as its own traffic is silenced too).
    let direct = cluster.nodes[leader].direct();
    until("the silent data server to be removed", WAIT, || async {
        let _ = cluster
            .http
            .post::<_, serde_json::Value>(
                &direct,
                "/meta/v1/renew",
                &registry_common::proto::meta::MemberRequest {
                    id: keep.id.clone(),
                },
            )
            .await;
        !cluster.state(leader).view.members.contains_key(&silent.id)
    })
    .await;
    let removed_after = silenced.elapsed();
    // Its heartbeat connection stays open but silent: after three renew intervals of silence
    // the leader treats it as lost, and removes the server after the disconnect grace, before
    // the lease runs out (the lease stays the backstop).
    let grace = Duration::from_millis(300);
    assert!(
        removed_after >= renew * 2 + grace,
        "removed after {removed_after:?}, before its heartbeat had been silent long enough"
    );
    assert!(
        removed_after < lease + Duration::from_secs(2),
        "removed only after {removed_after:?} (lease {lease:?})"
    );
    let after = cluster.state(leader);
    assert!(after.view.epoch > before.view.epoch, "the epoch moved on");
    assert!(after.view.members.contains_key(&keep.id));
    assert!(after.view.slots.slots.iter().all(|s| !s.holds(&silent.id)));

    // --- traffic flows again: the server learns it is unknown and registers again.
    for n in &cluster.nodes {
        n.proxy.heal();
    }
    until("the data server to register again", WAIT, || async {
        cluster.serving_leader().is_some_and(|l| {
            cluster
                .members_of(l, Role::Data)
                .iter()
                .any(|m| m.id == silent.id)
        })
    })
    .await;
}
