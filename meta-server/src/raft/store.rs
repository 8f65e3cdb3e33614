//! The redb database of one meta node: file layout, table definitions and the few helpers the
//! log store and the state machine share.
//!
//! One file, `<dir>/raft.redb`, with two tables:
//! - `raft_log`: log index (u64) -> JSON of the openraft `Entry`;
//! - `raft_meta`: small named records, each JSON: `vote`, `committed`, `last_purged`,
//!   `snapshot` (the current snapshot: its meta and the whole `MetaState`).
//!
//! Every write is one redb transaction committed with `Durability::Immediate` (fsync before
//! `commit` returns), run on tokio's blocking pool so an fsync never stalls a runtime worker.
//! Reads use redb's MVCC read transactions and never wait for a writer.

use std::io;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The name of the database file inside the node's data directory.
pub const DB_FILE: &str = "raft.redb";

/// Log entries by index.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Named records: see the `KEY_*` constants.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// The last vote saved by `save_vote`.
pub(crate) const KEY_VOTE: &str = "vote";
/// The last committed log id saved by `save_committed`.
pub(crate) const KEY_COMMITTED: &str = "committed";
/// The id of the last purged log entry.
pub(crate) const KEY_LAST_PURGED: &str = "last_purged";
/// The current snapshot.
pub(crate) const KEY_SNAPSHOT: &str = "snapshot";

/// An open database that says when it is closed.
///
/// redb closes the file (and releases its lock) in `Database`'s destructor, which runs after
/// the last `Arc` is gone, possibly on another thread. `closed` turns `true` once that
/// destructor has finished, so a node can be reopened on the same directory right after
/// [`crate::raft::MetaRaft::shutdown`].
pub struct Db {
    /// The database. Declared first: fields drop in order, so it is closed before `closed`
    /// signals.
    db: Database,
    /// Signals `true` when dropped, i.e. after `db` is closed.
    closed: ClosedSignal,
}

impl Db {
    /// A receiver that turns `true` once this database is closed (or whose sender is gone,
    /// which means the same).
    pub fn watch_closed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closed.0.subscribe()
    }
}

impl Deref for Db {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

struct ClosedSignal(tokio::sync::watch::Sender<bool>);

impl Drop for ClosedSignal {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// Page cache of the database.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Opens (creating if needed) the database under `dir`, and makes sure both tables exist so
/// that read transactions never meet a missing table.
pub fn open_db(dir: &Path) -> io::Result<Arc<Db>> {
    std::fs::create_dir_all(dir)?;
    // The meta state is small (members, slot table, a log purged at every snapshot): a few
    // MiB of page cache hold all of it, where redb's default would let it grow to 1 GiB.
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(dir.join(DB_FILE))
        .map_err(io::Error::other)?;
    let txn = begin_write(&db)?;
    txn.open_table(LOG).map_err(io::Error::other)?;
    txn.open_table(META).map_err(io::Error::other)?;
    commit(txn)?;
    let (closed, _) = tokio::sync::watch::channel(false);
    Ok(Arc::new(Db {
        db,
        closed: ClosedSignal(closed),
    }))
}

/// Starts a write transaction that is durable on commit.
pub(crate) fn begin_write(db: &Database) -> io::Result<WriteTransaction> {
    let mut txn = db.begin_write().map_err(io::Error::other)?;
    txn.set_durability(Durability::Immediate)
        .map_err(io::Error::other)?;
    Ok(txn)
}

/// Commits; when this returns `Ok` the data is on disk.
pub(crate) fn commit(txn: WriteTransaction) -> io::Result<()> {
    txn.commit().map_err(io::Error::other)
}

/// Runs a blocking write (transaction + fsync) on the blocking pool and waits for it.
pub(crate) async fn blocking_write<F>(db: &Arc<Db>, f: F) -> io::Result<()>
where
    F: FnOnce(&Database) -> io::Result<()> + Send + 'static,
{
    let db = db.clone();
    match tokio::task::spawn_blocking(move || f(&db)).await {
        Ok(res) => res,
        Err(join) => Err(io::Error::other(format!("storage task failed: {join}"))),
    }
}

/// Reads and decodes one `raft_meta` record.
pub(crate) fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> io::Result<Option<T>> {
    let txn = db.begin_read().map_err(io::Error::other)?;
    let table = txn.open_table(META).map_err(io::Error::other)?;
    let Some(raw) = redb::ReadableTable::get(&table, key).map_err(io::Error::other)? else {
        return Ok(None);
    };
    decode(raw.value()).map(Some)
}

/// Writes one `raft_meta` record inside `txn`.
pub(crate) fn put_meta<T: Serialize>(
    txn: &WriteTransaction,
    key: &str,
    value: &T,
) -> io::Result<()> {
    let bytes = encode(value)?;
    let mut table = txn.open_table(META).map_err(io::Error::other)?;
    table
        .insert(key, bytes.as_slice())
        .map_err(io::Error::other)?;
    Ok(())
}

/// JSON-encodes a value for the disk.
pub(crate) fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Decodes a value read from the disk.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
