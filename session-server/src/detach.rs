//! A session cut off from the meta cluster stops serving before the cluster gives up on it.
//!
//! When the meta has not taken this session's lease renewal for [`DETACH_FRACTION`] of the
//! lease, the meta is about to remove it (or has, on the far side of a partition), and then
//! the data servers remove every publisher it owns. Its clients are still connected to it and
//! would not notice. So the session detaches first: it tells every client to move to another
//! session (`go_away`, as on a graceful stop), refuses new ones, and leaves the publishers of
//! the clients that move for their re-registration elsewhere to take over (as a draining
//! session does). Once a renewal is taken again it serves again; if the meta removed it
//! meanwhile, the renewal registers it again and [`crate::server`] repairs every slot.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use registry_common::member::Role;
use registry_common::proto::client::ServerFrame;

use crate::server::SessionState;

/// Share of the lease without a renewal after which the session detaches (6 s of the default
/// 10 s: a meta leader election takes well under that, and clients keep 4 s to move before
/// the lease runs out, 7 s before the data tier's cleanup).
pub const DETACH_FRACTION: f64 = 0.6;

/// How often the watchdog looks.
const EVERY: Duration = Duration::from_millis(250);

/// Watches the lease until shutdown.
pub async fn run(state: Arc<SessionState>) {
    let limit = state.membership.lease().mul_f64(DETACH_FRACTION);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = state.shutdown.cancelled() => return,
        }
        let cut_off = state.membership.since_renewed() > limit;
        let detached = state.detached.load(Ordering::Acquire);
        if cut_off && !detached {
            state.detached.store(true, Ordering::Release);
            let clients = state.registry.conns();
            tracing::warn!(
                clients = clients.len(),
                since_renewed_ms = state.membership.since_renewed().as_millis() as u64,
                "the meta has not taken a renewal for most of the lease: moving clients away"
            );
            state
                .metrics
                .closed
                .with_label_values(&["detached"])
                .inc_by(clients.len() as u64);
            let view = state.membership.view();
            let others: Vec<String> = view
                .members_of(Role::Session)
                .filter(|m| m.id != state.id)
                .map(|m| m.addr.clone())
                .collect();
            let frame = ServerFrame::GoAway {
                reason: "session server is cut off from the cluster".into(),
                sessions: others,
            };
            if let Ok(text) = serde_json::to_string(&frame) {
                for conn in clients {
                    conn.sent_away.store(true, Ordering::Release);
                    let _ = conn.outbox.send(text.clone());
                    // The client moves on `go_away`; closing makes sure one that ignores it
                    // does too.
                    conn.outbox
                        .close_signal()
                        .close(1001, "session server is cut off from the cluster");
                }
            }
        } else if !cut_off && detached {
            state.detached.store(false, Ordering::Release);
            tracing::info!("renewals taken again: serving clients again");
            // The meta may have removed us meanwhile, and the data tier our publishers with
            // us, and we missed its notifications: repair every slot and pull versions now
            // rather than at the next interval.
            let view = state.membership.view();
            state.reconciler.mark(0..view.slots.slot_count());
            state.reconciler.pull_soon();
        }
    }
}

impl SessionState {
    /// Draining or cut off: new clients are refused, and a closing connection leaves its
    /// publishers for the client's re-registration elsewhere.
    pub fn leaving(&self) -> bool {
        self.draining.load(Ordering::Acquire) || self.detached.load(Ordering::Acquire)
    }
}
