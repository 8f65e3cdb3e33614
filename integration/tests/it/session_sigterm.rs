//! A session server process stopped with SIGTERM tells every client to move (`go_away`,
//! with the other sessions' addresses) before it closes, every time.

use std::process::Stdio;
use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::raw::RawClient;
use integration::wait::until;
use registry_common::member::Role;

use crate::meta_fixture::workspace_binary;

const ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_go_away_before_closing() {
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await.unwrap();
    let bin = workspace_binary("session-server", "session-server");
    for round in 0..ROUNDS {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = tokio::process::Command::new(&bin)
            .args(["--listen", &addr, "--meta", &cluster.meta_addrs().join(",")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the session-server binary starts");
        until(
            "the session process to join",
            Duration::from_secs(15),
            || async {
                cluster
                    .view()
                    .members_of(Role::Session)
                    .any(|m| m.addr == addr)
            },
        )
        .await;
        let mut client = RawClient::hello(&addr, &format!("sigterm{round}"))
            .await
            .unwrap();
        let pid = child.id().expect("running");
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let frame = client.next_frame(Duration::from_secs(5)).await;
        // Moving away lets the session finish its stop without waiting out its clients.
        drop(client);
        let _ = child.wait().await;
        let frame = frame.unwrap_or_else(|e| panic!("round {round}: no frame before close: {e}"));
        assert_eq!(frame["type"], "go_away", "round {round}: {frame}");
        let others = frame["sessions"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            others,
            vec![serde_json::json!(cluster.sessions[0].addr.to_string())],
            "round {round}"
        );
    }
}
