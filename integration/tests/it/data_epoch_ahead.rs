//! A caller whose slot table is newer than the data server's gets `stale_epoch` for writes
//! and reads alike, even where the server's own table makes it the slot's primary: the
//! newer table may have moved the slot away, and accepting would take a write for a slot the
//! server lost.

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use registry_common::error::ErrorCode;
use registry_common::member::MemberId;
use registry_common::model::{Publisher, PublisherKey};
use registry_common::proto::data::{FetchRequest, WriteOp, WriteRequest, WriteResponse};
use registry_common::DataInfoId;
use registry_rpc::{HttpClient, RpcError};

#[tokio::test]
async fn the_primary_refuses_a_caller_on_a_newer_epoch() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap();
    let http = HttpClient::new(Duration::from_secs(5));
    let epoch = cluster.view().epoch;
    let addr = cluster.datas[0].addr.to_string();
    let id = DataInfoId::new("svc.ahead", None, None).unwrap();
    let write = |epoch| WriteRequest {
        epoch,
        version_floor: 0,
        ops: vec![WriteOp::Publish {
            publisher: Publisher {
                data_info_id: id.clone(),
                key: PublisherKey {
                    client_id: "c".into(),
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
            .into(),
        }],
    };
    let resp: WriteResponse = http
        .post(&addr, "/data/v1/write", &write(epoch + 1_000))
        .await
        .unwrap();
    let err = resp.results[0].error.as_ref().expect("refused");
    assert_eq!(err.code, ErrorCode::StaleEpoch);
    assert_eq!(cluster.datas[0].server().state().store.version(&id), 0);

    let fetch = FetchRequest {
        epoch: epoch + 1_000,
        ids: vec![id.clone()],
        compact: true,
    };
    let answer: Result<serde_json::Value, RpcError> =
        http.post(&addr, "/data/v1/fetch", &fetch).await;
    let text = format!("{answer:?}");
    assert!(text.contains("stale_epoch"), "fetch ahead answered {text}");

    // On the server's own epoch the same write lands.
    let resp: WriteResponse = http
        .post(&addr, "/data/v1/write", &write(epoch))
        .await
        .unwrap();
    assert!(resp.results[0].error.is_none(), "{:?}", resp.results[0]);
}
