//! A session connection that stops taking bytes (a half-open peer, a peer that stopped
//! reading): the SDK's writes to it used to wait forever, and since the connection task
//! waits inside the write, neither its silence deadline nor anything else could move the
//! client on; every request of the client hung. Each write now has a deadline (the ping
//! interval, at least 1 s), past which the connection is treated as lost.

use std::time::Duration;

use integration::cluster::{Cluster, ClusterConfig};
use integration::proxy::{Fault, Proxy};
use integration::wait::until;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_writes_block_moves_to_another_session() {
    const BIG: usize = 40;
    let cluster = Cluster::start(ClusterConfig::new(1, 1, 2)).await.unwrap();
    let other = cluster.sessions[0].addr.to_string();
    // The client reaches its first session through a proxy that can stop reading.
    let link = Proxy::start(Some(cluster.sessions[1].addr)).unwrap();
    let mut config = cluster.client_config(vec![link.addr().to_string(), other]);
    config.ping_interval = Duration::from_millis(500);
    config.request_timeout = WAIT;
    let client = client_sdk::Client::connect(config).await.unwrap();
    let _small = client
        .publish("svc.blocked", vec!["small".into()])
        .await
        .unwrap();

    // The proxy takes no more bytes: once the socket buffers between the client and the
    // proxy are full (16 MB is well past them), the SDK's next write blocks.
    link.set_default_fault(Fault::Blackhole);
    let big = "x".repeat(400 * 1024);
    let ids: Vec<String> = (0..BIG).map(|i| format!("svc.big{i}")).collect();
    let publishes = ids.iter().map(|id| client.publish(id, vec![big.clone()]));
    let results = tokio::time::timeout(WAIT, futures::future::join_all(publishes))
        .await
        .expect("the client's publishes hung behind a blocked write");
    let held: Vec<_> = results.into_iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(held.len(), BIG);
    until(
        "every publisher is held through the other session",
        WAIT,
        || async {
            cluster.sessions[0]
                .server()
                .state()
                .registry
                .publishers()
                .len()
                == BIG + 1
        },
    )
    .await;
}
