//! An admin mistake must not wedge the meta cluster: `add-node --voter` of an address where
//! no meta node runs is refused (`failed_precondition`) with the voters unchanged, however
//! often it is repeated, and the cluster keeps committing; the stray learner can be removed.

use registry_common::error::ErrorCode;
use registry_rpc::{HttpClient, RpcError};
use serde_json::{json, Value};

use crate::meta_fixture::{fake_session, retry_transient, MetaCluster, WAIT};
use integration::wait::until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_an_unreachable_voter_is_refused_and_changes_no_quorum() {
    let cluster = MetaCluster::start(3, MetaCluster::fast_config()).await;
    let leader = cluster.wait_leader().await;
    // A membership change is refused while the leader's first entry of its term is not yet
    // committed (the earlier one counts as in progress): wait for it, so that the refusal
    // below can only come from the unreachable address.
    until("the leader to commit in its term", WAIT, || async {
        cluster.nodes[leader]
            .server()
            .raft()
            .status()
            .committed_index
            .is_some()
    })
    .await;
    let addr = cluster.nodes[leader].direct();
    let http = HttpClient::new(WAIT);
    let voters_before = cluster.nodes[leader].server().raft().status().voters;

    // Port 1 on loopback: nothing listens there.
    let body = json!({"nodeId": 66, "addr": "127.0.0.1:1", "voter": true});
    for attempt in 0..2 {
        let answer: Result<Value, RpcError> = http
            .post(
                &cluster.nodes[leader].direct(),
                "/admin/v1/meta/add-node",
                &body,
            )
            .await;
        let err = answer.expect_err("an unreachable node must not become a voter");
        assert_eq!(
            err.code(),
            ErrorCode::FailedPrecondition,
            "attempt {attempt}: {err}"
        );
        let status = cluster.nodes[leader].server().raft().status();
        assert_eq!(status.voters, voters_before, "attempt {attempt}");
        assert!(status.learners.contains_key(&66), "{status:?}");
    }

    // The cluster still commits: a member registers, and the stray learner is removed.
    let register = json!({"member": fake_session("session-after-the-mistake")});
    retry_transient("register", || {
        http.post::<_, Value>(&addr, "/meta/v1/register", &register)
    })
    .await;
    let remove = json!({"nodeId": 66});
    let done: Value = retry_transient("remove the learner", || {
        http.post(&addr, "/admin/v1/meta/remove-node", &remove)
    })
    .await;
    assert_eq!(done["learners"], json!([]), "{done}");
    assert_eq!(done["voters"].as_array().map(Vec::len), Some(3), "{done}");
}
