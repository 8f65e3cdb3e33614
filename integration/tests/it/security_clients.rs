//! Clients with auth on: a `hello` must be signed by a valid access key, and a principal can
//! publish and subscribe only what it is granted, and never touch another principal's
//! publishers.

use std::time::Duration;

use client_sdk::{DatumUpdate, Subscriber};
use integration::cluster::{Cluster, ClusterConfig};
use integration::raw::RawClient;
use registry_common::acl::Permissions;
use registry_common::auth::{hello_message, sign, Credential, HelloAuth, Secret};
use registry_common::DataInfoId;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

async fn secured() -> Cluster {
    Cluster::start(ClusterConfig::new(1, 1, 1).with_auth().unwrap())
        .await
        .unwrap()
}

fn grants(publish: &[&str], subscribe: &[&str]) -> Permissions {
    Permissions {
        publish: publish.iter().map(|s| s.to_string()).collect(),
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        admin: false,
    }
}

/// The publishers the data tier holds for `data_id` (default group and instance).
fn at_data_tier(cluster: &Cluster, data_id: &str) -> Vec<(String, Vec<String>)> {
    let id = DataInfoId::new(data_id, None, None).unwrap();
    cluster
        .datas
        .iter()
        .flat_map(|d| d.server().state().store.datum(&id).publishers)
        .map(|p| (p.key.client_id.clone(), p.data.clone()))
        .collect()
}

/// Asserts the refusal is the typed `unauthenticated` error and the connection is closed.
async fn assert_refused(mut conn: RawClient, reply: serde_json::Value, what: &str) {
    assert_eq!(reply["type"], "error", "{what}: {reply}");
    assert_eq!(reply["code"], "unauthenticated", "{what}: {reply}");
    let closed = conn.closed(WAIT).await.unwrap();
    assert_eq!(
        closed.code.map(u16::from),
        Some(4001),
        "{what}: closed with {closed:?}"
    );
}

async fn wait_for(sub: &mut Subscriber, what: &str, pred: impl Fn(&DatumUpdate) -> bool) {
    integration::wait::update(sub, what, WAIT, pred).await
}

#[tokio::test]
async fn a_hello_without_a_valid_signature_is_refused_and_registers_nothing() {
    let cluster = secured().await;
    let addr = cluster.sessions[0].addr.to_string();
    let key = cluster
        .principal("orders", grants(&["orders.*"], &["orders.*"]))
        .await
        .unwrap();

    // No credential at all.
    let (conn, reply) = RawClient::hello_with_auth(&addr, "anon", None)
        .await
        .unwrap();
    assert_refused(conn, reply, "no credential").await;

    // The right key id with a secret that is not the key's.
    let wrong = Credential::new(key.key_id.clone(), &Secret::generate()).unwrap();
    let auth = wrong.sign_hello("c1");
    let (conn, reply) = RawClient::hello_with_auth(&addr, "c1", Some(&auth))
        .await
        .unwrap();
    assert_refused(conn, reply, "wrong secret").await;

    // A key id nobody issued.
    let unknown = Credential::new("orders.000000000000", &Secret::generate()).unwrap();
    let auth = unknown.sign_hello("c1");
    let (conn, reply) = RawClient::hello_with_auth(&addr, "c1", Some(&auth))
        .await
        .unwrap();
    assert_refused(conn, reply, "unknown key").await;

    // A correct signature over a timestamp ten minutes old.
    let old = registry_common::time::now_ms() - 10 * 60 * 1000;
    let message = hello_message(&key.key_id, "c1", old, "00112233445566778899aabbccddeeff");
    let stale = HelloAuth {
        key_id: key.key_id.clone(),
        timestamp_ms: old,
        nonce: "00112233445566778899aabbccddeeff".into(),
        signature: sign(&key.secret, &message),
    };
    let (conn, reply) = RawClient::hello_with_auth(&addr, "c1", Some(&stale))
        .await
        .unwrap();
    assert_refused(conn, reply, "expired timestamp").await;

    // A signature made for another client id.
    let other = key.sign_hello("someone-else");
    let (conn, reply) = RawClient::hello_with_auth(&addr, "c1", Some(&other))
        .await
        .unwrap();
    assert_refused(conn, reply, "signature for another client id").await;

    // A valid hello, captured and replayed on a second connection.
    let auth = key.sign_hello("c1");
    let (mut first, reply) = RawClient::hello_with_auth(&addr, "c1", Some(&auth))
        .await
        .unwrap();
    assert_eq!(reply["type"], "welcome", "{reply}");
    let (replayed, reply) = RawClient::hello_with_auth(&addr, "c1", Some(&auth))
        .await
        .unwrap();
    assert_refused(replayed, reply, "replayed hello").await;

    // A refused connection cannot register anything: after a refusal the server closes, and a
    // publish sent before it reads the hello answer is never applied.
    let mut sneaky = RawClient::connect(&addr).await.unwrap();
    sneaky
        .send_text(json!({"type": "hello", "reqId": 1, "protocol": 1, "clientId": "x"}).to_string())
        .await
        .unwrap();
    sneaky
        .send_text(
            json!({"type": "register_publisher", "reqId": 2, "registId": "r", "dataId": "orders.sneaky", "data": ["6.6.6.6:1"]})
                .to_string(),
        )
        .await
        .unwrap();
    let _ = sneaky.closed(WAIT).await;

    // The accepted connection works; the data tier holds its publisher and nothing else.
    let reply = first
        .request(json!({"type": "register_publisher", "registId": "r1", "dataId": "orders.api", "data": ["10.0.0.1:80"]}))
        .await
        .unwrap();
    assert_eq!(reply["type"], "ack", "{reply}");
    integration::wait::until("the accepted publisher at the data tier", WAIT, || async {
        at_data_tier(&cluster, "orders.api").len() == 1
    })
    .await;
    assert_eq!(
        at_data_tier(&cluster, "orders.api"),
        vec![("orders:c1".to_string(), vec!["10.0.0.1:80".to_string()])]
    );
    assert!(at_data_tier(&cluster, "orders.sneaky").is_empty());
}

#[tokio::test]
async fn a_principal_uses_only_its_grants_and_cannot_touch_anothers_publishers() {
    let cluster = secured().await;
    let addr = cluster.sessions[0].addr.to_string();
    let a = cluster
        .principal("team-a", grants(&["a.*", "shared.*"], &["a.*"]))
        .await
        .unwrap();
    let b = cluster
        .principal("team-b", grants(&["shared.*"], &["shared.*"]))
        .await
        .unwrap();

    // Not granted: publishing or subscribing outside the patterns is `forbidden`.
    let mut conn_a = RawClient::hello_signed(&addr, "c1", &a).await.unwrap();
    let reply = conn_a
        .request(json!({"type": "register_publisher", "registId": "p", "dataId": "b.private", "data": ["x:1"]}))
        .await
        .unwrap();
    assert_eq!(reply["code"], "forbidden", "{reply}");
    let reply = conn_a
        .request(json!({"type": "register_subscriber", "registId": "s", "dataId": "shared.svc"}))
        .await
        .unwrap();
    assert_eq!(reply["code"], "forbidden", "{reply}");
    assert!(at_data_tier(&cluster, "b.private").is_empty());

    // B publishes; a subscriber of B's follows the service.
    let mut conn_b = RawClient::hello_signed(&addr, "c1", &b).await.unwrap();
    let reply = conn_b
        .request(json!({"type": "register_publisher", "registId": "r1", "dataId": "shared.svc", "data": ["10.0.0.2:80"], "version": 1}))
        .await
        .unwrap();
    assert_eq!(reply["type"], "ack", "{reply}");
    let watcher = cluster.client_with(0, &b).await.unwrap();
    let mut sub = watcher.subscribe("shared.svc").await.unwrap();
    wait_for(&mut sub, "B's address", |u| u.data == ["10.0.0.2:80"]).await;

    // A, with B's clientId and registId and the highest version, adds its own publisher
    // instead of replacing B's; its unregistration removes only its own.
    let reply = conn_a
        .request(json!({"type": "register_publisher", "registId": "r1", "dataId": "shared.svc", "data": ["6.6.6.6:80"], "version": u64::MAX}))
        .await
        .unwrap();
    assert_eq!(reply["type"], "ack", "{reply}");
    wait_for(&mut sub, "both addresses", |u| u.data.len() == 2).await;
    let reply = conn_a
        .request(json!({"type": "unregister_publisher", "registId": "r1"}))
        .await
        .unwrap();
    assert_eq!(reply["type"], "ack", "{reply}");
    wait_for(&mut sub, "B's address alone", |u| u.data == ["10.0.0.2:80"]).await;

    // B's later republish at a low version still lands: A could not out-version it.
    let reply = conn_b
        .request(json!({"type": "register_publisher", "registId": "r1", "dataId": "shared.svc", "data": ["10.0.0.3:80"], "version": 2}))
        .await
        .unwrap();
    assert_eq!(reply["type"], "ack", "{reply}");
    wait_for(&mut sub, "B's new address", |u| u.data == ["10.0.0.3:80"]).await;
    assert_eq!(
        at_data_tier(&cluster, "shared.svc"),
        vec![("team-b:c1".to_string(), vec!["10.0.0.3:80".to_string()])]
    );
}

#[tokio::test]
async fn a_narrowed_grant_applies_to_connections_already_open() {
    let cluster = secured().await;
    let addr = cluster.sessions[0].addr.to_string();
    let key = cluster
        .principal("team-n", grants(&["n.*"], &["n.*"]))
        .await
        .unwrap();
    let mut conn = RawClient::hello_signed(&addr, "c1", &key).await.unwrap();
    let reply = conn
        .request(json!({"type": "register_publisher", "registId": "p1", "dataId": "n.svc", "data": ["x:1"], "version": 1}))
        .await
        .unwrap();
    assert_eq!(reply["type"], "ack", "{reply}");

    // The principal loses `publish` on n.*; its key stays valid, the connection open.
    let mut put = serde_json::to_value(grants(&[], &["n.*"])).unwrap();
    put["name"] = json!("team-n");
    let done = cluster.meta_admin("/admin/v1/acl/put", &put).await.unwrap();
    cluster
        .wait_acl(done["revision"].as_u64().expect("revision"))
        .await;
    let reply = conn
        .request(json!({"type": "register_publisher", "registId": "p2", "dataId": "n.other", "data": ["x:2"], "version": 1}))
        .await
        .unwrap();
    assert_eq!(reply["code"], "forbidden", "{reply}");
    assert!(at_data_tier(&cluster, "n.other").is_empty());
    // Subscribing, still granted, works on the same connection.
    let reply = conn
        .request(json!({"type": "register_subscriber", "registId": "s1", "dataId": "n.svc"}))
        .await
        .unwrap();
    assert_eq!(reply["type"], "ack", "{reply}");
}
