//! Replication batches are bounded in bytes: many large publishers changed together reach
//! the replicas in several requests under the replicas' request limit, instead of one batch
//! refused as too large and retried forever (which left every replica behind).

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::until;

const SERVICES: usize = 40;

/// Waits until every data server holds all `SERVICES` publishers (two copies of each, with
/// two data servers: each holds every publisher as primary or replica).
async fn every_data_server_holds_all(cluster: &Cluster, within: Duration) {
    until("both copies of every large publisher", within, || async {
        for i in 0..cluster.datas.len() {
            if cluster.data_publishers(i).await.ok() != Some(SERVICES as u64) {
                return false;
            }
        }
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_publishers_changed_together_all_reach_the_replicas() {
    let mut config = ClusterConfig::new(1, 2, 1);
    // Room for a handful of these publishers per request, not for all of them.
    config.data.max_body_bytes = 2 * 1024 * 1024;
    let cluster = Cluster::start(config).await.unwrap();
    let client = cluster.client(0).await.unwrap();
    let payload = "x".repeat(300 * 1024);
    // All at once, so that many changes wait for the replication lane together.
    let names: Vec<(String, String)> = (0..SERVICES)
        .map(|i| (format!("svc.large.{i}"), format!("{i}:{payload}")))
        .collect();
    let handles: Vec<_> = futures::future::join_all(
        names
            .iter()
            .map(|(name, data)| client.publish(name, vec![data.clone()])),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();

    every_data_server_holds_all(&cluster, Duration::from_secs(20)).await;
    drop(handles);
}

/// The case the byte cap is for: changes pile up in a replication lane while its replica is
/// unreachable (its address silent for a few seconds), and the first batch after it is back
/// holds them all. Without the cap that batch was over the replica's request limit, refused
/// with 413 and retried whole forever: the replica never caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_piled_up_behind_an_unreachable_replica_all_reach_it() {
    let mut config = ClusterConfig::new(1, 1, 1);
    config.data.max_body_bytes = 2 * 1024 * 1024;
    let mut cluster = Cluster::start(config).await.unwrap();
    // The second data server is reached, by everyone, through a proxy that can go silent.
    let link = integration::proxy::Proxy::start(None).unwrap();
    let advertised = link.addr().to_string();
    cluster
        .add_data_with(|c| c.advertise = Some(advertised))
        .await
        .unwrap();
    link.set_target(Some(cluster.datas[1].addr));
    cluster.wait_slots_settled().await;
    let client = cluster.client(0).await.unwrap();
    let payload = "x".repeat(300 * 1024);

    link.set_default_fault(integration::proxy::Fault::Blackhole);
    let names: Vec<(String, String)> = (0..SERVICES)
        .map(|i| (format!("svc.piled.{i}"), format!("{i}:{payload}")))
        .collect();
    let handles: Vec<_> = futures::future::join_all(
        names
            .iter()
            .map(|(name, data)| client.publish(name, vec![data.clone()])),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    // Every change the first data server is primary of waits in its lane to the second.
    let first = cluster.datas[0].server().state().clone();
    until(
        "the first data server holds its share",
        Duration::from_secs(20),
        || async {
            let view = cluster.view();
            names.iter().all(|(name, _)| {
                let id = registry_common::DataInfoId::new(name, None, None).unwrap();
                view.slots.primary_of(&id) != Some(&first.id)
                    || first.store.datum(&id).publishers.len() == 1
            })
        },
    )
    .await;
    link.heal();

    every_data_server_holds_all(&cluster, Duration::from_secs(30)).await;
    drop(handles);
}
