//! Logs as an operator's tools read them: `--log-format json` writes one JSON object per
//! line; text written to a file carries no colour codes; every HTTP answer names its
//! request id, the caller's when it gave a valid one.

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::eventually;

use crate::process::{free_port, ServerProcess};

const WAIT: Duration = Duration::from_secs(30);

fn meta_args(dir: &std::path::Path, port: u16, extra: &[&str]) -> Vec<String> {
    let addr = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = vec![
        "--listen".into(),
        addr.clone(),
        "--node-id".into(),
        "1".into(),
        "--peers".into(),
        format!("1={addr}"),
        "--data-dir".into(),
        dir.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[tokio::test]
async fn json_logs_parse_line_by_line_and_text_logs_to_a_file_are_plain() {
    let dir = tempfile::tempdir().unwrap();
    let json_port = free_port();
    let mut json = ServerProcess::spawn(
        "meta-server",
        &meta_args(
            &dir.path().join("json"),
            json_port,
            &["--log-format", "json"],
        ),
        &dir.path().join("json.log"),
    );
    let text_port = free_port();
    let mut text = ServerProcess::spawn(
        "meta-server",
        &meta_args(&dir.path().join("text"), text_port, &[]),
        &dir.path().join("text.log"),
    );
    for p in [&json, &text] {
        eventually("the node's start logged", WAIT, || async {
            p.log_text().contains("meta node started").then_some(())
        })
        .await;
    }
    // A request so that a request span shows up in the JSON log (a 404 is logged).
    let http = reqwest::Client::new();
    let _ = http
        .get(format!("http://127.0.0.1:{json_port}/admin/v1/services/x"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    json.terminate();
    text.terminate();
    json.exits_cleanly(WAIT).await;
    text.exits_cleanly(WAIT).await;

    let log = json.log_text();
    let mut lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        assert!(v["fields"].is_object(), "{line}");
        lines += 1;
    }
    assert!(lines >= 2, "{log}");
    assert!(log.contains("meta node started"));

    let plain = text.log_text();
    assert!(plain.contains("meta node started"), "{plain}");
    assert!(
        !plain.contains('\u{1b}'),
        "colour codes in a log file: {plain}"
    );
}

#[tokio::test]
async fn every_answer_names_its_request_id() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap();
    let http = reqwest::Client::new();
    let addrs = [
        cluster.meta_addrs()[0].clone(),
        cluster.datas[0].addr.to_string(),
        cluster.sessions[0].addr.to_string(),
    ];
    for addr in &addrs {
        let given = http
            .get(format!("http://{addr}/health"))
            .header("x-request-id", "op-1234")
            .send()
            .await
            .unwrap();
        assert_eq!(given.headers()["x-request-id"], "op-1234", "{addr}");
        let fresh = http
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .unwrap();
        let id = fresh.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(id.len(), 16, "{addr}: {id}");
        // An id that could forge log lines is replaced.
        let odd = http
            .get(format!("http://{addr}/health"))
            .header("x-request-id", "a b")
            .send()
            .await
            .unwrap();
        assert_ne!(odd.headers()["x-request-id"], "a b", "{addr}");
    }
}
