//! [`StateMachineStore`]: openraft's state machine (`RaftStateMachine` + snapshot builder),
//! holding the [`MetaState`] in memory and the current snapshot in redb.
//!
//! The state machine itself is not written to disk on every apply: `MetaState` is small and
//! changes rarely, and openraft restores a transient state machine on startup by installing
//! the persisted snapshot and re-applying the log up to the persisted `committed` id (see the
//! module doc of [`crate::raft`]). What is durable here is the snapshot: `build_snapshot` and
//! `install_snapshot` commit it to the `snapshot` record before they return.
//!
//! The applied state is shared ([`SmShared`]) with the [`crate::raft::MetaRaft`] handle, which
//! reads it for `state()` and hands out the epoch watch.

use std::io;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::raft::store::{
    begin_write, blocking_write, commit, put_meta, read_meta, Db, KEY_SNAPSHOT,
};
use crate::raft::types::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::state::{MetaResponse, MetaState};

/// What the state machine has applied.
#[derive(Clone, Debug, Default)]
pub(crate) struct SmData {
    /// The id of the last applied entry; openraft asks for it at startup and before snapshots.
    pub(crate) last_applied: Option<LogId>,
    /// The last membership config applied (openraft keeps membership in the state machine too,
    /// so a snapshot carries it).
    pub(crate) last_membership: StoredMembership,
    /// The application state.
    pub(crate) state: MetaState,
}

/// The state shared between the state machine (writer) and the `MetaRaft` handle (readers).
pub(crate) struct SmShared {
    /// The applied state; written only by the state machine worker.
    pub(crate) data: RwLock<SmData>,
    /// The epoch of `data.state`, sent after every apply that changed it and after every
    /// snapshot install (including the one openraft does at startup).
    pub(crate) epoch_tx: watch::Sender<u64>,
    /// The ACL revision of `data.state`, sent like the epoch.
    pub(crate) acl_tx: watch::Sender<u64>,
}

impl SmShared {
    fn new() -> Self {
        let (epoch_tx, _) = watch::channel(0);
        let (acl_tx, _) = watch::channel(0);
        Self {
            data: RwLock::new(SmData::default()),
            epoch_tx,
            acl_tx,
        }
    }

    /// Publishes the current epoch and ACL revision where they differ from the last ones
    /// published.
    fn publish(&self, epoch: u64, acl_revision: u64) {
        self.publish_epoch(epoch);
        self.acl_tx.send_if_modified(|current| {
            let changed = *current != acl_revision;
            *current = acl_revision;
            changed
        });
    }

    fn publish_epoch(&self, epoch: u64) {
        self.epoch_tx.send_if_modified(|current| {
            if *current == epoch {
                false
            } else {
                *current = epoch;
                true
            }
        });
    }
}

/// The snapshot as stored in redb: openraft's meta plus the whole state.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: MetaState,
}

/// The state machine of one meta node. Cheap to clone (all clones share one state).
#[derive(Clone)]
pub struct StateMachineStore {
    /// The applied state and the epoch watch.
    shared: Arc<SmShared>,
    /// Where the current snapshot is persisted.
    db: Arc<Db>,
}

impl StateMachineStore {
    /// A fresh (empty) state machine whose snapshots live in `db`. Openraft restores it from
    /// the persisted snapshot and log when the node starts.
    pub fn new(db: Arc<Db>) -> Self {
        Self {
            shared: Arc::new(SmShared::new()),
            db,
        }
    }

    /// A clone of the applied application state.
    pub fn state(&self) -> MetaState {
        self.shared.data.read().state.clone()
    }

    /// The id of the last applied entry.
    pub fn last_applied(&self) -> Option<LogId> {
        self.shared.data.read().last_applied
    }

    /// A receiver of the epoch after every change.
    pub fn watch_epoch(&self) -> watch::Receiver<u64> {
        self.shared.epoch_tx.subscribe()
    }

    pub(crate) fn shared(&self) -> Arc<SmShared> {
        self.shared.clone()
    }

    /// Makes `snapshot` the current snapshot on disk.
    async fn persist_snapshot(&self, meta: &SnapshotMeta, data: &MetaState) -> io::Result<()> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        blocking_write(&self.db, move |db| {
            let txn = begin_write(db)?;
            put_meta(&txn, KEY_SNAPSHOT, &stored)?;
            commit(txn)
        })
        .await
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = MetaState;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // A consistent view: applied id, membership and state are read under one lock.
        let data = self.shared.data.read().clone();
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.last_membership,
        };
        self.persist_snapshot(&meta, &data.state).await?;
        Ok(Snapshot {
            meta,
            snapshot: data.state,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = MetaState;
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let data = self.shared.data.read();
        Ok((data.last_applied, data.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut result = Ok(());
        while let Some(item) = entries.next().await {
            let (entry, responder) = match item {
                Ok(x) => x,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let response = {
                let mut data = self.shared.data.write();
                data.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => MetaResponse {
                        epoch: data.state.view.epoch,
                        ..MetaResponse::default()
                    },
                    EntryPayload::Normal(req) => match req.expect_epoch {
                        // A guarded command decided on another epoch: refused, nothing changes.
                        // The caller tells this from a no-op by the epoch in the response.
                        Some(expected) if expected != data.state.view.epoch => MetaResponse {
                            epoch: data.state.view.epoch,
                            ..MetaResponse::default()
                        },
                        _ => data.state.apply(&req.cmd),
                    },
                    EntryPayload::Membership(membership) => {
                        data.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        MetaResponse {
                            epoch: data.state.view.epoch,
                            ..MetaResponse::default()
                        }
                    }
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        let (epoch, acl) = {
            let data = self.shared.data.read();
            (data.state.view.epoch, data.state.acl.revision)
        };
        self.shared.publish(epoch, acl);
        result
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: MetaState,
    ) -> Result<(), io::Error> {
        // Durable first: once the in-memory state moves past the log, the snapshot is the only
        // record of the purged part.
        self.persist_snapshot(meta, &snapshot).await?;
        let epoch = snapshot.view.epoch;
        let acl = snapshot.acl.revision;
        {
            let mut data = self.shared.data.write();
            *data = SmData {
                last_applied: meta.last_log_id,
                last_membership: meta.last_membership.clone(),
                state: snapshot,
            };
        }
        self.shared.publish(epoch, acl);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let stored: Option<StoredSnapshot> = read_meta(&self.db, KEY_SNAPSHOT)?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: s.data,
        }))
    }
}
