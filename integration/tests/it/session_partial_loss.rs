//! A session server dies; the data tier removes the publishers it still owned while some of
//! their clients have not re-registered elsewhere yet. Subscribers must not see the partial
//! datum: the removal is held back (as an emptied datum is) until the clients are back.
//! A session stopped without draining leaves its clients' publishers to that same removal.

use std::sync::Arc;
use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::raw::RawClient;
use integration::wait::until;
use serde_json::json;

const MOVERS: usize = 5;

async fn register(addr: &str, i: usize) -> RawClient {
    let mut c = RawClient::hello(addr, &format!("mover{i}")).await.unwrap();
    let reply = c
        .request(
            json!({"type": "register_publisher", "registId": "p", "dataId": "svc.partial",
            "data": [format!("m:{i}")], "version": 1}),
        )
        .await
        .unwrap();
    assert_eq!(reply["type"], "ack", "{reply}");
    c
}

/// A client on the second session subscribed to the service, and how many publishers each
/// push it received carried, in order.
async fn watch(
    cluster: &Cluster,
) -> (
    client_sdk::Client,
    client_sdk::Subscriber,
    Arc<parking_lot::Mutex<Vec<usize>>>,
) {
    let watcher = cluster.client(1).await.unwrap();
    let seen = Arc::new(parking_lot::Mutex::new(Vec::<usize>::new()));
    let rec = seen.clone();
    let cb: client_sdk::Callback = Arc::new(move |u| rec.lock().push(u.data.len()));
    let sub = watcher
        .subscribe_with("svc.partial", Default::default(), Some(cb))
        .await
        .unwrap();
    (watcher, sub, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_removal_is_held_until_the_clients_are_back() {
    let mut config = ClusterConfig::new(1, 1, 2);
    config.data.session_cleanup_grace_ms = 200;
    config.session.empty_protection_ms = 10_000;
    let mut cluster = Cluster::start(config).await.unwrap();
    let first = cluster.sessions[0].addr.to_string();
    let second = cluster.sessions[1].addr.to_string();

    // One publisher stays on the surviving session, so the removal is partial, not empty.
    let stayer = cluster.client(1).await.unwrap();
    let _stay = stayer
        .publish("svc.partial", vec!["stay".into()])
        .await
        .unwrap();
    let mut movers = Vec::new();
    for i in 0..MOVERS {
        movers.push(register(&first, i).await);
    }
    let (_watcher, _sub, seen) = watch(&cluster).await;
    until(
        "the watcher sees every publisher",
        Duration::from_secs(10),
        || async { seen.lock().last() == Some(&(MOVERS + 1)) },
    )
    .await;
    let from = seen.lock().len();

    // The movers' session dies; the data tier removes what it owned, and only then do the
    // movers come back, through the other session.
    cluster.sessions[0].kill();
    drop(movers);
    until(
        "the data tier removed the dead session's publishers",
        Duration::from_secs(15),
        || async { cluster.data_publishers(0).await.unwrap() == 1 },
    )
    .await;
    let mut back = Vec::new();
    for i in 0..MOVERS {
        back.push(register(&second, i).await);
    }
    until(
        "the data tier holds the movers again",
        Duration::from_secs(10),
        || async { cluster.data_publishers(0).await.unwrap() == (MOVERS + 1) as u64 },
    )
    .await;
    until(
        "the watcher sees every publisher again",
        Duration::from_secs(10),
        || async { seen.lock().last() == Some(&(MOVERS + 1)) },
    )
    .await;
    let after: Vec<usize> = seen.lock()[from..].to_vec();
    assert!(
        after.iter().all(|n| *n == MOVERS + 1),
        "the watcher was shown a partial view while the clients moved: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stopped_without_draining_does_not_withdraw_its_clients_publishers() {
    let mut config = ClusterConfig::new(1, 1, 2);
    config.data.session_cleanup_grace_ms = 200;
    config.session.empty_protection_ms = 30_000;
    let cluster = Cluster::start(config).await.unwrap();
    let first = cluster.sessions[0].addr.to_string();
    let _mover = register(&first, 0).await;
    let (_watcher, _sub, seen) = watch(&cluster).await;
    until(
        "the watcher sees the publisher",
        Duration::from_secs(10),
        || async { seen.lock().last() == Some(&1) },
    )
    .await;

    // Its token cancelled, the first session stops serving its client without going through
    // the drain. The connection it cuts is not the client withdrawing: the publisher stays
    // until the lease runs out, and its removal then is a server-side one, held back.
    cluster.sessions[0].cancel();
    until(
        "the data tier removed the stopped session's publisher",
        Duration::from_secs(15),
        || async { cluster.data_publishers(0).await.unwrap() == 0 },
    )
    .await;
    until(
        "the watcher's session holds the emptied datum back",
        Duration::from_secs(5),
        || async { cluster.sessions[1].server().state().pusher.held_back() == 1 },
    )
    .await;
    assert_eq!(
        seen.lock().last(),
        Some(&1),
        "the watcher was pushed the stopped session's withdrawal"
    );
}
