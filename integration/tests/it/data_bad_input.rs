//! Bad input on data server endpoints gets a typed error and changes nothing.

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use registry_common::error::ErrorCode;
use registry_common::member::MemberId;
use registry_common::model::{Publisher, PublisherKey};
use registry_common::proto::data::{
    OpRecord, ReplicateItem, ReplicateRequest, ReplicateResponse, ReplicatedOp, WriteOp,
    WriteRequest, WriteResponse,
};
use registry_common::DataInfoId;
use registry_rpc::{HttpClient, RpcError};
use serde_json::json;

fn publisher(id: &DataInfoId) -> Publisher {
    Publisher {
        data_info_id: id.clone(),
        key: PublisherKey {
            client_id: "intruder".into(),
            regist_id: "r".into(),
        },
        data: vec!["x".into()],
        version: 1,
        session: MemberId("session-x".into()),
        conn_id: 1,
        registered_at_ms: 1,
        zone: String::new(),
        app: String::new(),
    }
}

async fn raw_post(addr: &str, path: &str, body: String) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

#[tokio::test]
async fn bad_requests_get_typed_errors_and_change_nothing() {
    let mut config = ClusterConfig::new(1, 2, 1);
    config.data.max_batch = 100;
    config.data.max_body_bytes = 256 * 1024;
    let cluster = Cluster::start(config).await.unwrap();
    let http = HttpClient::new(Duration::from_secs(5));
    let view = cluster.view();
    let id = DataInfoId::new("svc.bad", None, None).unwrap();
    let primary = view.slots.primary_of(&id).unwrap().clone();
    let (primary_node, other_node) = if cluster.datas[0].server().id() == &primary {
        (&cluster.datas[0], &cluster.datas[1])
    } else {
        (&cluster.datas[1], &cluster.datas[0])
    };
    let p_addr = primary_node.addr.to_string();
    let o_addr = other_node.addr.to_string();
    let versions = || {
        (
            primary_node.server().state().store.version(&id),
            other_node.server().state().store.version(&id),
        )
    };

    // Stale epoch: the caller claims a table newer than ours.
    let req = WriteRequest {
        version_floor: 0,
        epoch: view.epoch + 100,
        ops: vec![WriteOp::Publish {
            publisher: publisher(&id).into(),
        }],
    };
    let resp: WriteResponse = http.post(&o_addr, "/data/v1/write", &req).await.unwrap();
    let err = resp.results[0].error.as_ref().unwrap();
    assert_eq!(err.code, ErrorCode::StaleEpoch);
    // Not the primary: redirected to it.
    let req = WriteRequest {
        version_floor: 0,
        epoch: view.epoch,
        ops: req.ops,
    };
    let resp: WriteResponse = http.post(&o_addr, "/data/v1/write", &req).await.unwrap();
    let err = resp.results[0].error.as_ref().unwrap();
    assert_eq!(err.code, ErrorCode::NotOwner);
    assert_eq!(err.redirect.as_deref(), Some(p_addr.as_str()));

    // Malformed and wrongly shaped batches.
    let (status, body) = raw_post(&p_addr, "/data/v1/write", "{nope".into()).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("malformed")));
    let (status, body) =
        raw_post(&p_addr, "/data/v1/write", json!({"epoch": "x"}).to_string()).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("malformed")));
    let (status, body) = raw_post(
        &p_addr,
        "/data/v1/write",
        json!({"epoch": 1, "ops": [{"op": "explode"}]}).to_string(),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("malformed")));
    // An invalid dataInfoId inside an op.
    let (status, body) = raw_post(
        &p_addr,
        "/data/v1/fetch",
        json!({"epoch": 1, "ids": ["no-separators"]}).to_string(),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("malformed")));

    // Oversized batch (by count) and oversized body (by bytes).
    let many = WriteRequest {
        version_floor: 0,
        epoch: view.epoch,
        ops: (0..101)
            .map(|_| WriteOp::Publish {
                publisher: publisher(&id).into(),
            })
            .collect(),
    };
    let err = http
        .post::<_, WriteResponse>(&p_addr, "/data/v1/write", &many)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::PayloadTooLarge);
    let mut big = publisher(&id);
    big.data = vec!["y".repeat(300 * 1024)];
    let err = http
        .post::<_, WriteResponse>(
            &p_addr,
            "/data/v1/write",
            &WriteRequest {
                version_floor: 0,
                epoch: view.epoch,
                ops: vec![WriteOp::Publish {
                    publisher: big.into(),
                }],
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::Api(e) if e.code == ErrorCode::PayloadTooLarge),
        "{err}"
    );

    // Unknown slot.
    let (status, body) = raw_post(
        &p_addr,
        "/data/v1/sync",
        json!({"epoch": view.epoch, "slot": 99_999, "requester": "x"}).to_string(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    for path in ["/data/v1/session-publishers", "/data/v1/session-summary"] {
        let (status, body) = raw_post(
            &p_addr,
            path,
            json!({"epoch": view.epoch, "session": "x", "slots": [99_999]}).to_string(),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_argument")),
            "{path}"
        );
    }

    // Replication from a server that is not the slot's primary is refused.
    let forged = ReplicateRequest {
        epoch: view.epoch,
        from: MemberId("data-impostor".into()),
        items: vec![ReplicateItem {
            data_info_id: id.clone(),
            ops: vec![OpRecord {
                version: 10,
                prev_version: 0,
                op: ReplicatedOp::Put {
                    publisher: std::sync::Arc::new(publisher(&id)),
                },
            }],
            full: None,
        }],
    };
    let resp: ReplicateResponse = http
        .post(&o_addr, "/data/v1/replicate", &forged)
        .await
        .unwrap();
    assert!(resp.acks.is_empty());
    assert_eq!(resp.errors[0].error.code, ErrorCode::NotOwner);

    // Unknown endpoint.
    let (status, body) = raw_post(&p_addr, "/data/v1/nope", "{}".into()).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    assert_eq!(versions(), (0, 0), "nothing was written anywhere");
}
