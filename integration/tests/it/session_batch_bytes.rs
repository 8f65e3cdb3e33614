//! Write batches are bounded in bytes as well as ops: publishers carrying large payloads,
//! queued together while their slot has no data server, reach the data server that joins
//! next, whose request limit one batch of all of them would exceed, instead of being refused
//! as too large and retried forever.

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::until;
use registry_common::member::Role;

const PUBLISHERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_publishers_queued_together_all_land() {
    let mut config = ClusterConfig::new(1, 1, 1);
    // Room for one or two of these publishers per request, not for all of them.
    config.data.max_body_bytes = 1024 * 1024;
    let mut cluster = Cluster::start(config).await.unwrap();
    let client = cluster.client(0).await.unwrap();

    // No data server: the session acknowledges and parks the writes.
    cluster.datas[0].kill();
    until(
        "the data server to leave",
        Duration::from_secs(15),
        || async { cluster.view().members_of(Role::Data).count() == 0 },
    )
    .await;
    let payload = "x".repeat(300 * 1024);
    let mut handles = Vec::new();
    for i in 0..PUBLISHERS {
        handles.push(
            client
                .publish("svc.large", vec![format!("{i}:{payload}")])
                .await
                .unwrap(),
        );
    }

    // A new data server takes every slot; the parked writes go to it together.
    cluster.add_data().await.unwrap();
    let http = registry_rpc::HttpClient::new(Duration::from_secs(2));
    let data = cluster.datas[1].addr.to_string();
    until(
        "every large publisher reached the new data server",
        Duration::from_secs(15),
        || async {
            let Ok(status) = http
                .get::<serde_json::Value>(&data, "/admin/v1/status", Duration::from_secs(2))
                .await
            else {
                return false;
            };
            status["publishers"].as_u64() == Some(PUBLISHERS as u64)
        },
    )
    .await;
    drop(handles);
}
