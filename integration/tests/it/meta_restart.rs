//! Full restart: every meta node of a three-voter cluster crashes and starts again from its
//! directory. The cluster comes back with the same membership, epoch, slot table and settings,
//! and the data servers, which kept running and renewing into the void, are still members
//! (never removed and re-registered) and renew at the new leader.

use registry_common::member::ClusterSettings;
use registry_common::proto::meta::RenewResponse;
use serde_json::json;

use crate::meta_fixture::{retry_transient, MetaCluster, WAIT};
use integration::wait::until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_recovers_membership_epoch_and_table() {
    let mut config = MetaCluster::fast_config();
    config.renew_interval_ms = 100;
    let mut cluster = MetaCluster::start(3, config).await;
    let d1 = cluster.add_data().await;
    let d2 = cluster.add_data().await;
    let d3 = cluster.add_data().await;
    // Settings and a drain are in the state too (the drain reshapes the slot table).
    let leader = cluster.wait_leader().await;
    let addr = cluster.nodes[leader].direct();
    let settings = ClusterSettings {
        push_enabled: false,
        ..ClusterSettings::default()
    };
    let drain = json!({"ids": [d3.id]});
    let _: RenewResponse = retry_transient("settings", || {
        cluster.http.post(&addr, "/admin/v1/settings", &settings)
    })
    .await;
    let _: RenewResponse = retry_transient("drain", || {
        cluster.http.post(&addr, "/admin/v1/drain", &drain)
    })
    .await;
    let before = cluster.wait_same_state().await;
    assert_eq!(before.view.members.len(), 3);
    assert!(!before.view.settings.push_enabled);
    assert!(before.draining.contains(&d3.id));
    assert!(before
        .view
        .slots
        .slots
        .iter()
        .all(|s| s.primary.as_ref() != Some(&d3.id)));

    // --- every meta node crashes; the data servers keep running.
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.start_node(i, false).await;
        // Recovered from the node's own disk when `open` returns: never ahead of what was
        // committed, and nothing but a prefix of it.
        let recovered = cluster.state(i);
        assert!(recovered.view.epoch <= before.view.epoch);
    }
    cluster.wait_leader().await;
    let after = cluster.wait_same_state().await;
    assert_eq!(after.view.members, before.view.members, "same membership");
    assert_eq!(after.view.epoch, before.view.epoch, "same epoch");
    assert_eq!(after.view.slots, before.view.slots, "same slot table");
    assert_eq!(after.view.settings, before.view.settings, "same settings");
    assert_eq!(after.draining, before.draining);

    // The data servers renew at the new leader and stay (same registration time: never
    // removed and registered again).
    let renew = cluster.config.renew_interval_ms;
    until(
        "the data servers to renew at the new leader",
        WAIT,
        || async {
            let Some(l) = cluster.serving_leader() else {
                return false;
            };
            let ages = cluster.nodes[l].server().state().leases.ages();
            [&d1.id, &d2.id, &d3.id]
                .iter()
                .all(|id| ages.iter().any(|a| &a.id == *id && a.age_ms < 3 * renew))
        },
    )
    .await;
    let l = cluster.wait_leader().await;
    let now = cluster.state(l);
    assert_eq!(now.view.epoch, before.view.epoch);
    assert_eq!(now.view.members, before.view.members);
}
