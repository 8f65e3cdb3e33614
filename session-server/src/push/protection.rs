//! Removal protection: a datum that lost publishers through a server-side event (their
//! session server left; see `Datum::server_removal`), whether all of them or some, is held
//! back for a protection window while it has fewer publishers than the one subscribers hold.
//! If the publishers come back meanwhile (their clients re-registered elsewhere) subscribers
//! never see the partial view; a client that really died disappears one window later.

use std::sync::Arc;
use std::time::Instant;

use registry_common::id::DataInfoId;
use registry_common::model::PushDatum;

use super::Pusher;

impl Pusher {
    /// DataInfoIds whose datum is being held back by removal protection now.
    pub fn held_back(&self) -> usize {
        self.held_empty.lock().len()
    }

    /// Since when `id`'s datum has been held back, if it is now.
    pub fn held_since(&self, id: &DataInfoId) -> Option<Instant> {
        self.held_empty.lock().get(id).copied()
    }

    /// Whether to hold back `datum`: a server-side event removed publishers from it and it
    /// has fewer than the datum subscribers hold, and the protection window has not run out
    /// yet. A partial loss is held back as an empty datum is: the clients of a departed
    /// session come back one by one.
    pub(super) fn hold_empty(self: &Arc<Self>, datum: &PushDatum) -> bool {
        let id = &datum.data_info_id;
        let emptied = datum.server_removal
            && self
                .cached(id)
                .is_some_and(|p| p.datum.publishers > datum.publishers);
        let mut held = self.held_empty.lock();
        if !emptied {
            held.remove(id);
            return false;
        }
        let window = self.config.empty_protection;
        match held.get(id) {
            None => {
                held.insert(id.clone(), Instant::now());
                self.metrics
                    .empty_protection
                    .with_label_values(&["held"])
                    .inc();
                tracing::info!(%id, publishers = datum.publishers, "holding back a datum that lost publishers to a server-side event");
                // Look again once the window has passed.
                let pusher = self.clone();
                let id = id.clone();
                let version = datum.version;
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(window) => pusher.request_fetch(id, version),
                        _ = pusher.shutdown.cancelled() => {}
                    }
                });
                true
            }
            Some(since) if since.elapsed() < window => true,
            Some(_) => {
                held.remove(id);
                self.metrics
                    .empty_protection
                    .with_label_values(&["released"])
                    .inc();
                false
            }
        }
    }
}
