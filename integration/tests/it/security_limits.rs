//! Caps: a connection over its publisher, subscription or registration-rate cap gets typed
//! errors and holds no more than its cap; a session at its connection cap refuses new
//! connections; other clients are not disturbed.

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::raw::RawClient;
use registry_common::DataInfoId;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn code(frame: &Value) -> &str {
    frame["code"].as_str().unwrap_or_default()
}

async fn publish(conn: &mut RawClient, regist_id: &str, data_id: &str) -> Value {
    conn.request(json!({
        "type": "register_publisher",
        "registId": regist_id,
        "dataId": data_id,
        "data": ["10.0.0.1:1"],
        "version": 1,
    }))
    .await
    .unwrap()
}

#[tokio::test]
async fn a_connection_past_its_caps_gets_typed_errors() {
    let mut config = ClusterConfig::new(1, 1, 1);
    config.session.max_publishers_per_conn = 5;
    config.session.max_subscriptions_per_conn = 3;
    let cluster = Cluster::start(config).await.unwrap();
    let addr = cluster.session_addrs()[0].clone();
    let mut conn = RawClient::hello(&addr, "greedy").await.unwrap();

    for i in 0..5 {
        let r = publish(&mut conn, &format!("p{i}"), &format!("svc.cap.{i}")).await;
        assert_eq!(r["type"], "ack", "publisher {i}: {r}");
    }
    let r = publish(&mut conn, "p5", "svc.cap.5").await;
    assert_eq!(
        (r["type"].as_str(), code(&r)),
        (Some("error"), "limit_exceeded")
    );
    // Re-registering one it holds is not a new publisher: allowed.
    let r = publish(&mut conn, "p0", "svc.cap.0").await;
    assert_eq!(r["type"], "ack", "{r}");

    for i in 0..3 {
        let r = conn
            .request(json!({"type": "register_subscriber", "registId": format!("s{i}"), "dataId": "svc.cap.0"}))
            .await
            .unwrap();
        assert_eq!(r["type"], "ack", "subscription {i}: {r}");
    }
    let r = conn
        .request(json!({"type": "register_subscriber", "registId": "s3", "dataId": "svc.cap.0"}))
        .await
        .unwrap();
    // The ack of a subscription may follow pushes of the earlier ones: skip those.
    let r = if r["type"] == "push" {
        loop {
            let f = conn.next_frame(WAIT).await.unwrap();
            if f["type"] != "push" {
                break f;
            }
        }
    } else {
        r
    };
    assert_eq!(
        (r["type"].as_str(), code(&r)),
        (Some("error"), "limit_exceeded"),
        "{r}"
    );

    // The connection is still served, and holds exactly its cap at the session and the data
    // tier.
    let r = conn.request(json!({"type": "ping"})).await.unwrap();
    assert!(r["type"] == "pong" || r["type"] == "push", "{r}");
    let session = cluster.sessions[0].server().state();
    assert_eq!(session.metrics.publishers.get(), 5);
    integration::wait::until("the five publishers at the data tier", WAIT, || async {
        (0..6)
            .filter(|i| {
                let id = DataInfoId::new(&format!("svc.cap.{i}"), None, None).unwrap();
                cluster
                    .datas
                    .iter()
                    .any(|d| !d.server().state().store.datum(&id).publishers.is_empty())
            })
            .count()
            == 5
    })
    .await;
}

#[tokio::test]
async fn registrations_past_the_rate_are_refused_with_rate_limited() {
    let mut config = ClusterConfig::new(1, 1, 1);
    config.session.registrations_per_sec = 1;
    config.session.registration_burst = 10;
    let cluster = Cluster::start(config).await.unwrap();
    let addr = cluster.session_addrs()[0].clone();
    let mut conn = RawClient::hello(&addr, "hasty").await.unwrap();
    let mut acked = 0;
    let mut limited = 0;
    for i in 0..20 {
        let r = publish(&mut conn, &format!("p{i}"), "svc.rate").await;
        match (r["type"].as_str(), code(&r)) {
            (Some("ack"), _) => acked += 1,
            (Some("error"), "rate_limited") => limited += 1,
            other => panic!("unexpected answer {other:?}: {r}"),
        }
    }
    // The burst, plus at most a token or two refilled while the requests ran.
    assert!((10..=12).contains(&acked), "acked {acked}");
    assert_eq!(acked + limited, 20);
    let refused = cluster.sessions[0]
        .server()
        .state()
        .metrics
        .bad_frames
        .with_label_values(&["rate_limited"])
        .get();
    assert_eq!(refused, limited as u64);
}

#[tokio::test]
async fn a_session_at_its_connection_cap_refuses_more() {
    let mut config = ClusterConfig::new(1, 1, 1);
    config.session.max_connections = 2;
    let cluster = Cluster::start(config).await.unwrap();
    let addr = cluster.session_addrs()[0].clone();
    let first = cluster.client(0).await.unwrap();
    let second = RawClient::hello(&addr, "second").await.unwrap();
    // The third is refused at the upgrade with the typed error.
    let third = RawClient::connect(&addr).await;
    let error = format!(
        "{:#}",
        third.err().expect("a third connection was accepted")
    );
    assert!(error.contains("429"), "{error}");
    let state = cluster.sessions[0].server().state();
    assert_eq!(state.metrics.connections_refused.get(), 1);
    // A connection that closes gives its place back.
    drop(second);
    integration::wait::until("the slot given back", WAIT, || async {
        state.metrics.connections.get() == 1
    })
    .await;
    let _third = integration::wait::eventually("a third connection", WAIT, || async {
        RawClient::hello(&addr, "third").await.ok()
    })
    .await;
    // The first client was never disturbed.
    first
        .publish("svc.first", vec!["1.1.1.1:1".into()])
        .await
        .unwrap();
}
