//! With auth on, internal, admin and Raft endpoints take only signed calls: forged ones are
//! refused with `unauthenticated` (no or bad signature, replay, tampered body) or `forbidden`
//! (a client or admin key where the cluster secret is needed), and change nothing.

use std::time::Duration;

use client_sdk::Subscriber;
use integration::cluster::{Cluster, ClusterConfig};
use registry_common::acl::Permissions;
use registry_common::auth::{ClusterSecret, Credential, Secret};
use registry_common::error::ErrorCode;
use registry_common::member::{Member, MemberId, Role};
use registry_common::model::{Publisher, PublisherKey};
use registry_common::DataInfoId;
use registry_rpc::HttpClient;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn forged_publisher(id: &DataInfoId) -> Publisher {
    Publisher {
        data_info_id: id.clone(),
        key: PublisherKey {
            client_id: "intruder".into(),
            regist_id: "r".into(),
        },
        data: vec!["6.6.6.6:80".into()],
        version: u64::MAX,
        session: MemberId("session-x".into()),
        conn_id: 1,
        registered_at_ms: 1,
        zone: String::new(),
        app: String::new(),
    }
}

/// Calls `path` with `body` and returns the refusal's code (panics on success).
async fn refused(http: &HttpClient, addr: &str, path: &str, body: &Value) -> ErrorCode {
    match http.post::<_, Value>(addr, path, body).await {
        Ok(v) => panic!("{path} accepted a forged call: {v}"),
        Err(e) => e.code(),
    }
}

async fn wait_data(sub: &mut Subscriber, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(u)) if u.data == want => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("subscription closed"),
            Err(_) => panic!("no update with {want:?}; last: {:?}", sub.latest()),
        }
    }
}

#[tokio::test]
async fn forged_internal_admin_and_raft_calls_are_refused_and_change_nothing() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 1).with_auth().unwrap())
        .await
        .unwrap();
    let auth = cluster.config.auth.clone().unwrap();
    let meta = cluster.metas[0].addr.to_string();
    let data = cluster.datas[0].addr.to_string();
    let session = cluster.sessions[0].addr.to_string();
    let app_key = cluster
        .principal(
            "app",
            Permissions {
                publish: vec!["svc.*".into()],
                subscribe: vec!["svc.*".into()],
                admin: false,
            },
        )
        .await
        .unwrap();
    let view = cluster.view();
    let id = DataInfoId::new("svc.target", None, None).unwrap();

    // A real publisher and a real subscriber of it.
    let client = cluster.client_with(0, &app_key).await.unwrap();
    let publication = client
        .publish("svc.target", vec!["10.0.0.1:80".into()])
        .await
        .unwrap();
    let mut sub = client.subscribe("svc.target").await.unwrap();
    wait_data(&mut sub, &["10.0.0.1:80"]).await;
    let version_before = cluster.datas[0].server().state().store.version(&id);

    let anonymous = HttpClient::new(Duration::from_secs(5));
    let wrong_secret = HttpClient::new(Duration::from_secs(5)).with_signer(Some(
        Credential::new("cluster", &Secret::generate()).unwrap(),
    ));
    let client_signed = HttpClient::new(Duration::from_secs(5)).with_signer(Some(app_key.clone()));
    let admin_signed =
        HttpClient::new(Duration::from_secs(5)).with_signer(Some(auth.admin.clone()));

    let member_calls: Vec<(&str, &str, Value)> = vec![
        (
            &session,
            "/session/v1/changes",
            json!({"from": view.members_of(Role::Data).next().unwrap().id, "epoch": view.epoch,
                   "changes": [{"dataInfoId": id, "version": u64::MAX,
                                "datum": {"dataInfoId": id, "version": u64::MAX, "publishers": 1, "data": ["6.6.6.6:80"]}}]}),
        ),
        (
            &data,
            "/data/v1/write",
            json!({"epoch": view.epoch, "ops": [{"op": "publish", "publisher": forged_publisher(&id)}]}),
        ),
        (
            &data,
            "/data/v1/replicate",
            json!({"epoch": view.epoch, "from": "data-x", "items": []}),
        ),
        (
            &data,
            "/data/v1/sync",
            json!({"epoch": view.epoch, "slot": 0, "requester": "data-x"}),
        ),
        (
            &meta,
            "/meta/v1/register",
            serde_json::to_value(registry_common::proto::meta::RegisterRequest {
                member: Member {
                    id: MemberId("data-evil".into()),
                    role: Role::Data,
                    addr: "127.0.0.1:1".into(),
                    zone: String::new(),
                    registered_at_ms: 0,
                },
            })
            .unwrap(),
        ),
        (
            &meta,
            "/meta/v1/deregister",
            json!({"id": view.members_of(Role::Session).next().unwrap().id}),
        ),
        (&meta, "/raft/vote", json!({})),
        (&meta, "/raft/append", json!({})),
        (&meta, "/raft/snapshot", json!({})),
    ];
    for (addr, path, body) in &member_calls {
        assert_eq!(
            refused(&anonymous, addr, path, body).await,
            ErrorCode::Unauthenticated,
            "{path} unsigned"
        );
        assert_eq!(
            refused(&wrong_secret, addr, path, body).await,
            ErrorCode::Unauthenticated,
            "{path} with a wrong cluster secret"
        );
        assert_eq!(
            refused(&client_signed, addr, path, body).await,
            ErrorCode::Forbidden,
            "{path} with a client key"
        );
        assert_eq!(
            refused(&admin_signed, addr, path, body).await,
            ErrorCode::Forbidden,
            "{path} with an admin key"
        );
    }

    let admin_calls: Vec<(&str, Value)> = vec![
        (
            "/admin/v1/meta/add-node",
            json!({"nodeId": 9, "addr": "127.0.0.1:1", "voter": true}),
        ),
        (
            "/admin/v1/drain",
            json!({"ids": [view.members_of(Role::Data).next().unwrap().id]}),
        ),
        (
            "/admin/v1/acl/put",
            json!({"name": "evil", "publish": ["*"], "admin": true}),
        ),
        ("/admin/v1/acl/key-create", json!({"principal": "app"})),
    ];
    for (path, body) in &admin_calls {
        assert_eq!(
            refused(&anonymous, &meta, path, body).await,
            ErrorCode::Unauthenticated,
            "{path} unsigned"
        );
        assert_eq!(
            refused(&client_signed, &meta, path, body).await,
            ErrorCode::Forbidden,
            "{path} with a non-admin key"
        );
    }

    // A correctly signed call, replayed or with its body changed, is refused too.
    let secret = ClusterSecret::from_file(&auth.secret_file).unwrap();
    let body = serde_json::to_vec(&json!({"id": "session-x"})).unwrap();
    let headers = secret
        .signing
        .sign_request("POST", "/meta/v1/deregister", &body);
    let raw = reqwest::Client::new();
    let send = |body: Vec<u8>| {
        let mut req = raw
            .post(format!("http://{meta}/meta/v1/deregister"))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers.pairs() {
            req = req.header(name, value);
        }
        req.send()
    };
    let first = send(body.clone()).await.unwrap();
    // The genuine call passes the signature check and reaches the handler, which does not
    // know the member.
    assert_eq!(first.status().as_u16(), 404, "the genuine call is accepted");
    let replay = send(body.clone()).await.unwrap();
    assert_eq!(replay.status().as_u16(), 401, "a replay is refused");
    let tampered = serde_json::to_vec(&json!({"id": "session-1"})).unwrap();
    let changed = send(tampered).await.unwrap();
    assert_eq!(changed.status().as_u16(), 401, "a changed body is refused");

    // Nothing changed: same members, same voters, no new principal, the data tier and the
    // subscriber still on the real publisher, which still updates.
    let after = cluster.view();
    assert_eq!(
        after.members.keys().collect::<Vec<_>>(),
        view.members.keys().collect::<Vec<_>>()
    );
    assert!(
        cluster.metas[0].server().raft().state().draining.is_empty(),
        "nothing drained"
    );
    let status = cluster.metas[0].server().raft().status();
    assert_eq!(
        status.voters.keys().collect::<Vec<_>>(),
        vec![&1],
        "no voter added"
    );
    assert!(status.learners.is_empty(), "no learner added");
    let acl: Value = admin_signed
        .get(&meta, "/admin/v1/acl", WAIT)
        .await
        .unwrap();
    assert!(acl["principals"].get("evil").is_none(), "{acl}");
    assert_eq!(
        acl["principals"]["app"]["keys"].as_array().map(|k| k.len()),
        Some(1),
        "{acl}"
    );
    // The ACL the meta node hands to members carries the keys' secrets sealed: a member can
    // open them, anyone reading the (plaintext) link cannot.
    let member = HttpClient::new(WAIT).with_signer(Some(secret.signing.clone()));
    let watched: registry_common::acl::Acl = member.get(&meta, "/meta/v1/acl", WAIT).await.unwrap();
    let app_secret = String::from_utf8_lossy(app_key.secret.expose()).into_owned();
    let sealed = &watched.principals["app"].keys[0].secret;
    assert!(
        sealed.starts_with(registry_common::auth::SEALED_PREFIX),
        "{sealed}"
    );
    assert!(!serde_json::to_string(&watched)
        .unwrap()
        .contains(&app_secret));
    assert_eq!(secret.open(sealed).unwrap(), app_secret);

    let datum = cluster.datas[0].server().state().store.datum(&id);
    assert_eq!(datum.version, version_before);
    assert_eq!(datum.publishers.len(), 1);
    assert_eq!(datum.publishers[0].data, vec!["10.0.0.1:80"]);
    publication
        .republish(vec!["10.0.0.2:80".into()])
        .await
        .unwrap();
    wait_data(&mut sub, &["10.0.0.2:80"]).await;

    // Every refusal is counted.
    let metrics = reqwest::get(format!("http://{data}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("registry_auth_refused_total{reason=\"missing\"}"),
        "{metrics}"
    );
}
