//! The admin API against a running cluster: the cluster status, one service across the
//! cluster, the push switch, taking a client off and on, and bad input (typed 4xx, nothing
//! changed).

use std::net::IpAddr;
use std::time::Duration;

use client_sdk::{DatumUpdate, Subscriber};
use integration::cluster::{Cluster, ClusterConfig};
use integration::raw::RawClient;
use integration::wait::{eventually, until};
use registry_common::error::ErrorCode;
use registry_common::proto::admin::{ClusterStatus, HolderRole, ServiceReport};
use registry_rpc::RpcError;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

async fn status(cluster: &Cluster) -> ClusterStatus {
    let meta = cluster.meta_addrs()[0].clone();
    cluster
        .admin_http()
        .get(&meta, "/admin/v1/status", WAIT)
        .await
        .unwrap()
}

async fn service(cluster: &Cluster, data_id: &str) -> Result<ServiceReport, RpcError> {
    let meta = cluster.meta_addrs()[0].clone();
    cluster
        .admin_http()
        .get(&meta, &format!("/admin/v1/services/{data_id}"), WAIT)
        .await
}

async fn wait_for(sub: &mut Subscriber, what: &str, pred: impl Fn(&DatumUpdate) -> bool) {
    integration::wait::update(sub, what, WAIT, pred).await
}

#[tokio::test]
async fn the_cluster_status_shows_every_server_and_the_slot_balance() {
    let cluster = Cluster::start(ClusterConfig::new(3, 2, 2)).await.unwrap();
    let client = cluster.client(0).await.unwrap();
    let _p = client
        .publish("svc.status", vec!["1.1.1.1:1".into()])
        .await
        .unwrap();
    let s = eventually("a healthy status", WAIT, || async {
        let s = status(&cluster).await;
        (s.problems.is_empty() && s.totals.publishers == 1).then_some(s)
    })
    .await;
    assert!(s.leader.is_some());
    assert_eq!(s.meta_nodes.len(), 3);
    assert!(s.meta_nodes.iter().all(|n| n.reachable && n.voter));
    assert_eq!(s.members.len(), 4);
    assert!(
        s.members.iter().all(|m| m.reachable && m.ready),
        "{:?}",
        s.members
    );
    assert_eq!(s.slots.per_server.len(), 2);
    let primaries: usize = s.slots.per_server.iter().map(|p| p.primaries).sum();
    assert_eq!(primaries as u32, s.slots.slot_count);
    assert_eq!(s.totals.connections, 1);
    assert!(s.push_enabled);

    // A data server gone shows up as a problem.
    let mut cluster = cluster;
    cluster.datas[1].kill();
    eventually("the loss reported", WAIT, || async {
        let s = status(&cluster).await;
        (!s.problems.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn one_service_across_the_cluster() {
    let cluster = Cluster::start(ClusterConfig::new(1, 2, 2)).await.unwrap();
    let publisher = cluster.client(0).await.unwrap();
    let subscriber = cluster.client(1).await.unwrap();
    let _a = publisher
        .publish("svc.where", vec!["10.0.0.1:80".into()])
        .await
        .unwrap();
    let _b = publisher
        .publish("svc.where", vec!["10.0.0.2:80".into()])
        .await
        .unwrap();
    let mut sub = subscriber.subscribe("svc.where").await.unwrap();
    wait_for(&mut sub, "both publishers", |u| u.data.len() == 2).await;

    let report = eventually("every holder and the ack", WAIT, || async {
        let r = service(&cluster, "svc.where").await.unwrap();
        let versions: Vec<_> = r.holders.iter().map(|h| h.version).collect();
        let acked = r.subscribers.first().and_then(|s| s.acked_version);
        (r.holders.len() == 2 && versions.iter().all(|v| *v == versions[0]) && acked == versions[0])
            .then_some(r)
    })
    .await;
    assert!(report
        .holders
        .iter()
        .any(|h| h.placed_as == HolderRole::Primary && h.role == Some(HolderRole::Primary)));
    assert!(report.holders.iter().all(|h| h.publishers == Some(2)));
    assert_eq!(report.publishers.len(), 2);
    let session_0 = cluster.sessions[0].server().id().clone();
    assert!(report
        .publishers
        .iter()
        .all(|p| p.session == session_0 && p.client_addr.is_some()));
    assert_eq!(report.subscribers.len(), 1);
    assert_eq!(
        report.subscribers[0].session,
        *cluster.sessions[1].server().id()
    );
    assert!(report.unreachable.is_empty());
}

#[tokio::test]
async fn with_pushes_off_nothing_is_pushed_and_on_again_everyone_gets_the_newest() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 2)).await.unwrap();
    let meta = cluster.meta_addrs()[0].clone();
    let http = cluster.admin_http();
    let publisher = cluster.client(0).await.unwrap();
    let subscriber = cluster.client(1).await.unwrap();
    let p = publisher
        .publish("svc.switch", vec!["v1".into()])
        .await
        .unwrap();
    let mut sub = subscriber.subscribe("svc.switch").await.unwrap();
    wait_for(&mut sub, "v1", |u| u.data == vec!["v1".to_string()]).await;

    let _: Value = http
        .post(&meta, "/admin/v1/push", &json!({"enabled": false}))
        .await
        .unwrap();
    until("both sessions switched off", WAIT, || async {
        cluster
            .sessions
            .iter()
            .all(|s| !s.server().state().pusher.is_enabled())
    })
    .await;
    p.republish(vec!["v2".into()]).await.unwrap();
    // The subscriber's session has v2 and holds it back.
    let report = eventually("v2 held back at the session", WAIT, || async {
        let r = service(&cluster, "svc.switch").await.unwrap();
        let s = r.subscribers.first()?;
        (s.pending_version.is_some() && s.pending_version == r.holders[0].version).then_some(r)
    })
    .await;
    assert_eq!(
        sub.latest().map(|u| u.data),
        Some(vec!["v1".to_string()]),
        "pushed while off"
    );
    assert!(status(&cluster)
        .await
        .problems
        .iter()
        .any(|p| p.contains("switched off")));
    drop(report);

    let _: Value = http
        .post(&meta, "/admin/v1/push", &json!({"enabled": true}))
        .await
        .unwrap();
    wait_for(&mut sub, "v2 once pushes are on", |u| {
        u.data == vec!["v2".to_string()]
    })
    .await;
}

#[tokio::test]
async fn a_client_taken_off_loses_its_publishers_and_cannot_come_back_until_on() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap();
    let meta = cluster.meta_addrs()[0].clone();
    let session = cluster.session_addrs()[0].clone();
    let http = cluster.admin_http();
    let bad: IpAddr = "127.0.0.9".parse().unwrap();

    let subscriber = cluster.client(0).await.unwrap();
    let mut sub = subscriber.subscribe("svc.off").await.unwrap();
    let hello_frame = json!({"type": "hello", "protocol": 1, "clientId": "misbehaving"});
    let publish = json!({"type": "register_publisher", "registId": "p", "dataId": "svc.off", "data": ["9.9.9.9:9"], "version": 1});
    let mut raw = RawClient::connect_from(&session, bad).await.unwrap();
    assert_eq!(
        raw.request(hello_frame.clone()).await.unwrap()["type"],
        "welcome"
    );
    assert_eq!(raw.request(publish.clone()).await.unwrap()["type"], "ack");
    wait_for(&mut sub, "the client's publisher", |u| u.data.len() == 1).await;

    let _: Value = http
        .post(
            &meta,
            "/admin/v1/clients/off",
            &json!({"address": "127.0.0.9"}),
        )
        .await
        .unwrap();
    // Its connection is closed and its publisher disappears for subscribers.
    let closed = raw.closed(WAIT).await.unwrap();
    assert_eq!(closed.code.map(u16::from), Some(4003), "{closed:?}");
    wait_for(&mut sub, "the publisher gone", |u| u.data.is_empty()).await;
    // Its reconnects are refused; the subscriber's connection is untouched.
    let mut again = RawClient::connect_from(&session, bad).await.unwrap();
    let r = again.request(hello_frame.clone()).await.unwrap();
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{r}"
    );
    assert_eq!(status(&cluster).await.clients_off, vec!["127.0.0.9"]);

    let _: Value = http
        .post(
            &meta,
            "/admin/v1/clients/on",
            &json!({"address": "127.0.0.9"}),
        )
        .await
        .unwrap();
    let mut back = eventually("the client back", WAIT, || async {
        let mut c = RawClient::connect_from(&session, bad).await.ok()?;
        (c.request(hello_frame.clone()).await.ok()?["type"] == "welcome").then_some(c)
    })
    .await;
    assert_eq!(back.request(publish).await.unwrap()["type"], "ack");
    wait_for(&mut sub, "the publisher back", |u| u.data.len() == 1).await;
}

#[tokio::test]
async fn bad_admin_calls_get_typed_errors_and_change_nothing() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap();
    let meta = cluster.meta_addrs()[0].clone();
    let http = cluster.admin_http();
    let before = status(&cluster).await;
    let code = |r: Result<Value, RpcError>| r.map(|_| ()).map_err(|e| e.code());

    // An unknown service, an invalid dataId.
    assert_eq!(
        service(&cluster, "svc.never")
            .await
            .map(|_| ())
            .map_err(|e| e.code()),
        Err(ErrorCode::NotFound)
    );
    let long = "x".repeat(300);
    assert_eq!(
        service(&cluster, &long)
            .await
            .map(|_| ())
            .map_err(|e| e.code()),
        Err(ErrorCode::InvalidArgument)
    );
    // Malformed bodies, missing fields, an address that is not off, an unknown server.
    for (path, body, want) in [
        ("/admin/v1/push", json!({"on": true}), ErrorCode::Malformed),
        ("/admin/v1/push", json!("yes"), ErrorCode::Malformed),
        (
            "/admin/v1/clients/off",
            json!({"address": ""}),
            ErrorCode::InvalidArgument,
        ),
        (
            "/admin/v1/clients/off",
            json!({"address": "a b"}),
            ErrorCode::InvalidArgument,
        ),
        (
            "/admin/v1/clients/on",
            json!({"address": "10.9.9.9"}),
            ErrorCode::NotFound,
        ),
        (
            "/admin/v1/drain",
            json!({"ids": ["data-127.0.0.1:1-x"]}),
            ErrorCode::NotFound,
        ),
        ("/admin/v1/nothing", json!({}), ErrorCode::NotFound),
    ] {
        assert_eq!(
            code(http.post(&meta, path, &body).await),
            Err(want),
            "{path} {body}"
        );
    }
    // Wrong method.
    assert_eq!(
        code(http.get(&meta, "/admin/v1/push", WAIT).await),
        Err(ErrorCode::UnknownMessage)
    );
    let after = status(&cluster).await;
    assert_eq!(after.epoch, before.epoch, "a refused call changed the view");
    assert!(after.push_enabled && after.clients_off.is_empty());
}
