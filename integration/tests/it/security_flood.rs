//! A registration flood on one connection, against `registry standalone` run as a process:
//! the session takes its per-connection cap and refuses the rest with typed errors, and the
//! process's resident memory grows by what the cap allows, not by what was sent.

use std::process::Stdio;
use std::time::Duration;

use integration::raw::RawClient;
use integration::wait::eventually;
use serde_json::json;

use crate::meta_fixture::workspace_binary;
use crate::process::{answers, free_port};

/// Registrations sent, three times the default cap of 10,000 publishers per connection.
const SENT: usize = 30_000;
const PAYLOAD: usize = 1024;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_connection_is_capped_and_memory_stays_bounded() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipped: no /proc to read resident memory from");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (meta, data, session) = (free_port(), free_port(), free_port());
    let mut child = tokio::process::Command::new(workspace_binary("registry-cli", "registry"))
        .args(["standalone", "--data-dir"])
        .arg(dir.path())
        .args(["--meta-port", &meta.to_string()])
        .args(["--data-port", &data.to_string()])
        .args(["--session-port", &session.to_string()])
        .env("RUST_LOG", "warn")
        .env("REGISTRY_WORKER_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("registry standalone starts");
    let pid = child.id().expect("running");
    let addr = format!("127.0.0.1:{session}");
    eventually("the session ready", Duration::from_secs(60), || async {
        answers(&addr, "/ready").await.then_some(())
    })
    .await;
    let before = rss_kib(pid);

    let mut conn = RawClient::hello(&addr, "flooder").await.unwrap();
    let payload = "x".repeat(PAYLOAD);
    for i in 0..SENT {
        let frame = json!({"type": "register_publisher", "reqId": i + 100, "registId": format!("p{i}"),
                           "dataId": format!("svc.flood.{}", i % 500), "data": [payload], "version": 1});
        conn.send_text(frame.to_string()).await.unwrap();
    }
    let (mut acks, mut capped, mut rate_limited) = (0, 0, 0);
    while acks + capped + rate_limited < SENT {
        let f = conn
            .next_frame(Duration::from_secs(30))
            .await
            .expect("an answer to every registration");
        match (f["type"].as_str(), f["code"].as_str()) {
            (Some("ack"), _) => acks += 1,
            (Some("error"), Some("limit_exceeded")) => capped += 1,
            (Some("error"), Some("rate_limited")) => rate_limited += 1,
            other => panic!("unexpected answer {other:?}: {f}"),
        }
    }
    let after = rss_kib(pid);
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "flood of {SENT} x {PAYLOAD} B: {acks} acknowledged, {capped} over the cap, \
         {rate_limited} rate limited; RSS {before} KiB -> {after} KiB (+{grown_mib:.1} MiB)"
    );
    assert_eq!(acks, 10_000, "the default cap");
    assert_eq!(capped + rate_limited, SENT - 10_000);
    // What the cap allows: 10,000 publishers of 1 KiB held by the session and the data
    // server, with their indexes (about 40 MiB measured); all 30,000 would be three times it.
    assert!(
        grown_mib < 128.0,
        "resident memory grew by {grown_mib:.1} MiB"
    );
    let _ = child.kill().await;
}
