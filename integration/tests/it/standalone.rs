//! `registry standalone` keeps its meta state across a restart on the same data directory.

use std::time::Duration;

use integration::wait::until;
use registry_cli::standalone::{Standalone, StandaloneConfig};
use registry_rpc::CancellationToken;

fn config(dir: &std::path::Path) -> StandaloneConfig {
    StandaloneConfig {
        data_dir: dir.to_path_buf(),
        host: "127.0.0.1".into(),
        meta_port: 0,
        data_port: 0,
        session_port: 0,
        ..StandaloneConfig::default()
    }
}

#[tokio::test]
async fn restart_on_the_same_directory_keeps_the_meta_state() {
    integration::init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let first = Standalone::start(config(dir.path()), CancellationToken::new())
        .await
        .unwrap();
    let view = first.meta.raft().state().view;
    assert!(view.epoch >= 2, "data and session registered: {view:?}");
    let members_before: Vec<_> = view.members.keys().cloned().collect();
    let term_before = first.meta.raft().status().term;
    first.shutdown().await;

    let second = Standalone::start(config(dir.path()), CancellationToken::new())
        .await
        .unwrap();
    let raft = second.meta.raft().clone();
    // The epoch continues from the persisted state instead of starting over.
    until(
        "epoch beyond the first run's",
        Duration::from_secs(10),
        || async { raft.state().view.epoch > view.epoch },
    )
    .await;
    assert!(raft.status().term >= term_before);
    let now = raft.state().view;
    for old in &members_before {
        assert!(
            !now.members.contains_key(old),
            "{old} left gracefully and stays gone"
        );
    }
    assert_eq!(
        now.members.len(),
        2,
        "the new data and session servers: {now:?}"
    );
    second.shutdown().await;
}
