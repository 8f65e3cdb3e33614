//! Scale-out and drain under a steady publish load: slots move, nothing is lost, the load
//! stays balanced.

use std::collections::BTreeSet;
use std::time::Duration;

use client_sdk::Publisher;
use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::until;
use integration::workload::{data_id, grid_data, payload, Fleet};
use registry_common::member::{MemberId, Role};
use registry_common::slot::slot_of;
use registry_common::DataInfoId;

const IDS: usize = 300;
const PER_ID: usize = 10;
/// Services added while the data tier changes.
const LOAD_IDS: usize = 60;
const LOAD_PER_ID: usize = 3;

/// Publishes `LOAD_IDS x LOAD_PER_ID` new publishers one after another.
async fn steady_load(fleet: &Fleet) -> Vec<Publisher> {
    let mut out = Vec::new();
    for i in IDS..IDS + LOAD_IDS {
        for p in 0..LOAD_PER_ID {
            let client = &fleet.clients[(i + p) % fleet.clients.len()];
            out.push(
                client
                    .publish(&data_id(i), vec![payload(i, p)])
                    .await
                    .expect("publish under load"),
            );
        }
    }
    out
}

fn expected(i: usize) -> BTreeSet<String> {
    if i < IDS {
        grid_data(i, PER_ID)
    } else {
        grid_data(i, LOAD_PER_ID)
    }
}

/// Checks every publisher at its primary's store.
fn assert_all_held(cluster: &Cluster) {
    let view = cluster.view();
    for i in 0..IDS + LOAD_IDS {
        let id = DataInfoId::new(&data_id(i), None, None).unwrap();
        let primary = view.slots.primary_of(&id).expect("a primary");
        let node = cluster
            .datas
            .iter()
            .find(|n| n.is_running() && n.server().id() == primary)
            .expect("primary is running");
        let got: BTreeSet<String> = node
            .server()
            .state()
            .store
            .datum(&id)
            .flat_data()
            .into_iter()
            .collect();
        assert_eq!(got, expected(i), "{id} at its primary");
    }
}

async fn setup() -> (Cluster, Fleet) {
    let cluster = Cluster::start(ClusterConfig::new(3, 3, 2)).await.unwrap();
    let fleet = Fleet::connect(&cluster, 10).await.unwrap();
    (cluster, fleet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_data_server_takes_its_share_without_losing_a_publisher() {
    let (mut cluster, fleet) = setup().await;
    let watch = fleet.watch(IDS + LOAD_IDS).await.unwrap();
    let _grid = fleet.publish_grid(IDS, PER_ID).await.unwrap();
    until(
        "initial publishers seen",
        Duration::from_secs(30),
        || async { watch.complete(IDS, expected) == IDS },
    )
    .await;

    let (load, added) = tokio::join!(steady_load(&fleet), cluster.add_data());
    added.unwrap();
    drop(load);
    cluster.wait_converged().await;
    cluster.wait_slots_settled().await;
    until(
        "every publisher seen after the scale-out",
        Duration::from_secs(30),
        || async { watch.complete(IDS + LOAD_IDS, expected) == IDS + LOAD_IDS },
    )
    .await;
    assert_all_held(&cluster);
    assert_eq!(watch.disappearances(), Vec::new());

    // Publishers held per server (primary and replica copies), by the slot table.
    let view = cluster.view();
    let mut per_slot = vec![0usize; view.slots.slot_count() as usize];
    for i in 0..IDS + LOAD_IDS {
        let id = DataInfoId::new(&data_id(i), None, None).unwrap();
        per_slot[slot_of(&id, view.slots.slot_count()) as usize] += expected(i).len();
    }
    let servers: Vec<MemberId> = view.members_of(Role::Data).map(|m| m.id.clone()).collect();
    assert_eq!(servers.len(), 4);
    let held: Vec<usize> = servers
        .iter()
        .map(|s| {
            view.slots
                .slots
                .iter()
                .enumerate()
                .filter(|(_, a)| a.holds(s))
                .map(|(slot, _)| per_slot[slot])
                .sum()
        })
        .collect();
    let mean = held.iter().sum::<usize>() as f64 / held.len() as f64;
    let max = *held.iter().max().unwrap() as f64;
    assert!(
        max <= 1.3 * mean,
        "publishers per server {held:?}, mean {mean}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_data_server_hands_off_every_slot() {
    let (mut cluster, fleet) = setup().await;
    let watch = fleet.watch(IDS + LOAD_IDS).await.unwrap();
    let _grid = fleet.publish_grid(IDS, PER_ID).await.unwrap();
    until(
        "initial publishers seen",
        Duration::from_secs(30),
        || async { watch.complete(IDS, expected) == IDS },
    )
    .await;

    let drained = cluster.datas[0].server().id().clone();
    let drain = async {
        let body = serde_json::json!({"ids": [drained.clone()]});
        cluster
            .meta_admin("/admin/v1/drain", &body)
            .await
            .expect("the meta leader accepts the drain");
    };
    let (load, ()) = tokio::join!(steady_load(&fleet), drain);
    until(
        "the drained server holds no slot",
        Duration::from_secs(10),
        || async { !cluster.view().slots.slots.iter().any(|a| a.holds(&drained)) },
    )
    .await;
    cluster.wait_slots_settled().await;
    // Now it can leave.
    cluster.datas[0].stop().await;
    cluster.wait_converged().await;
    until(
        "every publisher seen after the drain",
        Duration::from_secs(30),
        || async { watch.complete(IDS + LOAD_IDS, expected) == IDS + LOAD_IDS },
    )
    .await;
    drop(load);
    assert_all_held(&cluster);
    assert_eq!(watch.disappearances(), Vec::new());
}
