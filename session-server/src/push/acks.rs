//! What one connection's client has acknowledged: the pushes it still owes an ack for, and
//! how far it has read, which tells a push the client missed from one it has not reached yet.
//!
//! A connection's pushes reach the client in the order of their ids (each id is taken just
//! before its push is queued, so only two taken at the same instant may swap; one writer
//! drains the queue in order; and the connection does not lose frames: it is closed
//! instead). So a copy of an overdue push helps only a client
//! that read the push and dropped it; one that has not got to it yet would find the copy
//! queued behind the first and answer both. An overdue push is therefore:
//! - sent again when the client acknowledged a push sent after it: it was missed;
//! - held when the client acknowledged something lately, none of it from this push on: it
//!   is still reading what came before;
//! - sent again as the connection's one probe when the client has been quiet for a whole
//!   ack timeout: it may have dropped the push, or stalled. While a probe is awaited the
//!   other overdue pushes are held: a stalled client gets one copy per round, not a copy of
//!   every push it owes.
//!
//! A held push waits on as a resend would (see `sweeper`), so a client that never answers is
//! closed when it would have been. Under load (a million publishers registering, the initial
//! pushes of 200 subscriptions on each connection at once, a session reading acks seconds
//! late) nearly every overdue push is of the second or third kind.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_common::id::DataInfoId;

/// One connection's pushes awaiting an ack, and its client's progress.
#[derive(Default)]
pub struct PushAcks {
    /// pushId -> (dataInfoId, subscription registId) of each push awaiting an ack.
    awaiting: HashMap<u64, (DataInfoId, Arc<str>)>,
    /// The highest pushId acknowledged while it was awaited (an unknown one may be made up).
    highest: u64,
    /// When the client last acknowledged any push, awaited or not.
    last: Option<Instant>,
    /// The copy last sent to a quiet client; no other goes out while it is awaited.
    probe: Option<u64>,
}

/// What to do with a push whose ack is overdue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    /// The client acknowledged a later push: this one was missed. Send it again.
    Missed,
    /// The client is quiet and no probe is awaited: send it again as the probe.
    Probe,
    /// The client is reading earlier pushes, or a probe is out: wait on.
    Hold,
}

impl PushAcks {
    /// Awaits an ack for `push_id`, a push to subscription `regist_id` of `id`.
    pub fn expect(&mut self, push_id: u64, id: DataInfoId, regist_id: Arc<str>) {
        self.awaiting.insert(push_id, (id, regist_id));
    }

    /// Stops awaiting `push_id` (replaced by a newer push).
    pub fn forget(&mut self, push_id: u64) {
        self.awaiting.remove(&push_id);
    }

    /// What `push_id` was for, if still awaited.
    pub fn awaited(&self, push_id: u64) -> Option<(DataInfoId, Arc<str>)> {
        self.awaiting.get(&push_id).cloned()
    }

    /// Takes the client's ack of `push_id` at `now`: what the push was for, if it was
    /// awaited. Any ack shows the client reading; only an awaited one moves how far.
    pub fn take(&mut self, push_id: u64, now: Instant) -> Option<(DataInfoId, Arc<str>)> {
        self.last = Some(now);
        let was = self.awaiting.remove(&push_id)?;
        self.highest = self.highest.max(push_id);
        Some(was)
    }

    /// What to do with `push_id`, awaited and overdue at `now`; `quiet` is how long
    /// without any ack makes the client look stalled (the ack timeout).
    pub fn overdue(&self, push_id: u64, now: Instant, quiet: Duration) -> Overdue {
        if self.highest > push_id {
            return Overdue::Missed;
        }
        if self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < quiet)
        {
            return Overdue::Hold;
        }
        match self.probe {
            Some(p) if p != push_id && self.awaiting.contains_key(&p) => Overdue::Hold,
            _ => Overdue::Probe,
        }
    }

    /// Notes `push_id` as the copy sent to a quiet client.
    pub fn probing(&mut self, push_id: u64) {
        self.probe = Some(push_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_secs(3);

    fn awaiting(ids: impl IntoIterator<Item = u64>) -> PushAcks {
        let mut acks = PushAcks::default();
        for push_id in ids {
            let id = DataInfoId::new("svc", None, None).expect("a valid id");
            acks.expect(push_id, id, Arc::from(format!("s{push_id}")));
        }
        acks
    }

    #[test]
    fn a_client_reading_earlier_pushes_is_left_to_read_them() {
        let t0 = Instant::now();
        let mut acks = awaiting(1..=3);
        assert!(acks.take(1, t0).is_some());
        assert_eq!(acks.overdue(2, t0, QUIET), Overdue::Hold);
        assert_eq!(
            acks.overdue(3, t0 + Duration::from_secs(2), QUIET),
            Overdue::Hold
        );
        // An ack nobody awaits shows the client reading too, but moves nothing: a made-up
        // id cannot mark pushes as missed.
        let mut acks = awaiting([5]);
        assert!(acks.take(1_000, t0).is_none());
        assert_eq!(acks.overdue(5, t0, QUIET), Overdue::Hold);
    }

    #[test]
    fn a_push_the_client_read_past_was_missed() {
        let t0 = Instant::now();
        let mut acks = awaiting(1..=3);
        assert!(acks.take(3, t0).is_some());
        assert_eq!(acks.overdue(2, t0, QUIET), Overdue::Missed);
        assert_eq!(acks.awaited(2).map(|(_, r)| r), Some(Arc::from("s2")));
        acks.forget(2);
        assert!(acks.awaited(2).is_none());
    }

    #[test]
    fn a_quiet_client_gets_one_probe_at_a_time() {
        let t0 = Instant::now();
        let mut acks = awaiting(1..=3);
        // Nothing acknowledged yet: the first overdue push is the probe, sent as push 4.
        assert_eq!(acks.overdue(1, t0, QUIET), Overdue::Probe);
        acks.forget(1);
        acks.expect(
            4,
            DataInfoId::new("svc", None, None).unwrap(),
            Arc::from("s1"),
        );
        acks.probing(4);
        assert_eq!(acks.overdue(2, t0, QUIET), Overdue::Hold);
        assert_eq!(acks.overdue(3, t0, QUIET), Overdue::Hold);
        // The probe itself, overdue in turn, goes again.
        assert_eq!(acks.overdue(4, t0, QUIET), Overdue::Probe);
        // The probe acknowledged: sent after 2 and 3, so the client read past them.
        let later = t0 + Duration::from_secs(1);
        assert!(acks.take(4, later).is_some());
        assert_eq!(acks.overdue(2, later, QUIET), Overdue::Missed);
        // A probe no longer awaited (replaced by a newer push) holds nothing back.
        let mut acks = awaiting([1, 2]);
        acks.probing(1);
        acks.forget(1);
        assert_eq!(acks.overdue(2, t0, QUIET), Overdue::Probe);
    }
}
