//! A session cut off from the meta cluster sends its clients away (`go_away`) and serves again
//! once its renewals are taken. The publishers of the clients it sent away stay in the data
//! tier for their re-registration through another session. The repair the session runs when
//! it serves again must leave them alone meanwhile (removing them showed every subscriber a
//! partial view until each client was back: found by `registry-chaos`, a session frozen past
//! its lease), and once the handover grace has passed it must remove those of a client that
//! never came back.

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::proxy::{Fault, Proxy};
use integration::raw::RawClient;
use integration::wait::until;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

async fn register(addr: &str, client: &str) -> RawClient {
    let mut c = RawClient::hello(addr, client).await.unwrap();
    let reply = c
        .request(
            json!({"type": "register_publisher", "registId": "p", "dataId": "svc.handover",
            "data": [client], "version": 1}),
        )
        .await
        .unwrap();
    assert_eq!(reply["type"], "ack", "{reply}");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_session_leaves_its_sent_away_clients_publishers_for_the_handover() {
    let mut config = ClusterConfig::new(1, 1, 1);
    // Production's proportions, so that the cut-off session detaches (at 60 % of the lease,
    // 3 s) well before the meta would remove it (a heartbeat silent for three renew
    // intervals, 4.5 s, or the lease, 5 s): this test is about the session's own repair, and
    // the cut is healed as soon as the session has sent its clients away.
    config.meta.renew_interval_ms = 1_500;
    config.meta.lease_ms = 5_000;
    config.session.handover_grace_ms = 3_000;
    let cluster = Cluster::start(config).await.unwrap();
    let other = cluster.sessions[0].addr.to_string();

    // A session that reaches the meta only through a proxy the test can cut.
    let meta: std::net::SocketAddr = cluster.meta_addrs()[0].parse().unwrap();
    let proxy = Proxy::start(Some(meta)).unwrap();
    let cut = cluster
        .session_via(&proxy.addr().to_string())
        .await
        .unwrap();
    let cut_addr = cut.addr.to_string();

    // One publisher on the other session keeps the datum from being emptied; `mover` will
    // come back through the other session, `gone` never will.
    let stayer = cluster.client(0).await.unwrap();
    let _stay = stayer
        .publish("svc.handover", vec!["stay".into()])
        .await
        .unwrap();
    let mut mover = register(&cut_addr, "mover").await;
    let mut gone = register(&cut_addr, "gone").await;
    let watcher = cluster.client(0).await.unwrap();
    let (_sub, seen) = Cluster::record_views(&watcher, "svc.handover")
        .await
        .unwrap();
    until("the watcher sees all three publishers", WAIT, || async {
        seen.lock().last().is_some_and(|d| d.len() == 3)
    })
    .await;
    let from = seen.lock().len();

    // Cut the session from the meta until it sends its clients away, then heal.
    proxy.set_default_fault(Fault::Blackhole);
    for c in [&mut mover, &mut gone] {
        loop {
            let f = c.next_frame(WAIT).await.unwrap();
            if f["type"] == "go_away" {
                break;
            }
        }
    }
    let state = cut.server().state().clone();
    let passes = state.reconciler.repair_passes();
    proxy.heal();
    until("the cut-off session serves again", WAIT, || async {
        !state.detached.load(std::sync::atomic::Ordering::Acquire)
    })
    .await;
    // Serving again, it repairs every slot at once; wait for that pass and its writes.
    until("the returning session's repair", WAIT, || async {
        state.reconciler.repair_passes() > passes && state.forwarder.pending() == 0
    })
    .await;
    assert_eq!(
        cluster.data_publishers(0).await.unwrap(),
        3,
        "the returning session removed the publishers it had sent away"
    );

    // `mover` comes back through the other session and takes its publisher over.
    drop(mover);
    let _mover = register(&other, "mover").await;
    until(
        "the grace passes and the repair removes what nobody took over",
        WAIT,
        || async {
            state.reconciler.handovers() == 0
                && state.forwarder.pending() == 0
                && cluster.data_publishers(0).await.unwrap() == 2
        },
    )
    .await;
    until("the watcher sees `gone` removed", WAIT, || async {
        seen.lock().last() == Some(&vec!["mover".to_string(), "stay".to_string()])
    })
    .await;
    let after: Vec<Vec<String>> = seen.lock()[from..].to_vec();
    assert!(
        after.iter().all(|d| d.contains(&"mover".to_string())),
        "the watcher was shown the moving client's publisher gone: {after:?}"
    );
    drop(gone);
}
