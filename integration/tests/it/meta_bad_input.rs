//! Bad input on every meta endpoint (malformed JSON or query, wrong shape, invalid values,
//! unknown member or node, stale epoch, oversized body, wrong method, no WebSocket upgrade)
//! gets a typed 4xx error and changes nothing: the state is the same on every node and the
//! leader's log did not grow. A follower refuses writes with the leader's address; a
//! conditional write at the right epoch goes through.

use registry_common::error::{ApiError, ErrorCode};
use registry_common::member::ClusterSettings;
use serde_json::json;
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::meta_fixture::{MetaCluster, WAIT};

/// One bad request and the refusal it must get.
struct Case {
    /// Named in failure messages.
    what: &'static str,
    /// POST (with `body`) or GET.
    post: bool,
    /// Path and query.
    path: String,
    /// Request body of a POST.
    body: Vec<u8>,
    /// Expected HTTP status.
    status: u16,
    /// Expected error code.
    code: ErrorCode,
}

fn post(what: &'static str, path: &str, body: impl Into<Vec<u8>>, code: ErrorCode) -> Case {
    Case {
        what,
        post: true,
        path: path.to_owned(),
        body: body.into(),
        status: code.http_status(),
        code,
    }
}

fn get(what: &'static str, path: &str, code: ErrorCode) -> Case {
    Case {
        what,
        post: false,
        path: path.to_owned(),
        body: Vec::new(),
        status: code.http_status(),
        code,
    }
}

/// Sends one request; while a leader whose quorum acknowledgements are late (a loaded
/// machine) refuses with `not_leader`, asks again, as any client would. Returns the status
/// and the body.
async fn send(http: &reqwest::Client, post: bool, url: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let req = if post {
            http.post(url)
                .header("content-type", "application/json")
                .body(body.to_vec())
        } else {
            http.get(url)
        };
        let resp = req.send().await.expect("the node answers");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("a body").to_vec();
        let refused = serde_json::from_slice::<ApiError>(&bytes)
            .is_ok_and(|e| e.code == ErrorCode::NotLeader);
        if !refused || tokio::time::Instant::now() > deadline {
            return (status, bytes);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn json_bytes(v: serde_json::Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_meta_endpoint_refuses_bad_input_with_a_typed_error_and_changes_nothing() {
    let mut config = MetaCluster::fast_config();
    config.max_body_bytes = 64 * 1024;
    config.lease_ms = 20_000;
    let max_body = config.max_body_bytes;
    let mut cluster = MetaCluster::start(3, config).await;
    let data = cluster.add_data().await;
    let leader = cluster.wait_leader().await;
    let before = cluster.wait_same_state().await;
    let log_before = cluster.nodes[leader]
        .server()
        .raft()
        .status()
        .last_log_index;
    let epoch = before.view.epoch;
    assert!(epoch >= 1);

    let huge =
        json_bytes(json!({"member": {"id": "x".repeat(max_body), "role": "data", "addr": "a:1"}}));
    let member = |id: &str, addr: &str, zone: &str| {
        json_bytes(json!({"member": {"id": id, "role": "data", "addr": addr, "zone": zone}}))
    };
    let settings = |copies: usize| {
        let mut s = serde_json::to_value(ClusterSettings::default()).expect("settings");
        s["copies"] = json!(copies);
        json_bytes(s)
    };
    use ErrorCode::*;
    let cases = vec![
        post(
            "register: not JSON",
            "/meta/v1/register",
            "{not json",
            Malformed,
        ),
        post(
            "register: wrong shape",
            "/meta/v1/register",
            r#"{"member": 1}"#,
            Malformed,
        ),
        post(
            "register: unknown role",
            "/meta/v1/register",
            json_bytes(json!({"member": {"id": "x", "role": "king", "addr": "a:1"}})),
            Malformed,
        ),
        post(
            "register: empty id",
            "/meta/v1/register",
            member("", "a:1", ""),
            InvalidArgument,
        ),
        post(
            "register: control character in addr",
            "/meta/v1/register",
            member("x", "a:1\n", ""),
            InvalidArgument,
        ),
        post(
            "register: over-long zone",
            "/meta/v1/register",
            member("x", "a:1", &"z".repeat(300)),
            InvalidArgument,
        ),
        post(
            "register: oversized body",
            "/meta/v1/register",
            huge.clone(),
            PayloadTooLarge,
        ),
        post("renew: wrong shape", "/meta/v1/renew", "[]", Malformed),
        post(
            "renew: unknown member",
            "/meta/v1/renew",
            r#"{"id": "nobody"}"#,
            NotFound,
        ),
        post(
            "renew: oversized body",
            "/meta/v1/renew",
            huge.clone(),
            PayloadTooLarge,
        ),
        post(
            "deregister: not JSON",
            "/meta/v1/deregister",
            "nope",
            Malformed,
        ),
        post(
            "deregister: unknown member",
            "/meta/v1/deregister",
            r#"{"id": "nobody"}"#,
            NotFound,
        ),
        get(
            "view: epoch not a number",
            "/meta/v1/view?afterEpoch=abc",
            Malformed,
        ),
        get(
            "view: negative timeout",
            "/meta/v1/view?timeoutMs=-5",
            Malformed,
        ),
        get(
            "heartbeat: no WebSocket upgrade",
            &format!("/meta/v1/heartbeat?id={}", data.id),
            Malformed,
        ),
        get("heartbeat: no member id", "/meta/v1/heartbeat", Malformed),
        post(
            "status: wrong method",
            "/admin/v1/meta",
            "{}",
            UnknownMessage,
        ),
        get(
            "register: wrong method",
            "/meta/v1/register",
            UnknownMessage,
        ),
        post(
            "add-node: not JSON",
            "/admin/v1/meta/add-node",
            "{",
            Malformed,
        ),
        post(
            "add-node: no address",
            "/admin/v1/meta/add-node",
            r#"{"nodeId": 9, "addr": ""}"#,
            InvalidArgument,
        ),
        post(
            "add-node: existing node elsewhere",
            "/admin/v1/meta/add-node",
            r#"{"nodeId": 1, "addr": "elsewhere:1"}"#,
            InvalidArgument,
        ),
        post(
            "add-node: oversized body",
            "/admin/v1/meta/add-node",
            huge.clone(),
            PayloadTooLarge,
        ),
        post(
            "remove-node: unknown node",
            "/admin/v1/meta/remove-node",
            r#"{"nodeId": 42}"#,
            NotFound,
        ),
        post(
            "remove-node: wrong shape",
            "/admin/v1/meta/remove-node",
            r#"{"nodeId": "one"}"#,
            Malformed,
        ),
        post(
            "drain: unknown member",
            "/admin/v1/drain",
            r#"{"ids": ["nobody"]}"#,
            NotFound,
        ),
        post(
            "drain: no ids",
            "/admin/v1/drain",
            r#"{"ids": []}"#,
            InvalidArgument,
        ),
        post(
            "drain: stale epoch",
            &format!("/admin/v1/drain?expectEpoch={}", epoch - 1),
            json_bytes(json!({"ids": [data.id]})),
            StaleEpoch,
        ),
        post(
            "drain: the last data server",
            "/admin/v1/drain",
            json_bytes(json!({"ids": [data.id]})),
            FailedPrecondition,
        ),
        post(
            "drain: epoch not a number",
            "/admin/v1/drain?expectEpoch=x",
            json_bytes(json!({"ids": [data.id]})),
            Malformed,
        ),
        post(
            "settings: no copies",
            "/admin/v1/settings",
            settings(0),
            InvalidArgument,
        ),
        post(
            "settings: stale epoch",
            &format!("/admin/v1/settings?expectEpoch={}", epoch - 1),
            settings(1),
            StaleEpoch,
        ),
        post(
            "settings: oversized body",
            "/admin/v1/settings",
            huge,
            PayloadTooLarge,
        ),
        get("unknown path", "/meta/v1/nothing-here", NotFound),
    ];

    let http = reqwest::Client::new();
    let base = format!("http://{}", cluster.nodes[leader].direct());
    for case in &cases {
        let url = format!("{base}{}", case.path);
        let (status, body) = send(&http, case.post, &url, &case.body).await;
        let err: ApiError = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{}: not a typed error ({e}): HTTP {status} {}",
                case.what,
                String::from_utf8_lossy(&body)
            )
        });
        assert_eq!(
            (status, err.code),
            (case.status, case.code),
            "{}: {}",
            case.what,
            err.message
        );
        assert!((400..500).contains(&status), "{}: HTTP {status}", case.what);
        if case.code == StaleEpoch {
            assert_eq!(
                err.epoch,
                Some(epoch),
                "{}: carries the current epoch",
                case.what
            );
        }
    }

    // A heartbeat of an unknown member is refused before the upgrade, with a typed body.
    let url = format!(
        "ws://{}/meta/v1/heartbeat?id=nobody",
        cluster.nodes[leader].direct()
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 404);
            let err: ApiError = serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                .expect("a typed error");
            assert_eq!(err.code, NotFound);
        }
        other => panic!("heartbeat of an unknown member: {other:?}"),
    }

    // A follower refuses writes and names the leader.
    let follower = (leader + 1) % 3;
    let resp = http
        .post(format!(
            "http://{}/meta/v1/renew",
            cluster.nodes[follower].direct()
        ))
        .json(&json!({"id": data.id}))
        .send()
        .await
        .expect("the follower answers");
    assert_eq!(resp.status().as_u16(), 421);
    let err: ApiError = resp.json().await.expect("a typed error");
    assert_eq!(err.code, NotLeader);
    assert_eq!(err.redirect, Some(cluster.nodes[leader].advertised()));

    // --- nothing changed, nothing was even proposed.
    let after = cluster.wait_same_state().await;
    assert_eq!(after, before);
    assert_eq!(
        cluster.nodes[leader]
            .server()
            .raft()
            .status()
            .last_log_index,
        log_before
    );

    // A guard for an epoch not reached yet goes to the state machine, which refuses it there.
    let url = format!("{base}/admin/v1/settings?expectEpoch={}", epoch + 5);
    let (status, body) = send(&http, true, &url, &settings(1)).await;
    assert_eq!(status, 409);
    let err: ApiError = serde_json::from_slice(&body).expect("a typed error");
    assert_eq!((err.code, err.epoch), (StaleEpoch, Some(epoch)));
    assert_eq!(cluster.wait_same_state().await, before);

    // The right epoch goes through.
    let url = format!("{base}/admin/v1/settings?expectEpoch={epoch}");
    let (status, body) = send(&http, true, &url, &settings(1)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let changed = cluster.wait_same_state().await;
    assert_eq!(changed.view.epoch, epoch + 1);
    assert_eq!(changed.view.settings.copies, 1);
}
