//! Datum updates for one subscription: a bounded queue that keeps the newest.
//!
//! When the application reads slower than updates arrive, the oldest queued updates are
//! dropped: each update is the full datum, so the newest supersedes the rest.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// One push as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatumUpdate {
    pub data_info_id: String,
    /// Datum version; grows with every change.
    pub version: u64,
    /// Every publisher's data strings.
    pub data: Vec<String>,
}

pub(crate) struct UpdateQueue {
    /// Shared with the subscription's latest view: an update is copied only when the
    /// application takes it while it is still the latest.
    queue: Mutex<VecDeque<Arc<DatumUpdate>>>,
    notify: Notify,
    capacity: usize,
    closed: AtomicBool,
}

impl UpdateQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn push(&self, update: Arc<DatumUpdate>) {
        {
            let mut q = self.queue.lock();
            if q.len() >= self.capacity {
                q.pop_front();
            }
            q.push_back(update);
        }
        self.notify.notify_one();
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    pub(crate) async fn next(&self) -> Option<DatumUpdate> {
        loop {
            let notified = self.notify.notified();
            if let Some(u) = self.queue.lock().pop_front() {
                return Some(Arc::unwrap_or_clone(u));
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }

    pub(crate) fn try_next(&self) -> Option<DatumUpdate> {
        self.queue.lock().pop_front().map(Arc::unwrap_or_clone)
    }
}
