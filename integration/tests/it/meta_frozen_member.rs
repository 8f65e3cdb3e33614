//! A data server frozen by SIGSTOP keeps its heartbeat connection open but silent. The meta
//! leader treats a heartbeat silent for three renew intervals as a lost connection, so the
//! frozen server is removed (and its slots move to their replicas) after 6 s plus the 1 s
//! grace, not after the whole 10 s lease. Production lease timings.

use std::process::Stdio;
use std::time::{Duration, Instant};

use meta_server::MetaConfig;
use registry_common::member::{MemberId, Role};

use crate::meta_fixture::{workspace_binary, MetaCluster, WAIT};
use integration::wait::{eventually, until};

fn config() -> MetaConfig {
    let defaults = MetaConfig::default();
    let mut config = MetaCluster::fast_config();
    config.renew_interval_ms = defaults.renew_interval_ms;
    config.lease_ms = defaults.lease_ms;
    config.disconnect_grace_ms = defaults.disconnect_grace_ms;
    config
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_data_server_is_removed_before_its_lease_runs_out() {
    let mut cluster = MetaCluster::start(3, config()).await;
    let _survivor = cluster.add_data().await;
    let leader = cluster.wait_leader().await;
    let known: Vec<MemberId> = cluster
        .members_of(leader, Role::Data)
        .into_iter()
        .map(|m| m.id)
        .collect();
    let mut child = tokio::process::Command::new(workspace_binary("data-server", "data-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--meta",
            &cluster.addrs().join(","),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the data-server binary starts");
    let pid = child.id().expect("running");
    let process = eventually("the data-server process to join", WAIT, || async {
        let l = cluster.serving_leader()?;
        cluster
            .members_of(l, Role::Data)
            .into_iter()
            .find(|m| !known.contains(&m.id))
    })
    .await;
    cluster.wait_heartbeat(&process.id).await;

    signal(pid, "-STOP");
    let frozen = Instant::now();
    until(
        "the frozen server to leave the membership and the slot table",
        Duration::from_secs(30),
        || async {
            let Some(l) = cluster.serving_leader() else {
                return false;
            };
            let view = cluster.state(l).view;
            !view.members.contains_key(&process.id)
                && view.slots.slots.iter().all(|s| !s.holds(&process.id))
        },
    )
    .await;
    let took = frozen.elapsed();
    signal(pid, "-CONT");
    let _ = child.kill().await;
    // Silence (6 s) plus the grace (1 s), against a 10 s lease.
    assert!(
        took < Duration::from_millis(8_500),
        "a frozen server was removed only after {took:?}"
    );
}
