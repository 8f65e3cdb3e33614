//! Datums in memory, sharded by slot.
//!
//! Each slot is one mutex-protected shard holding the datums whose dataInfoId hashes into it,
//! so writes to different slots never contend and a whole slot can be copied or dropped at
//! once when it migrates. Every change appends to the datum's operation log: a bounded ring
//! (by count and by age) of `(version, op)` that replicas and migrating holders replay from;
//! a follower that finds a gap in it falls back to a full datum copy.
//!
//! Publishers are held as `Arc<Publisher>` so the log and the datum share one copy.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use registry_common::id::DataInfoId;
use registry_common::member::MemberId;
use registry_common::model::{Datum, Publisher, PublisherKey};
use registry_common::proto::data::PublisherDigest;
use registry_common::slot::{slot_of, SlotId};
use registry_common::version::VersionClock;
use serde::{Deserialize, Serialize};

/// Bounds of every datum's operation log.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Most ops kept per dataInfoId.
    pub max_ops: usize,
    /// Ops older than this are dropped.
    pub max_age: Duration,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            max_ops: 32,
            max_age: Duration::from_secs(60),
        }
    }
}

/// One logged change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum LoggedOp {
    Put { publisher: Arc<Publisher> },
    Remove { key: PublisherKey },
}

/// An entry of a datum's operation log: the op and the datum version it produced.
#[derive(Debug, Clone)]
pub struct OpEntry {
    pub version: u64,
    /// Version of the datum just before this op (to detect gaps when replaying).
    pub prev_version: u64,
    pub at: Instant,
    pub op: LoggedOp,
}

/// Result of a write: the datum version after it and whether anything changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub version: u64,
    pub changed: bool,
}

#[derive(Debug, Default)]
struct DatumState {
    version: u64,
    publishers: BTreeMap<PublisherKey, Arc<Publisher>>,
    log: VecDeque<OpEntry>,
}

impl DatumState {
    fn to_datum(&self, id: &DataInfoId) -> Datum {
        Datum {
            data_info_id: id.clone(),
            version: self.version,
            publishers: self.publishers.values().map(|p| (**p).clone()).collect(),
        }
    }

    fn append(&mut self, version: u64, op: LoggedOp, limits: LogLimits) {
        let now = Instant::now();
        self.log.push_back(OpEntry {
            version,
            prev_version: self.version,
            at: now,
            op,
        });
        self.version = version;
        while self.log.len() > limits.max_ops
            || self
                .log
                .front()
                .is_some_and(|e| now.duration_since(e.at) > limits.max_age)
        {
            self.log.pop_front();
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    datums: HashMap<DataInfoId, DatumState>,
}

/// All datums of this data server.
#[derive(Debug)]
pub struct Store {
    slots: Vec<Mutex<Shard>>,
    clock: VersionClock,
    limits: LogLimits,
}

impl Store {
    pub fn new(slot_count: u32, limits: LogLimits) -> Self {
        Self {
            slots: (0..slot_count.max(1))
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            clock: VersionClock::new(),
            limits,
        }
    }

    pub fn slot_count(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn slot_of(&self, id: &DataInfoId) -> SlotId {
        slot_of(id, self.slot_count())
    }

    fn shard(&self, id: &DataInfoId) -> &Mutex<Shard> {
        &self.slots[self.slot_of(id) as usize]
    }

    /// Adds or replaces a publisher if it supersedes the one held.
    pub fn publish(&self, publisher: Publisher) -> Applied {
        let mut shard = self.shard(&publisher.data_info_id).lock();
        let state = shard
            .datums
            .entry(publisher.data_info_id.clone())
            .or_default();
        if let Some(old) = state.publishers.get(&publisher.key) {
            if !publisher.supersedes(old) {
                return Applied {
                    version: state.version,
                    changed: false,
                };
            }
        }
        let version = self.clock.next_after(state.version);
        let publisher = Arc::new(publisher);
        state
            .publishers
            .insert(publisher.key.clone(), publisher.clone());
        state.append(version, LoggedOp::Put { publisher }, self.limits);
        Applied {
            version,
            changed: true,
        }
    }

    /// Removes a publisher if it still belongs to `(session, conn_id)`.
    pub fn unpublish(
        &self,
        id: &DataInfoId,
        key: &PublisherKey,
        session: &MemberId,
        conn_id: u64,
    ) -> Applied {
        let mut shard = self.shard(id).lock();
        let Some(state) = shard.datums.get_mut(id) else {
            return Applied {
                version: 0,
                changed: false,
            };
        };
        let owned = state
            .publishers
            .get(key)
            .is_some_and(|p| p.owned_by(session, conn_id));
        if !owned {
            return Applied {
                version: state.version,
                changed: false,
            };
        }
        state.publishers.remove(key);
        let version = self.clock.next_after(state.version);
        state.append(version, LoggedOp::Remove { key: key.clone() }, self.limits);
        Applied {
            version,
            changed: true,
        }
    }

    /// Removes every publisher owned by `session` in the slots `in_slot` accepts. Returns
    /// the changed dataInfoIds with their new versions.
    pub fn remove_session(
        &self,
        session: &MemberId,
        in_slot: impl Fn(SlotId) -> bool,
    ) -> Vec<(DataInfoId, u64)> {
        let mut changed = Vec::new();
        for (slot, shard) in self.slots.iter().enumerate() {
            if !in_slot(slot as SlotId) {
                continue;
            }
            let mut shard = shard.lock();
            for (id, state) in shard.datums.iter_mut() {
                let keys: Vec<PublisherKey> = state
                    .publishers
                    .values()
                    .filter(|p| &p.session == session)
                    .map(|p| p.key.clone())
                    .collect();
                if keys.is_empty() {
                    continue;
                }
                for key in keys {
                    state.publishers.remove(&key);
                    let version = self.clock.next_after(state.version);
                    state.append(version, LoggedOp::Remove { key }, self.limits);
                }
                changed.push((id.clone(), state.version));
            }
        }
        changed
    }

    /// The datum of `id` (empty at version 0 if never published).
    pub fn datum(&self, id: &DataInfoId) -> Datum {
        let shard = self.shard(id).lock();
        match shard.datums.get(id) {
            Some(state) => state.to_datum(id),
            None => Datum::empty(id.clone(), 0),
        }
    }

    /// The datum of `id` if it has at most `max_publishers` publishers.
    pub fn small_datum(&self, id: &DataInfoId, max_publishers: usize) -> Option<Datum> {
        let shard = self.shard(id).lock();
        match shard.datums.get(id) {
            Some(state) if state.publishers.len() <= max_publishers => Some(state.to_datum(id)),
            Some(_) => None,
            None => Some(Datum::empty(id.clone(), 0)),
        }
    }

    pub fn version(&self, id: &DataInfoId) -> u64 {
        self.shard(id)
            .lock()
            .datums
            .get(id)
            .map_or(0, |s| s.version)
    }

    /// Digests of the publishers `session` owns, in the slots `in_slot` accepts.
    pub fn session_digests(
        &self,
        session: &MemberId,
        in_slot: impl Fn(SlotId) -> bool,
    ) -> Vec<PublisherDigest> {
        let mut out = Vec::new();
        for (slot, shard) in self.slots.iter().enumerate() {
            if !in_slot(slot as SlotId) {
                continue;
            }
            let shard = shard.lock();
            for state in shard.datums.values() {
                out.extend(
                    state
                        .publishers
                        .values()
                        .filter(|p| &p.session == session)
                        .map(|p| PublisherDigest {
                            data_info_id: p.data_info_id.clone(),
                            key: p.key.clone(),
                            conn_id: p.conn_id,
                            version: p.version,
                            registered_at_ms: p.registered_at_ms,
                        }),
                );
            }
        }
        out
    }

    /// Counts of (dataInfoIds, publishers) per slot.
    pub fn slot_counts(&self) -> Vec<(usize, usize)> {
        self.slots
            .iter()
            .map(|s| {
                let s = s.lock();
                (
                    s.datums.len(),
                    s.datums.values().map(|d| d.publishers.len()).sum(),
                )
            })
            .collect()
    }
}
