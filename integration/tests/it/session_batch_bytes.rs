//! Write batches are bounded in bytes as well as ops: publishers carrying large payloads,
//! queued together, reach a data server whose request limit one batch of all of them would
//! exceed, instead of being refused as too large and retried forever.

use std::time::Duration;

use futures::future::join_all;
use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::until;

const PUBLISHERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_publishers_queued_together_all_land() {
    let mut config = ClusterConfig::new(1, 1, 1);
    // Room for one or two of these publishers per request, not for all of them.
    config.data.max_body_bytes = 1024 * 1024;
    let cluster = Cluster::start(config).await.unwrap();
    let client = cluster.client(0).await.unwrap();
    let payload = "x".repeat(300 * 1024);
    let publishes = (0..PUBLISHERS).map(|i| {
        let client = client.clone();
        let data = vec![format!("{i}:{payload}")];
        async move { client.publish("svc.large", data).await }
    });
    let handles: Vec<_> = join_all(publishes)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let http = registry_rpc::HttpClient::new(Duration::from_secs(2));
    let data = cluster.datas[0].addr.to_string();
    until(
        "every large publisher reached the data server",
        Duration::from_secs(15),
        || async {
            let status: serde_json::Value = http
                .get(&data, "/data/v1/status", Duration::from_secs(2))
                .await
                .unwrap();
            status["publishers"].as_u64() == Some(PUBLISHERS as u64)
        },
    )
    .await;
    drop(handles);
}
