//! A session that goes silent to everyone (frozen, or cut off from the meta cluster and from
//! its clients) is removed by the meta, and then the data tier removes its publishers. Its
//! clients are alive: they must notice the silence and re-register through another session
//! before that removal is shown to subscribers. The SDK used to wait for three 10 s ping
//! intervals (30 s), while the cluster gives up on a silent session in about 13 s (found by
//! `registry-chaos`: a session frozen 13.2 s, its clients' instances gone from every view).
//! Timings here keep production's proportions at half scale.

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::proxy::{Fault, Proxy};
use integration::wait::until;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_silent_session_move_before_the_cluster_removes_their_publishers() {
    let mut config = ClusterConfig::new(1, 1, 1);
    // Production: renewals every 2 s, a heartbeat silent for three of them (6 s) plus a 1 s
    // grace removes a member, the data tier cleans up 3 s later, removal protection holds
    // 3 s more. Here, half of each, and half the SDK's default ping interval.
    config.meta.renew_interval_ms = 1_000;
    config.meta.lease_ms = 5_000;
    config.meta.disconnect_grace_ms = 500;
    config.data.session_cleanup_grace_ms = 1_500;
    config.session.empty_protection_ms = 1_500;
    let cluster = Cluster::start(config).await.unwrap();
    let other = cluster.sessions[0].addr.to_string();

    // The session to silence reaches the meta and its client through proxies.
    let meta: std::net::SocketAddr = cluster.meta_addrs()[0].parse().unwrap();
    let meta_link = Proxy::start(Some(meta)).unwrap();
    let silent = cluster
        .session_via(&meta_link.addr().to_string())
        .await
        .unwrap();
    let client_link = Proxy::start(Some(silent.addr)).unwrap();

    let stayer = cluster.client(0).await.unwrap();
    let _stay = stayer
        .publish("svc.silent", vec!["stay".into()])
        .await
        .unwrap();
    // The moving client knows both sessions and starts at the one about to go silent.
    let mut mover_config =
        cluster.client_config(vec![client_link.addr().to_string(), other.clone()]);
    mover_config.ping_interval /= 2;
    let mover = client_sdk::Client::connect(mover_config).await.unwrap();
    let mover_pub = mover
        .publish("svc.silent", vec!["mover".into()])
        .await
        .unwrap();
    let watcher = cluster.client(0).await.unwrap();
    let (_sub, seen) = Cluster::record_views(&watcher, "svc.silent").await.unwrap();
    let both = vec!["mover".to_string(), "stay".to_string()];
    until("the watcher sees both publishers", WAIT, || async {
        seen.lock().last() == Some(&both)
    })
    .await;
    let from = seen.lock().len();

    // Silence: no byte to or from the meta, none to or from the client.
    meta_link.set_default_fault(Fault::Blackhole);
    client_link.set_default_fault(Fault::Blackhole);
    let silent_id = silent.server().state().id.clone();
    until("the meta removes the silent session", WAIT, || async {
        !cluster.view().members.contains_key(&silent_id)
    })
    .await;
    // The data tier then removes whatever the silent session still owns; the mover's
    // publisher must by then be owned by the other session.
    let http = registry_rpc::HttpClient::new(Duration::from_secs(2));
    let data = cluster.datas[0].addr.to_string();
    until(
        "the data tier holds no publisher of the silent session",
        WAIT,
        || async {
            let held: serde_json::Value = http
                .post(
                    &data,
                    "/data/v1/session-publishers",
                    &serde_json::json!({"epoch": cluster.view().epoch, "session": silent_id, "slots": []}),
                )
                .await
                .unwrap_or_default();
            held["publishers"].as_array().is_some_and(|p| p.is_empty())
        },
    )
    .await;
    until(
        "the mover is held through the other session",
        WAIT,
        || async { cluster.session_holds(0, mover_pub.regist_id()) },
    )
    .await;
    // Whatever protection windows were running have run out.
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
    drop(silent);
}
