//! Network partition between meta nodes (the proxies cut the links; connections stay open and
//! go silent). The leader alone on the minority side cannot commit and stops serving; the
//! majority elects a leader and commits; a data server that renewed at the old leader moves to
//! the new one and is never removed; after healing there is one leader and every node holds
//! the same state, without the write the minority accepted.

use meta_server::raft::RaftRole;
use meta_server::state::MetaCommand;
use registry_common::error::ErrorCode;
use registry_common::member::MemberId;
use registry_common::proto::meta::{
    MemberRequest, RegisterRequest, RegisterResponse, RenewResponse,
};
use registry_rpc::RpcError;

use crate::meta_fixture::{fake_session, retry_transient, MetaCluster, WAIT};
use integration::wait::{eventually, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_cannot_commit_majority_elects_and_heal_converges() {
    let mut config = MetaCluster::fast_config();
    config.renew_interval_ms = 100;
    config.lease_ms = 2_000;
    let mut cluster = MetaCluster::start(3, config).await;
    let d = cluster.add_data().await;
    let old = cluster.wait_heartbeat(&d.id).await;
    let before = cluster.wait_same_state().await;
    let d_at = before.view.members[&d.id].registered_at_ms;
    let majority: Vec<usize> = (0..3).filter(|i| *i != old).collect();

    // --- cut the leader off from both followers.
    cluster.partition(&[&[old], &majority]);
    let old_raft = cluster.nodes[old].server().raft().clone();
    let mut minority_write = tokio::spawn(async move {
        old_raft
            .write(MetaCommand::Register {
                member: fake_session("minority"),
                now_ms: 1,
            })
            .await
    });

    // --- the majority elects a leader of a newer term, which commits.
    let new = eventually("a serving leader on the majority side", WAIT, || async {
        majority
            .iter()
            .copied()
            .find(|i| cluster.nodes[*i].server().raft().serving_term().is_some())
    })
    .await;
    let register = RegisterRequest {
        member: fake_session("majority"),
    };
    let new_addr = cluster.nodes[new].direct();
    let reg: RegisterResponse = retry_transient("the majority commits", || {
        cluster.http.post(&new_addr, "/meta/v1/register", &register)
    })
    .await;
    assert!(reg.view.members.contains_key(&MemberId("majority".into())));
    // The member just registered stays alive as a real one would: it renews every interval at
    // every node (only the serving leader accepts), so its 2 s lease cannot run out however
    // long the rest of the test takes on a loaded machine.
    let keep_alive = {
        let http = cluster.http.clone();
        let addrs: Vec<String> = (0..3).map(|i| cluster.nodes[i].direct()).collect();
        let every = std::time::Duration::from_millis(cluster.config.renew_interval_ms);
        let renew = MemberRequest {
            id: MemberId("majority".into()),
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                for addr in &addrs {
                    let _ = http
                        .post::<_, RenewResponse>(addr, "/meta/v1/renew", &renew)
                        .await;
                }
            }
        })
    };

    // --- the minority committed nothing and no longer serves: its write is pending or
    // failed, renewals there are refused without a redirect back to itself.
    let old_state = cluster.state(old);
    assert_eq!(old_state.view.epoch, before.view.epoch);
    assert!(!old_state
        .view
        .members
        .contains_key(&MemberId("minority".into())));
    if minority_write.is_finished() {
        let res = (&mut minority_write).await.expect("write task");
        assert!(res.is_err(), "the minority committed: {res:?}");
    }
    assert!(cluster.nodes[old].server().raft().serving_term().is_none());
    let refused = cluster
        .http
        .post::<_, RenewResponse>(
            &cluster.nodes[old].direct(),
            "/meta/v1/renew",
            &MemberRequest { id: d.id.clone() },
        )
        .await;
    match refused {
        Err(RpcError::Api(e)) => {
            assert_eq!(e.code, ErrorCode::NotLeader);
            assert_eq!(e.redirect, None);
        }
        other => panic!("a leader without quorum accepted a renewal: {other:?}"),
    }

    // --- the data server, which renewed at the old leader, renews at the new one and holds
    // its heartbeat connection there.
    let renew = cluster.config.renew_interval_ms;
    until(
        "the data server to move to the new leader",
        WAIT,
        || async {
            let leases = &cluster.nodes[new].server().state().leases;
            leases.is_connected(&d.id)
                && leases
                    .ages()
                    .iter()
                    .any(|a| a.id == d.id && a.age_ms < 3 * renew)
        },
    )
    .await;

    // --- heal: one leader, one state everywhere, without the minority's write.
    cluster.heal();
    cluster.wait_leader().await;
    until("exactly one node in the leader role", WAIT, || async {
        cluster
            .running()
            .iter()
            .filter(|i| cluster.nodes[**i].server().raft().status().role == RaftRole::Leader)
            .count()
            == 1
    })
    .await;
    let after = cluster.wait_same_state().await;
    assert!(after
        .view
        .members
        .contains_key(&MemberId("majority".into())));
    assert!(!after
        .view
        .members
        .contains_key(&MemberId("minority".into())));
    assert_eq!(
        after.view.members.get(&d.id).map(|m| m.registered_at_ms),
        Some(d_at),
        "the data server was never removed"
    );
    keep_alive.abort();
    // The minority's write never succeeds (it fails once the old leader learns of the newer
    // term, or times out).
    if !minority_write.is_finished() {
        let res = tokio::time::timeout(WAIT, &mut minority_write).await;
        let res = res.expect("the minority's write ends").expect("write task");
        assert!(res.is_err(), "the minority committed: {res:?}");
    }
}
