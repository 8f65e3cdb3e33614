//! A data server restarted with empty memory is refilled, and no subscriber sees a
//! publisher disappear meanwhile.

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::until;
use integration::workload::{data_id, grid_data, Fleet};
use registry_common::DataInfoId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_empty_data_server_is_refilled_without_flapping() {
    const IDS: usize = 300;
    const PER_ID: usize = 10;
    let mut cluster = Cluster::start(ClusterConfig::new(3, 3, 2)).await.unwrap();
    let fleet = Fleet::connect(&cluster, 10).await.unwrap();
    let watch = fleet.watch(IDS).await.unwrap();
    let _publishers = fleet.publish_grid(IDS, PER_ID).await.unwrap();
    until(
        "every subscriber sees all publishers",
        Duration::from_secs(30),
        || async { watch.complete(IDS, |i| grid_data(i, PER_ID)) == IDS },
    )
    .await;
    let ids: Vec<DataInfoId> = (0..IDS)
        .map(|i| DataInfoId::new(&data_id(i), None, None).unwrap())
        .collect();
    cluster.wait_replicated(&ids).await;

    let addr = cluster.datas[1].addr;
    let old = cluster.datas[1].server().id().clone();
    cluster.datas[1].kill();
    // The same address again, as a restarted process would have (the port frees up once
    // the killed node's runtime has dropped its listener).
    let mut attempts = 0;
    loop {
        match cluster.add_data_with(|c| c.listen = addr.to_string()).await {
            Ok(()) => break,
            Err(e) if attempts < 200 => {
                attempts += 1;
                tracing::debug!("restart not bound yet: {e:#}");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => panic!("cannot restart on {addr}: {e:#}"),
        }
    }
    let new = cluster.datas.last().unwrap().server().id().clone();
    until(
        "the new incarnation replaced the old",
        Duration::from_secs(10),
        || async {
            let v = cluster.view();
            v.members.contains_key(&new) && !v.members.contains_key(&old)
        },
    )
    .await;
    cluster.wait_converged().await;
    cluster.wait_slots_settled().await;
    cluster.wait_replicated(&ids).await;

    // The restarted server holds a full copy of every slot it holds.
    let view = cluster.view();
    let restarted = cluster.datas.last().unwrap().server().state().clone();
    let mut held = 0;
    for id in &ids {
        if view.slots.assignment_of(id).is_some_and(|a| a.holds(&new)) {
            assert_eq!(restarted.store.datum(id).publishers.len(), PER_ID, "{id}");
            held += 1;
        }
    }
    assert!(held > 0, "the restarted server took some slots");
    until(
        "every subscriber sees all publishers",
        Duration::from_secs(30),
        || async { watch.complete(IDS, |i| grid_data(i, PER_ID)) == IDS },
    )
    .await;
    assert_eq!(watch.disappearances(), Vec::new());
}
