//! `/metrics` of every server kind: the main series exist, move under load, carry plain label
//! values, and every series the Grafana dashboard (`deploy/grafana/`) draws exists.

use std::collections::BTreeSet;
use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::eventually;
use registry_common::proto::admin::SessionStatus;

const WAIT: Duration = Duration::from_secs(20);

async fn scrape(addr: &str) -> String {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{addr}: {}",
        response.status()
    );
    response.text().await.unwrap()
}

/// The value of the first sample of `series` (a name, or a name with its labels exactly as
/// rendered), summed over every line that matches.
fn value(text: &str, series: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, v)) = line.rsplit_once(' ') else {
            continue;
        };
        let bare = name.split('{').next().unwrap_or(name);
        if name == series || (bare == series && !series.contains('{')) {
            let v: f64 = v.parse().unwrap();
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

fn names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

/// Label values are plain words: no Rust `Debug` output (quotes, braces, `::`, spaces).
fn assert_plain_labels(text: &str, who: &str) {
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(labels) = line.split_once('{').and_then(|(_, r)| r.split_once('}')) else {
            continue;
        };
        for pair in labels.0.split(',') {
            let (k, v) = pair.split_once('=').unwrap();
            let v = v.trim_matches('"');
            if k == "le" {
                continue;
            }
            assert!(
                !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{who}: label {k}={v:?} in {line:?} is not a plain word"
            );
        }
    }
}

#[tokio::test]
async fn every_server_kind_exports_its_series_and_they_move_under_load() {
    let cluster = Cluster::start(ClusterConfig::new(3, 2, 2)).await.unwrap();
    cluster.wait_for_leader().await;
    let metas = cluster.meta_addrs();
    let datas: Vec<String> = cluster.datas.iter().map(|n| n.addr.to_string()).collect();
    let sessions: Vec<String> = cluster
        .sessions
        .iter()
        .map(|n| n.addr.to_string())
        .collect();

    // Meta: exactly one leader, Raft indexes, the members by role, process series.
    let meta_texts = eventually("every meta node reporting the cluster", WAIT, || async {
        let mut texts = Vec::new();
        for m in &metas {
            texts.push(scrape(m).await);
        }
        let leaders: f64 = texts
            .iter()
            .map(|t| value(t, "registry_meta_raft_is_leader").unwrap_or(0.0))
            .sum();
        let all_see_members = texts.iter().all(|t| {
            value(t, "registry_meta_members{role=\"data\"}") == Some(2.0)
                && value(t, "registry_meta_members{role=\"session\"}") == Some(2.0)
        });
        (leaders == 1.0 && all_see_members).then_some(texts)
    })
    .await;
    for t in &meta_texts {
        assert!(value(t, "registry_meta_raft_term").unwrap() >= 1.0);
        let commit = value(t, "registry_meta_raft_commit_index").unwrap();
        let apply = value(t, "registry_meta_raft_apply_index").unwrap();
        assert!(
            apply >= 1.0 && commit >= apply,
            "commit {commit} apply {apply}"
        );
        assert_eq!(
            value(t, "registry_meta_raft_nodes{kind=\"voter\"}"),
            Some(3.0)
        );
        assert!(value(t, "registry_meta_epoch").unwrap() >= 1.0);
        assert!(value(t, "process_resident_memory_bytes").unwrap() > 0.0);
        assert!(value(t, "process_open_fds").unwrap() > 0.0);
        assert_plain_labels(t, "meta");
    }

    // Load: publishers and subscribers through both sessions, then a change to push.
    let publisher = cluster.client(0).await.unwrap();
    let subscriber = cluster.client(1).await.unwrap();
    let mut pubs = Vec::new();
    let mut subs = Vec::new();
    for i in 0..10 {
        let name = format!("svc.metrics.{i}");
        pubs.push(
            publisher
                .publish(&name, vec![format!("10.0.0.{i}:80")])
                .await
                .unwrap(),
        );
        subs.push(subscriber.subscribe(&name).await.unwrap());
    }
    for (i, p) in pubs.iter_mut().enumerate() {
        p.republish(vec![format!("10.0.1.{i}:80")]).await.unwrap();
    }
    // Every subscriber holds the republished data: the counters below have moved as far as
    // this load moves them (merged pushes and coalesced writes make them move less than
    // once per operation, but at least once per publisher and subscription).
    for (i, sub) in subs.iter_mut().enumerate() {
        let want = vec![format!("10.0.1.{i}:80")];
        let deadline = tokio::time::Instant::now() + WAIT;
        while sub.latest().is_none_or(|u| u.data != want) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, sub.next()).await {
                Ok(Some(_)) => {}
                _ => panic!("subscriber {i} never got {want:?}: {:?}", sub.latest()),
            }
        }
    }

    // The status page summarises the push latency of the last ten seconds; keep pushes
    // flowing while waiting for it, so a slow machine cannot let the window run empty.
    let http = cluster.admin_http();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut round = 0u32;
    let latency = loop {
        let mut found = None;
        for s in &sessions {
            if let Ok(st) = http.get::<SessionStatus>(s, "/admin/v1/status", WAIT).await {
                if let (Some(p50), Some(p99)) = (st.push_latency_p50_ms, st.push_latency_p99_ms) {
                    found = Some((p50, p99));
                }
            }
        }
        if let Some(found) = found {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no push latency on any session's status"
        );
        round += 1;
        pubs[0]
            .republish(vec![format!("10.0.2.{round}:80")])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(latency.0 >= 0.0 && latency.1 >= latency.0, "{latency:?}");

    let session_texts = eventually("sessions counting pushes, forwards and acks", WAIT, || {
        let sessions = sessions.clone();
        async move {
            let mut texts = Vec::new();
            for s in &sessions {
                texts.push(scrape(s).await);
            }
            let sum = |series: &str| -> f64 {
                texts.iter().map(|t| value(t, series).unwrap_or(0.0)).sum()
            };
            let moved = sum("registry_session_publishers") == 10.0
                && sum("registry_session_subscribers") == 10.0
                && sum("registry_session_connections") == 2.0
                && sum("registry_session_push_delay_seconds_count") >= 10.0
                && sum("registry_session_push_ack_seconds_count") >= 10.0
                && sum("registry_session_forward_seconds_count") >= 1.0
                && sum("registry_session_forwarded_total{outcome=\"ok\"}") >= 10.0;
            moved.then_some(texts)
        }
    })
    .await;
    for t in &session_texts {
        assert!(value(t, "process_cpu_seconds_total").is_some());
        assert!(value(t, "registry_session_outbox_frames").is_some());
        assert!(value(t, "registry_session_forward_pending").is_some());
        assert_plain_labels(t, "session");
    }

    let data_texts = eventually(
        "data servers counting writes and notifications",
        WAIT,
        || {
            let datas = datas.clone();
            async move {
                let mut texts = Vec::new();
                for d in &datas {
                    texts.push(scrape(d).await);
                }
                let sum = |series: &str| -> f64 {
                    texts.iter().map(|t| value(t, series).unwrap_or(0.0)).sum()
                };
                let moved = sum("registry_data_writes_total{outcome=\"changed\"}") >= 10.0
                && sum("registry_data_write_seconds_count") >= 1.0
                && sum("registry_data_notify_seconds_count") >= 1.0
                && sum("registry_data_notifications_total") >= 10.0
                && sum("registry_data_replication_lag_seconds_count") >= 1.0
                // Two copies of each of the 10 publishers.
                && sum("registry_data_publishers") == 20.0;
                moved.then_some(texts)
            }
        },
    )
    .await;
    for t in &data_texts {
        assert!(value(t, "registry_data_slots{phase=\"ready\"}").unwrap() > 0.0);
        assert!(value(t, "registry_data_notify_pending").is_some());
        assert!(value(t, "process_resident_memory_bytes").unwrap() > 0.0);
        assert_plain_labels(t, "data");
    }

    // Every series the dashboard draws exists on some server.
    let mut exported = BTreeSet::new();
    for t in meta_texts.iter().chain(&session_texts).chain(&data_texts) {
        exported.extend(names(t));
    }
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/grafana/registry-dashboard.json"),
    )
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if token.starts_with("registry_") || token.starts_with("process_") {
                    used.insert(token.to_string());
                }
            }
        }
    }
    assert!(used.len() > 30, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard draws series no server exports: {missing:?}"
    );
}
