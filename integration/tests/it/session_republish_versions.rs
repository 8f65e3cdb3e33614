//! The republish rule of `docs/protocol.md`: a republish carries a higher version. The same
//! version with other data is refused with `failed_precondition`; a lower version is
//! superseded (acknowledged, no effect); neither changes what subscribers see, and every
//! acknowledged republish at a higher version reaches them, however soon after the previous
//! ack it is sent.

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::raw::RawClient;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

fn register(version: u64, data: &str) -> Value {
    json!({"type": "register_publisher", "registId": "p1", "dataId": "svc.versions",
           "data": [data], "version": version})
}

/// Waits until the subscriber's newest view is exactly `data`.
async fn shows(sub: &mut client_sdk::Subscriber, data: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if sub
            .latest()
            .is_some_and(|u| u.data == vec![data.to_string()])
        {
            return;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(_)) => continue,
            _ => panic!("the subscriber never showed {data}: {:?}", sub.latest()),
        }
    }
}

fn code(frame: &Value) -> &str {
    frame["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_republish_moves_the_version_forward_or_is_refused() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap();
    let session = cluster.session_addrs()[0].clone();
    let mut publisher = RawClient::hello(&session, "versions-client").await.unwrap();
    let subscriber = cluster.client(0).await.unwrap();
    let mut sub = subscriber.subscribe("svc.versions").await.unwrap();
    let r = publisher.request(register(1, "a")).await.unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    shows(&mut sub, "a").await;

    // Same version, other data: refused, not acknowledged-and-dropped.
    let r = publisher.request(register(1, "b")).await.unwrap();
    assert_eq!(code(&r), "failed_precondition", "{r}");
    // The exact duplicate is fine (a retry).
    let r = publisher.request(register(1, "a")).await.unwrap();
    assert_eq!(r["type"], "ack", "{r}");

    // Each republish right after the previous ack: every one is applied.
    for v in 2..=11u64 {
        let data = format!("v{v}");
        let r = publisher.request(register(v, &data)).await.unwrap();
        assert_eq!(r["type"], "ack", "{r}");
    }
    shows(&mut sub, "v11").await;

    // A lower version: superseded by the newer one (acknowledged, no effect); subscribers
    // keep the newest.
    let r = publisher.request(register(5, "old")).await.unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    // A change after it is seen, and the superseded one was not applied late.
    let r = publisher.request(register(12, "v12")).await.unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    shows(&mut sub, "v12").await;
    let latest = sub.latest().unwrap();
    assert_eq!(latest.data, vec!["v12".to_string()]);
}
