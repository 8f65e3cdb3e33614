//! A meta leader that goes silent without closing anything (cut off by a network fault, or
//! frozen) must not hold its members' heartbeats: the leader answers every heartbeat, a
//! member that hears nothing for three intervals looks for the leader again, and its
//! heartbeat reaches the new leader while the old one is still silent.

use integration::proxy::Fault;
use integration::wait::{eventually, until};

use crate::meta_fixture::{MetaCluster, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_moves_its_heartbeat_off_a_silent_leader() {
    let mut config = MetaCluster::fast_config();
    // Leases long enough that only the heartbeat, not a lease expiry, is being tested.
    config.lease_ms = 60_000;
    let mut cluster = MetaCluster::start(3, config).await;
    let member = cluster.add_data().await;
    let old = cluster.wait_heartbeat(&member.id).await;

    // The leader goes silent for everyone: peers and members alike; connections stay open.
    cluster.nodes[old].proxy.set_default_fault(Fault::Blackhole);
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    cluster.partition(&[&[old], &others]);

    let new = eventually("a new serving leader", WAIT, || async {
        others
            .iter()
            .copied()
            .find(|i| cluster.nodes[*i].server().raft().serving_term().is_some())
    })
    .await;
    until("the member's heartbeat on the new leader", WAIT, || async {
        cluster.nodes[new]
            .server()
            .state()
            .leases
            .is_connected(&member.id)
    })
    .await;
    cluster.heal();
}
