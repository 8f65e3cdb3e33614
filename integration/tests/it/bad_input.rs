//! Bad input on the client WebSocket gets a typed error (or a close with a reason) and
//! never disturbs other clients.

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::raw::RawClient;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const WAIT: Duration = Duration::from_secs(10);

fn code(frame: &Value) -> &str {
    frame["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn bad_frames_get_typed_errors_and_others_are_untouched() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap();
    let addr = cluster.session_addrs()[0].clone();

    // A well-behaved client with a publisher and a subscription.
    let good = cluster.client(0).await.unwrap();
    let publisher = good
        .publish("svc.good", vec!["good:1".into()])
        .await
        .unwrap();
    let mut sub = good.subscribe("svc.good").await.unwrap();
    loop {
        let u = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        if u.data == vec!["good:1"] {
            break;
        }
    }

    let mut bad = RawClient::connect(&addr).await.unwrap();
    // Registering before hello.
    let r = bad
        .request(
            json!({"type": "register_publisher", "registId": "x", "dataId": "svc", "data": []}),
        )
        .await
        .unwrap();
    assert_eq!(
        (r["type"].as_str(), code(&r)),
        (Some("error"), "failed_precondition")
    );
    let r = bad
        .request(json!({"type": "hello", "protocol": 1, "clientId": "bad-client"}))
        .await
        .unwrap();
    assert_eq!(r["type"], "welcome");

    // Malformed JSON: no reqId can be read, so the error has none.
    bad.send_text("{this is not json").await.unwrap();
    let r = bad.next_frame(WAIT).await.unwrap();
    assert_eq!((r["type"].as_str(), code(&r)), (Some("error"), "malformed"));

    // Unknown message type.
    let r = bad.request(json!({"type": "format_disk"})).await.unwrap();
    assert_eq!(code(&r), "unknown_message");

    // Known type, missing fields.
    let r = bad
        .request(json!({"type": "register_subscriber"}))
        .await
        .unwrap();
    assert_eq!(code(&r), "malformed");

    // Empty dataId, over-long dataId, control characters in the group.
    for (data_id, group) in [
        (String::new(), None),
        ("x".repeat(300), None),
        ("svc".to_string(), Some("bad\u{1}group")),
    ] {
        let mut frame = json!({"type": "register_publisher", "registId": "r1", "dataId": data_id, "data": ["d"]});
        if let Some(g) = group {
            frame["group"] = json!(g);
        }
        let r = bad.request(frame).await.unwrap();
        assert_eq!(code(&r), "invalid_argument", "{r}");
        let mut frame = json!({"type": "register_subscriber", "registId": "s1", "dataId": data_id});
        if let Some(g) = group {
            frame["group"] = json!(g);
        }
        let r = bad.request(frame).await.unwrap();
        assert_eq!(code(&r), "invalid_argument", "{r}");
    }

    // Unregistering something never registered, acking a push never sent.
    let r = bad
        .request(json!({"type": "unregister_publisher", "registId": "nope"}))
        .await
        .unwrap();
    assert_eq!(code(&r), "not_found");
    bad.send_text(json!({"type": "push_ack", "pushId": 999_999}).to_string())
        .await
        .unwrap();
    // The connection still serves.
    let r = bad.request(json!({"type": "ping"})).await.unwrap();
    assert_eq!(r["type"], "pong");

    // A frame above the maximum closes the connection with a reason.
    let huge = "x".repeat(2 * 1024 * 1024);
    let frame =
        json!({"type": "register_publisher", "registId": "big", "dataId": "svc", "data": [huge]});
    let _ = bad.send_text(frame.to_string()).await;
    let closed = bad.closed(WAIT).await.unwrap();
    assert_eq!(closed.code, Some(CloseCode::Size), "{closed:?}");
    assert!(closed.reason.contains("maximum"), "{closed:?}");

    // The good client's publisher and subscription are untouched: a change still arrives,
    // and a fresh subscriber sees the publisher.
    publisher.republish(vec!["good:2".into()]).await.unwrap();
    loop {
        let u = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        assert!(!u.data.is_empty(), "the good publisher vanished");
        if u.data == vec!["good:2"] {
            break;
        }
    }
    let other = cluster.client(0).await.unwrap();
    let mut fresh = other.subscribe("svc.good").await.unwrap();
    loop {
        let u = tokio::time::timeout(WAIT, fresh.next())
            .await
            .unwrap()
            .unwrap();
        if u.data == vec!["good:2"] {
            break;
        }
    }
    let status = cluster.sessions[0]
        .server()
        .state()
        .metrics
        .publishers
        .get();
    assert_eq!(status, 1, "exactly the good publisher is held");
}

#[tokio::test]
async fn unsupported_protocol_and_duplicate_hello_are_refused() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap();
    let addr = cluster.session_addrs()[0].clone();
    let mut c = RawClient::connect(&addr).await.unwrap();
    let r = c
        .request(json!({"type": "hello", "protocol": 0, "clientId": "x"}))
        .await
        .unwrap();
    assert_eq!(code(&r), "unsupported_protocol");
    let r = c
        .request(json!({"type": "hello", "protocol": 1, "clientId": "x"}))
        .await
        .unwrap();
    assert_eq!(r["type"], "welcome");
    let r = c
        .request(json!({"type": "hello", "protocol": 1, "clientId": "x"}))
        .await
        .unwrap();
    assert_eq!(code(&r), "failed_precondition");
}

#[tokio::test]
async fn duplicate_and_stale_registrations_change_nothing() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap();
    let addr = cluster.session_addrs()[0].clone();
    let mut c = RawClient::hello(&addr, "dup").await.unwrap();
    let register = |version: u64, data: &str| json!({"type": "register_publisher", "registId": "p", "dataId": "svc.dup", "data": [data], "version": version});
    assert_eq!(c.request(register(5, "five")).await.unwrap()["type"], "ack");
    let data = cluster.datas[0].server().state().clone();
    let id = registry_common::DataInfoId::new("svc.dup", None, None).unwrap();
    integration::wait::until("registered at the data server", WAIT, || async {
        data.store.datum(&id).publishers.len() == 1
    })
    .await;
    let version = data.store.version(&id);
    // The same registration again, and an older one: acknowledged, no effect.
    assert_eq!(c.request(register(5, "five")).await.unwrap()["type"], "ack");
    assert_eq!(c.request(register(4, "four")).await.unwrap()["type"], "ack");
    // A newer one still goes through (and proves the two above were processed first).
    assert_eq!(c.request(register(6, "six")).await.unwrap()["type"], "ack");
    integration::wait::until("the newer registration landed", WAIT, || async {
        data.store.datum(&id).flat_data() == vec!["six".to_string()]
    })
    .await;
    let after = data.store.version(&id);
    assert!(after > version);
    // Exactly one change since the first registration: the duplicate and the stale one
    // never reached the data tier as changes.
    let writes = data.metrics.writes.with_label_values(&["changed"]).get();
    assert_eq!(writes, 2, "two changes: version 5, then version 6");
}
