//! Connections and the authoritative copy of their clients' publishers.
//!
//! Each WebSocket gets its own connection id, assigned here: no two clients share one, so
//! closing one connection removes that connection's publishers and nobody else's. A publisher
//! is keyed by `(clientId, registId)`; when a client re-registers on a new connection (after a
//! reconnect) the entry moves to the new connection, and the old connection's close no longer
//! removes it. Registration results are the write ops to forward to the data tier.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use registry_common::id::DataInfoId;
use registry_common::member::MemberId;
use registry_common::model::{validate_registration, ByKey, Publisher, PublisherKey, Tally};
use registry_common::proto::data::WriteOp;
use registry_common::slot::{slot_of, SlotId};
use registry_common::time::now_ms;
use tokio::sync::mpsc;

use crate::error::SessionError;
use crate::limits::{ConnLimits, RegistrationBudget};
use crate::metrics::SessionMetrics;
use crate::outbox::{Frame, Outbox};
use crate::push::PushAcks;

pub type ConnId = u64;

/// What the client said in `hello`, and who it proved to be.
#[derive(Debug, Clone)]
pub struct Hello {
    /// The protocol version this connection speaks (see `proto::client::negotiate`).
    pub protocol: u32,
    /// The client's identity as the registry keys its publishers: with auth on,
    /// `{principal}:{clientId}`, so no principal can name another's publishers.
    pub client_id: String,
    pub zone: String,
    pub app: String,
    /// The access key that signed the `hello` (auth on only).
    pub key_id: Option<String>,
    /// What the key's principal could do at `hello` (auth on only); registrations are
    /// checked against the grants the ACL holds now.
    pub grants: Option<Arc<registry_common::acl::Grants>>,
}

/// One client connection.
pub struct Conn {
    pub id: ConnId,
    /// Peer address, for logs and the blacklist.
    pub remote: SocketAddr,
    /// Set once by `hello`.
    pub hello: OnceLock<Hello>,
    pub outbox: Outbox,
    /// registId -> dataInfoId of the publishers registered on this connection.
    pub publishers: Mutex<HashMap<String, DataInfoId>>,
    /// registId -> dataInfoId of the subscriptions made on this connection.
    pub subscribers: Mutex<HashMap<String, DataInfoId>>,
    /// The pushes awaiting an ack, and how far the client has read.
    pub acks: Mutex<PushAcks>,
    next_push_id: AtomicU64,
    /// How fast this connection may still register.
    pub budget: RegistrationBudget,
    /// Set when the client was told `go_away`, or closed with `CLOSE_MOVING`: its publishers
    /// are handed over, not removed, when the connection closes.
    pub sent_away: AtomicBool,
}

impl Conn {
    pub fn next_push_id(&self) -> u64 {
        self.next_push_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn client_id(&self) -> Option<&str> {
        self.hello.get().map(|h| h.client_id.as_str())
    }
}

/// The publishing side of a request to register.
pub struct Registration<'a> {
    pub regist_id: &'a str,
    pub data_info_id: DataInfoId,
    pub data: Vec<String>,
    pub version: u64,
}

pub struct Registry {
    /// This session server's member id, stamped on every publisher.
    session: MemberId,
    conns: Mutex<HashMap<ConnId, Arc<Conn>>>,
    next_conn: AtomicU64,
    /// The authoritative publishers of this session's clients.
    publishers: Mutex<Held>,
    metrics: SessionMetrics,
    /// Capacity of each connection's outbox.
    outbox_frames: usize,
    /// What one connection may hold and how fast it may register.
    pub limits: ConnLimits,
}

impl Registry {
    pub fn new(
        session: MemberId,
        metrics: SessionMetrics,
        outbox_frames: usize,
        limits: ConnLimits,
    ) -> Self {
        Self {
            session,
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            publishers: Mutex::new(Held::default()),
            metrics,
            outbox_frames,
            limits,
        }
    }

    pub fn session(&self) -> &MemberId {
        &self.session
    }

    /// Opens a connection; the receiver feeds its writer task.
    pub fn open(&self, remote: SocketAddr) -> (Arc<Conn>, mpsc::Receiver<Frame>) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let (outbox, rx) = Outbox::new(self.outbox_frames, self.metrics.outbox_frames.clone());
        let conn = Arc::new(Conn {
            id,
            remote,
            hello: OnceLock::new(),
            outbox,
            publishers: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(HashMap::new()),
            acks: Mutex::new(PushAcks::default()),
            next_push_id: AtomicU64::new(0),
            budget: self.limits.budget(),
            sent_away: AtomicBool::new(false),
        });
        self.conns.lock().insert(id, conn.clone());
        self.metrics.connections.inc();
        (conn, rx)
    }

    pub fn conn(&self, id: ConnId) -> Option<Arc<Conn>> {
        self.conns.lock().get(&id).cloned()
    }

    pub fn conns(&self) -> Vec<Arc<Conn>> {
        self.conns.lock().values().cloned().collect()
    }

    /// Registers or re-registers a publisher. Returns the ops to forward: none when the
    /// registration changes nothing (an exact duplicate, or older than the one held).
    pub fn register_publisher(
        &self,
        conn: &Conn,
        reg: Registration<'_>,
    ) -> Result<Vec<WriteOp>, SessionError> {
        let hello = conn.hello.get().ok_or(SessionError::NoHello)?;
        validate_registration(&hello.client_id, reg.regist_id, &reg.data)?;
        {
            let held = conn.publishers.lock();
            if !held.contains_key(reg.regist_id) {
                self.limits.check_publishers(held.len())?;
            }
        }
        let key = PublisherKey {
            client_id: hello.client_id.clone(),
            regist_id: reg.regist_id.to_owned(),
        };
        let mut ops = Vec::new();
        let mut publishers = self.publishers.lock();
        if let Some(cur) = publishers.get(&key) {
            let same_conn = cur.owned_by(&self.session, conn.id);
            // A republish moves the version forward. A lower version has been superseded by
            // a newer registration of the same publisher (an SDK's concurrent republishes
            // may reach the connection out of order): acknowledged, no effect, as the newer
            // one stands. The same version with other data would be acknowledged and then
            // lost at the data tier, which keeps one registration per version: refused.
            if reg.version < cur.version && cur.data_info_id == reg.data_info_id {
                return Ok(ops);
            }
            let same_content = cur.data == reg.data && cur.data_info_id == reg.data_info_id;
            if reg.version == cur.version && !same_content {
                return Err(SessionError::StaleVersion {
                    regist_id: reg.regist_id.to_owned(),
                    held: cur.version,
                    why: "other data at the same version needs a higher version",
                });
            }
            if same_conn && reg.version == cur.version {
                // An exact duplicate on the same connection: nothing changes.
                return Ok(ops);
            }
            if cur.data_info_id != reg.data_info_id {
                // The registration moved to another service: withdraw the old one.
                ops.push(unpublish_op(cur));
            }
        }
        let publisher = Arc::new(Publisher {
            data_info_id: reg.data_info_id.clone(),
            key: key.clone(),
            data: reg.data,
            version: reg.version,
            session: self.session.clone(),
            conn_id: conn.id,
            registered_at_ms: now_ms(),
            zone: hello.zone.clone(),
            app: hello.app.clone(),
        });
        if publishers.insert(publisher.clone()).is_none() {
            self.metrics.publishers.inc();
        }
        drop(publishers);
        conn.publishers
            .lock()
            .insert(reg.regist_id.to_owned(), reg.data_info_id);
        ops.push(WriteOp::Publish { publisher });
        Ok(ops)
    }

    /// Unregisters a publisher of this connection. Returns the op to forward.
    pub fn unregister_publisher(
        &self,
        conn: &Conn,
        regist_id: &str,
    ) -> Result<Option<WriteOp>, SessionError> {
        let client_id = conn.client_id().ok_or(SessionError::NoHello)?;
        if conn.publishers.lock().remove(regist_id).is_none() {
            return Err(SessionError::Unknown {
                what: "publisher",
                regist_id: regist_id.chars().take(64).collect(),
            });
        }
        let key = PublisherKey {
            client_id: client_id.to_owned(),
            regist_id: regist_id.to_owned(),
        };
        Ok(self.remove_if_owned(&key, conn.id))
    }

    fn remove_if_owned(&self, key: &PublisherKey, conn_id: ConnId) -> Option<WriteOp> {
        let mut publishers = self.publishers.lock();
        let owned = publishers
            .get(key)
            .is_some_and(|p| p.owned_by(&self.session, conn_id));
        if !owned {
            return None;
        }
        let p = publishers.remove(key)?;
        self.metrics.publishers.dec();
        Some(unpublish_op(&p))
    }

    /// Withdraws `refused` (a registration the data tier refused for good) if it is still the
    /// one held: the session's copy must not promise what the data tier will never hold, and
    /// repair would only send it again. Returns, when it was withdrawn, the op that removes
    /// an earlier version of it from the data tier and the connection to tell, if still open.
    pub fn withdraw_refused(&self, refused: &Publisher) -> Option<(WriteOp, Option<Arc<Conn>>)> {
        let removed = {
            let mut publishers = self.publishers.lock();
            let held = publishers.get(&refused.key).is_some_and(|p| {
                p.version == refused.version && p.owned_by(&self.session, refused.conn_id)
            });
            if !held {
                return None;
            }
            self.metrics.publishers.dec();
            publishers.remove(&refused.key)?
        };
        let conn = self.conn(refused.conn_id);
        if let Some(conn) = &conn {
            conn.publishers.lock().remove(&refused.key.regist_id);
        }
        Some((unpublish_op(&removed), conn))
    }

    /// Forgets a closed connection. Returns the unpublish ops of its publishers.
    pub fn close(&self, conn: &Conn) -> Vec<WriteOp> {
        if self.conns.lock().remove(&conn.id).is_none() {
            return Vec::new();
        }
        self.metrics.connections.dec();
        let Some(client_id) = conn.client_id() else {
            return Vec::new();
        };
        let regs: Vec<String> = conn.publishers.lock().drain().map(|(r, _)| r).collect();
        regs.into_iter()
            .filter_map(|regist_id| {
                let key = PublisherKey {
                    client_id: client_id.to_owned(),
                    regist_id,
                };
                self.remove_if_owned(&key, conn.id)
            })
            .collect()
    }

    /// Every publisher this session holds.
    pub fn publishers(&self) -> Vec<Arc<Publisher>> {
        self.publishers.lock().all().cloned().collect()
    }

    /// The publishers this session holds in the slots `in_slot` accepts, of `slot_count`.
    pub fn publishers_in(
        &self,
        slot_count: u32,
        in_slot: impl Fn(SlotId) -> bool,
    ) -> Vec<Arc<Publisher>> {
        let mut held = self.publishers.lock();
        held.count_slots(slot_count);
        held.slots
            .iter()
            .enumerate()
            .filter(|(s, _)| in_slot(*s as SlotId))
            .flat_map(|(_, slot)| slot.publishers.iter().map(|p| p.0.clone()))
            .collect()
    }

    /// Keeps the publishers sorted into `slot_count` slots from now on (the cluster's count,
    /// fixed for its life). Called once the session has joined and before it serves any
    /// client, so that no registration waits behind a sort of every publisher held: left to
    /// the first repair pass, at half a million publishers per session, that sort held the
    /// publishers' lock, and with it every registration and republish, for about 0.7 s.
    pub fn sort_into_slots(&self, slot_count: u32) {
        // A view without a slot table says nothing about the count: the first pass sorts.
        if slot_count > 0 {
            self.publishers.lock().count_slots(slot_count);
        }
    }

    /// The tally of the publishers this session holds in each of `slot_count` slots.
    pub fn tallies(&self, slot_count: u32) -> Vec<Tally> {
        let mut held = self.publishers.lock();
        held.count_slots(slot_count);
        held.slots.iter().map(|s| s.tally).collect()
    }

    /// The publisher held under `key`, if any.
    pub fn publisher(&self, key: &PublisherKey) -> Option<Arc<Publisher>> {
        self.publishers.lock().get(key).cloned()
    }
}

/// The session's publishers, with their [`Tally`] and their set per slot, kept together
/// under one lock so that a slot's tally always describes the map beside it. The slots are
/// filled on first use, once the slot count is known, and again if it ever changes; from then
/// on the repair reads one slot's publishers without walking the others.
#[derive(Default)]
struct Held {
    /// Every publisher, by its key. A set of [`ByKey`] rather than a map from the key: the
    /// key (two strings) is held once, in the publisher, not copied for the map.
    map: HashSet<ByKey>,
    /// One per slot; empty until first asked for.
    slots: Vec<HeldSlot>,
}

/// The publishers of one slot, and their tally.
#[derive(Default)]
struct HeldSlot {
    tally: Tally,
    publishers: HashSet<ByKey>,
}

impl Held {
    fn get(&self, key: &PublisherKey) -> Option<&Arc<Publisher>> {
        self.map.get(key).map(|p| &p.0)
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Publisher>> {
        self.map.iter().map(|p| &p.0)
    }

    /// Adds or replaces a publisher; returns the one replaced.
    fn insert(&mut self, p: Arc<Publisher>) -> Option<Arc<Publisher>> {
        let old = self.map.replace(ByKey(p.clone())).map(|old| old.0);
        if let Some(old) = &old {
            self.leave_slot(old);
        }
        self.join_slot(p);
        old
    }

    fn remove(&mut self, key: &PublisherKey) -> Option<Arc<Publisher>> {
        let old = self.map.take(key)?.0;
        self.leave_slot(&old);
        Some(old)
    }

    fn slot_of(&self, p: &Publisher) -> Option<usize> {
        (!self.slots.is_empty()).then(|| slot_of(&p.data_info_id, self.slots.len() as u32) as usize)
    }

    fn join_slot(&mut self, p: Arc<Publisher>) {
        if let Some(s) = self.slot_of(&p) {
            let slot = &mut self.slots[s];
            slot.tally.add(&p);
            slot.publishers.insert(ByKey(p));
        }
    }

    fn leave_slot(&mut self, p: &Publisher) {
        if let Some(s) = self.slot_of(p) {
            let slot = &mut self.slots[s];
            slot.tally.sub(p);
            slot.publishers.remove(&p.key);
        }
    }

    /// Sorts every publisher into `slot_count` slots, if not done for that count already.
    fn count_slots(&mut self, slot_count: u32) {
        let n = slot_count.max(1) as usize;
        if self.slots.len() == n {
            return;
        }
        self.slots = (0..n).map(|_| HeldSlot::default()).collect();
        let all: Vec<Arc<Publisher>> = self.all().cloned().collect();
        for p in all {
            self.join_slot(p);
        }
    }
}

fn unpublish_op(p: &Publisher) -> WriteOp {
    WriteOp::Unpublish {
        data_info_id: p.data_info_id.clone(),
        key: p.key.clone(),
        session: p.session.clone(),
        conn_id: p.conn_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(service: u32, client: u32, version: u64) -> Arc<Publisher> {
        Arc::new(Publisher {
            data_info_id: DataInfoId::parse(&format!("svc.{service}#@#DEFAULT_INSTANCE_ID#@#G"))
                .expect("valid id"),
            key: PublisherKey {
                client_id: format!("c{client}"),
                regist_id: "r".into(),
            },
            data: vec![format!("10.0.0.{client}:80")],
            version,
            session: MemberId("s1".into()),
            conn_id: 1,
            registered_at_ms: version,
            zone: String::new(),
            app: String::new(),
        })
    }

    /// Each slot's set and tally match what a recount of the map gives.
    fn check(held: &Held) {
        let n = held.slots.len() as u32;
        for (s, slot) in held.slots.iter().enumerate() {
            let mut tally = Tally::default();
            let mut keys = Vec::new();
            for p in held.all() {
                if slot_of(&p.data_info_id, n) as usize == s {
                    tally.add(p);
                    keys.push(p.key.clone());
                }
            }
            assert_eq!(slot.tally, tally, "slot {s}");
            assert_eq!(slot.publishers.len(), keys.len(), "slot {s}");
            for k in keys {
                let p = slot.publishers.get(&k).expect("publisher in its slot");
                assert!(
                    held.get(&k).is_some_and(|cur| Arc::ptr_eq(&p.0, cur)),
                    "slot {s} holds the current one"
                );
            }
        }
    }

    #[test]
    fn slots_follow_inserts_moves_and_removals() {
        let mut held = Held::default();
        for c in 0..40 {
            held.insert(publisher(c % 7, c, 1));
        }
        held.count_slots(16);
        check(&held);
        // Republished, moved to another service, removed, added after the count.
        for c in 0..40 {
            match c % 4 {
                0 => assert!(held.insert(publisher(c % 7, c, 2)).is_some()),
                1 => assert!(held.insert(publisher(c % 7 + 100, c, 3)).is_some()),
                2 => assert!(held
                    .remove(&PublisherKey {
                        client_id: format!("c{c}"),
                        regist_id: "r".into(),
                    })
                    .is_some()),
                _ => assert!(held.insert(publisher(c % 5, c + 1000, 1)).is_none()),
            }
            check(&held);
        }
        // A new slot count sorts everything again.
        held.count_slots(8);
        assert_eq!(held.slots.len(), 8);
        check(&held);
    }

    #[test]
    fn slots_sorted_before_any_publisher_follow_every_insert() {
        let mut held = Held::default();
        held.count_slots(16);
        for c in 0..40 {
            held.insert(publisher(c % 7, c, 1));
        }
        check(&held);
    }
}
