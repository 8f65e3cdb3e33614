//! This server's part in each slot: not held, syncing, ready, or retained after a move.
//!
//! When a view gives this server a slot it did not hold, the slot is `Syncing`: the server
//! copies it from the slot's previous and current holders (`/data/v1/sync`) and answers
//! `migrating` to writes and reads until the copy is in; then it is `Ready`. A replica
//! promoted to primary while the old primary is still a member copies from the old primary
//! the same way, since it may trail it by the writes still in flight. When a view
//! takes a slot away, the slot is `Retained` for a while: no longer served, but still
//! available as a sync source to the servers that gained it; then it is dropped.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use registry_common::member::{ClusterView, MemberId};
use registry_common::slot::SlotId;

/// This server's part in one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not held; no data.
    Idle,
    /// Held; copying from previous holders.
    Syncing,
    /// Held and complete.
    Ready,
    /// No longer held; kept until the instant as a sync source.
    Retained(Instant),
}

/// A copy this server must make: the slot and where to copy it from (addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncJob {
    pub slot: SlotId,
    pub epoch: u64,
    pub sources: Vec<String>,
}

pub struct Slots {
    me: MemberId,
    phases: Mutex<Vec<Phase>>,
    /// How long a slot that moved away stays available as a sync source.
    retain: Duration,
}

impl Slots {
    pub fn new(me: MemberId, slot_count: u32, retain: Duration) -> Self {
        Self {
            me,
            phases: Mutex::new(vec![Phase::Idle; slot_count as usize]),
            retain,
        }
    }

    pub fn phase(&self, slot: SlotId) -> Phase {
        self.phases
            .lock()
            .get(slot as usize)
            .copied()
            .unwrap_or(Phase::Idle)
    }

    /// Counts of (syncing, ready, retained) slots.
    pub fn counts(&self) -> (usize, usize, usize) {
        let phases = self.phases.lock();
        let count = |f: fn(&Phase) -> bool| phases.iter().filter(|p| f(p)).count();
        (
            count(|p| *p == Phase::Syncing),
            count(|p| *p == Phase::Ready),
            count(|p| matches!(p, Phase::Retained(_))),
        )
    }

    /// Forgets every slot (all `Idle`): after the meta removed this server and it joined
    /// again, what it holds is stale and must be copied in afresh.
    pub fn forget_all(&self) {
        self.phases.lock().fill(Phase::Idle);
    }

    /// Moves every slot to the phase `view` implies, given the view acted on before
    /// (`None` at startup). Returns the copies to make.
    pub fn on_view(&self, prev: Option<&ClusterView>, view: &ClusterView) -> Vec<SyncJob> {
        let mut jobs = Vec::new();
        let mut phases = self.phases.lock();
        let now = Instant::now();
        for (slot, phase) in phases.iter_mut().enumerate() {
            let slot = slot as SlotId;
            let Some(assignment) = view.slots.get(slot) else {
                continue;
            };
            let holds = assignment.holds(&self.me);
            match (*phase, holds) {
                (Phase::Idle | Phase::Retained(_), true) => {
                    // Copy from everyone alive who held it before or holds it now.
                    let mut sources: BTreeSet<&MemberId> = assignment.holders().collect();
                    if let Some(a) = prev.and_then(|p| p.slots.get(slot)) {
                        sources.extend(a.holders());
                    }
                    sources.remove(&self.me);
                    // Prefer previous holders: they are the ones that have the data.
                    let mut addrs: Vec<String> = Vec::new();
                    if let Some(a) = prev.and_then(|p| p.slots.get(slot)) {
                        for h in a.holders().filter(|h| *h != &self.me) {
                            if let Some(addr) = view.addr_of(h) {
                                addrs.push(addr.to_owned());
                            }
                        }
                    }
                    for h in sources {
                        if let Some(addr) = view.addr_of(h) {
                            if !addrs.iter().any(|a| a == addr) {
                                addrs.push(addr.to_owned());
                            }
                        }
                    }
                    if addrs.is_empty() && *phase == Phase::Idle && prev.is_none() {
                        // First holder of a new cluster: nothing to copy.
                        *phase = Phase::Ready;
                    } else if addrs.is_empty() {
                        *phase = Phase::Ready;
                    } else {
                        *phase = Phase::Syncing;
                        jobs.push(SyncJob {
                            slot,
                            epoch: view.epoch,
                            sources: addrs,
                        });
                    }
                }
                (Phase::Ready, true) => {
                    // Promoted from replica while the old primary is still a member (a planned
                    // move: drain, scale-out): take the old primary's latest state first, as
                    // the replica may trail it by the writes still in flight.
                    let old_primary = prev
                        .and_then(|p| p.slots.get(slot))
                        .and_then(|a| a.primary.as_ref())
                        .filter(|p| *p != &self.me);
                    let promoted = assignment.primary.as_ref() == Some(&self.me);
                    if let (true, Some(old)) = (promoted, old_primary) {
                        if let Some(addr) = view.addr_of(old) {
                            *phase = Phase::Syncing;
                            jobs.push(SyncJob {
                                slot,
                                epoch: view.epoch,
                                sources: vec![addr.to_owned()],
                            });
                        }
                    }
                }
                (Phase::Syncing | Phase::Ready, false) => {
                    *phase = Phase::Retained(now + self.retain);
                }
                _ => {}
            }
        }
        jobs
    }

    /// Marks a slot complete if it is still being synced.
    pub fn finish_sync(&self, slot: SlotId) {
        if let Some(p) = self.phases.lock().get_mut(slot as usize) {
            if *p == Phase::Syncing {
                *p = Phase::Ready;
            }
        }
    }

    /// Slots whose retention ran out; they become `Idle` (the caller drops their data).
    pub fn expire(&self, now: Instant) -> Vec<SlotId> {
        let mut out = Vec::new();
        for (slot, p) in self.phases.lock().iter_mut().enumerate() {
            if matches!(p, Phase::Retained(until) if *until <= now) {
                *p = Phase::Idle;
                out.push(slot as SlotId);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_common::member::{Member, Role};
    use registry_common::slot::SlotTable;

    fn view(epoch: u64, servers: &[&str]) -> ClusterView {
        let ids: Vec<MemberId> = servers
            .iter()
            .map(|s| MemberId(s.to_string().into()))
            .collect();
        let mut v = ClusterView {
            epoch,
            slots: SlotTable::compute(&ids, 16, 2),
            ..ClusterView::default()
        };
        for id in ids {
            v.members.insert(
                id.clone(),
                Member {
                    addr: format!("{}:1", id.0),
                    id,
                    role: Role::Data,
                    zone: String::new(),
                    registered_at_ms: 0,
                },
            );
        }
        v
    }

    #[test]
    fn a_server_that_joins_again_copies_every_held_slot_afresh() {
        let b = Slots::new(MemberId("b".into()), 16, Duration::from_secs(1));
        let v = view(2, &["a", "b"]);
        for job in b.on_view(None, &v) {
            b.finish_sync(job.slot);
        }
        assert_eq!(b.counts(), (0, 16, 0));
        // Removed and back under the same id, the view holds it where it was: without
        // forgetting, nothing would be copied and the stale data served.
        assert!(b.on_view(Some(&v), &v).is_empty());
        b.forget_all();
        let jobs = b.on_view(None, &v);
        assert_eq!(jobs.len(), 16);
        assert!(jobs.iter().all(|j| j.sources == vec!["a:1".to_string()]));
        assert_eq!(b.counts(), (16, 0, 0));
    }

    #[test]
    fn first_server_is_ready_and_a_joiner_syncs_what_it_gains() {
        let a = Slots::new(MemberId("a".into()), 16, Duration::from_secs(1));
        let v1 = view(1, &["a"]);
        assert!(a.on_view(None, &v1).is_empty());
        assert_eq!(a.counts(), (0, 16, 0));

        let b = Slots::new(MemberId("b".into()), 16, Duration::from_secs(1));
        let v2 = view(2, &["a", "b"]);
        let jobs = b.on_view(None, &v2);
        assert_eq!(
            jobs.len(),
            16,
            "with two copies the joiner holds every slot"
        );
        assert!(jobs.iter().all(|j| j.sources == vec!["a:1".to_string()]));
        assert!(a.on_view(Some(&v1), &v2).is_empty());
        b.finish_sync(3);
        assert_eq!(b.phase(3), Phase::Ready);

        // A third server takes some slots away from a or b: those are retained.
        let v3 = view(3, &["a", "b", "c"]);
        a.on_view(Some(&v2), &v3);
        let (_, ready, retained) = a.counts();
        assert_eq!(ready + retained, 16);
        assert!(retained > 0);
        assert!(a.expire(Instant::now() + Duration::from_secs(2)).len() == retained);
    }
}

/// A gate slot copies pass before they start: open in normal operation; tests and drills
/// close it to hold a server in the copying phase.
#[derive(Clone, Debug)]
pub struct SyncGate(std::sync::Arc<tokio::sync::watch::Sender<bool>>);

impl Default for SyncGate {
    fn default() -> Self {
        Self(std::sync::Arc::new(tokio::sync::watch::Sender::new(true)))
    }
}

impl SyncGate {
    /// A gate that holds every copy until [`SyncGate::open`].
    pub fn closed() -> Self {
        let gate = Self::default();
        gate.0.send_replace(false);
        gate
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    /// Returns once the gate is open.
    pub async fn passed(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}
