//! Writes racing a migration of their slot all land.

use std::collections::BTreeSet;
use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::until;
use integration::workload::Fleet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_a_slot_migration_both_land() {
    const IDS: usize = 64;
    let mut cluster = Cluster::start(ClusterConfig::new(1, 1, 2)).await.unwrap();
    let fleet = Fleet::connect(&cluster, 4).await.unwrap();
    let mut handles = Vec::new();
    for round in 0..3 {
        // Two publishers per service from clients on different sessions, while a new data
        // server joins and takes over some of the slots.
        let a = &fleet.clients[0];
        let b = &fleet.clients[1];
        let writes = async {
            let mut out = Vec::new();
            for i in 0..IDS {
                let id = format!("race.{round}.{i}");
                let (pa, pb) = tokio::join!(
                    a.publish(&id, vec![format!("a:{i}")]),
                    b.publish(&id, vec![format!("b:{i}")])
                );
                out.push(pa.expect("publish a"));
                out.push(pb.expect("publish b"));
            }
            out
        };
        let (published, added) = tokio::join!(writes, cluster.add_data());
        added.unwrap();
        handles.extend(published);
        cluster.wait_converged().await;
        cluster.wait_slots_settled().await;
        let checker = &fleet.clients[2];
        for i in 0..IDS {
            let id = format!("race.{round}.{i}");
            let sub = checker.subscribe(&id).await.unwrap();
            let want: BTreeSet<String> = [format!("a:{i}"), format!("b:{i}")].into();
            until(
                &format!("both writes of {id} landed"),
                Duration::from_secs(15),
                || {
                    let got: Option<BTreeSet<String>> =
                        sub.latest().map(|u| u.data.into_iter().collect());
                    let ok = got.as_ref() == Some(&want);
                    async move { ok }
                },
            )
            .await;
            sub.unsubscribe().await.unwrap();
        }
    }
}
