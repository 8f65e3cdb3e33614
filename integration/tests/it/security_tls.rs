//! TLS on every link: clients over `wss://`, every server-to-server call (session -> data,
//! data -> data, data -> session, servers -> meta including the heartbeat WebSocket, meta <->
//! meta Raft) over `https`/`wss`; a plaintext client on a TLS port fails cleanly.

use std::time::Duration;

use client_sdk::{DatumUpdate, Subscriber};
use integration::cluster::{Cluster, ClusterConfig};
use registry_common::acl::Permissions;
use registry_common::DataInfoId;

const WAIT: Duration = Duration::from_secs(15);

async fn wait_for(sub: &mut Subscriber, what: &str, pred: impl Fn(&DatumUpdate) -> bool) {
    integration::wait::update(sub, what, WAIT, pred).await
}

#[tokio::test]
async fn every_link_runs_over_tls_with_auth_on() {
    let config = ClusterConfig::new(3, 2, 2)
        .with_auth()
        .unwrap()
        .with_tls()
        .unwrap();
    let cluster = Cluster::start(config).await.unwrap();
    // The meta nodes elected a leader and the servers joined: Raft, registration, renewals
    // and the view watch all went over TLS.
    let key = cluster
        .principal(
            "orders",
            Permissions {
                publish: vec!["orders.*".into()],
                subscribe: vec!["orders.*".into()],
                admin: false,
            },
        )
        .await
        .unwrap();

    // Publish through one session, subscribe through the other: session -> data writes,
    // data -> session notifications and session -> data fetches are all TLS.
    let publisher_client = cluster.client_with(0, &key).await.unwrap();
    let subscriber_client = cluster.client_with(1, &key).await.unwrap();
    let mut sub = subscriber_client.subscribe("orders.api").await.unwrap();
    let _p = publisher_client
        .publish("orders.api", vec!["10.0.0.1:8080".into()])
        .await
        .unwrap();
    wait_for(&mut sub, "the publisher over TLS", |u| {
        u.data == vec!["10.0.0.1:8080".to_string()]
    })
    .await;

    // Data -> data replication over TLS: the replica holds what the primary holds.
    let id = DataInfoId::new("orders.api", None, None).unwrap();
    cluster.wait_replicated(std::slice::from_ref(&id)).await;
    let copies = cluster
        .datas
        .iter()
        .filter(|d| !d.server().state().store.datum(&id).publishers.is_empty())
        .count();
    assert_eq!(copies, 2, "primary and replica both hold the publisher");

    // Plaintext on TLS ports fails cleanly, within a deadline, for the WebSocket and HTTP.
    let session = cluster.sessions[0].addr.to_string();
    let plain_ws = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{session}/ws")),
    )
    .await
    .expect("a plaintext WebSocket on a TLS port fails instead of hanging");
    assert!(plain_ws.is_err(), "plaintext WebSocket was accepted");
    let plain_http = registry_rpc::HttpClient::new(Duration::from_secs(5));
    for addr in [
        session.clone(),
        cluster.datas[0].addr.to_string(),
        cluster.meta_addrs()[0].clone(),
    ] {
        let r = plain_http
            .get::<serde_json::Value>(&addr, "/health", Duration::from_secs(5))
            .await;
        assert!(r.is_err(), "plaintext HTTP to {addr} answered: {r:?}");
    }

    // The servers keep serving TLS clients after the plaintext attempts.
    let later = cluster.client_with(0, &key).await.unwrap();
    let mut sub2 = later.subscribe("orders.api").await.unwrap();
    wait_for(&mut sub2, "the publisher, for a later client", |u| {
        u.data == vec!["10.0.0.1:8080".to_string()]
    })
    .await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_cluster_ca_is_refused() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 1).with_tls().unwrap())
        .await
        .unwrap();
    // Another CA's roots: the session's certificate does not verify.
    let other = integration::cluster::ClusterTls::generate().unwrap();
    let mut config = cluster.client_config(vec![cluster.sessions[0].addr.to_string()]);
    config.tls = Some(other.client.clone());
    config.connect_timeout = Duration::from_secs(2);
    let refused = client_sdk::Client::connect(config).await;
    assert!(
        refused.is_err(),
        "connected through an untrusted certificate"
    );
    // The cluster's own CA works.
    cluster.client(0).await.unwrap();
}
