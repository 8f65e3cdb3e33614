//! A registration the session acknowledged but the data tier refuses for good (here: one
//! publisher larger than the data server takes in a request) is not retried forever nor
//! dropped silently: the session withdraws it, tells its client with an error frame naming
//! it, and the connection's other publishers keep landing.

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::raw::RawClient;
use integration::wait::until;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_data_tier_refuses_is_withdrawn_and_reported() {
    let mut config = ClusterConfig::new(1, 1, 1);
    // Smaller than one of the publishers below (the session takes up to 512 KiB each).
    config.data.max_body_bytes = 256 * 1024;
    let cluster = Cluster::start(config).await.unwrap();
    let session = cluster.session_addrs()[0].clone();
    let mut client = RawClient::hello(&session, "refused-client").await.unwrap();

    let big = "x".repeat(400 * 1024);
    let r = client
        .request(
            json!({"type": "register_publisher", "registId": "big", "dataId": "svc.refused",
                        "data": [big], "version": 1}),
        )
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "the session takes it: {}", r["type"]);

    // The refusal arrives as an error frame without reqId that names the publisher.
    let deadline = tokio::time::Instant::now() + WAIT;
    let report = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let f = client
            .next_frame(left)
            .await
            .expect("a report of the refusal");
        if f["type"] == "error" && f.get("reqId").is_none_or(|v| v.is_null()) {
            break f;
        }
    };
    assert_eq!(report["code"], "payload_too_large", "{report}");
    assert!(
        report["message"].as_str().unwrap().contains("`big`"),
        "{report}"
    );

    // Withdrawn from the session; a small publisher of the same connection still lands.
    let state = cluster.sessions[0].server().state().clone();
    assert_eq!(state.metrics.publishers.get(), 0);
    let r = client
        .request(
            json!({"type": "register_publisher", "registId": "small", "dataId": "svc.refused",
                        "data": ["10.0.0.1:80"], "version": 1}),
        )
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    let data = cluster.datas[0].server().state().clone();
    let id = registry_common::DataInfoId::new("svc.refused", None, None).unwrap();
    until("the small publisher at the data tier", WAIT, || async {
        data.store.datum(&id).publishers.len() == 1
    })
    .await;
    let held = data.store.datum(&id);
    assert_eq!(held.publishers[0].key.regist_id, "small");
    assert_eq!(
        state
            .metrics
            .forwarded
            .with_label_values(&["dropped"])
            .get(),
        1
    );
}
