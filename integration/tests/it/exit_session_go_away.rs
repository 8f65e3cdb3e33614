//! SIGTERM on a session-server process sends every client `go_away` naming the other
//! sessions, the clients move there and re-register, subscribers elsewhere never see their
//! publishers disappear, and the process leaves and exits. Started again on the same address,
//! it rejoins and serves new clients.

use std::time::Duration;

use client_sdk::{Client, ClientConfig, ConnectionState};
use integration::cluster::{Cluster, ClusterConfig};
use integration::raw::RawClient;
use integration::wait::{eventually, until};
use integration::workload::{data_id, grid_data, payload, Fleet};
use registry_common::member::{MemberId, Role};

use crate::process::{answers, free_port, ServerProcess};

const WAIT: Duration = Duration::from_secs(30);
const IDS: usize = 32;
const PER_ID: usize = 2;

fn session_args(cluster: &Cluster, addr: &str) -> Vec<String> {
    vec![
        "--listen".into(),
        addr.into(),
        "--meta".into(),
        cluster.meta_addrs().join(","),
    ]
}

async fn joined(cluster: &Cluster, addr: &str) -> MemberId {
    let id = eventually("the session-server process to join", WAIT, || async {
        cluster
            .view()
            .members_of(Role::Session)
            .find(|m| m.addr == addr)
            .map(|m| m.id.clone())
    })
    .await;
    until("the process to be ready", WAIT, || answers(addr, "/ready")).await;
    id
}

/// A client that starts at `first` and knows `others` for failover.
async fn client(first: &str, other: &str) -> Client {
    let mut config = ClientConfig::new([first.to_string(), other.to_string()]);
    config.ordered = true;
    config.connect_timeout = Duration::from_secs(10);
    Client::connect(config).await.expect("client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_moves_a_session_servers_clients_away_and_it_rejoins() {
    let cluster = Cluster::start(ClusterConfig::new(3, 2, 1))
        .await
        .expect("cluster starts");
    let stays = cluster.sessions[0].addr.to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut process = ServerProcess::spawn(
        "session-server",
        &session_args(&cluster, &addr),
        &dir.path().join("session-1.log"),
    );
    let first = joined(&cluster, &addr).await;

    // Publishers on clients of the process; subscribers on the session that stays.
    let mut movers = Vec::new();
    for _ in 0..3 {
        movers.push(client(&addr, &stays).await);
    }
    let movers = Fleet { clients: movers };
    let _pubs = movers.publish_grid(IDS, PER_ID).await.expect("publish");
    let observers = Fleet {
        clients: vec![cluster.client(0).await.expect("observer connects")],
    };
    let watch = observers.watch(IDS).await.expect("subscribe");
    until("every subscriber holds every publisher", WAIT, || async {
        watch.complete(IDS, |i| grid_data(i, PER_ID)) == IDS
    })
    .await;
    let mut raw = RawClient::hello(&addr, "raw-observer")
        .await
        .expect("raw client");

    process.terminate();
    let go_away = tokio::time::timeout(WAIT, async {
        loop {
            let f = raw
                .next_frame(WAIT)
                .await
                .expect("the connection stays open");
            if f["type"] == "go_away" {
                break f;
            }
        }
    })
    .await
    .expect("a go_away frame after SIGTERM");
    let suggested: Vec<String> =
        serde_json::from_value(go_away["sessions"].clone()).expect("go_away names sessions");
    assert_eq!(
        suggested,
        vec![stays.clone()],
        "go_away names the other session"
    );
    // Still serving the client that has not moved yet, but no longer ready for new ones.
    assert!(
        answers(&addr, "/health").await,
        "alive while it moves its clients"
    );
    assert!(
        !answers(&addr, "/ready").await,
        "not ready once it is stopping"
    );
    drop(raw);
    process.exits_cleanly(WAIT).await;
    assert!(
        process
            .log_text()
            .contains("clients moved to other sessions"),
        "the process waited for its clients to move; log:\n{}",
        process.log_text()
    );
    until("the session to leave the membership", WAIT, || async {
        !cluster.view().members.contains_key(&first)
    })
    .await;
    for c in &movers.clients {
        let mut state = c.connection_state();
        tokio::time::timeout(
            WAIT,
            state.wait_for(
                |s| matches!(s, ConnectionState::Connected { session } if *session == stays),
            ),
        )
        .await
        .expect("the client moved to the other session")
        .expect("the client is open");
    }
    // Past the data tier's cleanup grace of the departed session: still all there.
    let cleanup = Duration::from_millis(cluster.config.data.session_cleanup_grace_ms);
    let after = tokio::time::Instant::now() + cleanup * 2;
    until(
        "the departed session's cleanup to have run",
        WAIT,
        || async { tokio::time::Instant::now() > after },
    )
    .await;
    assert_eq!(watch.complete(IDS, |i| grid_data(i, PER_ID)), IDS);
    assert_eq!(
        watch.disappearances(),
        vec![],
        "no subscriber saw a publisher disappear while its client moved"
    );

    // --- back on the same address: it rejoins and serves a new client.
    let mut process = ServerProcess::spawn(
        "session-server",
        &session_args(&cluster, &addr),
        &dir.path().join("session-1-again.log"),
    );
    let second = joined(&cluster, &addr).await;
    assert_ne!(second, first);
    let late = client(&addr, &addr).await;
    let mut sub = late.subscribe(&data_id(0)).await.expect("subscribe");
    let want = grid_data(0, PER_ID);
    tokio::time::timeout(WAIT, async {
        while let Some(u) = sub.next().await {
            if u.data
                .iter()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                == want
            {
                return;
            }
        }
        panic!("the subscription closed");
    })
    .await
    .expect("the rejoined session pushes the full datum");
    assert!(want.contains(&payload(0, 0)));
    late.close().await;
    process.terminate();
    process.exits_cleanly(WAIT).await;
}
