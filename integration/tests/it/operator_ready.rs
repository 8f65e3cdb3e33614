//! Honest readiness: a data server is not ready while it copies slots in, a session without
//! a data tier is not ready, a meta node without a leader is not ready; `/health` stays up.

use std::time::Duration;

use data_server::slots::SyncGate;
use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::until;
use registry_common::error::ErrorCode;
use registry_rpc::HttpClient;

const WAIT: Duration = Duration::from_secs(15);

/// `Ok(())` when `/ready` answers 200, else the typed error it answered with.
async fn ready(http: &HttpClient, addr: &str) -> Result<(), ErrorCode> {
    match http.get::<String>(addr, "/ready", WAIT).await {
        Err(registry_rpc::RpcError::Api(e)) => Err(e.code),
        // "ready" is plain text: a 200 whose body is not JSON.
        _ if http.probe(addr, "/ready", WAIT).await.ok() == Some(200) => Ok(()),
        Err(e) => Err(e.code()),
        Ok(_) => Ok(()),
    }
}

#[tokio::test]
async fn a_data_server_is_ready_only_once_its_slots_are_copied_in() {
    let mut cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap();
    let client = cluster.client(0).await.unwrap();
    for i in 0..50 {
        client
            .publish(&format!("svc.ready.{i}"), vec![format!("10.0.0.{i}:1")])
            .await
            .unwrap();
    }
    let http = HttpClient::new(WAIT);
    let gate = SyncGate::closed();
    let held = gate.clone();
    cluster
        .add_data_with(move |cfg| cfg.sync_gate = held)
        .await
        .unwrap();
    let new = cluster.datas[1].addr.to_string();
    // It joined and was given slots, which it cannot copy in while the gate is closed.
    until("the new server holds slots in the table", WAIT, || async {
        let id = cluster.datas[1].server().id().clone();
        cluster.view().slots.slots.iter().any(|a| a.holds(&id))
    })
    .await;
    assert_eq!(ready(&http, &new).await, Err(ErrorCode::Unavailable));
    assert_eq!(http.probe(&new, "/health", WAIT).await.ok(), Some(200));
    let status: registry_common::proto::admin::DataStatus =
        http.get(&new, "/admin/v1/status", WAIT).await.unwrap();
    assert!(!status.ready && status.syncing_slots > 0, "{status:?}");
    assert!(status.not_ready.unwrap_or_default().contains("copied in"));

    gate.open();
    until("ready once copied in", WAIT, || async {
        ready(&http, &new).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn a_session_without_a_data_tier_is_not_ready() {
    let mut cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap();
    let http = HttpClient::new(WAIT);
    let session = cluster.session_addrs()[0].clone();
    until("the session ready", WAIT, || async {
        ready(&http, &session).await.is_ok()
    })
    .await;
    cluster.datas[0].kill();
    until("the session not ready", WAIT, || async {
        ready(&http, &session).await == Err(ErrorCode::Unavailable)
    })
    .await;
}

#[tokio::test]
async fn a_meta_node_without_a_leader_is_not_ready() {
    let mut cluster = Cluster::start(ClusterConfig::new(3, 1, 1)).await.unwrap();
    let http = HttpClient::new(WAIT);
    let survivor = cluster.meta_addrs()[2].clone();
    assert_eq!(ready(&http, &survivor).await, Ok(()));
    cluster.metas[0].kill();
    cluster.metas[1].kill();
    until("no leader, not ready", WAIT, || async {
        ready(&http, &survivor).await == Err(ErrorCode::Unavailable)
    })
    .await;
}
