//! [`LogStore`]: openraft's log storage (`RaftLogStorage` + `RaftLogReader`) on redb.
//!
//! Owns the `raft_log` table and the `vote`, `committed` and `last_purged` records (see
//! [`crate::raft::store`]). Durability contract with openraft:
//! - `save_vote`, `save_committed`, `truncate_after` and `purge` return only after their redb
//!   transaction is committed with immediate durability;
//! - `append` commits the entries durably and only then calls the `IOFlushed` callback (before
//!   returning, which openraft allows), so openraft never counts an entry as persisted before
//!   it is on disk, and entries are readable by every reader the moment `append` returns.
//!
//! Writes are serialised by openraft (it calls them one at a time through `&mut self`); redb
//! serialises write transactions as well. Readers (replication tasks) open their own read
//! transactions and see a consistent snapshot of the table.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::{ReadableDatabase, ReadableTable};

use crate::raft::store::{
    begin_write, blocking_write, commit, decode, encode, put_meta, read_meta, Db, KEY_COMMITTED,
    KEY_LAST_PURGED, KEY_VOTE, LOG, META,
};
use crate::raft::types::{Entry, LogId, TypeConfig, Vote};

/// The log store of one meta node. Cheap to clone: every clone reads the same database.
#[derive(Clone)]
pub struct LogStore {
    /// The node's database; shared with the state machine (which keeps the snapshot there).
    db: Arc<Db>,
}

impl LogStore {
    /// A log store over an open database (see [`crate::raft::store::open_db`]).
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    fn read_entries(&self, range: (Bound<u64>, Bound<u64>)) -> io::Result<Vec<Entry>> {
        let txn = self.db.begin_read().map_err(io::Error::other)?;
        let table = txn.open_table(LOG).map_err(io::Error::other)?;
        let mut out = Vec::new();
        for item in table.range::<u64>(range).map_err(io::Error::other)? {
            let (_, value) = item.map_err(io::Error::other)?;
            out.push(decode::<Entry>(value.value())?);
        }
        Ok(out)
    }

    fn last_entry_log_id(&self) -> io::Result<Option<LogId>> {
        let txn = self.db.begin_read().map_err(io::Error::other)?;
        let table = txn.open_table(LOG).map_err(io::Error::other)?;
        let last = match table.last().map_err(io::Error::other)? {
            Some((_, value)) => Some(decode::<Entry>(value.value())?.log_id),
            None => None,
        };
        Ok(last)
    }
}

/// Copies any `RangeBounds<u64>` into owned bounds redb accepts.
fn owned_bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

/// Deletes every log entry whose index is in `range`.
fn delete_range(txn: &redb::WriteTransaction, range: (Bound<u64>, Bound<u64>)) -> io::Result<()> {
    let mut table = txn.open_table(LOG).map_err(io::Error::other)?;
    table
        .retain_in::<u64, _>(range, |_, _| false)
        .map_err(io::Error::other)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.read_entries(owned_bounds(&range))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        read_meta(&self.db, KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = read_meta(&self.db, KEY_LAST_PURGED)?;
        let last_log_id = match self.last_entry_log_id()? {
            Some(id) => Some(id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = encode(vote)?;
        blocking_write(&self.db, move |db| {
            let txn = begin_write(db)?;
            {
                let mut table = txn.open_table(META).map_err(io::Error::other)?;
                table
                    .insert(KEY_VOTE, bytes.as_slice())
                    .map_err(io::Error::other)?;
            }
            commit(txn)
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        blocking_write(&self.db, move |db| {
            let txn = begin_write(db)?;
            put_meta(&txn, KEY_COMMITTED, &committed)?;
            commit(txn)
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        // Stored as JSON of `Option<LogId>`; an absent record means "never saved".
        Ok(read_meta::<Option<LogId>>(&self.db, KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Encode on this task; only the transaction and its fsync go to the blocking pool.
        let mut encoded = Vec::new();
        for entry in entries {
            encoded.push((entry.log_id.index(), encode(&entry)?));
        }
        let res = blocking_write(&self.db, move |db| {
            let txn = begin_write(db)?;
            {
                let mut table = txn.open_table(LOG).map_err(io::Error::other)?;
                for (index, bytes) in &encoded {
                    table
                        .insert(*index, bytes.as_slice())
                        .map_err(io::Error::other)?;
                }
            }
            commit(txn)
        })
        .await;
        match res {
            Ok(()) => {
                // On disk: now openraft may count these entries as persisted.
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = match &last_log_id {
            Some(id) => Bound::Excluded(id.index()),
            None => Bound::Unbounded,
        };
        blocking_write(&self.db, move |db| {
            let txn = begin_write(db)?;
            delete_range(&txn, (from, Bound::Unbounded))?;
            commit(txn)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        blocking_write(&self.db, move |db| {
            let txn = begin_write(db)?;
            // Record the purge point first: with it the log state stays right even when every
            // entry is gone.
            put_meta(&txn, KEY_LAST_PURGED, &log_id)?;
            delete_range(&txn, (Bound::Unbounded, Bound::Included(log_id.index())))?;
            commit(txn)
        })
        .await
    }
}
