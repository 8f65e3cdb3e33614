//! openraft's storage test suite against the real redb-backed log store and state machine,
//! each case in a fresh temporary directory; plus a reopen test: what the stores persisted is
//! there after the database is closed and opened again.

use std::collections::BTreeSet;

use meta_server::raft::{open_db, LogStore, MetaRequest, StateMachineStore, TypeConfig};
use meta_server::state::MetaCommand;
use openraft::entry::RaftEntry;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{
    Entry, ErrorSubject, ErrorVerb, Membership, RaftLogReader, RaftSnapshotBuilder, StorageError,
};
use registry_common::member::{Member, MemberId, Role};
use tempfile::TempDir;

/// Builds stores on a new temporary directory; the directory lives as long as the guard.
struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RedbBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = TempDir::new().map_err(store_err)?;
        let db = open_db(dir.path()).map_err(store_err)?;
        Ok((dir, LogStore::new(db.clone()), StateMachineStore::new(db)))
    }
}

fn store_err(e: std::io::Error) -> StorageError<TypeConfig> {
    StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(RedbBuilder).await {
        panic!("storage suite failed: {e}");
    }
}

fn log_id(term: u64, index: u64) -> openraft::type_config::alias::LogIdOf<TypeConfig> {
    openraft::testing::log_id::<TypeConfig>(term, 1, index)
}

fn register(id: &str) -> MetaRequest {
    MetaRequest::new(MetaCommand::Register {
        member: Member {
            id: MemberId(id.into()),
            role: Role::Data,
            addr: format!("{id}:1"),
            zone: String::new(),
            registered_at_ms: 0,
        },
        now_ms: 7,
    })
}

/// What was saved survives closing and reopening the database: vote, log, committed id, the
/// snapshot (which restores the state machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_survive_reopen() {
    let dir = TempDir::new().unwrap();
    let vote = openraft::impls::Vote::new_committed(3, 1);
    let snapshot_state;
    {
        let db = open_db(dir.path()).unwrap();
        let mut log = LogStore::new(db.clone());
        let mut sm = StateMachineStore::new(db.clone());
        log.save_vote(&vote).await.unwrap();
        let entries: Vec<openraft::type_config::alias::EntryOf<TypeConfig>> = vec![
            Entry::new_membership(
                log_id(1, 1),
                Membership::new_with_defaults(vec![BTreeSet::from([1u64])], []),
            ),
            Entry::new_normal(log_id(1, 2), register("d1")),
            Entry::new_normal(log_id(1, 3), register("d2")),
        ];
        let (tx, rx) = TypeConfig::oneshot();
        log.append(entries.clone(), openraft::storage::IOFlushed::signal(tx))
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
        log.save_committed(Some(log_id(1, 3))).await.unwrap();
        let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
        sm.apply(stream).await.unwrap();
        let snap = sm.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 3)));
        snapshot_state = sm.state();
        assert_eq!(snapshot_state.view.members.len(), 2);
        log.purge(log_id(1, 2)).await.unwrap();
        drop((log, sm, db));
    }
    let db = open_db(dir.path()).unwrap();
    let mut log = LogStore::new(db.clone());
    let mut sm = StateMachineStore::new(db);
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 3)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(1, 3)));
    let entries = log.try_get_log_entries(0..10).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].log_id, log_id(1, 3));
    let current = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 3)));
    assert_eq!(current.snapshot, snapshot_state);
}
