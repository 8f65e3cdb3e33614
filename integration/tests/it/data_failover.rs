//! Killing a data server loses no publisher: its slots move to their replicas and every
//! subscriber still sees every publisher.

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::until;
use integration::workload::{data_id, grid_data, Fleet};
use registry_common::member::Role;
use registry_common::DataInfoId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_data_server_loses_no_publisher() {
    const IDS: usize = 1_000;
    const PER_ID: usize = 10;
    let mut cluster = Cluster::start(ClusterConfig::new(3, 3, 2)).await.unwrap();
    let fleet = Fleet::connect(&cluster, 20).await.unwrap();
    let watch = fleet.watch(IDS).await.unwrap();
    let _publishers = fleet.publish_grid(IDS, PER_ID).await.unwrap();
    until(
        "every subscriber sees all 10 publishers",
        Duration::from_secs(60),
        || async { watch.complete(IDS, |i| grid_data(i, PER_ID)) == IDS },
    )
    .await;
    let ids: Vec<DataInfoId> = (0..IDS)
        .map(|i| DataInfoId::new(&data_id(i), None, None).unwrap())
        .collect();
    cluster.wait_replicated(&ids).await;

    cluster.kill_data(1).await;
    assert_eq!(cluster.view().members_of(Role::Data).count(), 2);
    cluster.wait_slots_settled().await;

    // Every publisher is still held by the data tier and seen by its subscribers.
    until(
        "every subscriber still sees all 10 publishers",
        Duration::from_secs(30),
        || async { watch.complete(IDS, |i| grid_data(i, PER_ID)) == IDS },
    )
    .await;
    let view = cluster.view();
    for (i, id) in ids.iter().enumerate() {
        let primary = view.slots.primary_of(id).expect("a primary");
        let node = cluster
            .datas
            .iter()
            .find(|n| n.is_running() && n.server().id() == primary)
            .expect("primary is running");
        let datum = node.server().state().store.datum(id);
        assert_eq!(datum.publishers.len(), PER_ID, "{id} at its new primary");
        assert_eq!(
            datum
                .flat_data()
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>(),
            grid_data(i, PER_ID)
        );
    }
    assert_eq!(
        watch.disappearances(),
        Vec::new(),
        "no subscriber saw a publisher vanish"
    );
}
