//! Leader failover: three voters, data servers renewing, a writer registering members without
//! pause; the leader crashes. A new leader serves within three election timeouts,
//! registrations and renewals carry on, and nothing committed is lost: every acknowledged
//! registration, every member and the slot table are on the new leader; every member got a
//! fresh lease at the takeover; the data servers were never removed; the crashed node rejoins
//! from its directory and converges.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use registry_common::member::{MemberId, Role};
use registry_rpc::meta_client::MetaClient;
use registry_rpc::{CancellationToken, HttpClient};

use crate::meta_fixture::{fake_session, MetaCluster, WAIT};
use integration::wait::until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_elects_within_three_election_timeouts_and_loses_nothing() {
    let mut config = MetaCluster::fast_config();
    // The writer's members never renew: a long lease keeps them for the whole test.
    config.lease_ms = 20_000;
    config.renew_interval_ms = 100;
    let election_max = Duration::from_millis(config.raft_settings().election_timeout_max_ms);
    let mut cluster = MetaCluster::start(3, config).await;
    let d1 = cluster.add_data().await;
    let d2 = cluster.add_data().await;
    cluster.wait_heartbeat(&d1.id).await;
    cluster.wait_heartbeat(&d2.id).await;

    // A writer that registers one member after another through the proxies, following the
    // leader like every server does, and records what was acknowledged.
    let acked: Arc<Mutex<Vec<(Instant, MemberId)>>> = Arc::default();
    let stop = CancellationToken::new();
    let writer = {
        let meta = MetaClient::new(HttpClient::new(Duration::from_secs(2)), cluster.addrs());
        let acked = acked.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                let member = fake_session(&format!("writer-{n}"));
                match meta.register(&member).await {
                    Ok(_) => {
                        acked.lock().push((Instant::now(), member.id));
                        n += 1;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        })
    };
    until(
        "the writer to commit through the first leader",
        WAIT,
        || async { acked.lock().len() >= 5 },
    )
    .await;

    let old = cluster.wait_leader().await;
    let before = cluster.state(old);
    let registered_at = |state: &meta_server::state::MetaState, id: &MemberId| {
        state.view.members.get(id).map(|m| m.registered_at_ms)
    };
    let d1_at = registered_at(&before, &d1.id).expect("d1 is a member");
    let d2_at = registered_at(&before, &d2.id).expect("d2 is a member");

    // --- crash the leader.
    let killed = Instant::now();
    cluster.kill(old);
    let new = cluster.wait_leader().await;
    let elected = killed.elapsed();
    assert_ne!(new, old);
    assert!(
        elected < 3 * election_max,
        "a new leader served after {elected:?}, more than three election timeouts ({:?})",
        3 * election_max
    );

    // --- registrations continue through the new leader.
    until(
        "registrations to continue after the crash",
        WAIT,
        || async { acked.lock().iter().filter(|(at, _)| *at > killed).count() >= 5 },
    )
    .await;
    stop.cancel();
    writer.await.expect("writer task");
    let first_after = acked
        .lock()
        .iter()
        .find(|(at, _)| *at > killed)
        .map(|(at, _)| at.duration_since(killed));
    tracing::info!(?elected, ?first_after, "failover");

    // --- renewals continue: both data servers renew at the new leader and hold their
    // heartbeat connection there.
    let renew = Duration::from_millis(cluster.config.renew_interval_ms);
    until(
        "the data servers to renew at the new leader",
        WAIT,
        || async {
            let server = cluster.nodes[new].server();
            let ages = server.state().leases.ages();
            [&d1.id, &d2.id].iter().all(|id| {
                server.state().leases.is_connected(id)
                    && ages
                        .iter()
                        .any(|l| &l.id == *id && l.age_ms < 3 * renew.as_millis() as u64)
            })
        },
    )
    .await;

    // --- the new leader gave every member a fresh lease when it took over: the writer's
    // members, which never renew, have leases no older than the takeover.
    let since_kill = killed.elapsed().as_millis() as u64;
    let ages = cluster.nodes[new].server().state().leases.ages();
    let before_kill: Vec<MemberId> = acked
        .lock()
        .iter()
        .filter(|(at, _)| *at < killed)
        .map(|(_, id)| id.clone())
        .collect();
    for id in &before_kill {
        let age = ages.iter().find(|a| &a.id == id).map(|a| a.age_ms);
        assert!(
            age.is_some_and(|a| a <= since_kill),
            "{id}: lease age {age:?} ms, but the leader took over less than {since_kill} ms ago"
        );
    }

    // --- nothing committed is lost.
    let after = cluster.state(new);
    for id in before.view.members.keys() {
        assert!(
            after.view.members.contains_key(id),
            "{id} was committed before the crash and is gone"
        );
    }
    for (_, id) in acked.lock().iter() {
        assert!(
            after.view.members.contains_key(id),
            "{id} was acknowledged and is gone"
        );
    }
    assert!(after.view.epoch > before.view.epoch);
    assert_eq!(
        after.view.slots, before.view.slots,
        "the data members did not change, neither may the slot table"
    );
    // Never removed (a removal followed by a re-registration would change the time).
    assert_eq!(registered_at(&after, &d1.id), Some(d1_at));
    assert_eq!(registered_at(&after, &d2.id), Some(d2_at));
    let datas: BTreeSet<MemberId> = after
        .view
        .members_of(Role::Data)
        .map(|m| m.id.clone())
        .collect();
    assert_eq!(datas, BTreeSet::from([d1.id.clone(), d2.id.clone()]));

    // --- the crashed node restarts from its directory and converges.
    cluster.start_node(old, false).await;
    let converged = cluster.wait_same_state().await;
    assert_eq!(converged.view.members, after.view.members);
}
