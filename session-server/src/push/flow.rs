//! Per-subscription flow control, and the table that holds every subscription.
//!
//! Each subscription has at most one unacknowledged push (`inflight`). A newer datum arriving
//! meanwhile waits as its `pending` datum, superseding any older pending one: merging is
//! adaptive, with no fixed delay when idle and at most one client round trip of delay when
//! busy. A subscription never receives a version at or below one it already has. A pending
//! datum waits at most the maximum merge window behind the unacknowledged push.
//!
//! The table is sharded by dataInfoId, so that pushes, acks and subscriptions of different
//! services never wait on one lock, and nothing walks every subscription on a hot path. The
//! subscriptions of one dataInfoId ([`Subs`]) are a vector sized to fit while they are few,
//! a hash map once they are many.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};
use registry_common::id::DataInfoId;

use super::frame::{Prepared, QueuedPush};
use super::sweeper::Check;
use super::{Outgoing, Pusher};
use crate::registry::{Conn, ConnId};

/// A push sent and not yet acknowledged.
pub(super) struct Inflight {
    pub push_id: u64,
    pub prepared: Arc<Prepared>,
    pub sent_at: Instant,
    /// When the wait for its ack began: the send, or the last resend held back because the
    /// client had not reached the push yet (see `sweeper`).
    pub waiting_since: Instant,
    /// Times this push has been sent, and resends held back.
    pub attempts: u32,
}

/// One subscription's push state.
pub(super) struct Sub {
    pub conn: Arc<Conn>,
    /// Highest version the client is known to hold (acknowledged, or told at subscribe).
    pub acked: Option<u64>,
    pub inflight: Option<Inflight>,
    /// Newest datum waiting for the in-flight push to be acknowledged.
    pub pending: Option<Arc<Prepared>>,
}

impl Sub {
    pub fn new(conn: Arc<Conn>, known_version: u64) -> Self {
        Self {
            conn,
            acked: (known_version > 0).then_some(known_version),
            inflight: None,
            pending: None,
        }
    }

    /// Highest version sent, queued or held.
    fn high(&self) -> Option<u64> {
        let a = self.acked;
        let i = self.inflight.as_ref().map(|f| f.prepared.version());
        let p = self.pending.as_ref().map(|p| p.version());
        a.max(i).max(p)
    }
}

/// A subscription's key: its connection and registId.
pub(super) type SubKey = (ConnId, Arc<str>);

/// One dataInfoId on this session: its subscriptions, and the newest datum learnt for them.
/// The entry lives exactly as long as the id has subscriptions here, so the datum cache needs
/// no bookkeeping of its own: a change, an ack and a subscription find the id's datum with
/// the same lookup that finds its subscriptions, under the same lock.
#[derive(Default)]
pub(super) struct IdEntry {
    pub subs: Subs,
    /// The newest datum of the id: offered at once to a new subscription, and compared with
    /// change notifications and pulled versions. `None` until the first one arrives, or
    /// when the session holds as many datums as it may keep (see `Pusher::keep`).
    pub cached: Option<Arc<Prepared>>,
}

/// The dataInfoIds of one shard.
pub(super) type SubMap = HashMap<DataInfoId, IdEntry>;

/// Up to this many subscriptions of one dataInfoId are kept in a vector.
const FEW: usize = 8;

/// The subscriptions of one dataInfoId on this session.
///
/// Most services have a few subscribers on a session (one or two at SOFARegistry's scale), and
/// a hash map is a poor home for so few: a map of one subscription allocates room for four,
/// plus its control bytes, about 450 bytes; a vector sized to fit holds it in 96. Up to
/// [`FEW`] keys are searched one by one, most told apart by their connection id. Past that
/// the subscriptions move to a hash map, so that an ack among thousands of subscribers of one
/// service stays a single lookup; they stay there until the last one leaves.
pub(super) enum Subs {
    Few(Vec<(SubKey, Sub)>),
    Many(HashMap<SubKey, Sub>),
}

impl Default for Subs {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl Subs {
    /// Adds or replaces the subscription under `key`; the one replaced, if any.
    pub fn insert(&mut self, key: SubKey, sub: Sub) -> Option<Sub> {
        let few = match self {
            Self::Many(map) => return map.insert(key, sub),
            Self::Few(few) => few,
        };
        if let Some((_, held)) = few.iter_mut().find(|(k, _)| *k == key) {
            return Some(std::mem::replace(held, sub));
        }
        if few.len() < FEW {
            // One more slot, not the vector's usual doubling: most never grow again.
            few.reserve_exact(1);
            few.push((key, sub));
        } else {
            let mut map: HashMap<SubKey, Sub> = few.drain(..).collect();
            map.insert(key, sub);
            *self = Self::Many(map);
        }
        None
    }

    pub fn get_mut(&mut self, key: &SubKey) -> Option<&mut Sub> {
        match self {
            Self::Few(few) => few.iter_mut().find(|(k, _)| k == key).map(|(_, s)| s),
            Self::Many(map) => map.get_mut(key),
        }
    }

    /// Removes the subscription under `key`; the one removed, if any.
    pub fn remove(&mut self, key: &SubKey) -> Option<Sub> {
        match self {
            Self::Few(few) => {
                let at = few.iter().position(|(k, _)| k == key)?;
                Some(few.swap_remove(at).1)
            }
            Self::Many(map) => map.remove(key),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Self::Few(few) => few.is_empty(),
            Self::Many(map) => map.is_empty(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SubKey, &Sub)> {
        let (few, many) = match self {
            Self::Few(few) => (Some(few.iter().map(|(k, s)| (k, s))), None),
            Self::Many(map) => (None, Some(map.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&SubKey, &mut Sub)> {
        let (few, many) = match self {
            Self::Few(few) => (Some(few.iter_mut().map(|(k, s)| (&*k, s))), None),
            Self::Many(map) => (None, Some(map.iter_mut())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}

/// Shards of the subscription table: enough that two busy services rarely share one on a
/// session with a few cores.
const SHARDS: usize = 64;

/// dataInfoId -> subscriptions on this session, in shards.
pub(super) struct SubTable {
    shards: Box<[Mutex<SubMap>]>,
    hasher: RandomState,
}

impl SubTable {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The locked shard holding `id`'s subscriptions.
    pub fn shard(&self, id: &DataInfoId) -> MutexGuard<'_, SubMap> {
        let i = self.hasher.hash_one(id) as usize % self.shards.len();
        self.shards[i].lock()
    }

    /// Every shard, one at a time (for the rare walks over all subscriptions).
    pub fn shards(&self) -> impl Iterator<Item = &Mutex<SubMap>> {
        self.shards.iter()
    }
}

impl Pusher {
    /// Decides what to do with a datum for one subscription: push now, keep as pending (a
    /// push is in flight, or pushes are off), or skip. A pending datum that would wait behind
    /// a push older than the merge window goes out at once instead.
    pub(super) fn offer(
        &self,
        sub: &mut Sub,
        regist_id: &Arc<str>,
        prepared: &Arc<Prepared>,
        enabled: bool,
    ) -> Option<Outgoing> {
        if sub.high().is_some_and(|h| h >= prepared.version()) {
            return None;
        }
        let overdue = sub
            .inflight
            .as_ref()
            .is_some_and(|f| f.sent_at.elapsed() >= self.config.max_merge_window);
        if (sub.inflight.is_some() && !overdue) || !enabled {
            if sub.pending.replace(prepared.clone()).is_some() {
                self.metrics.pushes_merged.inc();
            }
            return None;
        }
        if sub.pending.take().is_some() {
            self.metrics.pushes_merged.inc();
        }
        Some(self.send_push(sub, regist_id, prepared.clone(), 1))
    }

    /// Makes `prepared` the subscription's in-flight push, queues it for its connection (the
    /// frame's text is made as it is written) and arranges for the push to be looked at again
    /// if it is not acknowledged in time.
    pub(super) fn send_push(
        &self,
        sub: &mut Sub,
        regist_id: &Arc<str>,
        prepared: Arc<Prepared>,
        attempts: u32,
    ) -> Outgoing {
        let push_id = sub.conn.next_push_id();
        let version = prepared.version();
        {
            let mut acks = sub.conn.acks.lock();
            acks.expect(
                push_id,
                prepared.datum.data_info_id.clone(),
                regist_id.clone(),
            );
            if let Some(old) = sub.inflight.take() {
                acks.forget(old.push_id);
            }
        }
        let sent_at = Instant::now();
        sub.inflight = Some(Inflight {
            push_id,
            prepared: prepared.clone(),
            sent_at,
            waiting_since: sent_at,
            attempts,
        });
        self.deadlines.push(Check {
            at: sent_at + self.first_look(attempts),
            conn: sub.conn.clone(),
            push_id,
        });
        let kind = if attempts > 1 { "retry" } else { "first" };
        self.metrics.pushes.with_label_values(&[kind]).inc();
        if attempts == 1 {
            let accepted_ms = registry_common::version::version_ms(version);
            let delay_ms = registry_common::time::now_ms().saturating_sub(accepted_ms);
            self.metrics.push_delay.observe(delay_ms as f64 / 1000.0);
        }
        Outgoing {
            conn: sub.conn.clone(),
            push: QueuedPush {
                prepared,
                push_id,
                regist_id: regist_id.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SessionConfig;
    use crate::limits::ConnLimits;
    use crate::metrics::SessionMetrics;
    use crate::registry::Registry;
    use registry_common::member::MemberId;

    /// The keys held, sorted.
    fn keys(subs: &Subs) -> Vec<SubKey> {
        let mut keys: Vec<SubKey> = subs.iter().map(|(k, _)| k.clone()).collect();
        keys.sort();
        keys
    }

    #[test]
    fn a_few_subscriptions_stay_in_a_vector_and_many_move_to_a_map() {
        let config = SessionConfig::default();
        let registry = Registry::new(
            MemberId("session".into()),
            SessionMetrics::new(),
            16,
            ConnLimits::from_config(&config),
        );
        let (conn, _rx) = registry.open("127.0.0.1:1".parse().expect("an address"));
        let key = |i: usize| -> SubKey { (conn.id, Arc::from(format!("sub-{i}"))) };
        let mut subs = Subs::default();
        assert!(subs.is_empty());

        for i in 0..FEW {
            assert!(subs.insert(key(i), Sub::new(conn.clone(), 0)).is_none());
        }
        let Subs::Few(few) = &subs else {
            panic!("{FEW} subscriptions are few");
        };
        assert_eq!(few.capacity(), FEW, "the vector grows one slot at a time");
        // Replacing one keeps it where it is and hands back the old one.
        let old = subs.insert(key(3), Sub::new(conn.clone(), 7));
        assert_eq!(old.map(|s| s.acked), Some(None));
        assert_eq!(subs.get_mut(&key(3)).map(|s| s.acked), Some(Some(7)));
        assert!(matches!(subs, Subs::Few(_)));

        // One more moves them all to a map, each found as before.
        assert!(subs.insert(key(FEW), Sub::new(conn.clone(), 0)).is_none());
        assert!(matches!(subs, Subs::Many(_)));
        let all: Vec<SubKey> = {
            let mut all: Vec<SubKey> = (0..=FEW).map(key).collect();
            all.sort();
            all
        };
        assert_eq!(keys(&subs), all);
        assert_eq!(subs.get_mut(&key(3)).map(|s| s.acked), Some(Some(7)));
        for (_, sub) in subs.iter_mut() {
            sub.acked = Some(9);
        }
        assert!(subs.iter().all(|(_, s)| s.acked == Some(9)));

        // Removal from either form; a key never held removes nothing.
        assert!(subs.remove(&key(FEW + 1)).is_none());
        for i in 0..=FEW {
            assert!(subs.remove(&key(i)).is_some(), "sub-{i}");
        }
        assert!(subs.is_empty());
        let mut few = Subs::default();
        few.insert(key(1), Sub::new(conn.clone(), 0));
        few.insert(key(2), Sub::new(conn.clone(), 0));
        assert!(few.remove(&key(1)).is_some());
        assert!(few.remove(&key(1)).is_none());
        assert_eq!(keys(&few), vec![key(2)]);
        assert!(few.get_mut(&key(1)).is_none());
    }
}
