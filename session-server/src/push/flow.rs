//! Per-subscription flow control, and the table that holds every subscription.
//!
//! Each subscription has at most one unacknowledged push (`inflight`). A newer datum arriving
//! meanwhile waits as its `pending` datum, superseding any older pending one: merging is
//! adaptive, with no fixed delay when idle and at most one client round trip of delay when
//! busy. A subscription never receives a version at or below one it already has. A pending
//! datum waits at most the maximum merge window behind the unacknowledged push.
//!
//! The table is sharded by dataInfoId, so that pushes, acks and subscriptions of different
//! services never wait on one lock, and nothing walks every subscription on a hot path.

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
    /// Times this push has been sent.
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

/// The subscriptions of the dataInfoIds of one shard.
pub(super) type SubMap = HashMap<DataInfoId, HashMap<SubKey, Sub>>;

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
        sub.conn.acks.lock().insert(
            push_id,
            (prepared.datum.data_info_id.clone(), regist_id.clone()),
        );
        if let Some(old) = sub.inflight.take() {
            sub.conn.acks.lock().remove(&old.push_id);
        }
        let sent_at = Instant::now();
        sub.inflight = Some(Inflight {
            push_id,
            prepared: prepared.clone(),
            sent_at,
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
