//! The client <-> session part of `docs/protocol.md` as a contract. Each test drives a real
//! session server from a raw WebSocket client through one group of the document's rules (the
//! section it follows is named on the test) and asserts its exact statements: error codes and
//! `reqId`s, close codes and reasons, versions and `pushId`s.

use std::time::{Duration, Instant};

use integration::cluster::{Cluster, ClusterConfig};
use integration::raw::RawClient;
use integration::wait::{eventually, until};
use registry_common::model::PublisherKey;
use registry_common::proto::client::{ClientFrame, MAX_PUSH_ACKS, PROTOCOL_VERSION};
use registry_common::DataInfoId;
use serde_json::{json, Value};
use session_server::SessionConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// One meta, one data and one session server, the session's settings adjusted.
async fn cluster(adjust: impl FnOnce(&mut SessionConfig)) -> Cluster {
    let mut config = ClusterConfig::new(1, 1, 1);
    adjust(&mut config.session);
    Cluster::start(config).await.expect("cluster starts")
}

fn code(frame: &Value) -> &str {
    frame["code"].as_str().unwrap_or_default()
}

/// Asserts `frame` is an `error` with `code`, carrying `req_id` (`None`: no `reqId` at all).
#[track_caller]
fn assert_error(frame: &Value, code_: &str, req_id: Option<u64>) {
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(code(frame), code_, "{frame}");
    match req_id {
        Some(id) => assert_eq!(frame["reqId"], json!(id), "{frame}"),
        None => assert!(frame.get("reqId").is_none(), "{frame}"),
    }
}

/// Sends `frame` as it is and returns the next frame from the session.
async fn ask(c: &mut RawClient, frame: Value) -> Value {
    c.send_text(frame.to_string()).await.expect("send");
    c.next_frame(WAIT).await.expect("an answer")
}

/// Asserts the very next frame answers a `ping`: nothing else was queued before it, and the
/// connection is open.
async fn next_is_pong(c: &mut RawClient, req_id: u64) {
    let f = ask(c, json!({"type": "ping", "reqId": req_id})).await;
    assert_eq!(f, json!({"type": "pong", "reqId": req_id}));
}

fn publish(regist_id: &str, data_id: &str, data: Value, version: u64) -> Value {
    json!({"type": "register_publisher", "registId": regist_id, "dataId": data_id,
           "data": data, "version": version})
}

fn subscribe(regist_id: &str, data_id: &str, known_version: u64) -> Value {
    json!({"type": "register_subscriber", "registId": regist_id, "dataId": data_id,
           "knownVersion": known_version})
}

fn id(data_id: &str) -> DataInfoId {
    DataInfoId::new(data_id, None, None).expect("valid id")
}

/// The datum version at the data tier once it holds exactly `data` for `data_id`.
async fn landed(cluster: &Cluster, data_id: &str, data: &[&str]) -> u64 {
    let id = id(data_id);
    let store = cluster.datas[0].server().state().clone();
    eventually(&format!("{data:?} at the data tier"), WAIT, || async {
        let datum = store.store.datum(&id);
        (datum.flat_data() == data).then_some(datum.version)
    })
    .await
}

/// Registers publisher `p` and subscription `s` of `svc.limits` with `part` set to `value`;
/// returns both answers.
async fn register_both(c: &mut RawClient, part: &str, value: &str, version: u64) -> (Value, Value) {
    let mut p = publish("p", "svc.limits", json!(["d"]), version);
    p[part] = json!(value);
    let mut s = subscribe("s", "svc.limits", 0);
    s[part] = json!(value);
    (c.request(p).await.unwrap(), c.request(s).await.unwrap())
}

/// Connects, says `hello` as `client_id` and returns the connection and its `connId`.
async fn hello_conn(addr: &str, client_id: &str) -> (RawClient, u64) {
    let mut c = RawClient::connect(addr).await.unwrap();
    let w = c
        .request(json!({"type": "hello", "protocol": 1, "clientId": client_id}))
        .await
        .unwrap();
    assert_eq!(w["type"], "welcome", "{w}");
    (c, w["connId"].as_u64().unwrap())
}

/// The next push on `c` that satisfies `pred` (others are skipped).
async fn push_where(c: &mut RawClient, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = c
            .next_push(left)
            .await
            .unwrap_or_else(|e| panic!("no push with {what}: {e:#}"));
        if pred(&p) {
            return p;
        }
    }
}

/// SDK <-> SessionServer, Client -> session (`hello`), Errors and closes (frames the session
/// cannot read).
#[tokio::test]
async fn frames_and_hello() {
    let cluster = cluster(|_| {}).await;
    let addr = cluster.session_addrs()[0].clone();
    let mut c = RawClient::connect(&addr).await.unwrap();

    // Before a welcome.
    let f = ask(&mut c, json!({"type": "register_publisher", "reqId": 1, "registId": "p", "dataId": "svc.hello", "data": ["x"]})).await;
    assert_error(&f, "failed_precondition", Some(1));
    let f = ask(
        &mut c,
        json!({"type": "register_subscriber", "reqId": 2, "registId": "s", "dataId": "svc.hello"}),
    )
    .await;
    assert_error(&f, "failed_precondition", Some(2));
    let f = ask(
        &mut c,
        json!({"type": "unregister_publisher", "reqId": 3, "registId": "p"}),
    )
    .await;
    assert_error(&f, "failed_precondition", Some(3));
    let f = ask(
        &mut c,
        json!({"type": "unregister_subscriber", "reqId": 4, "registId": "s"}),
    )
    .await;
    assert_error(&f, "not_found", Some(4));
    c.send_text(json!({"type": "push_ack", "pushId": 1}).to_string())
        .await
        .unwrap();
    next_is_pong(&mut c, 5).await;

    // Refused hellos leave the connection open, and hello may be sent again.
    let hello = |req_id: u64, protocol: u32, client_id: &str| json!({"type": "hello", "reqId": req_id, "protocol": protocol, "clientId": client_id});
    let f = ask(&mut c, hello(6, 0, "conformance")).await;
    assert_error(&f, "unsupported_protocol", Some(6));
    for (req_id, bad) in [
        (7, String::new()),
        (8, "c".repeat(257)),
        // Bytes, not characters: 129 two-byte characters.
        (9, "é".repeat(129)),
        (10, "a#@#b".to_string()),
        (11, "a\u{7}b".to_string()),
    ] {
        let f = ask(&mut c, hello(req_id, 1, &bad)).await;
        assert_error(&f, "invalid_argument", Some(req_id));
    }
    let mut welcome_frame = hello(12, 1, &"é".repeat(128));
    welcome_frame["zone"] = json!("zone-a");
    welcome_frame["app"] = json!("conformance");
    let w = ask(&mut c, welcome_frame).await;
    assert_eq!(w["type"], "welcome", "{w}");
    assert_eq!(w["reqId"], 12);
    assert_eq!(w["protocol"], 1);
    assert_eq!(
        w["sessionId"],
        cluster.sessions[0].server().id().to_string()
    );
    assert_eq!(w["maxFrameBytes"], 1024 * 1024);
    let conn_id = w["connId"].as_u64().expect("connId");
    // A second hello: protocol first, then "already said hello"; the first one stands.
    let f = ask(&mut c, hello(13, 0, "other")).await;
    assert_error(&f, "unsupported_protocol", Some(13));
    let f = ask(&mut c, hello(14, 1, "other")).await;
    assert_error(&f, "failed_precondition", Some(14));
    let mut p = publish("p", "svc.hello", json!(["x"]), 1);
    p["reqId"] = json!(15);
    assert_eq!(ask(&mut c, p).await, json!({"type": "ack", "reqId": 15}));
    let key = PublisherKey {
        client_id: "é".repeat(128),
        regist_id: "p".into(),
    };
    let held = cluster.sessions[0]
        .server()
        .state()
        .registry
        .publisher(&key);
    assert_eq!(held.map(|p| p.conn_id), Some(conn_id));

    // Frames the session cannot read: each gets an error and the connection stays open.
    c.send_text("{not json").await.unwrap();
    assert_error(&c.next_frame(WAIT).await.unwrap(), "malformed", None);
    c.send_text(r#"{"reqId":20}"#).await.unwrap();
    assert_error(&c.next_frame(WAIT).await.unwrap(), "malformed", Some(20));
    c.send_text(r#"{"type":7,"reqId":21}"#).await.unwrap();
    assert_error(&c.next_frame(WAIT).await.unwrap(), "malformed", Some(21));
    let f = ask(&mut c, json!({"type": "launch_rockets", "reqId": 22})).await;
    assert_error(&f, "unknown_message", Some(22));
    let f = ask(&mut c, json!({"type": "register_subscriber", "reqId": 23})).await;
    assert_error(&f, "malformed", Some(23));
    let f = ask(&mut c, json!({"type": "register_publisher", "reqId": 24, "registId": "p", "dataId": "svc.hello", "data": "x"})).await;
    assert_error(&f, "malformed", Some(24));
    let f = ask(&mut c, json!({"type": "ping", "reqId": "25"})).await;
    assert_error(&f, "malformed", None);
    c.send_message(Message::Binary(
        br#"{"type":"ping","reqId":26}"#.to_vec().into(),
    ))
    .await
    .unwrap();
    assert_error(&c.next_frame(WAIT).await.unwrap(), "malformed", None);

    // Fields a frame does not have are ignored; any u64 reqId is echoed.
    let f = ask(
        &mut c,
        json!({"type": "ping", "reqId": u64::MAX, "padding": {"a": [1, 2]}}),
    )
    .await;
    assert_eq!(f, json!({"type": "pong", "reqId": u64::MAX}));

    // Requests are answered in the order they arrive.
    for frame in [
        json!({"type": "ping", "reqId": 30}),
        json!({"type": "register_publisher", "reqId": 31, "registId": "q", "dataId": "svc.hello", "data": []}),
        json!({"type": "unregister_publisher", "reqId": 32, "registId": "nope"}),
        json!({"type": "ping", "reqId": 33}),
    ] {
        c.send_text(frame.to_string()).await.unwrap();
    }
    assert_eq!(
        c.next_frame(WAIT).await.unwrap(),
        json!({"type": "pong", "reqId": 30})
    );
    assert_eq!(
        c.next_frame(WAIT).await.unwrap(),
        json!({"type": "ack", "reqId": 31})
    );
    assert_error(&c.next_frame(WAIT).await.unwrap(), "not_found", Some(32));
    assert_eq!(
        c.next_frame(WAIT).await.unwrap(),
        json!({"type": "pong", "reqId": 33})
    );

    // connId is unique within the session.
    let mut other = RawClient::connect(&addr).await.unwrap();
    let w = ask(&mut other, hello(1, 1, "conformance-2")).await;
    assert_eq!(w["type"], "welcome");
    assert_ne!(w["connId"].as_u64(), Some(conn_id));
}

/// Limits (ids, a publisher's data, frame and message size, per-connection caps and rate, the
/// connection cap).
#[tokio::test]
async fn limits() {
    const MAX_FRAME: usize = 600 * 1024;
    const CONNECTIONS: usize = 6;
    let cluster = cluster(|s| {
        s.max_frame_bytes = MAX_FRAME;
        s.max_publishers_per_conn = 3;
        s.max_subscriptions_per_conn = 2;
        s.registrations_per_sec = 1;
        s.registration_burst = 40;
        s.max_connections = CONNECTIONS;
    })
    .await;
    let addr = cluster.session_addrs()[0].clone();

    // The connection cap: the upgrade past it is refused with HTTP 429 and limit_exceeded.
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        conns.push(RawClient::connect(&addr).await.unwrap());
    }
    match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429);
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(code(&body), "limit_exceeded", "{body}");
        }
        other => panic!("a connection past the cap: {:?}", other.map(|_| ())),
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let w = c
            .request(json!({"type": "hello", "protocol": 1, "clientId": format!("limits-{i}")}))
            .await
            .unwrap();
        assert_eq!(w["type"], "welcome");
    }
    let mut conns = conns.into_iter();
    let mut next = || conns.next().expect("a connection");

    // Ids: 1 to 256 bytes, no control character, no separator; null parts take defaults, empty
    // ones are refused.
    let long = "x".repeat(256);
    let too_long = "x".repeat(257);
    let mut c = next();
    let mut version = 0;
    for part in ["dataId", "instanceId", "group", "registId"] {
        version += 1;
        let (p, s) = register_both(&mut c, part, &long, version).await;
        assert_eq!(
            (&p["type"], &s["type"]),
            (&json!("ack"), &json!("ack")),
            "{part}: {p} {s}"
        );
        for bad in [too_long.as_str(), "", "a#@#b", "a\nb"] {
            version += 1;
            let (p, s) = register_both(&mut c, part, bad, version).await;
            assert_eq!(
                (code(&p), code(&s)),
                ("invalid_argument", "invalid_argument"),
                "{part} {bad:?}: {p} {s}"
            );
        }
    }
    let r = c
        .request(json!({"type": "register_publisher", "registId": "p", "dataId": "svc.limits", "instanceId": null, "group": null, "data": [], "version": 100}))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    let held = cluster.sessions[0]
        .server()
        .state()
        .registry
        .publisher(&PublisherKey {
            client_id: "limits-0".into(),
            regist_id: "p".into(),
        });
    assert_eq!(
        held.map(|p| p.data_info_id.to_string()),
        Some("svc.limits#@#DEFAULT_INSTANCE_ID#@#DEFAULT_GROUP".to_string())
    );

    // A publisher's data: at most 1,024 strings and 524,288 bytes together, no other limit
    // per string.
    let mut data_version = 200;
    let mut with_data = |data: Value| {
        data_version += 1;
        publish("d", "svc.limits.data", data, data_version)
    };
    let mut c = next();
    let half = "y".repeat(256 * 1024);
    for (data, ok) in [
        (json!(vec![""; 1024]), true),
        (json!(vec![""; 1025]), false),
        (json!([half, half]), true),
        (json!([half, format!("{half}z")]), false),
        (json!(["z".repeat(512 * 1024)]), true),
        (json!(["z".repeat(512 * 1024 + 1)]), false),
        (json!([]), true),
    ] {
        let r = c.request(with_data(data)).await.unwrap();
        if ok {
            assert_eq!(r["type"], "ack", "{r}");
        } else {
            assert_error(&r, "invalid_argument", r["reqId"].as_u64());
        }
    }
    next_is_pong(&mut c, 1000).await;

    // Caps per connection: re-registering one it holds does not count.
    let mut c = next();
    for i in 0..3 {
        let r = c
            .request(publish(&format!("p{i}"), "svc.caps", json!([]), 1))
            .await
            .unwrap();
        assert_eq!(r["type"], "ack", "{r}");
    }
    let r = c
        .request(publish("p3", "svc.caps", json!([]), 1))
        .await
        .unwrap();
    assert_eq!(code(&r), "limit_exceeded", "{r}");
    let r = c
        .request(publish("p0", "svc.caps", json!([]), 2))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    for i in 0..2 {
        let r = c
            .request(subscribe(&format!("s{i}"), "svc.caps", 0))
            .await
            .unwrap();
        assert_eq!(r["type"], "ack", "{r}");
    }
    let r = c.request(subscribe("s2", "svc.caps", 0)).await.unwrap();
    assert_eq!(code(&r), "limit_exceeded", "{r}");
    let r = c
        .request(subscribe("s0", "svc.caps.other", 0))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    assert_eq!(
        c.request(json!({"type": "ping"})).await.unwrap()["type"],
        "pong"
    );

    // The registration rate: the burst at once, then the sustained rate; a refused id or a
    // ping is not counted.
    let mut c = next();
    let started = Instant::now();
    let mut acked = 0;
    loop {
        let r = c
            .request(publish("r", "svc.rate", json!([]), 1))
            .await
            .unwrap();
        match r["type"].as_str() {
            Some("ack") => acked += 1,
            _ => {
                assert_eq!(code(&r), "rate_limited", "{r}");
                break;
            }
        }
        assert!(
            acked <= 40 + 2 + started.elapsed().as_secs(),
            "never rate limited"
        );
    }
    assert!(acked >= 40, "only {acked} registrations before the limit");
    let r = c.request(publish("r", "", json!([]), 1)).await.unwrap();
    assert_eq!(code(&r), "invalid_argument", "{r}");
    assert_eq!(
        c.request(json!({"type": "ping"})).await.unwrap()["type"],
        "pong"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let r = c
            .request(publish("r", "svc.rate", json!([]), 1))
            .await
            .unwrap();
        if r["type"] == "ack" {
            break;
        }
        assert_eq!(code(&r), "rate_limited", "{r}");
        assert!(
            Instant::now() < deadline,
            "no registration admitted at the sustained rate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Frame and message size: exactly the maximum is read, one byte more closes with 1009.
    let sized = |req_id: u64, len: usize| {
        let head = format!(r#"{{"type":"ping","reqId":{req_id},"pad":""#);
        let pad = "x".repeat(len - head.len() - 2);
        format!(r#"{head}{pad}"}}"#)
    };
    let reason = format!("frame exceeds the maximum of {MAX_FRAME} bytes");
    let mut c = next();
    let exact = sized(1, MAX_FRAME);
    assert_eq!(exact.len(), MAX_FRAME);
    c.send_text(exact).await.unwrap();
    assert_eq!(
        c.next_frame(WAIT).await.unwrap(),
        json!({"type": "pong", "reqId": 1})
    );
    // A fragmented message counts whole.
    let exact = sized(2, MAX_FRAME);
    let (a, b) = exact.split_at(MAX_FRAME / 2);
    c.send_fragmented(&[a, b]).await.unwrap();
    assert_eq!(
        c.next_frame(WAIT).await.unwrap(),
        json!({"type": "pong", "reqId": 2})
    );
    let over = sized(3, MAX_FRAME + 1);
    let (a, b) = over.split_at(MAX_FRAME / 2);
    let _ = c.send_fragmented(&[a, b]).await;
    let closed = c.closed(WAIT).await.unwrap();
    assert_eq!(closed.code.map(u16::from), Some(1009), "{closed:?}");
    assert_eq!(closed.reason, reason);
    let mut c = next();
    let _ = c.send_text(sized(4, MAX_FRAME + 1)).await;
    let closed = c.closed(WAIT).await.unwrap();
    assert_eq!(closed.code.map(u16::from), Some(1009), "{closed:?}");
    assert_eq!(closed.reason, reason);
}

/// Errors and closes: a client silent for `--client-idle-ms` is closed with 1001; any frame,
/// a WebSocket ping too, keeps it open.
#[tokio::test]
async fn idle_close() {
    const IDLE: Duration = Duration::from_millis(1_200);
    let cluster = cluster(|s| s.client_idle_ms = IDLE.as_millis() as u64).await;
    let addr = cluster.session_addrs()[0].clone();
    let mut silent = RawClient::hello(&addr, "silent").await.unwrap();
    let since = Instant::now();
    let mut talking = RawClient::hello(&addr, "talking").await.unwrap();
    let talk = async {
        let until = Instant::now() + IDLE * 2;
        while Instant::now() < until {
            talking
                .send_message(Message::Ping(Vec::new().into()))
                .await
                .unwrap();
            tokio::time::sleep(IDLE / 12).await;
        }
        next_is_pong(&mut talking, 1).await;
    };
    let (closed, ()) = tokio::join!(silent.closed(WAIT), talk);
    let closed = closed.unwrap();
    assert_eq!(closed.code.map(u16::from), Some(1001), "{closed:?}");
    assert_eq!(closed.reason, "no frame received within the idle timeout");
    assert!(
        since.elapsed() >= IDLE / 2,
        "closed after {:?}",
        since.elapsed()
    );
}

/// Settings at run time: the blacklist (by IP address and by `app`) closes with 4003 and
/// refuses `hello` with `forbidden`; `slotCount` stays fixed.
#[tokio::test]
async fn runtime_settings() {
    let cluster = cluster(|_| {}).await;
    let addr = cluster.session_addrs()[0].clone();
    let ip: std::net::IpAddr = "127.0.0.7".parse().unwrap();
    let hello =
        |app: &str| json!({"type": "hello", "protocol": 1, "clientId": "settings", "app": app});
    let mut by_ip = RawClient::connect_from(&addr, ip).await.unwrap();
    assert_eq!(by_ip.request(hello("")).await.unwrap()["type"], "welcome");
    let mut by_app = RawClient::connect(&addr).await.unwrap();
    assert_eq!(
        by_app.request(hello("bad-app")).await.unwrap()["type"],
        "welcome"
    );
    let mut good = RawClient::connect(&addr).await.unwrap();
    assert_eq!(
        good.request(hello("good-app")).await.unwrap()["type"],
        "welcome"
    );

    cluster
        .meta_admin("/admin/v1/clients/off", &json!({"address": "127.0.0.7"}))
        .await
        .unwrap();
    let closed = by_ip.closed(WAIT).await.unwrap();
    assert_eq!(closed.code.map(u16::from), Some(4003), "{closed:?}");
    assert_eq!(closed.reason, "client taken off by an operator");
    let mut again = RawClient::connect_from(&addr, ip).await.unwrap();
    let r = again.request(hello("")).await.unwrap();
    assert_error(&r, "forbidden", r["reqId"].as_u64());
    // Refused, not closed: the connection answers, but without a welcome nothing registers.
    assert_eq!(
        again.request(json!({"type": "ping"})).await.unwrap()["type"],
        "pong"
    );
    let r = again
        .request(publish("p", "svc.settings", json!([]), 1))
        .await
        .unwrap();
    assert_eq!(code(&r), "failed_precondition", "{r}");

    let mut settings = serde_json::to_value(cluster.view().settings).unwrap();
    settings["clientBlacklist"]
        .as_array_mut()
        .unwrap()
        .push(json!("bad-app"));
    settings["slotCount"] = json!(512);
    cluster
        .meta_admin("/admin/v1/settings", &settings)
        .await
        .unwrap();
    let closed = by_app.closed(WAIT).await.unwrap();
    assert_eq!(closed.code.map(u16::from), Some(4003), "{closed:?}");
    assert_eq!(closed.reason, "client taken off by an operator");
    let mut again = RawClient::connect(&addr).await.unwrap();
    let r = again.request(hello("bad-app")).await.unwrap();
    assert_error(&r, "forbidden", r["reqId"].as_u64());
    // Others are served; the slot count stayed.
    let r = good
        .request(publish("p", "svc.settings", json!([]), 1))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    let view = cluster.view();
    assert_eq!(view.settings.client_blacklist, vec!["127.0.0.7", "bad-app"]);
    assert_eq!(view.settings.slot_count, 256);
    assert_eq!(view.slots.slot_count(), 256);
}

/// Session -> client (`go_away`): a stopping session names the other sessions, refuses new
/// clients with `unavailable`, and ends the connections left after `--shutdown-wait-ms`.
#[tokio::test]
async fn go_away_on_shutdown() {
    let mut config = ClusterConfig::new(1, 1, 2);
    config.session.shutdown_wait_ms = 1_500;
    let mut cluster = Cluster::start(config).await.expect("cluster starts");
    let stays = cluster.sessions[0].addr.to_string();
    let stops = cluster.sessions[1].addr.to_string();
    let mut c = RawClient::hello(&stops, "stays-put").await.unwrap();
    let asked = Instant::now();
    let watch = async {
        let f = c.next_frame(WAIT).await.unwrap();
        assert_eq!(
            f,
            json!({"type": "go_away", "reason": "session server is shutting down", "sessions": [stays]})
        );
        let mut late = RawClient::connect(&stops).await.unwrap();
        let r = late
            .request(json!({"type": "hello", "protocol": 1, "clientId": "late"}))
            .await
            .unwrap();
        assert_error(&r, "unavailable", r["reqId"].as_u64());
        c.closed(WAIT).await.unwrap();
    };
    let ((), ()) = tokio::join!(cluster.sessions[1].stop(), watch);
    // The client that stayed held the stop for the whole wait.
    assert!(
        asked.elapsed() >= Duration::from_millis(750),
        "{:?}",
        asked.elapsed()
    );
}

/// Errors and closes (a client leaving with close code 4000): its publishers stay in the data
/// tier for `--handover-grace-ms` and are removed after it, nobody having taken them over; a
/// connection closed with another code has its publishers withdrawn at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moving_away_closes_with_4000() {
    const GRACE: Duration = Duration::from_millis(2_000);
    let cluster = cluster(|s| s.handover_grace_ms = GRACE.as_millis() as u64).await;
    let addr = cluster.sessions[0].addr.to_string();
    let (mut mover, _) = hello_conn(&addr, "mover").await;
    let (mut leaver, _) = hello_conn(&addr, "leaver").await;
    let r = mover
        .request(publish("m", "svc.moving", json!(["m"]), 1))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    let r = leaver
        .request(publish("l", "svc.moving", json!(["l"]), 1))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    landed(&cluster, "svc.moving", &["l", "m"]).await;

    let close = |code: u16, reason: &str| {
        Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        }))
    };
    leaver.send_message(close(1000, "done")).await.unwrap();
    landed(&cluster, "svc.moving", &["m"]).await;

    mover
        .send_message(close(4000, "moving to another session"))
        .await
        .unwrap();
    let closed = Instant::now();
    let session = cluster.sessions[0].server().state().clone();
    until(
        "the session lets go of the mover's connection",
        WAIT,
        || async { session.registry.publishers().is_empty() },
    )
    .await;
    landed(&cluster, "svc.moving", &[]).await;
    assert!(
        closed.elapsed() >= GRACE,
        "the mover's publisher was removed {:?} after its close 4000, within the grace",
        closed.elapsed()
    );
}

/// Client -> session (`register_publisher`, `unregister_publisher`, one clientId on two
/// connections).
#[tokio::test]
async fn publishers_and_one_client_id_on_two_connections() {
    let cluster = cluster(|_| {}).await;
    let addr = cluster.session_addrs()[0].clone();
    let session = cluster.sessions[0].server().state().clone();
    let store = cluster.datas[0].server().state().clone();
    let mut c = RawClient::hello(&addr, "versions").await.unwrap();

    // `version` defaults to 0: the same version with other data is refused.
    let r = c
        .request(json!({"type": "register_publisher", "registId": "v", "dataId": "svc.pub", "data": ["a"]}))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    let r = c
        .request(publish("v", "svc.pub", json!(["b"]), 0))
        .await
        .unwrap();
    assert_eq!(code(&r), "failed_precondition", "{r}");
    // Another dataId at the same version is refused; at another version, lower too, it moves.
    let r = c
        .request(publish("v", "svc.pub.moved", json!(["a"]), 0))
        .await
        .unwrap();
    assert_eq!(code(&r), "failed_precondition", "{r}");
    let r = c
        .request(publish("v", "svc.pub", json!(["a5"]), 5))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    landed(&cluster, "svc.pub", &["a5"]).await;
    let r = c
        .request(publish("v", "svc.pub.moved", json!(["a3"]), 3))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    landed(&cluster, "svc.pub.moved", &["a3"]).await;
    landed(&cluster, "svc.pub", &[]).await;
    let r = c
        .request(json!({"type": "unregister_publisher", "registId": "nope"}))
        .await
        .unwrap();
    assert_eq!(code(&r), "not_found", "{r}");

    // One clientId on two connections.
    let (mut first, first_conn) = hello_conn(&addr, "twin").await;
    for (r, d) in [("p1", "one"), ("p2", "two")] {
        let a = first
            .request(publish(r, "svc.twin", json!([d]), 1))
            .await
            .unwrap();
        assert_eq!(a["type"], "ack", "{a}");
    }
    let a = first.request(subscribe("s", "svc.twin", 0)).await.unwrap();
    assert_eq!(a["type"], "ack", "{a}");
    landed(&cluster, "svc.twin", &["one", "two"]).await;
    let (mut second, second_conn) = hello_conn(&addr, "twin").await;
    let a = second
        .request(publish("p1", "svc.twin", json!(["one"]), 1))
        .await
        .unwrap();
    assert_eq!(a["type"], "ack", "{a}");
    let p1 = PublisherKey {
        client_id: "twin".into(),
        regist_id: "p1".into(),
    };
    let owner = |key: &PublisherKey| session.registry.publisher(key).map(|p| p.conn_id);
    assert_eq!(owner(&p1), Some(second_conn));
    // The first connection is not closed, keeps its subscription, and its unregister of the
    // publisher it lost changes nothing.
    let a = second
        .request(publish("p1", "svc.twin", json!(["one-b"]), 2))
        .await
        .unwrap();
    assert_eq!(a["type"], "ack", "{a}");
    let push = push_where(&mut first, "the republished data", |p| {
        p["data"] == json!(["one-b", "two"])
    })
    .await;
    assert_eq!(push["registId"], "s");
    let a = first
        .request(json!({"type": "unregister_publisher", "registId": "p1"}))
        .await
        .unwrap();
    assert_eq!(a["type"], "ack", "{a}");
    assert_eq!(owner(&p1), Some(second_conn));
    // Closing the first withdraws its own publisher only.
    drop(first);
    landed(&cluster, "svc.twin", &["one-b"]).await;
    let held = store.store.datum(&id("svc.twin")).publishers;
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].key.clone(), held[0].conn_id),
        (p1.clone(), second_conn)
    );
    assert_ne!(first_conn, second_conn);
    assert_eq!(owner(&p1), Some(second_conn));
}

/// Client -> session (`register_subscriber`, `knownVersion`, `unregister_subscriber`) and
/// Session -> client (`push`).
#[tokio::test]
async fn subscriptions_and_known_version() {
    let cluster = cluster(|_| {}).await;
    let addr = cluster.session_addrs()[0].clone();
    let session = cluster.sessions[0].server().state().clone();

    // The ack comes before the first push; a service nobody published is version 0, `[]`;
    // pushIds count from 1 on each connection.
    let (mut c, conn_id) = hello_conn(&addr, "subscriber").await;
    let f = ask(&mut c, json!({"type": "register_subscriber", "reqId": 1, "registId": "none", "dataId": "svc.none", "instanceId": null})).await;
    assert_eq!(f, json!({"type": "ack", "reqId": 1}));
    let push = c.next_push(WAIT).await.unwrap();
    assert_eq!(
        push,
        json!({"type": "push", "pushId": 1, "registId": "none",
               "dataInfoId": "svc.none#@#DEFAULT_INSTANCE_ID#@#DEFAULT_GROUP", "version": 0, "data": []})
    );

    // Two publishers: `data` in clientId order, whatever the order of registration.
    let mut b = RawClient::hello(&addr, "b-publisher").await.unwrap();
    let mut a = RawClient::hello(&addr, "a-publisher").await.unwrap();
    let r = b
        .request(publish("p", "svc.kv", json!(["from-b"]), 1))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    let r = a
        .request(publish("p", "svc.kv", json!(["from-a"]), 1))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    let v = landed(&cluster, "svc.kv", &["from-a", "from-b"]).await;

    // knownVersion 0 and below the current version: the current datum is pushed.
    for (regist_id, known) in [("k0", 0), ("below", v - 1)] {
        let r = c
            .request(subscribe(regist_id, "svc.kv", known))
            .await
            .unwrap();
        assert_eq!(r["type"], "ack", "{r}");
        let p = c.next_push(WAIT).await.unwrap();
        assert_eq!(
            (&p["registId"], &p["version"], &p["data"]),
            (&json!(regist_id), &json!(v), &json!(["from-a", "from-b"])),
            "{p}"
        );
    }
    // At the current version: nothing until a newer one.
    let r = c.request(subscribe("at", "svc.kv", v)).await.unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    until("the subscription `at` settled at v", WAIT, || async {
        session.pusher.cached_version(&id("svc.kv")) == Some(v)
            && session
                .pusher
                .subscriptions_of(&id("svc.kv"))
                .iter()
                .any(|s| {
                    s.conn.id == conn_id
                        && s.regist_id == "at"
                        && s.acked == Some(v)
                        && s.inflight.is_none()
                })
    })
    .await;
    let r = b
        .request(publish("p", "svc.kv", json!(["from-b2"]), 2))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    let v2 = landed(&cluster, "svc.kv", &["from-a", "from-b2"]).await;
    assert!(v2 > v);
    let mut last_push_id = 1;
    let mut seen_at = None;
    while seen_at.is_none() {
        let p = c.next_push(WAIT).await.unwrap();
        let push_id = p["pushId"].as_u64().unwrap();
        assert!(push_id > last_push_id, "{p}");
        last_push_id = push_id;
        if p["registId"] == "at" {
            seen_at = Some(p);
        }
    }
    let p = seen_at.unwrap();
    assert_eq!(
        (&p["version"], &p["data"]),
        (&json!(v2), &json!(["from-a", "from-b2"])),
        "{p}"
    );

    // A registId already subscribed is replaced, with its own service and knownVersion.
    let r = c
        .request(json!({"type": "register_subscriber", "registId": "k0", "dataId": "svc.other", "instanceId": "i1", "group": "g1"}))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    let p = push_where(&mut c, "the replaced subscription's service", |p| {
        p["registId"] == "k0" && p["dataInfoId"] != "svc.kv#@#DEFAULT_INSTANCE_ID#@#DEFAULT_GROUP"
    })
    .await;
    assert_eq!(
        (&p["dataInfoId"], &p["version"]),
        (&json!("svc.other#@#i1#@#g1"), &json!(0)),
        "{p}"
    );
    assert!(!session
        .pusher
        .subscriptions_of(&id("svc.kv"))
        .iter()
        .any(|s| s.conn.id == conn_id && s.regist_id == "k0"));

    // Unregistering: unknown is not_found, known is acknowledged.
    let r = c
        .request(json!({"type": "unregister_subscriber", "registId": "nope"}))
        .await
        .unwrap();
    assert_eq!(code(&r), "not_found", "{r}");
    let r = c
        .request(json!({"type": "unregister_subscriber", "registId": "at"}))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
}

/// The state of subscription `regist_id` of connection `conn_id` of `data_id`:
/// (acked, inflight, pending) versions.
fn sub_state(
    cluster: &Cluster,
    conn_id: u64,
    data_id: &str,
    regist_id: &str,
) -> Option<(Option<u64>, Option<u64>, Option<u64>)> {
    let state = cluster.sessions[0].server().state();
    state
        .pusher
        .subscriptions_of(&id(data_id))
        .into_iter()
        .find(|s| s.conn.id == conn_id && s.regist_id == regist_id)
        .map(|s| (s.acked, s.inflight, s.pending))
}

/// A raw subscriber that does not acknowledge by itself, and its connection id.
async fn manual_subscriber(addr: &str, client_id: &str) -> (RawClient, u64) {
    let (mut c, conn_id) = hello_conn(addr, client_id).await;
    c.auto_ack = false;
    (c, conn_id)
}

fn ack(push_id: u64) -> String {
    json!({"type": "push_ack", "pushId": push_id}).to_string()
}

/// SDK <-> SessionServer, Protocol 2: a hello offering a newer version is answered with 2; the pushes one change
/// queues for a connection's subscriptions arrive as one `pushes` frame, and one `push_acks`
/// frame acknowledges them all. A `push_acks` frame with too many ids is refused.
#[tokio::test]
async fn protocol_2_joins_pushes_and_takes_their_acks_at_once() {
    const SUBS: usize = 16;
    let cluster = cluster(|s| s.ack_timeout_ms = 30_000).await;
    let addr = cluster.session_addrs()[0].clone();
    let mut publisher = RawClient::hello(&addr, "batch-publisher").await.unwrap();
    let mut c = RawClient::connect(&addr).await.unwrap();
    c.auto_ack = false;
    let w = ask(
        &mut c,
        json!({"type": "hello", "reqId": 1, "protocol": PROTOCOL_VERSION + 1,
               "clientId": "batch-subscriber"}),
    )
    .await;
    assert_eq!(
        (&w["type"], &w["protocol"]),
        (&json!("welcome"), &json!(2)),
        "{w}"
    );
    let conn_id = w["connId"].as_u64().unwrap();
    let regist_ids: Vec<String> = (0..SUBS).map(|i| format!("s{i}")).collect();

    // Every push of `version`, one per subscription, from `push` or `pushes` frames; the
    // shapes of the frames that carried them.
    async fn pushes_of(c: &mut RawClient, version: u64) -> (Vec<Value>, Vec<String>) {
        let (mut pushes, mut shapes) = (Vec::new(), Vec::new());
        while pushes.len() < SUBS {
            let f = c.next_frame(WAIT).await.expect("the pushes");
            let got: Vec<Value> = match f["type"].as_str() {
                Some("push") => vec![f.clone()],
                Some("pushes") => f["pushes"].as_array().expect("an array").clone(),
                _ => {
                    assert_eq!(f["type"], "ack", "{f}");
                    continue;
                }
            };
            shapes.push(format!(
                "{}x{}",
                f["type"].as_str().unwrap_or(""),
                got.len()
            ));
            pushes.extend(got.into_iter().filter(|p| p["version"] == json!(version)));
        }
        (pushes, shapes)
    }
    let ack_all = |pushes: &[Value]| {
        let ids: Vec<u64> = pushes
            .iter()
            .map(|p| p["pushId"].as_u64().unwrap())
            .collect();
        ClientFrame::push_acks_json(&ids)
    };
    let all_acked = |version: u64| {
        regist_ids.iter().all(|r| {
            sub_state(&cluster, conn_id, "svc.batch", r) == Some((Some(version), None, None))
        })
    };

    let p = publisher
        .request(publish("p", "svc.batch", json!(["v1"]), 1))
        .await
        .unwrap();
    assert_eq!(p["type"], "ack", "{p}");
    let v1 = landed(&cluster, "svc.batch", &["v1"]).await;
    // Sent without waiting: `request` would skip the pushes that follow each answer.
    for (i, r) in regist_ids.iter().enumerate() {
        let mut s = subscribe(r, "svc.batch", 0);
        s["reqId"] = json!(10 + i);
        c.send_text(s.to_string()).await.unwrap();
    }
    let (first, _) = pushes_of(&mut c, v1).await;
    c.send_text(ack_all(&first)).await.unwrap();
    eventually("every subscription acknowledged v1", WAIT, || async {
        all_acked(v1).then_some(())
    })
    .await;

    // One change, sixteen subscriptions on this connection: one frame.
    let p = publisher
        .request(publish("p", "svc.batch", json!(["v2"]), 2))
        .await
        .unwrap();
    assert_eq!(p["type"], "ack", "{p}");
    let v2 = landed(&cluster, "svc.batch", &["v2"]).await;
    let (second, shapes) = pushes_of(&mut c, v2).await;
    assert_eq!(shapes, vec![format!("pushesx{SUBS}")]);
    let mut got: Vec<&str> = second
        .iter()
        .map(|p| p["registId"].as_str().unwrap())
        .collect();
    got.sort_unstable();
    let mut want: Vec<&str> = regist_ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    assert!(
        second.iter().all(|p| p["data"] == json!(["v2"])),
        "{second:?}"
    );
    c.send_text(ack_all(&second)).await.unwrap();
    eventually("every subscription acknowledged v2", WAIT, || async {
        all_acked(v2).then_some(())
    })
    .await;

    let too_many = ClientFrame::push_acks_json(&vec![1; MAX_PUSH_ACKS + 1]);
    c.send_text(too_many).await.unwrap();
    assert_error(&c.next_frame(WAIT).await.unwrap(), "malformed", None);
    next_is_pong(&mut c, 2).await;
}

/// Pushes: at most one unacknowledged push per subscription, newer datums merged into the
/// next one; acks of pushIds the connection is not waiting for are ignored.
#[tokio::test]
async fn one_unacknowledged_push_and_merging() {
    let cluster = cluster(|s| {
        s.ack_timeout_ms = 30_000;
        s.max_merge_window_ms = 60_000;
    })
    .await;
    let addr = cluster.session_addrs()[0].clone();
    let mut publisher = RawClient::hello(&addr, "flow-publisher").await.unwrap();
    let r = publisher
        .request(publish("p", "svc.flow", json!(["v1"]), 1))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack");
    let v1 = landed(&cluster, "svc.flow", &["v1"]).await;
    let (mut c, conn_id) = manual_subscriber(&addr, "flow-subscriber").await;
    assert_eq!(
        c.request(subscribe("s", "svc.flow", 0)).await.unwrap()["type"],
        "ack"
    );
    let first = c.next_push(WAIT).await.unwrap();
    assert_eq!(
        (&first["pushId"], &first["version"]),
        (&json!(1), &json!(v1)),
        "{first}"
    );

    for (version, data) in [(2, "v2"), (3, "v3")] {
        let r = publisher
            .request(publish("p", "svc.flow", json!([data]), version))
            .await
            .unwrap();
        assert_eq!(r["type"], "ack");
    }
    let v3 = landed(&cluster, "svc.flow", &["v3"]).await;
    until(
        "v3 waiting behind the unacknowledged push",
        WAIT,
        || async {
            sub_state(&cluster, conn_id, "svc.flow", "s") == Some((None, Some(v1), Some(v3)))
        },
    )
    .await;
    // Nothing else was pushed meanwhile, and an ack of a pushId never sent is ignored.
    next_is_pong(&mut c, 1).await;
    c.send_text(ack(999)).await.unwrap();
    next_is_pong(&mut c, 2).await;
    assert_eq!(
        sub_state(&cluster, conn_id, "svc.flow", "s"),
        Some((None, Some(v1), Some(v3)))
    );

    // The ack releases one push with the newest datum; v2 is never pushed.
    c.send_text(ack(1)).await.unwrap();
    let merged = c.next_frame(WAIT).await.unwrap();
    assert_eq!(
        merged,
        json!({"type": "push", "pushId": 2, "registId": "s",
               "dataInfoId": "svc.flow#@#DEFAULT_INSTANCE_ID#@#DEFAULT_GROUP", "version": v3, "data": ["v3"]})
    );
    c.send_text(ack(2)).await.unwrap();
    // Acknowledged twice: the second is ignored.
    c.send_text(ack(2)).await.unwrap();
    next_is_pong(&mut c, 3).await;
    assert_eq!(
        sub_state(&cluster, conn_id, "svc.flow", "s"),
        Some((Some(v3), None, None))
    );
}

/// Pushes: an unacknowledged push is resent as a new push (new pushId, newest datum) with
/// backoff; acks of earlier pushIds are ignored; after `--ack-retries` resends the connection
/// is closed with 1008.
#[tokio::test]
async fn resends_with_backoff_then_close() {
    const ACK_TIMEOUT: Duration = Duration::from_millis(250);
    const RETRIES: usize = 3;
    let cluster = cluster(|s| {
        s.ack_timeout_ms = ACK_TIMEOUT.as_millis() as u64;
        s.ack_retries = RETRIES as u32;
        s.max_merge_window_ms = 60_000;
    })
    .await;
    let addr = cluster.session_addrs()[0].clone();
    let mut publisher = RawClient::hello(&addr, "resend-publisher").await.unwrap();
    for (regist_id, data_id) in [("t", "svc.resend.timing"), ("p", "svc.resend.newest")] {
        let r = publisher
            .request(publish(regist_id, data_id, json!(["r1"]), 1))
            .await
            .unwrap();
        assert_eq!(r["type"], "ack");
    }
    let v1 = landed(&cluster, "svc.resend.newest", &["r1"]).await;
    landed(&cluster, "svc.resend.timing", &["r1"]).await;
    let (mut timing, _) = manual_subscriber(&addr, "resend-timing").await;
    let (mut newest, newest_conn) = manual_subscriber(&addr, "resend-newest").await;

    // One subscription only reads, timing every send, and acks the send before the last
    // one: ignored, the resends go on.
    let timed = async {
        let r = timing
            .request(subscribe("s", "svc.resend.timing", 0))
            .await
            .unwrap();
        assert_eq!(r["type"], "ack");
        let mut sends: Vec<(Instant, u64)> = Vec::new();
        while sends.len() < 1 + RETRIES {
            let p = timing.next_push(WAIT).await.unwrap();
            let at = Instant::now();
            let push_id = p["pushId"].as_u64().unwrap();
            assert_eq!(
                (&p["registId"], &p["data"]),
                (&json!("s"), &json!(["r1"])),
                "{p}"
            );
            if let Some(&(_, previous)) = sends.last() {
                assert!(push_id > previous, "a resend has a new pushId: {p}");
                timing.send_text(ack(previous)).await.unwrap();
            }
            sends.push((at, push_id));
        }
        let closed = timing.next_is_close(WAIT).await.unwrap();
        (sends, closed, Instant::now())
    };

    // The other gets a newer datum while its push is unacknowledged: a resend carries it.
    let carried = async {
        let r = newest
            .request(subscribe("s", "svc.resend.newest", 0))
            .await
            .unwrap();
        assert_eq!(r["type"], "ack");
        let first = newest.next_push(WAIT).await.unwrap();
        assert_eq!(first["version"], json!(v1), "{first}");
        let r = publisher
            .request(publish("p", "svc.resend.newest", json!(["r2"]), 2))
            .await
            .unwrap();
        assert_eq!(r["type"], "ack");
        let v2 = landed(&cluster, "svc.resend.newest", &["r2"]).await;
        let mut last = first["pushId"].as_u64().unwrap();
        loop {
            let p = newest.next_push(WAIT).await.unwrap();
            let push_id = p["pushId"].as_u64().unwrap();
            assert!(push_id > last, "a resend has a new pushId: {p}");
            last = push_id;
            if p["version"] == json!(v2) {
                assert_eq!(p["data"], json!(["r2"]), "{p}");
                break;
            }
            assert_eq!(p["version"], json!(v1), "{p}");
        }
        // Never acknowledged: it is still the one awaited, nothing older.
        assert_eq!(
            sub_state(&cluster, newest_conn, "svc.resend.newest", "s"),
            Some((None, Some(v2), None))
        );
    };
    let ((sends, closed, closed_at), ()) = tokio::join!(timed, carried);
    assert_eq!(closed.code.map(u16::from), Some(1008), "{closed:?}");
    assert_eq!(closed.reason, "pushes not acknowledged");

    // Exactly `RETRIES` resends, the n-th send waiting ack timeout * 2^(n-1) for its ack
    // (asserted at half that: the times are taken at the client).
    let mut times: Vec<Instant> = sends.iter().map(|(t, _)| *t).collect();
    times.push(closed_at);
    for (n, pair) in times.windows(2).enumerate() {
        let wait = ACK_TIMEOUT * (1 << n);
        let gap = pair[1] - pair[0];
        assert!(
            gap >= wait / 2,
            "send {} waited {gap:?}, not about {wait:?}",
            n + 1
        );
    }
}

/// Pushes: an overdue push is not sent again while its client is still reading the pushes
/// sent before it (acknowledging them, none from this one on): under load a copy would only
/// queue behind the first. A client quiet for a whole ack timeout gets one copy (a probe),
/// not a copy of every push it owes; one that acknowledged a later push gets the push it
/// missed.
#[tokio::test]
async fn an_overdue_push_is_resent_if_missed_or_as_a_quiet_clients_one_probe() {
    const ACK_TIMEOUT: Duration = Duration::from_secs(2);
    const SUBS: usize = 40;
    // The slow reader acknowledges one push per tick, in order: the last of its pushes wait
    // twice the ack timeout, while an ack comes twenty times per ack timeout.
    const PACE: Duration = Duration::from_millis(100);
    let cluster = cluster(|s| {
        s.ack_timeout_ms = ACK_TIMEOUT.as_millis() as u64;
        s.max_merge_window_ms = 60_000;
    })
    .await;
    let addr = cluster.session_addrs()[0].clone();
    let metrics = cluster.sessions[0].server().state().metrics.clone();
    let retries = || metrics.pushes.with_label_values(&["retry"]).get();
    let mut publisher = RawClient::hello(&addr, "overdue-publisher").await.unwrap();
    for n in 0..SUBS {
        let r = publisher
            .request(publish(
                &format!("p{n}"),
                &format!("svc.overdue.{n}"),
                json!(["r1"]),
                1,
            ))
            .await
            .unwrap();
        assert_eq!(r["type"], "ack");
    }
    for n in 0..SUBS {
        landed(&cluster, &format!("svc.overdue.{n}"), &["r1"]).await;
    }

    // A slow reader: every subscription's first push arrives at once, and is acknowledged
    // one per tick in the order sent.
    let (mut slow, slow_conn) = manual_subscriber(&addr, "overdue-slow").await;
    for n in 0..SUBS {
        let frame = json!({"type": "register_subscriber", "reqId": n + 1,
                           "registId": format!("s{n}"), "dataId": format!("svc.overdue.{n}")});
        slow.send_text(frame.to_string()).await.unwrap();
    }
    let mut pushes: Vec<(u64, String)> = Vec::new();
    while pushes.len() < SUBS {
        let p = slow.next_push(WAIT).await.unwrap();
        pushes.push((
            p["pushId"].as_u64().unwrap(),
            p["registId"].as_str().unwrap().into(),
        ));
    }
    pushes.sort();
    let mut ticks = tokio::time::interval(PACE);
    for (push_id, _) in &pushes {
        ticks.tick().await;
        slow.send_text(ack(*push_id)).await.unwrap();
    }
    for (n, (_, regist_id)) in pushes.iter().enumerate() {
        let data_id = format!("svc.overdue.{}", &regist_id[1..]);
        eventually(&format!("push {n} acknowledged"), WAIT, || async {
            sub_state(&cluster, slow_conn, &data_id, regist_id)
                .is_some_and(|(acked, inflight, _)| acked.is_some() && inflight.is_none())
                .then_some(())
        })
        .await;
    }
    let held = metrics.resends_held.get();
    assert!(held > 0, "the last pushes waited past the ack timeout");
    assert_eq!(retries(), 0, "{held} overdue pushes held, none sent again");
    assert_eq!(metrics.unknown_acks.get(), 0);

    // A quiet reader: it reads its pushes and acknowledges none. One ack timeout later one
    // copy goes out, and the other overdue pushes are held behind it.
    const QUIET: usize = 10;
    let (mut quiet, quiet_conn) = manual_subscriber(&addr, "overdue-quiet").await;
    for n in 0..QUIET {
        let frame = json!({"type": "register_subscriber", "reqId": n + 1,
                           "registId": format!("q{n}"), "dataId": format!("svc.overdue.{n}")});
        quiet.send_text(frame.to_string()).await.unwrap();
    }
    let mut firsts: Vec<u64> = Vec::new();
    while firsts.len() < QUIET {
        firsts.push(
            quiet.next_push(WAIT).await.unwrap()["pushId"]
                .as_u64()
                .unwrap(),
        );
    }
    let probe = quiet.next_push(WAIT).await.unwrap();
    let probe_id = probe["pushId"].as_u64().unwrap();
    assert!(
        !firsts.contains(&probe_id),
        "a copy has a new pushId: {probe}"
    );
    eventually("the other overdue pushes held", WAIT, || async {
        (metrics.resends_held.get() >= held + QUIET as u64 - 1).then_some(())
    })
    .await;
    // The probe's own wait (twice the ack timeout) has not run out: one copy in all.
    assert_eq!(retries(), 1);
    for push_id in firsts.iter().chain([&probe_id]) {
        quiet.send_text(ack(*push_id)).await.unwrap();
    }
    for n in 0..QUIET {
        let (data_id, regist_id) = (format!("svc.overdue.{n}"), format!("q{n}"));
        eventually(&format!("q{n} acknowledged"), WAIT, || async {
            sub_state(&cluster, quiet_conn, &data_id, &regist_id)
                .is_some_and(|(acked, inflight, _)| acked.is_some() && inflight.is_none())
                .then_some(())
        })
        .await;
    }

    // A reader that skips a push: the push it acknowledged past is sent again.
    let (mut skipper, _) = manual_subscriber(&addr, "overdue-skipper").await;
    let subscribe_k = |n: usize| {
        json!({"type": "register_subscriber", "reqId": 100 + n,
               "registId": format!("k{n}"), "dataId": format!("svc.overdue.{n}")})
        .to_string()
    };
    skipper.send_text(subscribe_k(0)).await.unwrap();
    let skipped = push_where(&mut skipper, "k0's push", |p| p["registId"] == "k0").await;
    skipper.send_text(subscribe_k(1)).await.unwrap();
    let later = push_where(&mut skipper, "k1's push", |p| p["registId"] == "k1").await;
    assert!(later["pushId"].as_u64() > skipped["pushId"].as_u64());
    skipper
        .send_text(ack(later["pushId"].as_u64().unwrap()))
        .await
        .unwrap();
    let again = push_where(&mut skipper, "k0's push again", |p| p["registId"] == "k0").await;
    assert!(
        again["pushId"].as_u64() > later["pushId"].as_u64(),
        "{again}"
    );
    assert_eq!(again["data"], json!(["r1"]), "{again}");
    assert_eq!(retries(), 2);
}

/// Pushes: a newer datum waits at most `--max-merge-window-ms` behind an unacknowledged push,
/// then replaces it (new pushId); the replaced pushId's ack is ignored.
#[tokio::test]
async fn merge_window_replaces_the_unacknowledged_push() {
    let cluster = cluster(|s| {
        s.ack_timeout_ms = 60_000;
        s.max_merge_window_ms = 300;
    })
    .await;
    let addr = cluster.session_addrs()[0].clone();
    let mut publisher = RawClient::hello(&addr, "window-publisher").await.unwrap();
    let r = publisher
        .request(publish("p", "svc.window", json!(["w1"]), 1))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack");
    let v1 = landed(&cluster, "svc.window", &["w1"]).await;
    let (mut c, conn_id) = manual_subscriber(&addr, "window-subscriber").await;
    assert_eq!(
        c.request(subscribe("s", "svc.window", 0)).await.unwrap()["type"],
        "ack"
    );
    let first = c.next_push(WAIT).await.unwrap();
    assert_eq!(
        (&first["pushId"], &first["version"]),
        (&json!(1), &json!(v1))
    );

    let r = publisher
        .request(publish("p", "svc.window", json!(["w2"]), 2))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack");
    let v2 = landed(&cluster, "svc.window", &["w2"]).await;
    // Long before the ack timeout (60 s), the newer datum goes out as a new push.
    let second = c.next_push(WAIT).await.unwrap();
    assert_eq!(
        (&second["pushId"], &second["version"]),
        (&json!(2), &json!(v2)),
        "{second}"
    );
    c.send_text(ack(1)).await.unwrap();
    next_is_pong(&mut c, 1).await;
    assert_eq!(
        sub_state(&cluster, conn_id, "svc.window", "s"),
        Some((None, Some(v2), None))
    );
    c.send_text(ack(2)).await.unwrap();
    next_is_pong(&mut c, 2).await;
    assert_eq!(
        sub_state(&cluster, conn_id, "svc.window", "s"),
        Some((Some(v2), None, None))
    );
}

/// Slot of a dataInfoId: CRC-32C as the document spells it out, modulo 256, and the worked
/// example.
#[test]
fn slot_of_a_data_info_id() {
    // CRC-32C written from the document's description, bit by bit.
    fn crc32c(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for b in bytes {
            crc ^= u32::from(*b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        crc ^ 0xFFFF_FFFF
    }
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    let example = DataInfoId::new("com.example.Echo", None, None).unwrap();
    assert_eq!(
        example.as_str(),
        "com.example.Echo#@#DEFAULT_INSTANCE_ID#@#DEFAULT_GROUP"
    );
    assert_eq!(crc32c(example.as_str().as_bytes()), 0x3549_DA4C);
    assert_eq!(0x3549_DA4Cu32, 894_032_460);
    assert_eq!(registry_common::slot::slot_of(&example, 256), 76);
    assert_eq!(registry_common::slot::DEFAULT_SLOT_COUNT, 256);
    for (d, i, g) in [
        ("svc", None, None),
        ("com.example.Échø", Some("i-1"), Some("g")),
        ("a", Some("b"), Some("c")),
    ] {
        let id = DataInfoId::new(d, i, g).unwrap();
        assert_eq!(
            registry_common::slot::slot_of(&id, 256),
            crc32c(id.as_str().as_bytes()) % 256,
            "{id}"
        );
    }
}

/// Client -> session (`hello` with auth on): a refused credential is `unauthenticated`, then
/// close 4001; the id publishers are keyed by, `<principal>:<clientId>`, is held to 256 bytes
/// at `hello`.
#[tokio::test]
async fn hello_with_auth() {
    let config = ClusterConfig::new(1, 1, 1).with_auth().unwrap();
    let cluster = Cluster::start(config).await.expect("cluster starts");
    let addr = cluster.session_addrs()[0].clone();
    let permissions = registry_common::acl::Permissions {
        publish: vec!["orders.*".into()],
        subscribe: vec!["orders.*".into()],
        admin: false,
    };
    let key = cluster.principal("orders", permissions).await.unwrap();

    let (mut c, r) = RawClient::hello_with_auth(&addr, "unsigned", None)
        .await
        .unwrap();
    assert_error(&r, "unauthenticated", Some(1));
    let closed = c.next_is_close(WAIT).await.unwrap();
    assert_eq!(closed.code.map(u16::from), Some(4001), "{closed:?}");
    assert_eq!(closed.reason, "not authenticated");

    // "orders:" is 7 bytes: a clientId of 250 is refused at hello, and the connection stays
    // open for another hello.
    let (too_long, longest) = ("c".repeat(250), "c".repeat(249));
    let (mut c, r) = RawClient::hello_with_auth(&addr, &too_long, Some(&key.sign_hello(&too_long)))
        .await
        .unwrap();
    assert_error(&r, "invalid_argument", Some(1));
    next_is_pong(&mut c, 2).await;
    let mut hello = json!({"type": "hello", "protocol": 1, "clientId": longest});
    hello["auth"] = serde_json::to_value(key.sign_hello(&longest)).unwrap();
    let w = c.request(hello).await.unwrap();
    assert_eq!(w["type"], "welcome", "{w}");
    let r = c
        .request(publish("p", "orders.api", json!(["10.0.0.1:80"]), 1))
        .await
        .unwrap();
    assert_eq!(r["type"], "ack", "{r}");
    landed(&cluster, "orders.api", &["10.0.0.1:80"]).await;
    let held = cluster.datas[0]
        .server()
        .state()
        .store
        .datum(&id("orders.api"));
    assert_eq!(
        held.publishers[0].key.client_id,
        format!("orders:{longest}")
    );
}
