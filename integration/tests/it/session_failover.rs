//! Losing a session server: its clients reconnect to another one and re-register, and
//! subscribers elsewhere never see their publishers vanish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use client_sdk::{Client, ClientConfig, ConnectionState};
use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::until;
use integration::workload::Fleet;

const CLIENTS: usize = 100;

async fn clients_on_first_session(cluster: &Cluster) -> Vec<Client> {
    let addrs = cluster.session_addrs();
    let mut out = Vec::new();
    for _ in 0..CLIENTS {
        let mut config = ClientConfig::new(addrs.clone());
        config.ordered = true;
        config.reconnect_min = Duration::from_millis(20);
        config.reconnect_max = Duration::from_millis(200);
        out.push(Client::connect(config).await.unwrap());
    }
    out
}

async fn run(graceful: bool) {
    let mut config = ClusterConfig::new(1, 1, 2);
    config.session.empty_protection_ms = 2_000;
    let mut cluster = Cluster::start(config).await.unwrap();
    let clients = clients_on_first_session(&cluster).await;
    let mut handles = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        handles.push(
            c.publish("svc.moving", vec![format!("m:{i}")])
                .await
                .unwrap(),
        );
    }
    let watcher = Fleet {
        clients: vec![cluster.client(1).await.unwrap()],
    };
    let watch = watcher.watch(0).await.unwrap();
    let record = Arc::new(parking_lot::Mutex::new(Vec::<(Instant, usize)>::new()));
    let rec = record.clone();
    let cb: client_sdk::Callback =
        Arc::new(move |u| rec.lock().push((Instant::now(), u.data.len())));
    let _sub = watcher.clients[0]
        .subscribe_with("svc.moving", Default::default(), Some(cb))
        .await
        .unwrap();
    until(
        "the watcher sees all publishers",
        Duration::from_secs(10),
        || async { record.lock().last().is_some_and(|(_, n)| *n == CLIENTS) },
    )
    .await;
    drop(watch);

    let second = cluster.sessions[1].addr.to_string();
    let started = Instant::now();
    if graceful {
        cluster.sessions[0].stop().await;
    } else {
        cluster.sessions[0].kill();
    }
    until(
        "every client moved to the other session",
        Duration::from_secs(15),
        || async {
            clients.iter().all(|c| {
                *c.connection_state().borrow()
                    == ConnectionState::Connected {
                        session: second.clone(),
                    }
            })
        },
    )
    .await;
    let moved = started.elapsed();
    let session = cluster.sessions[1].server().state().clone();
    until(
        "every publisher re-registered",
        Duration::from_secs(10),
        || async { session.metrics.publishers.get() == CLIENTS as i64 },
    )
    .await;
    // Past the meta grace and the data tier's session cleanup: nothing may be removed.
    let cleanup = Duration::from_millis(
        cluster.config.meta.disconnect_grace_ms
            + cluster.config.data.session_cleanup_grace_ms
            + 500,
    );
    until(
        "session cleanup has run",
        cleanup + Duration::from_secs(5),
        || async { started.elapsed() > cleanup },
    )
    .await;
    let seen = record.lock().clone();
    // From the first push holding every publisher on (earlier pushes may predate the last
    // registrations reaching the data tier).
    let full = seen.iter().position(|(_, n)| *n == CLIENTS).unwrap_or(0);
    let worst = seen[full..].iter().map(|(_, n)| *n).min().unwrap_or(0);
    assert_eq!(
        worst, CLIENTS,
        "the watcher saw a datum with only {worst} publishers"
    );
    tracing::info!(?moved, "clients moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_session_moves_its_clients_without_a_gap() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_moves_clients_without_a_gap() {
    run(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datum_emptied_by_a_dead_session_is_held_back_for_the_protection_window() {
    let mut config = ClusterConfig::new(1, 1, 2);
    config.session.empty_protection_ms = 1_500;
    let mut cluster = Cluster::start(config).await.unwrap();
    // Publishers whose clients only know the first session: they cannot move.
    let stuck = cluster.client(0).await.unwrap();
    let _p = stuck
        .publish("svc.orphan", vec!["o:1".into()])
        .await
        .unwrap();
    let watcher = cluster.client(1).await.unwrap();
    let mut sub = watcher.subscribe("svc.orphan").await.unwrap();
    loop {
        let u = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap();
        if u.data == vec!["o:1"] {
            break;
        }
    }
    let data = cluster.datas[0].server().state().clone();
    let id = registry_common::DataInfoId::new("svc.orphan", None, None).unwrap();
    cluster.sessions[0].kill();
    until(
        "the data tier removed the dead session's publisher",
        Duration::from_secs(10),
        || async { data.store.datum(&id).publishers.is_empty() },
    )
    .await;
    // The hold is timed from the watcher's session's own record of when it began: the moment
    // this test sees the removal can be late by any scheduling delay of a loaded machine.
    let pusher = cluster.sessions[1].server().state().pusher.clone();
    let mut since = None;
    until(
        "the watcher's session holds the emptied datum back",
        Duration::from_secs(10),
        || {
            since = since.or_else(|| pusher.held_since(&id));
            let found = since.is_some();
            async move { found }
        },
    )
    .await;
    let since = since.expect("waited for");
    let u = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        u.data.is_empty(),
        "got {:?} at version {}",
        u.data,
        u.version
    );
    let held = since.elapsed();
    assert!(
        held >= Duration::from_millis(1_300),
        "empty datum pushed after only {held:?}"
    );
    let metrics = &cluster.sessions[1].server().state().metrics;
    assert_eq!(
        metrics.empty_protection.with_label_values(&["held"]).get(),
        1
    );
    assert_eq!(
        metrics
            .empty_protection
            .with_label_values(&["released"])
            .get(),
        1
    );
}
