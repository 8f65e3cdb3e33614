//! Publish -> push through all three tiers: ordering of pub and sub, republish, unregister,
//! connection loss, isolation between dataInfoIds, fan-in and fan-out, version order.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use client_sdk::{DatumUpdate, Subscriber};
use integration::cluster::{Cluster, ClusterConfig};
use integration::raw::RawClient;
use integration::wait::{eventually, until};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

/// Waits for an update whose data satisfies `pred`; returns it.
async fn wait_for(
    sub: &mut Subscriber,
    what: &str,
    pred: impl Fn(&DatumUpdate) -> bool,
) -> DatumUpdate {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(u)) if pred(&u) => return u,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("subscription closed while waiting for {what}"),
            Err(_) => panic!(
                "no update with {what} within {WAIT:?}; last: {:?}",
                sub.latest()
            ),
        }
    }
}

async fn small() -> Cluster {
    Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap()
}

#[tokio::test]
async fn subscribe_then_publish_delivers() {
    let cluster = small().await;
    let sub_client = cluster.client(0).await.unwrap();
    let mut sub = sub_client.subscribe("svc.sub-first").await.unwrap();
    let first = wait_for(&mut sub, "the initial empty datum", |_| true).await;
    assert!(first.data.is_empty());
    let pub_client = cluster.client(0).await.unwrap();
    let _p = pub_client
        .publish("svc.sub-first", vec!["10.0.0.1:80".into()])
        .await
        .unwrap();
    let u = wait_for(&mut sub, "the published address", |u| !u.data.is_empty()).await;
    assert_eq!(u.data, vec!["10.0.0.1:80"]);
    assert!(u.version > first.version);
}

#[tokio::test]
async fn publish_then_subscribe_delivers() {
    let cluster = small().await;
    let pub_client = cluster.client(0).await.unwrap();
    let _p = pub_client
        .publish("svc.pub-first", vec!["10.0.0.2:80".into()])
        .await
        .unwrap();
    let sub_client = cluster.client(0).await.unwrap();
    let mut sub = sub_client.subscribe("svc.pub-first").await.unwrap();
    let u = wait_for(&mut sub, "the published address", |u| !u.data.is_empty()).await;
    assert_eq!(u.data, vec!["10.0.0.2:80"]);
}

#[tokio::test]
async fn republish_delivers_a_higher_version_and_unregister_removes() {
    let cluster = small().await;
    let c = cluster.client(0).await.unwrap();
    let p = c.publish("svc.re", vec!["a:1".into()]).await.unwrap();
    let keep = c.publish("svc.re", vec!["keep:1".into()]).await.unwrap();
    let mut sub = c.subscribe("svc.re").await.unwrap();
    let v1 = wait_for(&mut sub, "both publishers", |u| u.data.len() == 2).await;
    p.republish(vec!["a:2".into()]).await.unwrap();
    let v2 = wait_for(&mut sub, "the republished data", |u| {
        u.data.contains(&"a:2".to_string())
    })
    .await;
    assert!(v2.version > v1.version);
    assert!(!v2.data.contains(&"a:1".to_string()));
    p.unregister().await.unwrap();
    let v3 = wait_for(&mut sub, "the datum without it", |u| {
        u.data == vec!["keep:1"]
    })
    .await;
    assert!(v3.version > v2.version);
    drop(keep);
}

#[tokio::test]
async fn closing_a_publishers_connection_removes_its_data_within_a_second() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 2)).await.unwrap();
    let publisher = cluster.client(0).await.unwrap();
    let _p = publisher
        .publish("svc.close", vec!["gone:1".into()])
        .await
        .unwrap();
    // Subscribers on both sessions.
    let s0 = cluster.client(0).await.unwrap();
    let s1 = cluster.client(1).await.unwrap();
    let mut sub0 = s0.subscribe("svc.close").await.unwrap();
    let mut sub1 = s1.subscribe("svc.close").await.unwrap();
    wait_for(&mut sub0, "the publisher", |u| !u.data.is_empty()).await;
    wait_for(&mut sub1, "the publisher", |u| !u.data.is_empty()).await;
    let closed_at = std::time::Instant::now();
    publisher.close().await;
    wait_for(&mut sub0, "the empty datum", |u| u.data.is_empty()).await;
    wait_for(&mut sub1, "the empty datum", |u| u.data.is_empty()).await;
    let took = closed_at.elapsed();
    assert!(took < Duration::from_secs(1), "removal took {took:?}");
}

#[tokio::test]
async fn two_data_info_ids_never_leak_into_each_other() {
    let cluster = small().await;
    let c = cluster.client(0).await.unwrap();
    let _a = c.publish("svc.iso-a", vec!["a:1".into()]).await.unwrap();
    let _b = c.publish("svc.iso-b", vec!["b:1".into()]).await.unwrap();
    let _g = c
        .publish_with(
            "svc.iso-a",
            vec!["other-group:1".into()],
            client_sdk::RegistrationOptions {
                group: Some("OTHER".into()),
                instance_id: None,
            },
        )
        .await
        .unwrap();
    let mut sa = c.subscribe("svc.iso-a").await.unwrap();
    let mut sb = c.subscribe("svc.iso-b").await.unwrap();
    let ua = wait_for(&mut sa, "a's publisher", |u| !u.data.is_empty()).await;
    let ub = wait_for(&mut sb, "b's publisher", |u| !u.data.is_empty()).await;
    assert_eq!(ua.data, vec!["a:1"]);
    assert_eq!(ub.data, vec!["b:1"]);
    assert!(ua.data_info_id.ends_with("#@#DEFAULT_GROUP"));
    assert_ne!(ua.data_info_id, ub.data_info_id);
}

#[tokio::test]
async fn a_hundred_publishers_reach_one_subscriber() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 2)).await.unwrap();
    let clients = futures::future::try_join_all((0..10).map(|i| cluster.client(i % 2)))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..100 {
        let p = clients[i % 10]
            .publish("svc.fan-in", vec![format!("10.1.0.{i}:80")])
            .await
            .unwrap();
        handles.push(p);
    }
    let c = cluster.client(1).await.unwrap();
    let mut sub = c.subscribe("svc.fan-in").await.unwrap();
    let u = wait_for(&mut sub, "all 100 publishers", |u| u.data.len() == 100).await;
    let got: BTreeSet<String> = u.data.into_iter().collect();
    let want: BTreeSet<String> = (0..100).map(|i| format!("10.1.0.{i}:80")).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn fifty_subscribers_receive_the_same_final_datum() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 2)).await.unwrap();
    let clients = futures::future::try_join_all((0..10).map(|i| cluster.client(i % 2)))
        .await
        .unwrap();
    let mut subs = Vec::new();
    for i in 0..50 {
        subs.push(clients[i % 10].subscribe("svc.fan-out").await.unwrap());
    }
    let p = clients[0]
        .publish("svc.fan-out", vec!["v:0".into()])
        .await
        .unwrap();
    for n in 1..=5 {
        p.republish(vec![format!("v:{n}")]).await.unwrap();
    }
    let mut finals = Vec::new();
    for sub in subs.iter_mut() {
        finals.push(wait_for(sub, "the final datum", |u| u.data == vec!["v:5"]).await);
    }
    let version = finals[0].version;
    assert!(finals
        .iter()
        .all(|u| u.version == version && u.data == vec!["v:5"]));
}

/// Watches the raw pushes (no SDK filtering) while one publisher republishes fast.
#[tokio::test]
async fn pushes_never_go_back_in_version() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 2)).await.unwrap();
    let mut watchers = Vec::new();
    for s in 0..2 {
        let mut raw = RawClient::hello(&cluster.session_addrs()[s], &format!("watcher-{s}"))
            .await
            .unwrap();
        let ack = raw
            .request(json!({"type": "register_subscriber", "registId": "w", "dataId": "svc.order"}))
            .await
            .unwrap();
        assert_eq!(ack["type"], "ack");
        watchers.push(raw);
    }
    let c = cluster.client(0).await.unwrap();
    let p = c.publish("svc.order", vec!["n:0".into()]).await.unwrap();
    for n in 1..=200 {
        p.republish(vec![format!("n:{n}")]).await.unwrap();
    }
    for w in watchers.iter_mut() {
        let mut last = 0u64;
        let mut pushes = 0;
        loop {
            let push = w.next_push(WAIT).await.unwrap();
            let v = push["version"].as_u64().unwrap();
            assert!(
                v > last || (pushes == 0 && v == 0),
                "version went from {last} to {v}"
            );
            last = v;
            pushes += 1;
            if push["data"] == json!(["n:200"]) {
                break;
            }
        }
        assert!(pushes >= 2);
    }
    // The cluster holds exactly the final data.
    let final_data = eventually("final datum at the session cache", WAIT, || async {
        let state = cluster.sessions[0].server().state().clone();
        let id = registry_common::DataInfoId::new("svc.order", None, None).unwrap();
        state.pusher.cached_version(&id)
    })
    .await;
    assert!(final_data > 0);
}

/// The session keeps one datum per subscribed dataInfoId, at most `cache_entries` of them:
/// past the cap a datum is still pushed, only not kept, and a later subscriber of its id is
/// served by a fetch; the last subscription of an id gone, its datum goes too.
#[tokio::test]
async fn the_datum_cache_is_capped_and_follows_the_subscriptions() {
    let mut config = ClusterConfig::new(1, 1, 1);
    config.session.cache_entries = 1;
    let cluster = Cluster::start(config).await.unwrap();
    let state = cluster.sessions[0].server().state().clone();
    let id = |d: &str| registry_common::DataInfoId::new(d, None, None).unwrap();
    let (a, b) = (id("svc.cap-a"), id("svc.cap-b"));

    let c = cluster.client(0).await.unwrap();
    let mut sub_a = c.subscribe("svc.cap-a").await.unwrap();
    let mut sub_b = c.subscribe("svc.cap-b").await.unwrap();
    let _pa = c.publish("svc.cap-a", vec!["a:1".into()]).await.unwrap();
    wait_for(&mut sub_a, "a's address", |u| u.data == ["a:1"]).await;
    let pb = c.publish("svc.cap-b", vec!["b:1".into()]).await.unwrap();
    // Past the cap, b's datum still reaches its subscriber.
    wait_for(&mut sub_b, "b's address", |u| u.data == ["b:1"]).await;
    let kept = |state: &session_server::server::SessionState| {
        (
            state.pusher.cached_version(&a).is_some(),
            state.pusher.cached_version(&b).is_some(),
            state.metrics.cached_datums.get(),
        )
    };
    assert_eq!(
        kept(&state),
        (true, false, 1),
        "a kept, b not: the cap is one"
    );

    // A second subscriber of b, whose datum is not kept, is served by a fetch.
    let c2 = cluster.client(0).await.unwrap();
    let mut late_b = c2.subscribe("svc.cap-b").await.unwrap();
    wait_for(&mut late_b, "b's address, fetched", |u| u.data == ["b:1"]).await;

    // The last subscription of a gone, its datum goes and makes room for b's next one.
    sub_a.unsubscribe().await.unwrap();
    eventually("a's datum dropped with its subscription", WAIT, || async {
        (kept(&state) == (false, false, 0)).then_some(())
    })
    .await;
    pb.republish(vec!["b:2".into()]).await.unwrap();
    wait_for(&mut sub_b, "b's new address", |u| u.data == ["b:2"]).await;
    eventually("b's datum kept now that there is room", WAIT, || async {
        (kept(&state) == (false, true, 1)).then_some(())
    })
    .await;
}

/// A subscriber with a callback gets every update there; its queue keeps only the newest, so
/// an application that never reads the queue holds one datum per subscription, not one per
/// change.
#[tokio::test]
async fn with_a_callback_only_the_newest_update_waits_in_the_queue() {
    let cluster = small().await;
    let c = cluster.client(0).await.unwrap();
    let p = c.publish("svc.cb", vec!["v:0".into()]).await.unwrap();
    let seen: Arc<parking_lot::Mutex<Vec<Vec<String>>>> = Arc::default();
    let rec = seen.clone();
    let cb: client_sdk::Callback = Arc::new(move |u| rec.lock().push(u.data.clone()));
    let mut sub = c
        .subscribe_with("svc.cb", Default::default(), Some(cb))
        .await
        .unwrap();
    for n in 0..=5 {
        if n > 0 {
            p.republish(vec![format!("v:{n}")]).await.unwrap();
        }
        let want = vec![format!("v:{n}")];
        until(&format!("the callback to get v:{n}"), WAIT, || async {
            seen.lock().last() == Some(&want)
        })
        .await;
    }
    let expected: Vec<Vec<String>> = (0..=5).map(|n| vec![format!("v:{n}")]).collect();
    // (An empty datum may come first, if the subscription reached the data tier before the
    // publisher did.)
    let got: Vec<Vec<String>> = seen
        .lock()
        .iter()
        .filter(|d| !d.is_empty())
        .cloned()
        .collect();
    assert_eq!(got, expected, "the callback got every update, in order");
    let newest = sub
        .try_next()
        .expect("the newest update waits in the queue");
    assert_eq!(newest.data, vec!["v:5"]);
    assert!(sub.try_next().is_none(), "nothing older waits behind it");
}
