//! Key rotation without downtime: a second key is added, clients move to it, the first is
//! revoked; connections on the first key are closed and refused, and no publisher of a
//! client on the second key disappears for any subscriber.

use std::time::Duration;

use client_sdk::DatumUpdate;
use integration::cluster::{Cluster, ClusterConfig};
use integration::raw::RawClient;
use integration::wait::until;
use registry_common::acl::Permissions;
use serde_json::json;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn rotating_a_key_closes_only_the_old_keys_connections() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 2).with_auth().unwrap())
        .await
        .unwrap();
    let app = Permissions {
        publish: vec!["svc.*".into()],
        subscribe: vec!["svc.*".into()],
        admin: false,
    };
    let old = cluster.principal("app", app.clone()).await.unwrap();
    let watcher_key = cluster
        .principal(
            "watcher",
            Permissions {
                subscribe: vec!["svc.*".into()],
                ..Permissions::default()
            },
        )
        .await
        .unwrap();

    // Subscribers on both sessions record every update they get.
    let (tx, mut updates) = mpsc::unbounded_channel::<(usize, DatumUpdate)>();
    let mut watchers = Vec::new();
    for i in 0..2 {
        let client = cluster.client_with(i, &watcher_key).await.unwrap();
        let mut sub = client.subscribe("svc.rotate").await.unwrap();
        let tx = tx.clone();
        watchers.push(client);
        tokio::spawn(async move {
            while let Some(u) = sub.next().await {
                if tx.send((i, u)).is_err() {
                    return;
                }
            }
        });
    }

    // Two instances on the old key, one per session.
    let stays = RawClient::hello_signed(&cluster.sessions[0].addr.to_string(), "stays", &old)
        .await
        .unwrap();
    let mut stays = stays;
    let reply = stays
        .request(json!({"type": "register_publisher", "registId": "r", "dataId": "svc.rotate", "data": ["10.0.0.1:80"]}))
        .await
        .unwrap();
    assert_eq!(reply["type"], "ack", "{reply}");
    let moving = cluster.client_with(1, &old).await.unwrap();
    let moving_pub = moving
        .publish("svc.rotate", vec!["10.0.0.2:80".into()])
        .await
        .unwrap();

    // Rotation: add the new key, restart the moving instance on it, stop the old process.
    let new = cluster.new_key("app").await.unwrap();
    let moved = cluster.client_with(1, &new).await.unwrap();
    let _moved_pub = moved
        .publish("svc.rotate", vec!["10.0.0.3:80".into()])
        .await
        .unwrap();
    moving_pub.unregister().await.unwrap();
    drop(moving);

    // Revoke the old key: the instance still on it is closed and cannot come back.
    cluster.revoke_key(&old.key_id).await.unwrap();
    let closed = stays.closed(WAIT).await.unwrap();
    assert_eq!(closed.code.map(u16::from), Some(4001), "{closed:?}");
    let (refused, reply) = RawClient::hello_with_auth(
        &cluster.sessions[0].addr.to_string(),
        "stays",
        Some(&old.sign_hello("stays")),
    )
    .await
    .unwrap();
    assert_eq!(reply["code"], "unauthenticated", "{reply}");
    drop(refused);

    // Both subscribers end on the new key's instance alone...
    let mut last = [Vec::new(), Vec::new()];
    let mut history: Vec<(usize, Vec<String>)> = Vec::new();
    until("subscribers on the new key only", WAIT, || {
        while let Ok((i, u)) = updates.try_recv() {
            last[i] = u.data.clone();
            history.push((i, u.data));
        }
        let done = last.iter().all(|d| d == &["10.0.0.3:80"]);
        async move { done }
    })
    .await;
    // ...and once an update showed it, no later update of that subscriber lost it.
    for i in 0..2 {
        let seen: Vec<&Vec<String>> = history
            .iter()
            .filter(|(w, _)| *w == i)
            .map(|(_, d)| d)
            .skip_while(|d| !d.iter().any(|a| a == "10.0.0.3:80"))
            .collect();
        assert!(
            !seen.is_empty(),
            "subscriber {i} never saw the new key's instance"
        );
        for d in &seen {
            assert!(
                d.iter().any(|a| a == "10.0.0.3:80"),
                "subscriber {i} lost the new key's instance: {history:?}"
            );
        }
    }
    // The new key's connection was never touched.
    assert!(
        matches!(
            *moved.connection_state().borrow(),
            client_sdk::ConnectionState::Connected { .. }
        ),
        "the new key's client stayed connected"
    );
}
