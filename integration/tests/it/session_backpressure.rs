//! Push flow control: bursts merge into few pushes, and a stalled subscriber costs bounded
//! memory and is closed with a reason without slowing anyone else.

use std::time::{Duration, Instant};

use integration::cluster::{Cluster, ClusterConfig};
use integration::raw::RawClient;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_republishes_arrives_as_far_fewer_pushes() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap();
    let addr = cluster.session_addrs()[0].clone();
    let mut raw = RawClient::hello(&addr, "burst-watcher").await.unwrap();
    raw.request(json!({"type": "register_subscriber", "registId": "w", "dataId": "svc.burst"}))
        .await
        .unwrap();
    let client = cluster.client(0).await.unwrap();
    let p = client
        .publish("svc.burst", vec!["n:0".into()])
        .await
        .unwrap();
    let started = Instant::now();
    let burst =
        futures::future::join_all((1..=1000).map(|n| p.republish(vec![format!("n:{n}")]))).await;
    assert!(burst.iter().all(Result::is_ok));
    let took = started.elapsed();
    let mut pushes = 0;
    let mut last_version = 0;
    loop {
        let push = raw.next_push(Duration::from_secs(10)).await.unwrap();
        pushes += 1;
        let v = push["version"].as_u64().unwrap();
        assert!(v >= last_version);
        last_version = v;
        if push["data"] == json!(["n:1000"]) {
            break;
        }
    }
    assert!(
        pushes < 100,
        "1000 republishes in {took:?} became {pushes} pushes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_bounded_and_closed_with_a_reason() {
    let mut config = ClusterConfig::new(1, 1, 1);
    config.session.ack_timeout_ms = 200;
    config.session.ack_retries = 2;
    config.session.max_merge_window_ms = 60_000;
    let cluster = Cluster::start(config).await.unwrap();
    let addr = cluster.session_addrs()[0].clone();
    let session = cluster.sessions[0].server().state().clone();

    // A subscriber that never acknowledges and stops reading after its subscription.
    let mut stalled = RawClient::hello(&addr, "stalled").await.unwrap();
    stalled.auto_ack = false;
    stalled
        .request(json!({"type": "register_subscriber", "registId": "s", "dataId": "svc.churn"}))
        .await
        .unwrap();
    // A healthy subscriber of the same service.
    let healthy = cluster.client(0).await.unwrap();
    let mut sub = healthy.subscribe("svc.churn").await.unwrap();
    let publisher = cluster.client(0).await.unwrap();
    let p = publisher
        .publish("svc.churn", vec!["n:0".into()])
        .await
        .unwrap();

    let mut peak = 0;
    let mut lags = Vec::new();
    for n in 1..=200 {
        let want = format!("n:{n}");
        let sent = Instant::now();
        p.republish(vec![want.clone()]).await.unwrap();
        loop {
            let u = tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .expect("the healthy subscriber keeps receiving")
                .unwrap();
            if u.data == [want.as_str()] {
                break;
            }
        }
        lags.push(sent.elapsed());
        peak = peak.max(session.metrics.outbox_frames.get());
    }
    // One push per subscription at most is ever queued for the stalled client.
    assert!(peak <= 4, "outbox frames peaked at {peak}");
    lags.sort();
    let p99 = lags[lags.len() * 99 / 100];
    assert!(
        p99 < Duration::from_secs(1),
        "healthy subscriber p99 {p99:?}"
    );

    let closed = stalled.closed(Duration::from_secs(10)).await.unwrap();
    assert!(closed.reason.contains("acknowledged"), "{closed:?}");
    assert!(
        session
            .metrics
            .closed
            .with_label_values(&["ack_timeout"])
            .get()
            >= 1
    );
}
