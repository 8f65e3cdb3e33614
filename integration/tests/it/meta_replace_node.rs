//! Replacing a meta node with the operator's tool, while data servers renew: `registryctl meta
//! add-node` adds a new node as learner, then promotes it; `remove-node` removes the leader
//! (it hands over leadership and leaves), and removes a learner; `registryctl meta status`
//! shows leader, term, voters, learners, the applied index and lease ages. No data server is
//! ever removed.

use std::process::Output;

use serde_json::Value;

use crate::meta_fixture::{workspace_binary, MetaCluster, WAIT};
use integration::wait::until;

/// Runs `registryctl meta <args>` and returns its JSON output. Runs it again when it failed
/// because the leader was busy or changing (`NotLeader` without a leader, `Unavailable`,
/// `Timeout`: nothing was changed), as an operator would.
async fn registryctl(args: &[&str]) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    let out: Output = loop {
        let out = tokio::process::Command::new(workspace_binary("registry-cli", "registryctl"))
            .args(["--json", "meta"])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("registryctl runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let transient = ["not_leader", "unavailable", "timeout", "no meta node"]
            .iter()
            .any(|code| stderr.contains(code));
        if out.status.success() || !transient || tokio::time::Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        out.status.success(),
        "registryctl meta {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "registryctl meta {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_the_leader_with_a_new_node_while_servers_renew() {
    let mut config = MetaCluster::fast_config();
    config.renew_interval_ms = 100;
    let mut cluster = MetaCluster::start(3, config).await;
    let d1 = cluster.add_data().await;
    let d2 = cluster.add_data().await;
    let old = cluster.wait_leader().await;
    let old_id = cluster.nodes[old].id;
    let before = cluster.wait_same_state().await;
    // Commands go to a follower: they follow its redirect to the leader.
    let follower = (old + 1) % 3;
    let via = cluster.nodes[follower].direct();

    // --- a new node, started to join, is added as learner and then promoted.
    let new = cluster.start_joining_node().await;
    let new_id = cluster.nodes[new].id.to_string();
    let new_addr = cluster.nodes[new].advertised();
    let added = registryctl(&[
        "add-node",
        "--node-id",
        &new_id,
        "--addr",
        &new_addr,
        "--meta",
        &via,
    ])
    .await;
    assert_eq!(ids(&added["learners"]), vec![cluster.nodes[new].id]);
    assert_eq!(ids(&added["voters"]), vec![1, 2, 3]);
    let promoted = registryctl(&[
        "add-node",
        "--node-id",
        &new_id,
        "--addr",
        &new_addr,
        "--voter",
        "--meta",
        &via,
    ])
    .await;
    assert_eq!(ids(&promoted["voters"]), vec![1, 2, 3, 4]);
    assert!(ids(&promoted["learners"]).is_empty());
    // The new node holds the whole state.
    let st = cluster.wait_same_state().await;
    assert_eq!(st.view.members, before.view.members);

    // --- the old leader is removed: it hands over leadership and leaves the voters.
    let removed = registryctl(&[
        "remove-node",
        "--node-id",
        &old_id.to_string(),
        "--meta",
        &via,
    ])
    .await;
    let mut want: Vec<u64> = vec![1, 2, 3, 4];
    want.retain(|id| *id != old_id);
    assert_eq!(ids(&removed["voters"]), want);
    until("a leader other than the removed node", WAIT, || async {
        cluster.serving_leader().is_some_and(|l| l != old)
    })
    .await;
    cluster.kill(old);
    let leader = cluster.wait_leader().await;
    let state = cluster.wait_same_state().await;
    for n in cluster.running() {
        let st = cluster.nodes[n].server().raft().status();
        assert_eq!(st.voters.keys().copied().collect::<Vec<_>>(), want);
        assert!(st.learners.is_empty());
    }

    // --- status through the tool: leader, term, voters, learners, applied index, leases.
    let renew = cluster.config.renew_interval_ms;
    let leader_addr = cluster.nodes[leader].direct();
    until(
        "the data servers to renew at the new leader",
        WAIT,
        || async {
            let status = registryctl(&["status", "--meta", &leader_addr]).await;
            let leases = status["leases"].as_array().cloned().unwrap_or_default();
            [&d1.id, &d2.id].iter().all(|id| {
                leases.iter().any(|l| {
                    l["id"] == id.as_str() && l["ageMs"].as_u64().is_some_and(|a| a < 5 * renew)
                })
            })
        },
    )
    .await;
    let status = registryctl(&["status", "--meta", &leader_addr]).await;
    assert_eq!(status["leader"].as_u64(), Some(cluster.nodes[leader].id));
    assert!(status["term"].as_u64().is_some_and(|t| t > 1));
    assert_eq!(ids(&status["voters"]), want);
    assert!(ids(&status["learners"]).is_empty());
    assert!(status["lastApplied"].as_u64().is_some_and(|i| i > 0));
    assert_eq!(status["epoch"].as_u64(), Some(state.view.epoch));

    // --- a learner is removed too (not only voters).
    let extra = cluster.start_joining_node().await;
    let extra_id = cluster.nodes[extra].id;
    let extra_addr = cluster.nodes[extra].advertised();
    let added = registryctl(&[
        "add-node",
        "--node-id",
        &extra_id.to_string(),
        "--addr",
        &extra_addr,
        "--meta",
        &leader_addr,
    ])
    .await;
    assert_eq!(ids(&added["learners"]), vec![extra_id]);
    let removed = registryctl(&[
        "remove-node",
        "--node-id",
        &extra_id.to_string(),
        "--meta",
        &leader_addr,
    ])
    .await;
    assert!(ids(&removed["learners"]).is_empty(), "{removed}");
    assert_eq!(ids(&removed["voters"]), want);
    // Out of the cluster, it hears nothing more: stop it.
    cluster.kill(extra);

    // No data server was removed (same registration times) through all of it.
    let state = cluster.wait_same_state().await;
    assert_eq!(state.view.members, before.view.members);
}
