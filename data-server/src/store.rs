//! Datums in memory, sharded by slot.
//!
//! Each slot is one mutex-protected shard holding the datums whose dataInfoId hashes into it,
//! so writes to different slots never contend and a whole slot can be copied or dropped at
//! once when it migrates. Every change appends to the datum's operation log: a bounded ring
//! (by count and by age) of `(prev_version, version, op)` that replicas replay from; a replica
//! that finds a gap falls back to a full datum copy.
//!
//! Writes take a guard closure that runs under the shard lock: the server checks ownership
//! there, so a slot handed to another server can be copied under the same lock with the
//! certainty that no write accepted under the old ownership is missing from the copy.
//!
//! Publishers are held as `Arc<Publisher>` so the datum, its log and replication share one copy,
//! and the dataInfoId and session id strings they carry are the shard's own (`share_strings`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use registry_common::id::DataInfoId;
use registry_common::member::MemberId;
use registry_common::model::{ByKey, Datum, Publisher, PublisherKey, PushDatum, Tally};
use registry_common::proto::data::{OpRecord, PublisherDigest, ReplicatedOp};
use registry_common::slot::{slot_of, SlotId};
use registry_common::version::VersionClock;

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
            max_ops: 8,
            max_age: Duration::from_secs(10),
        }
    }
}

/// An entry of a datum's operation log.
#[derive(Debug, Clone)]
struct OpEntry {
    record: OpRecord,
    at: Instant,
}

/// Result of a write: the datum version after it and whether anything changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub version: u64,
    pub changed: bool,
}

/// Result of applying replicated ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub version: u64,
    /// The ops did not connect to the datum held here.
    pub need_full: bool,
}

#[derive(Debug, Default)]
struct DatumState {
    version: u64,
    /// In key order; the key is held once, in the publisher (see `ByKey`).
    publishers: BTreeSet<ByKey>,
    log: VecDeque<OpEntry>,
    /// When the data tier last removed publishers of this datum because their session left
    /// (see `Datum::server_removal`).
    removed_at: Option<Instant>,
}

/// How long after a server-side removal every version of the datum still says so
/// (`Datum::server_removal`): the clients of a departed session re-register through other
/// sessions one by one, and until the last of them is back each intermediate version is a
/// partial view that sessions hold back rather than push.
pub const SERVER_REMOVAL_WINDOW: Duration = Duration::from_secs(10);

impl DatumState {
    fn to_datum(&self, id: &DataInfoId) -> Datum {
        Datum {
            data_info_id: id.clone(),
            version: self.version,
            publishers: self.publishers.iter().map(|p| (*p.0).clone()).collect(),
            server_removal: self.server_removal(),
        }
    }

    fn server_removal(&self) -> bool {
        self.removed_at
            .is_some_and(|at| at.elapsed() < SERVER_REMOVAL_WINDOW)
    }

    /// Logs an op of datum `id`; a log that was empty is queued in its shard's `logged`
    /// for [`Store::trim_logs`].
    fn append(
        &mut self,
        (id, logged): (&DataInfoId, &mut VecDeque<(Instant, DataInfoId)>),
        version: u64,
        op: ReplicatedOp,
        limits: LogLimits,
    ) {
        let now = Instant::now();
        if self.log.is_empty() {
            logged.push_back((now, id.clone()));
        }
        // Room is made before the op goes in, so the ring never grows past `max_ops` (a
        // push into a full ring doubles its allocation).
        while self.log.len() >= limits.max_ops
            || self
                .log
                .front()
                .is_some_and(|e| now.duration_since(e.at) > limits.max_age)
        {
            self.log.pop_front();
        }
        self.log.push_back(OpEntry {
            record: OpRecord {
                version,
                prev_version: self.version,
                op,
            },
            at: now,
        });
        self.version = version;
    }

    fn apply(&mut self, op: &ReplicatedOp, owners: &mut Owners) {
        match op {
            ReplicatedOp::Put { publisher } => self.put(publisher.clone(), owners),
            ReplicatedOp::Remove { key } => self.take(key, owners),
        }
    }

    /// Adds or replaces a publisher, keeping the slot's owner counts.
    fn put(&mut self, publisher: Arc<Publisher>, owners: &mut Owners) {
        owners.add(&publisher);
        if let Some(old) = self.publishers.replace(ByKey(publisher)) {
            owners.sub(&old);
        }
    }

    /// Removes a publisher, keeping the slot's owner counts.
    fn take(&mut self, key: &PublisherKey, owners: &mut Owners) {
        if let Some(old) = self.publishers.take(key) {
            owners.sub(&old);
        }
    }
}

/// The [`Tally`] of the publishers each session server owns in one slot: lets the session
/// cleanup find departed owners (`sessions_in`, every few seconds) and their publishers
/// (`remove_session`, `session_digests`), and a session compare its copy of a slot
/// (`session_summaries`), without walking every publisher of every slot.
#[derive(Debug, Default)]
struct Owners(HashMap<MemberId, Tally>);

impl Owners {
    fn add(&mut self, p: &Publisher) {
        match self.0.get_mut(&p.session) {
            Some(t) => t.add(p),
            None => {
                let mut t = Tally::default();
                t.add(p);
                self.0.insert(p.session.clone(), t);
            }
        }
    }

    fn sub(&mut self, p: &Publisher) {
        if let Some(t) = self.0.get_mut(&p.session) {
            t.sub(p);
            if t.is_empty() {
                self.0.remove(&p.session);
            }
        }
    }

    fn owns(&self, session: &MemberId) -> bool {
        self.0.contains_key(session)
    }
}

/// Pause between two slots freed by [`free_elsewhere`].
const FREE_PACE: std::time::Duration = std::time::Duration::from_millis(5);

/// What the store hands back to be freed by [`free_elsewhere`], one slot's worth each.
pub trait Garbage: Send + 'static {
    /// Nothing to free: no pause after it.
    fn is_empty(&self) -> bool;
}

impl Garbage for Shard {
    fn is_empty(&self) -> bool {
        self.datums.is_empty()
    }
}

/// The operation logs of one slot's datums that stopped changing, taken by
/// [`Store::trim_logs`].
#[derive(Default)]
pub struct FreedLogs(Vec<VecDeque<OpEntry>>);

impl FreedLogs {
    /// Of how many datums.
    pub fn datums(&self) -> usize {
        self.0.len()
    }
}

impl Garbage for FreedLogs {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Frees what the store took out (the data of slots that moved away, the logs of datums that
/// stopped changing) on a blocking thread, away from the runtime that serves requests: each
/// is hundreds of thousands of allocations at once at a million publishers.
pub fn free_elsewhere<G: Garbage>(dropped: Vec<G>) {
    if dropped.iter().all(G::is_empty) {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        // One slot at a time, paced: the freeing thread shares the cores with the runtime.
        Ok(rt) => {
            rt.spawn_blocking(move || {
                for slot in dropped {
                    let freed = !slot.is_empty();
                    drop(slot);
                    if freed {
                        std::thread::sleep(FREE_PACE);
                    }
                }
            });
        }
        Err(_) => drop(dropped),
    }
}

/// The datums of one slot.
#[derive(Debug, Default)]
pub struct Shard {
    datums: HashMap<DataInfoId, DatumState>,
    /// Publishers per owning session across `datums`.
    owners: Owners,
    /// Datums whose log is not empty, oldest first, with the time of the op they were
    /// queued for: what [`Store::trim_logs`] looks at.
    logged: VecDeque<(Instant, DataInfoId)>,
}

/// A datum opened under its shard's lock (see [`Shard::open`]).
struct Opened<'a> {
    /// The shard's own copy of the id, which every publisher taken in points at.
    id: DataInfoId,
    state: &'a mut DatumState,
    owners: &'a mut Owners,
    logged: &'a mut VecDeque<(Instant, DataInfoId)>,
}

impl Shard {
    /// Opens the datum `id` for a change (made empty if absent), with the shard's own copy
    /// of its id and the shard's tallies and log queue the change updates.
    fn open(&mut self, id: &DataInfoId) -> Opened<'_> {
        let Shard {
            datums,
            owners,
            logged,
        } = self;
        let entry = datums.entry(id.clone());
        let id = entry.key().clone();
        Opened {
            id,
            state: entry.or_default(),
            owners,
            logged,
        }
    }
}

/// Points a publisher about to be held at the dataInfoId (`id`, the shard's copy) and session
/// id strings its shard already holds: every request decodes its own copies, and without this
/// each held publisher kept one of each.
fn share_strings(id: &DataInfoId, owners: &Owners, p: &mut Publisher) {
    if p.data_info_id == *id {
        p.data_info_id = id.clone();
    }
    if let Some((session, _)) = owners.0.get_key_value(&p.session) {
        p.session = session.clone();
    }
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

    /// Adds or replaces a publisher if it supersedes the one held, provided `guard` (run
    /// under the slot's lock) allows it.
    pub fn publish<E>(
        &self,
        mut publisher: Publisher,
        guard: impl FnOnce() -> Result<(), E>,
    ) -> Result<Applied, E> {
        let mut shard = self.shard(&publisher.data_info_id).lock();
        guard()?;
        let Opened {
            id,
            state,
            owners,
            logged,
        } = shard.open(&publisher.data_info_id);
        share_strings(&id, owners, &mut publisher);
        if let Some(old) = state.publishers.get(&publisher.key) {
            if !publisher.supersedes(old) {
                return Ok(Applied {
                    version: state.version,
                    changed: false,
                });
            }
        }
        let version = self.clock.next_after(state.version);
        let publisher = Arc::new(publisher);
        state.put(publisher.clone(), owners);
        state.append(
            (&id, logged),
            version,
            ReplicatedOp::Put { publisher },
            self.limits,
        );
        Ok(Applied {
            version,
            changed: true,
        })
    }

    /// Removes a publisher if it still belongs to `(session, conn_id)`, provided `guard`
    /// (run under the slot's lock) allows it.
    pub fn unpublish<E>(
        &self,
        id: &DataInfoId,
        key: &PublisherKey,
        session: &MemberId,
        conn_id: u64,
        guard: impl FnOnce() -> Result<(), E>,
    ) -> Result<Applied, E> {
        let mut shard = self.shard(id).lock();
        guard()?;
        let Shard {
            datums,
            owners,
            logged,
        } = &mut *shard;
        let Some(state) = datums.get_mut(id) else {
            return Ok(Applied {
                version: 0,
                changed: false,
            });
        };
        let owned = state
            .publishers
            .get(key)
            .is_some_and(|p| p.owned_by(session, conn_id));
        if !owned {
            return Ok(Applied {
                version: state.version,
                changed: false,
            });
        }
        state.take(key, owners);
        let version = self.clock.next_after(state.version);
        state.append(
            (id, logged),
            version,
            ReplicatedOp::Remove { key: key.clone() },
            self.limits,
        );
        Ok(Applied {
            version,
            changed: true,
        })
    }

    /// Removes every publisher owned by `session` in the slots `in_slot` accepts (checked
    /// under each slot's lock). Returns the changed dataInfoIds with their new versions.
    pub fn remove_session(
        &self,
        session: &MemberId,
        in_slot: impl Fn(SlotId) -> bool,
    ) -> Vec<(DataInfoId, u64)> {
        let mut changed = Vec::new();
        for (slot, shard) in self.slots.iter().enumerate() {
            let mut shard = shard.lock();
            if !shard.owners.owns(session) || !in_slot(slot as SlotId) {
                continue;
            }
            let Shard {
                datums,
                owners,
                logged,
            } = &mut *shard;
            for (id, state) in datums.iter_mut() {
                let keys: Vec<PublisherKey> = state
                    .publishers
                    .iter()
                    .filter(|p| &p.session == session)
                    .map(|p| p.key.clone())
                    .collect();
                if keys.is_empty() {
                    continue;
                }
                for key in keys {
                    state.take(&key, owners);
                    let version = self.clock.next_after(state.version);
                    state.append(
                        (id, logged),
                        version,
                        ReplicatedOp::Remove { key },
                        self.limits,
                    );
                }
                state.removed_at = Some(Instant::now());
                changed.push((id.clone(), state.version));
            }
        }
        changed
    }

    /// Makes every later version issued here greater than `floor` (a version a caller has
    /// seen), whatever this server's clock says.
    pub fn observe_floor(&self, floor: u64) {
        if registry_common::version::plausible_floor(floor) {
            self.clock.observe(floor);
        }
    }

    /// The datum of `id` (empty at version 0 if never published).
    pub fn datum(&self, id: &DataInfoId) -> Datum {
        let shard = self.shard(id).lock();
        match shard.datums.get(id) {
            Some(state) => state.to_datum(id),
            None => Datum::empty(id.clone(), 0),
        }
    }

    /// What subscribers of `id` receive (empty at version 0 if never published), if it has at
    /// most `max_publishers` publishers.
    pub fn push_datum(&self, id: &DataInfoId, max_publishers: usize) -> Option<PushDatum> {
        let shard = self.shard(id).lock();
        match shard.datums.get(id) {
            Some(state) if state.publishers.len() <= max_publishers => Some(PushDatum {
                data_info_id: id.clone(),
                version: state.version,
                publishers: state.publishers.len() as u32,
                data: state
                    .publishers
                    .iter()
                    .flat_map(|p| p.data.iter().cloned())
                    .collect(),
                server_removal: state.server_removal(),
            }),
            Some(_) => None,
            None => Some(PushDatum::empty(id.clone(), 0)),
        }
    }

    pub fn version(&self, id: &DataInfoId) -> u64 {
        self.shard(id)
            .lock()
            .datums
            .get(id)
            .map_or(0, |s| s.version)
    }

    /// The ops of `id` after `version`, oldest first: empty when the datum is at `version`,
    /// `None` when the log no longer reaches back to `version` (send the full datum).
    pub fn ops_since(&self, id: &DataInfoId, version: u64) -> Option<Vec<OpRecord>> {
        let shard = self.shard(id).lock();
        let Some(state) = shard.datums.get(id) else {
            return Some(Vec::new());
        };
        if state.version == version {
            return Some(Vec::new());
        }
        let start = state
            .log
            .iter()
            .position(|e| e.record.prev_version == version)?;
        Some(
            state
                .log
                .iter()
                .skip(start)
                .map(|e| e.record.clone())
                .collect(),
        )
    }

    /// Applies ops shipped by the primary, in version order and idempotently: an op at or
    /// below the held version is skipped; an op that does not follow the held version is a
    /// gap, reported as `need_full`. Runs `guard` under the slot's lock first.
    pub fn replay<E>(
        &self,
        id: &DataInfoId,
        ops: Vec<OpRecord>,
        guard: impl FnOnce() -> Result<(), E>,
    ) -> Result<Replayed, E> {
        let mut shard = self.shard(id).lock();
        guard()?;
        let Opened {
            id,
            state,
            owners,
            logged,
        } = shard.open(id);
        for mut record in ops {
            if record.version <= state.version {
                continue;
            }
            if record.prev_version != state.version {
                return Ok(Replayed {
                    version: state.version,
                    need_full: true,
                });
            }
            if let ReplicatedOp::Put { publisher } = &mut record.op {
                if let Some(p) = Arc::get_mut(publisher) {
                    share_strings(&id, owners, p);
                }
            }
            state.apply(&record.op, owners);
            self.clock.observe(record.version);
            state.append((&id, logged), record.version, record.op, self.limits);
        }
        Ok(Replayed {
            version: state.version,
            need_full: false,
        })
    }

    /// Installs a full copy of a datum if it is newer than the one held (or none is held).
    /// Runs `guard` under the slot's lock first. Returns the version held afterwards.
    pub fn install<E>(
        &self,
        datum: Datum,
        guard: impl FnOnce() -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut shard = self.shard(&datum.data_info_id).lock();
        guard()?;
        let Opened {
            id, state, owners, ..
        } = shard.open(&datum.data_info_id);
        if datum.version <= state.version && !(datum.version == 0 && state.publishers.is_empty()) {
            return Ok(state.version);
        }
        self.clock.observe(datum.version);
        for old in std::mem::take(&mut state.publishers) {
            owners.sub(&old);
        }
        for mut p in datum.publishers {
            share_strings(&id, owners, &mut p);
            state.put(Arc::new(p), owners);
        }
        state.version = datum.version;
        // The log no longer describes how this version was reached.
        state.log.clear();
        Ok(state.version)
    }

    /// Every datum of a slot, taken under the slot's lock after `guard` allows it.
    pub fn slot_datums<E>(
        &self,
        slot: SlotId,
        guard: impl FnOnce() -> Result<(), E>,
    ) -> Result<Vec<Datum>, E> {
        let Some(shard) = self.slots.get(slot as usize) else {
            return Ok(Vec::new());
        };
        let shard = shard.lock();
        guard()?;
        Ok(shard.datums.iter().map(|(id, s)| s.to_datum(id)).collect())
    }

    /// Forgets every datum of a slot, and hands them back: freeing a slot of a million-
    /// publisher cluster takes milliseconds, and dropping many at once on the runtime would
    /// hold every request behind it (see [`free_elsewhere`]).
    /// Frees the logs of the slot's datums that have not changed for the logs' `max_age`:
    /// those ops are past replaying (a replica that far behind gets a full copy), and
    /// `append` would drop them only at the datum's next change, which may never come.
    /// Looks only at the datums queued when their log last went from empty to not, so the
    /// work follows the changes, not the number of datums; one slot at a time, so that a
    /// caller can let other work run between slots (at a million publishers the logs of
    /// the register phase all come due together: about 50 ms of freeing in one go).
    /// Hands the logs back, for [`free_elsewhere`]: freeing them here, at a million
    /// publishers, put the data servers' freeing of the register phase's logs in the
    /// churn's tail.
    pub fn trim_logs(&self, slot: SlotId, now: Instant) -> FreedLogs {
        let mut freed = FreedLogs::default();
        let Some(shard) = self.slots.get(slot as usize) else {
            return freed;
        };
        let max_age = self.limits.max_age;
        let mut shard = shard.lock();
        let Shard { datums, logged, .. } = &mut *shard;
        while logged
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > max_age)
        {
            let Some((_, id)) = logged.pop_front() else {
                break;
            };
            let Some(state) = datums.get_mut(&id) else {
                continue;
            };
            match state.log.back() {
                // Changed since it was queued: look again when its newest op is old.
                Some(last) if now.duration_since(last.at) <= max_age => {
                    logged.push_back((last.at, id));
                }
                Some(_) => freed.0.push(std::mem::take(&mut state.log)),
                // Emptied by a full copy (and queued again by its next op).
                None => {}
            }
        }
        freed
    }

    pub fn drop_slot(&self, slot: SlotId) -> Shard {
        match self.slots.get(slot as usize) {
            Some(shard) => std::mem::take(&mut *shard.lock()),
            None => Shard::default(),
        }
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
            if !shard.owners.owns(session) {
                continue;
            }
            for state in shard.datums.values() {
                out.extend(
                    state
                        .publishers
                        .iter()
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

    /// The tally of what `session` owns in each slot `in_slot` accepts (empty where it owns
    /// nothing).
    pub fn session_summaries(
        &self,
        session: &MemberId,
        in_slot: impl Fn(SlotId) -> bool,
    ) -> Vec<(SlotId, Tally)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(slot, _)| in_slot(*slot as SlotId))
            .map(|(slot, shard)| {
                let tally = shard.lock().owners.0.get(session).copied();
                (slot as SlotId, tally.unwrap_or_default())
            })
            .collect()
    }

    /// The session servers that own publishers in the slots `in_slot` accepts.
    pub fn sessions_in(
        &self,
        in_slot: impl Fn(SlotId) -> bool,
    ) -> std::collections::HashSet<MemberId> {
        let mut out = std::collections::HashSet::new();
        for (slot, shard) in self.slots.iter().enumerate() {
            if !in_slot(slot as SlotId) {
                continue;
            }
            out.extend(shard.lock().owners.0.keys().cloned());
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    fn ok() -> Result<(), Infallible> {
        Ok(())
    }

    fn publisher(id: &DataInfoId, reg: &str, version: u64) -> Publisher {
        Publisher {
            data_info_id: id.clone(),
            key: PublisherKey {
                client_id: "c".into(),
                regist_id: reg.into(),
            },
            data: vec![format!("{reg}:{version}")],
            version,
            session: MemberId("s".into()),
            conn_id: 1,
            registered_at_ms: 1,
            zone: String::new(),
            app: String::new(),
        }
    }

    /// The owner tallies behind `sessions_in`, the cleanup's skipping of slots and
    /// `session_summaries` agree with the publishers actually held, whatever mix of writes, moves between sessions,
    /// removals, full installs and dropped slots came before.
    #[test]
    fn owner_tallies_follow_every_kind_of_change() {
        let store = Store::new(4, LogLimits::default());
        let ids: Vec<DataInfoId> = (0..6)
            .map(|i| DataInfoId::new(&format!("svc{i}"), None, None).unwrap())
            .collect();
        let sessions: Vec<MemberId> = (0..3).map(|i| MemberId(format!("s{i}").into())).collect();
        let mut seed: u64 = 7;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for round in 1..=3_000u64 {
            let id = &ids[next(6) as usize];
            let session = &sessions[next(3) as usize];
            let reg = format!("r{}", next(5));
            match next(10) {
                0..=4 => {
                    let mut p = publisher(id, &reg, round);
                    p.session = session.clone();
                    store.publish(p, ok).unwrap();
                }
                5 | 6 => {
                    let key = PublisherKey {
                        client_id: "c".into(),
                        regist_id: reg.as_str().into(),
                    };
                    let owner = store
                        .datum(id)
                        .publishers
                        .iter()
                        .find(|p| p.key == key)
                        .map(|p| p.session.clone());
                    if let Some(owner) = owner {
                        store.unpublish(id, &key, &owner, 1, ok).unwrap();
                    }
                }
                7 => {
                    store.remove_session(session, |_| true);
                }
                8 => {
                    let mut datum = store.datum(id);
                    datum.version = store.version(id) + 1;
                    for p in datum.publishers.iter_mut().step_by(2) {
                        p.session = session.clone();
                    }
                    store.install(datum, ok).unwrap();
                }
                _ => drop(store.drop_slot(store.slot_of(id))),
            }
            let held: std::collections::HashSet<MemberId> = (0..store.slot_count())
                .flat_map(|slot| store.slot_datums(slot, ok).unwrap())
                .flat_map(|d| d.publishers.into_iter().map(|p| p.session))
                .collect();
            assert_eq!(store.sessions_in(|_| true), held, "after change {round}");
            for session in &sessions {
                let mut want = vec![Tally::default(); store.slot_count() as usize];
                for slot in 0..store.slot_count() {
                    for d in store.slot_datums(slot, ok).unwrap() {
                        for p in d.publishers.iter().filter(|p| &p.session == session) {
                            want[slot as usize].add(p);
                        }
                    }
                }
                let got: Vec<Tally> = store
                    .session_summaries(session, |_| true)
                    .into_iter()
                    .map(|(_, t)| t)
                    .collect();
                assert_eq!(got, want, "tallies of {session:?} after change {round}");
            }
        }
    }

    #[test]
    fn replica_replays_in_order_and_detects_gaps() {
        let id = DataInfoId::new("svc", None, None).unwrap();
        let primary = Store::new(8, LogLimits::default());
        let replica = Store::new(8, LogLimits::default());
        for n in 1..=3 {
            primary.publish(publisher(&id, "a", n), ok).unwrap();
        }
        let ops = primary.ops_since(&id, 0).unwrap();
        assert_eq!(ops.len(), 3);
        // Apply the middle op first: a gap.
        let r = replica.replay(&id, ops[1..2].to_vec(), ok).unwrap();
        assert!(r.need_full);
        let r = replica.replay(&id, ops.clone(), ok).unwrap();
        assert!(!r.need_full);
        assert_eq!(r.version, primary.version(&id));
        // Idempotent.
        let r = replica.replay(&id, ops.clone(), ok).unwrap();
        assert_eq!(r.version, primary.version(&id));
        assert_eq!(replica.datum(&id), primary.datum(&id));
        // From the replica's version on, nothing more to ship.
        assert_eq!(primary.ops_since(&id, r.version).unwrap().len(), 0);
    }

    #[test]
    fn truncated_log_asks_for_a_full_copy_and_install_keeps_the_newest() {
        let id = DataInfoId::new("svc", None, None).unwrap();
        let limits = LogLimits {
            max_ops: 2,
            max_age: Duration::from_secs(60),
        };
        let primary = Store::new(8, limits);
        for n in 1..=5 {
            primary.publish(publisher(&id, "a", n), ok).unwrap();
        }
        assert!(primary.ops_since(&id, 0).is_none());
        let replica = Store::new(8, limits);
        let full = primary.datum(&id);
        let v = replica.install(full.clone(), ok).unwrap();
        assert_eq!(v, full.version);
        // An older copy does not overwrite.
        let mut older = full.clone();
        older.version -= 1;
        older.publishers.clear();
        assert_eq!(replica.install(older, ok).unwrap(), full.version);
        assert_eq!(replica.datum(&id), full);
        // New versions issued after installing are above it.
        let a = replica.publish(publisher(&id, "b", 1), ok).unwrap();
        assert!(a.version > full.version);
    }

    /// The log of a datum stays within `max_ops` entries of allocation while it changes,
    /// and is freed once the datum has been quiet for `max_age`; a replica that far behind
    /// is then sent the full datum, and new ops start a log again.
    #[test]
    fn logs_stay_in_their_ring_and_are_freed_when_the_datum_stops_changing() {
        let quiet = DataInfoId::new("svc.quiet", None, None).unwrap();
        let busy = DataInfoId::new("svc.busy", None, None).unwrap();
        let max_age = Duration::from_secs(10);
        let store = Store::new(
            8,
            LogLimits {
                max_ops: 4,
                max_age,
            },
        );
        let trim = |now| {
            (0..store.slot_count())
                .map(|slot| store.trim_logs(slot, now).datums())
                .sum::<usize>()
        };
        for n in 1..=20 {
            store.publish(publisher(&quiet, "a", n), ok).unwrap();
        }
        let log_of = |id: &DataInfoId| {
            let shard = store.shard(id).lock();
            let log = &shard.datums[id].log;
            (log.capacity(), log.back().map(|e| e.at))
        };
        assert!(log_of(&quiet).0 <= 4, "ring grew to {}", log_of(&quiet).0);
        let quiet_version = store.version(&quiet);

        // `busy` is queued at its first op and changes again a little later.
        store.publish(publisher(&busy, "b", 1), ok).unwrap();
        let queued = log_of(&busy).1.unwrap();
        while Instant::now() < queued + Duration::from_millis(2) {
            std::hint::spin_loop();
        }
        store.publish(publisher(&busy, "b", 2), ok).unwrap();
        let last = log_of(&busy).1.unwrap();
        assert_eq!(trim(Instant::now()), 0, "nothing is old yet");

        // Past `max_age` after `busy` was queued but not after its last op: only `quiet`
        // is freed; `busy` is looked at again later.
        let between = queued + max_age + (last - queued) / 2;
        assert_eq!(trim(between), 1);
        assert_eq!(log_of(&quiet).0, 0);
        assert_eq!(
            store.ops_since(&quiet, quiet_version - 1),
            None,
            "full copy instead"
        );
        assert_eq!(store.ops_since(&quiet, quiet_version), Some(Vec::new()));
        assert_eq!(store.ops_since(&busy, 0).map(|ops| ops.len()), Some(2));
        assert_eq!(trim(last + max_age + Duration::from_millis(1)), 1);
        assert_eq!(store.ops_since(&busy, 0), None);

        // A new op on the quiet datum logs (and queues) it again.
        store.publish(publisher(&quiet, "a", 21), ok).unwrap();
        assert_eq!(
            store.ops_since(&quiet, quiet_version).map(|ops| ops.len()),
            Some(1)
        );
        assert_eq!(trim(Instant::now() + max_age * 2), 1);
    }

    /// Publishers decoded from separate requests hold one copy of their dataInfoId and of
    /// their session id once stored, whichever way they arrived.
    #[test]
    fn held_publishers_share_their_id_and_session_strings() {
        let id = DataInfoId::new("svc", None, None).unwrap();
        // Each publisher built from fresh strings, as each decoded request is.
        let fresh = |reg: &str, version: u64| {
            let mut p = publisher(&DataInfoId::parse(id.as_str()).unwrap(), reg, version);
            p.session = MemberId(String::from("s").into());
            p
        };
        let shared = |d: &Datum| {
            let first = &d.publishers[0];
            d.publishers.iter().all(|p| {
                p.data_info_id.as_str().as_ptr() == first.data_info_id.as_str().as_ptr()
                    && Arc::ptr_eq(&p.session.0, &first.session.0)
            })
        };
        let primary = Store::new(8, LogLimits::default());
        for (n, reg) in ["a", "b", "c"].into_iter().enumerate() {
            primary.publish(fresh(reg, n as u64 + 1), ok).unwrap();
        }
        let d = primary.datum(&id);
        assert_eq!(d.publishers.len(), 3);
        assert!(shared(&d), "published");

        let replica = Store::new(8, LogLimits::default());
        let mut ops = primary.ops_since(&id, 0).unwrap();
        for record in &mut ops {
            if let ReplicatedOp::Put { publisher } = &mut record.op {
                *publisher = Arc::new(fresh(&publisher.key.regist_id, publisher.version));
            }
        }
        replica.replay(&id, ops, ok).unwrap();
        assert!(shared(&replica.datum(&id)), "replayed");

        let installed = Store::new(8, LogLimits::default());
        let mut full = primary.datum(&id);
        full.publishers = (0..3).map(|n| fresh(&format!("r{n}"), 1)).collect();
        installed.install(full, ok).unwrap();
        assert!(shared(&installed.datum(&id)), "installed");
    }

    #[test]
    fn a_server_removal_marks_the_datum_until_its_window_ends() {
        let id = DataInfoId::new("svc", None, None).unwrap();
        let store = Store::new(8, LogLimits::default());
        let mut gone = publisher(&id, "a", 1);
        gone.session = MemberId("dead".into());
        store.publish(gone, ok).unwrap();
        store.publish(publisher(&id, "b", 1), ok).unwrap();
        assert!(!store.datum(&id).server_removal);
        let changed = store.remove_session(&MemberId("dead".into()), |_| true);
        assert_eq!(changed.len(), 1);
        assert!(store.datum(&id).server_removal);
        // A client coming back (or any other change) within the window keeps the mark: the
        // datum may still lack publishers whose clients are on their way.
        store.publish(publisher(&id, "c", 1), ok).unwrap();
        let d = store.datum(&id);
        assert!(d.server_removal && d.publishers.len() == 2);
        assert!(store.push_datum(&id, 64).unwrap().server_removal);
    }

    #[test]
    fn versions_stay_above_a_floor_callers_have_seen() {
        let id = DataInfoId::new("svc", None, None).unwrap();
        let store = Store::new(8, LogLimits::default());
        // A version from a server whose clock is a minute ahead of ours.
        let ahead =
            (registry_common::time::now_ms() + 60_000) << registry_common::version::SEQ_BITS;
        store.observe_floor(ahead);
        let a = store.publish(publisher(&id, "a", 1), ok).unwrap();
        assert!(a.version > ahead);
        // No floor absurdly far ahead is taken (a client's knownVersion is not trusted).
        let store = Store::new(8, LogLimits::default());
        store.observe_floor(u64::MAX - 1);
        let a = store.publish(publisher(&id, "a", 1), ok).unwrap();
        assert!(a.version < u64::MAX / 2);
    }

    #[test]
    fn guard_refusal_changes_nothing() {
        let id = DataInfoId::new("svc", None, None).unwrap();
        let store = Store::new(8, LogLimits::default());
        let r = store.publish(publisher(&id, "a", 1), || Err("not owner"));
        assert_eq!(r, Err("not owner"));
        assert_eq!(store.version(&id), 0);
    }
}
