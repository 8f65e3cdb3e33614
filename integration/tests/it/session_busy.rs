//! A busy session stays a member. Its lease renewals and heartbeat used to run on its own
//! runtime, each waiting its turn behind every ready task: under a saturating load (a million
//! publishers registering on two cores) renewals took 10 s and pings went unsent for 6 s, the
//! meta removed both sessions, and they sent every client away. They now run on a thread of
//! their own, and only a runtime that makes no progress at all stops them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::{holds, until};
use registry_common::member::Role;
use registry_rpc::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_session_keeps_its_membership_and_its_clients() {
    // Test timings: renewals every 200 ms, a heartbeat silent for 600 ms is a lost connection,
    // a 3 s lease (the session detaches after 1.8 s without a renewal).
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap();
    let client = cluster.client(0).await.unwrap();
    let _publisher = client.publish("busy.svc", vec!["a".into()]).await.unwrap();
    let node = &cluster.sessions[0];
    let state = node.server().state().clone();
    let id = node.server().id().clone();
    let rejoins = state.membership.rejoin_count();

    // Saturate the session's one runtime thread: 28 tasks each busy 25 ms between yields, so
    // every task of the session waits about 0.7 s for each of its turns.
    let load = CancellationToken::new();
    node.run({
        let load = load.clone();
        async move {
            for _ in 0..28 {
                let load = load.clone();
                tokio::spawn(async move {
                    while !load.is_cancelled() {
                        std::thread::sleep(Duration::from_millis(25));
                        tokio::task::yield_now().await;
                    }
                });
            }
        }
    })
    .await;
    holds(
        "the busy session is a member and has not sent its clients away",
        Duration::from_secs(6),
        || async {
            let member = cluster.view().members_of(Role::Session).any(|m| m.id == id);
            member && !state.detached.load(Ordering::Acquire)
        },
    )
    .await;
    load.cancel();
    assert_eq!(
        state.membership.rejoin_count(),
        rejoins,
        "the meta never removed the session"
    );
    assert_eq!(
        state.registry.conns().len(),
        1,
        "the client stayed on the busy session"
    );
}

/// A session whose runtime makes no progress at all (wedged: a task that never yields) must
/// still lose its membership, as a frozen process does, although its liveness thread is free
/// to run; it joins again once the runtime moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_session_loses_its_membership_and_joins_again() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap();
    let node = &cluster.sessions[0];
    let state = node.server().state().clone();
    let id = node.server().id().clone();
    let rejoins = state.membership.rejoin_count();
    let member =
        |view: registry_common::ClusterView| view.members_of(Role::Session).any(|m| m.id == id);

    // Blocks the session's one runtime thread for 5 s (the lease is 3 s).
    node.run(async {
        tokio::spawn(async { std::thread::sleep(Duration::from_secs(5)) });
    })
    .await;
    until(
        "the meta removed the wedged session",
        Duration::from_secs(5),
        || async { !member(cluster.view()) },
    )
    .await;
    until(
        "the session joined again",
        Duration::from_secs(20),
        || async { member(cluster.view()) && state.membership.rejoin_count() > rejoins },
    )
    .await;
}
