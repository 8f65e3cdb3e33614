//! A client that leaves a silent session for another one (the session frozen for a few
//! seconds, or its replies lost) is alive and on its way elsewhere. The silent session reads
//! the end of that connection only when it serves again, and it used to withdraw the client's
//! publishers then: if that came before the client's re-registration through the other session
//! (the SDK waits out a reconnect backoff first), every subscriber saw the client's instances
//! vanish until it was back. Seen by `registry-chaos` (seed 23, round 180: two sessions frozen
//! 4.5 s, four live publishers missing from four subscribers' views for 37-75 ms after the
//! thaw). The SDK now ends such a connection with close code 4000 (`CLOSE_MOVING`) and the
//! session hands the publishers over instead.

use std::time::Duration;

use client_sdk::ConnectionState;
use integration::cluster::{Cluster, ClusterConfig};
use integration::proxy::{Fault, Proxy};
use integration::wait::until;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_a_silent_session_keeps_its_publishers_visible() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 2)).await.unwrap();
    let other = cluster.sessions[0].addr.to_string();
    // The mover reaches the session that goes silent through a proxy that can hold its bytes.
    let link = Proxy::start(Some(cluster.sessions[1].addr)).unwrap();

    let stayer = cluster.client(0).await.unwrap();
    let _stay = stayer
        .publish("svc.moving", vec!["stay".into()])
        .await
        .unwrap();
    let mut config = cluster.client_config(vec![link.addr().to_string(), other]);
    // Silence noticed after 0.6 s; then a reconnect backoff of 1.5-3 s, during which the
    // silent session serves again and reads what the client left behind.
    config.ping_interval = Duration::from_millis(300);
    config.reconnect_min = Duration::from_millis(1_500);
    config.reconnect_max = Duration::from_secs(3);
    let mover = client_sdk::Client::connect(config).await.unwrap();
    let mover_pub = mover
        .publish("svc.moving", vec!["mover".into()])
        .await
        .unwrap();
    let watcher = cluster.client(0).await.unwrap();
    let (_sub, seen) = Cluster::record_views(&watcher, "svc.moving").await.unwrap();
    let both = vec!["mover".to_string(), "stay".to_string()];
    until("the watcher sees both publishers", WAIT, || async {
        seen.lock().last() == Some(&both)
    })
    .await;
    let from = seen.lock().len();

    // The session goes silent to the mover, which gives up on it.
    link.set_default_fault(Fault::Blackhole);
    let mut state = mover.connection_state();
    until("the mover leaves the silent session", WAIT, || {
        let lost = matches!(*state.borrow_and_update(), ConnectionState::Connecting);
        async move { lost }
    })
    .await;
    // The session serves again (as after SIGCONT) and reads the end of the connection.
    link.heal();
    let silent = cluster.sessions[1].server().state();
    until(
        "the silent session lets go of the mover's connection",
        WAIT,
        || async { silent.registry.publishers().is_empty() },
    )
    .await;
    until(
        "the mover is held through the other session",
        WAIT,
        || async { cluster.session_holds(0, mover_pub.regist_id()) },
    )
    .await;
    until("the watcher's view settles", WAIT, || async {
        seen.lock().last() == Some(&both)
            && cluster.sessions[0].server().state().pusher.held_back() == 0
    })
    .await;
    let after: Vec<Vec<String>> = seen.lock()[from..].to_vec();
    assert!(
        after.iter().all(|d| d == &both),
        "the watcher was shown the live client's publisher gone: {after:?}"
    );
}
