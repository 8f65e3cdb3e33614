//! The session's backlog of writes to the data tier is bounded: past it the session stops
//! reading client frames until the data tier catches up, one frame a second at most while it
//! takes nothing in, so acknowledgements cannot run far ahead of what subscribers see and a
//! dead data tier slows clients down without silencing them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::wait::until;
use registry_common::member::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_write_backlog_a_session_reads_clients_only_as_the_data_tier_catches_up() {
    const BACKLOG: usize = 40;
    const EXTRA: usize = 10;
    let mut config = ClusterConfig::new(1, 1, 1);
    config.session.forward_backlog = BACKLOG;
    let mut cluster = Cluster::start(config).await.unwrap();
    let session = cluster.sessions[0].server().state().clone();
    let client = Arc::new(cluster.client(0).await.unwrap());

    // Take the data tier away: writes can no longer land.
    cluster.kill_data(0).await;

    // Up to the bound, registrations are acknowledged at once and wait at the session.
    let mut held = Vec::new();
    for i in 0..BACKLOG {
        let p = client
            .publish(&format!("backlog.svc.{i}"), vec![format!("{i}")])
            .await
            .unwrap();
        held.push(p);
    }
    assert_eq!(session.forwarder.pending(), BACKLOG);

    // Past it, the session reads this client's frames at most once a second.
    let acked = Arc::new(AtomicUsize::new(0));
    let extra: Vec<_> = (0..EXTRA)
        .map(|i| {
            let client = client.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                let p = client
                    .publish(&format!("backlog.extra.{i}"), vec![format!("{i}")])
                    .await;
                acked.fetch_add(1, Ordering::SeqCst);
                p
            })
        })
        .collect();
    until(
        "the session pauses its reads",
        Duration::from_secs(10),
        || async { session.metrics.intake_pause.get_sample_count() >= 1 },
    )
    .await;
    let early = acked.load(Ordering::SeqCst);
    assert!(
        early <= EXTRA / 2,
        "{early} of {EXTRA} registrations past the backlog were acknowledged while it was full"
    );

    // A data server again: the backlog lands, and the paused registrations go through.
    cluster.add_data().await.unwrap();
    until(
        "a data server serves the slots",
        Duration::from_secs(20),
        || async { cluster.view().members_of(Role::Data).count() == 1 },
    )
    .await;
    for task in extra {
        held.push(task.await.unwrap().unwrap());
    }
    until(
        "every write has landed",
        Duration::from_secs(20),
        || async { session.forwarder.pending() == 0 },
    )
    .await;
    let data = cluster.datas.len() - 1;
    until(
        "the data tier holds every publisher",
        Duration::from_secs(20),
        || async { cluster.data_publishers(data).await.ok() == Some((BACKLOG + EXTRA) as u64) },
    )
    .await;
    assert!(session.metrics.intake_pause.get_sample_sum() > 0.0);
}
