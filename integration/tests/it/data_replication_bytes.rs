//! Replication batches are bounded in bytes: many large publishers changed together reach
//! the replicas in several requests under the replicas' request limit, instead of one batch
//! refused as too large and retried forever (which left every replica behind).

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::until;

const SERVICES: usize = 40;

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

    // Two copies of each: every data server holds each publisher as primary or replica.
    let http = registry_rpc::HttpClient::new(Duration::from_secs(2));
    let datas: Vec<String> = cluster.datas.iter().map(|d| d.addr.to_string()).collect();
    until(
        "both copies of every large publisher",
        Duration::from_secs(20),
        || async {
            for d in &datas {
                let Ok(status) = http
                    .get::<serde_json::Value>(d, "/admin/v1/status", Duration::from_secs(2))
                    .await
                else {
                    return false;
                };
                if status["publishers"].as_u64() != Some(SERVICES as u64) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    drop(handles);
}
