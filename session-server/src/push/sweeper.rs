//! Unacknowledged pushes: resent (the newest datum, backing off) when the client missed them
//! or has gone quiet (see `acks`), pushed past when a newer datum has waited the whole merge
//! window, and connections that never acknowledge closed.
//!
//! Every push sent leaves a [`Check`]: look at this push again at this instant, if it is
//! still unacknowledged. The sweeper takes only the checks that are due, so its work follows
//! the pushes sent, not the number of subscriptions (it used to walk every subscription under
//! one lock twice a second). Checks are queued in the order they fall due: most are made at
//! sending time with one offset and join a FIFO; the rest (a resend's longer wait, an
//! out-of-order instant) go to a heap. A check whose push was acknowledged or replaced
//! meanwhile is dropped when it comes up. Both hold at most the checks of the pushes sent
//! within the longest ack wait, which the outboxes bound.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use registry_rpc::backoff::Backoff;

use super::acks::Overdue;
use super::{Outgoing, Pusher};
use crate::registry::Conn;

/// Look at push `push_id` of `conn` again at `at`, if it is still unacknowledged.
pub(super) struct Check {
    pub at: Instant,
    pub conn: Arc<Conn>,
    pub push_id: u64,
}

impl PartialEq for Check {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Check {}

impl PartialOrd for Check {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Check {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.conn.id, self.push_id).cmp(&(other.at, other.conn.id, other.push_id))
    }
}

/// The checks not yet due, in the order they fall due.
#[derive(Default)]
pub(super) struct Deadlines {
    /// Checks in order of `at`, appended as pushes go out.
    fifo: Mutex<VecDeque<Check>>,
    /// Checks that fall due before the FIFO's last one.
    heap: Mutex<BinaryHeap<Reverse<Check>>>,
}

impl Deadlines {
    pub fn push(&self, check: Check) {
        let mut fifo = self.fifo.lock();
        if fifo.back().is_none_or(|last| last.at <= check.at) {
            fifo.push_back(check);
        } else {
            drop(fifo);
            self.heap.lock().push(Reverse(check));
        }
    }

    /// Takes every check due at `now`.
    fn due(&self, now: Instant) -> Vec<Check> {
        let mut out = Vec::new();
        {
            let mut fifo = self.fifo.lock();
            while fifo.front().is_some_and(|c| c.at <= now) {
                out.extend(fifo.pop_front());
            }
        }
        let mut heap = self.heap.lock();
        while heap.peek().is_some_and(|c| c.0.at <= now) {
            out.extend(heap.pop().map(|c| c.0));
        }
        out
    }
}

impl Pusher {
    /// How long the `attempts`-th send of a push waits for its ack: ack timeout × 2^(n-1), at
    /// most 64 ack timeouts. No jitter: this is a deadline, not a retry against a server.
    fn ack_wait(&self, attempts: u32) -> Duration {
        let base = self.config.ack_timeout;
        Backoff::ceiling(base, base.saturating_mul(64), attempts.saturating_sub(1))
    }

    /// When a push is first looked at again after its `attempts`-th send: its ack is due, or
    /// a newer datum waiting behind it has waited the whole merge window.
    pub(super) fn first_look(&self, attempts: u32) -> Duration {
        self.ack_wait(attempts).min(self.config.max_merge_window)
    }

    /// Acts on one due check: nothing if the push was acknowledged or replaced; otherwise
    /// the pending datum if it waited the merge window, a resend if the ack is overdue, the
    /// connection closed after the last resend, or a later check.
    fn look_again(
        &self,
        check: Check,
        now: Instant,
        out: &mut Vec<Outgoing>,
        unresponsive: &mut Vec<Arc<Conn>>,
    ) {
        let Some((id, regist_id)) = check.conn.acks.lock().awaited(check.push_id) else {
            return;
        };
        let mut shard = self.subs.shard(&id);
        let Some(sub) = shard
            .get_mut(&id)
            .and_then(|m| m.subs.get_mut(&(check.conn.id, regist_id.clone())))
        else {
            return;
        };
        let Some((sent_at, waiting_since, attempts, prepared)) = sub
            .inflight
            .as_ref()
            .filter(|f| f.push_id == check.push_id)
            .map(|f| (f.sent_at, f.waiting_since, f.attempts, f.prepared.clone()))
        else {
            return;
        };
        let merge = self.config.max_merge_window;
        if now.duration_since(sent_at) >= merge {
            if let Some(next) = sub.pending.take() {
                out.push(self.send_push(sub, &regist_id, next, 1));
                return;
            }
        }
        let mut due = waiting_since + self.ack_wait(attempts);
        if now >= due {
            if attempts > self.config.ack_retries {
                unresponsive.push(sub.conn.clone());
                return;
            }
            // Sent again only if the client missed it, or as the one probe of a quiet client
            // (see `acks`). A held push waits on as a resend would, so a client that never
            // answers is closed when it would have been.
            let verdict =
                check
                    .conn
                    .acks
                    .lock()
                    .overdue(check.push_id, now, self.config.ack_timeout);
            if verdict != Overdue::Hold {
                let newest = sub.pending.take().unwrap_or(prepared);
                let resent = self.send_push(sub, &regist_id, newest, attempts + 1);
                if verdict == Overdue::Probe {
                    check.conn.acks.lock().probing(resent.push.push_id);
                }
                out.push(resent);
                return;
            }
            if let Some(f) = sub.inflight.as_mut() {
                f.attempts += 1;
                f.waiting_since = now;
            }
            self.metrics.resends_held.inc();
            due = now + self.ack_wait(attempts + 1);
        }
        let mut at = due;
        if sub.pending.is_some() {
            at = at.min(sent_at + merge);
        }
        self.deadlines.push(Check { at, ..check });
    }
}

/// Takes the due checks a few times per shortest wait and acts on them.
pub(super) async fn ack_sweeper(pusher: Arc<Pusher>) {
    let tick =
        (pusher.first_look(1) / 10).clamp(Duration::from_millis(10), Duration::from_millis(100));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = pusher.shutdown.cancelled() => return,
        }
        if !pusher.is_enabled() {
            // Nothing is sent while pushes are off, so nothing is overdue either; the checks
            // wait for the switch.
            continue;
        }
        let now = Instant::now();
        let mut out = Vec::new();
        let mut unresponsive: Vec<Arc<Conn>> = Vec::new();
        for check in pusher.deadlines.due(now) {
            pusher.look_again(check, now, &mut out, &mut unresponsive);
        }
        pusher.send_all(out);
        for conn in unresponsive {
            if !conn.outbox.close_signal().is_closed() {
                pusher
                    .metrics
                    .closed
                    .with_label_values(&["ack_timeout"])
                    .inc();
            }
            conn.outbox
                .close_signal()
                .close(1008, "pushes not acknowledged");
        }
    }
}
